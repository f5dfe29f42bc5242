//! The admin HTTP server (loopback by default; off loopback only behind a
//! bearer token). Every endpoint is listed in `docs/admin.md`: reads are
//! `GET` and answer JSON (except `/metrics`, `/config`, `/ready` and
//! `/mysql/digests` and the `/dashboard` page), actions are `POST`.
//! Served with our own HTTP/1 codec; one request per connection.

mod api;
mod dashboard;
mod stats;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use metrics_exporter_prometheus::PrometheusHandle;
use switchyard_codecs::http1::{self, BodyLength, RequestDecoder};
use switchyard_codecs::{Decoder, Part};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::gateway::Gateway;

/// The largest request body read (`POST` bodies are small forms).
const MAX_BODY: u64 = 64 * 1024;

pub async fn serve(socket: TcpListener, gateway: Arc<Gateway>, metrics: Option<PrometheusHandle>) {
    api::started();
    // Off loopback, a token is required even if a reload dropped it (the
    // address itself only changes with a restart).
    let open = socket.local_addr().is_ok_and(|a| !a.ip().is_loopback());
    let metrics = Arc::new(metrics);
    loop {
        let Ok((stream, _)) = socket.accept().await else {
            continue;
        };
        let gateway = gateway.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                answer(stream, &gateway, &metrics, open),
            )
            .await;
        });
    }
}

/// One admin request: method, path, query parameters, bearer token, body.
pub(crate) struct Request {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub authorization: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

impl Request {
    /// A query parameter, or the same field of a form body.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .chain(&parse_form(&self.body))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// A response about to be written.
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Reply {
            status,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.into() }))
    }

    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    fn encode(&self) -> Bytes {
        let mut headers: Vec<(&str, &str)> = vec![("Content-Type", self.content_type)];
        headers.extend(self.headers.iter().map(|(k, v)| (*k, v.as_str())));
        http1::response(self.status, &headers, &self.body, true)
    }
}

/// Route a request: one line per path. `get`/`post` answer 405 (with
/// `Allow`) to other methods.
fn route(req: &Request, gw: &Gateway, metrics: &Option<PrometheusHandle>) -> Reply {
    match req.path.as_str() {
        "/" => get(req, api::index),
        "/live" => get(req, || api::live(gw)),
        "/ready" => get(req, || api::ready(gw)),
        "/metrics" => get(req, || api::metrics(metrics)),
        "/stats" => get(req, || stats::stats(req, metrics)),
        "/config" => get(req, || api::config(gw)),
        "/listeners" => get(req, || api::listeners(gw)),
        "/clusters" => get(req, || api::clusters(gw)),
        "/routes" => get(req, || api::routes(gw)),
        "/mysql/digests" => get(req, || api::mysql_digests(gw)),
        "/logging" => get_or_post(req, api::logging, || api::set_logging(req)),
        "/reload" => post(req, || api::reload(gw)),
        "/drain" => post(req, || api::drain(gw)),
        "/dashboard" => get(req, dashboard::page),
        "/errors" => get(req, dashboard::errors),
        _ => api::not_found(&req.path),
    }
}

fn get(req: &Request, f: impl FnOnce() -> Reply) -> Reply {
    match req.method.as_str() {
        "GET" => f(),
        _ => not_allowed(req, "GET"),
    }
}

fn post(req: &Request, f: impl FnOnce() -> Reply) -> Reply {
    match req.method.as_str() {
        "POST" => f(),
        _ => not_allowed(req, "POST"),
    }
}

fn get_or_post(req: &Request, g: impl FnOnce() -> Reply, p: impl FnOnce() -> Reply) -> Reply {
    match req.method.as_str() {
        "GET" => g(),
        "POST" => p(),
        _ => not_allowed(req, "GET, POST"),
    }
}

fn not_allowed(req: &Request, allow: &'static str) -> Reply {
    let mut r = Reply::error(
        405,
        format!(
            "{} {}: method not allowed, use {allow}",
            req.method, req.path
        ),
    );
    r.headers.push(("Allow", allow.to_owned()));
    r
}

async fn answer(
    mut stream: TcpStream,
    gateway: &Gateway,
    metrics: &Option<PrometheusHandle>,
    open: bool,
) -> std::io::Result<()> {
    let req = match read_request(&mut stream).await? {
        Ok(Some(req)) => req,
        Ok(None) => return Ok(()),
        Err(reply) => {
            stream.write_all(&reply.encode()).await?;
            return stream.shutdown().await;
        }
    };
    let token = gateway.snapshot.load().admin_token.clone();
    let reply = match token {
        // The page holds no data; it sends the token on its own fetches.
        _ if req.path == "/dashboard" => get(&req, dashboard::page),
        Some(t) if !authorized(req.authorization.as_deref(), &t) => {
            let mut r = Reply::error(
                401,
                "missing or wrong bearer token: send `Authorization: Bearer <admin.token>`",
            );
            r.headers.push((
                "WWW-Authenticate",
                "Bearer realm=\"switchyard admin\"".into(),
            ));
            r
        }
        None if open => Reply::error(
            403,
            "the admin server is reachable off this machine but the running config has no admin.token: set one and reload, or restart it on 127.0.0.1",
        ),
        _ => route(&req, gateway, metrics),
    };
    tracing::debug!(method = %req.method, path = %req.path, status = reply.status, "admin request");
    stream.write_all(&reply.encode()).await?;
    stream.shutdown().await
}

/// Read one request (head and a small body). `Ok(None)`: the client left;
/// `Err`: answer this instead.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Result<Option<Request>, Reply>> {
    let mut buf = BytesMut::with_capacity(2048);
    let mut decoder = RequestDecoder::new(http1::Limits::default());
    let mut head = None;
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(Part::Head(h))) => {
                match h.body() {
                    BodyLength::Empty => {
                        head = Some(h);
                        break;
                    }
                    BodyLength::Length(n) if n <= MAX_BODY => {}
                    BodyLength::Length(_) => {
                        return Ok(Err(Reply::error(413, "request body too large")));
                    }
                    _ => {
                        return Ok(Err(Reply::error(
                            411,
                            "send a Content-Length body (or none), not a chunked one",
                        )));
                    }
                }
                head = Some(h);
                continue;
            }
            Ok(Some(Part::Body(b))) => {
                body.extend_from_slice(&b);
                continue;
            }
            Ok(Some(Part::End)) if head.is_some() => break,
            Ok(_) => {}
            Err(_) => return Ok(Err(Reply::error(400, "bad request"))),
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(Ok(None));
        }
    }
    let Some(head) = head else {
        return Ok(Ok(None));
    };
    let query = head.query();
    Ok(Ok(Some(Request {
        method: String::from_utf8_lossy(head.method()).into_owned(),
        path: String::from_utf8_lossy(head.path()).into_owned(),
        query: parse_form(query.strip_prefix(b"?").unwrap_or(query)),
        authorization: head.header("authorization").map(<[u8]>::to_vec),
        body,
    })))
}

/// Whether an `Authorization` header carries `token` as a bearer token.
/// Both sides are hashed first, so the comparison takes the same time
/// whatever the header holds (its length included).
fn authorized(header: Option<&[u8]>, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let given = header
        .and_then(|h| {
            let (scheme, rest) = h.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        })
        .unwrap_or_default();
    let given = Sha256::digest(given.trim_ascii());
    let want = Sha256::digest(token.as_bytes());
    let diff = given
        .iter()
        .zip(want.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    header.is_some() && diff == 0
}

/// `a=1&b=x%20y` as pairs (`+` is a space), percent-decoded.
fn parse_form(s: &[u8]) -> Vec<(String, String)> {
    s.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        let hex = |j: usize| {
            s.get(j)
                .and_then(|c| char::from(*c).to_digit(16))
                .map(|d| d as u8)
        };
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_query_strings() {
        let q = super::parse_form(
            b"filter=requests%7Cerrors&level=switchyard%3A%3Aproxy=debug&x&a=b+c",
        );
        assert_eq!(q[0], ("filter".into(), "requests|errors".into()));
        assert_eq!(q[1], ("level".into(), "switchyard::proxy=debug".into()));
        assert_eq!(q[2], ("x".into(), "".into()));
        assert_eq!(q[3], ("a".into(), "b c".into()));
        assert_eq!(super::percent_decode(b"%zz%4"), "%zz%4");
    }

    #[test]
    fn bearer_tokens_compare_whole() {
        let t = "0123456789abcdef";
        assert!(super::authorized(Some(b"Bearer 0123456789abcdef"), t));
        assert!(super::authorized(Some(b"bearer 0123456789abcdef "), t));
        assert!(!super::authorized(Some(b"Bearer 0123456789abcde"), t));
        assert!(!super::authorized(Some(b"Bearer 0123456789abcdef0"), t));
        assert!(!super::authorized(Some(b"Basic 0123456789abcdef"), t));
        assert!(!super::authorized(Some(b""), t));
        assert!(!super::authorized(None, t));
    }
}
