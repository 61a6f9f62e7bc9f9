//! The store overview (`/ui/store`): the store's statistics (admin tokens, as for
//! `/v1/admin/stats`), its dedup and compression ratios, and a chart of artifacts and bytes over
//! time drawn as inline SVG on the server. The chart reads at most [`CHART_ARTIFACTS`] of the
//! newest artifacts (by the time index, newest first), and says so when there are more.

use chrono::{DateTime, Utc};
use maud::{html, Markup};

use cairn::{Query, Stats};

use super::layout;
use super::{blocking, Html, Ui, UiResult};

/// The most artifacts the chart reads.
pub const CHART_ARTIFACTS: usize = 10_000;
/// Buckets (points) of the chart.
pub const BUCKETS: usize = 24;

/// Cumulative counts at the end of each time bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The first and last times.
    pub span: (DateTime<Utc>, DateTime<Utc>),
    /// Artifacts created up to the end of each bucket.
    pub artifacts: Vec<u64>,
    /// Bytes (logical) created up to the end of each bucket.
    pub bytes: Vec<u64>,
}

/// Buckets (time, size) points into `n` equal time spans, cumulatively.
pub fn series(points: &[(DateTime<Utc>, u64)], n: usize) -> Option<Series> {
    let first = points.iter().map(|p| p.0).min()?;
    let last = points.iter().map(|p| p.0).max()?;
    let n = n.max(1);
    let total_ms = (last - first).num_milliseconds().max(1) as f64;
    let mut counts = vec![0u64; n];
    let mut bytes = vec![0u64; n];
    for (t, size) in points {
        let f = (*t - first).num_milliseconds() as f64 / total_ms;
        let i = ((f * n as f64) as usize).min(n - 1);
        counts[i] += 1;
        bytes[i] += size;
    }
    for i in 1..n {
        counts[i] += counts[i - 1];
        bytes[i] += bytes[i - 1];
    }
    Some(Series {
        span: (first, last),
        artifacts: counts,
        bytes,
    })
}

/// One line chart as inline SVG (`role="img"` with a label, and the numbers in a table too).
pub fn line_chart(label: &str, values: &[u64], class: &str, fmt: &dyn Fn(u64) -> String) -> Markup {
    let (w, h, pad) = (600.0f64, 160.0f64, 8.0f64);
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if values.len() > 1 {
        (w - 2.0 * pad) / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                pad + step * i as f64,
                h - pad - (*v as f64 / max) * (h - 2.0 * pad)
            )
        })
        .collect();
    let last = values.last().copied().unwrap_or(0);
    html! {
        figure.chart {
            svg viewBox=(format!("0 0 {w} {h}")) role="img" aria-label=(format!("{label}: rising to {}", fmt(last))) preserveAspectRatio="none" {
                line.axis x1=(pad) y1=(h - pad) x2=(w - pad) y2=(h - pad) {}
                line.axis x1=(pad) y1=(pad) x2=(pad) y2=(h - pad) {}
                polyline class=(class) points=(points.join(" ")) {}
            }
            figcaption { (label) ": " strong { (fmt(last)) } " (max " (fmt(max as u64)) ")" }
        }
    }
}

fn stats_block(s: &Stats) -> Markup {
    html! {
        dl.facts.stats {
            dt { "Sessions" } dd #stat-sessions { (s.sessions) }
            dt { "Artifacts" } dd #stat-artifacts { (s.artifacts) }
            dt { "Distinct contents" } dd { (s.blobs) }
            dt { "Logical bytes" } dd { (layout::size(s.logical_bytes)) }
            dt { "Content bytes (after dedup)" } dd { (layout::size(s.content_bytes)) }
            dt { "Stored bytes (after compression)" } dd { (layout::size(s.stored_bytes)) }
            dt { "Dedup ratio" } dd #dedup-ratio { (format!("{:.2}×", s.dedup_ratio)) }
            dt { "Compression ratio" } dd #compression-ratio { (format!("{:.2}×", s.compression_ratio)) }
        }
        div.cols {
            table.compact {
                caption { "Sessions by status" }
                tbody { @for (k, v) in &s.sessions_by_status { tr { th scope="row" { a href=(format!("/ui?status={k}")) { (k) } } td.num { (v) } } } }
            }
            table.compact {
                caption { "Artifacts by kind" }
                tbody { @for (k, v) in &s.artifacts_by_kind { tr { th scope="row" { a href=(format!("/ui/query?kind={k}")) { (k) } } td.num { (v) } } } }
            }
        }
    }
}

/// `GET /ui/store`.
pub async fn overview(ui: Ui) -> UiResult {
    let chrome = ui.chrome();
    let admin = ui.principal.admin;
    let store = ui.store;
    blocking(move || {
        let stats = if admin { Some(store.stats()?) } else { None };
        let mut points = Vec::new();
        let mut cursor: Option<String> = None;
        let mut more = false;
        while points.len() < CHART_ARTIFACTS {
            let mut q = Query::new().descending(true).limit(1000);
            if let Some(c) = &cursor {
                q = q.cursor(c.clone());
            }
            let page = store.query(&q)?;
            points.extend(page.items.iter().map(|a| (a.created_at, a.size)));
            match page.next_cursor {
                Some(c) => {
                    cursor = Some(c);
                    more = true;
                }
                None => {
                    more = false;
                    break;
                }
            }
        }
        let chart = series(&points, BUCKETS);
        let body = html! {
            h1 { "Store" }
            @match &stats {
                Some(s) => (stats_block(s)),
                None => p.hint { "The store's statistics need an admin token (" code { "cairn token create --admin" } "), as " code { "/v1/admin/stats" } " does." },
            }
            section aria-labelledby="h-chart" {
                h2 #h-chart { "Artifacts and bytes over time" }
                @match &chart {
                    None => p.empty { "No artifacts yet." },
                    Some(c) => {
                        p.hint {
                            @if more { "The newest " (points.len()) " artifacts" } @else { "All " (points.len()) " artifacts" }
                            ", from " (layout::time(c.span.0)) " to " (layout::time(c.span.1)) ", in " (BUCKETS) " equal steps."
                        }
                        div.cols {
                            (line_chart("Artifacts", &c.artifacts, "series-a", &|v| v.to_string()))
                            (line_chart("Bytes", &c.bytes, "series-b", &layout::size))
                        }
                    },
                }
            }
        };
        Ok(Html(layout::page("Store", Some(&chrome), body)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_cumulative_per_bucket() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let pts = [
            (t0, 10),
            (t0 + chrono::Duration::seconds(5), 20),
            (t0 + chrono::Duration::seconds(10), 30),
        ];
        let s = series(&pts, 2).unwrap();
        assert_eq!(s.artifacts, [1, 3]);
        assert_eq!(s.bytes, [10, 60]);
        assert!(series(&[], 4).is_none());
        let one = series(&pts[..1], 3).unwrap();
        assert_eq!(one.artifacts, [1, 1, 1]);
    }

    #[test]
    fn charts_are_labelled_svg() {
        let h = line_chart("Artifacts", &[1, 2, 5], "series-a", &|v| v.to_string()).into_string();
        assert!(h.contains("<svg") && h.contains("role=\"img\""));
        assert!(h.contains("polyline"));
        assert!(h.contains("rising to 5"));
    }
}
