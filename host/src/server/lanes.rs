//! Lanes: every tenant's calls have shards of their own, so that a tenant
//! whose hooks are slow delays only its own calls.
//!
//! A lane is a tenant's set of shards (the common lane takes what no
//! tenant routes: requests no tenant takes, responses whose branch is not
//! ours). A request finds its tenant by the tenant selection, its shard in
//! the lane by Call-ID, so that its retransmissions, its CANCEL and its
//! ACK find the same shard; a response finds the shard by the number our
//! branch carries (`z9hG4bKwsp<shard>-<n>.…`).
//!
//! Whose thread runs a lane's hooks depends on the tenant's hook time
//! ([`HookTime`]): a tenant whose hooks are quick is handled where its
//! messages arrive (the receiving threads, as before); a tenant with
//! slow hook calls (3 or more in a second, of 5 ms or more each and
//! 100 ms together: see `script::health`) is *confined* for 5 s after the
//! last of them: receiving threads only queue its messages, and the lane
//! threads (a small pool at a lower priority) handle them, one thread per lane at a time,
//! taking turns between confined lanes. Its timers and lookup answers
//! too. Its queue is bounded: a new request is answered 503 when its lane
//! holds [`REFUSE_AT`] messages, or when the messages waiting would take
//! more than [`MAX_WAIT`] of its hooks' time.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::metrics::TenantMetrics;
use crate::proxy::Source;
use crate::script::HookTime;
use crate::sip::{self, HeaderName, Message, Method};
use crate::tenancy::{Selected, Tenant};

use super::alarm::Alarm;
use super::shard::{self, Shard};
use super::worker::{Input, Shared, Worker};

/// Messages waiting in one lane, past which they are dropped.
const LANE_LIMIT: usize = 2048;
/// Messages waiting in one lane past which its new requests get 503.
pub(super) const REFUSE_AT: usize = 1024;
/// The longest a new request of a confined tenant may expect to wait for
/// the messages before it (their count times its mean hook call); past
/// it, 503.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(1);
/// Lanes at most (tenants ever seen since the start); past it, new
/// tenants share the common lane.
const MAX_LANES: usize = 4096;
/// Messages a lane thread handles from one shard before it lets the other
/// confined lanes have a turn.
const LANE_BATCH: usize = 16;
/// Threads handling confined lanes.
pub(super) const LANE_THREADS: usize = 2;
/// Their nice value (Linux): under CPU contention the receiving threads,
/// which carry every other tenant, come first.
const LANE_NICE: i32 = 10;

/// One tenant's shards (or the common lane's).
pub(super) struct Lane {
    id: usize,
    tenant: Option<String>,
    metrics: Option<TenantMetrics>,
    time: Arc<HookTime>,
    shards: Vec<Arc<Shard<Worker>>>,
    /// Messages waiting in its shards.
    queued: Arc<AtomicUsize>,
    /// In the lane threads' queue.
    scheduled: AtomicBool,
    /// A lane thread is on it.
    busy: AtomicBool,
    /// Confined at the last look of the timer thread (for the log).
    was_confined: AtomicBool,
}

impl Lane {
    /// Whether the receiving threads must leave this lane's messages to
    /// the lane threads.
    fn confined(&self, now: Instant) -> bool {
        self.tenant.is_some() && self.time.confined(now)
    }

    fn needs_drain(&self, now: Instant) -> bool {
        self.shards.iter().any(|s| s.needs_drain(now))
    }

    /// Whether a new request must be refused: the lane's queue is full,
    /// or so long that the request would wait beyond [`MAX_WAIT`].
    fn refuses(&self, now: Instant) -> bool {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued >= REFUSE_AT {
            return true;
        }
        self.confined(now)
            && self
                .time
                .mean()
                .saturating_mul(u32::try_from(queued).unwrap_or(u32::MAX))
                >= MAX_WAIT
    }
}

/// Every lane, and the lane threads' queue.
pub(super) struct Lanes {
    shared: Arc<Shared>,
    /// Shards per lane.
    per_lane: usize,
    /// By id; the common lane is 0.
    all: ArcSwap<Vec<Arc<Lane>>>,
    by_tenant: ArcSwap<HashMap<String, Arc<Lane>>>,
    /// One lane added at a time.
    adding: Mutex<()>,
    ready: Mutex<VecDeque<Arc<Lane>>>,
    wake: Condvar,
    /// The timer thread's (see [`Lanes::run_timers`]).
    alarm: Arc<Alarm>,
}

impl Lanes {
    pub(super) fn new(shared: Arc<Shared>, per_lane: usize) -> Arc<Lanes> {
        let per_lane = per_lane.max(1);
        let lanes = Arc::new(Lanes {
            shared,
            per_lane,
            all: ArcSwap::from_pointee(Vec::new()),
            by_tenant: ArcSwap::from_pointee(HashMap::new()),
            adding: Mutex::new(()),
            ready: Mutex::new(VecDeque::new()),
            wake: Condvar::new(),
            alarm: Arc::new(Alarm::new()),
        });
        let common = lanes.new_lane(0, None);
        lanes.all.store(Arc::new(vec![common]));
        lanes
    }

    /// Starts the threads that handle confined lanes.
    pub(super) fn start(self: &Arc<Self>, threads: usize) -> std::io::Result<()> {
        for i in 0..threads {
            let lanes = self.clone();
            std::thread::Builder::new()
                .name(format!("wisp-lane-{i}"))
                .spawn(move || {
                    lower_priority();
                    lanes.serve();
                })?;
        }
        Ok(())
    }

    fn new_lane(&self, id: usize, tenant: Option<&Tenant>) -> Arc<Lane> {
        let time = Arc::new(HookTime::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let shards = (0..self.per_lane)
            .map(|i| {
                let index = id * self.per_lane + i;
                let counted = tenant.map(|t| (t.name.clone(), time.clone()));
                Arc::new_cyclic(|me| {
                    Shard::new(
                        Worker::new(self.shared.clone(), me.clone(), index, counted),
                        queued.clone(),
                        LANE_LIMIT,
                        self.alarm.clone(),
                    )
                })
            })
            .collect();
        Arc::new(Lane {
            id,
            tenant: tenant.map(|t| t.name.clone()),
            metrics: tenant.map(|t| t.metrics.clone()),
            time,
            shards,
            queued,
            scheduled: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            was_confined: AtomicBool::new(false),
        })
    }

    fn common(&self) -> Arc<Lane> {
        self.all.load()[0].clone()
    }

    /// The lane of `tenant`, made on its first message.
    fn lane_of(&self, tenant: &Tenant) -> Arc<Lane> {
        if let Some(lane) = self.by_tenant.load().get(&tenant.name) {
            return lane.clone();
        }
        let _one_at_a_time = lock(&self.adding);
        let by_tenant = self.by_tenant.load_full();
        if let Some(lane) = by_tenant.get(&tenant.name) {
            return lane.clone();
        }
        let all = self.all.load_full();
        if all.len() >= MAX_LANES {
            tracing::warn!(tenant = %tenant.name, "too many lanes: the tenant shares the common lane");
            return all[0].clone();
        }
        let lane = self.new_lane(all.len(), Some(tenant));
        let mut more = Vec::clone(&all);
        more.push(lane.clone());
        self.all.store(Arc::new(more));
        let mut more = HashMap::clone(&by_tenant);
        more.insert(tenant.name.clone(), lane.clone());
        self.by_tenant.store(Arc::new(more));
        lane
    }

    /// Queues a received message on its lane's shard; the shard's number,
    /// or None when it was refused (503) or dropped.
    pub(super) fn dispatch(&self, msg: Message, source: Source) -> Option<usize> {
        let (lane, shard) = if msg.is_request() {
            let lane = match self.shared.tenancy.select(&msg, &source) {
                Selected::Tenant(tenant) => self.lane_of(&tenant),
                Selected::Unknown(_) => self.common(),
            };
            if lane.refuses(Instant::now()) {
                self.refuse(&lane, &msg, &source);
                return None;
            }
            let shard = by_call_id(&msg, self.per_lane);
            (lane, shard)
        } else {
            match self.by_branch(&msg) {
                Some(index) => {
                    let lane = self.all.load()[index / self.per_lane].clone();
                    (lane, index % self.per_lane)
                }
                None => (self.common(), by_call_id(&msg, self.per_lane)),
            }
        };
        let index = lane.id * self.per_lane + shard;
        if lane.shards[shard].enqueue(Input::Message(msg, source)) {
            Some(index)
        } else {
            if let Some(metrics) = &lane.metrics {
                metrics.queue_full.inc();
            }
            None
        }
    }

    /// The shard named by the branch of a response to a request we
    /// relayed; None for another branch.
    fn by_branch(&self, msg: &Message) -> Option<usize> {
        let via = msg.top_via().ok()?;
        let index = crate::proxy::branch::shard_of(via.branch()?)?;
        (index < self.all.load().len() * self.per_lane).then_some(index)
    }

    /// A new request its lane has no room for: 503 and Retry-After (an
    /// ACK or a CANCEL, which cannot be answered so, is dropped).
    fn refuse(&self, lane: &Lane, msg: &Message, source: &Source) {
        if let Some(metrics) = &lane.metrics {
            metrics.queue_full.inc();
        }
        tracing::debug!(
            tenant = lane.tenant.as_deref().unwrap_or(""),
            "lane full: refusing a request"
        );
        if matches!(msg.method(), Some(Method::Ack | Method::Cancel) | None) {
            return;
        }
        let mut reply = sip::response_to(msg, 503, "Service Unavailable", None);
        let _ = reply.append_header(HeaderName::parse("Retry-After"), "1");
        if let Err(err) = self
            .shared
            .transports
            .send(crate::proxy::reply_target(msg, source), reply.to_bytes())
        {
            tracing::debug!(%err, "503 not sent");
        }
    }

    /// Handles what was queued on shard `index`, on this thread, unless
    /// its tenant is confined (then the lane threads do).
    pub(super) fn handle(&self, index: usize) {
        let all = self.all.load();
        let Some(lane) = all.get(index / self.per_lane) else {
            return;
        };
        let shard = &lane.shards[index % self.per_lane];
        if lane.confined(Instant::now()) || shard.drain(&|| lane.confined(Instant::now())) {
            self.schedule(lane);
        }
    }

    /// Takes over shard `index` if messages wait there and nobody holds
    /// it (see [`Shard::take_over`]); whether it handled any. A confined
    /// lane's messages are the lane threads'.
    pub(super) fn take_over(&self, index: usize) -> bool {
        let all = self.all.load();
        let Some(lane) = all.get(index / self.per_lane) else {
            return false;
        };
        if lane.confined(Instant::now()) {
            return false;
        }
        let shard = &lane.shards[index % self.per_lane];
        let (handled, left) = shard.take_over(&|| lane.confined(Instant::now()));
        if left {
            self.schedule(lane);
        }
        handled
    }

    /// The timer thread, for ever: rounds of [`Lanes::tick`], sleeping in
    /// between until the earliest timer of any shard (see `alarm.rs`).
    pub(super) fn run_timers(&self) -> ! {
        self.alarm.run(
            || shard::micros(Instant::now()),
            || self.tick(),
            || self.next_due(),
        )
    }

    /// The earliest timer of any shard (µs, as shards count them).
    fn next_due(&self) -> u64 {
        self.all
            .load()
            .iter()
            .flat_map(|lane| lane.shards.iter())
            .map(|shard| shard.due_us())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The timer thread's round: fires the timers due and handles lookup
    /// answers in shards nobody holds; confined lanes are handed to the
    /// lane threads instead.
    fn tick(&self) {
        let now = Instant::now();
        for lane in self.all.load().iter() {
            let confined = lane.confined(now);
            if lane.was_confined.swap(confined, Ordering::Relaxed) && !confined {
                tracing::info!(
                    tenant = lane.tenant.as_deref().unwrap_or(""),
                    "hooks quick again: the tenant's calls are back on the receiving threads"
                );
            }
            if confined {
                if lane.needs_drain(now) {
                    self.schedule(lane);
                }
                continue;
            }
            for shard in &lane.shards {
                if shard.needs_drain(now) && shard.drain(&|| lane.confined(Instant::now())) {
                    self.schedule(lane);
                }
            }
        }
    }

    /// Every shard, for news that concerns them all.
    pub(super) fn each_shard(&self, mut f: impl FnMut(&Shard<Worker>)) {
        for lane in self.all.load().iter() {
            for shard in &lane.shards {
                f(shard);
            }
        }
    }

    fn schedule(&self, lane: &Arc<Lane>) {
        if lane.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.ready).push_back(lane.clone());
        self.wake.notify_one();
    }

    /// A lane thread: takes confined lanes in turn, a batch of each
    /// shard's messages at a time.
    fn serve(&self) {
        loop {
            let lane = {
                let mut ready = lock(&self.ready);
                loop {
                    if let Some(lane) = ready.pop_front() {
                        break lane;
                    }
                    ready = self.wake.wait(ready).unwrap_or_else(|e| e.into_inner());
                }
            };
            lane.scheduled.store(false, Ordering::Release);
            if lane.busy.swap(true, Ordering::AcqRel) {
                // Another lane thread is on it; it (or the timer thread)
                // will reschedule what it leaves.
                continue;
            }
            let mut left = false;
            for shard in &lane.shards {
                let handled = std::cell::Cell::new(0);
                left |= shard.drain(&|| {
                    handled.set(handled.get() + 1);
                    handled.get() > LANE_BATCH
                });
            }
            lane.busy.store(false, Ordering::Release);
            if left {
                self.schedule(&lane);
            }
        }
    }
}

/// The shard of a message within its lane: by Call-ID, so that a call
/// stays on one shard.
fn by_call_id(msg: &Message, shards: usize) -> usize {
    let h = crate::transaction::hash::process_hash(&msg.call_id());
    (h % shards.max(1) as u64) as usize
}

/// Lane threads yield to the receiving threads under contention.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on our own
        // thread id changes only this thread's nice value.
        let ok = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, LANE_NICE)
        };
        if ok != 0 {
            tracing::debug!("lane thread keeps its priority");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
