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
    json(&crate::observe::recent::RECENT.report())
}

/// `POST /reload`: reload the config file, as SIGHUP does; 200, or 400
/// with the problems (`file:line:column: field: problem`) and the running
/// config kept. Counted in `switchyard_config_reloads_total{result}`.
pub fn reload(gateway: &Gateway) -> Bytes {
    match gateway.reload() {
        Ok(()) => {
            metrics::counter!("switchyard_config_reloads_total", "result" => "ok").increment(1);
            tracing::info!(file = %gateway.config_path.display(), "config reloaded (admin)");
            http1::response(
                200,
                &[("Content-Type", "text/plain; charset=utf-8")],
                format!("reloaded {}\n", gateway.config_path.display()).as_bytes(),
                true,
            )
        }
        Err(e) => {
            metrics::counter!("switchyard_config_reloads_total", "result" => "rejected")
                .increment(1);
            tracing::error!("config reload rejected, keeping the running config:\n{e}");
            http1::error_response(400, &format!("{e}\n"), true)
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Bytes {
    match serde_json::to_string(value) {
        Ok(body) => http1::response(
            200,
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
