//! # cairn-mcp: Cairn over the Model Context Protocol
//!
//! [`CairnMcp`] is an MCP server (an [`rmcp::ServerHandler`]) over a [`cairn::Store`]: tools to
//! store a large output and get back an id and a preview, read parts of it (head, tail, lines,
//! bytes, grep, JSON path), query artifacts, list and create sessions, checkpoint and fork,
//! look up and record memoized tool results; and
//! every artifact as a resource at `cairn://artifact/{id}`.
//!
//! The service does not know its transport: [`run_stdio`] serves it on stdin/stdout (what
//! `cairn mcp` does), and the same value can be mounted on rmcp's streamable-HTTP transport.
//! Store calls are blocking; every one runs on tokio's blocking pool, never on the async workers.
//!
//! Tool-call failures that a model can fix (a bad argument, an unknown id) are returned as tool
//! results with `isError: true` and a message naming the argument and showing a valid call;
//! protocol errors are kept for requests that cannot be routed (an unknown tool or URI).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let store = cairn::Store::open(".cairn").map_err(std::io::Error::other)?;
//! cairn_mcp::run_stdio(store, cairn_mcp::McpOptions::local())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
pub mod resources;
pub mod shape;
pub mod tools;

use std::sync::{Arc, Mutex};

use cairn::{NewSession, SessionId, Store};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value};

pub use args::{ToolError, ToolResult};

/// The key of the session used when a call gives no `session_id`.
pub const DEFAULT_SESSION_KEY: &str = "mcp-default";
/// Default cap on the content a resource read returns (256 KiB).
pub const DEFAULT_RESOURCE_CAP: u64 = 256 << 10;

/// Options of the server. Every limit is named here with its default.
#[derive(Clone, Debug)]
pub struct McpOptions {
    /// Whether `store_output` may read a file named by `path` on the server's machine. True for
    /// the local stdio server (it runs as the user who started it); false for a network server.
    pub allow_local_files: bool,
    /// Largest artifact a resource read returns whole; above it, the preview and a pointer to
    /// `read_part` (default 256 KiB, at most `cairn::MAX_PART_BYTES`).
    pub resource_cap: u64,
    /// The key of the session that calls without `session_id` use (created on first use).
    pub default_session_key: String,
    /// Only tools that do not write may run (a read-only token of `cairn serve`); the others
    /// answer with a `forbidden` tool error.
    pub read_only: bool,
}

impl McpOptions {
    /// For a local server on stdio: local files allowed.
    pub fn local() -> Self {
        McpOptions {
            allow_local_files: true,
            ..Self::default()
        }
    }
}

impl Default for McpOptions {
    /// Safe for any transport: no local file reads.
    fn default() -> Self {
        McpOptions {
            allow_local_files: false,
            resource_cap: DEFAULT_RESOURCE_CAP,
            default_session_key: DEFAULT_SESSION_KEY.into(),
            read_only: false,
        }
    }
}

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) opts: McpOptions,
    default_session: Mutex<Option<SessionId>>,
}

impl Shared {
    /// `given`, or the default session (found or created by its key on first use).
    pub(crate) fn session_or_default(&self, given: Option<SessionId>) -> ToolResult<SessionId> {
        if let Some(s) = given {
            return Ok(s);
        }
        let mut cached = self
            .default_session
            .lock()
            .map_err(|_| ToolError::internal("the default-session lock was poisoned"))?;
        if let Some(s) = *cached {
            return Ok(s);
        }
        let (s, _) = self
            .store
            .get_or_create_by_key(
                &self.opts.default_session_key,
                NewSession::new().name("mcp default session").tag("mcp"),
            )
            .map_err(ToolError::store)?;
        *cached = Some(s.id);
        Ok(s.id)
    }
}

/// The MCP service over a store. Cheap to clone; independent of the transport.
#[derive(Clone)]
pub struct CairnMcp {
    shared: Arc<Shared>,
}

impl CairnMcp {
    /// A service over `store`.
    pub fn new(store: Store, mut opts: McpOptions) -> Self {
        opts.resource_cap = opts.resource_cap.clamp(1, cairn::MAX_PART_BYTES);
        CairnMcp {
            shared: Arc::new(Shared {
                store,
                opts,
                default_session: Mutex::new(None),
            }),
        }
    }

    /// Runs the tool `name` with `arguments`, blocking: the result a model sees. `None` if no
    /// tool has that name.
    pub fn call_blocking(
        &self,
        name: &str,
        arguments: Option<Map<String, Value>>,
    ) -> Option<CallToolResult> {
        let spec = tools::find(name)?;
        if self.shared.opts.read_only && !spec.read_only {
            return Some(to_call_result(Err(ToolError {
                code: "forbidden".into(),
                argument: None,
                message: format!(
                    "{name} writes to the store, and this connection's token is read-only; \
                     use the read tools (read_part, query_artifacts, memo_lookup...) or a token \
                     made without --read-only"
                ),
                example: None,
            })));
        }
        let outcome = args::Args::new(spec, arguments).and_then(|a| (spec.run)(&self.shared, &a));
        Some(to_call_result(outcome))
    }
}

/// A handler's outcome as a tool result: the value as JSON text and as structured content, or
/// the error with `isError: true`.
pub fn to_call_result(outcome: ToolResult) -> CallToolResult {
    match outcome {
        Ok(v) => {
            let mut r = CallToolResult::success(vec![ContentBlock::text(v.to_string())]);
            r.structured_content = Some(v);
            r
        }
        Err(e) => {
            let mut r = CallToolResult::error(vec![ContentBlock::text(e.text())]);
            r.structured_content = Some(e.to_value());
            r
        }
    }
}

/// Runs blocking store work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ErrorData> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ErrorData::internal_error(format!("a store call failed: {e}"), None))
}

const INSTRUCTIONS: &str = "Cairn keeps large outputs out of your context. Store a big tool output \
with store_output (you get an artifact_id and a short preview), then read only what you need with \
read_part: head, tail, a line range, a grep with context, a byte range, or one field of a JSON \
document. Results are small by default and say how to continue (continue_with). Find earlier outputs \
with query_artifacts; group work in sessions (create_session, list_sessions); checkpoint and fork a \
session to try alternatives. Before re-running an expensive tool call, memo_lookup it; after running \
one, memo_store its result artifact. Artifacts are also resources at cairn://artifact/{id}.";

impl ServerHandler for CairnMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("cairn", env!("CARGO_PKG_VERSION"))
                .with_title("Cairn artifact store"),
        )
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            tools::all().iter().map(tools::ToolSpec::to_tool).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        tools::find(name).map(tools::ToolSpec::to_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        if tools::find(&name).is_none() {
            let names: Vec<&str> = tools::all().iter().map(|t| t.name).collect();
            return Err(ErrorData::invalid_params(
                format!("unknown tool {name:?}; the tools are: {}", names.join(", ")),
                None,
            ));
        }
        let this = self.clone();
        let args = request.arguments;
        let r = blocking(move || this.call_blocking(&name, args)).await?;
        r.map(CallToolResponse::from)
            .ok_or_else(|| ErrorData::internal_error("tool vanished", None))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let store = self.shared.store.clone();
        let cursor = request.and_then(|r| r.cursor);
        blocking(move || resources::list(&store, cursor)).await?
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let store = self.shared.store.clone();
        let cap = self.shared.opts.resource_cap;
        let uri = request.uri;
        blocking(move || resources::read(&store, &uri, cap))
            .await?
            .map(ReadResourceResponse::from)
    }
}

/// Serves `store` over MCP on stdin/stdout until the client closes the connection. Builds its
/// own tokio runtime; nothing but protocol messages is written to stdout.
pub fn run_stdio(store: Store, opts: McpOptions) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let service = CairnMcp::new(store, opts)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(std::io::Error::other)?;
        service.waiting().await.map_err(std::io::Error::other)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests;
