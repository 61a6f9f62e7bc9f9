//! Real data: every file of the shared corpus of agent runs, in a session tree mirroring its folders.

use crate::common;

use std::collections::{HashMap, HashSet};

use cairn::*;

#[test]
fn the_corpus_round_trips_and_dedups_exactly() {
    let corpus = common::corpus_dir();
    let root_dir = if corpus.exists() {
        corpus
    } else {
        common::fixtures_dir()
    };
    let files = common::files_under(&root_dir);
    assert!(
        files.len() > 10,
        "corpus at {} has files",
        root_dir.display()
    );
    for kind in common::backends() {
        let (s, _d) = common::store(kind, Config::default());
        let root = s.create_session(NewSession::new().name("corpus")).unwrap();
        let mut folders: HashMap<String, SessionId> = HashMap::new();
        folders.insert(String::new(), root.id);
        let mut stored = Vec::new();
        let mut distinct = HashSet::new();
        for (rel, path) in &files {
            // One session per folder, child of its parent folder's session.
            let parts: Vec<&str> = rel.split('/').collect();
            let mut key = String::new();
            let mut parent = root.id;
            for p in &parts[..parts.len() - 1] {
                key = if key.is_empty() {
                    p.to_string()
                } else {
                    format!("{key}/{p}")
                };
                parent = *folders.entry(key.clone()).or_insert_with(|| {
                    s.create_session(NewSession::new().name(*p).parent(parent))
                        .unwrap()
                        .id
                });
            }
            let bytes = std::fs::read(path).unwrap();
            distinct.insert(blake3::hash(&bytes));
            let kind = if rel.ends_with(".log") {
                ArtifactKind::SystemGenerated
            } else {
                ArtifactKind::ToolResult
            };
            let a = s
                .put_file(parent, NewArtifact::new(kind, parts[parts.len() - 1]), path)
                .unwrap();
            stored.push((parent, a, bytes));
        }
        for (sid, a, bytes) in &stored {
            assert!(
                s.read(*sid, a.id).unwrap() == *bytes,
                "{} reads back",
                a.name
            );
            assert_eq!(a.hash.to_hex(), blake3::hash(bytes).to_hex().to_string());
        }
        let st = s.stats().unwrap();
        assert_eq!(st.artifacts, files.len() as u64);
        assert_eq!(
            st.blobs,
            distinct.len() as u64,
            "one blob per distinct content"
        );
        assert_eq!(st.sessions as usize, folders.len());
        let all = s
            .query(&Query::new().session(root.id).subtree(true).limit(MAX_LIMIT))
            .unwrap();
        assert_eq!(all.items.len(), files.len());
        let logs = s
            .query(&Query::new().name_glob("*.log").limit(MAX_LIMIT))
            .unwrap();
        assert_eq!(
            logs.items.len(),
            files.iter().filter(|(r, _)| r.ends_with(".log")).count()
        );
        assert!(
            st.compression_ratio > 1.5,
            "agent logs compress: {}",
            st.compression_ratio
        );
    }
}
