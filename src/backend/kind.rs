//! Which engine holds a store's records: chosen when the store is created and recorded in its
//! `CAIRN` marker.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default page cache of the engines that keep one (sled, fjall): 256 MiB.
pub const DEFAULT_ENGINE_CACHE: u64 = 256 << 20;

/// Which engine holds the records. A store's engine is chosen when it is created (see
/// [`Config::engine`]) and recorded in its `CAIRN` marker; it always opens with that engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In memory; nothing survives the process.
    Memory,
    /// sled 0.34 on local disk (always compiled in). Cairn fsyncs sled's files after each flush.
    Sled,
    /// redb 4 on local disk (feature `redb`): one file, copy-on-write B-tree.
    Redb,
    /// fjall 3 on local disk (feature `fjall`): an LSM tree with a write-ahead journal.
    Fjall,
}

impl BackendKind {
    /// Every engine, compiled in or not.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Memory,
        BackendKind::Sled,
        BackendKind::Redb,
        BackendKind::Fjall,
    ];

    /// The engine of new stores: the one chosen by measurement (DESIGN.md, "Engine choice"),
    /// or sled when this build leaves it out.
    pub const fn default_engine() -> BackendKind {
        if cfg!(feature = "redb") {
            BackendKind::Redb
        } else {
            BackendKind::Sled
        }
    }

    /// The engine's name: `memory`, `sled`, `redb` or `fjall`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BackendKind::Memory => "memory",
            BackendKind::Sled => "sled",
            BackendKind::Redb => "redb",
            BackendKind::Fjall => "fjall",
        }
    }

    /// Whether this build of Cairn includes the engine (redb and fjall are cargo features).
    pub const fn is_compiled(self) -> bool {
        match self {
            BackendKind::Memory | BackendKind::Sled => true,
            BackendKind::Redb => cfg!(feature = "redb"),
            BackendKind::Fjall => cfg!(feature = "fjall"),
        }
    }

    /// The error for an engine this build does not include.
    pub(crate) fn not_compiled(self) -> Error {
        let have: Vec<&str> = Self::ALL
            .iter()
            .filter(|k| k.is_compiled())
            .map(|k| k.as_str())
            .collect();
        Error::invalid(
            "engine",
            format!(
                "this build of Cairn does not include the {0} engine; rebuild it with the cargo feature `{0}` (this build has: {1})",
                self.as_str(),
                have.join(", ")
            ),
        )
    }
}

impl Default for BackendKind {
    fn default() -> Self {
        Self::default_engine()
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "memory" => Ok(BackendKind::Memory),
            "sled" => Ok(BackendKind::Sled),
            "redb" => Ok(BackendKind::Redb),
            "fjall" => Ok(BackendKind::Fjall),
            other => Err(Error::invalid(
                "engine",
                format!("{other:?}; use sled, redb, fjall or memory"),
            )),
        }
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;

    #[test]
    fn an_engine_missing_from_the_build_names_the_feature_to_enable() {
        for kind in [BackendKind::Redb, BackendKind::Fjall] {
            let text = kind.not_compiled().to_string();
            assert!(text.contains(&format!("feature `{kind}`")), "{text}");
            assert!(text.contains("sled"), "lists what the build has: {text}");
            assert!(!text.contains("  "), "one space between words: {text}");
        }
        for kind in BackendKind::ALL {
            assert_eq!(kind.as_str().parse::<BackendKind>().unwrap(), kind);
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""), "the marker spells the name");
        }
        assert!(BackendKind::default_engine().is_compiled());
    }
}
