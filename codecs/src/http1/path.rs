//! Request-path normalisation before route matching (RFC 3986 §6.2.2):
//! percent-encoded unreserved characters decoded and the hex digits of other
//! escapes upper-cased, runs of slashes optionally merged, then dot segments
//! removed (§5.2.4). `/%61dmin`, `//admin`, `/./admin` and `/x/../admin` all
//! become `/admin`, which is how an upstream such as nginx reads them, so a
//! route on `/admin` sees what the upstream will serve. An escaped slash
//! (`%2F`) stays escaped: it is data, not a separator.
use std::borrow::Cow;

/// A path that cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding in the request path")]
    BadEscape,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `path` could change under normalisation (a cheap scan).
fn may_change(path: &[u8], merge_slashes: bool) -> bool {
    let mut prev = 0u8;
    for &b in path {
        match b {
            b'%' => return true,
            b'.' if prev == b'/' => return true,
            b'/' if merge_slashes && prev == b'/' => return true,
            _ => {}
        }
        prev = b;
    }
    false
}

/// The normalised form of an origin-form path (no query). Paths that do not
/// start with `/` (`*`, empty) are returned unchanged. Borrowed when nothing
/// changes, which is the common case and costs one scan.
pub fn normalize_path(path: &[u8], merge_slashes: bool) -> Result<Cow<'_, [u8]>, PathError> {
    if path.first() != Some(&b'/') || !may_change(path, merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Percent-encoding: decode unreserved bytes, upper-case the rest.
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = path.get(i) {
        if b != b'%' {
            decoded.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            path.get(i + 1).copied().and_then(hex),
            path.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = hi * 16 + lo;
        if is_unreserved(value) {
            decoded.push(value);
        } else {
            decoded.push(b'%');
            decoded.push(
                b"0123456789ABCDEF"
                    .get(usize::from(hi))
                    .copied()
                    .unwrap_or(b'0'),
            );
            decoded.push(
                b"0123456789ABCDEF"
                    .get(usize::from(lo))
                    .copied()
                    .unwrap_or(b'0'),
            );
        }
        i += 3;
    }
    // 2. Slashes merged, 3. dot segments removed, over the segments after
    // the leading slash.
    let segments = decoded.get(1..).unwrap_or_default().split(|b| *b == b'/');
    let count = decoded
        .get(1..)
        .unwrap_or_default()
        .split(|b| *b == b'/')
        .count();
    let mut kept: Vec<&[u8]> = Vec::with_capacity(count);
    for (n, segment) in segments.enumerate() {
        let last = n + 1 == count;
        match segment {
            b"." => {}
            b".." => {
                kept.pop();
            }
            b"" if merge_slashes && !last => continue,
            s => {
                kept.push(s);
                continue;
            }
        }
        if last {
            // `/a/.` and `/a/..` name a directory: keep the trailing slash.
            kept.push(b"");
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for segment in &kept {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str, merge: bool) -> String {
        String::from_utf8(normalize_path(p.as_bytes(), merge).unwrap().into_owned()).unwrap()
    }

    #[test]
    fn bypasses_of_a_prefix_route_normalise_to_it() {
        for p in [
            "/%61dmin",
            "//admin",
            "/./admin",
            "/x/../admin",
            "/%2e/admin",
            "/x/%2E%2E/admin",
            "///x//..//admin",
        ] {
            assert_eq!(norm(p, true), "/admin", "{p}");
        }
    }

    #[test]
    fn rfc3986_dot_segment_examples() {
        assert_eq!(norm("/a/b/c/./../../g", false), "/a/g");
        assert_eq!(norm("/mid/content=5/../6", false), "/mid/6");
        assert_eq!(norm("/..", false), "/");
        assert_eq!(norm("/a/.", false), "/a/");
        assert_eq!(norm("/a/b/..", false), "/a/");
        assert_eq!(norm("/../../x", false), "/x");
    }

    #[test]
    fn slashes_merge_only_when_asked() {
        assert_eq!(norm("/a//b", false), "/a//b");
        assert_eq!(norm("/a//b", true), "/a/b");
        assert_eq!(norm("/a/b/", true), "/a/b/");
        assert_eq!(norm("//", true), "/");
    }

    #[test]
    fn escapes_other_than_unreserved_stay_escaped_in_upper_case() {
        assert_eq!(norm("/a%2fb", true), "/a%2Fb");
        assert_eq!(norm("/a%20b%7e", true), "/a%20b~");
        assert_eq!(
            normalize_path(b"/a%zz", true),
            Err(PathError::BadEscape),
            "bad hex"
        );
        assert_eq!(normalize_path(b"/a%4", true), Err(PathError::BadEscape));
    }

    #[test]
    fn ordinary_paths_are_borrowed() {
        for p in ["/", "/a/b.txt", "/api/v1/x.y", "*", ""] {
            assert!(matches!(
                normalize_path(p.as_bytes(), true).unwrap(),
                Cow::Borrowed(_)
            ));
        }
    }
}
