//! Administration of the caller's tenant store (admin tokens only): stats, gc, verify, repair,
//! and cleanup (retention rules).

use std::time::Duration;

use axum::http::Method;
use axum::Json;
use cairn::{
    ArtifactKind, GcReport, RepairReport, RetentionPolicy, RetentionReport, SessionStatus, Stats,
    VerifyReport,
};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::Routes;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{blocking, AdminStore, Json as Body};

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/admin/stats", stats)
        .add(Method::POST, "/v1/admin/gc", gc)
        .add(Method::POST, "/v1/admin/verify", verify)
        .add(Method::POST, "/v1/admin/repair", repair)
        .add(Method::POST, "/v1/admin/cleanup", cleanup)
}

/// Store-wide counts of the tenant's store: sessions, artifacts, blobs, bytes, ratios.
#[utoipa::path(get, path = "/v1/admin/stats", tag = "admin",
    responses((status = 200, description = "The counts", body = Stats),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn stats(AdminStore(store): AdminStore) -> ApiResult<Json<Stats>> {
    Ok(Json(blocking(move || store.stats()).await?))
}

/// Removes content no artifact references any more.
#[utoipa::path(post, path = "/v1/admin/gc", tag = "admin",
    responses((status = 200, description = "What was freed", body = GcReport),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn gc(AdminStore(store): AdminStore) -> ApiResult<Json<GcReport>> {
    Ok(Json(blocking(move || store.gc()).await?))
}

/// Re-hashes every blob and checks every index entry and reference count.
#[utoipa::path(post, path = "/v1/admin/verify", tag = "admin",
    responses((status = 200, description = "The problems found (empty when sound)", body = VerifyReport),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn verify(AdminStore(store): AdminStore) -> ApiResult<Json<VerifyReport>> {
    Ok(Json(blocking(move || store.verify()).await?))
}

/// Verifies and repairs: rebuilds indexes and reference counts, quarantines corrupt or orphaned
/// blobs (never deleting them), and reports what remains (`cairn verify --repair`).
#[utoipa::path(post, path = "/v1/admin/repair", tag = "admin",
    responses((status = 200, description = "What was repaired and what remains", body = RepairReport),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn repair(AdminStore(store): AdminStore) -> ApiResult<Json<RepairReport>> {
    Ok(Json(blocking(move || store.repair()).await?))
}

/// Retention rules to apply (at least one of `older_than_secs`, `keep_versions`, `ttl_secs`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cleanup {
    /// Report what would be removed and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Delete terminal sessions that ended longer ago than this many seconds (0: any age).
    pub older_than_secs: Option<f64>,
    /// With older_than_secs: only these terminal statuses.
    #[serde(default)]
    pub statuses: Vec<SessionStatus>,
    /// With older_than_secs: only sessions carrying every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Keep only the newest N versions of each artifact name in each session (at least 1).
    pub keep_versions: Option<u32>,
    /// Delete artifacts of a kind created longer ago than this many seconds: {"tool_result": 604800}.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub ttl_secs: std::collections::BTreeMap<String, f64>,
}

/// Longest age a rule may give: 10,000 years, as the command line's durations (the store
/// subtracts it from now, and a date far beyond that is out of range).
const MAX_AGE_SECS: f64 = 10_000.0 * 365.0 * 86_400.0;

fn age(what: &str, secs: f64) -> ApiResult<Duration> {
    if !(0.0..=MAX_AGE_SECS).contains(&secs) {
        return Err(ApiError::invalid(
            what,
            format!("{secs}: give a number of seconds from 0 to {MAX_AGE_SECS} (10000 years)"),
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        ApiError::invalid(what, format!("{secs}: give a number of seconds, 0 or more"))
    })
}

impl Cleanup {
    fn policy(self) -> ApiResult<RetentionPolicy> {
        if self.older_than_secs.is_none()
            && self.keep_versions.is_none()
            && self.ttl_secs.is_empty()
        {
            return Err(ApiError::invalid(
                "cleanup",
                "no rule given: set older_than_secs, keep_versions or ttl_secs",
            ));
        }
        if self.older_than_secs.is_none() && (!self.statuses.is_empty() || !self.tags.is_empty()) {
            return Err(ApiError::invalid(
                "cleanup",
                "statuses and tags select sessions for older_than_secs; set it (0 for any age)",
            ));
        }
        if self.keep_versions == Some(0) {
            return Err(ApiError::invalid(
                "keep_versions",
                "0 would delete every version; keep at least 1",
            ));
        }
        let mut p = RetentionPolicy::new().dry_run(self.dry_run);
        if let Some(s) = self.older_than_secs {
            p = p.sessions_older_than(age("older_than_secs", s)?);
        }
        for st in self.statuses {
            if !st.is_terminal() {
                return Err(ApiError::invalid(
                    "statuses",
                    format!(
                        "{st} is not a terminal status; cleanup deletes only finished sessions"
                    ),
                ));
            }
            p = p.status(st);
        }
        for t in self.tags {
            p = p.tag(t);
        }
        if let Some(n) = self.keep_versions {
            p = p.keep_versions(n);
        }
        for (kind, secs) in self.ttl_secs {
            let k: ArtifactKind = kind.parse().map_err(ApiError::from)?;
            p = p.kind_ttl(k, age("ttl_secs", secs)?);
        }
        Ok(p)
    }
}

/// Applies retention rules (or, with `dry_run`, reports what they would remove), then collects
/// the freed content: `cairn cleanup`. Pinned sessions and artifacts are never touched.
#[utoipa::path(post, path = "/v1/admin/cleanup", tag = "admin",
    request_body = Cleanup,
    responses((status = 200, description = "What was (or would be) removed (sessions, artifacts, bytes freed)", body = serde_json::Value),
        (status = 400, description = "Invalid rules", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn cleanup(
    AdminStore(store): AdminStore,
    Body(body): Body<Cleanup>,
) -> ApiResult<Json<RetentionReport>> {
    let policy = body.policy()?;
    Ok(Json(
        blocking(move || store.apply_retention(&policy)).await?,
    ))
}
