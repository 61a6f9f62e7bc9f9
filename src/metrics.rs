//! Per-session budgets and metrics, and statistics across sessions.
//!
//! Counters live in the `M` table (`M` + session id + metric name -> u64 big-endian). Every update
//! is a read-modify-write inside one batch under the store's write lock, so totals are exact under
//! any number of concurrent writers and survive restarts like every other record. See
//! `Store::record_metrics`, `Store::increment_iterations` and `Store::session_stats`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::session::SessionStatus;

/// Longest tool or custom counter name, in bytes.
pub const MAX_METRIC_NAME_LEN: usize = 128;

pub(crate) const ITERATIONS: &str = "iterations";
pub(crate) const REQUESTS: &str = "requests";
pub(crate) const ERRORS: &str = "errors";
pub(crate) const PROCESSING_MICROS: &str = "processing_micros";
pub(crate) const INPUT_TOKENS: &str = "input_tokens";
pub(crate) const OUTPUT_TOKENS: &str = "output_tokens";
pub(crate) const COST_MICROS: &str = "cost_micros";
/// Milliseconds since the Unix epoch of the last metrics or iteration update (expiry reads it).
pub(crate) const LAST_ACTIVITY_MS: &str = "last_activity_ms";
pub(crate) const TOOL_PREFIX: &str = "tool/";
pub(crate) const CUSTOM_PREFIX: &str = "custom/";

/// A set of increments to apply to one session's counters in one atomic step.
///
/// ```
/// use std::time::Duration;
/// let d = cairn::MetricsDelta::new()
///     .requests(1)
///     .input_tokens(1200)
///     .output_tokens(300)
///     .cost_micros(4_500)
///     .processing_time(Duration::from_millis(850))
///     .tool_call("bash");
/// assert!(!d.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsDelta {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) processing_micros: u64,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) cost_micros: u64,
    pub(crate) tool_calls: BTreeMap<String, u64>,
    pub(crate) custom: BTreeMap<String, u64>,
}

impl MetricsDelta {
    /// No increments.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `n` requests (for example LLM calls).
    pub fn requests(mut self, n: u64) -> Self {
        self.requests = self.requests.saturating_add(n);
        self
    }
    /// Adds `n` errors.
    pub fn errors(mut self, n: u64) -> Self {
        self.errors = self.errors.saturating_add(n);
        self
    }
    /// Adds processing time (kept in microseconds).
    pub fn processing_time(mut self, d: Duration) -> Self {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.processing_micros = self.processing_micros.saturating_add(micros);
        self
    }
    /// Adds input (prompt) tokens.
    pub fn input_tokens(mut self, n: u64) -> Self {
        self.input_tokens = self.input_tokens.saturating_add(n);
        self
    }
    /// Adds output (completion) tokens.
    pub fn output_tokens(mut self, n: u64) -> Self {
        self.output_tokens = self.output_tokens.saturating_add(n);
        self
    }
    /// Adds cost in millionths of your currency unit (integers keep sums exact; 1_000_000 = 1.0).
    pub fn cost_micros(mut self, n: u64) -> Self {
        self.cost_micros = self.cost_micros.saturating_add(n);
        self
    }
    /// Counts one call of the tool `name`.
    pub fn tool_call(self, name: impl Into<String>) -> Self {
        self.tool_calls_n(name, 1)
    }
    /// Counts `n` calls of the tool `name`.
    pub fn tool_calls_n(mut self, name: impl Into<String>, n: u64) -> Self {
        let e = self.tool_calls.entry(name.into()).or_insert(0);
        *e = e.saturating_add(n);
        self
    }
    /// Adds `n` to a caller-named counter.
    pub fn counter(mut self, name: impl Into<String>, n: u64) -> Self {
        let e = self.custom.entry(name.into()).or_insert(0);
        *e = e.saturating_add(n);
        self
    }
    /// True when applying it would change nothing.
    pub fn is_empty(&self) -> bool {
        self.entries().all(|(_, n)| n == 0)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (what, names) in [
            ("tool name", &self.tool_calls),
            ("counter name", &self.custom),
        ] {
            for name in names.keys() {
                validate_metric_name(what, name)?;
            }
        }
        Ok(())
    }

    /// Every (stored metric name, increment), zeros included.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        [
            (REQUESTS, self.requests),
            (ERRORS, self.errors),
            (PROCESSING_MICROS, self.processing_micros),
            (INPUT_TOKENS, self.input_tokens),
            (OUTPUT_TOKENS, self.output_tokens),
            (COST_MICROS, self.cost_micros),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(
            self.tool_calls
                .iter()
                .map(|(k, v)| (format!("{TOOL_PREFIX}{k}"), *v)),
        )
        .chain(
            self.custom
                .iter()
                .map(|(k, v)| (format!("{CUSTOM_PREFIX}{k}"), *v)),
        )
    }
}

fn validate_metric_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_METRIC_NAME_LEN || name.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(
            what,
            format!(
                "{:?}: use 1 to {MAX_METRIC_NAME_LEN} bytes of printable text, such as \"bash\"",
                crate::artifact::truncate_for_message(name)
            ),
        ));
    }
    Ok(())
}

/// A session's counters as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionMetrics {
    /// Iterations counted with `Store::increment_iterations`.
    pub iterations: u64,
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Processing time in microseconds.
    pub processing_micros: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in millionths of a currency unit.
    pub cost_micros: u64,
    /// Calls by tool name.
    pub tool_calls: BTreeMap<String, u64>,
    /// Caller-named counters.
    pub custom: BTreeMap<String, u64>,
    /// When the counters were last updated (milliseconds since the Unix epoch), if ever.
    pub last_activity_ms: Option<u64>,
}

impl SessionMetrics {
    /// Input plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }
    /// Total tool calls.
    pub fn total_tool_calls(&self) -> u64 {
        self.tool_calls
            .values()
            .fold(0u64, |a, b| a.saturating_add(*b))
    }
    /// Cost in currency units.
    pub fn cost(&self) -> f64 {
        self.cost_micros as f64 / 1e6
    }
    /// Processing time.
    pub fn processing_time(&self) -> Duration {
        Duration::from_micros(self.processing_micros)
    }
    /// errors / requests, or `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }

    /// Sets one stored metric (name as in the `M` table) from its value.
    pub(crate) fn set(&mut self, name: &str, v: u64) {
        match name {
            ITERATIONS => self.iterations = v,
            REQUESTS => self.requests = v,
            ERRORS => self.errors = v,
            PROCESSING_MICROS => self.processing_micros = v,
            INPUT_TOKENS => self.input_tokens = v,
            OUTPUT_TOKENS => self.output_tokens = v,
            COST_MICROS => self.cost_micros = v,
            LAST_ACTIVITY_MS => self.last_activity_ms = Some(v),
            other => {
                if let Some(t) = other.strip_prefix(TOOL_PREFIX) {
                    self.tool_calls.insert(t.to_string(), v);
                } else if let Some(c) = other.strip_prefix(CUSTOM_PREFIX) {
                    self.custom.insert(c.to_string(), v);
                }
                // Unknown names come from a newer Cairn: ignored, not an error.
            }
        }
    }
}

/// The result of counting one iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IterationOutcome {
    /// Iterations counted so far, including this one.
    pub iterations: u64,
    /// The session's budget, if any.
    pub max_iterations: Option<u64>,
    /// The session's status after this iteration: `timed_out` when this one used up the budget.
    pub status: SessionStatus,
}

impl IterationOutcome {
    /// Iterations left before the budget is reached (`None`: no budget).
    pub fn remaining(&self) -> Option<u64> {
        self.max_iterations
            .map(|m| m.saturating_sub(self.iterations))
    }
    /// True when this iteration used up the budget and the session is now `timed_out`.
    pub fn exhausted(&self) -> bool {
        self.status == SessionStatus::TimedOut
    }
}

/// Summary of a set of numbers: count, sum, mean and nearest-rank percentiles.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Distribution {
    /// How many values.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// Smallest (0 when empty).
    pub min: u64,
    /// Largest (0 when empty).
    pub max: u64,
    /// Mean (0.0 when empty).
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: u64,
    /// 90th percentile (nearest rank).
    pub p90: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
}

impl Distribution {
    /// Summarises `values` (sorted in place).
    pub fn from_values(values: &mut [u64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let sum = values.iter().fold(0u64, |a, b| a.saturating_add(*b));
        let n = values.len();
        Self {
            count: n as u64,
            sum,
            min: values[0],
            max: values[n - 1],
            mean: values.iter().map(|v| *v as f64).sum::<f64>() / n as f64,
            p50: percentile(values, 50),
            p90: percentile(values, 90),
            p99: percentile(values, 99),
        }
    }
}

/// Nearest-rank percentile of sorted, non-empty `v`: the value at rank ceil(p/100 * n).
pub(crate) fn percentile(v: &[u64], p: u32) -> u64 {
    let n = v.len();
    let rank = (p as usize * n).div_ceil(100).clamp(1, n);
    v[rank - 1]
}

/// Statistics over the sessions a `SessionFilter` selects. See `Store::session_stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionStats {
    /// Sessions that matched.
    pub sessions: u64,
    /// Matched sessions by status name (every status, zeros included).
    pub by_status: BTreeMap<String, u64>,
    /// Matched sessions in a terminal state.
    pub finished: u64,
    /// completed / finished, or `None` when none has finished.
    pub success_rate: Option<f64>,
    /// Iterations per session, over every matched session.
    pub iterations: Distribution,
    /// Wall-clock duration (created to ended) in milliseconds, over finished sessions.
    pub duration_ms: Distribution,
    /// Total requests.
    pub requests: u64,
    /// Total errors.
    pub errors: u64,
    /// errors / requests, or `None` without requests.
    pub error_rate: Option<f64>,
    /// Total input tokens.
    pub input_tokens: u64,
    /// Total output tokens.
    pub output_tokens: u64,
    /// Input plus output tokens.
    pub total_tokens: u64,
    /// Total cost in millionths of a currency unit.
    pub cost_micros: u64,
    /// Total processing time in microseconds.
    pub processing_micros: u64,
    /// Tool calls by tool name.
    pub tool_calls: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let d = Distribution::from_values(&mut v);
        assert_eq!((d.count, d.sum, d.min, d.max), (100, 5050, 1, 100));
        assert_eq!((d.p50, d.p90, d.p99), (50, 90, 99));
        assert!((d.mean - 50.5).abs() < 1e-9);
        let d = Distribution::from_values(&mut [7]);
        assert_eq!((d.p50, d.p90, d.p99, d.min, d.max), (7, 7, 7, 7, 7));
        let d = Distribution::from_values(&mut [3, 1, 2, 4]);
        assert_eq!((d.p50, d.p90), (2, 4));
        assert_eq!(Distribution::from_values(&mut []), Distribution::default());
    }

    #[test]
    fn delta_entries_and_validation() {
        let d = MetricsDelta::new()
            .tool_call("bash")
            .tool_call("bash")
            .counter("retries", 3);
        let e: BTreeMap<String, u64> = d.entries().collect();
        assert_eq!(e["tool/bash"], 2);
        assert_eq!(e["custom/retries"], 3);
        assert!(d.validate().is_ok());
        assert!(MetricsDelta::new().is_empty());
        let bad = MetricsDelta::new().tool_call("");
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tool name"));
        assert!(MetricsDelta::new().counter("a\nb", 1).validate().is_err());
        let mut m = SessionMetrics::default();
        for (k, v) in e {
            m.set(&k, v);
        }
        assert_eq!(m.tool_calls["bash"], 2);
        assert_eq!(m.custom["retries"], 3);
        assert_eq!(m.total_tool_calls(), 2);
    }
}
