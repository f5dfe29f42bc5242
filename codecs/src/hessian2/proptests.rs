//! Property tests: the reader never panics, `skip` agrees with `read_value`,
//! and values survive encode → decode.
use proptest::prelude::*;

use super::*;

fn small_limits() -> Limits {
    Limits {
        max_depth: 6,
        max_elements: 32,
    }
}

/// Finite doubles of every encoded form (NaN does not compare equal).
fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        (-128i32..128).prop_map(f64::from),
        (-40000i32..40000).prop_map(f64::from),
        (-3_000_000i32..3_000_000).prop_map(|m| f64::from(m) * 0.001),
        any::<f64>().prop_filter("finite", |d| d.is_finite()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            -20i32..50,
            -3000i32..3000,
            -300_000i32..300_000,
            any::<i32>()
        ]
        .prop_map(Value::Int),
        prop_oneof![
            -10i64..20,
            -3000i64..3000,
            -300_000i64..300_000,
            any::<i32>().prop_map(i64::from),
            any::<i64>()
        ]
        .prop_map(Value::Long),
        double().prop_map(Value::Double),
        prop_oneof![
            any::<i64>(),
            any::<i32>().prop_map(|m| i64::from(m) * 60_000)
        ]
        .prop_map(Value::Date),
        ".{0,40}".prop_map(Value::String),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(Value::Binary),
        any::<u16>().prop_map(|n| Value::Ref(u32::from(n))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 10, |inner| {
        let name = prop::option::of("[a-zA-Z.\\[]{1,12}");
        prop_oneof![
            (name.clone(), prop::collection::vec(inner.clone(), 0..10))
                .prop_map(|(type_name, items)| Value::List { type_name, items }),
            (
                name,
                prop::collection::vec((inner.clone(), inner.clone()), 0..6)
            )
                .prop_map(|(type_name, entries)| Value::Map { type_name, entries }),
            (
                prop::sample::select(vec!["a.B", "a.C", "D"]),
                prop::collection::vec(inner, 0..4)
            )
                .prop_map(|(class, values)| Value::Object {
                    class: class.to_owned(),
                    fields: values
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (format!("f{i}"), v))
                        .collect(),
                }),
        ]
    })
}

/// Hessian-looking noise: tag bytes and small lengths.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        prop::sample::select(b"CHMOQRSUVWXZNTFIDLY\x4a\x4b\x5b\x5c\x5d\x5e\x5f".to_vec())
            .prop_map(|b| vec![b]),
        (0x60u8..0x80).prop_map(|b| vec![b]),
        (0x80u8..0xa0).prop_map(|b| vec![b]),
        (0u8..0x20).prop_map(|b| vec![b]),
        prop::collection::vec(any::<u8>(), 0..4),
    ];
    prop::collection::vec(token, 0..40).prop_map(|t| t.concat())
}

proptest! {
    #[test]
    fn encode_then_decode(v in value()) {
        let mut bytes = Vec::new();
        v.encode(&mut bytes);
        let (back, used) = read_value(&bytes, &Limits::default()).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(back, v);
        prop_assert_eq!(skip(&bytes, &Limits::default()), Ok(bytes.len()));
        // Every proper prefix is truncated, never "fine".
        for n in [0, bytes.len() / 2, bytes.len().saturating_sub(1)] {
            if n < bytes.len() {
                prop_assert!(skip(&bytes[..n], &Limits::default()).is_err());
            }
        }
    }

    #[test]
    fn strings_round_trip(s in ".{0,300}") {
        let mut bytes = Vec::new();
        write_string(&mut bytes, &s);
        let (back, used) = read_string(&bytes).unwrap();
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(&*back, s.as_bytes());
    }

    #[test]
    fn noise_never_panics(bytes in noise(), small in any::<bool>()) {
        let limits = if small { small_limits() } else { Limits::default() };
        let skipped = skip(&bytes, &limits);
        if let Ok((v, used)) = read_value(&bytes, &limits) {
            prop_assert_eq!(skipped, Ok(used));
            // The value re-encodes to something that decodes to itself.
            let mut again = Vec::new();
            v.encode(&mut again);
            let (back, _) = read_value(&again, &Limits::default()).unwrap();
            let mut twice = Vec::new();
            back.encode(&mut twice);
            prop_assert_eq!(again, twice);
        }
        let _ = read_string(&bytes);
        let mut r = Reader::new(&bytes, limits);
        let _ = r.read_string_map();
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = skip(&bytes, &Limits::default());
        let _ = read_value(&bytes, &small_limits());
        let _ = read_string(&bytes);
    }
}
