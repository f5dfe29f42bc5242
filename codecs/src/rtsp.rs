//! rtsp (sniffer only for now).
use crate::Verdict;

/// Sniff the first client bytes. (Placeholder until implemented.)
pub fn sniff(_buf: &[u8]) -> Verdict {
    Verdict::Reject
}
