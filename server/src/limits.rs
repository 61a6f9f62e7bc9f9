//! Per-tenant quotas, checked before every write that adds artifacts. The check reads the
//! store's counters (no scan); a write that starts under the quota may pass it by at most its
//! own size, which `max_body_bytes` bounds.

use std::sync::Arc;

use axum::http::StatusCode;
use cairn::Store;

use crate::error::{ApiError, ApiResult};
use crate::extract::blocking;
use crate::state::AppState;

/// Refuses a write when the tenant already holds `quota_bytes` stored bytes or
/// `quota_artifacts` artifacts (`quota_exceeded`, 422).
pub async fn check_quota(st: &AppState, store: &Arc<Store>) -> ApiResult<()> {
    let l = &st.config().limits;
    if l.quota_bytes == 0 && l.quota_artifacts == 0 {
        return Ok(());
    }
    let (qb, qa) = (l.quota_bytes, l.quota_artifacts);
    let store = Arc::clone(store);
    let stats = blocking(move || store.stats()).await?;
    if qb > 0 && stats.stored_bytes >= qb {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "quota_exceeded",
            format!(
                "the tenant stores {} bytes, its quota is {qb} (quota_bytes); delete artifacts and run gc, or ask for a larger quota",
                stats.stored_bytes
            ),
        ));
    }
    if qa > 0 && stats.artifacts >= qa {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "quota_exceeded",
            format!(
                "the tenant holds {} artifacts, its quota is {qa} (quota_artifacts); delete some or ask for a larger quota",
                stats.artifacts
            ),
        ));
    }
    Ok(())
}
