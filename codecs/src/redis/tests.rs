//! Unit tests of the Redis codec on literal bytes.
use super::*;
use crate::Protocol;

fn commands(input: &[u8]) -> Result<(Vec<Command>, usize), CodecError> {
    let mut dec = CommandDecoder::default();
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(cmd) = dec.decode(&mut buf)? {
        out.push(cmd);
    }
    Ok((out, buf.len()))
}

fn one_command(input: &[u8]) -> Command {
    let (mut cmds, left) = commands(input).unwrap();
    assert_eq!(
        (cmds.len(), left),
        (1, 0),
        "{:?}",
        String::from_utf8_lossy(input)
    );
    cmds.remove(0)
}

fn args(cmd: &Command) -> Vec<&[u8]> {
    cmd.args().collect()
}

fn replies(input: &[u8]) -> Result<(Vec<Reply>, usize), CodecError> {
    let mut dec = ReplyDecoder::default();
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(r) = dec.decode(&mut buf)? {
        out.push(r);
    }
    Ok((out, buf.len()))
}

fn one_reply(input: &[u8]) -> Reply {
    let (mut rs, left) = replies(input).unwrap();
    assert_eq!(
        (rs.len(), left),
        (1, 0),
        "{:?}",
        String::from_utf8_lossy(input)
    );
    rs.remove(0)
}

fn too_large(e: CodecError) -> bool {
    matches!(
        e,
        CodecError::FrameTooLarge { .. } | CodecError::TooMany { .. }
    )
}

fn too_deep(e: CodecError) -> bool {
    matches!(e, CodecError::TooDeep { .. })
}

fn is_malformed(e: CodecError) -> bool {
    matches!(e, CodecError::Malformed { .. })
}

#[test]
fn multibulk_command() {
    let wire = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n";
    let cmd = one_command(wire);
    assert_eq!(&cmd.wire()[..], &wire[..]);
    assert_eq!(cmd.name(), b"SET");
    assert!(cmd.is("set"));
    assert!(!cmd.is("get"));
    assert_eq!(cmd.argc(), 3);
    assert_eq!(args(&cmd), [&b"SET"[..], b"key", b"va\r\nl"]);
    assert_eq!(cmd.arg(3), None);
    assert!(!cmd.is_inline());
    assert!(!cmd.has_body());
    assert_eq!(cmd.get(&Field::Command), Some(&b"SET"[..]));
    assert_eq!(cmd.get(&Field::Key), Some(&b"key"[..]));
    assert_eq!(cmd.get(&Field::Host), None);
    // Arguments are views into the wire bytes.
    let wire_range = cmd.wire().as_ptr_range();
    assert!(wire_range.contains(&cmd.arg(1).unwrap().as_ptr()));
}

#[test]
fn empty_and_binary_arguments() {
    let cmd = one_command(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n");
    assert_eq!(args(&cmd), [&b"ECHO"[..], b""]);
    let cmd = one_command(b"*2\r\n$4\r\nECHO\r\n$3\r\n\0\xff\n\r\n");
    assert_eq!(cmd.arg(1), Some(&b"\0\xff\n"[..]));
    let cmd = one_command(b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(cmd.get(&Field::Key), None);
}

#[test]
fn pipelined_and_skipped() {
    let input = b"*0\r\n*1\r\n$4\r\nPING\r\n\r\n   \r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    let (cmds, left) = commands(input).unwrap();
    assert_eq!(left, 0);
    assert_eq!(cmds.len(), 3);
    assert_eq!(&cmds[0].wire()[..], b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(&cmds[1].wire()[..], b"PING\r\n");
    assert!(cmds[1].is_inline());
    assert_eq!(cmds[2].keys().collect::<Vec<_>>(), [&b"k"[..]]);
}

#[test]
fn incomplete_then_complete_in_every_split() {
    let input: &[u8] =
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\n0123456789\r\nGET \"a b\"\r\n*1\r\n$4\r\nPING\r\n";
    let (whole, _) = commands(input).unwrap();
    assert_eq!(whole.len(), 3);
    // Byte by byte.
    let mut dec = CommandDecoder::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in input {
        buf.extend_from_slice(&[b]);
        while let Some(c) = dec.decode(&mut buf).unwrap() {
            got.push(c);
        }
    }
    assert_eq!(got, whole);
    assert!(buf.is_empty());
    // Every two-piece split.
    for cut in 0..input.len() {
        let mut dec = CommandDecoder::default();
        let mut buf = BytesMut::from(&input[..cut]);
        let mut got = Vec::new();
        while let Some(c) = dec.decode(&mut buf).unwrap() {
            got.push(c);
        }
        buf.extend_from_slice(&input[cut..]);
        while let Some(c) = dec.decode(&mut buf).unwrap() {
            got.push(c);
        }
        assert_eq!(got, whole, "cut at {cut}");
    }
}

#[test]
fn inline_commands() {
    let cmd = one_command(b"SET k \"hello world\"\r\n");
    assert!(cmd.is_inline());
    assert_eq!(args(&cmd), [&b"SET"[..], b"k", b"hello world"]);
    assert_eq!(&cmd.wire()[..], b"SET k \"hello world\"\r\n");
    assert_eq!(cmd.get(&Field::Key), Some(&b"k"[..]));
    let cmd = one_command(b"ECHO \"quoted \\x41\\x42 arg\"\r\n");
    assert_eq!(cmd.arg(1), Some(&b"quoted AB arg"[..]));
    // Bare LF is accepted inline, as redis does.
    let cmd = one_command(b"get  k\n");
    assert_eq!(args(&cmd), [&b"get"[..], b"k"]);
    assert_eq!(cmd.keys().collect::<Vec<_>>(), [&b"k"[..]]);
    // Unquoted inline arguments are views into the wire.
    assert!(
        cmd.wire()
            .as_ptr_range()
            .contains(&cmd.arg(1).unwrap().as_ptr())
    );
    assert!(is_malformed(
        commands(b"SET k \"unterminated\r\n").unwrap_err()
    ));
}

#[test]
fn malformed_commands() {
    for bad in [
        &b"*x\r\n"[..],
        b"*1x\r\n",
        b"*\r\n",
        b"*1\n",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$x\r\n",
        b"*1\r\n+PING\r\n",
        b"*1\r\n$99999999999999999999999\r\n",
        b"*100000000000000000000000000000000000000000000\r\n",
    ] {
        let err = commands(bad).unwrap_err();
        assert!(
            is_malformed(err.clone()),
            "{:?}: {err:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// redis-server's words for each protocol error (checked against a real
/// server in tests/redis.rs).
#[test]
fn protocol_errors_in_redis_words() {
    for (bad, words) in [
        (&b"*x\r\n"[..], "invalid multibulk length"),
        (
            b"*100000000000000000000000000000\r\n",
            "invalid multibulk length",
        ),
        (b"*1\r\n$x\r\n", "invalid bulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\nfoo\r\n", "expected '$', got 'f'"),
        (b"*2\r\n$4\r\nECHO\r\n:12\r\n", "expected '$', got ':'"),
        (b"ECHO \"unbalanced\r\n", "unbalanced quotes in request"),
    ] {
        let mut dec = CommandDecoder::default();
        let err = dec.decode(&mut BytesMut::from(bad)).unwrap_err();
        assert_eq!(
            &dec.error_reply(&err)[..],
            format!("-ERR Protocol error: {words}\r\n").as_bytes(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let limits = Limits {
        max_bulk: 10,
        max_elements: 4,
        max_inline: 16,
        max_depth: 3,
    };
    for (bad, words) in [
        (&b"*5\r\n"[..], "invalid multibulk length"),
        (b"*1\r\n$11\r\n", "invalid bulk length"),
        (b"GET 0123456789abc", "too big inline request"),
        (b"*11111111111111111111", "too big mbulk count string"),
        (b"*1\r\n$11111111111111111111", "too big bulk count string"),
    ] {
        let mut dec = CommandDecoder::new(limits);
        let err = dec.decode(&mut BytesMut::from(bad)).unwrap_err();
        assert_eq!(
            &dec.error_reply(&err)[..],
            format!("-ERR Protocol error: {words}\r\n").as_bytes()
        );
    }
}

#[test]
fn empty_commands_and_unchecked_terminators_as_redis() {
    // Negative and zero counts are skipped without a reply.
    let (cmds, left) = commands(b"*-10\r\n*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!((cmds.len(), left), (1, 0));
    // The two bytes after an argument are not checked (redis-server skips them).
    let cmd = one_command(b"*1\r\n$4\r\nPINGxx");
    assert_eq!(cmd.name(), b"PING");
}

#[test]
fn subscription_acks_answer_commands_other_pushes_do_not() {
    for ack in [
        &b">3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"[..],
        b">3\r\n$12\r\npunsubscribe\r\n_\r\n:0\r\n",
        b">3\r\n$12\r\nSUNSUBSCRIBE\r\n$1\r\na\r\n:0\r\n",
        b">3\r\n+subscribe\r\n+a\r\n:1\r\n",
    ] {
        assert_eq!(one_reply(ack).kind(), ReplyKind::Push);
        assert!(!is_out_of_band(ack), "{:?}", String::from_utf8_lossy(ack));
    }
    for oob in [
        &b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"[..],
        b">3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n",
        b">0\r\n",
    ] {
        assert!(is_out_of_band(oob));
    }
    for not_push in [
        &b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n"[..],
        b"+OK\r\n",
    ] {
        assert!(!is_out_of_band(not_push));
    }
    let n = |args: &[&str]| reply_count(&Command::from_args(args));
    assert_eq!(n(&["UNSUBSCRIBE"]), 1);
    assert_eq!(n(&["unsubscribe", "a", "b", "c"]), 3);
    assert_eq!(n(&["PUNSUBSCRIBE", "a*", "b*"]), 2);
    assert_eq!(n(&["SUNSUBSCRIBE", "a", "b"]), 2);
    assert_eq!(n(&["GET", "a"]), 1);
    assert_eq!(n(&["MGET", "a", "b"]), 1);
}

#[test]
fn big_numbers_pass_as_servers_send_them() {
    // Redis relays a script's {big_number = '123  123'} unchecked.
    for wire in [&b"(123  123\r\n"[..], b"(12a\r\n", b"(-1\r\n"] {
        assert_eq!(&one_reply(wire).wire()[..], wire);
    }
}

#[test]
fn limits_before_buffering() {
    let limits = Limits {
        max_bulk: 10,
        max_elements: 4,
        max_inline: 16,
        max_depth: 3,
    };
    let run = |input: &[u8]| {
        let mut dec = CommandDecoder::new(limits);
        let mut buf = BytesMut::from(input);
        dec.decode(&mut buf)
    };
    // The bulk length alone is enough to refuse.
    assert!(too_large(run(b"*2\r\n$3\r\nGET\r\n$11\r\n").unwrap_err()));
    assert!(run(b"*2\r\n$3\r\nGET\r\n$10\r\n").unwrap().is_none());
    assert!(too_large(run(b"*5\r\n").unwrap_err()));
    assert!(run(b"*4\r\n").unwrap().is_none());
    // Inline: 16 bytes without LF is still fine, 17 is not.
    assert!(run(b"GET 0123456789ab").unwrap().is_none());
    assert!(too_large(run(b"GET 0123456789abc").unwrap_err()));
    assert!(run(b"GET 0123456789a\r\n").unwrap().is_some());
    // Default limits: a 512 MiB + 1 bulk is refused at once, and a large
    // announced bulk does not reserve its whole size.
    let mut dec = CommandDecoder::default();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$536870913\r\n"[..]);
    assert!(too_large(dec.decode(&mut buf).unwrap_err()));
    let mut dec = CommandDecoder::default();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$536870912\r\n"[..]);
    assert!(dec.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() < 1024 * 1024);
}

#[test]
fn huge_partial_frame_resumes() {
    // 100k one-byte arguments, fed in 1 KiB pieces: must not rescan from the start.
    let n = 100_000;
    let mut input = format!("*{}\r\n$4\r\nMGET\r\n", n + 1).into_bytes();
    for _ in 0..n {
        input.extend_from_slice(b"$1\r\nk\r\n");
    }
    let mut dec = CommandDecoder::default();
    let mut buf = BytesMut::new();
    let mut got = None;
    let start = std::time::Instant::now();
    for chunk in input.chunks(1024) {
        buf.extend_from_slice(chunk);
        if let Some(c) = dec.decode(&mut buf).unwrap() {
            got = Some(c);
        }
    }
    let cmd = got.unwrap();
    assert_eq!(cmd.argc(), n + 1);
    assert_eq!(cmd.keys().count(), n);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn built_command_keys_and_metadata() {
    let cmd = Command::from_args(["MSET", "a", "1", "b", "2"]);
    assert_eq!(cmd.keys().collect::<Vec<_>>(), [&b"a"[..], b"b"]);
    assert_eq!(cmd.get(&Field::Key), Some(&b"a"[..]));
    let cmd = Command::from_args(["PING"]);
    assert_eq!(cmd.get(&Field::Key), None);
    assert_eq!(cmd.get(&Field::Command), Some(&b"PING"[..]));
}

#[test]
fn reply_types() {
    let cases: &[(&[u8], ReplyKind)] = &[
        (b"+OK\r\n", ReplyKind::Value),
        (b"+\r\n", ReplyKind::Value),
        (b"-ERR unknown command\r\n", ReplyKind::Error),
        (b":-42\r\n", ReplyKind::Value),
        (b"$5\r\nhe\r\no\r\n", ReplyKind::Value),
        (b"$0\r\n\r\n", ReplyKind::Value),
        (b"$-1\r\n", ReplyKind::Value),
        (b"*-1\r\n", ReplyKind::Value),
        (b"*0\r\n", ReplyKind::Value),
        (b"*2\r\n$1\r\na\r\n$-1\r\n", ReplyKind::Value),
        (b"_\r\n", ReplyKind::Value),
        (b",3.141\r\n", ReplyKind::Value),
        (b",-inf\r\n", ReplyKind::Value),
        (b"#t\r\n", ReplyKind::Value),
        (b"!21\r\nSYNTAX invalid syntax\r\n", ReplyKind::Error),
        (b"=15\r\ntxt:Some string\r\n", ReplyKind::Value),
        (
            b"(3492890328409238509324850943850943825024385\r\n",
            ReplyKind::Value,
        ),
        (b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", ReplyKind::Value),
        (b"~2\r\n+a\r\n+b\r\n", ReplyKind::Value),
        (b">2\r\n+message\r\n+hi\r\n", ReplyKind::Push),
        (
            b"|1\r\n+key-popularity\r\n*2\r\n$1\r\na\r\n,0.19\r\n*1\r\n:1\r\n",
            ReplyKind::Value,
        ),
        (
            b"|1\r\n+a\r\n+b\r\n-ERR after attribute\r\n",
            ReplyKind::Error,
        ),
        (b"|1\r\n+a\r\n+b\r\n>1\r\n+p\r\n", ReplyKind::Push),
        (b"|0\r\n:1\r\n", ReplyKind::Value),
        (b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n", ReplyKind::Value),
        (b"*1\r\n-ERR inside\r\n", ReplyKind::Value),
    ];
    for &(wire, kind) in cases {
        let reply = one_reply(wire);
        assert_eq!(&reply.wire()[..], wire);
        assert_eq!(reply.kind(), kind, "{:?}", String::from_utf8_lossy(wire));
        // The value model round-trips every case.
        let value = reply.to_value().unwrap();
        assert_eq!(&value.to_bytes()[..], wire);
    }
    // All of them back to back, byte by byte.
    let all: Vec<u8> = cases.iter().flat_map(|c| c.0.iter().copied()).collect();
    let mut dec = ReplyDecoder::default();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for &b in &all {
        buf.extend_from_slice(&[b]);
        while let Some(r) = dec.decode(&mut buf).unwrap() {
            got.push(r);
        }
    }
    assert_eq!(got.len(), cases.len());
    for (r, c) in got.iter().zip(cases) {
        assert_eq!(&r.wire()[..], c.0);
        assert_eq!(r.kind(), c.1);
    }
}

#[test]
fn malformed_replies() {
    for bad in [
        &b"?\r\n"[..],
        b"+OK\n",
        b":abc\r\n",
        b":\r\n",
        b"_x\r\n",
        b"#x\r\n",
        b",\r\n",
        b"$-2\r\n",
        b"!-1\r\n",
        b"=-1\r\n",
        b"=3\r\ntxt\r\n",
        b"=4\r\ntxt-\r\n",
        b"$3\r\nabcd\r\n",
        b"~-1\r\n",
        b">-1\r\n",
        b"%-1\r\n",
        b"*1\r\n?\r\n",
        b"$?\r\n",
    ] {
        let err = replies(bad).unwrap_err();
        assert!(
            is_malformed(err.clone()),
            "{:?}: {err:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn reply_limits() {
    let limits = Limits {
        max_bulk: 10,
        max_elements: 3,
        max_inline: 8,
        max_depth: 3,
    };
    let run = |input: &[u8]| ReplyDecoder::new(limits).decode(&mut BytesMut::from(input));
    assert!(too_large(run(b"$11\r\n").unwrap_err()));
    assert!(too_large(run(b"*4\r\n").unwrap_err()));
    assert!(too_large(run(b"%4\r\n").unwrap_err()));
    assert!(too_large(run(b"+1234567890").unwrap_err()));
    assert!(run(b"+12345678").unwrap().is_none());
    assert!(run(b"*1\r\n*1\r\n*1\r\n:1\r\n").unwrap().is_some());
    let deep = run(b"*1\r\n*1\r\n*1\r\n*1\r\n").unwrap_err();
    assert_eq!(
        deep.to_string(),
        "reply nested 4 levels deep is over the limit of 3 levels"
    );
    assert_eq!(
        run(b"*4\r\n").unwrap_err().to_string(),
        "reply aggregate of 4 elements is over the limit of 3 elements"
    );
    // Chained attributes count as nesting.
    assert!(
        run(b"|1\r\n:1\r\n:1\r\n|1\r\n:1\r\n:1\r\n*1\r\n:1\r\n")
            .unwrap()
            .is_some()
    );
    assert!(too_deep(
        run(b"|1\r\n:1\r\n:1\r\n|1\r\n:1\r\n:1\r\n|1\r\n:1\r\n:1\r\n*1\r\n").unwrap_err()
    ));
    // Depth is given back when aggregates close.
    assert!(
        run(b"*3\r\n*1\r\n*1\r\n:1\r\n*1\r\n*1\r\n:1\r\n*1\r\n*1\r\n:1\r\n")
            .unwrap()
            .is_some()
    );
}

#[test]
fn deep_nesting_does_not_overflow() {
    let deep = b"*1\r\n".repeat(1_000_000);
    assert!(too_deep(replies(&deep).unwrap_err()));
    let attrs = b"|1\r\n:1\r\n:1\r\n".repeat(100_000);
    assert!(too_deep(replies(&attrs).unwrap_err()));
    // Redis's own script replies nest ~8000 deep: the default takes them.
    let mut lua = b"*1\r\n".repeat(7_995);
    lua.extend_from_slice(b":1\r\n");
    assert_eq!(one_reply(&lua).wire().len(), lua.len());
    let mut dec = ReplyDecoder::new(Limits {
        max_depth: usize::MAX,
        ..Limits::default()
    });
    let mut buf = BytesMut::from(&deep[..]);
    assert!(dec.decode(&mut buf).unwrap().is_none());
    // The value model refuses to recurse that deep rather than overflowing.
    let mut wire = b"*1\r\n".repeat(10_000);
    wire.extend_from_slice(b":1\r\n");
    let mut buf = BytesMut::from(&wire[..]);
    let reply = dec.decode(&mut buf).unwrap().unwrap();
    assert!(reply.to_value().is_err());
}

#[test]
fn values() {
    let v = Value::Attribute(
        vec![(Value::Simple("ttl".into()), Value::Integer(3))],
        Box::new(Value::Map(vec![
            (Value::Bulk("k".into()), Value::Double("1.5".into())),
            (
                Value::Boolean(false),
                Value::Set(vec![Value::Null, Value::NullBulk]),
            ),
        ])),
    );
    let mut buf = BytesMut::new();
    v.encode(&mut buf);
    buf.extend_from_slice(b"+next\r\n");
    let back = Value::decode(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(back, v);
    assert_eq!(&buf[..], b"+next\r\n");
    let mut partial = BytesMut::from(&b"*2\r\n:1\r\n"[..]);
    assert_eq!(
        Value::decode(&mut partial, &Limits::default()).unwrap(),
        None
    );
    assert_eq!(partial.len(), 8);
    assert!(Value::NullArray.is_null());
    assert_eq!(
        &Value::Verbatim {
            format: *b"txt",
            text: "hi".into()
        }
        .to_bytes()[..],
        b"=6\r\ntxt:hi\r\n"
    );
    assert_eq!(
        &Value::Integer(i64::MIN).to_bytes()[..],
        b":-9223372036854775808\r\n"
    );
}

#[test]
fn error_replies() {
    assert_eq!(&error_reply("no route")[..], b"-ERR no route\r\n");
    assert_eq!(&error_reply("bad\r\nthing")[..], b"-ERR bad  thing\r\n");
    assert_eq!(&error_reply("")[..], b"-ERR\r\n");
    assert_eq!(
        &error_reply("NOAUTH Authentication required.")[..],
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(&error_reply("ERR already")[..], b"-ERR already\r\n");
    assert_eq!(&error_reply("A timeout")[..], b"-ERR A timeout\r\n");
    assert_eq!(&error_reply("UPSTREAM")[..], b"-ERR UPSTREAM\r\n");
    let reply = one_reply(&error_reply("x\ny"));
    assert_eq!(reply.kind(), ReplyKind::Error);
}

#[test]
fn sniffing() {
    let m = Verdict::Match(Protocol::Redis);
    assert_eq!(sniff(b""), Verdict::NeedMore);
    assert_eq!(sniff(b"*"), Verdict::NeedMore);
    assert_eq!(sniff(b"*3"), m);
    assert_eq!(sniff(b"*x"), m);
    assert_eq!(sniff(b"*-10\r\n"), m);
    assert_eq!(sniff(b"P"), Verdict::NeedMore);
    assert_eq!(sniff(b"PING"), Verdict::NeedMore);
    assert_eq!(sniff(b"PING\r"), Verdict::NeedMore);
    assert_eq!(sniff(b"PING\r\n"), m);
    assert_eq!(sniff(b"PING\n"), m);
    assert_eq!(sniff(b"get key\r\n"), m);
    assert_eq!(sniff(b"SET k \"a b\"\r\n*1\r\n"), m);
    assert_eq!(sniff(b"GET / HTTP/1.1"), Verdict::NeedMore);
    assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Verdict::Reject);
    assert_eq!(sniff(b"GET / HTTP/1.0\n"), Verdict::Reject);
    assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), Verdict::Reject);
    assert_eq!(sniff(b"OPTIONS rtsp://h/ RTSP/1.0\r\n"), Verdict::Reject);
    assert_eq!(sniff(b"OPTIONS * RTSP/2.0\r\n"), Verdict::Reject);
    assert_eq!(
        sniff(b"GET_PARAMETER rtsp://h/ RTSP/1.0\r\n"),
        Verdict::Reject
    );
    assert_eq!(sniff(b"G\x01"), Verdict::Reject);
    assert_eq!(sniff(b"GE7"), Verdict::Reject);
    assert_eq!(sniff(b" PING\r\n"), Verdict::Reject);
    assert_eq!(sniff(b"\r\n"), Verdict::Reject);
    assert_eq!(sniff(&[0x16, 0x03, 0x01]), Verdict::Reject);
    let long = [&b"GET "[..], &vec![b'a'; 70 * 1024]].concat();
    assert_eq!(sniff(&long), Verdict::Reject);
    assert_eq!(sniff(&long[..60 * 1024]), Verdict::NeedMore);
}
