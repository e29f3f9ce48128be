//! Checkpoints: when an input offset may be committed, and the engine state that goes with it.
//!
//! The source cuts the input into epochs with barriers ([`crate::pipeline::Pipeline::barrier`]).
//! A record produced because of events of epoch `e` is counted in flight for `e` until the
//! broker acknowledges it. Checkpoint `e` is complete when every shard has passed barrier `e`
//! (so every record of the epoch has been produced) and nothing of epochs up to `e` is in
//! flight: only then are the offsets taken at the barrier committed. After a crash, the input
//! is read again from there: records since are produced again (duplicates), none is lost.
//!
//! With a state directory, the engine state taken at the barrier is written to a snapshot
//! before the commit, and a restart whose committed offsets equal a snapshot's resumes its
//! partial matches. The directory keeps what a restore can need, and no more (see
//! [`Snapshot::prune`]): the newest snapshot whose commit the broker confirmed (a crash between
//! writing a snapshot and the broker confirming its commit leaves that one as the match), and
//! the [`KEEP_NEWEST`] newest, whose commits may be confirmed yet.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Epochs that may be open at once; the source skips a barrier rather than open more.
pub const WINDOW: u64 = 64;

/// Snapshots kept besides the newest confirmed one: those whose commits may still be
/// confirmed. A state directory holds at most `KEEP_NEWEST + 1` snapshots.
pub const KEEP_NEWEST: usize = 3;

/// What the source, the sink and the delivery reports share.
#[derive(Debug)]
pub struct Checkpoints {
    shards: usize,
    in_flight: Vec<AtomicI64>,
    /// The highest barrier every shard has passed.
    sealed: AtomicU64,
    /// A record failed for good: no later checkpoint may complete.
    poisoned: AtomicBool,
    cold: Mutex<Cold>,
}

/// How many shards passed a barrier, and their states (where snapshots are kept).
type Passed = (usize, Vec<Option<Vec<u8>>>);

#[derive(Debug, Default)]
struct Cold {
    /// By barrier.
    passed: BTreeMap<u64, Passed>,
}

impl Checkpoints {
    pub fn new(shards: usize) -> Checkpoints {
        Checkpoints {
            shards,
            in_flight: (0..WINDOW).map(|_| AtomicI64::new(0)).collect(),
            sealed: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            cold: Mutex::new(Cold::default()),
        }
    }

    /// A record of epoch `epoch` was handed to the producer.
    // HOT PATH: once per record.
    #[inline]
    pub fn sent(&self, epoch: u64) {
        self.in_flight[(epoch % WINDOW) as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// The broker acknowledged a record of `epoch` (or it failed for good: see [`Self::poison`]).
    #[inline]
    pub fn delivered(&self, epoch: u64) {
        self.in_flight[(epoch % WINDOW) as usize].fetch_sub(1, Ordering::AcqRel);
    }

    /// A record was lost for good: checkpoints stop, so that its input is read again on restart.
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::Release);
    }

    pub fn poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// A shard passed barrier `id`, with its state when snapshots are kept. Returns true when it
    /// was the last shard to pass it.
    pub fn passed(&self, id: u64, shard: usize, state: Option<Vec<u8>>) -> bool {
        let mut cold = self.cold.lock().unwrap_or_else(|p| p.into_inner());
        let e = cold
            .passed
            .entry(id)
            .or_insert_with(|| (0, vec![None; self.shards]));
        e.0 += 1;
        e.1[shard] = state;
        let all = e.0 == self.shards;
        if all {
            self.sealed.fetch_max(id, Ordering::AcqRel);
        }
        all
    }

    pub fn sealed(&self) -> u64 {
        self.sealed.load(Ordering::Acquire)
    }

    /// Whether checkpoint `id` is complete: sealed, and nothing of epochs `first..=id` in flight.
    pub fn complete(&self, first: u64, id: u64) -> bool {
        !self.poisoned()
            && self.sealed() >= id
            && (first..=id)
                .all(|e| self.in_flight[(e % WINDOW) as usize].load(Ordering::Acquire) == 0)
    }

    /// Takes the shard states of barrier `id` (and forgets older barriers).
    pub fn take_states(&self, id: u64) -> Vec<Option<Vec<u8>>> {
        let mut cold = self.cold.lock().unwrap_or_else(|p| p.into_inner());
        let states = cold.passed.remove(&id).map(|e| e.1).unwrap_or_default();
        cold.passed.retain(|&k, _| k > id);
        states
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

/// One partition's position in a snapshot: the next offset to read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A checkpoint on disk: positions, and the engine state of each shard at the barrier.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub id: u64,
    /// The event time the engine had reached at the barrier: after a restore, no older event
    /// may enter (see [`super::event_time`]).
    pub event_time: i64,
    /// A hash of the loaded patterns: a snapshot of other patterns is not restored.
    pub fingerprint: u64,
    pub positions: Vec<Position>,
    /// [`crate::engine::EngineState::to_bytes`] of each shard.
    pub states: Vec<Vec<u8>>,
}

const MAGIC: &[u8; 8] = b"KAIROSCP";

/// A snapshot that cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a Kairos checkpoint, or a damaged one", path.display())]
    Corrupt { path: PathBuf },
}

impl Snapshot {
    /// Writes `dir/checkpoint-ID.bin` (through a temporary file and a rename, so a crash never
    /// leaves half a snapshot), then prunes the directory with `confirmed`, the newest
    /// checkpoint whose offsets the broker has confirmed (see [`Snapshot::prune`]).
    pub fn write(&self, dir: &Path, confirmed: u64) -> Result<PathBuf, SnapshotError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SnapshotError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("checkpoint-{:020}.bin", self.id));
        let tmp = dir.join(format!(".checkpoint-{:020}.tmp", self.id));
        let mut bytes = MAGIC.to_vec();
        let body = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("snapshots are plain data");
        bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(&bytes).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Snapshot::prune(dir, confirmed)?;
        Ok(path)
    }

    /// Removes every snapshot of `dir` but the newest whose id is at most `confirmed` (the
    /// newest checkpoint whose commit the broker confirmed) and the [`KEEP_NEWEST`] newest.
    /// Returns how many were removed. Should commits go unconfirmed for longer, the oldest
    /// unconfirmed snapshots go too: the directory stays bounded, and a restart that finds no
    /// snapshot matching the committed offsets starts with no partial matches, and says so.
    pub fn prune(dir: &Path, confirmed: u64) -> Result<usize, SnapshotError> {
        // A crash while writing leaves a temporary file; no other write is under way now.
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".checkpoint-") && name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let list = Snapshot::list(dir)?;
        let ids: Vec<Option<u64>> = list.iter().map(|p| Snapshot::id_of(p)).collect();
        let base = ids.iter().flatten().filter(|&&id| id <= confirmed).max();
        let newest_from = list.len().saturating_sub(KEEP_NEWEST);
        let mut removed = 0;
        for (i, (path, id)) in list.iter().zip(&ids).enumerate() {
            if i >= newest_from || (id.is_some() && id.as_ref() == base) {
                continue;
            }
            if std::fs::remove_file(path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The checkpoint id in a snapshot's file name.
    pub fn id_of(path: &Path) -> Option<u64> {
        path.file_name()?
            .to_str()?
            .strip_prefix("checkpoint-")?
            .strip_suffix(".bin")?
            .parse()
            .ok()
    }

    /// The snapshots in `dir`, oldest first.
    pub fn list(dir: &Path) -> Result<Vec<PathBuf>, SnapshotError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SnapshotError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut v: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("checkpoint-") && n.ends_with(".bin"))
            })
            .collect();
        v.sort();
        Ok(v)
    }

    pub fn read(path: &Path) -> Result<Snapshot, SnapshotError> {
        let bytes = std::fs::read(path).map_err(|source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let corrupt = || SnapshotError::Corrupt {
            path: path.to_path_buf(),
        };
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(corrupt());
        }
        let sum = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| corrupt())?);
        let body = &bytes[16..];
        if xxhash_rust::xxh3::xxh3_64(body) != sum {
            return Err(corrupt());
        }
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map(|(s, _)| s)
            .map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(id: u64) -> Snapshot {
        Snapshot {
            id,
            event_time: 0,
            fingerprint: 1,
            positions: vec![Position {
                topic: "t".into(),
                partition: 0,
                offset: id as i64,
            }],
            states: vec![vec![0; 16]],
        }
    }

    fn ids(dir: &Path) -> Vec<u64> {
        Snapshot::list(dir)
            .unwrap()
            .iter()
            .filter_map(|p| Snapshot::id_of(p))
            .collect()
    }

    #[test]
    fn the_directory_keeps_the_newest_confirmed_and_the_newest_few() {
        let dir = tempfile::tempdir().unwrap();
        for id in 1..=10 {
            snapshot(id).write(dir.path(), 4).unwrap();
        }
        assert_eq!(ids(dir.path()), vec![4, 8, 9, 10]);
        // Confirmations catch up: the old base goes.
        snapshot(11).write(dir.path(), 10).unwrap();
        assert_eq!(ids(dir.path()), vec![9, 10, 11]);
    }

    #[test]
    fn unconfirmed_commits_do_not_grow_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        for id in 1..=200 {
            snapshot(id).write(dir.path(), 0).unwrap();
        }
        assert_eq!(ids(dir.path()), vec![198, 199, 200]);
        std::fs::write(
            dir.path().join(".checkpoint-00000000000000000201.tmp"),
            b"x",
        )
        .unwrap();
        Snapshot::prune(dir.path(), 0).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), KEEP_NEWEST);
    }
}
