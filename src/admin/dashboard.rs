//! The live dashboard (`GET /dashboard`): one self-contained HTML page,
//! compiled into the binary, that scrapes `/metrics`, `/clusters` and
//! `/errors` every second and draws its charts itself (no CDN, no build
//! step). Also `/errors` (the last WARN/ERROR log events, JSON) and a
//! minimal `POST /reload` for its Reload button.

use bytes::Bytes;
use switchyard_codecs::http1;

use crate::gateway::Gateway;

/// The page: inline CSS and JS, charts on `<canvas>`.
const PAGE: &str = include_str!("dashboard.html");

/// `GET /dashboard`.
pub fn page() -> Bytes {
    http1::response(
        200,
        &[
            ("Content-Type", "text/html; charset=utf-8"),
            ("Cache-Control", "no-store"),
            // Nothing may load from outside the gateway.
            (
                "Content-Security-Policy",
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
            ),
        ],
        PAGE.as_bytes(),
        true,
    )
}

/// `GET /errors`: the last WARN and ERROR log events, newest last.
pub fn errors() -> Bytes {
    json(200, &crate::observe::recent::RECENT.report())
}

/// `POST /reload`: reload the config file, as SIGHUP does. 200
/// `{"reloaded": true, "file"}`, or 400 `{"reloaded": false, "error",
/// "file", "problems": ["file:line:column: field: problem", ...]}` with the
/// running config kept. Counted in `switchyard_config_reloads_total{result}`.
pub fn reload(gateway: &Gateway) -> Bytes {
    let file = gateway.config_path.display().to_string();
    match gateway.reload() {
        Ok(()) => {
            metrics::counter!("switchyard_config_reloads_total", "result" => "ok").increment(1);
            tracing::info!(file = %file, "config reloaded");
            json(200, &serde_json::json!({"reloaded": true, "file": file}))
        }
        Err(e) => {
            metrics::counter!("switchyard_config_reloads_total", "result" => "error").increment(1);
            tracing::error!("config reload rejected, keeping the running config:\n{e}");
            let problems: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
            json(
                400,
                &serde_json::json!({
                    "reloaded": false,
                    "error": "config reload rejected, keeping the running config",
                    "file": e.file,
                    "problems": problems,
                }),
            )
        }
    }
}

fn json<T: serde::Serialize>(status: u16, value: &T) -> Bytes {
    match serde_json::to_string(value) {
        Ok(body) => http1::response(
            status,
            &[
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-store"),
            ],
            body.as_bytes(),
            true,
        ),
        Err(e) => http1::error_response(500, &format!("cannot render JSON: {e}\n"), true),
    }
}
