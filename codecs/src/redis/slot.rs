//! Key placement for sharding: hash tags and the Redis Cluster key slot.
//!
//! A hash tag is the part of a key between the first `{` and the next `}`
//! (when non-empty): keys with the same tag hash alike, so `{user:7}.name`
//! and `{user:7}.mail` always share a shard. The open/close pair is
//! configurable (twemproxy's `hash_tag`); Redis Cluster uses `{}`.

/// Number of Redis Cluster key slots.
pub const SLOTS: u16 = 16384;

/// The part of `key` that is hashed: the text between the first `open` and
/// the next `close` after it, if that is non-empty; else the whole key.
pub fn hash_tag(key: &[u8], open: u8, close: u8) -> &[u8] {
    let Some(start) = memchr::memchr(open, key) else {
        return key;
    };
    let rest = key.get(start + 1..).unwrap_or_default();
    match memchr::memchr(close, rest) {
        Some(0) | None => key,
        Some(end) => rest.get(..end).unwrap_or(key),
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its `{}` hash tag, mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key, b'{', b'}')) % SLOTS
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis Cluster.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_check_value() {
        // The XMODEM check value, as in the Redis Cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_redis_cluster() {
        // Slots from the Redis Cluster tutorial and `CLUSTER KEYSLOT` docs.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tag_rules() {
        assert_eq!(hash_tag(b"{a}b", b'{', b'}'), b"a");
        assert_eq!(hash_tag(b"x{a}{b}", b'{', b'}'), b"a");
        // An empty tag or no closing brace: the whole key.
        assert_eq!(hash_tag(b"{}a", b'{', b'}'), b"{}a");
        assert_eq!(hash_tag(b"{a", b'{', b'}'), b"{a");
        assert_eq!(hash_tag(b"a}b{", b'{', b'}'), b"a}b{");
        // The first `{`, then the first `}` after it.
        assert_eq!(hash_tag(b"{{a}}", b'{', b'}'), b"{a");
        assert_eq!(hash_tag(b"k:<t>:1", b'<', b'>'), b"t");
    }
}
