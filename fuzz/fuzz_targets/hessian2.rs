//! Fuzz the Hessian 2 reader: `skip`, `read_value`, `read_string` and the
//! string-map reader must never panic; whenever `read_value` succeeds, `skip`
//! agrees on the length, and the value re-encodes to bytes that decode to a
//! value encoding to the same bytes.
//!
//! Seeds: `fuzz/seeds/hessian2/` (the 60 Java-made fixtures).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_codecs::hessian2::{self, Limits, Reader};

fuzz_target!(|input: &[u8]| {
    let small = Limits {
        max_depth: 4,
        max_elements: 16,
    };
    for limits in [Limits::default(), small] {
        let skipped = hessian2::skip(input, &limits);
        if let Ok(n) = skipped {
            assert!(n <= input.len() && n > 0);
        }
        if let Ok((value, used)) = hessian2::read_value(input, &limits) {
            assert_eq!(skipped, Ok(used), "skip and read_value disagree");
            let mut once = Vec::new();
            value.encode(&mut once);
            let (back, n) =
                hessian2::read_value(&once, &Limits::default()).expect("an encoded value decodes");
            assert_eq!(n, once.len());
            let mut twice = Vec::new();
            back.encode(&mut twice);
            assert_eq!(once, twice, "re-encoding is not stable");
        }
        let mut reader = Reader::new(input, limits);
        let _ = reader.read_string_map();
    }
    if let Ok((s, used)) = hessian2::read_string(input) {
        assert!(used <= input.len() && s.len() <= input.len());
    }
});
