//! Tool-call memoization: an action cache from (tool name, normalized arguments) to the artifact
//! that holds the tool's result, so an agent that calls the same expensive tool with the same
//! arguments gets the stored result instead of running it again.
//!
//! Keys: the tool name and the arguments as canonical JSON (object keys sorted, no whitespace),
//! hashed with BLAKE3 in derive-key mode. Entries live in a scope: the whole store, or a session,
//! where an entry is visible to that session and its whole subtree. A lookup succeeds only if the
//! artifact still exists and the entry is younger than the tool's TTL (set per tool; none means
//! no expiry); stale entries found by a lookup are removed. Hits and misses are counted per tool
//! and in total, in the engine's counters (committed with the lookup, made durable by the next
//! flush; a lookup does not wait for a flush).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::artifact::Artifact;
use crate::error::{Error, Result};
use crate::ids::{ArtifactId, SessionId};
use crate::keys::{self, Key};
use crate::Store;

/// Longest tool name, in bytes.
pub const MAX_TOOL_NAME: usize = 256;
/// Largest arguments document, in bytes of canonical JSON.
pub const MAX_MEMO_ARGS: usize = 1 << 20;

/// Where a memo entry is visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MemoScope {
    /// Every lookup in the store.
    Store,
    /// Lookups from this session and every session under it.
    Session(SessionId),
}

impl MemoScope {
    fn bytes(&self) -> [u8; 16] {
        match self {
            MemoScope::Store => [0; 16],
            MemoScope::Session(s) => *s.as_bytes(),
        }
    }
}

/// A normalized memo key: the canonical arguments and their hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoKey {
    /// The tool name.
    pub tool: String,
    /// The arguments as canonical JSON.
    pub canonical_args: String,
    /// BLAKE3 of tool and canonical arguments (hex in [`MemoHit::key`]).
    pub hash: [u8; 32],
}

impl MemoKey {
    /// Normalizes `args` for `tool`. Two argument documents that differ only in object key order
    /// or whitespace give the same key; numbers are kept as written by `serde_json` (`1` and
    /// `1.0` differ).
    pub fn new(tool: &str, args: &Value) -> Result<MemoKey> {
        check_tool(tool)?;
        let mut canonical = String::new();
        canonical_json(args, &mut canonical);
        if canonical.len() > MAX_MEMO_ARGS {
            return Err(Error::LimitExceeded {
                limit: "max_memo_args",
                message: format!(
                    "the arguments are {} bytes of JSON; memo keys take at most {MAX_MEMO_ARGS}",
                    canonical.len()
                ),
            });
        }
        let mut h = blake3::Hasher::new_derive_key("cairn memo key v1");
        h.update(&(tool.len() as u64).to_le_bytes());
        h.update(tool.as_bytes());
        h.update(canonical.as_bytes());
        Ok(MemoKey {
            tool: tool.to_string(),
            canonical_args: canonical,
            hash: *h.finalize().as_bytes(),
        })
    }

    fn hex(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace.
fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn check_tool(tool: &str) -> Result<()> {
    if tool.is_empty() || tool.len() > MAX_TOOL_NAME || tool.chars().any(char::is_control) {
        return Err(Error::invalid(
            "tool name",
            format!("{tool:?}: use 1 to {MAX_TOOL_NAME} bytes without control characters"),
        ));
    }
    Ok(())
}

/// A stored memo entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    tool: String,
    artifact_id: ArtifactId,
    stored_at: DateTime<Utc>,
}

/// A memo lookup that found a live result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoHit {
    /// The result artifact.
    pub artifact: Artifact,
    /// The scope the entry was found in.
    pub scope: MemoScope,
    /// The memo key's hash, hex.
    pub key: String,
    /// When the entry was stored.
    pub stored_at: DateTime<Utc>,
    /// When it expires under the tool's current TTL (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Hit and miss counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemoStats {
    /// Lookups that returned a result.
    pub hits: u64,
    /// Lookups that found nothing live.
    pub misses: u64,
}

fn entry_key(scope: &MemoScope, key: &MemoKey) -> Vec<u8> {
    Key::new(keys::MEMO)
        .bytes(&scope.bytes())
        .bytes(&key.hash)
        .build()
}

fn ttl_key(tool: &str) -> Vec<u8> {
    Key::new(keys::MEMO_TTL).bytes(tool.as_bytes()).build()
}

fn counter_names(tool: &str, hit: bool) -> [String; 2] {
    let kind = if hit { "hits" } else { "misses" };
    [format!("memo.{kind}"), format!("memo.{kind}.{tool}")]
}

impl Store {
    /// Sets how long results of `tool` stay valid (`None`: no expiry, the default). Applies to
    /// entries already stored as well.
    pub fn memo_set_ttl(&self, tool: &str, ttl: Option<Duration>) -> Result<()> {
        check_tool(tool)?;
        self.write(|tx| {
            match ttl {
                Some(d) => tx.put(ttl_key(tool), d.as_secs().to_be_bytes().to_vec()),
                None => tx.del(ttl_key(tool)),
            }
            Ok(())
        })
    }

    /// The TTL of `tool` (whole seconds), if one is set.
    pub fn memo_ttl(&self, tool: &str) -> Result<Option<Duration>> {
        check_tool(tool)?;
        Ok(self.backend().get(&ttl_key(tool))?.map(|v| {
            Duration::from_secs(v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0))
        }))
    }

    /// Records that calling `tool` with `args` produced `artifact`, visible in `scope`. For a
    /// session scope the artifact must belong to that session or a session under it. Replaces
    /// an earlier entry for the same key and scope.
    pub fn memo_store(
        &self,
        scope: MemoScope,
        tool: &str,
        args: &Value,
        artifact: ArtifactId,
    ) -> Result<MemoHit> {
        let key = MemoKey::new(tool, args)?;
        let a = self.artifact_any(artifact)?;
        if let MemoScope::Session(s) = scope {
            self.session(s)?;
            let inside =
                a.session_id == s || self.ancestors(a.session_id)?.iter().any(|anc| anc.id == s);
            if !inside {
                return Err(Error::artifact_not_found(artifact));
            }
        }
        let e = Entry {
            tool: tool.to_string(),
            artifact_id: artifact,
            stored_at: Utc::now(),
        };
        let mut rec = vec![keys::RECORD_VERSION];
        rec.extend(serde_json::to_vec(&e).map_err(|err| Error::Other {
            message: format!("cannot encode a memo entry: {err}"),
        })?);
        self.write(|tx| {
            tx.put(entry_key(&scope, &key), rec.clone());
            Ok(())
        })?;
        let ttl = self.memo_ttl(tool)?;
        Ok(MemoHit {
            artifact: a,
            scope,
            key: key.hex(),
            stored_at: e.stored_at,
            expires_at: expiry(e.stored_at, ttl),
        })
    }

    /// Looks up a result of `tool` with `args` as seen from `scope`: from a session, its own
    /// entries, then its parent's, up to the root, then store-wide entries; from the store, only
    /// store-wide entries. Counts a hit or a miss.
    pub fn memo_lookup(
        &self,
        scope: MemoScope,
        tool: &str,
        args: &Value,
    ) -> Result<Option<MemoHit>> {
        let key = MemoKey::new(tool, args)?;
        let mut scopes = Vec::new();
        if let MemoScope::Session(s) = scope {
            scopes.push(MemoScope::Session(s));
            for anc in self.ancestors(s)? {
                scopes.push(MemoScope::Session(anc.id));
            }
        }
        scopes.push(MemoScope::Store);
        let ttl = self.memo_ttl(tool)?;
        let now = Utc::now();
        let mut stale = Vec::new();
        let mut found = None;
        for sc in scopes {
            let k = entry_key(&sc, &key);
            let Some(b) = self.backend().get(&k)? else {
                continue;
            };
            let e: Entry = match b.split_first() {
                Some((&keys::RECORD_VERSION, rest)) => {
                    serde_json::from_slice(rest).map_err(|err| Error::Corrupt {
                        what: format!("memo entry: {err}"),
                    })?
                }
                _ => {
                    return Err(Error::Corrupt {
                        what: "memo entry of an unknown version".into(),
                    })
                }
            };
            let expires_at = expiry(e.stored_at, ttl);
            if expires_at.is_some_and(|x| x <= now) {
                stale.push(k);
                continue;
            }
            match self.artifact_any(e.artifact_id) {
                Ok(a) => {
                    found = Some(MemoHit {
                        artifact: a,
                        scope: sc,
                        key: key.hex(),
                        stored_at: e.stored_at,
                        expires_at,
                    });
                    break;
                }
                Err(err) if err.is_not_found() => stale.push(k),
                Err(err) => return Err(err),
            }
        }
        let hit = found.is_some();
        self.write(|tx| {
            for k in &stale {
                tx.del(k.clone());
            }
            for name in counter_names(tool, hit) {
                tx.add(name, 1);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Removes the entry for `tool` and `args` in exactly `scope`. Returns whether one existed.
    pub fn memo_forget(&self, scope: MemoScope, tool: &str, args: &Value) -> Result<bool> {
        let key = MemoKey::new(tool, args)?;
        let k = entry_key(&scope, &key);
        self.write(|tx| {
            let existed = tx.get(&k)?.is_some();
            if existed {
                tx.del(k.clone());
            }
            Ok(existed)
        })
    }

    /// Hit and miss counts for `tool`, or for all tools.
    pub fn memo_stats(&self, tool: Option<&str>) -> Result<MemoStats> {
        let (h, m) = match tool {
            Some(t) => {
                check_tool(t)?;
                (format!("memo.hits.{t}"), format!("memo.misses.{t}"))
            }
            None => ("memo.hits".to_string(), "memo.misses".to_string()),
        };
        Ok(MemoStats {
            hits: self.counter(h.as_bytes())?.max(0) as u64,
            misses: self.counter(m.as_bytes())?.max(0) as u64,
        })
    }
}

fn expiry(stored: DateTime<Utc>, ttl: Option<Duration>) -> Option<DateTime<Utc>> {
    ttl.map(|d| {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| stored.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArtifactKind, NewArtifact, NewSession};
    use serde_json::json;

    #[test]
    fn keys_ignore_key_order_and_whitespace() {
        let a = MemoKey::new("grep", &json!({"b": [1, {"y": 2, "x": 1}], "a": "q"})).unwrap();
        let b: Value =
            serde_json::from_str("{ \"a\":\"q\",\n \"b\":[1,{\"x\":1,\"y\":2}] }").unwrap();
        assert_eq!(a, MemoKey::new("grep", &b).unwrap());
        assert_eq!(a.canonical_args, r#"{"a":"q","b":[1,{"x":1,"y":2}]}"#);
        assert_ne!(a.hash, MemoKey::new("grep2", &b).unwrap().hash);
        assert_ne!(
            a.hash,
            MemoKey::new("grep", &json!({"a": "q"})).unwrap().hash
        );
        // Tool and arguments cannot be shifted into each other.
        assert_ne!(
            MemoKey::new("ab", &json!("c")).unwrap().hash,
            MemoKey::new("a", &json!("bc")).unwrap().hash
        );
        assert!(MemoKey::new("", &json!(null)).is_err());
        assert!(MemoKey::new("a\nb", &json!(null)).is_err());
    }

    #[test]
    fn lookups_hit_within_scope_and_ttl_and_count() {
        let s = Store::memory();
        let root = s.create_session(NewSession::new()).unwrap().id;
        let child = s.create_session(NewSession::new().parent(root)).unwrap().id;
        let other = s.create_session(NewSession::new()).unwrap().id;
        let a = s
            .put(
                child,
                NewArtifact::new(ArtifactKind::ToolResult, "out"),
                b"result",
            )
            .unwrap();
        let args = json!({"path": "src", "pattern": "fn main"});
        assert!(s
            .memo_lookup(MemoScope::Session(child), "grep", &args)
            .unwrap()
            .is_none());
        // An artifact outside the scope's subtree is refused.
        assert!(s
            .memo_store(MemoScope::Session(other), "grep", &args, a.id)
            .is_err());
        s.memo_store(MemoScope::Session(root), "grep", &args, a.id)
            .unwrap();
        let hit = s
            .memo_lookup(
                MemoScope::Session(child),
                "grep",
                &json!({"pattern": "fn main", "path": "src"}),
            )
            .unwrap()
            .unwrap();
        assert_eq!(hit.artifact.id, a.id);
        assert_eq!(hit.scope, MemoScope::Session(root));
        assert_eq!(hit.expires_at, None);
        // Not visible from another tree or store-wide.
        assert!(s
            .memo_lookup(MemoScope::Session(other), "grep", &args)
            .unwrap()
            .is_none());
        assert!(s
            .memo_lookup(MemoScope::Store, "grep", &args)
            .unwrap()
            .is_none());
        assert_eq!(
            s.memo_stats(Some("grep")).unwrap(),
            MemoStats { hits: 1, misses: 3 }
        );
        assert_eq!(
            s.memo_stats(None).unwrap(),
            MemoStats { hits: 1, misses: 3 }
        );
        // Store-wide entries are visible everywhere.
        s.memo_store(MemoScope::Store, "ls", &json!([]), a.id)
            .unwrap();
        assert!(s
            .memo_lookup(MemoScope::Session(other), "ls", &json!([]))
            .unwrap()
            .is_some());
        // A TTL of zero expires everything; the stale entry is removed.
        s.memo_set_ttl("grep", Some(Duration::ZERO)).unwrap();
        assert_eq!(s.memo_ttl("grep").unwrap(), Some(Duration::ZERO));
        assert!(s
            .memo_lookup(MemoScope::Session(child), "grep", &args)
            .unwrap()
            .is_none());
        s.memo_set_ttl("grep", None).unwrap();
        assert!(s
            .memo_lookup(MemoScope::Session(child), "grep", &args)
            .unwrap()
            .is_none());
        // A long TTL keeps it, with an expiry time.
        s.memo_store(MemoScope::Session(root), "grep", &args, a.id)
            .unwrap();
        s.memo_set_ttl("grep", Some(Duration::from_secs(3600)))
            .unwrap();
        let hit = s
            .memo_lookup(MemoScope::Session(child), "grep", &args)
            .unwrap()
            .unwrap();
        assert!(hit.expires_at.unwrap() > Utc::now());
        // A deleted artifact is never returned.
        s.delete_artifact(child, a.id).unwrap();
        assert!(s
            .memo_lookup(MemoScope::Session(child), "grep", &args)
            .unwrap()
            .is_none());
        assert!(!s
            .memo_forget(MemoScope::Session(root), "grep", &args)
            .unwrap());
        assert!(s.memo_forget(MemoScope::Store, "ls", &json!([])).unwrap());
        let st = s.memo_stats(Some("grep")).unwrap();
        assert_eq!((st.hits, st.misses), (2, 6));
    }
}
