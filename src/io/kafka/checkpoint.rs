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
//! partial matches. A snapshot is removed only once a newer one's offsets are known to be
//! committed, because a crash between writing a snapshot and the broker confirming its commit
//! leaves an older one as the match.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Epochs that may be open at once; the source skips a barrier rather than open more.
pub const WINDOW: u64 = 64;

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
    /// leaves half a snapshot) and removes those older than `keep_from`, the newest snapshot
    /// whose offsets the broker has confirmed.
    pub fn write(&self, dir: &Path, keep_from: u64) -> Result<PathBuf, SnapshotError> {
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
        for old in Snapshot::list(dir)? {
            if Snapshot::id_of(&old).is_some_and(|id| id < keep_from) {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(path)
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
