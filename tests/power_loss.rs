//! Power loss on the redb engine: a simulated disk that keeps only what was synced.
//!
//! redb runs over `Disk`, a `redb::StorageBackend` holding two images: the live one (what reads
//! see, as in the page cache) and the durable one (what a power cut leaves). `sync_data` makes
//! every pending write durable. At the k-th write, `set_len` or sync call the power goes: that
//! call and every later one fail, and the disk left behind is the durable image plus, when the
//! cut tears, a random subset of the pending writes, some cut short at a 512-byte boundary (a
//! drive may write back unsynced data in any order, and stop half way through).
//!
//! For many k, a store (`Durability::Immediate`, so a call that returns has been synced) runs a
//! fixed workload of session creations, single puts, batched puts and deletes, recording every
//! call that returned. After the cut, a new store opened over the surviving image must hold every
//! acknowledged artifact, hash-verified and byte-identical, none of the acknowledged deletes, and
//! verify clean. The number of points is bounded (`CAIRN_POWER_POINTS`, default 150).
#![cfg(feature = "redb")]

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

use cairn::{
    ArtifactId, ArtifactKind, Config, ContentHash, Durability, Error, NewArtifact, NewSession,
    RedbBackend, SessionId, Store,
};

/// A write that the disk has accepted but not yet synced.
#[derive(Clone, Debug)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct DiskState {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    /// Mutating calls (write, set_len, sync_data) so far.
    calls: u64,
    syncs: u64,
    /// The power goes at this call (1-based); `None`: never.
    cut_at: Option<u64>,
    /// Whether a cut keeps a random part of the pending writes (else none of them).
    tear: bool,
    seed: u64,
    /// The image left by the power cut, once it happened.
    left: Option<Vec<u8>>,
}

/// A simulated disk for redb; clones share it.
#[derive(Clone, Debug, Default)]
struct Disk(Arc<Mutex<DiskState>>);

fn power_off() -> io::Error {
    io::Error::other("simulated power loss: the disk is gone")
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "access past the end of the disk",
    )
}

fn apply(image: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::SetLen(n) => image.resize(*n as usize, 0),
        Pending::Write(off, data) => {
            let end = *off as usize + data.len();
            // A write that reaches the platter before the file's growth still lands there.
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*off as usize..end].copy_from_slice(data);
        }
    }
}

impl DiskState {
    fn next_random(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    /// Counts a mutating call; cuts the power if this is the chosen one.
    fn step(&mut self) -> io::Result<()> {
        if self.left.is_some() {
            return Err(power_off());
        }
        self.calls += 1;
        if self.cut_at == Some(self.calls) {
            self.cut();
            return Err(power_off());
        }
        Ok(())
    }

    fn cut(&mut self) {
        let mut image = self.durable.clone();
        if self.tear {
            let pending = std::mem::take(&mut self.pending);
            for op in &pending {
                match self.next_random() % 4 {
                    // Lost.
                    0 | 1 => {}
                    // Written back whole.
                    2 => apply(&mut image, op),
                    // Torn: only the first sectors made it.
                    _ => match op {
                        Pending::Write(off, data) if data.len() > 512 => {
                            let sectors = (data.len() / 512) as u64;
                            let keep = (self.next_random() % sectors) as usize * 512;
                            apply(&mut image, &Pending::Write(*off, data[..keep].to_vec()));
                        }
                        other => apply(&mut image, other),
                    },
                }
            }
        }
        self.left = Some(image);
    }
}

impl Disk {
    fn new(cut_at: Option<u64>, tear: bool, seed: u64) -> Self {
        Disk(Arc::new(Mutex::new(DiskState {
            cut_at,
            tear,
            seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            ..DiskState::default()
        })))
    }

    /// A disk whose content (live and durable) is `image`.
    fn from_image(image: Vec<u8>) -> Self {
        let d = Disk::new(None, false, 1);
        {
            let mut s = d.0.lock().unwrap();
            s.live = image.clone();
            s.durable = image;
        }
        d
    }

    fn calls(&self) -> u64 {
        self.0.lock().unwrap().calls
    }

    fn syncs(&self) -> u64 {
        self.0.lock().unwrap().syncs
    }

    /// What survives: the image left by the cut, or (no cut yet) the durable image with every
    /// unsynced write lost.
    fn surviving_image(&self) -> Vec<u8> {
        let s = self.0.lock().unwrap();
        s.left.clone().unwrap_or_else(|| s.durable.clone())
    }
}

impl redb::StorageBackend for Disk {
    fn len(&self) -> io::Result<u64> {
        let s = self.0.lock().unwrap();
        if s.left.is_some() {
            return Err(power_off());
        }
        Ok(s.live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let s = self.0.lock().unwrap();
        if s.left.is_some() {
            return Err(power_off());
        }
        let start = offset as usize;
        let end = start + out.len();
        if end > s.live.len() {
            return Err(out_of_range());
        }
        out.copy_from_slice(&s.live[start..end]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.step()?;
        s.live.resize(len as usize, 0);
        s.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.step()?;
        let pending = std::mem::take(&mut s.pending);
        for op in &pending {
            apply(&mut s.durable, op);
        }
        debug_assert_eq!(s.durable, s.live);
        s.syncs += 1;
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.0.lock().unwrap();
        s.step()?;
        let start = offset as usize;
        let end = start + data.len();
        if end > s.live.len() {
            return Err(out_of_range());
        }
        s.live[start..end].copy_from_slice(data);
        s.pending.push(Pending::Write(offset, data.to_vec()));
        Ok(())
    }
}

/// What the workload was told had happened: acknowledged sessions, artifacts and deletes.
#[derive(Default, Debug)]
struct Acked {
    /// The engine's creation returned (the database file was made durable).
    created: bool,
    sessions: BTreeSet<SessionId>,
    live: BTreeMap<ArtifactId, (SessionId, ContentHash, Vec<u8>)>,
    deleted: BTreeMap<ArtifactId, SessionId>,
}

fn content(i: u64) -> Vec<u8> {
    // Sizes from a few bytes to 96 KiB, text and random, some repeated (dedup references).
    let len = [40usize, 700, 5_000, 20_000, 98_304][(i % 5) as usize];
    match i % 7 {
        0 => common::random_bytes(len, i % 11),
        1 | 2 => common::json_text(len, i % 13),
        _ => common::random_bytes(len, i),
    }
}

/// The fixed workload: stops at the first error (the power went) and returns what was acked.
fn workload(store: &Store, acked: &mut Acked) -> cairn::Result<()> {
    let mut sessions = Vec::new();
    for round in 0..4u64 {
        let s = store.create_session(NewSession::new().name(format!("run-{round}")))?;
        acked.sessions.insert(s.id);
        sessions.push(s.id);
        for i in 0..5u64 {
            let n = round * 100 + i;
            let bytes = content(n);
            let a = store.put(
                s.id,
                NewArtifact::new(ArtifactKind::ToolResult, format!("single-{n}"))
                    .tag(format!("r{round}")),
                &bytes,
            )?;
            acked.live.insert(a.id, (s.id, a.hash, bytes));
        }
        let batch: Vec<(SessionId, NewArtifact, Vec<u8>)> = (0..6u64)
            .map(|i| {
                let n = round * 100 + 50 + i;
                (
                    s.id,
                    NewArtifact::new(ArtifactKind::AgentOutput, format!("batch-{n}")),
                    content(n),
                )
            })
            .collect();
        let put = store.put_batch(batch.clone())?;
        for (a, (_, _, bytes)) in put.into_iter().zip(batch) {
            acked.live.insert(a.id, (s.id, a.hash, bytes));
        }
        // Delete two acknowledged artifacts of an earlier session (or this one).
        let victims: Vec<ArtifactId> = acked
            .live
            .iter()
            .filter(|(_, (sid, _, _))| *sid == sessions[round as usize / 2])
            .map(|(id, _)| *id)
            .take(2)
            .collect();
        for id in victims {
            let sid = acked.live[&id].0;
            store.delete_artifact(sid, id)?;
            acked.live.remove(&id);
            acked.deleted.insert(id, sid);
        }
    }
    Ok(())
}

fn config() -> Config {
    Config::default().durability(Durability::Immediate)
}

/// Runs the workload on a disk that loses power at call `cut_at`; returns what was acknowledged
/// and the image the cut left.
fn run_until_cut(cut_at: Option<u64>, tear: bool, seed: u64) -> (Acked, Vec<u8>, Disk) {
    let disk = Disk::new(cut_at, tear, seed);
    let mut acked = Acked::default();
    if let Ok(backend) = RedbBackend::from_storage(disk.clone()) {
        acked.created = true;
        if let Ok(store) = Store::with_backend(Box::new(backend), config()) {
            let _ = workload(&store, &mut acked);
            // Dropping flushes, which fails once the power is gone: nothing is acknowledged by it.
            drop(store);
        }
    }
    let image = disk.surviving_image();
    (acked, image, disk)
}

/// Opens the surviving image and checks it against everything acknowledged.
fn check_survivor(what: &str, acked: &Acked, image: Vec<u8>) {
    let backend = match RedbBackend::from_storage(Disk::from_image(image)) {
        Ok(b) => b,
        // A cut while the database was being created, before that returned: nothing was
        // acknowledged, and the half-made file is refused with a clear error, not a panic.
        Err(e) if !acked.created => {
            let not_a_store = matches!(e, Error::NotAStore { .. });
            assert!(
                not_a_store,
                "{what}: a half-created database gives a clear error: {e}"
            );
            return;
        }
        Err(e) => panic!("{what}: the image left by the power cut does not open: {e}"),
    };
    let store = Store::with_backend(Box::new(backend), config()).expect("store over the image");
    for sid in &acked.sessions {
        let s = store.session(*sid);
        assert!(s.is_ok(), "{what}: acknowledged session {sid} lost: {s:?}");
    }
    for (id, (sid, hash, bytes)) in &acked.live {
        let read = store.read(*sid, *id);
        let got = match read {
            Ok(b) => b,
            Err(e) => panic!("{what}: acknowledged artifact {id} unreadable: {e}"),
        };
        assert_eq!(ContentHash::of(&got), *hash, "{what}: {id} hash");
        assert!(got == *bytes, "{what}: {id} bytes differ");
        let a = store.artifact(*sid, *id).expect("record");
        assert_eq!(a.hash, *hash, "{what}: {id} record hash");
        assert_eq!(a.size, bytes.len() as u64, "{what}: {id} size");
    }
    for (id, sid) in &acked.deleted {
        let e = store.artifact(*sid, *id).unwrap_err();
        let gone = matches!(e, Error::ArtifactNotFound { .. });
        assert!(gone, "{what}: acknowledged delete of {id} undone: {e}");
    }
    let report = store.verify().expect("verify runs");
    assert!(
        report.ok,
        "{what}: the store does not verify clean after the power cut: {:?}",
        report.problems
    );
}

#[test]
fn the_simulated_disk_loses_exactly_what_was_not_synced() {
    let disk = Disk::new(None, false, 1);
    let d: &dyn redb::StorageBackend = &disk;
    d.set_len(4096).unwrap();
    d.write(0, b"synced").unwrap();
    d.sync_data().unwrap();
    d.write(0, b"SYNCED").unwrap();
    d.set_len(8192).unwrap();
    let mut out = [0u8; 6];
    d.read(0, &mut out).unwrap();
    assert_eq!(&out, b"SYNCED", "reads see the unsynced write");
    let image = disk.surviving_image();
    assert_eq!(image.len(), 4096, "the unsynced growth is lost");
    assert_eq!(&image[..6], b"synced", "the unsynced write is lost");
    assert_eq!(disk.syncs(), 1);

    // A cut at the 2nd call: that call fails, so does everything after it.
    let disk = Disk::new(Some(2), false, 1);
    let d: &dyn redb::StorageBackend = &disk;
    d.set_len(1024).unwrap();
    assert!(d.sync_data().is_err());
    assert!(d.write(0, b"x").is_err());
    assert!(d.len().is_err());
    assert!(disk.surviving_image().is_empty(), "nothing was ever synced");
}

#[test]
fn acknowledged_writes_survive_power_loss_at_every_chosen_point() {
    // A run without a cut: how many disk calls the workload makes, and that it finishes.
    let (full, image, disk) = run_until_cut(None, false, 0);
    let total = disk.calls();
    assert_eq!(full.sessions.len(), 4, "the uncut workload finished");
    assert!(disk.syncs() > 20, "each acknowledged call synced");
    check_survivor("no cut", &full, image);

    let points: u64 = std::env::var("CAIRN_POWER_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150)
        .max(1);
    let stride = (total / points).max(1);
    let mut cuts = 0;
    let mut acked_at_some_cut = 0;
    let mut created_cuts = 0;
    let mut k = 1;
    while k <= total {
        for tear in [false, true] {
            let (acked, image, disk) = run_until_cut(Some(k), tear, k);
            assert!(
                disk.0.lock().unwrap().left.is_some(),
                "the power cut at call {k} of {total} happened"
            );
            check_survivor(
                &format!("cut at call {k} of {total}, tear {tear}"),
                &acked,
                image,
            );
            cuts += 1;
            acked_at_some_cut += acked.live.len();
            created_cuts += u64::from(acked.created);
        }
        k += stride;
    }
    assert!(cuts >= 2 * points.min(total), "{cuts} cuts");
    assert!(
        acked_at_some_cut > 0,
        "some cuts came after acknowledged writes"
    );
    assert!(
        created_cuts > cuts / 2,
        "most cuts came after the database was created"
    );
}
