//! Integrity checking (`verify`) and repair.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{ArtifactId, ContentHash};
use crate::store::Store;

/// One problem `verify` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A short machine-readable kind, e.g. `hash_mismatch`, `missing_blob`, `refcount`.
    pub kind: String,
    /// The blob involved, if any.
    pub hash: Option<ContentHash>,
    /// The artifacts affected.
    pub artifacts: Vec<ArtifactId>,
    /// What is wrong, for people.
    pub message: String,
}

/// What `verify` checked and found.
///
/// Orphan blob files are counted apart from [`Self::problems`]: a crash between writing a
/// blob file and committing the batch that claims it leaves one behind, by design (see
/// DESIGN.md). They are reclaimable garbage, not damage: [`Store::gc`] removes them, and they do
/// not make the store fail verification.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyReport {
    /// True when no problem was found (orphan files are not problems).
    pub ok: bool,
    /// Blobs re-hashed.
    pub blobs_checked: u64,
    /// Artifact records checked.
    pub artifacts_checked: u64,
    /// Index entries checked.
    pub index_entries_checked: u64,
    /// Every problem found.
    pub problems: Vec<Problem>,
    /// Blob files no record claims: leftovers of an interrupted write, which `gc` reclaims.
    #[serde(default)]
    pub orphan_files: u64,
    /// The bytes those orphan files take on disk.
    #[serde(default)]
    pub orphan_bytes: u64,
}

/// What `repair` did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepairReport {
    /// Index entries rebuilt or removed.
    pub index_entries_fixed: u64,
    /// Reference counts corrected.
    pub refcounts_fixed: u64,
    /// Blob files moved to the quarantine folder.
    pub quarantined: Vec<String>,
    /// Artifacts whose content is lost (their records are kept; reads fail clearly).
    pub artifacts_with_lost_content: Vec<ArtifactId>,
    /// Content whose file or object was missing or corrupt and was restored from another good
    /// copy (verified against its hash): its artifacts read again.
    #[serde(default)]
    pub restored: Vec<ContentHash>,
    /// The verify report after repair.
    pub after: VerifyReport,
}

impl Store {
    /// Re-hashes every blob (inline and files), checks that every index entry resolves and every
    /// record is fully indexed, recomputes reference counts and counters from the records, and
    /// finds stale GC entries. Reports each problem with the artifacts it affects, and counts
    /// orphan blob files apart ([`VerifyReport::orphan_files`]: garbage `gc` reclaims, not
    /// damage); changes nothing.
    ///
    /// Runs under the write lock, so the report describes one consistent state; writers wait
    /// until it finishes (it reads every blob, so on a large store it takes a while).
    pub fn verify(&self) -> Result<VerifyReport> {
        let _state = self.lock()?;
        Ok(self.check_integrity()?.report)
    }

    /// Rebuilds indexes, reference counts, GC entries and counters from
    /// the session, artifact and blob records; moves corrupt or orphaned blob files into
    /// `<store>/quarantine/` and undecodable records into `<store>/quarantine/records/` (never
    /// deletes them), and reports what it did with a fresh `verify` report.
    ///
    /// Content that is missing or corrupt cannot be rebuilt: its artifacts keep their records,
    /// reads of them fail with an error, and they are listed in
    /// [`RepairReport::artifacts_with_lost_content`] (delete them, or restore the quarantined
    /// file by hand).
    pub fn repair(&self) -> Result<RepairReport> {
        self.write_batches(|w| self.repair_locked(w))
    }

    fn repair_locked(&self, w: &mut crate::store::Writer<'_>) -> Result<RepairReport> {
        let checked = self.check_integrity()?;
        let mut report = RepairReport::default();
        let mut lost: Vec<ArtifactId> = checked
            .report
            .problems
            .iter()
            .filter(|p| LOST_CONTENT.contains(&p.kind.as_str()))
            .filter(|p| !p.hash.is_some_and(|h| checked.plan.restores(&h)))
            .flat_map(|p| p.artifacts.iter().copied())
            .collect();
        lost.sort();
        lost.dedup();
        report.artifacts_with_lost_content = lost;
        self.apply_plan(w, checked.plan, &mut report)?;
        report.after = self.check_integrity()?.report;
        Ok(report)
    }
}

/// Problem kinds that mean an artifact's content cannot be read.
const LOST_CONTENT: [&str; 3] = ["hash_mismatch", "missing_blob", "corrupt_record"];
