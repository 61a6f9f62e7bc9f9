//! The routes: one file per resource family under `v1/`, plus the operational routes
//! (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`). [`router`] builds the axum router and
//! records every (method, path) it serves, so a test can hold the OpenAPI document to it.

pub mod mcp;
pub mod ops;
pub mod stream;
pub mod v1;

use std::str::FromStr;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A router that remembers what it serves.
pub struct Routes {
    router: Router<AppState>,
    served: Vec<(Method, &'static str)>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            served: Vec::new(),
        }
    }

    /// Serves `method path` with `handler`.
    pub fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = match method.as_str() {
            "GET" => MethodFilter::GET,
            "POST" => MethodFilter::POST,
            "PUT" => MethodFilter::PUT,
            "PATCH" => MethodFilter::PATCH,
            "DELETE" => MethodFilter::DELETE,
            other => panic!("unsupported method {other} in the route table"),
        };
        self.router = self.router.route(path, on(filter, handler));
        self.served.push((method, path));
        self
    }
}

/// Every route the server serves: the router (without state or middleware) and the list of
/// (method, path template) pairs.
pub fn routes() -> (Router<AppState>, Vec<(Method, &'static str)>) {
    let r = Routes::new();
    let r = ops::routes(r);
    let r = v1::routes(r);
    let r = stream::routes(r);
    let r = crate::webhooks::routes(r);
    let r = mcp::routes(r);
    (r.router, r.served)
}

/// Query parameters as pairs, for filters that repeat (`tag=a&tag=b`) and for clear errors
/// naming the parameter. Unknown names are refused, so a typo is not silently ignored.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string and refuses names not in `known`.
    pub fn parse(query: Option<&str>, known: &[&str]) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (k, _) in &pairs {
            if !known.contains(&k.as_str()) {
                return Err(ApiError::invalid(
                    "query parameter",
                    format!(
                        "unknown parameter {k:?}; this route takes: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(Self { pairs })
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `name` parsed, with an error naming the parameter.
    pub fn parse_opt<T: FromStr>(&self, name: &str) -> ApiResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| ApiError::invalid(name, format!("{v:?}: {e}"))),
        }
    }

    /// A boolean flag: `true`/`false`/`1`/`0`, absent = false.
    pub fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.get(name) {
            None => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(ApiError::invalid(name, format!("{v:?}: use true or false"))),
        }
    }

    /// A page size: 1 to `cairn::MAX_LIMIT`, default `cairn::DEFAULT_LIMIT`.
    pub fn limit(&self) -> ApiResult<usize> {
        let n = self
            .parse_opt::<usize>("limit")?
            .unwrap_or(cairn::DEFAULT_LIMIT);
        if n == 0 || n > cairn::MAX_LIMIT {
            return Err(ApiError::invalid(
                "limit",
                format!("{n}: use 1 to {}", cairn::MAX_LIMIT),
            ));
        }
        Ok(n)
    }

    /// A time: RFC 3339 (`2026-01-31T12:00:00Z`).
    pub fn time(&self, name: &str) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| Some(t.with_timezone(&chrono::Utc)))
                .map_err(|e| {
                    ApiError::invalid(
                        name,
                        format!("{v:?}: {e}; use RFC 3339 such as 2026-01-31T12:00:00Z"),
                    )
                }),
        }
    }
}
