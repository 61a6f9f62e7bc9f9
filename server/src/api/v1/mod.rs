//! Version 1 of the API: one module per resource family.

pub mod admin;
pub mod artifacts;
pub mod bundles;
pub mod checkpoints;
pub mod content;
pub mod sessions;

use super::Routes;

pub(crate) fn routes(r: Routes) -> Routes {
    let r = sessions::routes(r);
    let r = artifacts::routes(r);
    let r = content::routes(r);
    let r = checkpoints::routes(r);
    let r = bundles::routes(r);
    admin::routes(r)
}
