//! Head parsing: locating a complete head in the buffer without rescanning,
//! running `httparse` over it, and turning what it found into byte ranges
//! (so a head is a `Bytes` plus offsets) and into body framing.
use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};

use super::{BodyLength, PROTOCOL, Version};
use crate::CodecError;

/// A byte range inside a head's wire bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// The range of `part`, which must be a sub-slice of `base`.
    pub(super) fn of(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        Span {
            start,
            end: start.saturating_add(part.len()),
        }
    }

    pub(super) const fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    pub(super) fn get<'a>(&self, wire: &'a [u8]) -> &'a [u8] {
        wire.get(self.start..self.end).unwrap_or_default()
    }

    pub(super) fn start(&self) -> usize {
        self.start
    }

    pub(super) fn end(&self) -> usize {
        self.end
    }

    /// The same range without leading and trailing spaces and tabs.
    pub(super) fn trim(self, wire: &[u8]) -> Span {
        let bytes = self.get(wire);
        let lead = bytes.iter().take_while(|b| is_ows(**b)).count();
        let trail = bytes.iter().rev().take_while(|b| is_ows(**b)).count();
        if lead >= bytes.len() {
            return Span {
                start: self.start,
                end: self.start,
            };
        }
        Span {
            start: self.start + lead,
            end: self.end - trail,
        }
    }
}

pub(super) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn malformed(reason: &'static str) -> CodecError {
    CodecError::malformed(PROTOCOL, reason)
}

/// Where the search for the end of the current head stands, so that a head
/// arriving a few bytes at a time is scanned once, not once per read.
#[derive(Debug, Clone, Default)]
pub(super) struct HeadScan {
    /// Bytes of `src` already searched for the blank line.
    searched: usize,
    /// Run `httparse` over an incomplete head once `src` reaches this length
    /// (doubling each time), to reject garbage early at linear total cost.
    next_probe: usize,
    /// Empty lines skipped before the current head.
    skipped: usize,
}

/// What [`locate`] found.
pub(super) enum Locate {
    /// Nothing to parse yet.
    NeedMore,
    /// No complete head yet, but run the parser to catch garbage early.
    Probe,
    /// A complete head of this many bytes is at the front of `src`.
    Complete(usize),
}

/// Skip empty lines before a head (RFC 9112 §2.2), enforce the size limit
/// and find the end of the head.
pub(super) fn locate(
    src: &mut BytesMut,
    scan: &mut HeadScan,
    max: usize,
) -> Result<Locate, CodecError> {
    loop {
        match src.first() {
            Some(b'\n') => {
                src.advance(1);
                scan.skipped += 1;
            }
            Some(b'\r') => match src.get(1) {
                Some(b'\n') => {
                    src.advance(2);
                    scan.skipped += 2;
                }
                Some(_) => return Err(malformed("bare CR before the start line")),
                None => return Ok(Locate::NeedMore),
            },
            Some(_) => break,
            None => return Ok(Locate::NeedMore),
        }
        if scan.skipped > max {
            return Err(CodecError::HeadTooLarge { limit: max });
        }
    }
    let from = scan.searched.saturating_sub(2);
    match find_head_end(src, from) {
        Some(end) if end > max => Err(CodecError::HeadTooLarge { limit: max }),
        Some(end) => Ok(Locate::Complete(end)),
        None => {
            scan.searched = src.len();
            if src.len() > max {
                return Err(CodecError::HeadTooLarge { limit: max });
            }
            if src.len() >= scan.next_probe {
                scan.next_probe = src.len().saturating_mul(2).max(64);
                Ok(Locate::Probe)
            } else {
                Ok(Locate::NeedMore)
            }
        }
    }
}

/// The length of the head up to and including its blank line
/// (`LF CR LF` or `LF LF`), searching for line ends from `from`.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let lf = i + memchr::memchr(b'\n', buf.get(i..)?)?;
        match buf.get(lf + 1)? {
            b'\n' => return Some(lf + 2),
            b'\r' if *buf.get(lf + 2)? == b'\n' => return Some(lf + 3),
            _ => {}
        }
        i = lf + 1;
    }
}

/// Map an `httparse` error to ours; too many headers counts as too large a head.
pub(super) fn parse_error(e: httparse::Error, max_head_bytes: usize) -> CodecError {
    match e {
        httparse::Error::TooManyHeaders => CodecError::HeadTooLarge {
            limit: max_head_bytes,
        },
        httparse::Error::HeaderName => malformed("invalid header name"),
        httparse::Error::HeaderValue => malformed("invalid header value"),
        httparse::Error::NewLine => malformed("invalid line ending"),
        httparse::Error::Status => malformed("invalid response status"),
        httparse::Error::Token => malformed("invalid token in start line"),
        httparse::Error::Version => malformed("invalid HTTP version"),
    }
}

/// Header fields kept on the stack when the limit allows it.
const STACK_HEADERS: usize = 128;

/// A request line and headers as ranges of the parsed buffer.
pub(super) struct ParsedRequest {
    pub(super) len: usize,
    pub(super) method: Span,
    pub(super) target: Span,
    pub(super) version: Version,
    pub(super) headers: Vec<(Span, Span)>,
}

/// A status line and headers as ranges of the parsed buffer.
pub(super) struct ParsedResponse {
    pub(super) len: usize,
    pub(super) status: u16,
    pub(super) version: Version,
    pub(super) headers: Vec<(Span, Span)>,
}

fn version(minor: Option<u8>) -> Version {
    if minor == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    }
}

fn header_spans(buf: &[u8], headers: &[httparse::Header<'_>]) -> Vec<(Span, Span)> {
    headers
        .iter()
        .map(|h| {
            (
                Span::of(buf, h.name.as_bytes()),
                Span::of(buf, h.value).trim(buf),
            )
        })
        .collect()
}

/// Parse a request head at the front of `buf`. `Ok(None)`: incomplete.
pub(super) fn parse_request(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<ParsedRequest>, httparse::Error> {
    if max_headers <= STACK_HEADERS {
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
        parse_request_with(buf, slots.get_mut(..max_headers).unwrap_or_default())
    } else {
        let mut slots = vec![MaybeUninit::<httparse::Header<'_>>::uninit(); max_headers];
        parse_request_with(buf, &mut slots)
    }
}

fn parse_request_with<'b>(
    buf: &'b [u8],
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
) -> Result<Option<ParsedRequest>, httparse::Error> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(httparse::Error::Token);
    };
    Ok(Some(ParsedRequest {
        len,
        method: Span::of(buf, method.as_bytes()),
        target: Span::of(buf, target.as_bytes()),
        version: version(req.version),
        headers: header_spans(buf, req.headers),
    }))
}

/// Parse a response head at the front of `buf`. `Ok(None)`: incomplete.
pub(super) fn parse_response(
    buf: &[u8],
    max_headers: usize,
) -> Result<Option<ParsedResponse>, httparse::Error> {
    if max_headers <= STACK_HEADERS {
        let mut slots = [httparse::EMPTY_HEADER; STACK_HEADERS];
        parse_response_with(buf, slots.get_mut(..max_headers).unwrap_or_default())
    } else {
        let mut slots = vec![httparse::EMPTY_HEADER; max_headers];
        parse_response_with(buf, &mut slots)
    }
}

fn parse_response_with<'b>(
    buf: &'b [u8],
    slots: &mut [httparse::Header<'b>],
) -> Result<Option<ParsedResponse>, httparse::Error> {
    let mut res = httparse::Response::new(slots);
    let len = match res.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let Some(status) = res.code else {
        return Err(httparse::Error::Status);
    };
    Ok(Some(ParsedResponse {
        len,
        status,
        version: version(res.version),
        headers: header_spans(buf, res.headers),
    }))
}

/// The elements of a comma-separated field value, trimmed, empty ones skipped.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

pub(super) fn trim_ows(s: &[u8]) -> &[u8] {
    let lead = s.iter().take_while(|b| is_ows(**b)).count();
    let s = s.get(lead..).unwrap_or_default();
    let trail = s.iter().rev().take_while(|b| is_ows(**b)).count();
    s.get(..s.len() - trail).unwrap_or_default()
}

/// What `Transfer-Encoding` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TransferCoding {
    /// No `Transfer-Encoding` field.
    Absent,
    /// `chunked` is the final coding (and appears once).
    Chunked,
    /// Present, but `chunked` is not (only) the final coding.
    Other,
}

/// What `Content-Length` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContentLength {
    Absent,
    Valid(u64),
    /// Not 1*DIGIT, overflowing, or several differing values.
    Invalid,
}

/// The framing- and connection-relevant facts of a head's fields.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fields {
    pub(super) transfer: TransferCoding,
    pub(super) length: ContentLength,
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) conn_upgrade: bool,
    pub(super) upgrade: bool,
    pub(super) expect_continue: bool,
    pub(super) host: Option<Span>,
    pub(super) hosts: usize,
    /// More than one `Content-Length` field line, or a list value (`5, 5`).
    pub(super) length_repeated: bool,
    /// A `Connection` field line is present.
    pub(super) connection: bool,
    /// `Connection` names a field other than `close`, `keep-alive`, `upgrade`
    /// (that field is hop-by-hop too).
    pub(super) connection_names_fields: bool,
    /// `Keep-Alive` or `Proxy-Connection` fields, or a `TE` other than
    /// exactly `trailers`: hop-by-hop fields a proxy must not forward.
    pub(super) hop_by_hop: bool,
    /// An `Upgrade` field line is present (even an empty one).
    pub(super) upgrade_field: bool,
    /// `TE` lists `trailers`.
    pub(super) te_trailers: bool,
}

impl Fields {
    pub(super) fn scan(wire: &[u8], headers: &[(Span, Span)]) -> Fields {
        let mut f = Fields {
            transfer: TransferCoding::Absent,
            length: ContentLength::Absent,
            close: false,
            keep_alive: false,
            conn_upgrade: false,
            upgrade: false,
            expect_continue: false,
            host: None,
            hosts: 0,
            length_repeated: false,
            connection: false,
            connection_names_fields: false,
            hop_by_hop: false,
            upgrade_field: false,
            te_trailers: false,
        };
        let mut length_fields = 0usize;
        // Transfer-Encoding state across all its field lines.
        let mut te_seen = false;
        let mut te_last_chunked = false;
        let mut te_chunked_not_last = false;
        for (name, value) in headers {
            let name = name.get(wire);
            let v = value.get(wire);
            if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te_seen = true;
                for coding in list_elements(v) {
                    if te_last_chunked {
                        // Anything after `chunked` (including `chunked` again).
                        te_chunked_not_last = true;
                    }
                    let coding_name =
                        trim_ows(coding.split(|b| *b == b';').next().unwrap_or_default());
                    te_last_chunked = coding_name.eq_ignore_ascii_case(b"chunked");
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                length_fields += 1;
                f.length_repeated |= length_fields > 1 || v.contains(&b',');
                let mut any = false;
                for element in v.split(|b| *b == b',').map(trim_ows) {
                    any = true;
                    f.length = match (f.length, parse_decimal(element)) {
                        (ContentLength::Invalid, _) | (_, None) => ContentLength::Invalid,
                        (ContentLength::Absent, Some(n)) => ContentLength::Valid(n),
                        (ContentLength::Valid(old), Some(n)) if old == n => ContentLength::Valid(n),
                        (ContentLength::Valid(_), Some(_)) => ContentLength::Invalid,
                    };
                }
                if !any {
                    f.length = ContentLength::Invalid;
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                f.connection = true;
                for token in list_elements(v) {
                    if token.eq_ignore_ascii_case(b"close") {
                        f.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        f.keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        f.conn_upgrade = true;
                    } else {
                        f.connection_names_fields = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                f.upgrade |= !v.is_empty();
                f.upgrade_field = true;
            } else if name.eq_ignore_ascii_case(b"keep-alive")
                || name.eq_ignore_ascii_case(b"proxy-connection")
            {
                f.hop_by_hop = true;
            } else if name.eq_ignore_ascii_case(b"te") {
                f.te_trailers |= list_elements(v).any(|t| t.eq_ignore_ascii_case(b"trailers"));
                f.hop_by_hop |= !v.eq_ignore_ascii_case(b"trailers");
            } else if name.eq_ignore_ascii_case(b"expect") {
                f.expect_continue |= v.eq_ignore_ascii_case(b"100-continue");
            } else if name.eq_ignore_ascii_case(b"host") {
                f.hosts += 1;
                if f.host.is_none() {
                    f.host = Some(*value);
                }
            }
        }
        f.transfer = match (te_seen, te_last_chunked && !te_chunked_not_last) {
            (false, _) => TransferCoding::Absent,
            (true, true) => TransferCoding::Chunked,
            (true, false) => TransferCoding::Other,
        };
        f
    }

    /// Persistence by version and `Connection` tokens (RFC 9112 §9.3).
    pub(super) fn persistent(&self, version: Version) -> bool {
        match version {
            Version::Http11 => !self.close,
            Version::Http10 => self.keep_alive && !self.close,
        }
    }

    /// Request body framing (RFC 9112 §6.3), strict against smuggling.
    pub(super) fn request_body(&self, version: Version) -> Result<BodyLength, CodecError> {
        match self.transfer {
            TransferCoding::Absent => {}
            _ if version == Version::Http10 => {
                return Err(malformed("Transfer-Encoding in an HTTP/1.0 request"));
            }
            _ if self.length != ContentLength::Absent => {
                return Err(malformed("both Transfer-Encoding and Content-Length"));
            }
            TransferCoding::Chunked => return Ok(BodyLength::Chunked),
            TransferCoding::Other => {
                return Err(malformed("request transfer-coding does not end in chunked"));
            }
        }
        match self.length {
            ContentLength::Absent | ContentLength::Valid(0) => Ok(BodyLength::Empty),
            ContentLength::Valid(n) => Ok(BodyLength::Length(n)),
            ContentLength::Invalid => Err(malformed("invalid Content-Length")),
        }
    }

    /// Response body framing when the status and request method allow a body
    /// (RFC 9112 §6.3 items 3 to 7).
    pub(super) fn response_body(&self, version: Version) -> Result<BodyLength, CodecError> {
        match self.transfer {
            TransferCoding::Chunked if version == Version::Http11 => {
                return Ok(BodyLength::Chunked);
            }
            // Faulty (HTTP/1.0) or non-chunked final coding: read until close.
            TransferCoding::Chunked | TransferCoding::Other => return Ok(BodyLength::UntilClose),
            TransferCoding::Absent => {}
        }
        match self.length {
            ContentLength::Absent => Ok(BodyLength::UntilClose),
            ContentLength::Valid(0) => Ok(BodyLength::Empty),
            ContentLength::Valid(n) => Ok(BodyLength::Length(n)),
            ContentLength::Invalid => Err(malformed("invalid Content-Length")),
        }
    }
}

/// `1*DIGIT` as a `u64`; `None` when empty, not all digits, or overflowing.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, b| {
        let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// The authority of an absolute-form target (`http://host:port/p` gives
/// `host:port`); `None` for other forms. `Err` when it carries userinfo
/// (`user@host`, which RFC 9110 §4.2.4 forbids in http(s) URIs) or is empty.
pub(super) fn target_authority(wire: &[u8], target: Span) -> Result<Option<Span>, CodecError> {
    let t = target.get(wire);
    if t.first() == Some(&b'/') || t == b"*" {
        return Ok(None);
    }
    let Some(scheme_end) = memchr::memmem::find(t, b"://") else {
        return Ok(None);
    };
    let from = scheme_end + 3;
    let rest = t.get(from..).unwrap_or_default();
    let len = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = rest.get(..len).unwrap_or_default();
    if authority.is_empty() {
        return Err(malformed("absolute-form target without a host"));
    }
    if authority.contains(&b'@') {
        return Err(malformed("userinfo in the request target"));
    }
    let start = target.start() + from;
    Ok(Some(Span::new(start, start + len)))
}

/// The first bare LF (an LF not preceded by CR) in `head`, if any.
pub(super) fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head.get(i - 1) != Some(&b'\r'))
}

/// The path of a request target: origin-form up to `?`/`#`; for absolute-form
/// the path after the authority (`None` = empty, meaning `/`); `*` as is;
/// authority-form (CONNECT) has no path (an empty range).
pub(super) fn target_path(wire: &[u8], target: Span) -> Option<Span> {
    let t = target.get(wire);
    let base = target.start();
    let end_of_path = |from: usize| {
        let rest = t.get(from..).unwrap_or_default();
        from + rest
            .iter()
            .position(|b| *b == b'?' || *b == b'#')
            .unwrap_or(rest.len())
    };
    match t.first() {
        Some(b'/') => Some(Span::new(base, base + end_of_path(0))),
        Some(b'*') if t.len() == 1 => Some(target),
        _ => match memchr::memmem::find(t, b"://") {
            Some(scheme_end) => {
                let authority = scheme_end + 3;
                let rest = t.get(authority..).unwrap_or_default();
                match rest.iter().position(|b| matches!(b, b'/' | b'?' | b'#')) {
                    Some(i) if rest.get(i) == Some(&b'/') => {
                        let start = authority + i;
                        Some(Span::new(base + start, base + end_of_path(start)))
                    }
                    _ => None,
                }
            }
            None => Some(Span::new(base, base)),
        },
    }
}
