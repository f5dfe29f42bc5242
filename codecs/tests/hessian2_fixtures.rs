//! The Hessian 2 reader over the Java-made fixtures in `shared/vectors/hessian2`
//! (from hessian.js' test suite): every file decodes to the value in the
//! vectors README, and `skip` consumes each file exactly.
mod common;

use switchyard_codecs::hessian2::{self, Limits, Value};

fn read(name: &str) -> Vec<u8> {
    common::read("hessian2", name)
}

/// Decode one fixture, checking that both `read_value` and `skip` consume it exactly.
fn decode(name: &str) -> Value {
    let bytes = read(name);
    let (value, used) =
        hessian2::read_value(&bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(used, bytes.len(), "{name}: read_value left bytes");
    assert_eq!(
        hessian2::skip(&bytes, &Limits::default()),
        Ok(bytes.len()),
        "{name}: skip"
    );
    value
}

fn s(v: &str) -> Value {
    Value::string(v)
}

fn object(class: &str, fields: &[(&str, Value)]) -> Value {
    Value::Object {
        class: class.into(),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

fn list(items: Vec<Value>) -> Value {
    Value::List {
        type_name: None,
        items,
    }
}

fn typed_list(t: &str, items: Vec<Value>) -> Value {
    Value::List {
        type_name: Some(t.into()),
        items,
    }
}

fn map(entries: Vec<(Value, Value)>) -> Value {
    Value::Map {
        type_name: None,
        entries,
    }
}

/// Every `.bin` under the fixtures directory, relative to it.
fn all_fixtures() -> Vec<String> {
    let mut out = Vec::new();
    let root = common::vectors_dir("hessian2");
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "bin") {
                let rel = path.strip_prefix(&root).unwrap();
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn all_sixty_fixtures_decode_and_skip_exactly() {
    let names = all_fixtures();
    assert_eq!(names.len(), 60, "{names:?}");
    for name in &names {
        decode(name);
        // Every proper prefix is an error ("truncated" inside a bounded body).
        let bytes = read(name);
        for n in [0, bytes.len() / 2, bytes.len() - 1] {
            if n < bytes.len() {
                assert!(
                    hessian2::skip(&bytes[..n], &Limits::default()).is_err(),
                    "{name}: prefix of {n} bytes skipped"
                );
            }
        }
    }
}

#[test]
fn numbers() {
    for (name, n) in [
        ("number/-16.bin", -16),
        ("number/47.bin", 47),
        ("number/2047.bin", 2047),
        ("number/-2048.bin", -2048),
        ("number/262143.bin", 262143),
        ("number/262144.bin", 262144),
        ("number/-262145.bin", -262145),
    ] {
        assert_eq!(decode(name), Value::Int(n), "{name}");
    }
    for (name, n) in [
        ("long/0.bin", 0i64),
        ("long/-8.bin", -8),
        ("long/-9.bin", -9),
        ("long/15.bin", 15),
        ("long/16.bin", 16),
        ("long/-2048.bin", -2048),
        ("long/2047.bin", 2047),
        ("long/2048.bin", 2048),
        ("long/-262144.bin", -262144),
        ("long/2147483647.bin", 2147483647),
        ("long/2147483648.bin", 2147483648),
    ] {
        assert_eq!(decode(name), Value::Long(n), "{name}");
    }
    for (name, d) in [
        ("double/0.bin", 0.0),
        ("double/1.bin", 1.0),
        ("double/10.bin", 10.0),
        ("double/-128.bin", -128.0),
        ("double/-32768.bin", -32768.0),
        ("double/10.1.bin", 10.1),
        ("double/10.123.bin", 10.123),
        ("double/32768.bin", 32768.0),
        ("double/2147483648.bin", 2147483648.0),
        ("double/-2147483649.bin", -2147483649.0),
    ] {
        assert_eq!(decode(name), Value::Double(d), "{name}");
    }
}

#[test]
fn dates() {
    for (name, ms) in [
        ("date/894621060000.bin", 894621060000i64),
        ("date/894621091000.bin", 894621091000),
        ("date/128849018880000.bin", 128849018880000),
        ("date/-128849018940000.bin", -128849018940000),
    ] {
        assert_eq!(decode(name), Value::Date(ms), "{name}");
    }
}

#[test]
fn strings() {
    assert_eq!(decode("string/empty.bin"), s(""));
    assert_eq!(decode("string/foo.bin"), s("foo"));
    assert_eq!(decode("string/chinese.bin"), s("中文 Chinese"));
    assert_eq!(
        decode("string/0123456789012345678901234567890.bin"),
        s("0123456789012345678901234567890")
    );
    assert_eq!(
        decode("string/01234567890123456789012345678901.bin"),
        s("01234567890123456789012345678901")
    );
    assert_eq!(
        decode("string/large_string_32768.bin"),
        Value::String("A".repeat(32768))
    );
    // read_string borrows single-chunk strings.
    let bytes = read("string/chinese.bin");
    let (text, used) = hessian2::read_string(&bytes).unwrap();
    assert!(matches!(text, std::borrow::Cow::Borrowed(_)));
    assert_eq!((&*text, used), ("中文 Chinese".as_bytes(), bytes.len()));
    let bytes = read("string/large_string_32768.bin");
    let (text, used) = hessian2::read_string(&bytes).unwrap();
    assert_eq!((text.len(), used), (32768, bytes.len()));
}

#[test]
fn binaries() {
    for n in [15usize, 16, 32768, 32769] {
        let name = format!("bytes/{n}.bin");
        assert_eq!(decode(&name), Value::Binary(vec![0x41; n]), "{name}");
    }
}

#[test]
fn lists() {
    assert_eq!(
        decode("list/[int.bin"),
        typed_list("[int", vec![Value::Int(1), Value::Int(2), Value::Int(3)])
    );
    assert_eq!(
        decode("list/[string.bin"),
        typed_list("[string", vec![s("1"), s("@"), s("3")])
    );
    assert_eq!(
        decode("list/typed_list.bin"),
        typed_list("hessian.demo.SomeArrayList", vec![s("ok"), s("some list")])
    );
    assert_eq!(
        decode("list/untyped_list.bin"),
        list(vec![Value::Int(1), Value::Int(2), s("foo")])
    );
    assert_eq!(decode("list/untyped_[].bin"), list(vec![]));
    assert_eq!(
        decode("list/untyped_list_8.bin"),
        list((1..=8).map(|i| s(&i.to_string())).collect())
    );
}

#[test]
fn maps_and_objects() {
    let car = |model: &str| {
        object(
            "hessian.demo.Car",
            &[
                ("a", s("a")),
                ("c", s("c")),
                ("b", s("b")),
                ("model", s(model)),
                ("color", s("aquamarine")),
                ("mileage", Value::Int(65536)),
            ],
        )
    };
    assert_eq!(decode("map/car.bin"), car("Beetle"));
    assert_eq!(
        decode("map/car_list.bin"),
        list(vec![car("model 1"), car("model 2"), car("model 3")])
    );
    assert_eq!(
        decode("map/foo_bar.bin"),
        map(vec![
            (s("123"), Value::Int(456)),
            (s("foo"), s("bar")),
            (s("zero"), Value::Int(0)),
            (s("中文key"), s("中文哈哈value")),
        ])
    );
    assert_eq!(decode("map/foo_empty.bin"), map(vec![(s("foo"), s(""))]));
    assert_eq!(
        decode("map/generic.bin"),
        map(vec![
            (Value::Long(123), Value::Int(123456)),
            (Value::Long(123456), Value::Int(123)),
        ])
    );
    assert_eq!(
        decode("map/hashtable.bin"),
        Value::Map {
            type_name: Some("java.util.Hashtable".into()),
            entries: vec![(s("中文key"), s("中文哈哈value")), (s("foo"), s("bar"))],
        }
    );
    assert_eq!(
        decode("object/AtomicLong0.bin"),
        object(
            "java.util.concurrent.atomic.AtomicLong",
            &[("value", Value::Long(0))]
        )
    );
    // {"ctx":{"id":101}}; the inner object's outer-instance field is a back-reference.
    assert_eq!(
        decode("object/ConnectionRequest.bin"),
        object(
            "hessian.ConnectionRequest",
            &[(
                "ctx",
                object(
                    "hessian.ConnectionRequest$RequestContext",
                    &[("id", Value::Int(101)), ("this$0", Value::Ref(0))]
                )
            )]
        )
    );
}

#[test]
fn enums() {
    let color = |name: &str| object("hessian.Main$Color", &[("name", s(name))]);
    assert_eq!(decode("enum/blue.bin"), color("BLUE"));
    assert_eq!(
        decode("enum/lists.bin"),
        list(vec![color("BLUE"), color("RED"), color("GREEN")])
    );
}

#[test]
fn exceptions() {
    let message = s("this is a java IOException instance");
    let io = decode("exception/IOException.bin");
    let Value::Object { class, .. } = &io else {
        panic!("not an object: {io:?}")
    };
    assert_eq!(class, "java.io.IOException");
    assert_eq!(io.get("detailMessage"), Some(&message));

    let undeclared = decode("exception/UndeclaredThrowableException.bin");
    let Value::Object { class, .. } = &undeclared else {
        panic!("not an object: {undeclared:?}")
    };
    assert_eq!(class, "java.lang.reflect.UndeclaredThrowableException");
    let cause = undeclared.get("undeclaredThrowable").unwrap();
    assert!(matches!(cause, Value::Object { class, .. } if class == "java.io.IOException"));
    assert_eq!(cause.get("detailMessage"), Some(&message));
    let Some(Value::List { type_name, items }) = cause.get("stackTrace") else {
        panic!("no stack trace: {cause:?}")
    };
    assert_eq!(type_name.as_deref(), Some("[java.lang.StackTraceElement"));
    assert_eq!(items[0].get("methodName"), Some(&s("main")));
}

#[test]
fn values_re_encode_to_equal_values() {
    for name in all_fixtures() {
        let value = decode(&name);
        let mut bytes = Vec::new();
        value.encode(&mut bytes);
        let (back, used) = hessian2::read_value(&bytes, &Limits::default()).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, value, "{name}");
    }
}
