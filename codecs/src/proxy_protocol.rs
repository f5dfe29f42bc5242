//! The PROXY protocol header (HAProxy, versions 1 and 2): the few bytes a
//! proxy in front sends before the client's own, naming the client's and
//! the proxy's addresses.
//! Spec: <https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt>.
//!
//! * v1 is one text line of at most 107 bytes:
//!   `PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n` (or `TCP6`, or
//!   `UNKNOWN` followed by anything up to the CRLF).
//! * v2 is a 16-byte binary head (a 12-byte signature, version/command,
//!   family/transport, a big-endian length) then that many bytes: the
//!   addresses (12 for IPv4, 36 for IPv6, 216 for UNIX) and TLVs.
//!
//! [`start`] tells from the first bytes whether a header is there at all
//! (for listeners where it is optional); [`decode`] takes one header off the
//! front of a buffer (`Ok(None)`: need more bytes); [`write_v1`] and
//! [`write_v2`] encode one. TLVs are kept as `Bytes` views of the input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes, BytesMut};
use nom::Parser;
use nom::branch::alt;
use nom::bytes::{complete, streaming};
use nom::combinator::{eof, value};
use nom::number::{complete as number_complete, streaming as number};
use nom::sequence::{preceded, terminated};

use crate::CodecError;
use crate::parse::{self, Fail, Parsed};

const P: &str = "PROXY protocol";

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 line, CRLF included.
pub const V1_MAX: usize = 107;
/// The fixed part of a v2 header.
pub const V2_HEAD: usize = 16;
/// The default bound on a whole v2 header (head, addresses and TLVs). The
/// length field allows 65,535 bytes; real senders stay far below (HAProxy's
/// SSL TLVs with a client certificate CN are a few hundred bytes).
pub const DEFAULT_MAX_V2: usize = 4096;
/// Length of one UNIX address in a v2 header.
pub const UNIX_ADDR_LEN: usize = 108;

/// Which version a header (or the start of one) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// What the first bytes of a connection say about a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The bytes begin with this version's signature.
    Header(Version),
    /// Too few bytes to tell (a prefix of a signature).
    NeedMore,
    /// No PROXY header here.
    Absent,
}

/// Whether `buf` starts with a PROXY header: the v1 prefix `PROXY ` or the
/// 12-byte v2 signature. Decides as soon as a byte differs from both.
pub fn start(buf: &[u8]) -> Start {
    let v1 = prefix_state(buf, V1_PREFIX);
    let v2 = prefix_state(buf, &V2_SIGNATURE);
    match (v1, v2) {
        (Prefix::Full, _) => Start::Header(Version::V1),
        (_, Prefix::Full) => Start::Header(Version::V2),
        (Prefix::Partial, _) | (_, Prefix::Partial) => Start::NeedMore,
        _ => Start::Absent,
    }
}

enum Prefix {
    Full,
    Partial,
    Differs,
}

fn prefix_state(buf: &[u8], sig: &[u8]) -> Prefix {
    let n = buf.len().min(sig.len());
    if buf.get(..n) != sig.get(..n) {
        Prefix::Differs
    } else if n == sig.len() {
        Prefix::Full
    } else {
        Prefix::Partial
    }
}

/// v2 command: `LOCAL` (a connection of the proxy's own, e.g. a health
/// check: use the real endpoints) or `PROXY` (relayed for a client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Local,
    Proxy,
}

/// v2 transport protocol (v1 is always a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unspec,
    Stream,
    Datagram,
}

/// The addresses a header carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addresses {
    /// None: v1 `UNKNOWN`, v2 `AF_UNSPEC` or a `LOCAL` command. The receiver
    /// uses the connection's real endpoints.
    Unspec,
    /// IPv4 or IPv6 source (the client) and destination (where it connected).
    Inet {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// UNIX socket paths, 108 bytes each, NUL padded, as on the wire.
    Unix { source: Bytes, destination: Bytes },
}

impl Addresses {
    /// The client's address, for IP headers.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Addresses::Inet { source, .. } => Some(*source),
            _ => None,
        }
    }
}

/// One v2 type-length-value extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlv {
    pub kind: u8,
    pub value: Bytes,
}

/// Well-known TLV types.
pub mod tlv {
    pub const ALPN: u8 = 0x01;
    pub const AUTHORITY: u8 = 0x02;
    pub const CRC32C: u8 = 0x03;
    pub const NOOP: u8 = 0x04;
    pub const UNIQUE_ID: u8 = 0x05;
    pub const SSL: u8 = 0x20;
    pub const NETNS: u8 = 0x30;
}

/// One decoded header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    pub command: Command,
    pub transport: Transport,
    pub addresses: Addresses,
    /// v2 TLVs, in order (views of the input).
    pub tlvs: Vec<Tlv>,
    /// The whole header as it was received.
    pub wire: Bytes,
}

impl Header {
    /// The client's address the header names (`None`: use the connection's own).
    pub fn source(&self) -> Option<SocketAddr> {
        match self.command {
            Command::Local => None,
            Command::Proxy => self.addresses.source(),
        }
    }

    /// The first TLV of type `kind`.
    pub fn tlv(&self, kind: u8) -> Option<&Bytes> {
        self.tlvs.iter().find(|t| t.kind == kind).map(|t| &t.value)
    }
}

/// What a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub v1: bool,
    pub v2: bool,
    /// Bound on a whole v2 header, in bytes.
    pub max_v2: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            v1: true,
            v2: true,
            max_v2: DEFAULT_MAX_V2,
        }
    }
}

/// Take one PROXY header off the front of `src`. `Ok(None)`: `src` holds a
/// prefix of a header; read more. An error names what is wrong (no header
/// at all is an error too: call [`start`] first where it is optional).
pub fn decode(src: &mut BytesMut, limits: &Limits) -> Result<Option<Header>, CodecError> {
    match start(src) {
        Start::NeedMore => Ok(None),
        Start::Absent => Err(CodecError::malformed(P, "no PROXY protocol header")),
        Start::Header(Version::V1) if !limits.v1 => Err(CodecError::Unsupported {
            protocol: P,
            reason: "version 1 is not accepted here",
        }),
        Start::Header(Version::V2) if !limits.v2 => Err(CodecError::Unsupported {
            protocol: P,
            reason: "version 2 is not accepted here",
        }),
        Start::Header(Version::V1) => decode_v1(src),
        Start::Header(Version::V2) => decode_v2(src, limits.max_v2),
    }
}

/// A [`crate::Decoder`] for one header at a time.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderDecoder {
    pub limits: Limits,
}

impl crate::Decoder for HeaderDecoder {
    type Item = Header;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Header>, CodecError> {
        decode(src, &self.limits)
    }
}

fn decode_v1(src: &mut BytesMut) -> Result<Option<Header>, CodecError> {
    let Some((addresses, used)) = parse::finish(P, src, v1_header(src))? else {
        return Ok(None);
    };
    let wire = src.split_to(used).freeze();
    Ok(Some(Header {
        version: Version::V1,
        command: Command::Proxy,
        transport: Transport::Stream,
        addresses,
        tlvs: Vec::new(),
        wire,
    }))
}

/// `PROXY <addresses>\r\n`, at most [`V1_MAX`] bytes.
fn v1_header(input: &[u8]) -> Parsed<'_, Addresses> {
    let (rest, _) = streaming::tag(&V1_PREFIX[..]).parse(input)?;
    let (after, line) = v1_line(input.len(), rest)?;
    let (_, addresses) = v1_addresses(line)?;
    Ok((after, addresses))
}

/// The rest of the v1 line up to its CRLF; `whole` is the length of the
/// input the header started in. The first CR or LF ends the line: a bare
/// LF is an error at once, so the verdict is the same however the bytes
/// arrive. The scan is `memchr2`, bounded by [`V1_MAX`].
fn v1_line(whole: usize, input: &[u8]) -> Parsed<'_, &[u8]> {
    let too_large = || CodecError::HeadTooLarge { limit: V1_MAX };
    let window = input
        .get(..input.len().min(V1_MAX - V1_PREFIX.len()))
        .unwrap_or_default();
    let Some(cr) = memchr::memchr2(b'\r', b'\n', window) else {
        return if whole >= V1_MAX {
            parse::fail(too_large())
        } else {
            parse::incomplete(1)
        };
    };
    let (line, end) = window.split_at(cr);
    match end {
        [b'\n', ..] => parse::fail(CodecError::malformed(P, "v1 line ends without CR")),
        [_] if whole >= V1_MAX => parse::fail(too_large()),
        [_] => parse::incomplete(1),
        [_, b'\n', ..] => Ok((input.get(cr + 2..).unwrap_or_default(), line)),
        _ => parse::fail(CodecError::malformed(P, "v1 line: CR not followed by LF")),
    }
}

/// `TCP4 src dst sport dport`, `TCP6 ...` or `UNKNOWN[ anything]`.
fn v1_addresses(line: &[u8]) -> Parsed<'_, Addresses> {
    let unknown_family = || CodecError::malformed(P, "v1: unknown protocol family");
    if let Ok((rest, _)) = complete::tag::<_, _, Fail>(&b"UNKNOWN"[..]).parse(line) {
        return match rest {
            [] | [b' ', ..] => Ok((&[], Addresses::Unspec)),
            _ => parse::fail(unknown_family()),
        };
    }
    let (fields, v6) = alt((
        value(false, complete::tag(&b"TCP4"[..])),
        value(true, complete::tag(&b"TCP6"[..])),
    ))
    .parse(line)
    .map_err(|_: nom::Err<Fail<'_>>| parse::failure(unknown_family()))?;
    let field = || preceded(complete::tag(&b" "[..]), complete::take_till(|b| b == b' '));
    let (_, (s, d, sp, dp)) = terminated((field(), field(), field(), field()), eof)
        .parse(fields)
        .map_err(|_: nom::Err<Fail<'_>>| {
            parse::failure(CodecError::malformed(
                P,
                "v1: want `family source destination source_port destination_port`",
            ))
        })?;
    let ip = |b: &[u8]| -> Result<IpAddr, CodecError> {
        let s = std::str::from_utf8(b).map_err(|_| CodecError::malformed(P, "v1: bad address"))?;
        if v6 {
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| CodecError::malformed(P, "v1: bad IPv6 address"))
        } else {
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| CodecError::malformed(P, "v1: bad IPv4 address"))
        }
    };
    let inet = || -> Result<Addresses, CodecError> {
        Ok(Addresses::Inet {
            source: SocketAddr::new(ip(s)?, port(sp)?),
            destination: SocketAddr::new(ip(d)?, port(dp)?),
        })
    };
    inet().map(|a| (&[][..], a)).map_err(|e| parse::failure(e))
}

/// A decimal port: 1-5 digits, no leading zero (except `0` itself), ≤ 65535.
fn port(b: &[u8]) -> Result<u16, CodecError> {
    let bad = || CodecError::malformed(P, "v1: bad port");
    if b.is_empty() || b.len() > 5 || (b.len() > 1 && b.first() == Some(&b'0')) {
        return Err(bad());
    }
    let mut n: u32 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return Err(bad());
        }
        n = n * 10 + u32::from(c - b'0');
    }
    u16::try_from(n).map_err(|_| bad())
}

/// The fixed part of a v2 header, checked.
struct V2Head {
    command: Command,
    transport: Transport,
    family: u8,
    addr_len: usize,
    /// The whole header: the fixed part, addresses and TLVs.
    total: usize,
}

/// The 16-byte fixed part of a v2 header, then (streaming) its `len`
/// bytes: the checks run on the fixed part, before the rest is awaited.
fn v2_header(max: usize) -> impl Fn(&[u8]) -> Parsed<'_, V2Head> {
    move |input| {
        let (rest, (_, ver_cmd, fam, len)) = (
            streaming::take(V2_SIGNATURE.len()),
            number::be_u8,
            number::be_u8,
            number::be_u16,
        )
            .parse(input)?;
        let at = |e| parse::fail(e);
        if ver_cmd >> 4 != 2 {
            return at(CodecError::Unsupported {
                protocol: P,
                reason: "v2 header with a version other than 2",
            });
        }
        let command = match ver_cmd & 0x0f {
            0 => Command::Local,
            1 => Command::Proxy,
            _ => return at(CodecError::malformed(P, "v2: unknown command")),
        };
        let transport = match fam & 0x0f {
            0 => Transport::Unspec,
            1 => Transport::Stream,
            2 => Transport::Datagram,
            _ => return at(CodecError::malformed(P, "v2: unknown transport protocol")),
        };
        let addr_len = match fam >> 4 {
            0 => 0,
            1 => 12,
            2 => 36,
            3 => 2 * UNIX_ADDR_LEN,
            _ => return at(CodecError::malformed(P, "v2: unknown address family")),
        };
        let len = usize::from(len);
        let total = V2_HEAD + len;
        if total > max {
            return at(CodecError::FrameTooLarge {
                what: "PROXY protocol v2 header",
                size: total as u64,
                limit: max,
            });
        }
        if len < addr_len {
            return at(CodecError::malformed(
                P,
                "v2: length shorter than the address block",
            ));
        }
        let (rest, _) = streaming::take(len).parse(rest)?;
        Ok((
            rest,
            V2Head {
                command,
                transport,
                family: fam >> 4,
                addr_len,
                total,
            },
        ))
    }
}

fn decode_v2(src: &mut BytesMut, max: usize) -> Result<Option<Header>, CodecError> {
    let result = v2_header(max)(src);
    let missing = result.as_ref().err().and_then(parse::needed).unwrap_or(0);
    let Some((head, _)) = parse::finish(P, src, result)? else {
        src.reserve(missing);
        return Ok(None);
    };
    let wire = src.split_to(head.total).freeze();
    let body = wire.get(V2_HEAD..).unwrap_or_default();
    let (addrs, tlv_area) = body.split_at(head.addr_len.min(body.len()));
    let addresses = match (head.command, head.family) {
        (Command::Local, _) | (_, 0) => Addresses::Unspec,
        (_, 1) => parse::complete(P, addrs, inet::<Ipv4Addr, 4>(addrs))?.0,
        (_, 2) => parse::complete(P, addrs, inet::<Ipv6Addr, 16>(addrs))?.0,
        _ => {
            let (source, destination) = addrs.split_at(UNIX_ADDR_LEN.min(addrs.len()));
            Addresses::Unix {
                source: wire.slice_ref(source),
                destination: wire.slice_ref(destination),
            }
        }
    };
    let (tlvs, _) = parse::complete(P, tlv_area, tlv_list(&wire, tlv_area))?;
    Ok(Some(Header {
        version: Version::V2,
        command: head.command,
        transport: head.transport,
        addresses,
        tlvs,
        wire,
    }))
}

/// Source and destination addresses of `N` bytes each, then their ports.
fn inet<A, const N: usize>(input: &[u8]) -> Parsed<'_, Addresses>
where
    A: From<[u8; N]> + Into<IpAddr>,
{
    let octets = || complete::take(N).map(|b: &[u8]| <[u8; N]>::try_from(b).unwrap_or([0; N]));
    let (rest, (s, d, sp, dp)) = (
        octets(),
        octets(),
        number_complete::be_u16,
        number_complete::be_u16,
    )
        .parse(input)?;
    Ok((
        rest,
        Addresses::Inet {
            source: SocketAddr::new(A::from(s).into(), sp),
            destination: SocketAddr::new(A::from(d).into(), dp),
        },
    ))
}

/// The TLVs of `area` (a slice of `wire`), which they must fill exactly.
fn tlv_list<'a>(wire: &'a Bytes, area: &'a [u8]) -> Parsed<'a, Vec<Tlv>> {
    let mut out = Vec::new();
    let mut rest = area;
    while !rest.is_empty() {
        let (after, (kind, len)) = (number_complete::be_u8, number_complete::be_u16)
            .parse(rest)
            .map_err(|_: nom::Err<Fail<'_>>| {
                parse::failure(CodecError::malformed(P, "v2: truncated TLV"))
            })?;
        let (after, value) =
            complete::take(len)
                .parse(after)
                .map_err(|_: nom::Err<Fail<'_>>| {
                    parse::failure(CodecError::malformed(P, "v2: TLV longer than the header"))
                })?;
        out.push(Tlv {
            kind,
            value: wire.slice_ref(value),
        });
        rest = after;
    }
    Ok((rest, out))
}

/// The TLVs of `area`, which they must fill exactly.
pub fn parse_tlvs(area: Bytes) -> Result<Vec<Tlv>, CodecError> {
    parse::complete(P, &area, tlv_list(&area, &area)).map(|(tlvs, _)| tlvs)
}

/// Write a v1 header for `addresses`: `TCP4`/`TCP6` when both are of one IP
/// family, else `UNKNOWN` (as the spec asks for anything it cannot express).
pub fn write_v1(out: &mut BytesMut, addresses: &Addresses) {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(V1_MAX);
    line.push_str("PROXY ");
    match addresses {
        Addresses::Inet {
            source,
            destination,
        } if source.is_ipv4() == destination.is_ipv4() => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            let _ = write!(
                line,
                "{family} {} {} {} {}",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            );
        }
        _ => line.push_str("UNKNOWN"),
    }
    line.push_str("\r\n");
    out.extend_from_slice(line.as_bytes());
}

/// Write a v2 header. IP addresses of two families are written as IPv6
/// (IPv4-mapped); TLVs longer than 65,535 bytes, or past the 65,535-byte
/// total, are an error.
pub fn write_v2(
    out: &mut BytesMut,
    command: Command,
    transport: Transport,
    addresses: &Addresses,
    tlvs: &[Tlv],
) -> Result<(), CodecError> {
    let too_large = |size: usize| CodecError::FrameTooLarge {
        what: "PROXY protocol v2 header",
        size: size as u64,
        limit: usize::from(u16::MAX),
    };
    let (family, addr_len) = match addresses {
        Addresses::Unspec => (0u8, 0usize),
        Addresses::Inet {
            source,
            destination,
        } if source.is_ipv4() && destination.is_ipv4() => (1, 12),
        Addresses::Inet { .. } => (2, 36),
        Addresses::Unix { .. } => (3, 2 * UNIX_ADDR_LEN),
    };
    let mut len = addr_len;
    for t in tlvs {
        if t.value.len() > usize::from(u16::MAX) {
            return Err(too_large(t.value.len()));
        }
        len += 3 + t.value.len();
    }
    let len16 = u16::try_from(len).map_err(|_| too_large(len))?;
    out.reserve(V2_HEAD + len);
    out.put_slice(&V2_SIGNATURE);
    out.put_u8(match command {
        Command::Local => 0x20,
        Command::Proxy => 0x21,
    });
    let t = match transport {
        Transport::Unspec => 0,
        Transport::Stream => 1,
        Transport::Datagram => 2,
    };
    out.put_u8(family << 4 | t);
    out.put_u16(len16);
    match addresses {
        Addresses::Unspec => {}
        Addresses::Inet {
            source,
            destination,
        } => match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                out.put_slice(&s.octets());
                out.put_slice(&d.octets());
                out.put_u16(source.port());
                out.put_u16(destination.port());
            }
            (s, d) => {
                out.put_slice(&v6(s).octets());
                out.put_slice(&v6(d).octets());
                out.put_u16(source.port());
                out.put_u16(destination.port());
            }
        },
        Addresses::Unix {
            source,
            destination,
        } => {
            for path in [source, destination] {
                let n = path.len().min(UNIX_ADDR_LEN);
                out.put_slice(path.get(..n).unwrap_or_default());
                out.put_bytes(0, UNIX_ADDR_LEN - n);
            }
        }
    }
    for t in tlvs {
        out.put_u8(t.kind);
        out.put_u16(u16::try_from(t.value.len()).unwrap_or(u16::MAX));
        out.put_slice(&t.value);
    }
    Ok(())
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Option<Header>, CodecError> {
        decode(&mut BytesMut::from(bytes), &Limits::default())
    }

    fn inet(s: &str, d: &str) -> Addresses {
        Addresses::Inet {
            source: s.parse().unwrap(),
            destination: d.parse().unwrap(),
        }
    }

    #[test]
    fn spec_v1_examples() {
        let h = one(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.addresses, inet("192.168.0.1:56324", "192.168.0.11:443"));
        assert_eq!(h.source(), Some("192.168.0.1:56324".parse().unwrap()));
        // The worst cases the spec lists, 56 and 104 bytes.
        let v4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(v4.len(), 56);
        assert!(one(v4).unwrap().is_some());
        let v6 = b"PROXY TCP6 ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
        assert!(one(v6).is_err(), "the spec's elided form is not an address");
        let full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let v6 = format!("PROXY TCP6 {full} {full} 65535 65535\r\n");
        assert_eq!(v6.len(), 104);
        assert!(one(v6.as_bytes()).unwrap().is_some());
        let unknown = format!("PROXY UNKNOWN {full} {full} 65535 65535\r\n");
        assert_eq!(unknown.len(), 107);
        let h = one(unknown.as_bytes()).unwrap().unwrap();
        assert_eq!((&h.addresses, h.source()), (&Addresses::Unspec, None));
        let h = one(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(h.wire.len(), 15);
    }

    #[test]
    fn v1_leaves_the_client_bytes() {
        let mut buf = BytesMut::from(&b"PROXY TCP6 2001:db8::1 ::1 1 80\r\n*1\r\n"[..]);
        let h = decode(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(h.addresses, inet("[2001:db8::1]:1", "[::1]:80"));
        assert_eq!(&buf[..], b"*1\r\n");
    }

    #[test]
    fn v1_needs_more_then_decodes_in_any_split() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 6379\r\n";
        for cut in 0..line.len() {
            assert_eq!(one(&line[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(one(line).unwrap().is_some());
    }

    #[test]
    fn v1_errors_name_the_problem() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
            b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
            b"PROXY UNKNOWNX\r\n",
            // Found by fuzzing: a bare LF inside an UNKNOWN line.
            b"PROXY UNKNOWN ffff::1 P4\nx\r\n",
            b"GET / HTTP/1.1\r\n",
        ];
        for b in bad {
            assert!(one(b).is_err(), "{:?}", String::from_utf8_lossy(b));
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert_eq!(one(&long), Err(CodecError::HeadTooLarge { limit: V1_MAX }));
    }

    /// The spec's v2 IPv4 example layout, built byte by byte.
    fn v2_tcp4() -> Vec<u8> {
        let mut b = V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
        b.extend_from_slice(&[203, 0, 113, 7, 10, 0, 0, 1]);
        b.extend_from_slice(&40000u16.to_be_bytes());
        b.extend_from_slice(&443u16.to_be_bytes());
        b
    }

    #[test]
    fn v2_tcp4_literal() {
        let mut buf = BytesMut::from(&[v2_tcp4(), b"PING\r\n".to_vec()].concat()[..]);
        let h = decode(&mut buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(h.version, Version::V2);
        assert_eq!(
            (h.command, h.transport),
            (Command::Proxy, Transport::Stream)
        );
        assert_eq!(h.addresses, inet("203.0.113.7:40000", "10.0.0.1:443"));
        assert_eq!(&buf[..], b"PING\r\n");
        for cut in 0..28 {
            assert_eq!(one(&v2_tcp4()[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn v2_local_ignores_addresses_and_tlvs_are_views() {
        let mut b = V2_SIGNATURE.to_vec();
        b.extend_from_slice(&[0x20, 0x11, 0x00, 12 + 3 + 2 + 3]);
        b.extend_from_slice(&[1; 12]);
        b.extend_from_slice(&[tlv::ALPN, 0, 2, b'h', b'2', tlv::NOOP, 0, 0]);
        let h = one(&b).unwrap().unwrap();
        assert_eq!(h.command, Command::Local);
        assert_eq!((h.addresses.clone(), h.source()), (Addresses::Unspec, None));
        assert_eq!(h.tlv(tlv::ALPN).map(|v| &v[..]), Some(&b"h2"[..]));
        assert_eq!(h.tlvs.len(), 2);
    }

    #[test]
    fn v2_errors() {
        let mut wrong_version = v2_tcp4();
        wrong_version[12] = 0x11;
        let mut wrong_command = v2_tcp4();
        wrong_command[12] = 0x22;
        let mut wrong_family = v2_tcp4();
        wrong_family[13] = 0x41;
        let mut wrong_transport = v2_tcp4();
        wrong_transport[13] = 0x13;
        let mut short = v2_tcp4();
        short[15] = 11;
        short.pop();
        let mut bad_tlv = v2_tcp4();
        bad_tlv[15] = 12 + 4;
        bad_tlv.extend_from_slice(&[1, 0, 5, 0]);
        for b in [
            wrong_version,
            wrong_command,
            wrong_family,
            wrong_transport,
            short,
            bad_tlv,
        ] {
            assert!(one(&b).is_err(), "{b:?}");
        }
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(one(&big), Err(CodecError::FrameTooLarge { .. })));
        let limits = Limits {
            v1: false,
            ..Limits::default()
        };
        let v1 = b"PROXY UNKNOWN\r\n";
        assert!(decode(&mut BytesMut::from(&v1[..]), &limits).is_err());
    }

    #[test]
    fn start_decides_early() {
        assert_eq!(start(b""), Start::NeedMore);
        assert_eq!(start(b"PRO"), Start::NeedMore);
        assert_eq!(start(b"\r\n\r\n"), Start::NeedMore);
        assert_eq!(start(b"PROXY "), Start::Header(Version::V1));
        assert_eq!(start(&V2_SIGNATURE), Start::Header(Version::V2));
        assert_eq!(start(b"GET "), Start::Absent);
        assert_eq!(start(b"*1\r\n"), Start::Absent);
        assert_eq!(start(b"\r\n\r\nX"), Start::Absent);
        assert_eq!(start(b"PROXYX"), Start::Absent);
    }

    #[test]
    fn round_trips() {
        let cases = [
            inet("203.0.113.7:40000", "10.0.0.1:443"),
            inet("[2001:db8::7]:1", "[::1]:65535"),
            Addresses::Unspec,
        ];
        for a in &cases {
            let mut out = BytesMut::new();
            write_v1(&mut out, a);
            let h = decode(&mut out, &Limits::default()).unwrap().unwrap();
            assert_eq!(&h.addresses, a);
            assert!(out.is_empty());
            let tlvs = vec![Tlv {
                kind: tlv::AUTHORITY,
                value: Bytes::from_static(b"example.com"),
            }];
            write_v2(&mut out, Command::Proxy, Transport::Stream, a, &tlvs).unwrap();
            let h = decode(&mut out, &Limits::default()).unwrap().unwrap();
            assert_eq!((&h.addresses, &h.tlvs), (a, &tlvs));
        }
        // Mixed families: v1 falls back to UNKNOWN, v2 maps IPv4 into IPv6.
        let mixed = inet("1.2.3.4:5", "[::1]:6");
        let mut out = BytesMut::new();
        write_v1(&mut out, &mixed);
        assert_eq!(&out[..], b"PROXY UNKNOWN\r\n");
        out.clear();
        write_v2(&mut out, Command::Proxy, Transport::Stream, &mixed, &[]).unwrap();
        let h = decode(&mut out, &Limits::default()).unwrap().unwrap();
        assert_eq!(h.addresses, inet("[::ffff:1.2.3.4]:5", "[::1]:6"));
        // UNIX paths.
        let unix = Addresses::Unix {
            source: Bytes::from(vec![b'a'; UNIX_ADDR_LEN]),
            destination: Bytes::from(vec![0; UNIX_ADDR_LEN]),
        };
        write_v2(&mut out, Command::Proxy, Transport::Stream, &unix, &[]).unwrap();
        assert_eq!(out.len(), V2_HEAD + 216);
        let h = decode(&mut out, &Limits::default()).unwrap().unwrap();
        assert_eq!(h.addresses, unix);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes: Vec<u8>) {
            let mut with_sig = V2_SIGNATURE.to_vec();
            with_sig.extend_from_slice(&bytes);
            let _ = one(&bytes);
            let _ = one(&with_sig);
            let _ = one(&[b"PROXY ".as_slice(), &bytes].concat());
        }

        #[test]
        fn v4_round_trip(s: [u8; 4], d: [u8; 4], sp: u16, dp: u16, v2: bool) {
            let a = Addresses::Inet {
                source: SocketAddr::new(Ipv4Addr::from(s).into(), sp),
                destination: SocketAddr::new(Ipv4Addr::from(d).into(), dp),
            };
            let mut out = BytesMut::new();
            if v2 {
                write_v2(&mut out, Command::Proxy, Transport::Stream, &a, &[]).unwrap();
            } else {
                write_v1(&mut out, &a);
            }
            let h = decode(&mut out, &Limits::default()).unwrap().unwrap();
            proptest::prop_assert_eq!(h.addresses, a);
        }
    }
}
