//! Where the pipeline's stages run: how many match shards, which core each stage is pinned to,
//! how large the rings are, and how each stage waits.

use crate::ring::WaitStrategy;
use serde::{Deserialize, Serialize};

/// The stage-to-core map and the sizes of a pipeline.
///
/// The calling thread is the source and parse stage: it decodes events and routes each to the
/// shard that owns its key. Each shard is a thread running an engine over its keys. A sink
/// thread merges the shards' records, unless there is one shard and `fuse_sink` is set, in which
/// case the shard writes its records itself (match+sink on one core).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub shards: usize,
    /// Slots of each ring (rounded up to a power of two).
    pub ring_capacity: usize,
    /// The core of the calling thread (source and parse), pinned when the pipeline starts;
    /// `None` leaves the caller where it is.
    pub source_core: Option<usize>,
    /// The core of each shard thread; `None` leaves it to the scheduler.
    pub shard_cores: Vec<Option<usize>>,
    pub sink_core: Option<usize>,
    /// With one shard, let the shard write records itself instead of a sink thread.
    pub fuse_sink: bool,
    /// How the source waits when a shard's ring is full (back-pressure).
    pub source_wait: WaitStrategy,
    /// How shards wait for events.
    pub shard_wait: WaitStrategy,
    /// How the sink waits for records.
    pub sink_wait: WaitStrategy,
}

/// A layout that cannot run on this machine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayoutError {
    #[error("a pipeline needs at least one match shard (shards = 0)")]
    NoShards,
    #[error("ring capacity must be at least 2, not {0}")]
    Capacity(usize),
    #[error("{stage} is pinned to core {core}, but this machine has cores 0 to {last}")]
    NoSuchCore {
        stage: String,
        core: usize,
        last: usize,
    },
    #[error("{given} shard cores are listed for {shards} shards")]
    ShardCores { given: usize, shards: usize },
}

impl Layout {
    /// A layout for `shards` shards on a machine of `cores` cores: shards and sink on the cores
    /// after the first (which the source keeps), spinning where each stage has a core of its own
    /// and parking otherwise. On 2 cores with one shard: source+parse on core 0, match+sink on
    /// core 1.
    ///
    /// ```
    /// use kairos::pipeline::Layout;
    /// let l = Layout::for_machine(1, 2);
    /// assert_eq!(l.shard_cores, vec![Some(1)]);
    /// assert!(l.fuse_sink);
    /// assert!(l.validate_for(2).is_ok());
    /// ```
    pub fn for_machine(shards: usize, cores: usize) -> Layout {
        let cores = cores.max(1);
        let fuse_sink = shards == 1;
        let stages = 1 + shards + usize::from(!fuse_sink);
        let wait = WaitStrategy::for_cores(cores, stages);
        let worker = |i: usize| {
            if cores > 1 {
                Some(1 + i % (cores - 1))
            } else {
                None
            }
        };
        Layout {
            shards,
            ring_capacity: 4096,
            source_core: (cores > 1).then_some(0),
            shard_cores: (0..shards).map(worker).collect(),
            sink_core: if fuse_sink { None } else { worker(shards) },
            fuse_sink,
            source_wait: wait,
            shard_wait: wait,
            sink_wait: wait,
        }
    }

    /// [`Layout::for_machine`] for this machine.
    pub fn for_this_machine(shards: usize) -> Layout {
        Layout::for_machine(shards, available_cores())
    }

    /// Checks the layout against a machine of `cores` cores.
    pub fn validate_for(&self, cores: usize) -> Result<(), LayoutError> {
        if self.shards == 0 {
            return Err(LayoutError::NoShards);
        }
        if self.ring_capacity < 2 {
            return Err(LayoutError::Capacity(self.ring_capacity));
        }
        if self.shard_cores.len() != self.shards {
            return Err(LayoutError::ShardCores {
                given: self.shard_cores.len(),
                shards: self.shards,
            });
        }
        let last = cores.saturating_sub(1);
        let check = |stage: String, core: Option<usize>| match core {
            Some(c) if c >= cores => Err(LayoutError::NoSuchCore {
                stage,
                core: c,
                last,
            }),
            _ => Ok(()),
        };
        check("the source".into(), self.source_core)?;
        for (i, c) in self.shard_cores.iter().enumerate() {
            check(format!("shard {i}"), *c)?;
        }
        check("the sink".into(), self.sink_core)
    }

    /// Checks the layout against this machine.
    pub fn validate(&self) -> Result<(), LayoutError> {
        self.validate_for(available_cores())
    }
}

/// Cores this process may run on, read once: the count the system reports follows the calling
/// thread's affinity, which a started pipeline narrows when it pins its caller.
pub fn available_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
