//! The `headers` filter: edits of a request's headers on its way upstream and
//! of its response on its way back, written once for every protocol with
//! headers. The chain hands each admitted request the rules of the
//! `headers` filters it passed ([`crate::filters::chain::Permit::headers`]);
//! each driver applies them through [`Headers`], the little it needs of its
//! protocol's header representation (an HTTP/1 or RTSP field list, an
//! HTTP/2 `HeaderMap`, Dubbo attachments, a Bolt header map).

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_codecs::fields::FieldList;

use crate::config::filters as cfg;

/// A protocol's headers, as a `headers` filter edits them. Names come
/// lowercased from config; HTTP and RTSP compare them case-insensitively.
pub trait Headers {
    /// Remove every header named `name`.
    fn remove(&mut self, name: &str);
    /// Replace the headers named `name` by one with `value`, or add it.
    fn set(&mut self, name: &str, value: &[u8]);
    /// Add a header `name` (another line or value) whatever is there.
    fn add(&mut self, name: &str, value: &[u8]);
    /// The value of `name`, joined by `, ` when it appears more than once.
    fn joined(&self, name: &str) -> Option<Vec<u8>>;
}

/// One side's compiled edits.
#[derive(Default)]
struct Edits {
    remove: Vec<Box<str>>,
    set: Vec<(Box<str>, Bytes)>,
    add: Vec<(Box<str>, Bytes)>,
    forwarded_for: bool,
    request_id: bool,
}

impl Edits {
    fn new(c: &cfg::HeaderEdits) -> Self {
        let lower = |s: &String| s.to_ascii_lowercase().into_boxed_str();
        let pair = |(k, v): (&String, &String)| (lower(k), Bytes::from(v.clone()));
        Self {
            remove: c.remove.iter().map(lower).collect(),
            set: c.set.iter().map(pair).collect(),
            add: c.add.iter().map(pair).collect(),
            forwarded_for: c.forwarded_for,
            request_id: c.request_id,
        }
    }

    fn apply(&self, h: &mut dyn Headers, client: IpAddr) {
        for name in &self.remove {
            h.remove(name);
        }
        for (name, value) in &self.set {
            h.set(name, value);
        }
        for (name, value) in &self.add {
            h.add(name, value);
        }
        if self.forwarded_for {
            let ip = client.to_canonical().to_string();
            let value = match h.joined("x-forwarded-for") {
                Some(mut v) if !v.is_empty() => {
                    v.extend_from_slice(b", ");
                    v.extend_from_slice(ip.as_bytes());
                    v
                }
                _ => ip.into_bytes(),
            };
            h.set("x-forwarded-for", &value);
        }
        if self.request_id && h.joined("x-request-id").is_none() {
            h.add("x-request-id", uuid_v4().as_bytes());
        }
    }
}

/// The compiled rules of one `headers` filter.
pub struct HeaderRules {
    request: Edits,
    response: Edits,
}

impl HeaderRules {
    pub fn new(c: &cfg::Headers) -> Arc<Self> {
        Arc::new(Self {
            request: Edits::new(&c.request),
            response: Edits::new(&c.response),
        })
    }

    /// Request edits decided per request (an `ext_authz` service's answer):
    /// names lowercased and checked by the caller.
    pub fn request_edits(
        remove: Vec<String>,
        set: Vec<(String, Bytes)>,
        add: Vec<(String, Bytes)>,
    ) -> Arc<Self> {
        let boxed = |v: Vec<(String, Bytes)>| {
            v.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect()
        };
        Arc::new(Self {
            request: Edits {
                remove: remove.into_iter().map(String::into_boxed_str).collect(),
                set: boxed(set),
                add: boxed(add),
                ..Edits::default()
            },
            response: Edits::default(),
        })
    }
}

/// Apply the request edits of `rules` (in the order the filters ran) for a
/// request from `client`.
pub fn edit_request(rules: &[Arc<HeaderRules>], h: &mut dyn Headers, client: IpAddr) {
    for r in rules {
        r.request.apply(h, client);
    }
}

/// Apply the response edits of `rules`.
pub fn edit_response(rules: &[Arc<HeaderRules>], h: &mut dyn Headers) {
    for r in rules {
        r.response.apply(h, IpAddr::from([0, 0, 0, 0]));
    }
}

/// A random (version 4) UUID, `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(HEX[usize::from(byte >> 4)]));
        s.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    s
}

impl Headers for FieldList<'_> {
    fn remove(&mut self, name: &str) {
        FieldList::remove(self, name.as_bytes());
    }
    fn set(&mut self, name: &str, value: &[u8]) {
        FieldList::set(self, name.as_bytes(), value);
    }
    fn add(&mut self, name: &str, value: &[u8]) {
        FieldList::add(self, name.as_bytes(), value);
    }
    fn joined(&self, name: &str) -> Option<Vec<u8>> {
        join(self.get_all(name.as_bytes()))
    }
}

impl Headers for http::HeaderMap {
    fn remove(&mut self, name: &str) {
        if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
            http::HeaderMap::remove(self, n);
        }
    }
    fn set(&mut self, name: &str, value: &[u8]) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            self.insert(n, v);
        }
    }
    fn add(&mut self, name: &str, value: &[u8]) {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(value),
        ) {
            self.append(n, v);
        }
    }
    fn joined(&self, name: &str) -> Option<Vec<u8>> {
        join(self.get_all(name).iter().map(http::HeaderValue::as_bytes))
    }
}

/// Values joined by `, `; `None` without any.
fn join<'a>(mut values: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut out = values.next()?.to_vec();
    for v in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Arc<HeaderRules> {
        HeaderRules::new(&serde_saphyr::from_str::<cfg::Headers>(yaml).unwrap())
    }

    #[test]
    fn request_edits_in_filter_order() {
        let first = rules(
            "request: {remove: [X-Internal], set: {x-env: prod}, add: {x-tag: edge}, \
             forwarded_for: true, request_id: true}",
        );
        let second = rules("request: {remove: [x-env]}");
        let mut f = FieldList::default();
        f.push(b"Host", b"h");
        f.push(b"x-internal", b"secret");
        f.push(b"X-Tag", b"a");
        f.push(b"X-Forwarded-For", b"10.0.0.1");
        edit_request(
            std::slice::from_ref(&first),
            &mut f,
            "127.0.0.1".parse().unwrap(),
        );
        let get = |f: &FieldList, n: &str| {
            f.get_all(n.as_bytes())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        assert!(get(&f, "x-internal").is_empty());
        assert_eq!(get(&f, "x-env"), [b"prod".to_vec()]);
        assert_eq!(get(&f, "x-tag"), [b"a".to_vec(), b"edge".to_vec()]);
        assert_eq!(
            get(&f, "x-forwarded-for"),
            [b"10.0.0.1, 127.0.0.1".to_vec()]
        );
        let id = get(&f, "x-request-id");
        assert_eq!(id.len(), 1);
        assert_eq!((id[0].len(), id[0][14]), (36, b'4'));
        // Present already: kept.
        edit_request(&[first, second], &mut f, "::ffff:10.1.1.1".parse().unwrap());
        assert_eq!(get(&f, "x-request-id"), id);
        assert!(get(&f, "x-env").is_empty(), "the later filter removes it");
        assert_eq!(
            get(&f, "x-forwarded-for"),
            [b"10.0.0.1, 127.0.0.1, 10.1.1.1".to_vec()]
        );
    }

    #[test]
    fn header_maps_take_the_same_edits() {
        let r = rules(
            "request: {set: {X-Env: prod}, forwarded_for: true}\nresponse: {remove: [Server]}",
        );
        let mut h = http::HeaderMap::new();
        h.append("x-env", http::HeaderValue::from_static("dev"));
        h.append("x-env", http::HeaderValue::from_static("qa"));
        edit_request(
            std::slice::from_ref(&r),
            &mut h,
            "127.0.0.1".parse().unwrap(),
        );
        assert_eq!(h.get_all("x-env").iter().count(), 1);
        assert_eq!(h["x-env"], "prod");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        h.insert("server", http::HeaderValue::from_static("nginx"));
        edit_response(&[r], &mut h);
        assert!(h.get("server").is_none());
    }
}
