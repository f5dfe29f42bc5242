//! The admin dashboard in a real browser: Debian's headless Chromium, driven
//! through chromedriver (WebDriver, with `fantoccini`), looks at
//! `/dashboard` while redis-benchmark and a curl loop run through the
//! gateway to a private redis-server and nginx.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};

/// chromedriver on a free port, killed on drop.
struct Chromedriver {
    child: Child,
    port: u16,
}

impl Chromedriver {
    fn start() -> Self {
        let bin = require("chromedriver");
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        wait_for("chromedriver to listen", WAIT, || {
            std::net::TcpStream::connect(local(port)).ok()
        });
        Chromedriver { child, port }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A load generator process (its own process group), killed on drop.
struct Load(Child);

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// chromedriver's browser log (console messages, uncaught exceptions,
/// failed loads), read and cleared: `POST /session/{id}/se/log`.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// The SEVERE entries of the browser log since the last call.
async fn console_errors(browser: &Client) -> Vec<Value> {
    let log = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("read the browser log");
    log.as_array()
        .expect("the browser log is an array")
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .cloned()
        .collect()
}

/// What the page shows now: every chart's sample count and last values,
/// the listener table's requests/s, the host health, the reload result.
async fn page_state(browser: &Client) -> Value {
    browser
        .execute(
            r##"
            const charts = {};
            for (const c of document.querySelectorAll("canvas[data-chart]")) {
              charts[c.dataset.chart] = { samples: Number(c.dataset.samples || 0),
                points: Number(c.dataset.points || 0), last: JSON.parse(c.dataset.last || "{}") };
            }
            const rps = {};
            for (const r of document.querySelectorAll("#listeners tr[data-listener]")) {
              rps[r.dataset.listener + "/" + r.dataset.protocol] = Number(r.querySelector(".rps").dataset.rps);
            }
            const hosts = {};
            for (const h of document.querySelectorAll("[data-cluster] tr[data-host]")) {
              hosts[h.closest("[data-cluster]").dataset.cluster + "/" + h.dataset.host] = h.dataset.health;
            }
            const reload = document.getElementById("reload-result");
            return { scrapes: Number(document.body.dataset.scrapes || 0), charts, rps, hosts,
                     errors: document.getElementById("errors").innerText,
                     reload: { status: reload.dataset.status || null, text: reload.textContent } };
            "##,
            vec![],
        )
        .await
        .expect("read the page state")
}

/// Poll the page until `ok` holds (at most `limit`); the last state.
async fn wait_page(
    browser: &Client,
    what: &str,
    limit: Duration,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let state = page_state(browser).await;
        if ok(&state) {
            return state;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}; the page shows:\n{state:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(
    web: SocketAddr,
    cache: SocketAddr,
    admin: u16,
    nginx: SocketAddr,
    redis: SocketAddr,
    dead: SocketAddr,
    extra_route: &str,
) -> String {
    format!(
        r#"admin:
  address: 127.0.0.1:{admin}
listeners:
  - name: web
    address: {web}
    protocols: [http1]
    route_table: main
  - name: cache
    address: {cache}
    protocols: [redis]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:{extra_route}
          - {{match: {{protocol: redis}}, cluster: redis}}
          - {{match: {{protocol: http1}}, cluster: nginx}}
clusters:
  - name: nginx
    hosts: ["{nginx}"]
    health_check: {{kind: http, path: /, interval: 1s}}
  - name: redis
    hosts: ["{redis}"]
    health_check: {{kind: redis, interval: 1s}}
  - name: archive
    hosts: ["{dead}"]
    health_check: {{kind: tcp, interval: 500ms}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_traffic_health_errors_and_reloads() {
    require("chromium");
    let redis_benchmark = require("redis-benchmark");
    let curl = require("curl");
    let redis = RedisServer::start();
    let nginx = Nginx::start(&[("index.html", b"hello from nginx\n")]);
    let dead = local(free_port()); // nothing listens here
    let (web, cache, admin) = (local(free_port()), local(free_port()), free_port());
    let yaml = |extra: &str| config(web, cache, admin, nginx.addr(), redis.addr(), dead, extra);
    let gateway = Gateway::start(&yaml(""));

    // Real load through both listeners while the page watches.
    let bench = Load(
        Command::new("nice")
            .args(["-n", "10"])
            .arg(redis_benchmark)
            .args(["-h", "127.0.0.1", "-p", &cache.port().to_string()])
            .args([
                "-t",
                "set,get",
                "-n",
                "100000000",
                "-c",
                "4",
                "-r",
                "1000",
                "-q",
                "-l",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-benchmark"),
    );
    let running = Arc::new(AtomicBool::new(true));
    let curl_loop = {
        let running = running.clone();
        let url = format!("http://{web}/");
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                let _ = Command::new(&curl)
                    .args(["-s", "-o", "/dev/null", &url, &url, &url, &url, &url])
                    .status();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let driver = Chromedriver::start();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1250", "--hide-scrollbars"],
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromedriver session");

    let peers = Peers {
        admin,
        web,
        dead,
        redis: redis.addr(),
        nginx: nginx.addr(),
    };
    let result = std::panic::AssertUnwindSafe(exercise(&browser, &gateway, &peers, &yaml))
        .catch_unwind()
        .await;
    // Close the session (and its Chromium) whatever happened.
    let _ = browser.close().await;
    running.store(false, Ordering::Relaxed);
    drop(bench);
    let _ = curl_loop.join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// The addresses the page and the test look at.
struct Peers {
    admin: u16,
    web: SocketAddr,
    dead: SocketAddr,
    redis: SocketAddr,
    nginx: SocketAddr,
}

const REJECTED_ROUTE: &str = "\n          - {match: {path_prefix: /x}, cluster: nowhere}";
const ADDED_ROUTE: &str = "\n          - {match: {path_exact: /added}, direct_response: {status: 201, body: added-by-reload}}";

/// What the test checks in the browser, while the load runs.
async fn exercise(
    browser: &Client,
    gateway: &Gateway,
    peers: &Peers,
    yaml: &dyn Fn(&str) -> String,
) {
    let Peers {
        admin, web, dead, ..
    } = *peers;
    // The admin home page links to the dashboard.
    browser
        .goto(&format!("http://127.0.0.1:{admin}/"))
        .await
        .expect("open /");
    browser
        .find(Locator::LinkText("/dashboard"))
        .await
        .expect("/ links to /dashboard")
        .click()
        .await
        .expect("follow the link");
    assert_eq!(browser.title().await.unwrap(), "switchyard dashboard");

    // The charts move while the load runs.
    let moving = |s: &Value| {
        s["charts"]["protocol-rps"]["last"]["redis"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
            && s["charts"]["cluster-rps"]["last"]["redis"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0
            && s["charts"]["cluster-rps"]["last"]["nginx"]
                .as_f64()
                .unwrap_or(0.0)
                > 0.0
            && s["rps"]["cache/redis"].as_f64().unwrap_or(0.0) > 0.0
    };
    let first = wait_page(
        browser,
        "redis and nginx traffic on the charts",
        Duration::from_secs(20),
        moving,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = wait_page(
        browser,
        "the charts to go on moving",
        Duration::from_secs(20),
        moving,
    )
    .await;
    for chart in [
        "protocol-rps",
        "protocol-latency",
        "cluster-rps",
        "cluster-latency",
    ] {
        let (a, b) = (&first["charts"][chart], &second["charts"][chart]);
        assert!(
            b["samples"].as_u64() > a["samples"].as_u64()
                && b["points"].as_u64() > a["points"].as_u64(),
            "chart {chart} did not move:\n{a:#}\n{b:#}"
        );
        assert_ne!(
            a["last"], b["last"],
            "chart {chart} shows the same values 3 s later"
        );
    }
    let p99 = second["charts"]["cluster-latency"]["last"]["redis p99"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        p99 > 0.0,
        "no p99 latency for the redis cluster:\n{second:#}"
    );

    // Host health: every host, the dead one as such.
    let health = wait_page(
        browser,
        "the dead host to show as unhealthy",
        Duration::from_secs(20),
        |s| {
            s["hosts"][format!("archive/{dead}")]
                .as_str()
                .is_some_and(|h| h != "ok")
        },
    )
    .await;
    assert_eq!(
        health["hosts"][format!("redis/{}", peers.redis)],
        "ok",
        "{health:#}"
    );
    assert_eq!(
        health["hosts"][format!("nginx/{}", peers.nginx)],
        "ok",
        "{health:#}"
    );

    // Nothing went wrong in the page so far.
    let errors = console_errors(browser).await;
    assert!(errors.is_empty(), "console errors: {errors:#?}");

    // The screenshot, under load (docs/dashboard.png is one taken after
    // SWITCHYARD_DASHBOARD_WARMUP_SECS=90, so the charts have a history).
    let warmup = std::env::var("SWITCHYARD_DASHBOARD_WARMUP_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    tokio::time::sleep(Duration::from_secs(warmup.unwrap_or(0))).await;
    screenshot(browser, "dashboard.png").await;

    // A broken config: Reload says why, keeps the running config, and the
    // error shows among the recent errors.
    std::fs::write(&gateway.config_path, yaml(REJECTED_ROUTE)).unwrap();
    browser
        .find(Locator::Id("reload"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let rejected = wait_page(
        browser,
        "the rejected reload",
        Duration::from_secs(10),
        |s| s["reload"]["status"] == "400",
    )
    .await;
    assert!(
        rejected["reload"]["text"]
            .as_str()
            .unwrap()
            .contains("nowhere"),
        "{rejected:#}"
    );
    wait_page(
        browser,
        "the rejected reload among the errors",
        Duration::from_secs(10),
        |s| {
            s["errors"]
                .as_str()
                .is_some_and(|e| e.contains("config reload rejected"))
        },
    )
    .await;
    screenshot(browser, "dashboard-reload-rejected.png").await;
    // The only console error: the 400 of that POST /reload.
    for e in console_errors(browser).await {
        let text = e["message"].as_str().unwrap_or_default();
        assert!(
            text.contains("/reload") && text.contains("400"),
            "console error: {e:#}"
        );
    }

    // A good one: a new route, served once Reload says so.
    let (status, _) = http_get(web, "/added").unwrap();
    assert_ne!(status, 201, "the route is there before the reload");
    std::fs::write(&gateway.config_path, yaml(ADDED_ROUTE)).unwrap();
    browser
        .find(Locator::Id("reload"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let reloaded = wait_page(browser, "the reload", Duration::from_secs(10), |s| {
        s["reload"]["status"] == "200"
    })
    .await;
    assert!(
        reloaded["reload"]["text"]
            .as_str()
            .unwrap()
            .contains("reloaded"),
        "{reloaded:#}"
    );
    let (status, body) = http_get(web, "/added").unwrap();
    assert_eq!((status, body.as_str()), (201, "added-by-reload"));
    screenshot(browser, "dashboard-reloaded.png").await;
    // The per-cluster series the charts draw.
    assert!(
        gateway.metric(
            "switchyard_upstream_requests_total",
            &[("cluster", "redis")]
        ) > 0.0
    );
    assert!(
        gateway.metric(
            "switchyard_upstream_requests_total",
            &[("cluster", "nginx")]
        ) > 0.0
    );
    assert_eq!(
        gateway.metric("switchyard_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        gateway.metric("switchyard_config_reloads_total", &[("result", "error")]),
        1.0
    );

    // Still live after the reload, and still no console errors.
    let before = page_state(browser).await["scrapes"].as_u64().unwrap();
    wait_page(
        browser,
        "scrapes after the reload",
        Duration::from_secs(10),
        |s| s["scrapes"].as_u64() > Some(before + 1),
    )
    .await;
    let errors = console_errors(browser).await;
    assert!(
        errors.is_empty(),
        "console errors after the reload: {errors:#?}"
    );
}

/// Save what the browser shows as `target/tmp/NAME`.
async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, &png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
}
