//! The threads that drive the proxy core: receiving threads parse what
//! arrives, queue it on its shard in arrival order (in its tenant's lane,
//! see `lanes.rs`) and handle it, a thread takes stream messages, a timer
//! thread fires the timers of idle shards, lane threads handle the
//! tenants confined for slow hooks, and lookups run on the tokio runtime
//! and come back to their shard as input.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::sync::mpsc;

use crate::proxy::Source;
use crate::sip::{self, Message};
use crate::transport::{Datagrams, Flood, Inbound, Target};

use super::bad_request;
use super::lanes::{Lanes, LANE_THREADS};
use super::worker::{Input, Shared};

/// A tenant's calls are spread over this many shards per core (4 at
/// least, 16 at most): more shards than cores, so that two threads seldom
/// want the same one.
const SHARDS_PER_CORE: usize = 2;

/// Shards kept at most for an idle thread to take over (see
/// [`Dispatcher::handle`]).
const LEFT_FOR_LATER: usize = 32;

/// Parses what arrives and hands it to its shard.
pub(super) struct Dispatcher {
    shared: Arc<Shared>,
    /// Trusted sources, per-source limits and bans, before parsing.
    flood: Arc<Flood>,
    lanes: Arc<Lanes>,
    /// Shards a receiving thread queued messages on and had not come to
    /// when it started handling its batch, the latest last.
    later: Mutex<Vec<usize>>,
}

impl Dispatcher {
    /// Starts handling messages: datagrams on the threads that receive
    /// them (one per core and UDP listener), stream messages on a thread of
    /// their own, and a timer thread.
    ///
    /// A call's messages and transactions belong to one shard, chosen by
    /// Call-ID; its messages are handled one at a time and in the order they
    /// arrived, while calls spread over every core. Hooks run on these
    /// plain threads: route hooks are synchronous wasm calls. Nothing they
    /// wait for is the network: names are looked up on the runtime, and
    /// the message waits parked in its shard meanwhile.
    pub(super) fn start(
        shared: Shared,
        streams: mpsc::Receiver<Inbound>,
        flood: Arc<Flood>,
    ) -> anyhow::Result<()> {
        let shared = Arc::new(shared);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let lanes = Lanes::new(shared.clone(), (SHARDS_PER_CORE * threads).clamp(4, 16));
        lanes
            .start(LANE_THREADS)
            .context("cannot start the lane threads")?;
        let dispatcher = Arc::new(Dispatcher {
            lanes,
            flood,
            shared: shared.clone(),
            later: Mutex::new(Vec::with_capacity(LEFT_FOR_LATER)),
        });
        // Every shard may have sent to a connection that failed to open:
        // each is told (rare), and the timer thread hands it over.
        let told = Arc::downgrade(&dispatcher);
        shared
            .transports
            .on_connect_failed(Arc::new(move |target: Target| {
                if let Some(dispatcher) = told.upgrade() {
                    dispatcher.lanes.each_shard(|shard| {
                        shard.post(Input::ConnectFailed(target));
                    });
                }
            }));
        shared
            .transports
            .receive_datagrams(threads, dispatcher.clone())
            .context("cannot start the UDP receiving threads")?;
        let d = dispatcher.clone();
        std::thread::Builder::new()
            .name("wisp-streams".into())
            .spawn(move || d.serve_streams(streams))
            .context("cannot start the stream thread")?;
        std::thread::Builder::new()
            .name("wisp-timers".into())
            .spawn(move || dispatcher.lanes.run_timers())
            .context("cannot start the timer thread")?;
        Ok(())
    }

    fn handle_one(&self, sorted: Sorted) {
        match sorted {
            Sorted::Queued(shard) => self.lanes.handle(shard),
            Sorted::Unparsable(message, err) => self.reject(&message, &err),
        }
    }

    fn reject(&self, message: &Inbound, err: &str) {
        tracing::debug!(remote = %message.remote, %err, "unparsable message");
        if let Some(reply) = bad_request::reply_400(&message.data, err) {
            let target = Target {
                transport: message.transport,
                addr: message.remote,
            };
            if let Err(err) = self.shared.transports.send(target, reply) {
                tracing::debug!(%err, "400 not sent");
            }
        }
    }

    /// RFC 5923: a request whose Via asks `alias` makes its connection
    /// carry what wisp sends to the Via's sent-by (an IP address and
    /// port; a name is not looked up for it).
    fn alias(&self, msg: &Message, message: &Inbound) {
        let Ok(via) = msg.top_via() else { return };
        if !via.alias() {
            return;
        }
        let Some(ip) = via.host.ip() else { return };
        let sent_by =
            std::net::SocketAddr::new(ip, via.port.unwrap_or(message.transport.default_port()));
        self.shared
            .transports
            .alias(message.transport, message.remote, sent_by);
    }

    /// Messages from stream connections, until the transports close.
    fn serve_streams(&self, mut streams: mpsc::Receiver<Inbound>) {
        while let Some(message) = streams.blocking_recv() {
            if let Some(sorted) = Datagrams::sort(self, message) {
                self.handle_one(sorted);
            }
        }
    }
}

/// A received message, sorted.
pub(super) enum Sorted {
    /// Queued on this shard.
    Queued(usize),
    /// To be answered 400, if it can be.
    Unparsable(Inbound, String),
}

impl Datagrams for Dispatcher {
    type Sorted = Sorted;

    /// Queues a message on its shard; a message that does not parse is
    /// left to be answered 400.
    fn sort(&self, message: Inbound) -> Option<Sorted> {
        // Before parsing: a banned source's messages, and a request past
        // its source's limit, go no further.
        let trusted = self.flood.admit(&message)?;
        match sip::parse(message.data.clone()) {
            Ok(msg) => {
                if message.transport.is_stream() && msg.is_request() {
                    self.alias(&msg, &message);
                }
                let source = Source {
                    trusted,
                    ..Source::from(&message)
                };
                self.lanes.dispatch(msg, source).map(Sorted::Queued)
            }
            Err(err) => Some(Sorted::Unparsable(message, err.to_string())),
        }
    }

    /// Handles a batch shard by shard, in the order they came: a shard's
    /// first drain handles all the batch queued on it. The shards after
    /// the first are left for later too: a thread about to sleep takes
    /// them over ([`Dispatcher::help`]) rather than let them wait for
    /// this one's hooks. (Datagrams come in bursts, and a thread back from
    /// handling takes the queued ones as a batch.)
    fn handle(&self, sorted: &mut Vec<Sorted>) {
        // A UDP batch is 8 datagrams at most; past 8 shards (none today),
        // the rest are handled as they come.
        let mut shards = [usize::MAX; 8];
        let mut n = 0;
        for s in sorted.drain(..) {
            match s {
                Sorted::Queued(shard) if shards[..n].contains(&shard) => {}
                Sorted::Queued(shard) if n < shards.len() => {
                    shards[n] = shard;
                    n += 1;
                }
                other => self.handle_one(other),
            }
        }
        if n > 1 {
            let mut later = self.later.lock().unwrap_or_else(|e| e.into_inner());
            if later.len() + n > LEFT_FOR_LATER {
                // Left by batches others came to first, most of them.
                later.clear();
            }
            later.extend_from_slice(&shards[1..n]);
        }
        for &shard in &shards[..n] {
            self.lanes.handle(shard);
        }
    }

    /// Takes over a shard another thread's batch left for later, the
    /// latest first (the one its thread comes to last); whether there was
    /// one with messages waiting.
    fn help(&self) -> bool {
        loop {
            let next = self.later.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(shard) = next else {
                return false;
            };
            if self.lanes.take_over(shard) {
                return true;
            }
        }
    }
}
