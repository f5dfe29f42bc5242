//! Heads as a proxy forwards them (RFC 9110 §7.6.1, RFC 9112 §2.2, §3.2.2,
//! §6.3): hop-by-hop fields removed, every line ended by CRLF, an
//! absolute-form target turned into origin-form with `Host` set to its
//! authority, repeated `Content-Length` values folded into one. A head that
//! needs none of this is forwarded from its wire bytes, so the common case
//! costs no copy; one that does is written anew from what the parser saw, so
//! no other parser can read it differently.
use bytes::{BufMut, Bytes, BytesMut};

use super::head::{Span, trim_ows};
use super::{RequestHead, ResponseHead, Version};
use crate::fields::FieldList;

/// What the gateway tells a client about its connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConnection {
    /// The gateway closes the connection after this response: `Connection: close`.
    Close,
    /// An HTTP/1.0 client whose connection stays open: `Connection: keep-alive`.
    KeepAlive,
    /// An HTTP/1.1 client whose connection stays open: nothing to say.
    Persistent,
}

/// Field names no proxy forwards, whatever `Connection` lists.
fn is_hop_by_hop(name: &[u8]) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// The field names `Connection` lists beyond `close`, `keep-alive` and `upgrade`.
fn connection_options<'a>(
    wire: &'a [u8],
    headers: &[(Span, Span)],
) -> impl Iterator<Item = &'a [u8]> + Clone {
    headers
        .iter()
        .filter(|(n, _)| n.get(wire).eq_ignore_ascii_case(b"connection"))
        .flat_map(move |(_, v)| v.get(wire).split(|b| *b == b','))
        .map(trim_ows)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"upgrade")
        })
}

fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// The fields of a head that survive forwarding, in order.
fn end_to_end_fields<'a>(
    wire: &'a [u8],
    headers: &'a [(Span, Span)],
    keep_upgrade: bool,
) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
    let listed = connection_options(wire, headers);
    headers
        .iter()
        .map(move |(n, v)| (n.get(wire), v.get(wire)))
        .filter(move |(name, _)| {
            let upgrade = keep_upgrade && name.eq_ignore_ascii_case(b"upgrade");
            upgrade
                || !(is_hop_by_hop(name) || listed.clone().any(|l| l.eq_ignore_ascii_case(name)))
        })
}

impl RequestHead {
    /// Whether the head sent upstream differs from the bytes the client sent
    /// (see [`RequestHead::forwarded`]).
    pub fn needs_rewrite(&self) -> bool {
        self.rewrite
    }

    /// The head to send upstream: the wire bytes when nothing needs changing,
    /// else a head written anew: `path` (when given) in place of the target's
    /// path with the query kept, origin-form for an absolute-form target and
    /// `Host` set to its authority, one `Content-Length`, no hop-by-hop fields
    /// (`Connection` and what it lists, `Keep-Alive`, `Proxy-Connection`, `TE`
    /// other than `trailers`, `Upgrade` outside an upgrade), CRLF line ends.
    /// The gateway's own `Connection` options follow: `upgrade` for an
    /// upgrade, `keep-alive` for an HTTP/1.0 client that asked for it, `te`
    /// with `TE: trailers`.
    pub fn forwarded(&self, path: Option<&[u8]>) -> Bytes {
        if !self.rewrite && path.is_none() {
            return self.wire.clone();
        }
        self.forwarded_with(path, |_| {})
    }

    /// The head of a mirrored copy: as [`RequestHead::forwarded`], always
    /// written anew, with `suffix` appended to the host name in `Host`
    /// (before any port: `a.example:8080` becomes `a.example-shadow:8080`
    /// for `-shadow`, as Envoy's request mirroring does).
    pub fn shadowed(&self, path: Option<&[u8]>, suffix: &[u8]) -> Bytes {
        self.forwarded_with(path, |fields| {
            if suffix.is_empty() {
                return;
            }
            let host = fields.get_all(b"host").next().map(|h| {
                let (name, port) = split_port(h);
                [name, suffix, port].concat()
            });
            if let Some(host) = host {
                fields.set(b"Host", &host);
            }
        })
    }

    /// The head to send upstream, always written anew as
    /// [`RequestHead::forwarded`] writes it, with `edit` applied to its
    /// end-to-end fields first (`Host` among them). Hop-by-hop fields
    /// `edit` adds are dropped: the gateway's own follow. The caller keeps
    /// `edit` off the framing fields (`Content-Length`, `Transfer-Encoding`).
    pub fn forwarded_with(
        &self,
        path: Option<&[u8]>,
        edit: impl FnOnce(&mut FieldList<'_>),
    ) -> Bytes {
        let wire = self.wire.as_ref();
        let mut out = BytesMut::with_capacity(wire.len() + 128);
        out.put_slice(self.method.get(wire));
        out.put_u8(b' ');
        match (path, self.path) {
            (Some(p), _) => out.put_slice(p),
            (None, Some(p)) => out.put_slice(p.get(wire)),
            // Absolute-form without a path means `/`.
            (None, None) if self.authority.is_some() => out.put_u8(b'/'),
            // Asterisk- and authority-form targets as they are.
            (None, None) => out.put_slice(self.target.get(wire)),
        }
        out.put_slice(self.query());
        out.put_slice(match self.version {
            Version::Http10 => b" HTTP/1.0\r\n",
            Version::Http11 => b" HTTP/1.1\r\n",
        });
        let authority = self.authority.map(|a| a.get(wire));
        let mut host_written = false;
        let mut length_written = false;
        let mut fields = FieldList::with_capacity(self.headers.len() + 4);
        for (name, value) in end_to_end_fields(wire, &self.headers, self.upgrade) {
            if name.eq_ignore_ascii_case(b"host") {
                if host_written {
                    continue;
                }
                host_written = true;
                fields.push(b"Host", authority.unwrap_or(value));
            } else if name.eq_ignore_ascii_case(b"content-length") {
                if length_written {
                    continue;
                }
                length_written = true;
                // One value: the codec refused differing ones.
                let first = value.split(|b| *b == b',').next().unwrap_or_default();
                fields.push(b"Content-Length", trim_ows(first));
            } else {
                fields.push(name, value);
            }
        }
        if let (Some(a), false) = (authority, host_written) {
            fields.push(b"Host", a);
        }
        edit(&mut fields);
        for name in ["connection", "keep-alive", "proxy-connection", "te"] {
            fields.remove(name.as_bytes());
        }
        if !self.upgrade {
            fields.remove(b"upgrade");
        }
        fields.write(&mut out);
        if self.te_trailers {
            put_field(&mut out, b"TE", b"trailers");
        }
        let options: &[&[u8]] = &[
            if self.upgrade { &b"upgrade"[..] } else { b"" },
            if self.version == Version::Http10 && self.keep_alive {
                b"keep-alive"
            } else {
                b""
            },
            if self.te_trailers { b"te" } else { b"" },
        ];
        let mut first = true;
        for option in options.iter().filter(|o| !o.is_empty()) {
            out.put_slice(if first { b"Connection: " } else { b", " });
            out.put_slice(option);
            first = false;
        }
        if !first {
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }
}

/// An HTTP/1.1 request head for a mirrored copy of a request that came in
/// another version (HTTP/2): `METHOD target HTTP/1.1`, `Host` set to `host`
/// with `suffix` appended before any port, then `headers` without
/// hop-by-hop fields, pseudo-headers, another `Host` or a `Content-Length`,
/// and the body's own `Content-Length` when `body_len` is not 0.
pub fn shadow_request_head<'a>(
    method: &[u8],
    target: &[u8],
    host: &[u8],
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    suffix: &[u8],
    body_len: usize,
) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    out.put_slice(method);
    out.put_u8(b' ');
    out.put_slice(target);
    out.put_slice(b" HTTP/1.1\r\nHost: ");
    let (name, port) = split_port(host);
    out.put_slice(name);
    out.put_slice(suffix);
    out.put_slice(port);
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        if name.starts_with(b":")
            || name.eq_ignore_ascii_case(b"host")
            || name.eq_ignore_ascii_case(b"content-length")
            || is_hop_by_hop(name)
        {
            continue;
        }
        put_field(&mut out, name, value);
    }
    if body_len > 0 {
        put_field(&mut out, b"Content-Length", body_len.to_string().as_bytes());
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// `host[:port]` as (host, `:port` or empty); an IPv6 literal keeps its brackets.
fn split_port(authority: &[u8]) -> (&[u8], &[u8]) {
    let after_bracket = authority
        .iter()
        .rposition(|b| *b == b']')
        .map_or(0, |i| i + 1);
    match authority
        .iter()
        .rposition(|b| *b == b':')
        .filter(|i| *i >= after_bracket)
    {
        Some(i) => authority.split_at(i),
        None => (authority, b""),
    }
}

impl ResponseHead {
    /// The head to send to the client: the wire bytes when they already say
    /// what `conn` says and carry no hop-by-hop field, else a head written
    /// anew with hop-by-hop fields removed, CRLF line ends and the
    /// gateway's own `Connection` field. A `101` is forwarded as it is (its
    /// `Connection: upgrade` and `Upgrade` belong to the upgrade).
    pub fn forwarded(&self, conn: ClientConnection) -> Bytes {
        let says = match conn {
            ClientConnection::Close => self.close_token && !self.keep_alive_token,
            ClientConnection::KeepAlive => self.keep_alive_token && !self.close_token,
            ClientConnection::Persistent => !self.close_token,
        };
        if self.status == 101 || (says && !self.rewrite) {
            return self.wire.clone();
        }
        self.forwarded_with(conn, |_| {})
    }

    /// The head to send to the client, always written anew as
    /// [`ResponseHead::forwarded`] writes it, with `edit` applied to its
    /// end-to-end fields (hop-by-hop fields it adds are dropped). A `101`
    /// is forwarded as it is.
    pub fn forwarded_with(
        &self,
        conn: ClientConnection,
        edit: impl FnOnce(&mut FieldList<'_>),
    ) -> Bytes {
        if self.status == 101 {
            return self.wire.clone();
        }
        let wire = self.wire.as_ref();
        let mut out = BytesMut::with_capacity(wire.len() + 128);
        let line = wire.split(|b| *b == b'\n').next().unwrap_or_default();
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.put_slice(b"\r\n");
        let mut fields = FieldList::with_capacity(self.headers.len() + 4);
        for (name, value) in end_to_end_fields(wire, &self.headers, false) {
            fields.push(name, value);
        }
        edit(&mut fields);
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
        ] {
            fields.remove(name.as_bytes());
        }
        fields.write(&mut out);
        match conn {
            ClientConnection::Close => out.put_slice(b"Connection: close\r\n"),
            ClientConnection::KeepAlive => out.put_slice(b"Connection: keep-alive\r\n"),
            ClientConnection::Persistent => {}
        }
        out.put_slice(b"\r\n");
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::ClientConnection;
    use crate::http1::{RequestDecoder, RequestHead, ResponseDecoder, ResponseHead};
    use crate::{Decoder, Part};

    fn request(wire: &[u8]) -> RequestHead {
        match RequestDecoder::default().decode(&mut BytesMut::from(wire)) {
            Ok(Some(Part::Head(h))) => h,
            other => panic!("{other:?}"),
        }
    }

    fn response(wire: &[u8]) -> ResponseHead {
        match ResponseDecoder::default().decode(&mut BytesMut::from(wire)) {
            Ok(Some(Part::Head(h))) => h,
            other => panic!("{other:?}"),
        }
    }

    fn text(b: bytes::Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn an_ordinary_head_goes_out_as_its_wire_bytes() {
        let wire =
            b"GET /a?b HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nTE: trailers\r\n\r\n";
        let h = request(wire);
        assert!(!h.needs_rewrite());
        let out = h.forwarded(None);
        assert_eq!(out.as_ptr(), crate::WireHead::wire(&h).as_ptr(), "no copy");
    }

    #[test]
    fn shadowed_heads_carry_the_suffix_before_the_port() {
        let h = request(b"GET /a HTTP/1.1\r\nhost: api.example:8080\r\nX: 1\r\n\r\n");
        assert_eq!(
            text(h.shadowed(None, b"-shadow")),
            "GET /a HTTP/1.1\r\nHost: api.example-shadow:8080\r\nX: 1\r\n\r\n"
        );
        let h = request(b"GET /b HTTP/1.1\r\nHost: [::1]\r\n\r\n");
        assert_eq!(
            text(h.shadowed(Some(b"/c"), b"-shadow")),
            "GET /c HTTP/1.1\r\nHost: [::1]-shadow\r\n\r\n"
        );
        let h = request(b"GET http://a.example/x HTTP/1.1\r\nHost: b\r\n\r\n");
        assert_eq!(
            text(h.shadowed(None, b"-shadow")),
            "GET /x HTTP/1.1\r\nHost: a.example-shadow\r\n\r\n"
        );
        // Without a suffix the head is written as `forwarded` writes it.
        let h = request(b"GET /a HTTP/1.1\r\nhost: h\r\n\r\n");
        assert_eq!(
            text(h.shadowed(None, b"")),
            text(h.forwarded_with(None, |_| {}))
        );
    }

    #[test]
    fn shadow_heads_from_other_versions_are_http11() {
        let headers: [(&[u8], &[u8]); 3] = [
            (b"accept", b"*/*"),
            (b"te", b"trailers"),
            (b"host", b"other"),
        ];
        let head = super::shadow_request_head(
            b"GET",
            b"/p?q",
            b"a.example:8443",
            headers.into_iter(),
            b"-shadow",
            0,
        );
        assert_eq!(
            text(head),
            "GET /p?q HTTP/1.1\r\nHost: a.example-shadow:8443\r\naccept: */*\r\n\r\n"
        );
        // A body gets its own length, whatever the client said.
        let headers: [(&[u8], &[u8]); 2] = [(b"content-length", b"99"), (b"x", b"1")];
        let head =
            super::shadow_request_head(b"POST", b"/p", b"h", headers.into_iter(), b"-shadow", 5);
        assert_eq!(
            text(head),
            "POST /p HTTP/1.1\r\nHost: h-shadow\r\nx: 1\r\nContent-Length: 5\r\n\r\n"
        );
    }

    #[test]
    fn rewritten_heads_are_what_the_parser_saw_with_crlf() {
        let h = request(b"POST /x HTTP/1.1\r\nHost: t\nContent-Length: 5, 5\r\nX: 1\r\n\r\n");
        assert!(h.needs_rewrite());
        assert_eq!(
            text(h.forwarded(None)),
            "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nX: 1\r\n\r\n"
        );
        let h = request(b"GET http://a.example:8080?q HTTP/1.1\r\nHost: b\r\n\r\n");
        assert_eq!(h.effective_host(), Some(&b"a.example:8080"[..]));
        assert_eq!(
            text(h.forwarded(None)),
            "GET /?q HTTP/1.1\r\nHost: a.example:8080\r\n\r\n"
        );
        let userinfo = RequestDecoder::default().decode(&mut BytesMut::from(
            &b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        ));
        assert!(userinfo.is_err(), "userinfo in the target is refused");
    }

    #[test]
    fn hop_by_hop_fields_go_and_the_gateways_options_come() {
        let h = request(
            b"GET /p HTTP/1.0\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\
              TE: trailers, gzip\r\nUpgrade: h2c\r\nX-End: 2\r\n\r\n",
        );
        assert_eq!(
            text(h.forwarded(Some(b"/q"))),
            "GET /q HTTP/1.0\r\nX-End: 2\r\nTE: trailers\r\nConnection: keep-alive, te\r\n\r\n"
        );
        let up = request(
            b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert!(!up.needs_rewrite(), "an upgrade keeps its fields");
    }

    #[test]
    fn responses_say_what_the_gateway_does_with_the_connection() {
        let plain = response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            text(plain.forwarded(ClientConnection::Persistent)),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            text(plain.forwarded(ClientConnection::KeepAlive)),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
        );
        let hop = response(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Up\r\nX-Up: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            text(hop.forwarded(ClientConnection::Close)),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let switching = response(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n",
        );
        assert_eq!(
            switching.forwarded(ClientConnection::Close).as_ptr(),
            crate::WireHead::wire(&switching).as_ptr()
        );
    }

    #[test]
    fn edited_heads_are_written_anew_with_one_framing() {
        let h = request(b"POST /x?q HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nX-A: 1\r\nConnection: keep-alive\r\n\r\n");
        let out = h.forwarded_with(Some(b"/y"), |f| {
            f.set(b"host", b"new.example");
            f.remove(b"x-a");
            f.add(b"X-B", b"2");
            f.add(b"Connection", b"close");
            f.add(b"X-Bad", b"1\r\nX-Injected: 1");
        });
        assert_eq!(
            text(out),
            "POST /y?q HTTP/1.1\r\nHost: new.example\r\nContent-Length: 5\r\nX-B: 2\r\n\r\n"
        );
        let r = response(b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n");
        let out = r.forwarded_with(ClientConnection::Close, |f| {
            f.remove(b"server");
            f.set(b"x-served-by", b"gw");
        });
        assert_eq!(
            text(out),
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-served-by: gw\r\nConnection: close\r\n\r\n"
        );
    }
}
