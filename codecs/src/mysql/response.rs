//! Server responses in the command phase: OK, ERR and EOF packets, and
//! [`ResponseState`], the state machine that says when the response to one
//! command has ended, so a proxy can stream it packet by packet (a result
//! set is never buffered whole) and still know when the backend is free.

use bytes::{BufMut, BytesMut};

use super::wire::{Reader, put_lenenc_int};
use super::{MAX_PAYLOAD, PROTO, Packet, status};
use crate::CodecError;

/// An OK packet's fields (also the OK that ends a result set with CLIENT_DEPRECATE_EOF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// Parse an OK payload (`0x00` or `0xFE` first).
pub fn parse_ok(payload: &[u8]) -> Result<OkPacket, CodecError> {
    let mut r = Reader::new(payload);
    r.u8()?;
    let affected_rows = r.lenenc()?.unwrap_or(0);
    let last_insert_id = r.lenenc()?.unwrap_or(0);
    let status = if r.rest().len() >= 2 { r.u16()? } else { 0 };
    let warnings = if r.rest().len() >= 2 { r.u16()? } else { 0 };
    Ok(OkPacket {
        affected_rows,
        last_insert_id,
        status,
        warnings,
    })
}

/// Encode an OK payload.
pub fn encode_ok(ok: &OkPacket) -> BytesMut {
    let mut out = BytesMut::with_capacity(16);
    out.put_u8(0);
    put_lenenc_int(&mut out, ok.affected_rows);
    put_lenenc_int(&mut out, ok.last_insert_id);
    out.put_u16_le(ok.status);
    out.put_u16_le(ok.warnings);
    out
}

/// The status flags of a classic EOF payload (`0xFE`, warnings, status).
pub fn eof_status(payload: &[u8]) -> Option<u16> {
    let mut r = Reader::new(payload);
    r.u8().ok()?;
    r.u16().ok()?;
    r.u16().ok()
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    /// Five characters, e.g. `28000`.
    pub sql_state: [u8; 5],
    pub message: Vec<u8>,
}

impl ErrPacket {
    pub fn new(code: u16, sql_state: &[u8; 5], message: impl Into<Vec<u8>>) -> Self {
        Self {
            code,
            sql_state: *sql_state,
            message: message.into(),
        }
    }
    /// The payload (`0xFF`, code, `#`, SQLSTATE, message).
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(9 + self.message.len());
        out.put_u8(0xFF);
        out.put_u16_le(self.code);
        out.put_u8(b'#');
        out.put_slice(&self.sql_state);
        out.put_slice(&self.message);
        out
    }
}

/// Parse an ERR payload (`0xFF` first).
pub fn parse_err(payload: &[u8]) -> Result<ErrPacket, CodecError> {
    let mut r = Reader::new(payload);
    if r.u8()? != 0xFF {
        return Err(CodecError::malformed(PROTO, "not an ERR packet"));
    }
    let code = r.u16()?;
    let mut sql_state = *b"HY000";
    if r.rest().first() == Some(&b'#') {
        r.take(1)?;
        sql_state.copy_from_slice(r.take(5)?);
    }
    Ok(ErrPacket {
        code,
        sql_state,
        message: r.rest().to_vec(),
    })
}

/// What shape of response a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No response at all (COM_QUIT, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA).
    Nothing,
    /// One packet: OK, ERR or EOF (COM_PING, COM_INIT_DB, COM_STMT_RESET, ...).
    Single,
    /// OK, ERR, LOCAL INFILE request or result sets (COM_QUERY, COM_STMT_EXECUTE).
    ResultSet,
    /// COM_STMT_PREPARE_OK and its parameter and column definitions, or ERR.
    Prepare,
    /// Rows until EOF/OK, or ERR (COM_STMT_FETCH).
    Rows,
    /// Column definitions until EOF, or ERR (COM_FIELD_LIST).
    FieldList,
}

/// What one server packet meant for the response in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The response goes on.
    More,
    /// LOCAL INFILE: the client now sends the file (packets up to an empty
    /// one), and the server then goes on with this response.
    LocalInfile,
    /// The response is over; the final status flags when the last packet
    /// carried them (OK / EOF), `None` after an ERR.
    Done(Option<u16>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Columns { left: u64 },
    ColumnsEof,
    Rows,
    PrepareParams { left: u64, columns: u64 },
    PrepareParamsEof { columns: u64 },
    PrepareColumns { left: u64 },
    PrepareColumnsEof,
    Done,
}

/// Tracks one command's response, packet by packet (see the module docs).
#[derive(Debug, Clone)]
pub struct ResponseState {
    expect: Expect,
    deprecate_eof: bool,
    phase: Phase,
}

impl ResponseState {
    /// A response to a command that `expect`s this shape, on a connection
    /// with (`deprecate_eof`) or without CLIENT_DEPRECATE_EOF.
    pub fn new(expect: Expect, deprecate_eof: bool) -> Self {
        let phase = if expect == Expect::Nothing {
            Phase::Done
        } else {
            Phase::Start
        };
        Self {
            expect,
            deprecate_eof,
            phase,
        }
    }

    /// Whether the response is over.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn is_terminator(&self, p: &Packet) -> bool {
        p.first_byte() == Some(0xFE)
            && if self.deprecate_eof {
                p.payload_len() < MAX_PAYLOAD
            } else {
                p.payload_len() < 9
            }
    }

    /// The final status of a terminator (classic EOF or OK with `0xFE`).
    fn terminator_status(&self, payload: &[u8]) -> Result<u16, CodecError> {
        if payload.len() < 9 && !self.deprecate_eof {
            eof_status(payload).ok_or(CodecError::malformed(PROTO, "short EOF packet"))
        } else if self.deprecate_eof {
            parse_ok(payload).map(|ok| ok.status)
        } else {
            eof_status(payload).ok_or(CodecError::malformed(PROTO, "short EOF packet"))
        }
    }

    /// The end of one result (OK / EOF): more follow, or the response is over.
    fn end_of_result(&mut self, status_flags: u16) -> Step {
        if status_flags & status::MORE_RESULTS_EXISTS != 0 && self.expect == Expect::ResultSet {
            self.phase = Phase::Start;
            Step::More
        } else {
            self.phase = Phase::Done;
            Step::Done(Some(status_flags))
        }
    }

    fn done(&mut self, status_flags: Option<u16>) -> Step {
        self.phase = Phase::Done;
        Step::Done(status_flags)
    }

    /// Feed the next server packet of the response.
    pub fn feed(&mut self, p: &Packet) -> Result<Step, CodecError> {
        if p.is_continuation() {
            // The rest of a message over 16 MB (a huge row): never a terminator.
            return if self.phase == Phase::Done {
                Err(CodecError::malformed(
                    PROTO,
                    "packet after the end of a response",
                ))
            } else {
                Ok(Step::More)
            };
        }
        let payload = p.payload();
        let first = p.first_byte();
        if first == Some(0xFF) && self.phase != Phase::Done && !p.continues() {
            // MariaDB's progress report (MARIADB_CLIENT_PROGRESS) is an ERR
            // packet with code 0xFFFF: the response goes on.
            if payload.get(1..3) == Some(&[0xFF, 0xFF][..]) {
                return Ok(Step::More);
            }
            return Ok(self.done(None));
        }
        match self.phase {
            Phase::Done => Err(CodecError::malformed(
                PROTO,
                "packet after the end of a response",
            )),
            Phase::Start => match self.expect {
                Expect::Nothing => Ok(self.done(None)),
                Expect::Single => {
                    let flags = match first {
                        Some(0x00) => parse_ok(&payload).ok().map(|ok| ok.status),
                        Some(0xFE) => eof_status(&payload),
                        _ => None,
                    };
                    Ok(self.done(flags))
                }
                Expect::ResultSet => match first {
                    Some(0x00) => {
                        let ok = parse_ok(&payload)?;
                        Ok(self.end_of_result(ok.status))
                    }
                    Some(0xFB) => Ok(Step::LocalInfile),
                    _ => {
                        let n = Reader::new(&payload)
                            .lenenc()?
                            .ok_or(CodecError::malformed(PROTO, "NULL column count"))?;
                        if n == 0 {
                            return Err(CodecError::malformed(PROTO, "zero column count"));
                        }
                        self.phase = Phase::Columns { left: n };
                        Ok(Step::More)
                    }
                },
                Expect::Prepare => {
                    if first != Some(0x00) {
                        return Err(CodecError::malformed(PROTO, "not a COM_STMT_PREPARE_OK"));
                    }
                    let mut r = Reader::new(&payload);
                    r.take(5)?;
                    let columns = u64::from(r.u16()?);
                    let params = u64::from(r.u16()?);
                    if params > 0 {
                        self.phase = Phase::PrepareParams {
                            left: params,
                            columns,
                        };
                        Ok(Step::More)
                    } else {
                        Ok(self.prepare_columns(columns))
                    }
                }
                Expect::Rows | Expect::FieldList => {
                    if self.is_terminator(p) {
                        let flags = self.terminator_status(&payload)?;
                        Ok(self.done(Some(flags)))
                    } else {
                        Ok(Step::More)
                    }
                }
            },
            Phase::Columns { left } => {
                self.phase = match left {
                    0 | 1 if self.deprecate_eof => Phase::Rows,
                    0 | 1 => Phase::ColumnsEof,
                    _ => Phase::Columns { left: left - 1 },
                };
                Ok(Step::More)
            }
            Phase::ColumnsEof => {
                if first != Some(0xFE) {
                    return Err(CodecError::malformed(
                        PROTO,
                        "missing EOF after column definitions",
                    ));
                }
                let flags = eof_status(&payload).unwrap_or(0);
                if flags & status::CURSOR_EXISTS != 0 {
                    // COM_STMT_EXECUTE with a cursor: rows come with COM_STMT_FETCH.
                    return Ok(self.done(Some(flags)));
                }
                self.phase = Phase::Rows;
                Ok(Step::More)
            }
            Phase::Rows => {
                if self.is_terminator(p) {
                    let flags = self.terminator_status(&payload)?;
                    Ok(self.end_of_result(flags))
                } else {
                    Ok(Step::More)
                }
            }
            Phase::PrepareParams { left, columns } => {
                if left <= 1 {
                    if self.deprecate_eof {
                        return Ok(self.prepare_columns(columns));
                    }
                    self.phase = Phase::PrepareParamsEof { columns };
                } else {
                    self.phase = Phase::PrepareParams {
                        left: left - 1,
                        columns,
                    };
                }
                Ok(Step::More)
            }
            Phase::PrepareParamsEof { columns } => Ok(self.prepare_columns(columns)),
            Phase::PrepareColumns { left } => {
                if left <= 1 {
                    if self.deprecate_eof {
                        return Ok(self.done(None));
                    }
                    self.phase = Phase::PrepareColumnsEof;
                } else {
                    self.phase = Phase::PrepareColumns { left: left - 1 };
                }
                Ok(Step::More)
            }
            Phase::PrepareColumnsEof => Ok(self.done(None)),
        }
    }

    fn prepare_columns(&mut self, columns: u64) -> Step {
        if columns > 0 {
            self.phase = Phase::PrepareColumns { left: columns };
            Step::More
        } else {
            self.done(None)
        }
    }
}
