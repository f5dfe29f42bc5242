//! Property tests: decoders never panic, chunking does not change the frames,
//! and values survive encode → decode.
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn small_limits() -> Limits {
    Limits {
        max_bulk: 64,
        max_elements: 8,
        max_inline: 32,
        max_depth: 4,
    }
}

/// Decode everything that decodes; stop at the first error.
fn drain<D: Decoder>(dec: &mut D, buf: &mut BytesMut) -> (Vec<D::Item>, bool) {
    let mut out = Vec::new();
    loop {
        match dec.decode(buf) {
            Ok(Some(item)) => out.push(item),
            Ok(None) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// Feed `input` in pieces cut at `cuts` (sorted, deduplicated by the caller's use).
fn chunked<D: Decoder>(mut dec: D, input: &[u8], cuts: &[usize]) -> (Vec<D::Item>, bool, usize) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&input[from..to]);
        from = to;
        let (items, ok) = drain(&mut dec, &mut buf);
        out.extend(items);
        if !ok {
            return (out, false, buf.len());
        }
    }
    (out, true, buf.len())
}

/// RESP-looking noise: reaches deeper parser states than uniform bytes.
fn resp_noise() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"0".to_vec()),
        Just(b"1".to_vec()),
        Just(b"2".to_vec()),
        Just(b"3".to_vec()),
        Just(b"99999999999999999999".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b"\\x4".to_vec()),
        Just(b" ".to_vec()),
        Just(b"GET".to_vec()),
        prop::sample::select(b"+-:$*_,#!=(%~|>?".to_vec()).prop_map(|b| vec![b]),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(token, 0..48).prop_map(|t| t.concat())
}

fn line_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..max,
    )
    .prop_map(Bytes::from)
}

fn blob_bytes() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        line_bytes(12).prop_map(Value::Simple),
        line_bytes(12).prop_map(Value::Error),
        any::<i64>().prop_map(Value::Integer),
        blob_bytes().prop_map(Value::Bulk),
        Just(Value::Null),
        Just(Value::NullBulk),
        Just(Value::NullArray),
        any::<bool>().prop_map(Value::Boolean),
        prop_oneof![
            any::<f64>().prop_map(|f| Bytes::from(f.to_string())),
            Just(Bytes::from_static(b"inf")),
            Just(Bytes::from_static(b"-inf")),
        ]
        .prop_map(Value::Double),
        "-?[0-9]{1,40}".prop_map(|s| Value::BigNumber(Bytes::from(s))),
        blob_bytes().prop_map(Value::BlobError),
        (any::<[u8; 3]>(), blob_bytes())
            .prop_map(|(format, text)| Value::Verbatim { format, text }),
    ];
    leaf.prop_recursive(5, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Set),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Push),
            prop::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Value::Map),
            (
                prop::collection::vec((inner.clone(), inner.clone()), 0..3),
                inner
            )
                .prop_map(|(attrs, v)| Value::Attribute(attrs, Box::new(v))),
        ]
    })
}

/// A client stream: RESP arrays and inline commands.
fn command_stream() -> impl Strategy<Value = Vec<u8>> {
    let array = prop::collection::vec(blob_bytes(), 1..6)
        .prop_map(|args| Command::from_args(args).wire().to_vec());
    let inline = prop::collection::vec("[A-Za-z0-9:]{1,8}|\"([a-z ]|\\\\x41){0,6}\"", 1..5)
        .prop_map(|words| format!("{}\r\n", words.join(" ")).into_bytes());
    let blank = Just(b"\r\n".to_vec());
    prop::collection::vec(prop_oneof![4 => array, 2 => inline, 1 => blank], 0..8)
        .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for limits in [Limits::default(), small_limits()] {
            drain(&mut CommandDecoder::new(limits), &mut BytesMut::from(&bytes[..]));
            drain(&mut ReplyDecoder::new(limits), &mut BytesMut::from(&bytes[..]));
            let _ = Value::decode(&mut BytesMut::from(&bytes[..]), &limits);
        }
        let _ = sniff(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_resp_noise(bytes in resp_noise(), cuts in prop::collection::vec(any::<usize>(), 0..4)) {
        for limits in [Limits::default(), small_limits()] {
            let (cmds, ok, _) = chunked(CommandDecoder::new(limits), &bytes, &cuts);
            for c in &cmds {
                let _ = c.keys().count();
                let _ = c.get(&Field::Key);
            }
            let (whole, ok_whole, _) = chunked(CommandDecoder::new(limits), &bytes, &[]);
            if ok && ok_whole {
                prop_assert_eq!(cmds, whole);
            }
            let (replies, ok, _) = chunked(ReplyDecoder::new(limits), &bytes, &cuts);
            for r in &replies {
                prop_assert!(r.to_value().is_ok());
            }
            let (whole, ok_whole, _) = chunked(ReplyDecoder::new(limits), &bytes, &[]);
            if ok && ok_whole {
                prop_assert_eq!(replies, whole);
            }
        }
        let _ = sniff(&bytes);
    }

    #[test]
    fn commands_same_in_any_chunks(stream in command_stream(), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let (whole, ok, left) = chunked(CommandDecoder::default(), &stream, &[]);
        prop_assert!(ok);
        prop_assert_eq!(left, 0);
        let (pieces, ok, left) = chunked(CommandDecoder::default(), &stream, &cuts);
        prop_assert!(ok);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(&pieces, &whole);
        // Every byte is in some command's wire, except skipped blank lines.
        let wire: usize = whole.iter().map(|c| c.wire().len()).sum();
        prop_assert!(wire <= stream.len());
    }

    #[test]
    fn replies_same_in_any_chunks(values in prop::collection::vec(value(), 0..6), cuts in prop::collection::vec(any::<usize>(), 0..6)) {
        let mut stream = BytesMut::new();
        for v in &values {
            v.encode(&mut stream);
        }
        let (whole, ok, left) = chunked(ReplyDecoder::default(), &stream, &[]);
        prop_assert!(ok);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(whole.len(), values.len());
        let (pieces, ok, left) = chunked(ReplyDecoder::default(), &stream, &cuts);
        prop_assert!(ok);
        prop_assert_eq!(left, 0);
        prop_assert_eq!(&pieces, &whole);
        for (reply, v) in whole.iter().zip(&values) {
            prop_assert_eq!(&reply.to_value().unwrap(), v);
        }
    }

    #[test]
    fn value_round_trip(v in value()) {
        let mut buf = BytesMut::new();
        v.encode(&mut buf);
        let wire = buf.clone().freeze();
        let back = Value::decode(&mut buf, &Limits::default()).unwrap();
        prop_assert_eq!(back.as_ref(), Some(&v));
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&v.to_bytes(), &wire);
        // Any strict prefix is incomplete, not an error.
        for n in 0..wire.len() {
            let mut prefix = BytesMut::from(&wire[..n]);
            prop_assert_eq!(Value::decode(&mut prefix, &Limits::default()).unwrap(), None);
        }
    }

    #[test]
    fn built_commands_round_trip(args in prop::collection::vec(blob_bytes(), 1..8)) {
        let cmd = Command::from_args(&args);
        let mut buf = BytesMut::from(&cmd.wire()[..]);
        let back = CommandDecoder::default().decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(&back, &cmd);
        let got: Vec<&[u8]> = back.args().collect();
        let want: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        prop_assert_eq!(got, want);
    }
}
