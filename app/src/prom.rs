//! Metrics in Prometheus's text exposition format (version 0.0.4): a small registry of
//! counters and histograms that live in a process, and a writer for families computed at
//! scrape time (gauges read from the cache).
//!
//! Labels are bounded by the caller: a route label is the route's pattern
//! (`/api/v1/rollouts/{id}/timeline`), never the path a client sent, so the number of series
//! does not grow with requests.
//!
//! Not a Prometheus client library: no push, no exemplars, no summaries, no OpenMetrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// Latency buckets in seconds, from a cached read to a slow export.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Histogram {
    /// Cumulative counts per bucket (the last is +Inf).
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    counters: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
    help: BTreeMap<&'static str, &'static str>,
}

/// Counters and histograms a process keeps, by family name and labels.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `by` to counter `name{labels}` (created at 0 with `help`).
    pub fn add(&self, name: &'static str, help: &'static str, pairs: &[(&str, &str)], by: f64) {
        let mut inner = self.lock();
        inner.help.insert(name, help);
        *inner
            .counters
            .entry(name)
            .or_default()
            .entry(labels(pairs))
            .or_default() += by;
    }

    /// Records `value` in histogram `name{labels}` with [`LATENCY_BUCKETS`].
    pub fn observe(
        &self,
        name: &'static str,
        help: &'static str,
        pairs: &[(&str, &str)],
        value: f64,
    ) {
        let mut inner = self.lock();
        inner.help.insert(name, help);
        let h = inner
            .histograms
            .entry(name)
            .or_default()
            .entry(labels(pairs))
            .or_insert_with(|| Histogram {
                buckets: vec![0; LATENCY_BUCKETS.len() + 1],
                ..Histogram::default()
            });
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if value <= *bound {
                h.buckets[i] += 1;
            }
        }
        if let Some(inf) = h.buckets.last_mut() {
            *inf += 1;
        }
        h.sum += value;
        h.count += 1;
    }

    /// Writes every family of the registry to `out`.
    pub fn render(&self, out: &mut Exposition) {
        let inner = self.lock();
        for (name, series) in &inner.counters {
            out.family(name, inner.help.get(name).copied().unwrap_or(""), "counter");
            for (l, v) in series {
                out.sample(name, l, *v);
            }
        }
        for (name, series) in &inner.histograms {
            out.family(
                name,
                inner.help.get(name).copied().unwrap_or(""),
                "histogram",
            );
            for (l, h) in series {
                let bucket = format!("{name}_bucket");
                for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                    let mut with_le = l.clone();
                    with_le.push(("le".to_owned(), format_value(*bound)));
                    out.sample(&bucket, &with_le, h.buckets[i] as f64);
                }
                let mut inf = l.clone();
                inf.push(("le".to_owned(), "+Inf".to_owned()));
                out.sample(&bucket, &inf, h.count as f64);
                out.sample(&format!("{name}_sum"), l, h.sum);
                out.sample(&format!("{name}_count"), l, h.count as f64);
            }
        }
    }
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A text exposition being written: `# HELP` and `# TYPE` once per family, then its samples.
#[derive(Default)]
pub struct Exposition {
    text: String,
    families: Vec<String>,
}

impl Exposition {
    /// Starts family `name` (once; later calls with the same name add nothing).
    pub fn family(&mut self, name: &str, help: &str, kind: &str) {
        if self.families.iter().any(|f| f == name) {
            return;
        }
        self.families.push(name.to_owned());
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(String, String)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    /// A gauge family with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(&[(&str, &str)], f64)]) {
        self.family(name, help, "gauge");
        for (pairs, v) in samples {
            self.sample(name, &labels(pairs), *v);
        }
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_in_the_text_format() {
        let r = Registry::default();
        r.add(
            "convoy_api_requests_total",
            "API requests.",
            &[("route", "/x"), ("status", "200")],
            1.0,
        );
        r.add(
            "convoy_api_requests_total",
            "API requests.",
            &[("route", "/x"), ("status", "200")],
            1.0,
        );
        r.observe(
            "convoy_api_request_duration_seconds",
            "Latency.",
            &[("route", "/x")],
            0.02,
        );
        let mut out = Exposition::default();
        r.render(&mut out);
        out.gauge(
            "convoy_up",
            "Whether \"it\" runs.",
            &[(&[("who", "a\"b")], 1.0)],
        );
        let text = out.finish();
        assert!(text.contains("# TYPE convoy_api_requests_total counter\n"));
        assert!(text.contains("convoy_api_requests_total{route=\"/x\",status=\"200\"} 2\n"));
        assert!(
            text.contains(
                "convoy_api_request_duration_seconds_bucket{route=\"/x\",le=\"0.01\"} 0\n"
            )
        );
        assert!(
            text.contains(
                "convoy_api_request_duration_seconds_bucket{route=\"/x\",le=\"0.025\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "convoy_api_request_duration_seconds_bucket{route=\"/x\",le=\"+Inf\"} 1\n"
            )
        );
        assert!(text.contains("convoy_api_request_duration_seconds_count{route=\"/x\"} 1\n"));
        assert!(text.contains("convoy_up{who=\"a\\\"b\"} 1\n"), "{text}");
    }
}
