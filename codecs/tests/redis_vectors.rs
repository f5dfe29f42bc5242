//! The Redis codec over the captured sessions in `shared/vectors/redis`:
//! every command and reply decodes, frame by frame, with nothing left over.
mod common;

use bytes::BytesMut;
use switchyard_codecs::redis::{
    Command, CommandDecoder, Limits, Reply, ReplyDecoder, ReplyKind, Value,
};
use switchyard_codecs::{Field, Metadata, WireHead};

fn read(name: &str) -> Vec<u8> {
    common::read("redis", name)
}

use common::decode_all;

fn commands(name: &str) -> Vec<Command> {
    let bytes = read(name);
    let (cmds, left) = decode_all(CommandDecoder::default(), &bytes, bytes.len());
    assert_eq!(left, 0, "{name}: bytes left over");
    for chunk in [1, 3, 7, 64] {
        let (again, left) = decode_all(CommandDecoder::default(), &bytes, chunk);
        assert_eq!(left, 0);
        assert_eq!(again, cmds, "{name}: chunks of {chunk} differ");
    }
    let wire: Vec<u8> = cmds.iter().flat_map(|c| c.wire().iter().copied()).collect();
    assert_eq!(
        wire, bytes,
        "{name}: wire bytes do not concatenate back to the file"
    );
    cmds
}

fn decode_replies(name: &str) -> Vec<Reply> {
    let bytes = read(name);
    let (replies, left) = decode_all(ReplyDecoder::default(), &bytes, bytes.len());
    assert_eq!(left, 0, "{name}: bytes left over");
    for chunk in [1, 3, 7, 64] {
        let (again, left) = decode_all(ReplyDecoder::default(), &bytes, chunk);
        assert_eq!(left, 0);
        assert_eq!(again, replies, "{name}: chunks of {chunk} differ");
    }
    let wire: Vec<u8> = replies
        .iter()
        .flat_map(|r| r.wire().iter().copied())
        .collect();
    assert_eq!(
        wire, bytes,
        "{name}: wire bytes do not concatenate back to the file"
    );
    // The value model decodes each reply and encodes it back to the same bytes.
    let mut all = BytesMut::from(&bytes[..]);
    for reply in &replies {
        let value = reply.to_value().unwrap();
        assert_eq!(value.to_bytes(), reply.wire(), "{name}: value round trip");
        let again = Value::decode(&mut all, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(again, value);
    }
    assert!(all.is_empty());
    replies
}

fn values(replies: &[Reply]) -> Vec<Value> {
    replies.iter().map(|r| r.to_value().unwrap()).collect()
}

fn names(cmds: &[Command]) -> Vec<String> {
    cmds.iter()
        .map(|c| String::from_utf8_lossy(c.name()).to_ascii_uppercase())
        .collect()
}

fn count(replies: &[Reply], kind: ReplyKind) -> usize {
    replies.iter().filter(|r| r.kind() == kind).count()
}

/// Every session: all files decode, and (outside pub/sub) each command got
/// exactly one reply that is not a push.
#[test]
fn every_session_decodes() {
    let mut sessions = 0;
    let mut entries: Vec<_> = std::fs::read_dir(common::vectors_dir("redis"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".c2s.bin"))
        .collect();
    entries.sort();
    for c2s in entries {
        let session = c2s.trim_end_matches(".c2s.bin");
        let cmds = commands(&c2s);
        let replies = decode_replies(&format!("{session}.s2c.bin"));
        assert!(!cmds.is_empty(), "{session}");
        if !session.starts_with("pubsub-subscribe") && !session.starts_with("pubsub-psubscribe") {
            assert_eq!(
                replies.len() - count(&replies, ReplyKind::Push),
                cmds.len(),
                "{session}: one reply per command"
            );
        }
        sessions += 1;
    }
    assert_eq!(sessions, 13);
}

#[test]
fn benchmark_pipelines() {
    let set = commands("benchmark-pipeline-set.c2s.bin");
    assert_eq!(set.len(), 20);
    for c in &set {
        assert!(c.is("SET") && !c.is_inline());
        assert_eq!(c.argc(), 3);
        assert_eq!(c.get(&Field::Key), Some(&b"key:__rand_int__"[..]));
        assert_eq!(c.arg(2).map(<[u8]>::len), Some(16));
    }
    let ok = decode_replies("benchmark-pipeline-set.s2c.bin");
    assert_eq!(ok.len(), 20);
    assert!(ok.iter().all(|r| &r.wire()[..] == b"+OK\r\n"));

    let get = commands("benchmark-pipeline-get.c2s.bin");
    assert_eq!(get.len(), 20);
    assert!(get.iter().all(|c| c.is("get") && c.keys().count() == 1));
    let bulks = values(&decode_replies("benchmark-pipeline-get.s2c.bin"));
    assert_eq!(bulks.len(), 20);
    assert!(
        bulks
            .iter()
            .all(|v| matches!(v, Value::Bulk(b) if b.len() == 16))
    );

    let lpush = commands("benchmark-pipeline-lpush.c2s.bin");
    assert_eq!(lpush.len(), 20);
    assert!(
        lpush
            .iter()
            .all(|c| c.is("LPUSH") && c.get(&Field::Key) == Some(b"mylist"))
    );
    let ints = values(&decode_replies("benchmark-pipeline-lpush.s2c.bin"));
    assert_eq!(ints, (1..=20).map(Value::Integer).collect::<Vec<_>>());

    let mset = commands("benchmark-pipeline-mset.c2s.bin");
    assert_eq!(mset.len(), 20);
    for c in &mset {
        assert!(c.is("MSET"));
        assert_eq!(c.argc(), 21);
        let keys: Vec<_> = c.keys().collect();
        assert_eq!(keys.len(), 10);
        assert!(keys.iter().all(|k| *k == b"key:__rand_int__"));
    }
    let ok = decode_replies("benchmark-pipeline-mset.s2c.bin");
    assert_eq!(ok.len(), 20);
}

#[test]
fn inline_sessions() {
    let ping = commands("nc-inline-ping.c2s.bin");
    assert_eq!(ping.len(), 1);
    assert!(ping[0].is_inline() && ping[0].is("ping") && ping[0].argc() == 1);
    assert_eq!(
        values(&decode_replies("nc-inline-ping.s2c.bin")),
        [Value::Simple("PONG".into())]
    );

    let cmds = commands("nc-inline.c2s.bin");
    assert_eq!(
        names(&cmds),
        ["PING", "SET", "GET", "EXISTS", "ECHO", "QUIT"]
    );
    assert!(cmds.iter().all(Command::is_inline));
    assert_eq!(cmds[1].arg(2), Some(&b"hello inline world"[..]));
    assert_eq!(cmds[1].get(&Field::Key), Some(&b"vec:inline"[..]));
    assert_eq!(
        cmds[3].keys().collect::<Vec<_>>(),
        [&b"vec:inline"[..], b"vec:none"]
    );
    assert_eq!(cmds[4].arg(1), Some(&b"quoted AB arg"[..]));
    let values = values(&decode_replies("nc-inline.s2c.bin"));
    assert_eq!(values.len(), 6);
    // The server unescaped the ECHO argument the same way.
    assert_eq!(
        values[4],
        Value::Bulk(bytes::Bytes::from_static(b"quoted AB arg"))
    );
    assert_eq!(
        values[2],
        Value::Bulk(bytes::Bytes::from_static(b"hello inline world"))
    );
}

#[test]
fn resp3_all_types() {
    let cmds = commands("nc-resp3-all-types.c2s.bin");
    assert_eq!(cmds.len(), 15);
    assert_eq!(cmds[0].argc(), 5);
    assert!(
        cmds.iter()
            .all(|c| c.is_inline() && c.keys().next().is_none())
    );
    let replies = decode_replies("nc-resp3-all-types.s2c.bin");
    assert_eq!(replies.len(), 16);
    assert_eq!(count(&replies, ReplyKind::Push), 1);
    assert_eq!(count(&replies, ReplyKind::Error), 0);
    let v = values(&replies);
    assert!(matches!(&v[0], Value::Map(pairs) if pairs.len() == 7));
    assert_eq!(v[2], Value::Integer(12345));
    assert_eq!(v[3], Value::Double("3.141".into()));
    assert!(matches!(&v[4], Value::BigNumber(n) if n.starts_with(b"1234567999")));
    assert_eq!(v[5], Value::Null);
    assert!(matches!(&v[7], Value::Set(items) if items.len() == 3));
    assert!(matches!(&v[8], Value::Map(pairs) if pairs[1].1 == Value::Boolean(true)));
    match &v[9] {
        Value::Attribute(attrs, value) => {
            assert_eq!(attrs.len(), 1);
            assert_eq!(attrs[0].0, Value::Bulk("key-popularity".into()));
            assert_eq!(
                **value,
                Value::Bulk("Some real reply following the attribute".into())
            );
        }
        other => panic!("expected an attribute, got {other:?}"),
    }
    assert_eq!(replies[9].kind(), ReplyKind::Value);
    assert!(matches!(&v[10], Value::Push(items) if items.len() == 2));
    assert!(matches!(&v[12], Value::Verbatim { format, text }
        if format == b"txt" && &text[..] == b"This is a verbatim\nstring"));
    assert_eq!(
        v[13..],
        [
            Value::Boolean(true),
            Value::Boolean(false),
            Value::Simple("OK".into())
        ]
    );
}

#[test]
fn resp3_cli_session_pushes() {
    let cmds = commands("cli-resp3-session.c2s.bin");
    assert!(cmds.iter().all(|c| !c.is_inline()));
    assert!(names(&cmds).contains(&"HELLO".to_string()));
    let replies = decode_replies("cli-resp3-session.s2c.bin");
    assert_eq!(count(&replies, ReplyKind::Push), 2);
    assert_eq!(count(&replies, ReplyKind::Error), 2);
    let pushes: Vec<_> = replies
        .iter()
        .filter(|r| r.kind() == ReplyKind::Push)
        .map(|r| r.to_value().unwrap())
        .collect();
    match &pushes[1] {
        Value::Push(items) => assert_eq!(items[0], Value::Bulk("invalidate".into())),
        other => panic!("{other:?}"),
    }
    assert_eq!(&replies.last().unwrap().wire()[..], b"+PONG\r\n");
}

#[test]
fn resp2_cli_session() {
    let cmds = commands("cli-resp2-session.c2s.bin");
    let set_bin = cmds
        .iter()
        .find(|c| c.is("SET") && c.arg(1) == Some(b"vec:bin"))
        .unwrap();
    assert_eq!(set_bin.arg(2), Some(&b"line1\r\nline2\0end"[..]));
    let mget = cmds.iter().find(|c| c.is("mget")).unwrap();
    assert_eq!(mget.keys().count(), 3);
    let replies = decode_replies("cli-resp2-session.s2c.bin");
    assert_eq!(count(&replies, ReplyKind::Error), 3);
    assert_eq!(count(&replies, ReplyKind::Push), 0);
    let v = values(&replies);
    assert!(v.contains(&Value::NullBulk));
    assert!(
        v.iter()
            .any(|v| matches!(v, Value::Array(items) if items.contains(&Value::NullBulk)))
    );
    assert!(matches!(v.last(), Some(Value::Integer(_))));
}

#[test]
fn pubsub_sessions() {
    let cmds = commands("pubsub-subscribe-resp2.c2s.bin");
    assert_eq!(names(&cmds), ["SUBSCRIBE"]);
    assert_eq!(cmds[0].keys().count(), 0);
    let replies = decode_replies("pubsub-subscribe-resp2.s2c.bin");
    // RESP2 pub/sub messages are plain arrays, not pushes.
    assert_eq!(replies.len(), 5);
    assert_eq!(count(&replies, ReplyKind::Value), 5);
    let v = values(&replies);
    assert!(v.iter().any(|m| matches!(m, Value::Array(items)
        if matches!(&items[2], Value::Bulk(b) if b.contains(&0) && b.contains(&0xff)))));

    let cmds = commands("pubsub-psubscribe-resp3.c2s.bin");
    assert_eq!(names(&cmds), ["HELLO", "PSUBSCRIBE"]);
    let replies = decode_replies("pubsub-psubscribe-resp3.s2c.bin");
    assert_eq!(replies.len(), 6);
    assert_eq!(count(&replies, ReplyKind::Push), 5);

    let cmds = commands("pubsub-publisher.c2s.bin");
    assert_eq!(
        names(&cmds),
        [
            "AUTH", "COMMAND", "COMMAND", "PUBLISH", "PUBLISH", "PUBLISH", "PUBSUB", "PUBLISH"
        ]
    );
    let last = cmds.last().unwrap();
    assert_eq!(last.arg(2), Some(&b"binary\0\xff"[..]));
    let replies = decode_replies("pubsub-publisher.s2c.bin");
    assert_eq!(count(&replies, ReplyKind::Error), 2);
}

#[test]
fn redispy_pipeline() {
    let cmds = commands("redispy-resp3-multi-pipeline.c2s.bin");
    let names = names(&cmds);
    assert_eq!(names[0], "HELLO");
    assert_eq!(names.iter().filter(|n| *n == "RPUSH").count(), 5);
    let multi = names.iter().position(|n| n == "MULTI").unwrap();
    assert_eq!(names[multi + 5], "EXEC");
    let replies = decode_replies("redispy-resp3-multi-pipeline.s2c.bin");
    assert_eq!(count(&replies, ReplyKind::Error), 4);
    assert_eq!(replies.last().unwrap().kind(), ReplyKind::Error);
    let v = values(&replies);
    assert!(v.iter().any(|v| matches!(v, Value::Array(items)
        if items.iter().any(|i| matches!(i, Value::Map(_))))));
    assert!(
        v.iter()
            .filter(|v| **v == Value::Simple("QUEUED".into()))
            .count()
            == 4
    );
}
