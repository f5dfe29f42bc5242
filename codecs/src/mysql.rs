//! MySQL (sniffer only for now).
//!
//! The server speaks first (its greeting), and a client waits for it, so a
//! connection cannot be recognised from client bytes: what a MySQL client
//! sends first is its reply to the greeting (HandshakeResponse41), and a
//! sniffing listener would never see it. A MySQL listener must be given a
//! fixed protocol (see [`Protocol::server_speaks_first`](crate::Protocol::server_speaks_first)).
use crate::Verdict;

/// Always `Reject`: MySQL cannot be sniffed from client bytes (see the module docs).
pub fn sniff(_buf: &[u8]) -> Verdict {
    Verdict::Reject
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_matches() {
        // First bytes of `mysql/mariadb-cli-native-password-queries.c2s.bin`
        // (HandshakeResponse41, sequence id 1).
        let response: &[u8] = &[0xdc, 0x00, 0x00, 0x01, 0x8c, 0xa2, 0xbf, 0x00];
        for n in 0..=response.len() {
            assert_eq!(sniff(&response[..n]), Verdict::Reject);
        }
    }
}
