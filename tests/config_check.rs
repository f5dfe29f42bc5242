//! `switchyard check FILE` as users run it: exit status and `file:line:column`
//! messages.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GOOD: &str = r#"admin:
  address: 127.0.0.1:19901
listeners:
  - name: edge
    address: 127.0.0.1:17000
    protocols: [http1, redis]
    route_table: main
route_tables:
  - name: main
    virtual_hosts:
      - name: any
        domains: ["*"]
        routes:
          - match: { protocol: redis }
            cluster: cache
          - match: { path_prefix: /app }
            cluster: web
          - direct_response: { status: 200, body: "hi" }
clusters:
  - name: cache
    hosts: ["127.0.0.1:6379"]
  - name: web
    lb: weighted_round_robin
    hosts: [{ address: "127.0.0.1:8080", weight: 3 }, "127.0.0.1:8081"]
"#;

fn check(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .arg(path)
        .output()
        .expect("run switchyard check")
}

/// Write `yaml` to a temp file and check it: (exit code, stdout, stderr, path).
fn check_text(yaml: &str) -> (i32, String, String, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchyard.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = check(&path);
    let code = out.status.code().expect("exit code");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (code, stdout, stderr, path, dir)
}

/// 1-based (line, column) of `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
}

#[test]
fn a_good_config_is_ok() {
    let (code, stdout, stderr, path, _dir) = check_text(GOOD);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert_eq!(stdout.trim(), format!("{}: ok", path.display()));
}

#[test]
fn a_good_config_has_no_warnings() {
    let (_, _, stderr, _, _dir) = check_text(GOOD);
    assert_eq!(stderr, "", "a good config warns about nothing");
}

#[test]
fn warnings_name_the_line_and_still_pass() {
    // A route after the catch-all, and a cluster nothing routes to.
    let warned = GOOD
        .replace(
            "          - direct_response: { status: 200, body: \"hi\" }\n",
            "          - direct_response: { status: 200, body: \"hi\" }\n          - match: { path_prefix: /late }\n            cluster: web\n",
        )
        .replace(
            "clusters:\n",
            "clusters:\n  - name: spare\n    hosts: [\"127.0.0.1:9\"]\n",
        );
    let (code, stdout, stderr, path, _dir) = check_text(&warned);
    assert_eq!(code, 0, "warnings do not refuse the config: {stderr}");
    assert_eq!(stdout.trim(), format!("{}: ok", path.display()));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    let (line, _) = position(&warned, "/late");
    assert!(
        lines[0].starts_with(&format!("{}:{}:", path.display(), line + 1))
            && lines[0].contains("routes[3]: warning: can never match: routes[2] before it"),
        "{stderr}"
    );
    let (line, col) = position(&warned, "spare");
    assert!(
        lines[1].starts_with(&format!(
            "{}:{line}:{col}: clusters[spare]: warning: cluster `spare` is not used",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn an_unknown_cluster_is_reported_at_its_line_and_column() {
    let bad = GOOD.replace("cluster: web", "cluster: webb");
    let (code, stdout, stderr, path, _dir) = check_text(&bad);
    assert_eq!(code, 1, "stdout: {stdout}");
    let (line, col) = position(&bad, "webb");
    let want = format!("{}:{line}:{col}: ", path.display());
    assert!(
        stderr.starts_with(&want),
        "want a message starting with {want:?}, got:\n{stderr}"
    );
    let first = stderr.lines().next().unwrap();
    assert!(first.contains("no cluster is named `webb`"), "{stderr}");
    assert!(
        first.contains("cache") && first.contains("web"),
        "the hint should list the clusters: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one problem, one line: {stderr}");
}

#[test]
fn every_problem_is_reported_with_its_own_line() {
    let bad = GOOD
        .replace("cluster: cache", "cluster: kache")
        .replace("route_table: main", "route_table: mian");
    let (code, _, stderr, path, _dir) = check_text(&bad);
    assert_eq!(code, 1);
    for (needle, what) in [
        ("mian", "no route table is named `mian`"),
        ("kache", "no cluster is named `kache`"),
    ] {
        let (line, _) = position(&bad, needle);
        let prefix = format!("{}:{line}:", path.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no line `{prefix}...{what}` in:\n{stderr}"
        );
    }
}

#[test]
fn bad_cluster_hosts_are_reported_at_their_lines() {
    // Both spellings of a host: a plain string and `{address, weight}`.
    let bad = GOOD.replace(
        r#"hosts: [{ address: "127.0.0.1:8080", weight: 3 }, "127.0.0.1:8081"]"#,
        "hosts:\n      - \"localhost:8081\"\n      - { address: \"127.0.0.1:8082\", weight: 0 }",
    );
    let (code, _, stderr, path, _dir) = check_text(&bad);
    assert_eq!(code, 1);
    for (needle, what) in [
        (
            "localhost:8081",
            "`localhost:8081` is not an IP:port address",
        ),
        ("weight: 0", "weight 0 never receives traffic"),
    ] {
        let (line, _) = position(&bad, needle);
        let prefix = format!("{}:{line}:", path.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no line `{prefix}...{what}` in:\n{stderr}"
        );
    }
}

#[test]
fn an_unknown_field_is_reported_at_its_line() {
    let bad = GOOD.replace(
        "    route_table: main\n",
        "    route_table: main\n    routetable: x\n",
    );
    let (code, _, stderr, path, _dir) = check_text(&bad);
    assert_eq!(code, 1);
    let (line, _) = position(&bad, "routetable");
    let prefix = format!("{}:{line}:", path.display());
    assert!(
        stderr.starts_with(&prefix),
        "want {prefix:?}..., got:\n{stderr}"
    );
    assert!(stderr.contains("routetable"), "{stderr}");
}

#[test]
fn bad_values_are_reported() {
    let (code, _, stderr, path, _dir) = check_text(&GOOD.replace(
        "route_table: main",
        "route_table: main\n    idle_timeout: 5 parsecs",
    ));
    assert_eq!(code, 1);
    assert!(
        stderr.starts_with(&format!("{}:", path.display())),
        "{stderr}"
    );
    let (code, _, stderr, _, _dir) = check_text(&GOOD.replace("[http1, redis]", "[http1, gopher]"));
    assert_eq!(code, 1);
    assert!(stderr.contains("gopher"), "{stderr}");
}

#[test]
fn headers_filters_may_not_touch_framing_or_headerless_protocols() {
    let filter = |f: &str| {
        GOOD.replace(
            "          - match: { path_prefix: /app }\n            cluster: web",
            &format!("          - match: {{ path_prefix: /app }}\n            cluster: web\n            filters: [{f}]"),
        )
    };
    let cases = [
        (
            "{headers: {request: {set: {content-length: '5'}}}}",
            "routes[1].filters[0].headers.request.set.content-length",
        ),
        (
            "{headers: {request: {remove: [Host]}}}",
            "routes[1].filters[0].headers.request.remove.Host",
        ),
        (
            "{headers: {response: {add: {transfer-encoding: chunked}}}}",
            "routes[1].filters[0].headers.response.add.transfer-encoding",
        ),
        (
            "{headers: {request: {set: {'bad name': x}}}}",
            "routes[1].filters[0].headers.request.set.bad name",
        ),
    ];
    for (f, field) in cases {
        let (code, _, stderr, _, _dir) = check_text(&filter(f));
        assert_eq!(code, 1, "{f}: {stderr}");
        assert!(stderr.contains(field), "{f}: want {field:?} in:\n{stderr}");
    }
    let ok = filter("{headers: {request: {set: {x-env: prod}, forwarded_for: true}}}");
    let (code, _, stderr, _, _dir) = check_text(&ok);
    assert_eq!(code, 0, "{stderr}");
    // A Redis route has no headers.
    let redis = GOOD.replace(
        "          - match: { protocol: redis }\n            cluster: cache",
        "          - match: { protocol: redis }\n            cluster: cache\n            filters: [{headers: {request: {set: {x-a: b}}}}]",
    );
    let (code, _, stderr, _, _dir) = check_text(&redis);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("routes[0].filters[0].headers.request: redis requests have no headers"),
        "{stderr}"
    );
}

#[test]
fn http_route_actions_are_checked() {
    let route = |r: &str| {
        GOOD.replace(
            "          - direct_response: { status: 200, body: \"hi\" }",
            &format!(
                "          - {r}\n          - direct_response: {{ status: 200, body: \"hi\" }}"
            ),
        )
    };
    let cases = [
        (
            "{match: {path_exact: /a}, prefix_rewrite: /b/, cluster: web}",
            "prefix_rewrite: it replaces the matched `path_prefix`",
        ),
        (
            "{redirect: {status: 200}}",
            "redirect.status: 200 is not a redirect status",
        ),
        (
            "{match: {path_prefix: /a}, regex_rewrite: {pattern: '(', substitution: x}, cluster: web}",
            "regex_rewrite.pattern: invalid regex",
        ),
        (
            "{redirect: {path: /x}, cluster: web}",
            "a route needs exactly one action, found 2",
        ),
        (
            "{host_rewrite: a.example, direct_response: {status: 200}}",
            "host_rewrite: a rewrite applies to requests sent upstream",
        ),
        (
            "{match: {protocol: redis}, cluster_header: x-cluster}",
            "cluster_header: `cluster_header` is an HTTP action",
        ),
    ];
    for (r, want) in cases {
        let (code, _, stderr, _, _dir) = check_text(&route(r));
        assert_eq!(code, 1, "{r}: {stderr}");
        assert!(stderr.contains(want), "{r}: want {want:?} in:\n{stderr}");
    }
    let ok = route("{match: {path_prefix: /old/}, redirect: {prefix_rewrite: /new/, status: 308}}");
    let (code, _, stderr, _, _dir) = check_text(&ok);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_missing_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nope.yaml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_config_checks_ok() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = check(&root.join("config/switchyard.yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .ends_with(": ok")
    );
    // With no argument, `check` reads config/switchyard.yaml from the working directory.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "config/switchyard.yaml: ok"
    );
}

#[test]
fn every_shipped_config_checks_ok_without_warnings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["config", "labs/media"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let out = check(&path);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "{}: {stderr}", path.display());
                assert_eq!(stderr, "", "{} warns", path.display());
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 8,
        "config/ and labs/media hold {checked} yaml files"
    );
}
