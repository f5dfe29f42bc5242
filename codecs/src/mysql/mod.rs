//! MySQL client/server protocol (as MariaDB and MySQL 5.7/8 speak it).
//!
//! * Framing ([`PacketDecoder`]): 3-byte little-endian payload length + 1-byte
//!   sequence id; a payload of exactly `0xFFFFFF` bytes is continued by the
//!   next packet (messages over 16 MB). The decoder yields one [`Packet`] per
//!   wire packet, a zero-copy view, and says whether it continues or is a
//!   continuation, so a proxy forwards huge messages packet by packet.
//! * Connection phase ([`handshake`]): the server greeting (v10), the
//!   client's HandshakeResponse41 / SSLRequest, AuthSwitchRequest,
//!   COM_CHANGE_USER, and the auth scrambles ([`auth`]).
//! * Command phase ([`command`]): the command byte, statement classification
//!   for read/write split and stickiness, and a query digest; and
//!   [`response::ResponseState`], a state machine that says when the server's
//!   response to a command has ended (OK / ERR / EOF, result sets with or
//!   without CLIENT_DEPRECATE_EOF, SERVER_MORE_RESULTS_EXISTS, LOCAL INFILE).
//!
//! The server speaks first (its greeting), and a client waits for it, so a
//! connection cannot be recognised from client bytes: what a MySQL client
//! sends first is its reply to the greeting (HandshakeResponse41), and a
//! sniffing listener would never see it. A MySQL listener must be given a
//! fixed protocol (see [`Protocol::server_speaks_first`](crate::Protocol::server_speaks_first)).

pub mod auth;
pub mod command;
pub mod handshake;
pub mod response;
pub mod session;
mod wire;

#[cfg(test)]
mod tests;

use bytes::{BufMut, Bytes, BytesMut};

use crate::parse::{mysql_packet_header, nom_to_codec};
use crate::{CodecError, Verdict};

pub use command::{Command, Statement, classify, digest};
pub use response::{ErrPacket, OkPacket, ResponseState, Step};
pub use wire::{Reader, put_lenenc_int, put_lenenc_str};

const PROTO: &str = "mysql";

/// Largest payload of one packet; a payload of exactly this size is continued.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Capability flags (`CLIENT_*`).
pub mod cap {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const NO_SCHEMA: u32 = 1 << 4;
    pub const COMPRESS: u32 = 1 << 5;
    pub const ODBC: u32 = 1 << 6;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const IGNORE_SIGPIPE: u32 = 1 << 12;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const RESERVED: u32 = 1 << 14;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
    pub const OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
    pub const QUERY_ATTRIBUTES: u32 = 1 << 27;
}

/// MariaDB's extended capability flags (the upper 32 bits of its 64-bit
/// capabilities). A MariaDB server announces them in the greeting's last four
/// reserved bytes and clears `CLIENT_MYSQL` (bit 0, [`cap::LONG_PASSWORD`]);
/// a client answers with its own in the HandshakeResponse's last four filler
/// bytes.
pub mod mariadb_cap {
    /// `MARIADB_CLIENT_PROGRESS`: progress reports (ERR packets with code 0xFFFF).
    pub const PROGRESS: u32 = 1;
    /// `MARIADB_CLIENT_COM_MULTI`.
    pub const COM_MULTI: u32 = 1 << 1;
    /// `MARIADB_CLIENT_STMT_BULK_OPERATIONS`: COM_STMT_BULK_EXECUTE.
    pub const STMT_BULK_OPERATIONS: u32 = 1 << 2;
    /// `MARIADB_CLIENT_EXTENDED_METADATA`: extended type info in column definitions.
    pub const EXTENDED_METADATA: u32 = 1 << 3;
    /// `MARIADB_CLIENT_CACHE_METADATA`: metadata skipped in COM_STMT_EXECUTE answers.
    pub const CACHE_METADATA: u32 = 1 << 4;
}

/// Server status flags (`SERVER_STATUS_*`), in OK and EOF packets.
pub mod status {
    pub const IN_TRANS: u16 = 1;
    pub const AUTOCOMMIT: u16 = 1 << 1;
    pub const MORE_RESULTS_EXISTS: u16 = 1 << 3;
    pub const CURSOR_EXISTS: u16 = 1 << 6;
    pub const LAST_ROW_SENT: u16 = 1 << 7;
    pub const IN_TRANS_READONLY: u16 = 1 << 13;
    pub const SESSION_STATE_CHANGED: u16 = 1 << 14;
}

/// Error codes and SQLSTATEs the gateway itself answers with.
pub mod er {
    /// `ER_CON_COUNT_ERROR` (08004): too many connections.
    pub const CON_COUNT: u16 = 1040;
    /// `ER_HANDSHAKE_ERROR` (08S01): bad handshake.
    pub const HANDSHAKE: u16 = 1043;
    /// `ER_DBACCESS_DENIED_ERROR` (42000).
    pub const DBACCESS_DENIED: u16 = 1044;
    /// `ER_ACCESS_DENIED_ERROR` (28000).
    pub const ACCESS_DENIED: u16 = 1045;
    /// `ER_NO_DB_ERROR` (3D000).
    pub const NO_DB: u16 = 1046;
    /// `ER_UNKNOWN_COM_ERROR` (08S01).
    pub const UNKNOWN_COM: u16 = 1047;
    /// `ER_BAD_DB_ERROR` (42000).
    pub const BAD_DB: u16 = 1049;
    /// `ER_NET_PACKET_TOO_LARGE` (08S01).
    pub const NET_PACKET_TOO_LARGE: u16 = 1153;
    /// `ER_UNKNOWN_ERROR` (HY000).
    pub const UNKNOWN: u16 = 1105;
    /// `ER_NOT_SUPPORTED_AUTH_MODE` (08004).
    pub const NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
    /// `CR_SERVER_LOST` (HY000): lost connection during query.
    pub const SERVER_LOST: u16 = 2013;
}

/// Limits of the packet decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message (the payloads of a packet and its continuations), in bytes.
    pub max_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message: 64 * 1024 * 1024,
        }
    }
}

/// One wire packet: a view of its header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// The whole packet as it came in (4-byte header + payload).
    wire: Bytes,
    /// This packet continues an earlier one of the same message.
    continuation: bool,
}

impl Packet {
    /// The packet's sequence id.
    pub fn seq(&self) -> u8 {
        self.wire.get(3).copied().unwrap_or(0)
    }
    /// The payload (without the 4-byte header).
    pub fn payload(&self) -> Bytes {
        self.wire.slice(4.min(self.wire.len())..)
    }
    /// The exact bytes of the packet on the wire.
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }
    /// The payload is `0xFFFFFF` bytes: the next packet continues the message.
    pub fn continues(&self) -> bool {
        self.wire.len() == MAX_PAYLOAD + 4
    }
    /// This packet continues the previous one (it is not the start of a message).
    pub fn is_continuation(&self) -> bool {
        self.continuation
    }
    /// The first payload byte (command byte, or OK/ERR/EOF marker), if any.
    pub fn first_byte(&self) -> Option<u8> {
        self.wire.get(4).copied()
    }
    /// The payload length.
    pub fn payload_len(&self) -> usize {
        self.wire.len().saturating_sub(4)
    }
}

/// Splits a byte stream into [`Packet`]s (either direction).
#[derive(Debug, Clone, Default)]
pub struct PacketDecoder {
    limits: Limits,
    /// Payload bytes so far of the message being continued.
    message_len: usize,
    continuing: bool,
}

impl PacketDecoder {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            message_len: 0,
            continuing: false,
        }
    }
    /// Whether the last packet decoded was continued (the message is not over).
    pub fn mid_message(&self) -> bool {
        self.continuing
    }
}

impl crate::Decoder for PacketDecoder {
    type Item = Packet;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let Some((_, (len, _seq))) = nom_to_codec(PROTO, src, mysql_packet_header(src))? else {
            return Ok(None);
        };
        let total = self.message_len.saturating_add(len);
        if total > self.limits.max_message {
            return Err(CodecError::FrameTooLarge {
                what: "mysql message",
                size: total as u64,
                limit: self.limits.max_message,
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        let wire = src.split_to(4 + len).freeze();
        let continuation = self.continuing;
        self.continuing = len == MAX_PAYLOAD;
        self.message_len = if self.continuing { total } else { 0 };
        Ok(Some(Packet { wire, continuation }))
    }
}

/// Append one packet (header + `payload`, which must be under 16 MB) to `out`.
pub fn put_packet(out: &mut BytesMut, seq: u8, payload: &[u8]) {
    let len = payload.len().min(MAX_PAYLOAD - 1);
    out.reserve(4 + len);
    out.put_uint_le(len as u64, 3);
    out.put_u8(seq);
    out.put_slice(payload.get(..len).unwrap_or_default());
}

/// One packet (header + `payload`) as bytes.
pub fn packet(seq: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    put_packet(&mut out, seq, payload);
    out.freeze()
}

/// A packet with a new sequence id (header rewritten, payload shared).
pub fn with_seq(p: &Packet, seq: u8) -> Bytes {
    if p.seq() == seq {
        return p.wire.clone();
    }
    let mut out = BytesMut::from(p.wire.as_ref());
    if let Some(b) = out.get_mut(3) {
        *b = seq;
    }
    out.freeze()
}

/// Always `Reject`: MySQL cannot be sniffed from client bytes (see the module docs).
pub fn sniff(_buf: &[u8]) -> Verdict {
    Verdict::Reject
}
