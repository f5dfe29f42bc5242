//! Fuzz protocol detection: no sniffer may panic, and every sniffer's verdict
//! must be final — a prefix that was rejected stays rejected and a prefix that
//! matched stays matched, however many bytes follow.
//!
//! Seeds: `fuzz/seeds/detect/` (the client streams of every captured protocol).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_codecs::{Protocol, Verdict, sniff};

/// Prefix lengths checked against the whole input.
const PREFIXES: [usize; 8] = [0, 1, 2, 3, 5, 8, 24, 64];

fuzz_target!(|data: &[u8]| {
    let all = sniff(data, &Protocol::ALL);
    if let Verdict::Match(p) = all {
        assert!(Protocol::ALL.contains(&p));
    }
    for protocol in Protocol::ALL {
        let whole = sniff(data, &[protocol]);
        if let Verdict::Match(p) = whole {
            assert_eq!(p, protocol, "{protocol} sniffer matched another protocol");
        }
        for n in PREFIXES.into_iter().filter(|&n| n < data.len()) {
            match sniff(&data[..n], &[protocol]) {
                Verdict::Reject => assert_eq!(
                    whole,
                    Verdict::Reject,
                    "{protocol}: rejected {n} bytes, then {whole:?} on {} bytes",
                    data.len()
                ),
                Verdict::Match(p) => assert_eq!(
                    whole,
                    Verdict::Match(p),
                    "{protocol}: matched {n} bytes, then {whole:?} on {} bytes",
                    data.len()
                ),
                Verdict::NeedMore => {}
            }
        }
    }
});
