//! The conversation: messages stored as artifacts, numbered in order.

use serde_json::{Map, Value};

use super::*;
use crate::artifact::NewArtifact;
use crate::backend::{prefix_end, RangeIter};
use crate::checkpoint::{Message, Role};
use crate::error::{Error, Result};
use crate::ids::SessionId;
use crate::keys::{self, Key};
use crate::store::Store;

impl Store {
    /// Appends a message to `session`'s conversation: it is stored as an artifact named
    /// `messages/<seq>-<role>` (kind `user_input` for the user, `tool_result` for tools,
    /// `agent_output` otherwise, tag `message`, metadata as given) and numbered in order.
    pub fn say(
        &self,
        session: SessionId,
        role: Role,
        content: &str,
        metadata: Map<String, Value>,
    ) -> Result<Message> {
        let new = NewArtifact::new(role.artifact_kind(), "messages/0")
            .tag("message")
            .metadata(metadata)
            .mime_type("text/plain; charset=utf-8");
        let checked = self.check_new(new)?;
        let s = self.session(session)?;
        if s.status.is_terminal() {
            return Err(Error::SessionClosed {
                id: session,
                status: s.status,
                message:
                    "a finished session takes no new messages; fork it to continue the conversation"
                        .into(),
            });
        }
        let prepared = self.prepare(&mut content.as_bytes())?;
        let staged = self.stage(prepared)?;
        self.write(|tx| {
            let prefix = history_prefix(&session);
            let seq = match self
                .backend()
                .scan(&prefix, &prefix_end(&prefix), true, 1)?
                .first()
            {
                Some((k, _)) if k.len() == prefix.len() + 8 => {
                    keys::u64_value(&k[prefix.len()..]) + 1
                }
                _ => 1,
            };
            let mut checked = checked.clone();
            checked.new.name = format!("messages/{seq:06}-{role}");
            let a = self.insert_artifact(tx, session, checked, &staged, None)?;
            tx.put(
                Key::new(keys::HISTORY).sid(&session).u64(seq).build(),
                keys::encode(&HistoryEntry {
                    artifact_id: a.id,
                    role,
                }),
            );
            Ok(Message {
                seq,
                role,
                content: content.to_string(),
                metadata: a.metadata,
                artifact_id: a.id,
                at: a.created_at,
            })
        })
    }

    /// The latest messages of `session`'s conversation, oldest first: the last `last_n`
    /// (all with `None`), never more than the session's `max_history` option. Messages whose
    /// artifact was deleted are left out.
    pub fn history(&self, session: SessionId, last_n: Option<usize>) -> Result<Vec<Message>> {
        let s = self.session(session)?;
        let mut n = last_n.unwrap_or(usize::MAX);
        if let Some(m) = s.options.max_history {
            n = n.min(m as usize);
        }
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        for e in RangeIter::prefix(self.backend(), &history_prefix(&session), true) {
            let (k, v) = e?;
            let h: HistoryEntry = keys::decode("history", &v)?;
            let a = match self.artifact(session, h.artifact_id) {
                Ok(a) => a,
                Err(Error::ArtifactNotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let bytes = self.read_content(&a.hash, a.size)?;
            let content = String::from_utf8(bytes).map_err(|_| Error::Corrupt {
                what: format!("message artifact {} is not UTF-8 text", a.id),
            })?;
            out.push(Message {
                seq: keys::u64_value(&k[k.len().saturating_sub(8)..]),
                role: h.role,
                content,
                metadata: a.metadata,
                artifact_id: a.id,
                at: a.created_at,
            });
            if out.len() >= n {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }
}
