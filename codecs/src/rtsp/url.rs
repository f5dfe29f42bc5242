//! RTSP URLs (`rtsp://[user@]host[:port]/path[?query]`) as a proxy sees
//! them: where the authority is, so it can be swapped, and the path to
//! route on.

/// A borrowed view of an absolute RTSP URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Url<'a> {
    /// `rtsp`, `rtsps` or `rtspu`.
    pub scheme: &'a [u8],
    /// `host[:port]`, without user info.
    pub host_port: &'a [u8],
    /// The path (`/` when the URL has none), without the query.
    pub path: &'a [u8],
    /// Everything after the authority: path, query and fragment.
    pub rest: &'a [u8],
}

impl<'a> Url<'a> {
    /// Parse an absolute RTSP URL; `None` for `*` and anything else.
    pub fn parse(uri: &'a [u8]) -> Option<Url<'a>> {
        let sep = memchr::memmem::find(uri, b"://")?;
        let scheme = uri.get(..sep)?;
        if !scheme.eq_ignore_ascii_case(b"rtsp")
            && !scheme.eq_ignore_ascii_case(b"rtsps")
            && !scheme.eq_ignore_ascii_case(b"rtspu")
        {
            return None;
        }
        let after = uri.get(sep + 3..)?;
        let auth_end = after
            .iter()
            .position(|&b| matches!(b, b'/' | b'?' | b'#'))
            .unwrap_or(after.len());
        let authority = after.get(..auth_end)?;
        let host_port = match memchr::memrchr(b'@', authority) {
            Some(at) => authority.get(at + 1..)?,
            None => authority,
        };
        if host_port.is_empty() {
            return None;
        }
        let rest = after.get(auth_end..)?;
        let path_end = rest
            .iter()
            .position(|&b| matches!(b, b'?' | b'#'))
            .unwrap_or(rest.len());
        let path = match rest.get(..path_end)? {
            b"" => b"/".as_slice(),
            p => p,
        };
        Some(Url {
            scheme,
            host_port,
            path,
            rest,
        })
    }
}

/// `url` with its scheme and authority replaced by `base`
/// (`rtsp://host:port`, no trailing slash); `None` when `url` is not an
/// absolute RTSP URL (such as `*`), which is then left as it is.
pub fn with_base(url: &[u8], base: &[u8]) -> Option<Vec<u8>> {
    let parsed = Url::parse(url)?;
    let mut out = Vec::with_capacity(base.len() + parsed.rest.len());
    out.extend_from_slice(base);
    out.extend_from_slice(parsed.rest);
    Some(out)
}

/// Every occurrence of `from` in `text` replaced by `to`, where `from` is
/// followed by a character that cannot continue an authority (so
/// `rtsp://10.0.0.1:55` does not match inside `rtsp://10.0.0.1:554`);
/// `None` when there is none.
pub fn replace_base(text: &[u8], from: &[u8], to: &[u8]) -> Option<Vec<u8>> {
    if from.is_empty() {
        return None;
    }
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for at in memchr::memmem::find_iter(text, from) {
        if at < copied {
            continue;
        }
        let end = at + from.len();
        let continues = text
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'@'));
        if continues {
            continue;
        }
        let o = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 16));
        o.extend_from_slice(text.get(copied..at).unwrap_or_default());
        o.extend_from_slice(to);
        copied = end;
    }
    let mut o = out?;
    o.extend_from_slice(text.get(copied..).unwrap_or_default());
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_authority_and_path() {
        let u = Url::parse(b"rtsp://127.0.0.1:31554/test/trackID=0?x=1").unwrap();
        assert_eq!(u.host_port, b"127.0.0.1:31554");
        assert_eq!(u.path, b"/test/trackID=0");
        assert_eq!(u.rest, b"/test/trackID=0?x=1");
        let u = Url::parse(b"RTSP://user:pw@cam").unwrap();
        assert_eq!(u.host_port, b"cam");
        assert_eq!(u.path, b"/");
        assert_eq!(Url::parse(b"*"), None);
        assert_eq!(Url::parse(b"http://x/"), None);
        assert_eq!(Url::parse(b"rtsp:///x"), None);
    }

    #[test]
    fn swaps_bases() {
        assert_eq!(
            with_base(b"rtsp://gw:8554/cam/trackID=1", b"rtsp://10.0.0.1:554").unwrap(),
            b"rtsp://10.0.0.1:554/cam/trackID=1"
        );
        assert_eq!(with_base(b"*", b"rtsp://x"), None);
        let text = b"url=rtsp://up:554/a/trackID=0;seq=1,url=rtsp://up:5540/b,rtsp://up:554";
        assert_eq!(
            replace_base(text, b"rtsp://up:554", b"rtsp://gw:1").unwrap(),
            b"url=rtsp://gw:1/a/trackID=0;seq=1,url=rtsp://up:5540/b,rtsp://gw:1"
        );
        assert_eq!(replace_base(b"no urls", b"rtsp://up", b"x"), None);
    }
}
