//! Helpers shared by the vector tests: where the captured sessions are, and
//! decoding a stream whole and in small reads.
#![allow(dead_code)]

use std::fmt::Debug;
use std::path::PathBuf;

use bytes::BytesMut;
use switchyard_codecs::Decoder;

/// `shared/vectors/<protocol>`, beside the repository (fails loudly if missing).
pub fn vectors_dir(protocol: &str) -> PathBuf {
    let dir =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors")).join(protocol);
    assert!(
        dir.is_dir(),
        "test vectors not found at {}: the shared/ folder must sit beside the repository",
        dir.display()
    );
    dir
}

/// The bytes of `shared/vectors/<protocol>/<name>`.
pub fn read(protocol: &str, name: &str) -> Vec<u8> {
    let path = vectors_dir(protocol).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Decode `bytes` fed in reads of `chunk` bytes: the items and the bytes left over.
pub fn decode_all<D: Decoder>(mut dec: D, bytes: &[u8], chunk: usize) -> (Vec<D::Item>, usize) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(e) => panic!("decode error after {} items: {e}", out.len()),
            }
        }
    }
    (out, buf.len())
}

/// Decode `bytes` whole with a decoder from `make`, assert nothing is left
/// over, and that reads of each size in `chunks` give the same items.
pub fn decode_checked<D, F>(make: F, bytes: &[u8], name: &str, chunks: &[usize]) -> Vec<D::Item>
where
    D: Decoder,
    D::Item: PartialEq + Debug,
    F: Fn() -> D,
{
    let (items, left) = decode_all(make(), bytes, bytes.len());
    assert_eq!(left, 0, "{name}: bytes left over");
    for &chunk in chunks {
        let (again, left) = decode_all(make(), bytes, chunk);
        assert_eq!(left, 0, "{name}: bytes left over in reads of {chunk}");
        assert_eq!(again, items, "{name}: reads of {chunk} give other items");
    }
    items
}
