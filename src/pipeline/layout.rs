//! Where the pipeline's stages run: how many match shards, which core each stage is pinned to,
//! how large the rings are, and how each stage waits.
//!
//! A layout is checked before anything is allocated: the rings of a pipeline are allocated in
//! full when it starts, so a ring capacity the machine cannot hold is refused with the bytes it
//! would take, instead of the process aborting when the allocation fails.

use crate::event::Event;
use crate::ring::WaitStrategy;
use serde::{Deserialize, Serialize};

/// The largest ring capacity a layout may ask for, in slots. A ring is slack between two
/// stages: at a few million events per second, 2^24 slots hold seconds of input, past which a
/// larger ring only adds latency behind a stalled stage. The cap also keeps the rounding to a
/// power of two far from overflowing.
pub const MAX_RING_CAPACITY: usize = 1 << 24;

/// The share of the memory this process may use that the rings may take (one part in
/// `RING_MEMORY_SHARE`): the rest is for the partial matches, the events' field values while
/// they are in flight, the lookup tables' pages and the Kafka client's buffers.
const RING_MEMORY_SHARE: u64 = 4;

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
    #[error(
        "a ring of {capacity} slots is above the largest Kairos allows ({max}); the rings of {} would take {bytes} bytes ({})",
        shards_text(.shards),
        human_bytes(.bytes)
    )]
    CapacityTooLarge {
        capacity: usize,
        max: usize,
        shards: usize,
        /// What the rings would take, in bytes.
        bytes: u128,
    },
    #[error(
        "the rings of {} with {slots} slots each would take {bytes} bytes ({}), above the {budget} bytes ({}) they may take here: a quarter of {limited_by}, {memory} bytes ({})",
        shards_text(.shards),
        human_bytes(.bytes),
        human_bytes(.budget),
        human_bytes(.memory)
    )]
    Memory {
        shards: usize,
        /// Slots of each ring, the capacity rounded up to a power of two.
        slots: u128,
        bytes: u128,
        /// The bytes the rings may take.
        budget: u64,
        /// The memory the process may use, and what sets it.
        memory: u64,
        limited_by: String,
    },
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
        if self.ring_capacity > MAX_RING_CAPACITY {
            return Err(LayoutError::CapacityTooLarge {
                capacity: self.ring_capacity,
                max: MAX_RING_CAPACITY,
                shards: self.shards,
                bytes: self.ring_bytes(),
            });
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

    /// Checks the layout against this machine: its cores, and the memory this process may use
    /// (see [`Layout::ring_bytes`]).
    pub fn validate(&self) -> Result<(), LayoutError> {
        self.validate_for(available_cores())?;
        match memory_limit() {
            Some(limit) => self.validate_memory(&limit),
            None => Ok(()),
        }
    }

    /// The bytes the pipeline's rings take, all allocated when it starts: per shard, a ring of
    /// events to the shard, a ring handing the events' storage back to the source, and, unless
    /// the sink is fused, a ring of records to the sink. Each ring has the capacity rounded up
    /// to a power of two. The field values an event holds are not counted: they are allocated
    /// as events arrive, and their size depends on the patterns and the input.
    ///
    /// ```
    /// use kairos::pipeline::Layout;
    /// let mut l = Layout::for_machine(2, 4);
    /// l.ring_capacity = 1000;
    /// let rounded = l.ring_bytes();
    /// l.ring_capacity = 1024;
    /// assert_eq!(l.ring_bytes(), rounded);
    /// l.ring_capacity = 2048;
    /// assert_eq!(l.ring_bytes(), 2 * rounded);
    /// ```
    pub fn ring_bytes(&self) -> u128 {
        let fused = self.fuse_sink && self.shards == 1;
        let per_slot = std::mem::size_of::<super::ToShard>()
            + std::mem::size_of::<Event>()
            + if fused {
                0
            } else {
                std::mem::size_of::<super::ToSink>()
            };
        ring_slots(self.ring_capacity) * self.shards as u128 * per_slot as u128
    }

    /// Checks that the rings fit in their share of `limit`.
    fn validate_memory(&self, limit: &MemoryLimit) -> Result<(), LayoutError> {
        let budget = limit.bytes / RING_MEMORY_SHARE;
        let bytes = self.ring_bytes();
        if bytes > u128::from(budget) {
            return Err(LayoutError::Memory {
                shards: self.shards,
                slots: ring_slots(self.ring_capacity),
                bytes,
                budget,
                memory: limit.bytes,
                limited_by: limit.limited_by.to_string(),
            });
        }
        Ok(())
    }
}

/// The slots of a ring asked for with `capacity` (as [`crate::ring::ring`] rounds it), in a
/// type that holds the rounding of any capacity.
fn ring_slots(capacity: usize) -> u128 {
    (capacity.max(2) as u128).next_power_of_two()
}

fn shards_text(shards: &usize) -> String {
    match *shards {
        1 => "1 shard".into(),
        n => format!("{n} shards"),
    }
}

/// `bytes` in the largest binary unit that keeps it at 1 or more, with one decimal.
fn human_bytes<T: Copy + Into<u128>>(bytes: &T) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let bytes: u128 = (*bytes).into();
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The memory this process may use, and what sets it.
#[derive(Clone, Debug, PartialEq)]
struct MemoryLimit {
    bytes: u64,
    limited_by: &'static str,
}

/// The least of the machine's physical memory, the memory limit of the process's control
/// group (a container's limit) and its address-space limit (`ulimit -v`); `None` where none of
/// them can be read.
fn memory_limit() -> Option<MemoryLimit> {
    [
        physical_memory().map(|bytes| MemoryLimit {
            bytes,
            limited_by: "the machine's physical memory",
        }),
        cgroup_memory_limit().map(|bytes| MemoryLimit {
            bytes,
            limited_by: "the memory limit of this process's control group",
        }),
        address_space_limit().map(|bytes| MemoryLimit {
            bytes,
            limited_by: "this process's address-space limit (ulimit -v)",
        }),
    ]
    .into_iter()
    .flatten()
    .min_by_key(|l| l.bytes)
}

#[cfg(unix)]
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf reads a system value; it has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return None;
    }
    (pages as u64).checked_mul(page as u64)
}

#[cfg(not(unix))]
fn physical_memory() -> Option<u64> {
    None
}

#[cfg(unix)]
fn address_space_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0 {
        return None;
    }
    // `rlim_t` is `u64` on Linux but not on every unix.
    #[allow(clippy::unnecessary_cast)]
    let current = limit.rlim_cur as u64;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(current)
}

#[cfg(not(unix))]
fn address_space_limit() -> Option<u64> {
    None
}

/// The tightest memory limit of the process's control group and its ancestors (cgroup v2), or
/// of its memory controller (cgroup v1); `None` where there is none.
fn cgroup_memory_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_from(&membership, |path| std::fs::read_to_string(path).ok())
}

/// [`cgroup_memory_limit`] over the text of `/proc/self/cgroup`, reading control files with
/// `read`. A limit of "max" (v2) or a near-`u64::MAX` value (v1's way of saying none) is no
/// limit.
fn cgroup_limit_from(membership: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let parse = |text: String| -> Option<u64> {
        let v: u64 = text.trim().parse().ok()?;
        (v < 1 << 62).then_some(v)
    };
    let mut least: Option<u64> = None;
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_end_matches('/');
        let found = if controllers.is_empty() {
            // v2: the limit of each ancestor applies too. Inside a container the path may be
            // "/" while the container's own limit sits at the root of its namespace.
            let mut dir = path.to_string();
            let mut tightest: Option<u64> = None;
            loop {
                let limit = read(&format!("/sys/fs/cgroup{dir}/memory.max")).and_then(parse);
                tightest = match (tightest, limit) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                match dir.rfind('/') {
                    Some(i) => dir.truncate(i),
                    None => break,
                }
            }
            tightest
        } else if controllers.split(',').any(|c| c == "memory") {
            read(&format!(
                "/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"
            ))
            .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
            .and_then(parse)
        } else {
            None
        };
        least = match (least, found) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    least
}

/// Cores this process may run on, read once: the count the system reports follows the calling
/// thread's affinity, which a started pipeline narrows when it pins its caller.
pub fn available_cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(bytes: u64) -> MemoryLimit {
        MemoryLimit {
            bytes,
            limited_by: "the test's memory",
        }
    }

    #[test]
    fn a_capacity_above_the_cap_is_refused_with_its_bytes_and_never_overflows() {
        let mut l = Layout::for_machine(1, 2);
        l.ring_capacity = 1_000_000_000;
        let e = l.validate_for(2).unwrap_err();
        let LayoutError::CapacityTooLarge { bytes, .. } = &e else {
            panic!("{e:?}")
        };
        let per_slot = std::mem::size_of::<super::super::ToShard>() + std::mem::size_of::<Event>();
        assert_eq!(*bytes, (1u128 << 30) * per_slot as u128);
        let text = e.to_string();
        assert!(
            text.starts_with("a ring of 1000000000 slots is above the largest Kairos allows (16777216); the rings of 1 shard would take "),
            "{text}"
        );
        assert!(text.contains(&format!("{bytes} bytes (")), "{text}");
        l.ring_capacity = usize::MAX;
        l.shards = 1 << 20;
        l.shard_cores = vec![None; l.shards];
        l.fuse_sink = false;
        assert!(matches!(
            l.validate_for(2),
            Err(LayoutError::CapacityTooLarge { .. })
        ));
        l.ring_capacity = MAX_RING_CAPACITY;
        l.shards = 1;
        l.shard_cores = vec![None];
        assert!(l.validate_for(2).is_ok());
    }

    #[test]
    fn rings_beyond_a_quarter_of_the_memory_are_refused() {
        let mut l = Layout::for_machine(2, 4);
        l.ring_capacity = 1 << 20;
        let bytes = l.ring_bytes();
        let fits = limit(u64::try_from(bytes * 4).unwrap());
        assert_eq!(l.validate_memory(&fits), Ok(()));
        let short = limit(u64::try_from(bytes * 4 - 4).unwrap());
        let e = l.validate_memory(&short).unwrap_err();
        assert_eq!(
            e,
            LayoutError::Memory {
                shards: 2,
                slots: 1 << 20,
                bytes,
                budget: short.bytes / 4,
                memory: short.bytes,
                limited_by: "the test's memory".into(),
            }
        );
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "the rings of 2 shards with 1048576 slots each would take {bytes} bytes ("
            )),
            "{text}"
        );
        assert!(text.contains("a quarter of the test's memory"), "{text}");
    }

    #[test]
    fn a_fused_sink_has_no_sink_ring() {
        let fused = Layout::for_machine(1, 2);
        assert!(fused.fuse_sink);
        let mut apart = fused.clone();
        apart.fuse_sink = false;
        let slots = ring_slots(fused.ring_capacity);
        assert_eq!(
            apart.ring_bytes() - fused.ring_bytes(),
            slots * std::mem::size_of::<super::super::ToSink>() as u128
        );
    }

    #[test]
    fn the_default_layout_fits_this_machine() {
        assert_eq!(Layout::for_this_machine(1).validate(), Ok(()));
    }

    #[test]
    fn cgroup_limits_take_the_tightest_ancestor_and_ignore_none() {
        let files = |name: &str| -> Option<String> {
            match name {
                "/sys/fs/cgroup/a/b/memory.max" => Some("max\n".into()),
                "/sys/fs/cgroup/a/memory.max" => Some("1073741824\n".into()),
                "/sys/fs/cgroup/memory/x/memory.limit_in_bytes" => {
                    Some("9223372036854771712\n".into())
                }
                "/sys/fs/cgroup/memory/memory.limit_in_bytes" => Some("2147483648\n".into()),
                _ => None,
            }
        };
        assert_eq!(cgroup_limit_from("0::/a/b\n", files), Some(1 << 30));
        assert_eq!(cgroup_limit_from("0::/\n", files), None);
        assert_eq!(cgroup_limit_from("4:memory:/x\n", files), None);
        assert_eq!(
            cgroup_limit_from("4:cpu,memory:/gone\n", files),
            Some(2 << 30)
        );
        assert_eq!(cgroup_limit_from("garbage\n", files), None);
    }

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(human_bytes(&512u64), "512 bytes");
        assert_eq!(human_bytes(&(3u128 << 29)), "1.5 GiB");
        assert_eq!(human_bytes(&77_309_411_328u128), "72.0 GiB");
    }
}
