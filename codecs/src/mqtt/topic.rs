//! Topic names, topic filters and matching (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7),
//! plus the mount-point helpers the gateway uses to give each tenant its own
//! topic tree on a shared broker.
//!
//! Everything works on bytes; names and filters coming from a decoded packet
//! are already known to be valid UTF-8.
use super::packet::valid_utf8;

/// Longest topic name or filter: the two-byte length of an MQTT string.
pub const MAX_LEN: usize = 65_535;

/// Prefix of a shared subscription filter: `$share/{group}/{filter}`.
const SHARE: &[u8] = b"$share/";

fn common(s: &[u8]) -> bool {
    !s.is_empty() && s.len() <= MAX_LEN && valid_utf8(s)
}

/// A topic name a PUBLISH (or a will) may carry: not empty, at most 65,535
/// bytes, UTF-8 without U+0000, no wildcard (`+`, `#`).
pub fn valid_topic_name(name: &[u8]) -> bool {
    common(name) && memchr::memchr2(b'+', b'#', name).is_none()
}

/// A topic filter a SUBSCRIBE may carry: not empty, at most 65,535 bytes,
/// UTF-8 without U+0000; `+` only as a whole level, `#` only as the whole last
/// level. A shared subscription `$share/{group}/{filter}` needs a group
/// without wildcards and a valid filter after it.
pub fn valid_filter(filter: &[u8]) -> bool {
    if !common(filter) {
        return false;
    }
    if let Some((group, inner)) = shared(filter) {
        return !group.is_empty()
            && memchr::memchr2(b'+', b'#', group).is_none()
            && valid_levels(inner);
    }
    // `$share/group` without a filter.
    !filter.starts_with(SHARE) && valid_levels(filter)
}

fn valid_levels(filter: &[u8]) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split(|&b| b == b'/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        let plus = memchr::memchr(b'+', level).is_some();
        let hash = memchr::memchr(b'#', level).is_some();
        if plus && level != b"+" {
            return false;
        }
        if hash && (level != b"#" || !last) {
            return false;
        }
    }
    true
}

/// Split a shared subscription filter `$share/{group}/{filter}` into its
/// group and filter; `None` for an ordinary filter (or a `$share/` filter
/// without a second `/`).
pub fn shared(filter: &[u8]) -> Option<(&[u8], &[u8])> {
    let rest = filter.strip_prefix(SHARE)?;
    let slash = memchr::memchr(b'/', rest)?;
    Some((rest.get(..slash)?, rest.get(slash + 1..)?))
}

/// Whether `topic` (a topic name) matches `filter` (a valid, non-shared
/// filter): `+` matches exactly one level (possibly empty), `#` matches the
/// level it stands in and every level below, including none (so `a/#`
/// matches `a`). Topics starting with `$` are not matched by a filter
/// starting with a wildcard.
pub fn matches(filter: &[u8], topic: &[u8]) -> bool {
    if topic.first() == Some(&b'$') && matches!(filter.first(), Some(b'+' | b'#')) {
        return false;
    }
    let mut f = filter.split(|&b| b == b'/');
    let mut t = topic.split(|&b| b == b'/');
    loop {
        match (f.next(), t.next()) {
            (Some(b"#"), _) => return true,
            (Some(b"+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Put `filter` (or a topic name) under `mount`: `mount` + `filter`, with a
/// shared subscription's group kept in front
/// (`$share/g/a/b` under `tenant/` → `$share/g/tenant/a/b`).
///
/// `mount` is used as given: it normally ends with `/`.
pub fn mount(mount: &[u8], filter: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mount.len() + filter.len());
    match shared(filter) {
        Some((group, inner)) => {
            out.extend_from_slice(SHARE);
            out.extend_from_slice(group);
            out.push(b'/');
            out.extend_from_slice(mount);
            out.extend_from_slice(inner);
        }
        None => {
            out.extend_from_slice(mount);
            out.extend_from_slice(filter);
        }
    }
    out
}

/// Take `mount` off the front of a topic name coming back from the broker;
/// `None` if the topic is not under it (a message the client must not see).
///
/// An MQTT 5 PUBLISH that carries only a topic alias has an empty topic:
/// forward it as it is (the alias was set by an earlier, rewritten PUBLISH),
/// or resolve it first with [`super::TopicAliases`].
pub fn unmount<'a>(mount: &[u8], topic: &'a [u8]) -> Option<&'a [u8]> {
    topic.strip_prefix(mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_topic_name(b"a"));
        assert!(valid_topic_name(b"/"));
        assert!(valid_topic_name(b"sport/tennis/player1"));
        assert!(valid_topic_name(b"$SYS/broker/load"));
        assert!(valid_topic_name("caf\u{e9}/\u{1f600}".as_bytes()));
        assert!(!valid_topic_name(b""));
        assert!(!valid_topic_name(b"sport/+"));
        assert!(!valid_topic_name(b"sport/#"));
        assert!(!valid_topic_name(b"a\0b"));
        assert!(!valid_topic_name(b"\xff"));
        assert!(valid_topic_name(&vec![b'a'; MAX_LEN]));
        assert!(!valid_topic_name(&vec![b'a'; MAX_LEN + 1]));
    }

    #[test]
    fn filters() {
        // Valid (spec §4.7.1).
        for f in [
            &b"sport/tennis/player1/#"[..],
            b"sport/#",
            b"#",
            b"+",
            b"+/tennis/#",
            b"sport/+/player1",
            b"/+",
            b"+/+",
            b"sport/",
            b"/",
            b"$SYS/#",
            b"$share/group/sport/#",
            b"$share/g/+",
        ] {
            assert!(valid_filter(f), "{}", String::from_utf8_lossy(f));
        }
        // Invalid.
        for f in [
            &b""[..],
            b"sport/tennis#",
            b"sport/tennis/#/ranking",
            b"sport+",
            b"sport/+x",
            b"##",
            b"#/",
            b"a\0",
            b"\xc3",
            b"$share/g",
            b"$share//a",
            b"$share/g+/a",
            b"$share/g/",
            b"$share/g/a#",
        ] {
            assert!(!valid_filter(f), "{}", String::from_utf8_lossy(f));
        }
    }

    #[test]
    fn matching_spec_examples() {
        // §4.7.1.2 multi-level wildcard.
        for t in [
            &b"sport/tennis/player1"[..],
            b"sport/tennis/player1/ranking",
            b"sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches(b"sport/tennis/player1/#", t));
        }
        assert!(matches(b"sport/#", b"sport"));
        assert!(matches(b"#", b"sport/tennis"));
        assert!(matches(b"#", b"/"));
        // §4.7.1.3 single-level wildcard.
        assert!(matches(b"sport/tennis/+", b"sport/tennis/player1"));
        assert!(matches(b"sport/tennis/+", b"sport/tennis/player2"));
        assert!(!matches(b"sport/tennis/+", b"sport/tennis/player1/ranking"));
        assert!(!matches(b"sport/tennis/+", b"sport/tennis"));
        assert!(!matches(b"sport/+", b"sport"));
        assert!(matches(b"sport/+", b"sport/"));
        assert!(matches(b"+/+", b"/finance"));
        assert!(matches(b"/+", b"/finance"));
        assert!(!matches(b"+", b"/finance"));
        assert!(matches(b"+/tennis/#", b"sport/tennis/x"));
        assert!(matches(b"+/tennis/#", b"sport/tennis"));
        // §4.7.2 topics beginning with $.
        assert!(!matches(b"#", b"$SYS/broker"));
        assert!(!matches(b"+/monitor/Clients", b"$SYS/monitor/Clients"));
        assert!(matches(b"$SYS/#", b"$SYS/monitor/Clients"));
        assert!(matches(b"$SYS/monitor/+", b"$SYS/monitor/Clients"));
        // Plain equality, case and level sensitivity.
        assert!(matches(b"a/b", b"a/b"));
        assert!(!matches(b"a/b", b"a/B"));
        assert!(!matches(b"a/b", b"a/b/"));
        assert!(!matches(b"a/b/", b"a/b"));
        assert!(!matches(b"a", b"a/b"));
        assert!(matches(b"a/+/c", b"a//c"));
    }

    #[test]
    fn shared_and_mount() {
        assert_eq!(shared(b"$share/g/a/b"), Some((&b"g"[..], &b"a/b"[..])));
        assert_eq!(shared(b"a/b"), None);
        assert_eq!(shared(b"$share/g"), None);
        assert_eq!(mount(b"t1/", b"a/#"), b"t1/a/#");
        assert_eq!(mount(b"t1/", b"$share/g/a/+"), b"$share/g/t1/a/+");
        assert_eq!(mount(b"", b"a"), b"a");
        assert_eq!(unmount(b"t1/", b"t1/a/b"), Some(&b"a/b"[..]));
        assert_eq!(unmount(b"t1/", b"t2/a"), None);
        // A mounted filter matches the mounted topic.
        assert!(matches(&mount(b"t1/", b"a/+"), &mount(b"t1/", b"a/x")));
        assert!(!matches(&mount(b"t1/", b"a/+"), &mount(b"t2/", b"a/x")));
    }
}
