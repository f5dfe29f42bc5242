//! The `ext_authz` filter: before a request goes upstream, ask an
//! authorization service with Envoy's `envoy.service.auth.v3.Authorization/Check`
//! (so existing ext_authz servers, OPA-envoy among them, work unchanged).
//!
//! The check is built from the shared request view ([`Request`]), whatever
//! the protocol: source and destination addresses, the client's TLS
//! identity, `request.http` for HTTP/1.1, HTTP/2 and gRPC, and the other
//! protocols' metadata under `context_extensions` keys (`redis.command`,
//! `mqtt.topic`, `rpc.service`, `mysql.user`, ...; docs/ext_authz.md).
//! An allowed request carries the header edits the service asked for; a
//! denied one becomes a [`Refusal`] each driver words in its protocol.
//!
//! One HTTP/2 channel per filter, connected on the first check and shared
//! (multiplexed) by every check; the checks waiting at once are bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderValueOption, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as CheckedRequest, TlsSession,
};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use metrics::{Counter, Histogram};
use switchyard_codecs::{Field, Protocol};
use tonic::transport::{Channel, Endpoint};

use super::chain::{Refusal, Request};
use super::headers::HeaderRules;
use crate::config::filters::{self as cfg, is_protected_header};

/// Whether `s` is a `HOST:PORT` the filter can connect to.
pub fn valid_address(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty()
        && !host.contains(['/', ' '])
        && port.parse::<u16>().is_ok_and(|p| p != 0)
        && Endpoint::from_shared(format!("http://{s}")).is_ok()
}

/// One compiled `ext_authz` filter.
pub struct ExtAuthz {
    address: String,
    /// Connected lazily, on the first check (inside the runtime).
    channel: OnceLock<Option<Channel>>,
    timeout: Duration,
    failure_mode_allow: bool,
    status_on_error: u16,
    include_peer_certificate: bool,
    context_extensions: HashMap<String, String>,
    max_pending: usize,
    pending: AtomicUsize,
    verdicts: Verdicts,
    duration: Histogram,
}

struct Verdicts {
    allowed: Counter,
    denied: Counter,
    error: Counter,
    timeout: Counter,
}

/// What a check ended in, before the failure mode.
enum Outcome {
    Allowed(Option<Arc<HeaderRules>>),
    Denied(Refusal),
    Failed(&'static str),
    TimedOut,
}

/// Takes back a place among the pending checks when the check is done.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ExtAuthz {
    /// Compile `c`; `scope` (`listener:NAME`, `route:NAME`) labels its metrics.
    pub fn new(c: &cfg::ExtAuthz, scope: &str) -> Arc<Self> {
        let counter = |verdict: &'static str| {
            metrics::counter!(
                "switchyard_ext_authz_checks_total",
                "scope" => scope.to_owned(),
                "verdict" => verdict
            )
        };
        Arc::new(Self {
            address: c.grpc.address.clone(),
            channel: OnceLock::new(),
            timeout: c.grpc.timeout.get(),
            failure_mode_allow: c.failure_mode_allow,
            status_on_error: c.status_on_error,
            include_peer_certificate: c.include_peer_certificate,
            context_extensions: c
                .context_extensions
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            max_pending: c.max_pending,
            pending: AtomicUsize::new(0),
            verdicts: Verdicts {
                allowed: counter("allowed"),
                denied: counter("denied"),
                error: counter("error"),
                timeout: counter("timeout"),
            },
            duration: metrics::histogram!(
                "switchyard_ext_authz_check_duration_seconds",
                "scope" => scope.to_owned()
            ),
        })
    }

    /// Ask the service about `req`: `Ok` with the header edits it asked
    /// for (if any), or the refusal to answer the request with. Errors and
    /// timeouts go by the failure mode.
    pub async fn check(&self, req: &Request<'_>) -> Result<Option<Arc<HeaderRules>>, Refusal> {
        let outcome = self.ask(req).await;
        match outcome {
            Outcome::Allowed(edits) => {
                self.verdicts.allowed.increment(1);
                Ok(edits)
            }
            Outcome::Denied(refusal) => {
                self.verdicts.denied.increment(1);
                Err(refusal)
            }
            Outcome::Failed(why) => {
                self.verdicts.error.increment(1);
                tracing::debug!(service = %self.address, why, "authorization check failed");
                self.on_failure("authorization service unavailable")
            }
            Outcome::TimedOut => {
                self.verdicts.timeout.increment(1);
                self.on_failure("authorization check timed out")
            }
        }
    }

    fn on_failure(&self, message: &str) -> Result<Option<Arc<HeaderRules>>, Refusal> {
        if self.failure_mode_allow {
            Ok(None)
        } else {
            Err(Refusal::new(self.status_on_error, message))
        }
    }

    async fn ask(&self, req: &Request<'_>) -> Outcome {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Outcome::Failed("too many checks pending");
        }
        let _pending = Pending(&self.pending);
        let Some(channel) = self.channel() else {
            return Outcome::Failed("bad service address");
        };
        let mut client = AuthorizationClient::new(channel.clone());
        let mut request = tonic::Request::new(self.check_request(req));
        request.set_timeout(self.timeout);
        let start = Instant::now();
        let answer = tokio::time::timeout(self.timeout, client.check(request)).await;
        self.duration.record(start.elapsed().as_secs_f64());
        match answer {
            Err(_) => Outcome::TimedOut,
            // The deadline sent as `grpc-timeout`, passed on either side.
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) =>
            {
                Outcome::TimedOut
            }
            Ok(Err(_)) => Outcome::Failed("the service answered the check with an error"),
            Ok(Ok(answer)) => verdict(req, answer.into_inner()),
        }
    }

    fn channel(&self) -> Option<&Channel> {
        self.channel
            .get_or_init(|| {
                let endpoint = Endpoint::from_shared(format!("http://{}", self.address)).ok()?;
                Some(
                    endpoint
                        .tcp_nodelay(true)
                        .connect_timeout(self.timeout)
                        .connect_lazy(),
                )
            })
            .as_ref()
    }

    /// The `CheckRequest` for `req` (the mapping is docs/ext_authz.md's table).
    fn check_request(&self, req: &Request<'_>) -> CheckRequest {
        let mut extensions = self.context_extensions.clone();
        extensions.insert("protocol".into(), req.protocol.name().into());
        for (key, field) in context_fields(req.protocol) {
            if let Some(v) = req.meta.get(field) {
                extensions.insert((*key).into(), String::from_utf8_lossy(v).into_owned());
            }
        }
        let tls = req.endpoints.and_then(|e| e.tls);
        let source = Peer {
            address: req
                .endpoints
                .map(|e| e.source)
                .or(Some(SocketAddr::new(req.client, 0)))
                .map(socket),
            principal: tls.and_then(|t| t.principal.clone()).unwrap_or_default(),
            certificate: tls
                .and_then(|t| t.certificate.as_deref())
                .filter(|_| self.include_peer_certificate)
                .map(pem)
                .unwrap_or_default(),
            ..Default::default()
        };
        let destination = Peer {
            address: req.endpoints.and_then(|e| e.destination).map(socket),
            ..Default::default()
        };
        let http = http_request(req, tls.is_some());
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(source),
                destination: Some(destination),
                request: Some(CheckedRequest { time: None, http }),
                context_extensions: extensions,
                tls_session: tls.map(|t| TlsSession {
                    sni: t.sni.clone().unwrap_or_default(),
                }),
                ..Default::default()
            }),
        }
    }
}

/// The request metadata each protocol sends in `context_extensions`.
fn context_fields(protocol: Protocol) -> &'static [(&'static str, Field)] {
    match protocol {
        Protocol::Http2 => &[
            ("rpc.service", Field::Service),
            ("rpc.method", Field::RpcMethod),
        ],
        Protocol::Redis => &[("redis.command", Field::Command), ("redis.key", Field::Key)],
        Protocol::Mqtt => &[
            ("mqtt.client_id", Field::ClientId),
            ("mqtt.topic", Field::Topic),
            ("mqtt.user", Field::User),
        ],
        Protocol::Dubbo | Protocol::Bolt => &[
            ("rpc.service", Field::Service),
            ("rpc.method", Field::RpcMethod),
        ],
        Protocol::Mysql => &[
            ("mysql.user", Field::User),
            ("mysql.schema", Field::Database),
        ],
        Protocol::Rtsp => &[("rtsp.method", Field::Method), ("rtsp.path", Field::Path)],
        _ => &[],
    }
}

/// `request.http` for HTTP/1.1 and HTTP/2 (gRPC included).
fn http_request(req: &Request<'_>, tls: bool) -> Option<HttpRequest> {
    let protocol = match req.protocol {
        Protocol::Http1 => "HTTP/1.1",
        Protocol::Http2 => "HTTP/2",
        _ => return None,
    };
    let text = |f: Field| {
        req.meta
            .get(&f)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let mut headers: HashMap<String, String> = HashMap::new();
    req.meta.for_each_header(&mut |name, value| {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value);
        headers
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    });
    Some(HttpRequest {
        method: text(Field::Method),
        path: text(Field::Path),
        host: text(Field::Host),
        headers,
        scheme: if tls { "https" } else { "http" }.into(),
        protocol: protocol.into(),
        size: req.size.and_then(|s| i64::try_from(s).ok()).unwrap_or(-1),
        ..Default::default()
    })
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            protocol: socket_address::Protocol::Tcp as i32,
            address: addr.ip().to_canonical().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}

/// A DER certificate as PEM (what Envoy sends in `source.certificate`).
fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The service's answer as an outcome: status OK allows (with the header
/// edits of `ok_response`), anything else denies.
fn verdict(req: &Request<'_>, answer: CheckResponse) -> Outcome {
    let status = answer.status.unwrap_or_default();
    if status.code == 0 {
        let edits = match answer.http_response {
            Some(HttpResponse::OkResponse(ok)) => header_edits(&ok.headers, &ok.headers_to_remove),
            _ => None,
        };
        return Outcome::Allowed(edits);
    }
    let (http_status, body) = match answer.http_response {
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status
                .and_then(|s| u16::try_from(s.code).ok())
                .filter(|s| (200..=599).contains(s)),
            d.body,
        ),
        _ => (None, String::new()),
    };
    Outcome::Denied(refusal(req.protocol, http_status, body, status.message))
}

/// The refusal for a denied request: HTTP and RTSP answer the service's
/// status and body (403 without one); gRPC the status's gRPC equivalent
/// (403: PERMISSION_DENIED) with the body (or the check's message); the
/// other protocols their "not authorized" (401 stays 401), Redis as
/// `-NOPERM`.
fn refusal(protocol: Protocol, status: Option<u16>, body: String, message: String) -> Refusal {
    let text = if !body.is_empty() {
        body
    } else if !message.is_empty() {
        message
    } else {
        "not authorized".into()
    };
    let status = match protocol {
        Protocol::Http1 | Protocol::Http2 | Protocol::Rtsp => status.unwrap_or(403),
        _ if status == Some(401) => 401,
        _ => 403,
    };
    let text = match protocol {
        Protocol::Redis => format!("NOPERM {text}"),
        _ => text,
    };
    Refusal::new(status, &text).by_policy()
}

/// The request header edits of an `ok_response`: `append: true` adds a
/// value, otherwise the header is set (replaced); fields the gateway owns
/// (framing, hop-by-hop, `host`) and values with line breaks are skipped.
fn header_edits(add: &[HeaderValueOption], remove: &[String]) -> Option<Arc<HeaderRules>> {
    let usable = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            && !is_protected_header(name)
    };
    let mut set = Vec::new();
    let mut append = Vec::new();
    for option in add {
        let Some(h) = &option.header else { continue };
        let value = if h.raw_value.is_empty() {
            Bytes::from(h.value.clone().into_bytes())
        } else {
            Bytes::from(h.raw_value.clone())
        };
        if !usable(&h.key) || value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            continue;
        }
        #[allow(deprecated)]
        let appends = option.append.as_ref().is_some_and(|a| a.value);
        let name = h.key.to_ascii_lowercase();
        if appends {
            append.push((name, value));
        } else {
            set.push((name, value));
        }
    }
    let remove: Vec<String> = remove
        .iter()
        .filter(|n| usable(n))
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if set.is_empty() && append.is_empty() && remove.is_empty() {
        return None;
    }
    Some(HeaderRules::request_edits(remove, set, append))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderValue;
    use envoy_types::pb::envoy::service::auth::v3::{DeniedHttpResponse, OkHttpResponse};
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::google::rpc::Status;

    struct Meta(Vec<(Field, &'static str)>);
    impl switchyard_codecs::Metadata for Meta {
        fn get(&self, field: &Field) -> Option<&[u8]> {
            self.0
                .iter()
                .find(|(f, _)| f == field)
                .map(|(_, v)| v.as_bytes())
        }
    }

    fn req<'a>(protocol: Protocol, meta: &'a Meta) -> Request<'a> {
        Request {
            protocol,
            meta,
            client: "10.0.0.7".parse().unwrap(),
            size: None,
            endpoints: None,
        }
    }

    fn filter() -> Arc<ExtAuthz> {
        let c: cfg::ExtAuthz = serde_saphyr::from_str(
            "{grpc: {address: '127.0.0.1:1'}, context_extensions: {site: edge}}",
        )
        .unwrap();
        ExtAuthz::new(&c, "test")
    }

    fn denied(status: i32, body: &str) -> CheckResponse {
        CheckResponse {
            status: Some(Status {
                code: 7,
                message: "policy".into(),
                details: vec![],
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: status }),
                headers: vec![],
                body: body.into(),
            })),
            dynamic_metadata: None,
        }
    }

    #[tokio::test]
    async fn checks_over_max_pending_get_the_failure_mode_at_once() {
        // A service that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                open.push(s);
            }
        });
        let c: cfg::ExtAuthz = serde_saphyr::from_str(&format!(
            "{{grpc: {{address: '{addr}', timeout: 30s}}, max_pending: 1}}"
        ))
        .unwrap();
        let authz = ExtAuthz::new(&c, "test");
        let m = Meta(vec![]);
        let r = req(Protocol::Redis, &m);
        let mut first = Box::pin(authz.check(&r));
        // Poll the first check until it waits on the service.
        assert!(futures_poll(first.as_mut()).await.is_none());
        assert_eq!(authz.pending.load(Ordering::Relaxed), 1);
        let Err(second) = authz.check(&r).await else {
            panic!("a second check over the bound is refused")
        };
        assert_eq!(
            (second.status, &*second.message),
            (503, "authorization service unavailable")
        );
        drop(first);
        assert_eq!(
            authz.pending.load(Ordering::Relaxed),
            0,
            "the place is given back"
        );
    }

    /// Poll `f` once (after letting the runtime run a little).
    async fn futures_poll<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> Option<F::Output> {
        tokio::select! {
            out = f => Some(out),
            () = tokio::time::sleep(Duration::from_millis(100)) => None,
        }
    }

    #[test]
    fn addresses_are_host_and_port() {
        assert!(valid_address("127.0.0.1:9191"));
        assert!(valid_address("authz.local:9191"));
        assert!(valid_address("[::1]:9191"));
        assert!(!valid_address("127.0.0.1"));
        assert!(!valid_address("127.0.0.1:0"));
        assert!(!valid_address("http://a:1/x"));
        assert!(!valid_address(":9191"));
    }

    #[test]
    fn redis_metadata_goes_into_context_extensions() {
        let m = Meta(vec![(Field::Command, "GET"), (Field::Key, "user:1")]);
        let r = req(Protocol::Redis, &m);
        let check = filter().check_request(&r);
        let a = check.attributes.unwrap();
        let ext = &a.context_extensions;
        assert_eq!(ext["protocol"], "redis");
        assert_eq!(ext["redis.command"], "GET");
        assert_eq!(ext["redis.key"], "user:1");
        assert_eq!(ext["site"], "edge", "configured extensions are kept");
        assert!(a.request.unwrap().http.is_none(), "no http view for Redis");
        let Some(address::Address::SocketAddress(s)) = a.source.unwrap().address.unwrap().address
        else {
            panic!("a socket address")
        };
        assert_eq!(s.address, "10.0.0.7");
    }

    #[test]
    fn the_tls_identity_and_addresses_go_into_the_peers() {
        let tls = super::super::chain::TlsPeer {
            sni: Some("api.example".into()),
            principal: Some("client-7".into()),
            certificate: Some(vec![0x30, 0x03, 0x02, 0x01, 0x07]),
        };
        let m = Meta(vec![(Field::Method, "GET"), (Field::Path, "/x")]);
        let mut r = req(Protocol::Http1, &m);
        r.endpoints = Some(super::super::chain::Endpoints {
            source: "10.0.0.7:40001".parse().unwrap(),
            destination: Some("10.0.0.1:443".parse().unwrap()),
            tls: Some(&tls),
        });
        let c: cfg::ExtAuthz = serde_saphyr::from_str(
            "{grpc: {address: '127.0.0.1:1'}, include_peer_certificate: true}",
        )
        .unwrap();
        let a = ExtAuthz::new(&c, "test")
            .check_request(&r)
            .attributes
            .unwrap();
        let source = a.source.unwrap();
        assert_eq!(source.principal, "client-7");
        assert_eq!(
            source.certificate,
            "-----BEGIN CERTIFICATE-----\nMAMCAQc=\n-----END CERTIFICATE-----\n"
        );
        assert_eq!(a.tls_session.unwrap().sni, "api.example");
        let http = a.request.unwrap().http.unwrap();
        assert_eq!((http.scheme.as_str(), http.path.as_str()), ("https", "/x"));
        let Some(address::Address::SocketAddress(d)) =
            a.destination.unwrap().address.unwrap().address
        else {
            panic!("a socket address")
        };
        assert_eq!(
            (d.address.as_str(), d.port_specifier),
            (
                "10.0.0.1",
                Some(socket_address::PortSpecifier::PortValue(443))
            )
        );
        // Without include_peer_certificate the certificate stays home.
        let a = filter().check_request(&r).attributes.unwrap();
        assert_eq!(a.source.unwrap().certificate, "");
    }

    #[test]
    fn denials_are_worded_per_protocol() {
        let m = Meta(vec![]);
        let Outcome::Denied(r) = verdict(&req(Protocol::Http1, &m), denied(418, "no tea")) else {
            panic!("denied")
        };
        assert_eq!((r.status, &*r.message), (418, "no tea"));
        let Outcome::Denied(r) = verdict(&req(Protocol::Redis, &m), denied(418, "")) else {
            panic!("denied")
        };
        assert_eq!((r.status, &*r.message), (403, "NOPERM policy"));
        let Outcome::Denied(r) = verdict(&req(Protocol::Http2, &m), denied(403, "nope")) else {
            panic!("denied")
        };
        assert_eq!(r.grpc_status(), 7, "PERMISSION_DENIED for gRPC");
    }

    #[test]
    fn ok_responses_set_add_and_remove_headers_but_not_framing_ones() {
        let h = |k: &str, v: &str| HeaderValueOption {
            header: Some(HeaderValue {
                key: k.into(),
                value: v.into(),
                raw_value: vec![],
            }),
            ..Default::default()
        };
        let ok = CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    h("X-Authz", "ok"),
                    h("content-length", "1"),
                    h("x-bad", "a\r\nb"),
                ],
                headers_to_remove: vec!["authorization".into()],
                ..Default::default()
            })),
            dynamic_metadata: None,
        };
        let m = Meta(vec![]);
        let Outcome::Allowed(Some(rules)) = verdict(&req(Protocol::Http1, &m), ok) else {
            panic!("allowed with edits")
        };
        let mut fields = TestHeaders(vec![
            ("authorization".into(), b"secret".to_vec()),
            ("content-length".into(), b"0".to_vec()),
        ]);
        super::super::headers::edit_request(&[rules], &mut fields, "127.0.0.1".parse().unwrap());
        assert_eq!(
            fields.0,
            [
                ("content-length".to_string(), b"0".to_vec()),
                ("x-authz".to_string(), b"ok".to_vec())
            ]
        );
    }

    struct TestHeaders(Vec<(String, Vec<u8>)>);
    impl super::super::headers::Headers for TestHeaders {
        fn remove(&mut self, name: &str) {
            self.0.retain(|(n, _)| n != name);
        }
        fn set(&mut self, name: &str, value: &[u8]) {
            self.remove(name);
            self.add(name, value);
        }
        fn add(&mut self, name: &str, value: &[u8]) {
            self.0.push((name.into(), value.to_vec()));
        }
        fn joined(&self, name: &str) -> Option<Vec<u8>> {
            self.0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        }
    }
}
