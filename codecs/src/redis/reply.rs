//! Server replies: framing of every RESP2/RESP3 type, without recursion.
//!
//! The decoder walks a reply with an explicit stack of "elements still
//! expected" per aggregate level, so `*1\r\n*1\r\n...` nesting costs heap, not
//! stack, and is cut off at `max_depth`. The walk resumes where it stopped when
//! a reply arrives in pieces.
use bytes::BytesMut;

use super::parse::{self, NoLine, RESERVE_CAP, malformed};
use super::{Reply, ReplyDecoder, ReplyKind};
use crate::CodecError;

/// One aggregate level of the reply being walked.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// Elements still expected at this level.
    remaining: usize,
    /// This level is an attribute's key/value pairs: when it ends it does not
    /// complete an element of its parent (the value it annotates does).
    attribute: bool,
    /// Attributes read so far in front of the next element of this level.
    pending_attributes: usize,
}

/// A reply being walked.
#[derive(Debug)]
pub(super) struct Partial {
    /// Where the next element starts.
    pos: usize,
    /// How far the current simple line was scanned for its LF.
    scanned: usize,
    /// The root level (one element: the reply) and open aggregates.
    stack: Vec<Level>,
    /// Aggregate levels open plus pending attributes (see [`Level`]).
    depth: usize,
    /// Decided by the first type byte that is not an attribute.
    kind: Option<ReplyKind>,
}

impl Partial {
    fn new() -> Self {
        let mut stack = Vec::with_capacity(4);
        stack.push(Level {
            remaining: 1,
            attribute: false,
            pending_attributes: 0,
        });
        Self {
            pos: 0,
            scanned: 0,
            stack,
            depth: 0,
            kind: None,
        }
    }

    fn set_kind(&mut self, kind: ReplyKind) {
        if self.kind.is_none() {
            self.kind = Some(kind);
        }
    }

    fn check_depth(&self, max_depth: usize) -> Result<(), CodecError> {
        if self.depth > max_depth {
            return Err(CodecError::TooDeep {
                what: "reply",
                depth: self.depth,
                limit: max_depth,
            });
        }
        Ok(())
    }

    /// One element (of the current level) is complete.
    fn element_done(&mut self, max_depth: usize) -> Result<(), CodecError> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(());
            };
            self.depth -= top.pending_attributes;
            top.pending_attributes = 0;
            top.remaining -= 1;
            if top.remaining > 0 {
                return Ok(());
            }
            let Some(done) = self.stack.pop() else {
                return Ok(());
            };
            if self.stack.is_empty() {
                // The root: the reply is complete.
                return Ok(());
            }
            self.depth -= 1;
            if done.attribute {
                return self.attribute_done(max_depth);
            }
            // The aggregate completes an element of its parent.
        }
    }

    /// An attribute is complete: it annotates the next element of the current level.
    fn attribute_done(&mut self, max_depth: usize) -> Result<(), CodecError> {
        if let Some(top) = self.stack.last_mut() {
            top.pending_attributes += 1;
            self.depth += 1;
        }
        self.check_depth(max_depth)
    }
}

impl ReplyDecoder {
    pub(super) fn decode_reply(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, CodecError> {
        let limits = self.limits;
        if self.partial.as_ref().is_some_and(|p| p.pos > src.len()) {
            // The buffer was not only appended to since the last call: start over.
            self.partial = None;
        }
        if self.partial.is_none() {
            if src.is_empty() {
                return Ok(None);
            }
            self.partial = Some(Partial::new());
        }
        let Some(st) = self.partial.as_mut() else {
            return Ok(None);
        };
        let result = walk(st, src, &limits);
        match result {
            Ok(true) => {
                let kind = st.kind.unwrap_or(ReplyKind::Value);
                let wire = src.split_to(st.pos).freeze();
                self.partial = None;
                Ok(Some(Reply { wire, kind }))
            }
            Ok(false) => Ok(None),
            Err(e) => {
                self.partial = None;
                Err(e)
            }
        }
    }
}

/// Walk `src` from `st.pos`; `Ok(true)` once the reply is complete.
fn walk(st: &mut Partial, src: &mut BytesMut, limits: &super::Limits) -> Result<bool, CodecError> {
    while !st.stack.is_empty() {
        let buf: &[u8] = src;
        let Some(&t) = buf.get(st.pos) else {
            return Ok(false);
        };
        let at_root = st.stack.len() == 1;
        match t {
            b'+' | b'-' | b':' | b',' | b'(' | b'#' | b'_' => {
                let line = match parse::find_line(buf, st.pos + 1, st.scanned, limits.max_inline)? {
                    Ok(line) => line,
                    Err(NoLine::Incomplete { scanned }) => {
                        st.scanned = scanned;
                        return Ok(false);
                    }
                    Err(NoLine::TooLong) => {
                        return Err(CodecError::FrameTooLarge {
                            what: "reply line",
                            size: (buf.len() - st.pos) as u64,
                            limit: limits.max_inline,
                        });
                    }
                };
                check_simple(t, buf.get(line.start..line.end).unwrap_or_default())?;
                if at_root {
                    st.set_kind(if t == b'-' {
                        ReplyKind::Error
                    } else {
                        ReplyKind::Value
                    });
                }
                st.pos = line.next;
                st.scanned = 0;
                st.element_done(limits.max_depth)?;
            }
            b'$' | b'!' | b'=' => {
                let Some((len, body)) = parse::len_line(buf, st.pos)? else {
                    return Ok(false);
                };
                if at_root {
                    st.set_kind(if t == b'!' {
                        ReplyKind::Error
                    } else {
                        ReplyKind::Value
                    });
                }
                if len == -1 && t == b'$' {
                    st.pos = body;
                    st.element_done(limits.max_depth)?;
                    continue;
                }
                if len < 0 {
                    return Err(malformed("negative string length"));
                }
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > limits.max_bulk {
                    return Err(CodecError::FrameTooLarge {
                        what: "bulk string",
                        size: len as u64,
                        limit: limits.max_bulk,
                    });
                }
                let end = body.saturating_add(len);
                let next = end.saturating_add(2);
                if buf.len() < next {
                    let missing = next - buf.len();
                    src.reserve(missing.min(RESERVE_CAP));
                    return Ok(false);
                }
                if buf.get(end..next) != Some(b"\r\n".as_slice()) {
                    return Err(malformed("bulk string not terminated by CRLF"));
                }
                if t == b'=' && (len < 4 || buf.get(body + 3) != Some(&b':')) {
                    return Err(malformed("verbatim string without a 3-byte format"));
                }
                st.pos = next;
                st.element_done(limits.max_depth)?;
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let Some((n, next)) = parse::len_line(buf, st.pos)? else {
                    return Ok(false);
                };
                if at_root {
                    match t {
                        b'>' => st.set_kind(ReplyKind::Push),
                        b'|' => {}
                        _ => st.set_kind(ReplyKind::Value),
                    }
                }
                if n == -1 && t == b'*' {
                    st.pos = next;
                    st.element_done(limits.max_depth)?;
                    continue;
                }
                if n < 0 {
                    return Err(malformed("negative aggregate length"));
                }
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > limits.max_elements {
                    return Err(CodecError::TooMany {
                        what: "reply aggregate",
                        count: n as u64,
                        limit: limits.max_elements,
                    });
                }
                let pairs = matches!(t, b'%' | b'|');
                let count = if pairs { n.saturating_mul(2) } else { n };
                st.pos = next;
                if count == 0 {
                    if t == b'|' {
                        st.attribute_done(limits.max_depth)?;
                    } else {
                        st.element_done(limits.max_depth)?;
                    }
                    continue;
                }
                st.stack.push(Level {
                    remaining: count,
                    attribute: t == b'|',
                    pending_attributes: 0,
                });
                st.depth += 1;
                st.check_depth(limits.max_depth)?;
            }
            _ => return Err(malformed("unknown reply type byte")),
        }
    }
    Ok(true)
}

/// Validate the content of a one-line reply element.
fn check_simple(t: u8, content: &[u8]) -> Result<(), CodecError> {
    let ok = match t {
        b':' => parse::parse_int(content).is_some(),
        b'_' => content.is_empty(),
        b'#' => content == b"t" || content == b"f",
        b',' => !content.is_empty(),
        // Big numbers pass as the server sent them: Redis relays a script's
        // `{big_number = ...}` unchecked (e.g. `(123  123`).
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(malformed(match t {
            b':' => "invalid integer reply",
            b'_' => "null reply with content",
            b'#' => "invalid boolean reply",
            _ => "empty double reply",
        }))
    }
}
