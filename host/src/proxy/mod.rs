//! The proxy core (RFC 3261 §16): what happens to each message between the
//! transport and the routing script.
//!
//! ```text
//! inbound ─▶ parse ─▶ shard (by Call-ID) ─▶ request: validate ─▶ transaction ─▶ route hook
//!                                              ─▶ reply | relay (stateful) | forward (stateless) | drop
//!                                       └▶ response: client transaction ─▶ on-reply ─▶ upstream / selection ─▶ on-failure
//! ```

mod bad_request;
pub mod checks;
mod locality;
mod routing;
mod shard;
mod stateful;
mod stateless;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

pub use locality::Locality;
pub use routing::{loose_route, Destination};

use crate::script::Source;
use crate::sip::{self, Message};
use crate::tenancy::Tenancy;
use crate::transaction::Timers;
use crate::transport::{Inbound, Target, Transports};

use shard::Shard;

/// Calls are spread over this many shards. Many more shards than cores:
/// two threads seldom want the same one, and a hook that runs long holds up
/// few calls.
const SHARDS: usize = 64;
/// How often the timer thread looks for due timers in idle shards (a busy
/// shard fires its own after each message).
const TIMER_TICK: Duration = Duration::from_millis(10);

pub struct Proxy {
    transports: Arc<Transports>,
    locality: Arc<Locality>,
    tenancy: Arc<Tenancy>,
    timers: Timers,
}

impl Proxy {
    pub fn new(
        transports: Arc<Transports>,
        locality: Arc<Locality>,
        tenancy: Arc<Tenancy>,
        timers: Timers,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            transports,
            locality,
            tenancy,
            timers,
        })
    }

    /// Starts handling messages: datagrams on the threads that receive
    /// them (one per core and UDP listener), stream messages on a thread of
    /// their own, and a timer thread.
    ///
    /// A call's messages and transactions belong to one shard, chosen by
    /// Call-ID; its messages are handled one at a time and in the order they
    /// arrived, while calls spread over every core. Hooks run on these
    /// plain threads: route hooks are synchronous wasm calls, and WASI host
    /// code a guest may call blocks on a runtime of its own.
    pub fn start(self: Arc<Self>, streams: mpsc::Receiver<Inbound>) -> anyhow::Result<()> {
        let shards: Vec<Shard> = (0..SHARDS)
            .map(|i| Shard::new(worker::Worker::new(self.clone(), i)))
            .collect();
        let dispatcher = Arc::new(Dispatcher {
            proxy: self.clone(),
            shards,
        });
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let d = dispatcher.clone();
        self.transports
            .receive_datagrams(threads, Arc::new(move |inbound| d.dispatch(inbound)))
            .context("cannot start the UDP receiving threads")?;
        let d = dispatcher.clone();
        std::thread::Builder::new()
            .name("wisp-streams".into())
            .spawn(move || d.serve_streams(streams))
            .context("cannot start the stream thread")?;
        std::thread::Builder::new()
            .name("wisp-timers".into())
            .spawn(move || loop {
                std::thread::sleep(TIMER_TICK);
                for shard in &dispatcher.shards {
                    shard.drain();
                }
            })
            .context("cannot start the timer thread")?;
        Ok(())
    }
}

/// Parses what arrives and hands it to its shard.
struct Dispatcher {
    proxy: Arc<Proxy>,
    shards: Vec<Shard>,
}

impl Dispatcher {
    fn dispatch(&self, message: Inbound) {
        let source = Source::from(&message);
        match sip::parse(message.data.clone()) {
            Ok(msg) => self.shards[shard_of(&msg, self.shards.len())].submit((msg, source)),
            Err(err) => {
                tracing::debug!(remote = %source.remote, %err, "unparsable message");
                if let Some(reply) = bad_request::reply_400(&message.data, &err.to_string()) {
                    let target = Target {
                        transport: source.transport,
                        addr: source.remote,
                    };
                    if let Err(err) = self.proxy.transports.send(target, reply) {
                        tracing::debug!(%err, "400 not sent");
                    }
                }
            }
        }
    }

    /// Messages from TCP connections, until the transports close.
    fn serve_streams(&self, mut streams: mpsc::Receiver<Inbound>) {
        while let Some(message) = streams.blocking_recv() {
            self.dispatch(message);
        }
    }
}

/// The shard of a message: by Call-ID, so that a call stays on one shard.
fn shard_of(msg: &Message, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    msg.call_id().hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}
