//! Version 1 of the API: one module per resource family.
//!
//! Adding a family (for example `events.rs` for the Server-Sent Events stream over
//! `Store::subscribe`): a module with `pub(crate) fn routes(r: Routes) -> Routes`, its handlers
//! annotated with `#[utoipa::path]`, one line in [`routes`] below and the handlers listed in
//! `openapi.rs` (the OpenAPI test fails until both agree). Handlers take the scope extractor they
//! need (`Reader`, `Writer`, `AdminStore`) and run engine calls through `extract::blocking`.

pub mod admin;
pub mod artifacts;
pub mod bundles;
pub mod checkpoints;
pub mod content;
pub mod memo;
pub mod partial;
pub mod sessions;

use super::Routes;

pub(crate) fn routes(r: Routes) -> Routes {
    let r = sessions::routes(r);
    let r = artifacts::routes(r);
    let r = content::routes(r);
    let r = checkpoints::routes(r);
    let r = bundles::routes(r);
    let r = partial::routes(r);
    let r = memo::routes(r);
    admin::routes(r)
}
