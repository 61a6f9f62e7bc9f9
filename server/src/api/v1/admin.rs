//! Administration of the caller's tenant store (admin tokens only): stats, gc, verify.

use axum::http::Method;
use axum::Json;
use cairn::{GcReport, Stats, VerifyReport};

use crate::api::Routes;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{blocking, AdminStore};

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/admin/stats", stats)
        .add(Method::POST, "/v1/admin/gc", gc)
        .add(Method::POST, "/v1/admin/verify", verify)
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
