//! Client commands: RESP multi-bulk arrays and inline lines.
use bytes::{Buf, Bytes, BytesMut};

use super::parse::{self, NoLine, RESERVE_CAP, malformed};
use super::{Command, CommandDecoder};
use crate::CodecError;

/// A multi-bulk command whose header has been read but not all its arguments.
#[derive(Debug)]
pub(super) struct Partial {
    /// Where the next argument's `$` line starts.
    pos: usize,
    /// Arguments still to read.
    remaining: usize,
    /// Ranges of the arguments read so far.
    args: Vec<(usize, usize)>,
}

/// The reason of a missing `$`; the byte found instead is kept by the decoder.
const EXPECTED_DOLLAR: &str = "expected '$'";

const INLINE: &str = "inline command";

const TOO_BIG_BULK: &str = "too big bulk count string";

/// At most this many argument slots are allocated up front, whatever the count says.
const PREALLOC_ARGS: usize = 16;

enum Inline {
    Command(Command),
    /// An empty line (only whitespace): consumed, nothing to return.
    Skipped,
    Incomplete,
}

impl CommandDecoder {
    pub(super) fn decode_command(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<Command>, CodecError> {
        if self.partial.as_ref().is_some_and(|p| p.pos > src.len()) {
            // The buffer was not only appended to since the last call: start over.
            self.partial = None;
            self.len_scanned = 0;
        }
        loop {
            if self.partial.is_none() {
                let Some(&first) = src.first() else {
                    return Ok(None);
                };
                if first != b'*' {
                    match self.decode_inline(src)? {
                        Inline::Command(cmd) => return Ok(Some(cmd)),
                        Inline::Skipped => continue,
                        Inline::Incomplete => return Ok(None),
                    }
                }
                let Some((count, next)) = self.length_line(src, 0, true)? else {
                    return Ok(None);
                };
                if count <= 0 {
                    // `*0\r\n`, `*-10\r\n`: an empty command, skipped as redis-server does.
                    src.advance(next);
                    continue;
                }
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                if count > self.limits.max_elements {
                    return Err(CodecError::TooMany {
                        what: "command arguments",
                        count: count as u64,
                        limit: self.limits.max_elements,
                    });
                }
                self.partial = Some(Partial {
                    pos: next,
                    remaining: count,
                    args: Vec::with_capacity(count.min(PREALLOC_ARGS)),
                });
            }
            return self.continue_multibulk(src);
        }
    }

    fn continue_multibulk(&mut self, src: &mut BytesMut) -> Result<Option<Command>, CodecError> {
        let max_bulk = self.limits.max_bulk;
        loop {
            let Some(p) = self.partial.as_ref() else {
                return Ok(None);
            };
            if p.remaining == 0 {
                break;
            }
            let at = p.pos;
            let buf: &[u8] = src;
            let Some(&marker) = buf.get(at) else {
                return Ok(None);
            };
            let line = self.length_line(buf, at, false);
            if marker != b'$' {
                // Redis checks the marker once the whole line is in.
                return match line {
                    Ok(None) => Ok(None),
                    Err(
                        e @ CodecError::Malformed {
                            reason: TOO_BIG_BULK,
                            ..
                        },
                    ) => Err(e),
                    _ => {
                        self.unexpected = marker;
                        Err(malformed(EXPECTED_DOLLAR))
                    }
                };
            }
            let Some((len, body)) = line? else {
                return Ok(None);
            };
            if len < 0 {
                return Err(malformed("invalid bulk length"));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > max_bulk {
                return Err(CodecError::FrameTooLarge {
                    what: "bulk string",
                    size: len as u64,
                    limit: max_bulk,
                });
            }
            let end = body.saturating_add(len);
            let next = end.saturating_add(2);
            if buf.len() < next {
                let missing = next - buf.len();
                src.reserve(missing.min(RESERVE_CAP));
                return Ok(None);
            }
            // The two bytes after the argument are skipped unchecked, as
            // redis-server does: the wire goes upstream unchanged.
            let Some(p) = self.partial.as_mut() else {
                return Ok(None);
            };
            p.args.push((body, end));
            p.pos = next;
            p.remaining -= 1;
        }
        let Some(p) = self.partial.take() else {
            return Ok(None);
        };
        let wire = src.split_to(p.pos).freeze();
        Ok(Some(Command {
            wire,
            args: p.args,
            unescaped: None,
            inline: false,
        }))
    }

    /// The `*<count>` (`multibulk`) or `$<len>` line whose type byte is at
    /// `at`, with Redis's error words; a long line is scanned only once.
    #[inline]
    fn length_line(
        &mut self,
        buf: &[u8],
        at: usize,
        multibulk: bool,
    ) -> Result<Option<(i64, usize)>, CodecError> {
        let invalid = if multibulk {
            "invalid multibulk length"
        } else {
            "invalid bulk length"
        };
        let line = parse::find_line(buf, at + 1, self.len_scanned, self.limits.max_inline);
        match line {
            Ok(Ok(line)) => {
                self.len_scanned = 0;
                let digits = buf.get(line.start..line.end).unwrap_or_default();
                match parse::parse_int(digits) {
                    Some(n) => Ok(Some((n, line.next))),
                    None => Err(malformed(invalid)),
                }
            }
            Ok(Err(NoLine::Incomplete { scanned })) => {
                self.len_scanned = scanned;
                Ok(None)
            }
            Ok(Err(NoLine::TooLong)) => {
                self.len_scanned = 0;
                Err(malformed(if multibulk {
                    "too big mbulk count string"
                } else {
                    TOO_BIG_BULK
                }))
            }
            Err(_) => {
                self.len_scanned = 0;
                Err(malformed(invalid))
            }
        }
    }

    /// The error reply redis-server gives for `e` (which this decoder just
    /// returned): `-ERR Protocol error: <Redis's words>`.
    pub(super) fn protocol_error(&self, e: &CodecError) -> Bytes {
        let words = match e {
            CodecError::Malformed { reason, .. } if *reason == EXPECTED_DOLLAR => {
                let got = char::from(self.unexpected);
                return super::error_reply(&format!("Protocol error: expected '$', got '{got}'"));
            }
            CodecError::Malformed { reason, .. } => *reason,
            CodecError::TooMany { .. } => "invalid multibulk length",
            CodecError::FrameTooLarge { what, .. } if *what == INLINE => "too big inline request",
            CodecError::FrameTooLarge { .. } => "invalid bulk length",
            _ => "invalid request",
        };
        super::error_reply(&format!("Protocol error: {words}"))
    }

    fn decode_inline(&mut self, src: &mut BytesMut) -> Result<Inline, CodecError> {
        let limit = self.limits.max_inline;
        // The LF may sit at index `limit` at most (a line of `limit` bytes).
        let window_end = src.len().min(limit.saturating_add(1));
        let from = self.inline_scanned.min(window_end);
        let found = src
            .get(from..window_end)
            .and_then(|w| memchr::memchr(b'\n', w));
        let Some(lf) = found.map(|i| from + i) else {
            if src.len() > limit {
                self.inline_scanned = 0;
                return Err(CodecError::FrameTooLarge {
                    what: INLINE,
                    size: src.len() as u64,
                    limit,
                });
            }
            self.inline_scanned = window_end;
            return Ok(Inline::Incomplete);
        };
        self.inline_scanned = 0;
        let mut line = src.get(..lf).unwrap_or_default();
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let (args, unescaped) = split_inline(line)?;
        if args.is_empty() {
            src.advance(lf + 1);
            return Ok(Inline::Skipped);
        }
        let wire = src.split_to(lf + 1).freeze();
        Ok(Inline::Command(Command {
            wire,
            args,
            unescaped: unescaped.map(Bytes::from),
            inline: true,
        }))
    }
}

/// `isspace` of the C locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Ends an unquoted argument (as in `sdssplitargs`).
fn ends_token(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0)
}

/// Argument ranges.
type Ranges = Vec<(usize, usize)>;
type Split = (Ranges, Option<Vec<u8>>);

/// Split an inline line into arguments exactly as redis-server's `sdssplitargs`.
///
/// Without quotes (the usual case) the arguments are ranges into `line`
/// (which starts at the command's first wire byte); with quotes they are ranges
/// into the returned buffer of unescaped bytes.
fn split_inline(line: &[u8]) -> Result<Split, CodecError> {
    if memchr::memchr3(b'"', b'\'', 0, line).is_none() {
        let mut args = Vec::new();
        let mut p = 0;
        loop {
            while line.get(p).is_some_and(|&b| is_space(b)) {
                p += 1;
            }
            if p >= line.len() {
                return Ok((args, None));
            }
            let start = p;
            while line.get(p).is_some_and(|&b| !ends_token(b)) {
                p += 1;
            }
            args.push((start, p));
            // Step over the terminator.
            p += 1;
        }
    }
    split_quoted(line).map(|(args, out)| (args, Some(out)))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The quote-aware path of `sdssplitargs` (the line is treated as a C string:
/// a NUL byte ends it).
fn split_quoted(line: &[u8]) -> Result<(Ranges, Vec<u8>), CodecError> {
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let unbalanced = || malformed("unbalanced quotes in request");
    let mut out = Vec::with_capacity(line.len());
    let mut args = Vec::new();
    let mut p = 0usize;
    loop {
        while is_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Ok((args, out));
        }
        let start = out.len();
        let (mut in_dq, mut in_sq, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if in_dq {
                match (c, at(p + 1)) {
                    (b'\\', b'x')
                        if hex_val(at(p + 2)).is_some() && hex_val(at(p + 3)).is_some() =>
                    {
                        let hi = hex_val(at(p + 2)).unwrap_or(0);
                        let lo = hex_val(at(p + 3)).unwrap_or(0);
                        out.push(hi * 16 + lo);
                        p += 3;
                    }
                    (b'\\', next) if next != 0 => {
                        p += 1;
                        out.push(match next {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    (b'"', next) => {
                        // A closing quote must be followed by a space or the end.
                        if next != 0 && !is_space(next) {
                            return Err(unbalanced());
                        }
                        done = true;
                    }
                    (0, _) => return Err(unbalanced()),
                    (c, _) => out.push(c),
                }
            } else if in_sq {
                match (c, at(p + 1)) {
                    (b'\\', b'\'') => {
                        p += 1;
                        out.push(b'\'');
                    }
                    (b'\'', next) => {
                        if next != 0 && !is_space(next) {
                            return Err(unbalanced());
                        }
                        done = true;
                    }
                    (0, _) => return Err(unbalanced()),
                    (c, _) => out.push(c),
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => out.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
        }
        args.push((start, out.len()));
    }
}

/// Encode `args` as a RESP array of bulk strings.
pub(super) fn from_args<I, A>(args: I) -> Command
where
    I: IntoIterator<Item = A>,
    A: AsRef<[u8]>,
{
    let args: Vec<A> = args.into_iter().collect();
    let mut wire =
        Vec::with_capacity(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    let mut ranges = Vec::with_capacity(args.len());
    wire.push(b'*');
    parse::put_int(&mut wire, i64::try_from(args.len()).unwrap_or(i64::MAX));
    wire.extend_from_slice(b"\r\n");
    for arg in &args {
        let arg = arg.as_ref();
        wire.push(b'$');
        parse::put_int(&mut wire, i64::try_from(arg.len()).unwrap_or(i64::MAX));
        wire.extend_from_slice(b"\r\n");
        let start = wire.len();
        wire.extend_from_slice(arg);
        ranges.push((start, wire.len()));
        wire.extend_from_slice(b"\r\n");
    }
    Command {
        wire: Bytes::from(wire),
        args: ranges,
        unescaped: None,
        inline: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Vec<Vec<u8>> {
        let (args, buf) = split_inline(line).unwrap();
        let src = buf.as_deref().unwrap_or(line);
        args.iter().map(|&(s, e)| src[s..e].to_vec()).collect()
    }

    #[test]
    fn split_like_redis() {
        assert_eq!(split(b"PING"), vec![b"PING".to_vec()]);
        assert_eq!(
            split(b"  SET  a   b "),
            vec![b"SET".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(split(b"a\tb"), vec![b"a".to_vec(), b"b".to_vec()]);
        // \v is skipped as leading space but does not end a token.
        assert_eq!(split(b"\x0ba\x0bb"), vec![b"a\x0bb".to_vec()]);
        assert!(split(b"   ").is_empty());
        assert!(split(b"").is_empty());
        assert_eq!(
            split(br#"SET k "hello world""#),
            vec![b"SET".to_vec(), b"k".to_vec(), b"hello world".to_vec()]
        );
        assert_eq!(
            split(br#"ECHO "quoted \x41\x42 arg""#),
            vec![b"ECHO".to_vec(), b"quoted AB arg".to_vec()]
        );
        assert_eq!(
            split(br#"E "a\n\r\t\b\a\"\\\q""#)[1],
            b"a\n\r\t\x08\x07\"\\q".to_vec()
        );
        assert_eq!(split(br#"E "\x4""#)[1], b"x4".to_vec());
        assert_eq!(split(br#"E 'it\'s "x"'"#)[1], b"it's \"x\"".to_vec());
        assert_eq!(split(br#"E 'a\nb'"#)[1], b"a\\nb".to_vec());
        assert_eq!(
            split(br#"E ab"cd" x"#),
            vec![b"E".to_vec(), b"abcd".to_vec(), b"x".to_vec()]
        );
        assert_eq!(split(br#"E """#), vec![b"E".to_vec(), b"".to_vec()]);
        // A NUL byte ends the line (C string).
        assert_eq!(split(b"a b\0c d \"x\""), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(split_inline(br#"E "abc"#).is_err());
        assert!(split_inline(br#"E 'abc"#).is_err());
        assert!(split_inline(br#"E "abc"d"#).is_err());
        assert!(split_inline(br#"E 'abc'd"#).is_err());
        assert!(split_inline(b"E \"ab\0c\"").is_err());
    }

    #[test]
    fn built_commands() {
        let cmd = from_args(["SET", "k", "v"]);
        assert_eq!(&cmd.wire[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n");
        assert_eq!(cmd.arg(2), Some(&b"v"[..]));
        let mut buf = BytesMut::from(&cmd.wire[..]);
        let decoded = CommandDecoder::default()
            .decode_command(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(decoded, cmd);
    }
}
