//! Event time in the daemon: where it comes from, and when an event is late.
//!
//! Event time comes from the data, never from the wall clock of the reading machine:
//!
//! - Each partition read has a **newest** event time, the largest it has delivered.
//! - The **frontier** is the oldest of those among the partitions that still have records
//!   unread (their read position is behind the high watermark of their last fetch). A partition
//!   read to its end cannot hold the frontier back: its next record is a live one. When every
//!   partition has been read to its end, the frontier is the newest event time of any of them.
//!   The frontier never goes back.
//! - An event is **late** when its time is more than its stream's allowed lateness behind the
//!   frontier, or behind the time the engine has already reached (a restored checkpoint's time
//!   after a restart). Late events are dead letters.
//! - Events are **held** for the largest allowed lateness and released in event-time order as
//!   the frontier passes them, so that events of several partitions meet the engine in order.
//!
//! So a backlog (a late start, a restart, a failover, a burst after a producer's pause) is read
//! in event-time order across its partitions however unevenly the consumer fetches them: no
//! partition's events are judged against another partition's progress.
//!
//! **Idle advance.** When every partition has been read to its end and no record has arrived
//! for `idle_advance`, event time moves on with the wall clock from the newest event time seen,
//! so that the windows of a quiet input close and its absences fire. It never moves while a
//! partition has records unread, or has not yet answered a fetch, so it cannot make a backlog
//! late.

use super::source::{Rejected, TopicInput};
use crate::event::Event;
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Where a partition is read from when assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The committed offset.
    Offset(i64),
    /// No committed offset: its oldest record (`auto.offset.reset=earliest`).
    Beginning,
    /// No committed offset: its end (`auto.offset.reset=latest`).
    End,
}

/// One partition's place in event time.
#[derive(Clone, Copy, Debug)]
struct Part {
    /// The newest event time it has delivered (`i64::MIN`: none yet).
    newest: i64,
    /// The next offset to read, where known: from its last record, or the committed offset.
    next: Option<i64>,
    /// Whether it was assigned to be read from its end.
    from_end: bool,
    /// Read to its end: the high watermark it was read to. A higher one seen since means new
    /// records at the broker: it is behind again.
    end: Option<i64>,
    /// The high watermark last seen, and since when (ns) it and `next` have not moved.
    still: Option<(i64, Option<i64>, i64)>,
    /// The highest end the broker has shown for it, by a fetch answer or a confirmation: a
    /// fetch answer older than a confirmation must not make it look read to its end.
    known_high: Option<i64>,
    /// Read to its end, but another partition delivered since after a quiet spell: until the
    /// broker's answer to confirmation request number N (this one) or a later one says its end
    /// has not moved, it counts as behind.
    unconfirmed: Option<u64>,
}

impl Part {
    /// Whether it holds the frontier back.
    fn behind(&self) -> bool {
        self.end.is_none() || self.unconfirmed.is_some()
    }
}

impl Part {
    fn new(start: Start) -> Part {
        Part {
            newest: i64::MIN,
            next: match start {
                Start::Offset(o) => Some(o),
                _ => None,
            },
            from_end: start == Start::End,
            end: None,
            still: None,
            known_high: None,
            unconfirmed: None,
        }
    }
}

/// An event held back for the allowed lateness.
struct Held {
    ts: i64,
    seq: u64,
    ev: Event,
    offset: i64,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.ts, self.seq) == (o.ts, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.ts, self.seq).cmp(&(o.ts, o.seq))
    }
}

/// What a partition's end looks like, as the consumer last saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    /// The oldest offset the broker holds (`None`: not known yet).
    pub low: Option<i64>,
    /// The offset the next record written will get (`None`: no fetch has answered yet).
    pub high: Option<i64>,
}

/// The event clock of one daemon: the partitions' event times, the frontier, and the events held
/// back until the frontier passes them. See the module documentation.
pub struct EventClock {
    parts: FxHashMap<u32, Part>,
    frontier: i64,
    /// The newest event time of any partition.
    newest: i64,
    /// The newest event time pushed to the engine (or restored): no older event may follow.
    released: i64,
    /// The time idle advance has moved the engine's clock to.
    idle_time: i64,
    /// Confirmation requests wanted so far (see [`Self::confirmation_wanted`]).
    wanted: u64,
    held: BinaryHeap<Reverse<Held>>,
    seq: u64,
    /// The largest allowed lateness of any stream: how long events are held.
    hold: i64,
}

impl EventClock {
    /// A clock holding events for `hold_ns` (the largest allowed lateness).
    pub fn new(hold_ns: i64) -> EventClock {
        EventClock {
            parts: FxHashMap::default(),
            frontier: i64::MIN,
            newest: i64::MIN,
            released: i64::MIN,
            idle_time: i64::MIN,
            wanted: 0,
            held: BinaryHeap::new(),
            seq: 0,
            hold: hold_ns,
        }
    }

    /// A partition of an event-time stream was assigned, to be read from `start`. Until it has
    /// answered a fetch it holds the frontier.
    pub fn assign(&mut self, origin: u32, start: Start) {
        self.parts.insert(origin, Part::new(start));
    }

    /// Partitions were revoked: they no longer hold the frontier, and their held events go.
    pub fn revoke(&mut self, origins: &[u32]) {
        for o in origins {
            self.parts.remove(o);
        }
        self.held.retain(|h| !origins.contains(&h.0.ev.origin));
        self.advance_frontier();
    }

    /// After a restore: the engine has reached `event_time`, so nothing older may enter.
    pub fn restore(&mut self, event_time: i64) {
        self.released = self.released.max(event_time);
    }

    /// The newest event time pushed to the engine, kept with a checkpoint as the restart's
    /// floor.
    pub fn engine_time(&self) -> i64 {
        self.released
    }

    /// The time the engine's clock may stand at: the newest event pushed, or idle advance's.
    pub fn clock_time(&self) -> i64 {
        self.released.max(self.idle_time)
    }

    /// The frontier (`i64::MIN` while unknown).
    pub fn frontier(&self) -> i64 {
        self.frontier
    }

    /// Checks `ev` (read at `offset` of its origin) against the lateness of its stream.
    /// `Ok(Some(ev))`: pass it on now; `Ok(None)`: held, see [`Self::release`]; `Err`: too late.
    ///
    /// `watermarks` tells each origin's ends as the consumer last saw them. It is asked only
    /// when a partition read to its end delivers again (new records after a quiet spell, or a
    /// producer's burst after a pause): the other partitions read to their end are checked
    /// then, before the frontier moves, since the same fetch answers may have brought records
    /// to them too.
    // HOT PATH: once per event.
    pub fn admit(
        &mut self,
        input: &TopicInput,
        ev: Event,
        offset: i64,
        watermarks: impl FnMut(u32) -> Watermarks,
    ) -> Result<Option<Event>, (Event, Rejected)> {
        if !input.event_time {
            return Ok(Some(ev));
        }
        let floor = self
            .frontier
            .saturating_sub(input.lateness)
            .max(self.released);
        if ev.ts < floor {
            let r = Rejected::Late {
                ts: ev.ts,
                behind: floor.saturating_sub(ev.ts),
                frontier: self.frontier.max(self.released),
                lateness: input.lateness,
            };
            return Err((ev, r));
        }
        self.newest = self.newest.max(ev.ts);
        let part = self
            .parts
            .entry(ev.origin)
            .or_insert_with(|| Part::new(Start::Beginning));
        let limited = part.newest <= self.frontier || self.frontier == i64::MIN;
        let woke = part.end.take().is_some();
        part.newest = part.newest.max(ev.ts);
        part.next = Some(offset + 1);
        if woke {
            self.recheck(watermarks);
            self.unconfirm_others(ev.origin);
        }
        if limited || woke {
            self.advance_frontier();
        }
        if self.hold == 0 {
            self.released = self.released.max(ev.ts);
            return Ok(Some(ev));
        }
        self.seq += 1;
        self.held.push(Reverse(Held {
            ts: ev.ts,
            seq: self.seq,
            ev,
            offset,
        }));
        Ok(None)
    }

    /// The next held event the frontier has passed by the hold, oldest first.
    pub fn release(&mut self) -> Option<Event> {
        self.release_until(self.frontier.saturating_sub(self.hold))
    }

    /// The next held event, whatever its time (shutting down).
    pub fn release_any(&mut self) -> Option<Event> {
        self.release_until(i64::MAX)
    }

    fn release_until(&mut self, limit: i64) -> Option<Event> {
        if self.held.peek().is_some_and(|h| h.0.ts <= limit) {
            let h = self.held.pop()?.0;
            self.released = self.released.max(h.ts);
            Some(h.ev)
        } else {
            None
        }
    }

    /// Marks the partitions read to their end, with `watermarks` telling each origin's ends as
    /// the consumer last saw them, and moves the frontier on. `now` is the wall clock (ns).
    ///
    /// A partition is at its end when its next offset reaches the high watermark. One that has
    /// delivered nothing for `stall_ns` while its high watermark stayed where it was is at its
    /// end too: what lies between is what a `read_committed` consumer never delivers
    /// (transaction markers, aborted records).
    pub fn refresh(
        &mut self,
        now: i64,
        stall_ns: i64,
        mut watermarks: impl FnMut(u32) -> Watermarks,
    ) {
        self.recheck(&mut watermarks);
        let mut changed = false;
        for (&origin, p) in self.parts.iter_mut() {
            if p.end.is_some() {
                continue;
            }
            let w = watermarks(origin);
            let Some(high) = w.high.max(p.known_high) else {
                continue;
            };
            p.known_high = Some(high);
            let at_end = match p.next {
                Some(next) => next >= high,
                None => p.from_end || high == 0 || w.low == Some(high),
            };
            let stalled = match p.still {
                Some((h, n, since)) if h == high && n == p.next => now - since >= stall_ns,
                _ => {
                    p.still = Some((high, p.next, now));
                    false
                }
            };
            if at_end || stalled {
                p.end = Some(high);
                p.still = None;
                changed = true;
            }
        }
        if changed {
            self.advance_frontier();
        }
    }

    /// A partition read to its end delivered again: the others read to their end may have
    /// records at the broker that no fetch answer has shown yet (a producer's burst reaches
    /// every partition at once, the consumer's fetches do not). They hold the frontier until
    /// the broker confirms their ends.
    fn unconfirm_others(&mut self, woke: u32) {
        let mut any = false;
        let n = self.wanted + 1;
        for (&origin, p) in self.parts.iter_mut() {
            if origin != woke && p.end.is_some() && p.unconfirmed.is_none() {
                p.unconfirmed = Some(n);
                any = true;
            }
        }
        if any {
            self.wanted = n;
        }
    }

    /// The number of the newest confirmation wanted (0: none yet).
    pub fn wanted(&self) -> u64 {
        self.wanted
    }

    /// The number of the newest confirmation wanted (0: none yet), and the partitions it is
    /// for. The source asks the broker for their ends with a request numbered so, and hands the
    /// answer to [`Self::confirm`].
    pub fn confirmation_wanted(&self) -> (u64, Vec<u32>) {
        let origins = self
            .parts
            .iter()
            .filter(|(_, p)| p.unconfirmed.is_some())
            .map(|(&o, _)| o)
            .collect();
        (self.wanted, origins)
    }

    /// The broker's answer to confirmation request `n`: each partition's end now (`None` where
    /// it could not tell). A partition whose end has not moved is read to its end again; one
    /// whose end moved is behind until it delivers up to it.
    pub fn confirm(&mut self, n: u64, ends: impl Fn(u32) -> Option<i64>) {
        for (&origin, p) in self.parts.iter_mut() {
            let Some(asked) = p.unconfirmed else { continue };
            if asked > n {
                continue;
            }
            let high = ends(origin);
            p.known_high = p.known_high.max(high);
            match (high, p.end) {
                (Some(high), Some(end)) if high <= end => p.unconfirmed = None,
                (Some(_), _) => {
                    p.unconfirmed = None;
                    p.end = None;
                }
                (None, _) => {}
            }
        }
        self.advance_frontier();
    }

    /// The partitions read to their end whose high watermark has moved since are behind again.
    fn recheck(&mut self, mut watermarks: impl FnMut(u32) -> Watermarks) {
        for (&origin, p) in self.parts.iter_mut() {
            if let Some(end) = p.end {
                let high = watermarks(origin).high;
                p.known_high = p.known_high.max(high);
                if high.is_some_and(|h| h > end) {
                    p.end = None;
                }
            }
        }
    }

    /// Whether every partition has been read to its end.
    pub fn caught_up(&self) -> bool {
        self.parts.values().all(|p| !p.behind())
    }

    /// Idle advance: with every partition read to its end and nothing read for `quiet_ns`
    /// (at least `idle_ns`), the engine's clock moves on with the wall clock from the newest
    /// event time seen, so that windows close and absences fire. Returns the time the engine
    /// may advance to, if it moved; [`Self::release_idle`] then gives the held events up to it.
    ///
    /// The frontier, and so lateness, stays with the data: a record that arrives after the
    /// advance, stamped before it but within its stream's lateness of the events read, is
    /// matched, not dead-lettered. It cannot reopen a window the advance closed.
    pub fn idle(&mut self, quiet_ns: i64, idle_ns: i64) -> Option<i64> {
        if quiet_ns < idle_ns || self.newest == i64::MIN || !self.caught_up() {
            return None;
        }
        let engine = self
            .newest
            .saturating_add(quiet_ns - idle_ns)
            .saturating_sub(self.hold);
        (engine > self.idle_time).then(|| {
            self.idle_time = engine;
            engine
        })
    }

    /// The next held event that idle advance has passed, oldest first.
    pub fn release_idle(&mut self) -> Option<Event> {
        self.release_until(self.idle_time.max(self.frontier.saturating_sub(self.hold)))
    }

    /// The frontier: the oldest newest time of the partitions still behind, or the newest of
    /// all when none is.
    fn advance_frontier(&mut self) {
        let mut limit = i64::MAX;
        let mut behind = false;
        for p in self.parts.values() {
            if p.behind() {
                behind = true;
                limit = limit.min(p.newest);
            }
        }
        let candidate = if behind { limit } else { self.newest };
        if candidate != i64::MIN && candidate != i64::MAX {
            self.frontier = self.frontier.max(candidate);
        }
    }

    /// The smallest offset held of origin `origin`, if any (the commit may not pass it).
    pub fn min_offset(&self, origin: u32) -> Option<i64> {
        self.held
            .iter()
            .filter(|h| h.0.ev.origin == origin)
            .map(|h| h.0.offset)
            .min()
    }

    /// Events held back now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{JsonDecoder, TimeUnit};

    fn input(lateness: i64) -> TopicInput {
        TopicInput {
            topic: "t".into(),
            stream: 0,
            decoder: JsonDecoder::new(&[], None, TimeUnit::Millis),
            key_slot: None,
            event_time: true,
            lateness,
        }
    }

    fn ev(origin: u32, ts: i64) -> Event {
        Event {
            ts,
            origin,
            ..Event::default()
        }
    }

    const STALL: i64 = 1_000;

    impl EventClock {
        /// `admit` where no partition's end has moved.
        fn admit_now(
            &mut self,
            input: &TopicInput,
            ev: Event,
            offset: i64,
        ) -> Result<Option<Event>, (Event, Rejected)> {
            self.admit(input, ev, offset, |_| Watermarks {
                low: None,
                high: None,
            })
        }
    }

    fn drain(c: &mut EventClock) -> Vec<i64> {
        std::iter::from_fn(|| c.release()).map(|e| e.ts).collect()
    }

    fn at(high: i64) -> impl FnMut(u32) -> Watermarks {
        move |_| Watermarks {
            low: Some(0),
            high: Some(high),
        }
    }

    #[test]
    fn a_partition_behind_is_not_late_against_one_ahead() {
        // Partition 1 is fetched far ahead of partition 2: a backlog read unevenly.
        let mut c = EventClock::new(2);
        c.assign(1, Start::Offset(0));
        c.assign(2, Start::Offset(0));
        let i = input(2);
        for (o, t) in [(1, 100), (1, 200), (1, 300)] {
            assert!(c.admit_now(&i, ev(1, t), o).unwrap().is_none());
        }
        assert!(drain(&mut c).is_empty(), "partition 2 has not answered yet");
        for (o, t) in [(1, 110), (2, 210), (3, 310)] {
            assert!(c.admit_now(&i, ev(2, t), o).is_ok(), "{t} is not late");
        }
        assert_eq!(drain(&mut c), vec![100, 110, 200, 210]);
    }

    #[test]
    fn an_event_behind_the_frontier_by_more_than_its_lateness_is_late() {
        let mut c = EventClock::new(5);
        c.assign(1, Start::Offset(0));
        let i = input(5);
        c.admit_now(&i, ev(1, 100), 0).unwrap();
        c.admit_now(&i, ev(1, 96), 1).unwrap();
        let Err((_, Rejected::Late { ts, .. })) = c.admit_now(&i, ev(1, 94), 2) else {
            panic!("94 is 6 behind 100 with a lateness of 5");
        };
        assert_eq!(ts, 94);
        assert!(drain(&mut c).is_empty());
    }

    #[test]
    fn a_partition_read_to_its_end_does_not_hold_the_frontier() {
        let mut c = EventClock::new(10);
        c.assign(1, Start::Offset(0));
        c.assign(2, Start::Offset(5));
        let i = input(10);
        c.admit_now(&i, ev(1, 100), 0).unwrap();
        assert_eq!(c.frontier(), i64::MIN);
        // Partition 2 answers a fetch: it holds nothing past its committed offset.
        c.refresh(0, STALL, |o| Watermarks {
            low: Some(0),
            high: Some(if o == 2 { 5 } else { 9 }),
        });
        assert_eq!(c.frontier(), 100);
        assert!(!c.caught_up());
    }

    #[test]
    fn idle_advance_waits_for_every_partition_to_be_read_to_its_end() {
        let mut c = EventClock::new(0);
        c.assign(1, Start::Offset(0));
        let i = input(0);
        c.admit_now(&i, ev(1, 1_000), 0).unwrap();
        assert_eq!(c.idle(500, 100), None, "partition 1 may still be behind");
        c.refresh(0, STALL, at(1));
        assert_eq!(c.idle(500, 100), Some(1_400));
        assert_eq!(c.idle(500, 100), None, "no further on");
        // Lateness stays with the data: a record stamped before the advance but not behind
        // the events read is matched; one behind them is late.
        assert!(c.admit_now(&i, ev(1, 1_300), 1).is_ok());
        assert!(c.admit_now(&i, ev(1, 1_299), 2).is_err());
    }

    #[test]
    fn a_restored_engine_time_is_a_floor() {
        let mut c = EventClock::new(0);
        c.restore(500);
        c.assign(1, Start::Offset(0));
        let i = input(1_000);
        assert!(c.admit_now(&i, ev(1, 499), 0).is_err());
        assert!(c.admit_now(&i, ev(1, 500), 1).is_ok());
    }

    #[test]
    fn a_never_read_partition_is_at_its_end_only_when_empty() {
        let mut c = EventClock::new(0);
        c.assign(1, Start::Beginning);
        c.refresh(0, STALL, |_| Watermarks {
            low: Some(0),
            high: Some(3),
        });
        assert!(!c.caught_up());
        c.refresh(0, STALL, |_| Watermarks {
            low: Some(3),
            high: Some(3),
        });
        assert!(c.caught_up());
    }

    #[test]
    fn a_partition_stalled_short_of_its_high_watermark_is_at_its_end() {
        // A transactional producer's last commit marker sits at offset 9: a read_committed
        // consumer never delivers it, so the next offset stays at 9 with the end at 10.
        let mut c = EventClock::new(0);
        c.assign(1, Start::Offset(9));
        c.refresh(0, STALL, at(10));
        assert!(!c.caught_up());
        c.refresh(STALL - 1, STALL, at(10));
        assert!(!c.caught_up());
        // The end moved: the wait starts again.
        c.refresh(STALL, STALL, at(11));
        c.refresh(2 * STALL - 1, STALL, at(11));
        assert!(!c.caught_up());
        c.refresh(2 * STALL, STALL, at(11));
        assert!(c.caught_up());
    }

    #[test]
    fn a_partition_read_from_its_end_is_at_its_end_once_it_answers() {
        let mut c = EventClock::new(0);
        c.assign(1, Start::End);
        c.refresh(0, STALL, |_| Watermarks {
            low: None,
            high: None,
        });
        assert!(!c.caught_up());
        c.refresh(0, STALL, at(40));
        assert!(c.caught_up());
    }

    /// Partitions 1 and 2, each having delivered one event (at `t1`, `t2`) at offset 0 and
    /// been read to its end (1).
    fn two_read_to_their_end(i: &TopicInput, hold: i64, t1: i64, t2: i64) -> EventClock {
        let mut c = EventClock::new(hold);
        c.assign(1, Start::Offset(0));
        c.assign(2, Start::Offset(0));
        c.admit_now(i, ev(1, t1), 0).unwrap();
        c.admit_now(i, ev(2, t2), 0).unwrap();
        c.refresh(0, STALL, at(1));
        c
    }

    #[test]
    fn a_burst_after_a_pause_holds_the_frontier_at_every_partition_it_reaches() {
        // Both partitions were read to their end (at offset 1) before the producer paused; the
        // burst reaches both, but the consumer delivers partition 1's share first.
        let i = input(2_000);
        let mut c = two_read_to_their_end(&i, 2_000, 1_000, 1_001);
        assert!(c.caught_up());
        // The burst: both partitions' ends moved to 4.
        let moved = |_| Watermarks {
            low: Some(0),
            high: Some(4),
        };
        for (o, t) in [(1, 4_000), (2, 7_000), (3, 9_000)] {
            assert!(c.admit(&i, ev(1, t), o, moved).is_ok());
        }
        assert_eq!(c.frontier(), 1_001, "partition 2 has records unread");
        assert_eq!(c.confirmation_wanted().1, Vec::<u32>::new());
        for (o, t) in [(1, 4_001), (2, 6_000), (3, 8_000)] {
            assert!(c.admit(&i, ev(2, t), o, moved).is_ok(), "{t} is not late");
        }
    }

    #[test]
    fn a_burst_no_fetch_has_shown_yet_waits_for_the_broker() {
        let i = input(2_000);
        let mut c = two_read_to_their_end(&i, 2_000, 1_000, 1_001);
        // Partition 1's share of a burst arrives; no fetch answer has shown partition 2's yet.
        for (o, t) in [(1, 4_000), (2, 7_000)] {
            c.admit(&i, ev(1, t), o, at(1)).unwrap();
        }
        assert_eq!(
            c.frontier(),
            1_001,
            "partition 2 is not confirmed at its end"
        );
        let (n, origins) = c.confirmation_wanted();
        assert_eq!(origins, vec![2]);
        // The broker says partition 2's end moved: it is behind until it delivers, whatever
        // an older fetch answer says.
        c.confirm(n, |_| Some(3));
        assert_eq!(c.frontier(), 1_001);
        c.refresh(1, STALL, at(1));
        assert_eq!(c.frontier(), 1_001);
        assert!(c.admit_now(&i, ev(2, 3_000), 1).is_ok(), "not late");
        // An answer that its end did not move lets the frontier go.
        let mut d = two_read_to_their_end(&i, 0, 10, 20);
        d.admit(&i, ev(1, 30), 1, at(1)).unwrap();
        assert_eq!(d.frontier(), 20);
        let (n, _) = d.confirmation_wanted();
        d.confirm(n, |_| Some(1));
        assert_eq!(d.frontier(), 30);
    }

    #[test]
    fn revoked_partitions_release_the_frontier_and_their_held_events() {
        let mut c = EventClock::new(10);
        c.assign(1, Start::Offset(0));
        c.assign(2, Start::Offset(0));
        let i = input(10);
        c.admit_now(&i, ev(1, 50), 0).unwrap();
        c.admit_now(&i, ev(2, 100), 0).unwrap();
        c.admit_now(&i, ev(2, 200), 1).unwrap();
        assert_eq!(c.frontier(), 50);
        c.revoke(&[1]);
        assert_eq!(c.frontier(), 200);
        assert_eq!(drain(&mut c), vec![100]);
    }
}
