use bytes::BytesMut;

use super::*;
use crate::{Decoder, Protocol};

fn requests(bytes: &[u8]) -> Vec<Request> {
    let mut d = RequestDecoder::default();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(r) = d.decode(&mut buf).unwrap() {
        out.push(r);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    out
}

fn replies(bytes: &[u8]) -> Vec<Reply> {
    let mut d = ReplyDecoder::default();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(r) = d.decode(&mut buf).unwrap() {
        out.push(r);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    out
}

/// Requests as pymemcache and libmemcached send them.
const CLIENT: &[u8] =
    b"set foo 0 0 3\r\nbar\r\nget foo baz\r\ngets foo\r\nadd k 5 60 2 noreply\r\nhi\r\n\
cas foo 0 0 1 42\r\nx\r\nincr n 5\r\ndelete foo noreply\r\ntouch foo 10\r\ngat 10 a b\r\n\
mg foo v f t\r\nms foo 2 T0 q\r\nhi\r\nmd foo q\r\nmn\r\nversion\r\nstats\r\nquit\r\n";

#[test]
fn decodes_every_command_with_its_keys_and_data() {
    let r = requests(CLIENT);
    let verbs: Vec<Verb> = r.iter().map(Request::verb).collect();
    use Verb::*;
    assert_eq!(
        verbs,
        [
            Set, Get, Gets, Add, Cas, Incr, Delete, Touch, Gat, MetaGet, MetaSet, MetaDelete,
            MetaNoop, Version, Stats, Quit
        ]
    );
    assert_eq!(r[0].key(), Some(&b"foo"[..]));
    assert_eq!(r[0].data(), b"bar\r\n");
    assert_eq!(r[0].wire().as_ref(), b"set foo 0 0 3\r\nbar\r\n");
    let keys: Vec<&[u8]> = r[1].keys().collect();
    assert_eq!(keys, [&b"foo"[..], b"baz"]);
    assert_eq!(r[1].retrieval_prefix(), b"get");
    assert!(r[3].noreply() && !r[0].noreply());
    assert!(r[6].noreply());
    let gat: Vec<&[u8]> = r[8].keys().collect();
    assert_eq!(gat, [&b"a"[..], b"b"]);
    assert_eq!(r[8].retrieval_prefix(), b"gat 10");
    assert!(!r[9].noreply());
    assert!(r[10].is_quiet_meta() && r[11].is_quiet_meta());
    assert_eq!(r[10].without_quiet().as_ref(), b"ms foo 2 T0\r\nhi\r\n");
    assert!(r[10].quiet_drops(b"HD\r\n") && !r[10].quiet_drops(b"NS\r\n"));
    assert_eq!(r[12].key(), None);
    let q = requests(b"md q q\r\n");
    assert!(q[0].is_quiet_meta());
    assert_eq!(q[0].without_quiet().as_ref(), b"md q\r\n");
}

#[test]
fn split_anywhere_gives_the_same_requests() {
    let whole = requests(CLIENT);
    for cut in 0..CLIENT.len() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&CLIENT[..cut]);
        let mut got = Vec::new();
        while let Some(r) = d.decode(&mut buf).unwrap() {
            got.push(r);
        }
        buf.extend_from_slice(&CLIENT[cut..]);
        while let Some(r) = d.decode(&mut buf).unwrap() {
            got.push(r);
        }
        assert_eq!(got, whole, "cut at {cut}");
    }
}

#[test]
fn bad_lines_are_frames_memcached_would_refuse() {
    let r = requests(b"GET foo\r\nset foo x 0 3\r\nget\r\nincr k\r\ndelete k 5\r\n");
    let verbs: Vec<Verb> = r.iter().map(Request::verb).collect();
    // As memcached 1.6: unknown commands and missing arguments `ERROR`,
    // bad numbers `CLIENT_ERROR ...`.
    assert_eq!(
        verbs,
        [
            Verb::Invalid(UNKNOWN_COMMAND),
            Verb::Invalid("bad command line format"),
            Verb::Invalid(UNKNOWN_COMMAND),
            Verb::Invalid(UNKNOWN_COMMAND),
            Verb::Invalid("bad command line format.  Usage: delete <key> [noreply]"),
        ]
    );
    let long_key = format!("get {}\r\n", "k".repeat(251));
    assert!(matches!(
        requests(long_key.as_bytes())[0].verb(),
        Verb::Invalid(_)
    ));
}

#[test]
fn limits_are_checked_before_buffering() {
    let mut d = RequestDecoder::new(Limits {
        max_value: 10,
        max_line: 32,
        max_keys: 2,
    });
    let mut big = BytesMut::from(&b"set k 0 0 11\r\n"[..]);
    assert!(matches!(
        d.decode(&mut big),
        Err(CodecError::FrameTooLarge { .. })
    ));
    let mut long = BytesMut::from(&[b'g'; 40][..]);
    assert!(matches!(
        d.decode(&mut long),
        Err(CodecError::HeadTooLarge { .. })
    ));
    let mut keys = BytesMut::from(&b"get a b c\r\n"[..]);
    let r = d.decode(&mut keys).unwrap().unwrap();
    assert_eq!(r.verb(), Verb::Invalid("too many keys"));
    let mut bad = BytesMut::from(&b"set k 0 0 2\r\nabcd\r\n"[..]);
    assert!(d.decode(&mut bad).is_err());
}

#[test]
fn replies_are_framed_one_per_request() {
    let wire = b"STORED\r\nVALUE foo 0 3\r\nbar\r\nVALUE baz 5 2 77\r\nhi\r\nEND\r\nEND\r\n\
VA 2 f0\r\nhi\r\nHD\r\nEN\r\n42\r\nSTAT pid 1\r\nSTAT uptime 2\r\nEND\r\nSERVER_ERROR out of memory\r\nERROR\r\nVERSION 1.6.38\r\n";
    let r = replies(wire);
    let kinds: Vec<ReplyKind> = r.iter().map(Reply::kind).collect();
    use ReplyKind::*;
    assert_eq!(
        kinds,
        [
            Line, Values, Values, MetaValue, Line, Line, Line, Stats, Error, Error, Line
        ]
    );
    let vals: Vec<Value> = values(r[1].wire()).collect();
    assert_eq!(vals.len(), 2);
    assert_eq!(vals[0].key, b"foo");
    assert_eq!(vals[0].block, b"VALUE foo 0 3\r\nbar\r\n");
    assert_eq!(vals[1].block, b"VALUE baz 5 2 77\r\nhi\r\n");
    assert_eq!(values(r[2].wire()).count(), 0);
    // A value whose data holds "END\r\n" is still one reply.
    let tricky = replies(b"VALUE k 0 5\r\nEND\r\n\r\nEND\r\n");
    assert_eq!(tricky.len(), 1);
}

#[test]
fn sniffs_lowercase_commands_at_the_line_end() {
    assert_eq!(sniff(b"get"), Verdict::NeedMore);
    assert_eq!(sniff(b"get foo"), Verdict::NeedMore);
    assert_eq!(sniff(b"get foo\r\n"), Verdict::Match(Protocol::Memcached));
    assert_eq!(
        sniff(b"set k 0 0 1\r\nx\r\n"),
        Verdict::Match(Protocol::Memcached)
    );
    assert_eq!(sniff(b"mn\r\n"), Verdict::Match(Protocol::Memcached));
    assert_eq!(sniff(b"version\r\n"), Verdict::Match(Protocol::Memcached));
    assert_eq!(sniff(b"get / HTTP/1.1\r\n"), Verdict::Reject);
    assert_eq!(sniff(b"GET foo\r\n"), Verdict::Reject);
    assert_eq!(sniff(b"*1\r\n$4\r\nPING\r\n"), Verdict::Reject);
    assert_eq!(sniff(b"ping\r\n"), Verdict::Reject);
    assert_eq!(sniff(b"\x80\x00"), Verdict::Reject);
    assert_eq!(sniff(b"OPTIONS rtsp://x RTSP/1.0\r\n"), Verdict::Reject);
}

#[test]
fn with_redis_enabled_lowercase_memcached_commands_are_memcached() {
    let both = [Protocol::Redis, Protocol::Memcached, Protocol::Http1];
    assert_eq!(
        crate::sniff(b"get foo\r\n", &both),
        Verdict::Match(Protocol::Memcached)
    );
    assert_eq!(
        crate::sniff(b"GET foo\r\n", &both),
        Verdict::Match(Protocol::Redis)
    );
    assert_eq!(
        crate::sniff(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n", &both),
        Verdict::Match(Protocol::Redis)
    );
    assert_eq!(
        crate::sniff(b"get / HTTP/1.1\r\n", &both),
        Verdict::Match(Protocol::Http1)
    );
}

proptest::proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let mut d = RequestDecoder::default();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let mut buf = BytesMut::from(&bytes[..]);
        let mut d = ReplyDecoder::default();
        while let Ok(Some(_)) = d.decode(&mut buf) {}
        let _ = sniff(&bytes);
        let _ = values(&bytes).count();
    }
}
