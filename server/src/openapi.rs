//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` attributes and the
//! library's types (feature `openapi`). Statuses every protected route can answer (401, 403,
//! 408, 413, 500, 503) are added to each operation here rather than repeated on every handler.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::api::{mcp, ops, stream, v1};
use crate::error::{ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cairn",
        description = "Cairn over HTTP: sessions, content-addressed artifacts, queries, checkpoints, bundles. Every error is {\"error\":{\"code\",\"message\"}}.",
    ),
    paths(
        ops::healthz, ops::readyz, ops::metrics, ops::openapi,
        v1::sessions::create, v1::sessions::list, v1::sessions::session_stats, v1::sessions::by_key, v1::sessions::show,
        v1::sessions::update, v1::sessions::delete, v1::sessions::tree, v1::sessions::children,
        v1::sessions::complete, v1::sessions::fail, v1::sessions::cancel, v1::sessions::suspend,
        v1::sessions::resume, v1::sessions::stats, v1::sessions::events,
        v1::sessions::append_event, stream::stream,
        v1::artifacts::put, v1::artifacts::show_by_name, v1::artifacts::list,
        v1::artifacts::versions, v1::artifacts::query, v1::artifacts::show,
        v1::artifacts::delete, v1::artifacts::missing,
        v1::content::content, v1::admin::repair, v1::admin::cleanup,
        v1::checkpoints::create, v1::checkpoints::create_binary, v1::checkpoints::list,
        v1::checkpoints::show, v1::checkpoints::artifacts, v1::checkpoints::state,
        v1::checkpoints::delete, v1::checkpoints::restore, v1::checkpoints::fork,
        v1::checkpoints::copy, v1::checkpoints::merge, v1::checkpoints::lineage,
        v1::checkpoints::timeline, v1::checkpoints::say, v1::checkpoints::history,
        v1::bundles::export, v1::bundles::import,
        v1::admin::stats, v1::admin::gc, v1::admin::verify,
        crate::webhooks::create, crate::webhooks::list, crate::webhooks::delete,
        v1::partial::read, v1::partial::preview,
        v1::memo::lookup, v1::memo::store, v1::memo::forget, v1::memo::stats, v1::memo::ttl,
        v1::memo::set_ttl,
        mcp::post, mcp::get, mcp::delete,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Common),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

struct Common;

fn error_response(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn add_common(op: &mut Operation, write: bool, public: bool) {
    let mut add = |code: &str, d: &str| {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| error_response(d).into());
    };
    if public {
        return;
    }
    // Path and query parameters are parsed on every protected route (ids, limits, flags).
    add(
        "400",
        "A malformed path, query parameter or body (invalid_input)",
    );
    add("401", "Missing or invalid token (unauthorized)");
    if write {
        add("403", "The token is read-only (forbidden)");
    }
    add(
        "408",
        "The request took longer than request_timeout_secs (request_timeout)",
    );
    add("413", "The body is over the size limit (payload_too_large)");
    add(
        "500",
        "A server-side failure (integrity, io, backend, internal)",
    );
    add("503", "Over max_concurrency (overloaded); see Retry-After");
}

impl Modify for Common {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let public = matches!(path.as_str(), "/healthz" | "/readyz" | "/openapi.json");
            let ops: [(&mut Option<Operation>, bool); 5] = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.put, true),
                (&mut item.patch, true),
                (&mut item.delete, true),
            ];
            for (op, write) in ops {
                if let Some(op) = op.as_mut() {
                    add_common(op, write, public);
                }
            }
        }
    }
}
