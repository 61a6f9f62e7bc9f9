//! Store configuration: sane defaults, from code, a TOML file or the environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::BackendKind;
use crate::error::{Error, Result};

/// When a write counts as durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Durability {
    /// Every write is flushed before it returns (concurrent writers share flushes).
    #[default]
    Immediate,
    /// Group commit: writes return at once and a background flush runs every `interval_ms`;
    /// [`crate::Store::flush`] makes everything before it durable.
    Group {
        /// Milliseconds between background flushes.
        interval_ms: u64,
    },
}

/// Limits the store enforces; exceeding one is [`Error::LimitExceeded`] and stores nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most sessions in the store.
    pub max_sessions: u64,
    /// Most live artifacts in one session.
    pub max_artifacts_per_session: u64,
    /// Largest artifact content in bytes (enforced while streaming).
    pub max_artifact_size: u64,
    /// Most tags on one artifact or session.
    pub max_tags: usize,
    /// Largest metadata object, in bytes of JSON.
    pub max_metadata_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000_000,
            max_artifacts_per_session: 10_000_000,
            max_artifact_size: 16 << 30,
            max_tags: 64,
            max_metadata_bytes: 64 << 10,
        }
    }
}

/// Store configuration. `Config::default()` is what `Store::open` uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Content at or above this many bytes is zstd-compressed (if it pays). Default 10 KiB.
    pub compression_threshold: u64,
    /// zstd level, 1 to 19. Default 3.
    pub compression_level: i32,
    /// Content below this many stored bytes lives inline in the engine; larger content in files. Default 64 KiB.
    pub inline_threshold: u64,
    /// Enforced limits.
    pub limits: Limits,
    /// Durability mode.
    pub durability: Durability,
    /// If set, `expire_inactive` with no argument uses this idle timeout (seconds).
    pub default_idle_timeout_secs: Option<u64>,
    /// Page cache of the sled and fjall engines, in bytes. Default 256 MiB. Reads of a store larger than its
    /// cache go to disk (BENCHMARKS.md: 1 KiB reads at 100,000 artifacts with a 64 MiB cache).
    pub engine_cache_bytes: u64,
    /// The storage engine of a store created with this configuration (`sled`, `redb`, `fjall`
    /// or `memory`). Used only when a store is created, and recorded in its `CAIRN` marker: an
    /// existing store always opens with the engine that made it. Default:
    /// [`BackendKind::default_engine`].
    pub engine: BackendKind,
    /// Partial reads: compressible content at or above this many bytes is stored seekable
    /// (independently compressed frames with an index; see DESIGN.md, "Partial reads").
    /// Default 2 MiB.
    pub seekable_threshold: u64,
    /// Uncompressed size of one seekable frame: a power of two from 1 KiB to 64 MiB. Default 1 MiB.
    pub seekable_frame_size: u64,
}

use crate::backend::DEFAULT_ENGINE_CACHE;

impl Default for Config {
    fn default() -> Self {
        Self {
            compression_threshold: 10 << 10,
            compression_level: 3,
            inline_threshold: 64 << 10,
            limits: Limits::default(),
            durability: Durability::Immediate,
            default_idle_timeout_secs: None,
            engine_cache_bytes: DEFAULT_ENGINE_CACHE,
            engine: BackendKind::default_engine(),
            seekable_threshold: 2 << 20,
            seekable_frame_size: crate::content::seekable::DEFAULT_FRAME,
        }
    }
}

impl Config {
    /// Never compress (tests pin behaviour with this).
    pub const NEVER_COMPRESS: u64 = u64::MAX;
    /// Compress everything that pays, however small.
    pub const ALWAYS_COMPRESS: u64 = 0;
    /// Never use the seekable format (tests pin behaviour with this).
    pub const NEVER_SEEKABLE: u64 = u64::MAX;
    /// Store all compressible content seekable, however small.
    pub const ALWAYS_SEEKABLE: u64 = 0;

    /// Parses a TOML document. Unknown keys are errors, so typos do not pass silently.
    pub fn from_toml_str(s: &str) -> Result<Self> {
        let c: Config = toml::from_str(s)
            .map_err(|e| Error::invalid("configuration", e.to_string().trim_end().to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Reads a TOML file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let s = String::from_utf8(bytes).map_err(|_| {
            Error::invalid(
                "configuration",
                format!("{} is not UTF-8 text", path.display()),
            )
        })?;
        Self::from_toml_str(&s).map_err(|e| match e {
            Error::InvalidInput { message, .. } => {
                Error::invalid("configuration", format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(1..=19).contains(&self.compression_level) {
            return Err(Error::invalid(
                "configuration",
                format!(
                    "compression_level = {}; use 1 to 19 (3 is the default)",
                    self.compression_level
                ),
            ));
        }
        if let Durability::Group { interval_ms } = self.durability {
            if interval_ms == 0 || interval_ms > 60_000 {
                return Err(Error::invalid(
                    "configuration",
                    format!("durability interval_ms = {interval_ms}; use 1 to 60000"),
                ));
            }
        }
        if self.engine_cache_bytes < 1 << 20 {
            return Err(Error::invalid(
                "configuration",
                format!(
                    "engine_cache_bytes = {}; use at least 1048576 (1 MiB)",
                    self.engine_cache_bytes
                ),
            ));
        }
        crate::content::seekable::check_frame_size(self.seekable_frame_size)?;
        if self.inline_threshold > 16 << 20 {
            return Err(Error::invalid(
                "configuration",
                "inline_threshold above 16 MiB; large blobs belong in files",
            ));
        }
        Ok(())
    }

    /// Sets the compression threshold.
    pub fn compression_threshold(mut self, bytes: u64) -> Self {
        self.compression_threshold = bytes;
        self
    }
    /// Sets the zstd level.
    pub fn compression_level(mut self, level: i32) -> Self {
        self.compression_level = level;
        self
    }
    /// Sets the inline threshold.
    pub fn inline_threshold(mut self, bytes: u64) -> Self {
        self.inline_threshold = bytes;
        self
    }
    /// Sets the seekable threshold (see [`Config::seekable_threshold`]).
    pub fn seekable_threshold(mut self, bytes: u64) -> Self {
        self.seekable_threshold = bytes;
        self
    }
    /// Sets the seekable frame size (see [`Config::seekable_frame_size`]).
    pub fn seekable_frame_size(mut self, bytes: u64) -> Self {
        self.seekable_frame_size = bytes;
        self
    }
    /// Sets the durability mode.
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }
    /// Sets the engine of a store created with this configuration (ignored for existing stores).
    pub fn engine(mut self, engine: BackendKind) -> Self {
        self.engine = engine;
        self
    }
    /// Sets the limits.
    pub fn limits(mut self, l: Limits) -> Self {
        self.limits = l;
        self
    }

    pub(crate) fn group_interval(&self) -> Option<Duration> {
        match self.durability {
            Durability::Group { interval_ms } => Some(Duration::from_millis(interval_ms)),
            Durability::Immediate => None,
        }
    }
}

/// The store path from `CAIRN_STORE`, else `./.cairn`.
pub fn default_store_path() -> PathBuf {
    std::env::var_os("CAIRN_STORE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".cairn"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_path_from_environment() {
        std::env::set_var("CAIRN_STORE", "/tmp/somewhere");
        assert_eq!(default_store_path(), PathBuf::from("/tmp/somewhere"));
        std::env::set_var("CAIRN_STORE", "");
        assert_eq!(default_store_path(), PathBuf::from(".cairn"));
        std::env::remove_var("CAIRN_STORE");
        assert_eq!(default_store_path(), PathBuf::from(".cairn"));
    }

    #[test]
    fn toml_round_trip_and_errors() {
        let c = Config::from_toml_str(
            "compression_level = 5\n[limits]\nmax_tags = 3\n[durability]\nmode = \"group\"\ninterval_ms = 20\n",
        )
        .unwrap();
        assert_eq!(c.compression_level, 5);
        assert_eq!(c.limits.max_tags, 3);
        assert_eq!(c.durability, Durability::Group { interval_ms: 20 });
        let e = Config::from_toml_str("compresion_level = 5").unwrap_err();
        assert!(e.to_string().contains("compresion_level"), "{e}");
        assert!(Config::from_toml_str("compression_level = 40").is_err());
        assert!(Config::from_toml_str("not toml [").is_err());
    }
}
