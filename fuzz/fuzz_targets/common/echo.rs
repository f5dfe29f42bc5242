//! The fingerprint an echo upstream answers with, so a client can tell that
//! a request reached the upstream byte-exact without the reply carrying it.

/// FNV-1a 64 of `bytes` and their length, as `<16 hex digits>:<len>`.
pub fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}:{}", bytes.len())
}
