//! Unit tests of the Hessian 2 reader and writer on literal bytes.
use super::*;

fn value(bytes: &[u8]) -> Value {
    let (v, used) = read_value(bytes, &Limits::default()).unwrap();
    assert_eq!(used, bytes.len(), "read_value left bytes of {bytes:02x?}");
    assert_eq!(
        skip(bytes, &Limits::default()),
        Ok(bytes.len()),
        "skip of {bytes:02x?}"
    );
    v
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    v.encode(&mut out);
    out
}

fn is_truncated(e: &CodecError) -> bool {
    *e == CodecError::malformed("hessian2", "truncated")
}

fn too_large(e: &CodecError) -> bool {
    matches!(e, CodecError::FrameTooLarge { .. })
}

#[test]
fn ints() {
    for (bytes, n) in [
        (&[0x80][..], -16),
        (&[0x90], 0),
        (&[0xbf], 47),
        (&[0xc0, 0x00], -2048),
        (&[0xc8, 0x30], 48),
        (&[0xcf, 0xff], 2047),
        (&[0xd0, 0x00, 0x00], -262144),
        (&[0xd7, 0xff, 0xff], 262143),
        (&[b'I', 0x00, 0x04, 0x00, 0x00], 262144),
        (&[b'I', 0xff, 0xfb, 0xff, 0xff], -262145),
        (&[b'I', 0x80, 0x00, 0x00, 0x00], i32::MIN),
    ] {
        assert_eq!(value(bytes), Value::Int(n));
        assert_eq!(encoded(&Value::Int(n)), bytes, "{n}");
    }
}

#[test]
fn longs() {
    for (bytes, n) in [
        (&[0xd8][..], -8i64),
        (&[0xe0], 0),
        (&[0xef], 15),
        (&[0xf7, 0xf7], -9),
        (&[0xf8, 0x10], 16),
        (&[0xf0, 0x00], -2048),
        (&[0xff, 0xff], 2047),
        (&[0x3c, 0x08, 0x00], 2048),
        (&[0x38, 0x00, 0x00], -262144),
        (&[b'Y', 0x7f, 0xff, 0xff, 0xff], 2147483647),
        (&[b'L', 0, 0, 0, 0, 0x80, 0, 0, 0], 2147483648),
        (&[b'L', 0x80, 0, 0, 0, 0, 0, 0, 0], i64::MIN),
    ] {
        assert_eq!(value(bytes), Value::Long(n));
        assert_eq!(encoded(&Value::Long(n)), bytes, "{n}");
    }
}

#[test]
fn doubles() {
    for (bytes, d) in [
        (&[0x5b][..], 0.0),
        (&[0x5c], 1.0),
        (&[0x5d, 0x0a], 10.0),
        (&[0x5d, 0x80], -128.0),
        (&[0x5e, 0x80, 0x00], -32768.0),
        (&[0x5f, 0x00, 0x00, 0x27, 0x74], 10.1),
        (&[0x5f, 0x00, 0x00, 0x27, 0x8b], 10.123),
        (&[0x5f, 0x01, 0xf4, 0x00, 0x00], 32768.0),
        (&[b'D', 0x41, 0xe0, 0, 0, 0, 0, 0, 0], 2147483648.0),
        (&[b'D', 0xc1, 0xe0, 0, 0, 0, 0x20, 0, 0], -2147483649.0),
    ] {
        assert_eq!(value(bytes), Value::Double(d));
        assert_eq!(encoded(&Value::Double(d)), bytes, "{d}");
    }
    // -0.0 keeps its sign: not the 0x5b short form.
    let neg_zero = encoded(&Value::Double(-0.0));
    let Value::Double(back) = value(&neg_zero) else {
        panic!("not a double")
    };
    assert!(back == 0.0 && back.is_sign_negative());
}

#[test]
fn dates_and_scalars() {
    assert_eq!(
        value(&[0x4b, 0x00, 0xe3, 0x83, 0x8f]),
        Value::Date(894621060000)
    );
    assert_eq!(
        value(&[0x4a, 0x00, 0x00, 0x00, 0xd0, 0x4b, 0x92, 0x84, 0xb8]),
        Value::Date(894621091000)
    );
    assert_eq!(
        encoded(&Value::Date(894621060000)),
        [0x4b, 0x00, 0xe3, 0x83, 0x8f]
    );
    assert_eq!(value(b"N"), Value::Null);
    assert_eq!(value(b"T"), Value::Bool(true));
    assert_eq!(value(b"F"), Value::Bool(false));
}

#[test]
fn strings() {
    assert_eq!(value(&[0x00]), Value::string(""));
    assert_eq!(value(b"\x03foo"), Value::string("foo"));
    // "中文 Chinese": 10 UTF-16 units in 14 bytes.
    let chinese = b"\x0a\xe4\xb8\xad\xe6\x96\x87 Chinese";
    assert_eq!(value(chinese), Value::string("中文 Chinese"));
    let (s, used) = read_string(chinese).unwrap();
    assert!(matches!(s, Cow::Borrowed(_)));
    assert_eq!((&*s, used), ("中文 Chinese".as_bytes(), chinese.len()));
    // Two-byte compact length (0x30-0x33).
    let mut two = vec![0x30, 0x20];
    two.extend_from_slice(&[b'x'; 32]);
    assert_eq!(value(&two), Value::String("x".repeat(32)));
    // 'S' with a 16-bit length.
    assert_eq!(value(b"S\x00\x02ab"), Value::string("ab"));
    // Chunked: 'R' chunks, then a compact final chunk.
    let chunked = b"R\x00\x02abR\x00\x01c\x02de";
    let (s, used) = read_string(chunked).unwrap();
    assert!(matches!(s, Cow::Owned(_)));
    assert_eq!((&*s, used), (&b"abcde"[..], chunked.len()));
    assert_eq!(value(chunked), Value::string("abcde"));
    // A 4-byte UTF-8 character counts as two units; CESU-8 halves as one each.
    assert_eq!(value(b"\x02\xf0\x9f\x98\x80"), Value::string("😀"));
    assert_eq!(value(b"\x02\xed\xa0\xbd\xed\xb8\x80"), Value::string("😀"));
    assert_eq!(value(b"\x01\xed\xa0\xbd"), Value::string("\u{fffd}"));
    assert!(read_string(b"\x01\xf0\x9f\x98\x80").is_err());
    // Broken UTF-8.
    assert!(read_string(b"\x01\xff").is_err());
    assert!(read_string(b"\x01\xc3\x41").is_err());
    // Not a string.
    assert!(read_string(b"N").is_err());
    assert!(read_string(&[0x90]).is_err());
}

#[test]
fn long_strings_round_trip() {
    for s in [
        "x".repeat(31),
        "x".repeat(32),
        "x".repeat(1023),
        "x".repeat(65535),
        "x".repeat(65536),
        "é".repeat(70000),
        "😀".repeat(40000),
    ] {
        let bytes = encoded(&Value::String(s.clone()));
        assert_eq!(value(&bytes), Value::String(s));
    }
}

#[test]
fn binaries() {
    assert_eq!(value(&[0x20]), Value::Binary(vec![]));
    assert_eq!(value(b"\x23abc"), Value::Binary(b"abc".to_vec()));
    assert_eq!(
        value(b"\x34\x10AAAAAAAAAAAAAAAA"),
        Value::Binary(vec![b'A'; 16])
    );
    assert_eq!(
        value(b"A\x00\x01xB\x00\x01y"),
        Value::Binary(b"xy".to_vec())
    );
    assert_eq!(value(b"A\x00\x01x\x21y"), Value::Binary(b"xy".to_vec()));
    for n in [0, 15, 16, 1023, 1024, 32768, 32769, 70000] {
        let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let bytes = encoded(&Value::Binary(data.clone()));
        assert_eq!(value(&bytes), Value::Binary(data));
    }
}

#[test]
fn lists() {
    let ints = |v: &[i32]| v.iter().map(|&i| Value::Int(i)).collect::<Vec<_>>();
    assert_eq!(
        value(b"\x73\x04[int\x91\x92\x93"),
        Value::List {
            type_name: Some("[int".into()),
            items: ints(&[1, 2, 3])
        }
    );
    assert_eq!(
        value(b"\x7b\x91\x92\x03foo"),
        Value::List {
            type_name: None,
            items: vec![Value::Int(1), Value::Int(2), Value::string("foo")]
        }
    );
    assert_eq!(
        value(b"\x78"),
        Value::List {
            type_name: None,
            items: vec![]
        }
    );
    // Variable length, untyped and typed; fixed 'V' and 'X'.
    assert_eq!(
        value(b"W\x91\x92Z"),
        Value::List {
            type_name: None,
            items: ints(&[1, 2])
        }
    );
    assert_eq!(
        value(b"U\x01t\x91Z"),
        Value::List {
            type_name: Some("t".into()),
            items: ints(&[1])
        }
    );
    assert_eq!(
        value(b"V\x01t\x92\x91\x92"),
        Value::List {
            type_name: Some("t".into()),
            items: ints(&[1, 2])
        }
    );
    assert_eq!(
        value(b"X\x98\x91\x91\x91\x91\x91\x91\x91\x91"),
        Value::List {
            type_name: None,
            items: ints(&[1; 8])
        }
    );
    // A type reference to the first type of the message.
    assert_eq!(
        value(b"\x72\x01t\x71\x01u\x91\x71\x90\x92"),
        Value::List {
            type_name: Some("t".into()),
            items: vec![
                Value::List {
                    type_name: Some("u".into()),
                    items: ints(&[1])
                },
                Value::List {
                    type_name: Some("t".into()),
                    items: ints(&[2])
                },
            ]
        }
    );
    // A declared length longer than the input fails at once.
    assert!(is_truncated(
        &skip(b"X\xd7\xff\xff", &Limits::default()).unwrap_err()
    ));
    assert!(skip(b"X\x8f", &Limits::default()).is_err());
}

#[test]
fn maps() {
    let v = value(b"H\x03foo\x03barZ");
    assert_eq!(v.get("foo"), Some(&Value::string("bar")));
    // Non-string keys.
    assert_eq!(
        value(b"H\xf8\x7b\xd5\xe2\x40\x3d\xe2\x40\xc8\x7bZ"),
        Value::Map {
            type_name: None,
            entries: vec![
                (Value::Long(123), Value::Int(123456)),
                (Value::Long(123456), Value::Int(123)),
            ]
        }
    );
    let typed = value(b"M\x13java.util.Hashtable\x03foo\x03barZ");
    assert!(matches!(&typed, Value::Map { type_name: Some(t), .. } if t == "java.util.Hashtable"));
    assert!(skip(b"H\x03foo", &Limits::default()).is_err());
    assert!(skip(b"H\x03fooZ", &Limits::default()).is_err());
}

#[test]
fn string_maps() {
    let bytes = b"H\x01a\x01b\x01c\x91\x90\x01d\x01e\x01fZ";
    let mut r = Reader::new(bytes, Limits::default());
    let map = r.read_string_map().unwrap();
    assert!(r.is_at_end());
    let map: Vec<(&[u8], &[u8])> = map.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(map, [(&b"a"[..], &b"b"[..]), (b"e", b"f")]);
    let mut r = Reader::new(b"M\x01t\x01k\x01vZ", Limits::default());
    assert_eq!(r.read_string_map().unwrap().len(), 1);
    let mut r = Reader::new(b"N", Limits::default());
    assert!(r.read_string_map().unwrap().is_empty());
    let mut r = Reader::new(b"\x91", Limits::default());
    assert!(r.read_string_map().is_err());
}

#[test]
fn objects() {
    // Class definition, instance by compact ref, instance by 'O', and a 'Q' ref.
    let bytes = b"C\x01P\x92\x01x\x01y\x60\x91\x92";
    let v = value(bytes);
    assert_eq!(
        v,
        Value::Object {
            class: "P".into(),
            fields: vec![("x".into(), Value::Int(1)), ("y".into(), Value::Int(2))]
        }
    );
    assert_eq!(encoded(&v), bytes);
    let mut r = Reader::new(b"C\x01P\x91\x01x\x60\x91O\x90\x92Q\x90", Limits::default());
    for _ in 0..2 {
        r.skip_value().unwrap();
    }
    assert_eq!(r.read_value().unwrap(), Value::Ref(0));
    assert!(r.is_at_end());
    // The class table is per message: a second reader does not know class 0.
    assert!(skip(b"\x60\x91", &Limits::default()).is_err());
    assert!(skip(b"O\x91\x91", &Limits::default()).is_err());
    // Class definition without an instance.
    assert!(is_truncated(
        &skip(b"C\x01P\x90", &Limits::default()).unwrap_err()
    ));
    // More than 16 classes use 'O' with an int.
    let many = Value::List {
        type_name: None,
        items: (0..20)
            .map(|i| Value::Object {
                class: format!("C{i}"),
                fields: vec![("f".into(), Value::Int(i))],
            })
            .collect(),
    };
    assert_eq!(value(&encoded(&many)), many);
}

#[test]
fn truncation_is_an_error() {
    let samples: &[&[u8]] = &[
        b"\x03foo",
        b"S\x00\x03foo",
        b"R\x00\x01aS\x00\x01b",
        b"\x34\x10AAAAAAAAAAAAAAAA",
        b"I\x00\x00\x00\x01",
        b"L\x00\x00\x00\x00\x00\x00\x00\x01",
        b"D\x00\x00\x00\x00\x00\x00\x00\x01",
        b"\x4a\x00\x00\x00\x00\x00\x00\x00\x01",
        b"\x4b\x00\x00\x00\x01",
        b"\xd0\x00\x00",
        b"\x38\x00\x00",
        b"\xc8\x01",
        b"H\x01a\x01bZ",
        b"W\x91Z",
        b"C\x01P\x91\x01x\x60\x91",
        b"Q\x90",
        b"\x73\x04[int\x91\x92\x93",
    ];
    for bytes in samples {
        assert_eq!(skip(bytes, &Limits::default()), Ok(bytes.len()));
        for n in 0..bytes.len() {
            let e = skip(&bytes[..n], &Limits::default()).unwrap_err();
            assert!(is_truncated(&e), "{:02x?}: {e}", &bytes[..n]);
            assert!(read_value(&bytes[..n], &Limits::default()).is_err());
        }
    }
}

#[test]
fn reserved_and_stray_bytes() {
    for b in [0x40, 0x45, 0x47, 0x50, b'Z'] {
        assert!(matches!(
            skip(&[b], &Limits::default()),
            Err(CodecError::Malformed { .. })
        ));
    }
}

#[test]
fn depth_limit() {
    let limits = Limits {
        max_depth: 4,
        max_elements: 16,
    };
    let nested = |n: usize| {
        let mut v = vec![b'W'; n];
        v.extend(std::iter::repeat_n(b'Z', n));
        v
    };
    assert_eq!(skip(&nested(4), &limits), Ok(8));
    assert!(too_large(&skip(&nested(5), &limits).unwrap_err()));
    assert!(too_large(&read_value(&nested(5), &limits).unwrap_err()));
    // The default limit stops a deep input long before the stack would.
    let deep = nested(100_000);
    assert!(too_large(&skip(&deep, &Limits::default()).unwrap_err()));
    assert!(too_large(
        &read_value(&deep, &Limits::default()).unwrap_err()
    ));
}

#[test]
fn element_limit() {
    let limits = Limits {
        max_depth: 4,
        max_elements: 3,
    };
    assert!(skip(b"W\x91\x91\x91Z", &limits).is_ok());
    assert!(too_large(
        &skip(b"W\x91\x91\x91\x91Z", &limits).unwrap_err()
    ));
    assert!(too_large(
        &skip(b"X\x94\x91\x91\x91\x91", &limits).unwrap_err()
    ));
    assert!(too_large(
        &skip(b"H\x91\x91\x91\x91\x91\x91\x91\x91Z", &limits).unwrap_err()
    ));
    let mut r = Reader::new(b"H\x91\x91\x91\x91\x91\x91\x91\x91Z", limits);
    assert!(too_large(&r.read_string_map().unwrap_err()));
}

#[test]
fn truncate_utf16_keeps_characters_whole() {
    use super::write::truncate_utf16;
    assert_eq!(truncate_utf16("abc", 2), "ab");
    assert_eq!(truncate_utf16("abc", 5), "abc");
    assert_eq!(truncate_utf16("a😀b", 2), "a");
    assert_eq!(truncate_utf16("a😀b", 3), "a😀");
    assert_eq!(truncate_utf16("éé", 1), "é");
}
