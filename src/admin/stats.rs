//! `/stats?filter=REGEX`: the Prometheus metrics as one JSON object,
//! `{"name{labels}": value}`. Counters and gauges are numbers; a histogram
//! (or summary) is `{count, sum, p50, p99}`, its quantiles estimated from the
//! buckets as Prometheus' `histogram_quantile` does (linear within a bucket).
//! Parsed from the exporter's own text rendering, so `/stats` and
//! `/metrics` always agree.

use std::collections::{BTreeMap, HashMap};

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value, json};

use super::{Reply, Request};

pub fn stats(req: &Request, metrics: &Option<PrometheusHandle>) -> Reply {
    let filter = match req.param("filter").filter(|f| !f.is_empty()) {
        Some(f) => match regex::Regex::new(&f) {
            Ok(r) => Some(r),
            Err(e) => return Reply::error(400, format!("filter is not a valid regex: {e}")),
        },
        None => None,
    };
    let Some(handle) = metrics else {
        return Reply::error(503, "metrics recorder not installed");
    };
    let stats = from_text(&handle.render(), |name| {
        filter.as_ref().is_none_or(|r| r.is_match(name))
    });
    Reply::json(200, &Value::Object(stats))
}

/// One sample line: `name{a="1",b="2"} value`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(String, String)>,
    value: f64,
}

fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let (series, value) = line.trim_end().rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="1",b="x\"y"` (escapes `\\`, `\"`, `\n` undone).
fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim_start_matches(',').to_owned(), value));
        rest = after.get(end + 1..)?.trim_start_matches(',');
    }
    Some(out)
}

/// `name{a="1",b="2"}` (just `name` without labels), escaped as Prometheus does.
fn key(name: &str, labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// A histogram or summary series being gathered.
#[derive(Default)]
struct Distribution {
    /// (upper bound, cumulative count), histograms.
    buckets: Vec<(f64, f64)>,
    /// (quantile, value), summaries.
    quantiles: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

impl Distribution {
    fn quantile(&self, q: f64) -> Option<f64> {
        if let Some((_, v)) = self.quantiles.iter().find(|(x, _)| (x - q).abs() < 1e-9) {
            return Some(*v);
        }
        bucket_quantile(q, &self.buckets)
    }

    fn to_json(&self) -> Value {
        json!({
            "count": number(self.count),
            "sum": number(self.sum),
            "p50": self.quantile(0.5).map_or(Value::Null, number),
            "p99": self.quantile(0.99).map_or(Value::Null, number),
        })
    }
}

/// The `q` quantile of cumulative `buckets`, interpolated linearly inside
/// the bucket it falls in (the lowest bucket starts at 0); in the `+Inf`
/// bucket, the highest finite bound. `None` without observations.
fn bucket_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in &buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            if width <= 0.0 {
                return Some(bound);
            }
            return Some(lower.0 + (bound - lower.0) * (rank - lower.1) / width);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

fn number(v: f64) -> Value {
    // JSON has no NaN or infinity.
    serde_json::Number::from_f64(v).map_or(Value::Null, |n| {
        if v.fract() == 0.0 && v.abs() < 9e15 {
            json!(v as i64)
        } else {
            Value::Number(n)
        }
    })
}

/// Turn a Prometheus text exposition into `{"name{labels}": value}`,
/// keeping the metrics whose name `keep` accepts.
pub fn from_text(text: &str, keep: impl Fn(&str) -> bool) -> Map<String, Value> {
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut out = BTreeMap::new();
    let mut dists: BTreeMap<String, Distribution> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                types.insert(name, kind.trim());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some(s) = parse_sample(line) else {
            continue;
        };
        // A histogram's or summary's series: name_bucket / name_sum / name_count / name{quantile}.
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = s.name.strip_suffix(suffix)?;
                matches!(types.get(base), Some(&"histogram" | &"summary"))
                    .then_some((base, *suffix))
            })
            .or_else(|| {
                matches!(types.get(s.name), Some(&"summary" | &"histogram")).then_some((s.name, ""))
            });
        let Some((base, part)) = base else {
            if keep(s.name) {
                out.insert(key(s.name, &s.labels), number(s.value));
            }
            continue;
        };
        if !keep(base) {
            continue;
        }
        let special = |k: &str| k == "le" || k == "quantile";
        let rest: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| !special(k))
            .cloned()
            .collect();
        let bound = s
            .labels
            .iter()
            .find(|(k, _)| special(k))
            .and_then(|(_, v)| match v.as_str() {
                "+Inf" => Some(f64::INFINITY),
                v => v.parse::<f64>().ok(),
            });
        let d = dists.entry(key(base, &rest)).or_default();
        match (part, bound) {
            ("_bucket", Some(le)) => d.buckets.push((le, s.value)),
            ("_sum", _) => d.sum = s.value,
            ("_count", _) => d.count = s.value,
            ("", Some(q)) => d.quantiles.push((q, s.value)),
            _ => {}
        }
    }
    for (k, d) in dists {
        out.insert(k, d.to_json());
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    const TEXT: &str = r#"# TYPE switchyard_requests_total counter
switchyard_requests_total{listener="edge",protocol="redis"} 7
switchyard_requests_total{listener="edge",protocol="http1"} 2

# TYPE switchyard_downstream_connections_active gauge
switchyard_downstream_connections_active{listener="edge",protocol="redis"} 1
# TYPE switchyard_request_duration_seconds histogram
switchyard_request_duration_seconds_bucket{listener="edge",protocol="redis",le="0.001"} 2
switchyard_request_duration_seconds_bucket{listener="edge",protocol="redis",le="0.01"} 6
switchyard_request_duration_seconds_bucket{listener="edge",protocol="redis",le="0.1"} 10
switchyard_request_duration_seconds_bucket{listener="edge",protocol="redis",le="+Inf"} 10
switchyard_request_duration_seconds_sum{listener="edge",protocol="redis"} 0.25
switchyard_request_duration_seconds_count{listener="edge",protocol="redis"} 10
# TYPE lag summary
lag{quantile="0.5"} 3
lag{quantile="0.99"} 9.5
lag_sum 30
lag_count 8
odd{path="a\"b\\c"} 1
"#;

    #[test]
    fn counters_gauges_histograms_and_summaries() {
        let all = super::from_text(TEXT, |_| true);
        assert_eq!(
            all["switchyard_requests_total{listener=\"edge\",protocol=\"redis\"}"],
            json!(7)
        );
        assert_eq!(
            all["switchyard_downstream_connections_active{listener=\"edge\",protocol=\"redis\"}"],
            json!(1)
        );
        // p50: rank 5 of 10 falls in (0.001, 0.01] holding ranks 3..=6: 0.001 + 0.009 * 3/4.
        let h = &all["switchyard_request_duration_seconds{listener=\"edge\",protocol=\"redis\"}"];
        assert_eq!(h["count"], json!(10));
        assert_eq!(h["sum"], json!(0.25));
        let p50 = h["p50"].as_f64().unwrap();
        assert!((p50 - 0.00775).abs() < 1e-12, "{p50}");
        let p99 = h["p99"].as_f64().unwrap();
        assert!((p99 - (0.01 + 0.09 * 3.9 / 4.0)).abs() < 1e-12, "{p99}");
        assert_eq!(
            all["lag"],
            json!({"count": 8, "sum": 30, "p50": 3, "p99": 9.5})
        );
        assert_eq!(all["odd{path=\"a\\\"b\\\\c\"}"], json!(1));
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn filters_by_name() {
        let re = regex::Regex::new("requests").unwrap();
        let some = super::from_text(TEXT, |n| re.is_match(n));
        assert_eq!(some.len(), 2, "{some:?}");
        let re = regex::Regex::new("duration").unwrap();
        let some = super::from_text(TEXT, |n| re.is_match(n));
        assert_eq!(some.len(), 1, "{some:?}");
    }

    #[test]
    fn quantiles_at_the_edges() {
        assert_eq!(super::bucket_quantile(0.5, &[]), None);
        assert_eq!(
            super::bucket_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        // Everything above the last finite bound: that bound.
        assert_eq!(
            super::bucket_quantile(0.99, &[(1.0, 0.0), (f64::INFINITY, 4.0)]),
            Some(1.0)
        );
    }
}
