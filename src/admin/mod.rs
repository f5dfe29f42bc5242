//! The admin HTTP server (loopback by default): `/ready`, `/metrics`
//! (Prometheus text), `/config` (the running config, secrets redacted),
//! `/clusters` (every cluster's hosts and their health, JSON), `/dashboard`
//! (the live dashboard page), `/errors` (recent warnings and errors, JSON),
//! `POST /reload`. Served with our own HTTP/1 codec; one request per connection.

mod dashboard;

use std::sync::Arc;

use bytes::BytesMut;
use metrics_exporter_prometheus::PrometheusHandle;
use switchyard_codecs::http1::{self, RequestDecoder};
use switchyard_codecs::{Decoder, Part};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::gateway::Gateway;

pub async fn serve(socket: TcpListener, gateway: Arc<Gateway>, metrics: Option<PrometheusHandle>) {
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
                answer(stream, &gateway, &metrics),
            )
            .await;
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    gateway: &Gateway,
    metrics: &Option<PrometheusHandle>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(2048);
    let mut decoder = RequestDecoder::new(http1::Limits::default());
    let head = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(Part::Head(h))) => break h,
            Ok(_) => {}
            Err(_) => {
                return stream
                    .write_all(&http1::error_response(400, "bad request\n", true))
                    .await;
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    let text = |body: String| {
        http1::response(
            200,
            &[("Content-Type", "text/plain; charset=utf-8")],
            body.as_bytes(),
            true,
        )
    };
    let post = head.method() == b"POST";
    let resp = match head.path() {
        b"/dashboard" => dashboard::page(),
        b"/errors" => dashboard::errors(),
        b"/reload" if post => dashboard::reload(gateway),
        b"/reload" => http1::error_response(405, "use POST /reload\n", true),
        b"/ready" if *gateway.drain.borrow() => http1::error_response(503, "draining\n", true),
        b"/ready" => text("ready\n".into()),
        b"/metrics" => match metrics {
            Some(h) => http1::response(
                200,
                &[("Content-Type", "text/plain; version=0.0.4")],
                h.render().as_bytes(),
                true,
            ),
            None => http1::error_response(503, "metrics recorder not installed\n", true),
        },
        b"/config" => {
            let snapshot = gateway.snapshot.load();
            match serde_saphyr::to_string(&snapshot.config) {
                Ok(yaml) => http1::response(
                    200,
                    &[("Content-Type", "application/yaml")],
                    redact(&yaml).as_bytes(),
                    true,
                ),
                Err(e) => http1::error_response(500, &format!("cannot render config: {e}\n"), true),
            }
        }
        b"/mysql/digests" => {
            // Queries per digest on every MySQL listener: `listener<TAB>count<TAB>digest`.
            let snapshot = gateway.snapshot.load();
            let mut names: Vec<&String> = snapshot.listeners.keys().collect();
            names.sort();
            let mut body = String::new();
            for name in names {
                if let Some(front) = snapshot.listeners.get(name).and_then(|l| l.mysql.as_ref()) {
                    for line in front.digest_report().lines() {
                        body.push_str(&format!("{name}\t{line}\n"));
                    }
                }
            }
            text(body)
        }
        b"/clusters" => {
            // Every cluster's hosts with their health, as JSON (sorted by name).
            let snapshot = gateway.snapshot.load();
            let mut clusters: Vec<_> = snapshot.clusters.values().map(|c| c.report()).collect();
            clusters.sort_by(|a, b| a.name.cmp(&b.name));
            match serde_json::to_string_pretty(&serde_json::json!({ "clusters": clusters })) {
                Ok(json) => http1::response(
                    200,
                    &[("Content-Type", "application/json")],
                    json.as_bytes(),
                    true,
                ),
                Err(e) => {
                    http1::error_response(500, &format!("cannot render clusters: {e}\n"), true)
                }
            }
        }
        b"/" => home(),
        _ => http1::error_response(
            404,
            "not found: try /dashboard /ready /metrics /config /clusters /errors\n",
            true,
        ),
    };
    stream.write_all(&resp).await?;
    stream.shutdown().await
}

/// `GET /`: the endpoints, linked.
fn home() -> bytes::Bytes {
    let links = [
        "/dashboard",
        "/ready",
        "/metrics",
        "/config",
        "/clusters",
        "/errors",
    ]
    .map(|p| format!("<li><a href=\"{p}\">{p}</a></li>"))
    .concat();
    let body = format!(
        "<!doctype html><title>switchyard admin</title><link rel=\"icon\" href=\"data:,\"><h1>switchyard admin</h1><ul>{links}</ul><p>POST /reload reloads the config file.</p>\n"
    );
    http1::response(
        200,
        &[("Content-Type", "text/html; charset=utf-8")],
        body.as_bytes(),
        true,
    )
}

/// Blank the value of any field that looks like a secret.
fn redact(yaml: &str) -> String {
    yaml.lines()
        .map(|line| {
            let key = line
                .trim_start()
                .trim_start_matches("- ")
                .split(':')
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            if ["password", "password_hash", "secret", "token", "key"]
                .iter()
                .any(|s| key.ends_with(s))
                && line.contains(':')
            {
                let (k, _) = line.split_once(':').unwrap_or((line, ""));
                format!("{k}: \"<redacted>\"")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_secret_fields() {
        let out = super::redact("a: 1\npassword: hunter2\n  api_token: x\nkey_prefix: user\n");
        assert!(!out.contains("hunter2") && !out.contains(": x"), "{out}");
        assert!(out.contains("key_prefix: user"), "{out}");
    }
}
