//! An in-memory backend for tests and ephemeral use.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use super::{Backend, Entry, Op};
use crate::error::{Error, Result};

/// A `BTreeMap` behind a lock. Nothing survives the process.
#[derive(Default)]
pub struct MemoryBackend {
    map: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

fn poisoned() -> Error {
    Error::Backend {
        message: "memory backend lock poisoned by a panic in another thread".into(),
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.map.read().map_err(|_| poisoned())?.get(key).cloned())
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        let map = self.map.read().map_err(|_| poisoned())?;
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        if !end.is_empty() && start >= end {
            return Ok(Vec::new());
        }
        let range = map.range::<[u8], _>((Bound::Included(start), upper));
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(if reverse {
            range.rev().take(limit).map(clone).collect()
        } else {
            range.take(limit).map(clone).collect()
        })
    }

    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        let mut map = self.map.write().map_err(|_| poisoned())?;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    map.insert(k, v);
                }
                Op::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn flush_is_fsync(&self) -> bool {
        false
    }
}
