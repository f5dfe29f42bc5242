//! The `Transport` header (RFC 2326 §12.39): a comma-separated list of
//! transport specs, each `RTP/AVP[/TCP|/UDP]` followed by `;`-separated
//! parameters (`unicast`, `client_port=5000-5001`, `interleaved=0-1`, ...).
//! Parsed so a proxy can read and replace parameters, and written back with
//! the parameters in their original order.

use std::fmt;

/// One transport spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportSpec {
    /// `RTP/AVP`, `RTP/AVP/TCP`, ...
    pub protocol: String,
    /// Parameters in order: name and optional value.
    pub params: Vec<(String, Option<String>)>,
}

/// Parse a `Transport` value; `None` if it is not ASCII or has an empty spec.
pub fn parse(value: &[u8]) -> Option<Vec<TransportSpec>> {
    let text = std::str::from_utf8(value).ok()?;
    if !text.is_ascii() {
        return None;
    }
    text.split(',')
        .map(|spec| {
            let mut parts = spec.trim().split(';');
            let protocol = parts.next()?.trim();
            if protocol.is_empty() {
                return None;
            }
            let params = parts
                .filter(|p| !p.trim().is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.trim().to_owned(), Some(v.trim().to_owned())),
                    None => (p.trim().to_owned(), None),
                })
                .collect();
            Some(TransportSpec {
                protocol: protocol.to_owned(),
                params,
            })
        })
        .collect()
}

/// Write specs back as one `Transport` value.
pub fn format(specs: &[TransportSpec]) -> String {
    specs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl TransportSpec {
    /// The value of parameter `name` (`Some(None)` for a flag such as `unicast`).
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Set parameter `name` to `value`, in place if present, else appended.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        match self
            .params
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => self.params.push((name.to_owned(), value)),
        }
    }

    /// Remove parameter `name`.
    pub fn remove(&mut self, name: &str) {
        self.params.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// Media over the RTSP connection (`RTP/AVP/TCP` or an `interleaved` parameter).
    pub fn is_interleaved(&self) -> bool {
        self.protocol.to_ascii_uppercase().ends_with("/TCP") || self.get("interleaved").is_some()
    }

    /// Whether the spec asks for multicast delivery.
    pub fn is_multicast(&self) -> bool {
        self.get("multicast").is_some()
    }

    /// A port range parameter (`client_port=5000-5001`, `server_port=6970`):
    /// the first port and the last (the same port when only one is given).
    pub fn ports(&self, name: &str) -> Option<(u16, u16)> {
        let v = self.get(name)??;
        match v.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => {
                let p = v.trim().parse().ok()?;
                Some((p, p))
            }
        }
    }

    /// The `interleaved=a-b` channels.
    pub fn channels(&self) -> Option<(u8, u8)> {
        let v = self.get("interleaved")??;
        match v.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => {
                let c = v.trim().parse().ok()?;
                Some((c, c))
            }
        }
    }
}

impl fmt::Display for TransportSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.protocol)?;
        for (k, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{k}={v}")?,
                None => write!(f, ";{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_and_interleaved_specs() {
        let v = b"RTP/AVP/UDP;unicast;client_port=5000-5001;ssrc=1234ABCD;mode=\"PLAY\", RTP/AVP/TCP;unicast;interleaved=0-1";
        let specs = parse(v).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].ports("client_port"), Some((5000, 5001)));
        assert!(!specs[0].is_interleaved());
        assert_eq!(specs[0].get("unicast"), Some(None));
        assert!(specs[1].is_interleaved());
        assert_eq!(specs[1].channels(), Some((0, 1)));
        let mut s = specs[0].clone();
        s.set("client_port", Some("7000-7001".into()));
        s.set("source", Some("10.0.0.1".into()));
        s.remove("ssrc");
        assert_eq!(
            s.to_string(),
            "RTP/AVP/UDP;unicast;client_port=7000-7001;mode=\"PLAY\";source=10.0.0.1"
        );
        assert_eq!(
            format(&specs),
            "RTP/AVP/UDP;unicast;client_port=5000-5001;ssrc=1234ABCD;mode=\"PLAY\",RTP/AVP/TCP;unicast;interleaved=0-1"
        );
        assert_eq!(parse(b"RTP/AVP,,x"), None);
        assert_eq!(
            parse(b"RTP/AVP;server_port=6970").unwrap()[0].ports("server_port"),
            Some((6970, 6970))
        );
    }
}
