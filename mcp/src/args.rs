//! Tool arguments: read one by one from the call's JSON object, so that every error names the
//! argument that is wrong, says what a good value looks like, and ends with an example call.
//!
//! The accepted names are the tool's input schema's `properties` (one source of truth: an
//! argument the schema does not list is refused, a listed one is never "unknown").

use std::str::FromStr;

use cairn::{ArtifactId, CheckpointId, SessionId};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::tools::ToolSpec;

/// A tool call that could not run: shown to the model as an `isError` result.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolError {
    /// A stable code: `invalid_argument`, or the library's error code (`artifact_not_found`...).
    pub code: String,
    /// The argument at fault, if one is.
    pub argument: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
    /// A valid call of the tool, when the fault is in the arguments.
    pub example: Option<Value>,
}

impl ToolError {
    /// A bad argument of `tool`.
    pub(crate) fn arg(tool: &ToolSpec, argument: &str, message: impl Into<String>) -> Self {
        ToolError {
            code: "invalid_argument".into(),
            argument: Some(argument.to_string()),
            message: format!("invalid argument `{argument}`: {}", message.into()),
            example: Some((tool.example)()),
        }
    }

    /// A failure of the store, mapped to a message a model can act on.
    pub(crate) fn store(e: cairn::Error) -> Self {
        let hint = match e.code() {
            "artifact_not_found" => {
                " (find artifact ids with query_artifacts; an id is the `artifact_id` returned by store_output)"
            }
            "session_not_found" => " (find session ids with list_sessions, or create one with create_session)",
            "checkpoint_not_found" => " (a checkpoint id is the `checkpoint_id` returned by checkpoint)",
            "session_closed" => {
                " (a completed, failed or cancelled session takes no new artifacts: fork it or create a new session)"
            }
            _ => "",
        };
        ToolError {
            code: e.code().to_string(),
            argument: None,
            message: format!("{e}{hint}"),
            example: None,
        }
    }

    /// A failure that is not the caller's (a worker thread that died).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ToolError {
            code: "internal".into(),
            argument: None,
            message: message.into(),
            example: None,
        }
    }

    /// The message as the model reads it: what is wrong, then an example of a valid call.
    pub fn text(&self) -> String {
        match &self.example {
            Some(ex) => format!("{} Example of a valid call: {ex}", self.message),
            None => self.message.clone(),
        }
    }

    /// The structured form: `{"error": {"code", "argument"?, "message", "example"?}}`.
    pub fn to_value(&self) -> Value {
        let mut e = Map::new();
        e.insert("code".into(), Value::from(self.code.clone()));
        if let Some(a) = &self.argument {
            e.insert("argument".into(), Value::from(a.clone()));
        }
        e.insert("message".into(), Value::from(self.message.clone()));
        if let Some(x) = &self.example {
            e.insert("example".into(), x.clone());
        }
        serde_json::json!({ "error": e })
    }
}

/// What tool handlers return.
pub type ToolResult<T = Value> = Result<T, ToolError>;

/// The arguments of one call, checked against the tool's schema.
pub(crate) struct Args<'a> {
    tool: &'a ToolSpec,
    map: Map<String, Value>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'a> Args<'a> {
    /// Checks that every argument is one the schema lists and every required one is present
    /// (a `null` counts as absent: models often send `null` for "not given").
    pub(crate) fn new(tool: &'a ToolSpec, map: Option<Map<String, Value>>) -> ToolResult<Self> {
        let mut map = map.unwrap_or_default();
        map.retain(|_, v| !v.is_null());
        let schema = (tool.schema)();
        let props = schema.get("properties").and_then(Value::as_object);
        let known: Vec<&str> = props
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let mut unknown: Vec<&String> = map
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            return Err(ToolError::arg(
                tool,
                k,
                format!(
                    "{} takes no argument named {k:?}; its arguments are: {}",
                    tool.name,
                    known.join(", ")
                ),
            ));
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !map.contains_key(r) {
                    return Err(ToolError::arg(tool, r, "is required and missing"));
                }
            }
        }
        Ok(Args { tool, map })
    }

    /// The tool being called.
    pub(crate) fn spec(&self) -> &'a ToolSpec {
        self.tool
    }

    fn bad(&self, key: &str, message: impl Into<String>) -> ToolError {
        ToolError::arg(self.tool, key, message)
    }

    /// Whether `key` was given (and not null).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    pub(crate) fn opt_str(&self, key: &str) -> ToolResult<Option<&str>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(key, format!("expected a string, got {}", type_name(v)))),
        }
    }

    pub(crate) fn str(&self, key: &str) -> ToolResult<&str> {
        self.opt_str(key)?
            .ok_or_else(|| self.bad(key, "is required and missing"))
    }

    /// A non-negative integer (a float with no fraction, such as `10.0`, is accepted).
    pub(crate) fn opt_u64(&self, key: &str) -> ToolResult<Option<u64>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(u) = n.as_u64() {
                    return Ok(Some(u));
                }
                match n.as_f64() {
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(Some(f as u64)),
                    _ => Err(self.bad(key, format!("{n} is not a non-negative integer"))),
                }
            }
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => {
                Ok(s.trim().parse::<u64>().ok())
            }
            Some(v) => Err(self.bad(
                key,
                format!("expected a non-negative integer, got {}", type_name(v)),
            )),
        }
    }

    /// An integer in `min..=max`, `default` when absent.
    pub(crate) fn u64_in(&self, key: &str, default: u64, min: u64, max: u64) -> ToolResult<u64> {
        let v = self.opt_u64(key)?.unwrap_or(default);
        if v < min || v > max {
            return Err(self.bad(key, format!("{v} is out of range; use {min} to {max}")));
        }
        Ok(v)
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> ToolResult<bool> {
        match self.map.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
            Some(v) => Err(self.bad(key, format!("expected true or false, got {}", type_name(v)))),
        }
    }

    /// A list of strings; a single string is taken as a list of one.
    pub(crate) fn strings(&self, key: &str) -> ToolResult<Vec<String>> {
        match self.map.get(key) {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.bad(
                        key,
                        format!(
                            "expected an array of strings, found {} in it",
                            type_name(other)
                        ),
                    )),
                })
                .collect(),
            Some(v) => Err(self.bad(
                key,
                format!("expected an array of strings, got {}", type_name(v)),
            )),
        }
    }

    pub(crate) fn opt_object(&self, key: &str) -> ToolResult<Option<Map<String, Value>>> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(v) => Err(self.bad(key, format!("expected a JSON object, got {}", type_name(v)))),
        }
    }

    /// Any JSON value (absent: `None`).
    pub(crate) fn opt_value(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    fn opt_id<T: FromStr>(&self, key: &str, what: &str) -> ToolResult<Option<T>> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => s.trim().parse::<T>().map(Some).map_err(|_| {
                self.bad(
                    key,
                    format!(
                        "{s:?} is not a {what} id; ids are UUIDs such as \
                         0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e, as returned by the other tools"
                    ),
                )
            }),
        }
    }

    pub(crate) fn opt_session(&self, key: &str) -> ToolResult<Option<SessionId>> {
        self.opt_id(key, "session")
    }

    pub(crate) fn session(&self, key: &str) -> ToolResult<SessionId> {
        self.opt_session(key)?
            .ok_or_else(|| self.bad(key, "is required and missing"))
    }

    pub(crate) fn artifact(&self, key: &str) -> ToolResult<ArtifactId> {
        self.opt_id(key, "artifact")?
            .ok_or_else(|| self.bad(key, "is required and missing"))
    }

    pub(crate) fn opt_checkpoint(&self, key: &str) -> ToolResult<Option<CheckpointId>> {
        self.opt_id(key, "checkpoint")
    }

    /// An RFC 3339 time such as `2026-01-31T12:00:00Z`.
    pub(crate) fn opt_time(&self, key: &str) -> ToolResult<Option<DateTime<Utc>>> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(s) => DateTime::parse_from_rfc3339(s.trim())
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|e| {
                    self.bad(
                        key,
                        format!(
                            "{s:?} is not an RFC 3339 time ({e}); use e.g. 2026-01-31T12:00:00Z"
                        ),
                    )
                }),
        }
    }

    /// The error for a value the store refused: pinned on the argument whose name the library's
    /// `InvalidInput { what }` mentions (`map`: needle in `what` -> argument), else on `default`.
    /// Other errors are store errors.
    pub(crate) fn refused_as(
        &self,
        e: cairn::Error,
        map: &[(&str, &str)],
        default: &str,
    ) -> ToolError {
        let what = match &e {
            cairn::Error::InvalidInput { what, .. } => what.to_ascii_lowercase(),
            cairn::Error::LimitExceeded { limit, .. } => limit.to_ascii_lowercase(),
            _ => return ToolError::store(e),
        };
        let arg = map
            .iter()
            .find(|(needle, _)| what.contains(needle))
            .map_or(default, |(_, arg)| arg);
        self.refused(arg, e)
    }

    /// The error for a value the store refused, pinned on `key`.
    pub(crate) fn refused(&self, key: &str, e: cairn::Error) -> ToolError {
        self.bad(key, e.to_string())
    }
}
