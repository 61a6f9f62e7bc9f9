//! Budgets, per-session counters and statistics across sessions.
use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cairn::*;
use chrono::Utc;

fn delta_for(thread: u64, i: u64) -> MetricsDelta {
    MetricsDelta::new()
        .requests(1)
        .errors(u64::from(i % 5 == 0))
        .input_tokens(100 + thread)
        .output_tokens(i)
        .cost_micros(250)
        .processing_time(Duration::from_micros(1000 + i))
        .tool_call(if i % 2 == 0 { "bash" } else { "grep" })
}

fn expected(threads: u64, per: u64) -> SessionMetrics {
    let mut m = SessionMetrics::default();
    for t in 0..threads {
        for i in 0..per {
            m.requests += 1;
            m.errors += u64::from(i % 5 == 0);
            m.input_tokens += 100 + t;
            m.output_tokens += i;
            m.cost_micros += 250;
            m.processing_micros += 1000 + i;
            let tool = if i % 2 == 0 { "bash" } else { "grep" };
            *m.tool_calls.entry(tool.to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn without_activity(mut m: SessionMetrics) -> SessionMetrics {
    m.last_activity_ms = None;
    m
}

#[test]
fn counters_are_exact_under_concurrency_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let (threads, per) = (8u64, 150u64);
    let (a, b) = {
        let store = Store::open_with(
            &path,
            Config::default().durability(Durability::Group { interval_ms: 50 }),
        )
        .unwrap();
        let a = store
            .create_session(NewSession::new().name("a"))
            .unwrap()
            .id;
        let b = store
            .create_session(NewSession::new().name("b"))
            .unwrap()
            .id;
        let store = Arc::new(store);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        store.record_metrics(a, &delta_for(t, i)).unwrap();
                        store
                            .record_metrics(b, &MetricsDelta::new().requests(2))
                            .unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let m = store.metrics(a).unwrap();
        assert_eq!(without_activity(m.clone()), expected(threads, per));
        assert!(m.last_activity_ms.is_some());
        assert_eq!(store.metrics(b).unwrap().requests, 2 * threads * per);
        store.flush().unwrap();
        (a, b)
    };
    let store = Store::open(&path).unwrap();
    let m = store.metrics(a).unwrap();
    assert_eq!(without_activity(m), expected(threads, per));
    assert_eq!(store.metrics(b).unwrap().requests, 2 * threads * per);
    // And they keep counting after the restart.
    let m = store
        .record_metrics(a, &MetricsDelta::new().tool_call("bash"))
        .unwrap();
    assert_eq!(
        m.tool_calls["bash"],
        expected(threads, per).tool_calls["bash"] + 1
    );
    assert_eq!(m.requests, threads * per);
}

#[test]
fn record_metrics_validates_and_changes_nothing_on_error() {
    let store = Store::memory();
    let s = store.create_session(NewSession::new()).unwrap().id;
    store
        .record_metrics(s, &MetricsDelta::new().requests(3).tool_call("bash"))
        .unwrap();
    let before = store.metrics(s).unwrap();
    let e = store
        .record_metrics(s, &MetricsDelta::new().requests(1).tool_call(""))
        .unwrap_err();
    assert!(e.to_string().contains("tool name"), "{e}");
    assert_eq!(
        store.metrics(s).unwrap(),
        before,
        "a refused update changes nothing"
    );
    store
        .record_metrics(s, &MetricsDelta::new().cost_micros(1))
        .unwrap();
    let e = store
        .record_metrics(s, &MetricsDelta::new().requests(1).cost_micros(u64::MAX))
        .unwrap_err();
    assert_eq!(e.code(), "limit_exceeded", "{e}");
    assert!(e.to_string().contains("cost_micros"), "{e}");
    let after = store.metrics(s).unwrap();
    assert_eq!(
        after.requests, before.requests,
        "a refused update changes nothing"
    );
    assert_eq!(after.cost_micros, 1);
    let missing = SessionId::new();
    assert!(store
        .record_metrics(missing, &MetricsDelta::new().requests(1))
        .unwrap_err()
        .is_not_found());
    assert!(store.metrics(missing).unwrap_err().is_not_found());
    // A finished session still takes late accounting.
    store.complete(s).unwrap();
    assert_eq!(
        store
            .record_metrics(s, &MetricsDelta::new().requests(1))
            .unwrap()
            .requests,
        4
    );
}

fn budget(max: Option<u64>, deadline: Option<chrono::DateTime<Utc>>) -> SessionOptions {
    SessionOptions {
        max_iterations: max,
        deadline,
        ..Default::default()
    }
}

#[test]
fn iteration_budget_times_out_then_refuses() {
    for kind in common::backends() {
        let (store, _d) = common::store(kind, Config::default());
        let s = store
            .create_session(NewSession::new().options(budget(Some(3), None)))
            .unwrap()
            .id;
        let o1 = store.increment_iterations(s).unwrap();
        assert_eq!(
            (o1.iterations, o1.remaining(), o1.exhausted()),
            (1, Some(2), false)
        );
        assert_eq!(store.increment_iterations(s).unwrap().iterations, 2);
        let o3 = store.increment_iterations(s).unwrap();
        assert_eq!(o3.iterations, 3);
        assert!(o3.exhausted());
        assert_eq!(o3.status, SessionStatus::TimedOut);
        let sess = store.session(s).unwrap();
        assert_eq!(sess.status, SessionStatus::TimedOut);
        assert!(
            sess.reason
                .as_deref()
                .unwrap()
                .contains("iteration budget of 3"),
            "{sess:?}"
        );
        let e = store.increment_iterations(s).unwrap_err();
        assert_eq!(e.code(), "session_closed");
        assert!(
            e.to_string().contains("timed_out") && e.to_string().contains("budget"),
            "{e}"
        );
        assert_eq!(
            store.metrics(s).unwrap().iterations,
            3,
            "refused increments are not counted"
        );
        let evs = store.events(s, None, 100).unwrap().items;
        assert!(evs.iter().any(|e| matches!(
            &e.kind,
            EventKind::StatusChanged {
                to: SessionStatus::TimedOut,
                ..
            }
        )));
        // No budget: counts freely.
        let free = store.create_session(NewSession::new()).unwrap().id;
        for i in 1..=10 {
            let o = store.increment_iterations(free).unwrap();
            assert_eq!(
                (o.iterations, o.remaining(), o.status),
                (i, None, SessionStatus::Active)
            );
        }
    }
}

#[test]
fn iteration_budget_is_exact_under_concurrency() {
    let store = Arc::new(Store::memory());
    let s = store
        .create_session(NewSession::new().options(budget(Some(100), None)))
        .unwrap()
        .id;
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let (mut ok, mut exhausted, mut refused) = (0u64, 0u64, 0u64);
                for _ in 0..40 {
                    match store.increment_iterations(s) {
                        Ok(o) => {
                            ok += 1;
                            exhausted += u64::from(o.exhausted());
                        }
                        Err(Error::SessionClosed { status, .. }) => {
                            assert_eq!(status, SessionStatus::TimedOut);
                            refused += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                (ok, exhausted, refused)
            })
        })
        .collect();
    let (mut ok, mut exhausted, mut refused) = (0, 0, 0);
    for h in handles {
        let (a, b, c) = h.join().unwrap();
        ok += a;
        exhausted += b;
        refused += c;
    }
    assert_eq!(ok, 100);
    assert_eq!(exhausted, 1, "exactly one increment reaches the budget");
    assert_eq!(refused, 8 * 40 - 100);
    assert_eq!(store.metrics(s).unwrap().iterations, 100);
    assert_eq!(store.session(s).unwrap().status, SessionStatus::TimedOut);
}

#[test]
fn deadline_times_out_and_other_states_refuse() {
    let store = Store::memory();
    let past = Utc::now() - chrono::Duration::seconds(5);
    let s = store
        .create_session(NewSession::new().options(budget(None, Some(past))))
        .unwrap()
        .id;
    let e = store.increment_iterations(s).unwrap_err();
    assert_eq!(e.code(), "session_closed");
    assert!(e.to_string().contains("deadline"), "{e}");
    let sess = store.session(s).unwrap();
    assert_eq!(sess.status, SessionStatus::TimedOut);
    assert!(sess.reason.unwrap().contains("deadline"));
    assert_eq!(store.metrics(s).unwrap().iterations, 0);

    let future = Utc::now() + chrono::Duration::hours(1);
    let f = store
        .create_session(NewSession::new().options(budget(Some(10), Some(future))))
        .unwrap()
        .id;
    assert_eq!(store.increment_iterations(f).unwrap().remaining(), Some(9));
    store.suspend(f).unwrap();
    let e = store.increment_iterations(f).unwrap_err();
    assert!(
        e.to_string().contains("suspended") && e.to_string().contains("resume"),
        "{e}"
    );
    store.resume(f).unwrap();
    store.complete(f).unwrap();
    let e = store.increment_iterations(f).unwrap_err();
    assert!(e.to_string().contains("completed"), "{e}");
    assert!(store
        .increment_iterations(SessionId::new())
        .unwrap_err()
        .is_not_found());

    // A budget lowered below the count: the next increment times the session out.
    let l = store.create_session(NewSession::new()).unwrap().id;
    for _ in 0..5 {
        store.increment_iterations(l).unwrap();
    }
    store.set_session_options(l, budget(Some(2), None)).unwrap();
    assert!(store.increment_iterations(l).is_err());
    assert_eq!(store.session(l).unwrap().status, SessionStatus::TimedOut);
}

#[test]
fn enforce_budgets_times_out_overdue_live_sessions_only() {
    let store = Store::memory();
    let past = Utc::now() - chrono::Duration::seconds(1);
    let future = Utc::now() + chrono::Duration::hours(1);
    let overdue = store
        .create_session(NewSession::new().options(budget(None, Some(past))))
        .unwrap()
        .id;
    let overdue_suspended = store
        .create_session(NewSession::new().options(budget(None, Some(past))))
        .unwrap()
        .id;
    store.suspend(overdue_suspended).unwrap();
    let done = store
        .create_session(NewSession::new().options(budget(None, Some(past))))
        .unwrap()
        .id;
    store.complete(done).unwrap();
    let fine = store
        .create_session(NewSession::new().options(budget(Some(5), Some(future))))
        .unwrap()
        .id;
    store.increment_iterations(fine).unwrap();
    let lowered = store.create_session(NewSession::new()).unwrap().id;
    store.increment_iterations(lowered).unwrap();
    store
        .set_session_options(lowered, budget(Some(1), None))
        .unwrap();
    let mut got = store.enforce_budgets().unwrap();
    got.sort();
    let mut want = vec![overdue, overdue_suspended, lowered];
    want.sort();
    assert_eq!(got, want);
    for id in want {
        assert_eq!(store.session(id).unwrap().status, SessionStatus::TimedOut);
    }
    assert_eq!(
        store.session(done).unwrap().status,
        SessionStatus::Completed
    );
    assert_eq!(store.session(fine).unwrap().status, SessionStatus::Active);
    assert!(
        store.enforce_budgets().unwrap().is_empty(),
        "a second pass finds nothing"
    );
}

/// Nearest rank, written independently of the library.
fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank - 1]
}

#[test]
fn stats_over_real_agent_runs_match_a_naive_count() {
    let root = common::corpus_dir().join("swe-agent-runs/organized_trajectories");
    let mut runs = Vec::new();
    for (rel, path) in common::files_under(&root) {
        if !rel.ends_with("raw_logs/trajectory.jsonl") {
            continue;
        }
        let instance = rel.split('/').next().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        runs.push((instance, lines));
    }
    assert!(runs.len() >= 10, "corpus has {} runs", runs.len());
    let (store, _d) = common::store(BackendKind::Sled, Config::default());
    let batch = store
        .create_session(NewSession::new().name("batch").tag("swe-bench"))
        .unwrap();
    let mut want_iters = Vec::new();
    let mut want_tools: BTreeMap<String, u64> = BTreeMap::new();
    let (mut completed, mut failed) = (0u64, 0u64);
    let mut want_tokens = 0u64;
    for (instance, lines) in &runs {
        let s = store
            .create_session(
                NewSession::new()
                    .name(instance.clone())
                    .parent(batch.id)
                    .tag("astropy"),
            )
            .unwrap()
            .id;
        let mut iters = 0;
        let mut success = false;
        for l in lines {
            if let Some(action) = l.get("action").and_then(|a| a.as_str()) {
                store.increment_iterations(s).unwrap();
                iters += 1;
                let tokens = l.to_string().len() as u64;
                want_tokens += tokens;
                store
                    .record_metrics(
                        s,
                        &MetricsDelta::new()
                            .requests(1)
                            .input_tokens(tokens)
                            .tool_call(action),
                    )
                    .unwrap();
                *want_tools.entry(action.to_string()).or_insert(0) += 1;
            }
            success |= l.get("success").and_then(|v| v.as_bool()) == Some(true);
        }
        want_iters.push(iters);
        if success {
            store.complete(s).unwrap();
            completed += 1;
        } else {
            store.fail(s, Some("no successful patch")).unwrap();
            failed += 1;
        }
    }
    let st = store
        .session_stats(&SessionFilter::new().parent(batch.id))
        .unwrap();
    want_iters.sort();
    assert_eq!(st.sessions, runs.len() as u64);
    assert_eq!(st.finished, runs.len() as u64);
    assert_eq!(st.by_status["completed"], completed);
    assert_eq!(st.by_status["failed"], failed);
    assert_eq!(st.by_status["active"], 0);
    assert_eq!(st.success_rate, Some(completed as f64 / runs.len() as f64));
    assert_eq!(st.iterations.sum, want_iters.iter().sum::<u64>());
    assert_eq!(st.iterations.max, *want_iters.last().unwrap());
    assert_eq!(st.iterations.p50, nearest_rank(&want_iters, 50.0));
    assert_eq!(st.iterations.p90, nearest_rank(&want_iters, 90.0));
    assert_eq!(st.requests, want_iters.iter().sum::<u64>());
    assert_eq!(st.input_tokens, want_tokens);
    assert_eq!(st.total_tokens, want_tokens);
    assert_eq!(st.tool_calls, want_tools);
    assert_eq!(st.error_rate, Some(0.0));
    assert_eq!(st.duration_ms.count, runs.len() as u64);
    // The parent itself is active and outside the parent filter; a tag filter sees it alone.
    let st = store
        .session_stats(&SessionFilter::new().tag("swe-bench"))
        .unwrap();
    assert_eq!((st.sessions, st.finished, st.success_rate), (1, 0, None));
    // Everything: the parent plus the runs.
    assert_eq!(
        store.session_stats(&SessionFilter::new()).unwrap().sessions,
        runs.len() as u64 + 1
    );
}

#[test]
fn stats_filters_by_status_tag_key_and_time() {
    let store = Store::memory();
    let t0 = Utc::now() - chrono::Duration::milliseconds(5);
    let mut ids = Vec::new();
    for i in 0..12u64 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let s = store
            .create_session(NewSession::new().key(format!("k{i}")).tag(tag))
            .unwrap()
            .id;
        store
            .record_metrics(
                s,
                &MetricsDelta::new()
                    .requests(10)
                    .errors(i)
                    .input_tokens(i * 100)
                    .output_tokens(i),
            )
            .unwrap();
        for _ in 0..i {
            store.increment_iterations(s).unwrap();
        }
        match i % 3 {
            0 => {
                store.complete(s).unwrap();
            }
            1 => {
                store.fail(s, None).unwrap();
            }
            _ => {}
        }
        ids.push(s);
    }
    let all = store.session_stats(&SessionFilter::new()).unwrap();
    assert_eq!(all.sessions, 12);
    assert_eq!(
        (
            all.by_status["completed"],
            all.by_status["failed"],
            all.by_status["active"]
        ),
        (4, 4, 4)
    );
    assert_eq!(all.success_rate, Some(0.5));
    assert_eq!(all.requests, 120);
    assert_eq!(all.errors, (0..12).sum::<u64>());
    assert_eq!(all.error_rate, Some(66.0 / 120.0));
    assert_eq!(all.input_tokens, 6600);
    assert_eq!(all.output_tokens, 66);
    assert_eq!(all.total_tokens, 6666);
    assert_eq!(all.iterations.sum, 66);
    assert_eq!(all.iterations.p50, 5);
    assert_eq!(all.duration_ms.count, 8);

    let even = store
        .session_stats(&SessionFilter::new().tag("even"))
        .unwrap();
    assert_eq!(even.sessions, 6);
    assert_eq!(even.iterations.sum, 2 + 4 + 6 + 8 + 10);
    let done = store
        .session_stats(
            &SessionFilter::new()
                .status(SessionStatus::Completed)
                .status(SessionStatus::Failed),
        )
        .unwrap();
    assert_eq!((done.sessions, done.finished), (8, 8));
    let one = store
        .session_stats(&SessionFilter::new().key("k7"))
        .unwrap();
    assert_eq!(
        (one.sessions, one.errors, one.by_status["failed"]),
        (1, 7, 1)
    );
    let later = store
        .session_stats(
            &SessionFilter::new()
                .created_between(Some(Utc::now() + chrono::Duration::hours(1)), None),
        )
        .unwrap();
    assert_eq!(later.sessions, 0);
    assert_eq!(later.success_rate, None);
    assert_eq!(later.iterations, Distribution::default());
    let since = store
        .session_stats(&SessionFilter::new().created_between(Some(t0), None))
        .unwrap();
    assert_eq!(since.sessions, 12);
    // Stats read every page, not just the first.
    let paged = store.session_stats(&SessionFilter::new().limit(5)).unwrap();
    assert_eq!(paged.sessions, 12);
    assert_eq!(ids.len(), 12);
}
