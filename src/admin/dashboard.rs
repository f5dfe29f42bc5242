//! The live dashboard (`GET /dashboard`): one self-contained HTML page,
//! compiled into the binary, that scrapes `/metrics`, `/clusters` and
//! `/errors` every second and draws its charts itself (no CDN, no build
//! step); its Reload button posts `/reload`. Also `/errors`: the last
//! WARN/ERROR log events, JSON.

use super::Reply;

/// The page: inline CSS and JS, charts on `<canvas>`.
const PAGE: &str = include_str!("dashboard.html");

/// `GET /dashboard`. It holds no data (the page fetches it with the
/// token from its URL fragment), so it is served without a token.
pub fn page() -> Reply {
    let mut r = Reply::text(200, "text/html; charset=utf-8", PAGE);
    r.headers.push(("Cache-Control", "no-store".into()));
    // Nothing may load from outside the gateway.
    r.headers.push((
        "Content-Security-Policy",
        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:"
            .into(),
    ));
    r
}

/// `GET /errors`: the last WARN and ERROR log events, oldest first.
pub fn errors() -> Reply {
    match serde_json::to_value(crate::observe::recent::RECENT.report()) {
        Ok(v) => Reply::json(200, &v),
        Err(e) => Reply::error(500, format!("cannot render JSON: {e}")),
    }
}
