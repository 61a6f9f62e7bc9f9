//! Extension records (checkpoints, lineage, history, metrics): how they are exported and imported.

#[allow(unused_imports)]
use super::*;

// ---------------------------------------------------------------------------------------------
// Extension hooks
// ---------------------------------------------------------------------------------------------

/// Old-to-new id mapping of one import. Ids of things inside the bundle map to their new ids;
/// ids of anything outside it (a fork's source in another store) are kept as they are.
#[derive(Clone)]
pub(crate) struct IdMap {
    pub(super) new_ids: bool,
    pub(super) sessions: HashMap<SessionId, SessionId>,
    pub(super) artifacts: HashMap<ArtifactId, ArtifactId>,
    pub(super) checkpoints: HashMap<CheckpointId, CheckpointId>,
}

impl IdMap {
    /// The new id of a session of the bundle; other ids unchanged.
    pub(crate) fn session(&self, old: SessionId) -> SessionId {
        self.sessions.get(&old).copied().unwrap_or(old)
    }
    /// The new id of an artifact (ids of artifacts deleted before export get a fresh id too,
    /// the same one every time).
    pub(crate) fn artifact(&mut self, old: ArtifactId) -> ArtifactId {
        if !self.new_ids {
            return old;
        }
        *self
            .artifacts
            .entry(old)
            .or_insert_with(|| ArtifactId::from_uuid(fresh_like(old.as_uuid())))
    }
    /// The new id of a checkpoint, the same one every time.
    pub(crate) fn checkpoint(&mut self, old: CheckpointId) -> CheckpointId {
        if !self.new_ids {
            return old;
        }
        *self
            .checkpoints
            .entry(old)
            .or_insert_with(|| CheckpointId::from_uuid(fresh_like(old.as_uuid())))
    }
}

/// Exports the extension records of one session through the callback.
pub(crate) type ExportHook =
    fn(&Store, SessionId, &mut dyn FnMut(ExtensionRecord) -> Result<()>) -> Result<()>;
/// Writes one extension record inside the import's batch. It must take a blob reference
/// (`Store::retain_blob`) for every hash it keeps, and map ids through the [`IdMap`].
pub(crate) type ImportHook = fn(&Store, &mut Tx<'_>, &mut IdMap, &ExtensionRecord) -> Result<()>;

/// A module whose per-session records travel in bundles.
pub(crate) struct ExtensionHandler {
    /// The `kind`s of its records.
    pub(crate) kinds: &'static [&'static str],
    /// Called once per exported session.
    pub(crate) export: ExportHook,
    /// Called once per record on import.
    pub(crate) import: ImportHook,
}

/// Every module whose records travel in bundles.
pub(crate) static EXTENSIONS: &[ExtensionHandler] = &[
    ExtensionHandler {
        kinds: &["checkpoint", "history", "lineage"],
        export: export_checkpoint_records,
        import: import_checkpoint_record,
    },
    ExtensionHandler {
        kinds: &["metrics"],
        export: export_metrics,
        import: import_metrics,
    },
];

/// Longest metric name (with its `tool_calls.` or `custom.` prefix) an import accepts.
pub(super) const MAX_METRIC_KEY: usize = 256;

/// The session's usage counters (`M` table: name -> u64). Optional: an older reader may skip them.
pub(super) fn export_metrics(
    store: &Store,
    session: SessionId,
    emit: &mut dyn FnMut(ExtensionRecord) -> Result<()>,
) -> Result<()> {
    let prefix = Key::new(keys::METRIC).sid(&session).build();
    let mut values = serde_json::Map::new();
    for e in RangeIter::prefix(store.backend(), &prefix, false) {
        let (k, v) = e?;
        let name = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        values.insert(name, json!(keys::u64_value(&v)));
    }
    if values.is_empty() {
        return Ok(());
    }
    emit(ExtensionRecord {
        kind: "metrics".into(),
        session_id: session,
        required: false,
        hashes: Vec::new(),
        body: json!({ "values": values }),
    })
}

pub(super) fn import_metrics(
    store: &Store,
    tx: &mut Tx<'_>,
    map: &mut IdMap,
    x: &ExtensionRecord,
) -> Result<()> {
    let bad = |m: String| Error::invalid("bundle metrics record", m);
    let sid = map.session(x.session_id);
    store.tx_session(tx, sid)?;
    let values = x
        .body
        .get("values")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("it has no \"values\" object".into()))?;
    for (name, v) in values {
        if name.is_empty() || name.len() > MAX_METRIC_KEY || name.chars().any(char::is_control) {
            return Err(bad(format!(
                "metric name {name:?} is empty, too long or not text"
            )));
        }
        let n = v
            .as_u64()
            .ok_or_else(|| bad(format!("metric {name:?} is not a whole number")))?;
        tx.put(
            Key::new(keys::METRIC)
                .sid(&sid)
                .bytes(name.as_bytes())
                .build(),
            n.to_be_bytes().to_vec(),
        );
    }
    Ok(())
}

pub(super) fn handler(kind: &str) -> Option<&'static ExtensionHandler> {
    EXTENSIONS.iter().find(|h| h.kinds.contains(&kind))
}

impl crate::store::RemapIds for IdMap {
    fn session(&mut self, old: SessionId) -> SessionId {
        IdMap::session(self, old)
    }
    fn artifact(&mut self, old: ArtifactId) -> ArtifactId {
        IdMap::artifact(self, old)
    }
    fn checkpoint(&mut self, old: CheckpointId) -> CheckpointId {
        IdMap::checkpoint(self, old)
    }
}

/// Checkpoints (with the artifact versions they captured and their binary state), the
/// conversation order and lineage of a session. Required: a reader that cannot restore them
/// refuses the bundle rather than dropping them silently.
pub(super) fn export_checkpoint_records(
    store: &Store,
    session: SessionId,
    emit: &mut dyn FnMut(ExtensionRecord) -> Result<()>,
) -> Result<()> {
    for r in store.export_checkpoint_data(session)? {
        emit(ExtensionRecord {
            kind: r.kind.to_string(),
            session_id: session,
            required: true,
            hashes: r.hashes,
            body: r.body,
        })?;
    }
    Ok(())
}

pub(super) fn import_checkpoint_record(
    store: &Store,
    tx: &mut Tx<'_>,
    map: &mut IdMap,
    x: &ExtensionRecord,
) -> Result<()> {
    store.import_checkpoint_record_in(tx, map, x.session_id, &x.kind, &x.body)
}
