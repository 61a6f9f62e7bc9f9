//! Prometheus text exposition, written by hand: requests by route template, method and status,
//! a latency histogram per route, bytes in and out, and the open stores' counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use cairn::Stats;

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's counters. Cheap to update from any request.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    rejected_overload: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Escapes a label value for the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Records one finished request (its response head was produced).
    pub fn record(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        *lock(&self.requests)
            .entry((route.to_string(), method.to_string(), status))
            .or_insert(0) += 1;
        let secs = elapsed.as_secs_f64();
        let mut lat = lock(&self.latency);
        let h = lat.entry(route.to_string()).or_default();
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Adds request body bytes received.
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds response body bytes sent.
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a request refused by the concurrency cap.
    pub fn add_overload(&self) {
        self.rejected_overload.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with the given stores' counters.
    pub fn render(&self, stores: &[(String, Stats)]) -> String {
        let mut o = String::new();
        o.push_str("# HELP cairn_http_requests_total HTTP requests by route template, method and status.\n");
        o.push_str("# TYPE cairn_http_requests_total counter\n");
        for ((route, method, status), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                o,
                "cairn_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                label(route),
                label(method)
            );
        }
        o.push_str("# HELP cairn_http_request_duration_seconds Time to the response head, by route template.\n");
        o.push_str("# TYPE cairn_http_request_duration_seconds histogram\n");
        for (route, h) in lock(&self.latency).iter() {
            let r = label(route);
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "cairn_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"{b}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                o,
                "cairn_http_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                o,
                "cairn_http_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                o,
                "cairn_http_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count
            );
        }
        let counters = [
            (
                "cairn_http_request_bytes_total",
                "Request body bytes received.",
                self.bytes_in.load(Ordering::Relaxed),
            ),
            (
                "cairn_http_response_bytes_total",
                "Response body bytes sent.",
                self.bytes_out.load(Ordering::Relaxed),
            ),
            (
                "cairn_http_overload_rejections_total",
                "Requests refused with 503 by the concurrency cap.",
                self.rejected_overload.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        type Get = fn(&Stats) -> u64;
        let gauges: [(&str, &str, Get); 6] = [
            (
                "cairn_store_sessions",
                "Sessions in the tenant's store.",
                |s| s.sessions,
            ),
            (
                "cairn_store_artifacts",
                "Artifacts in the tenant's store.",
                |s| s.artifacts,
            ),
            (
                "cairn_store_blobs",
                "Distinct content blobs in the tenant's store.",
                |s| s.blobs,
            ),
            ("cairn_store_logical_bytes", "Sum of artifact sizes.", |s| {
                s.logical_bytes
            }),
            (
                "cairn_store_content_bytes",
                "Distinct content before compression.",
                |s| s.content_bytes,
            ),
            (
                "cairn_store_stored_bytes",
                "Bytes stored after dedup and compression.",
                |s| s.stored_bytes,
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (tenant, s) in stores {
                let _ = writeln!(o, "{name}{{tenant=\"{}\"}} {}", label(tenant), get(s));
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.record("/v1/x", "GET", 200, Duration::from_millis(3));
        m.record("/v1/x", "GET", 404, Duration::from_secs(20));
        let t = m.render(&[]);
        assert!(t.contains(
            "cairn_http_requests_total{route=\"/v1/x\",method=\"GET\",status=\"404\"} 1"
        ));
        assert!(t.contains(
            "cairn_http_request_duration_seconds_bucket{route=\"/v1/x\",le=\"0.005\"} 1"
        ));
        assert!(
            t.contains("cairn_http_request_duration_seconds_bucket{route=\"/v1/x\",le=\"+Inf\"} 2")
        );
        assert!(t.contains("cairn_http_request_duration_seconds_count{route=\"/v1/x\"} 2"));
    }
}
