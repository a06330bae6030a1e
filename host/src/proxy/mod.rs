//! The proxy core (RFC 3261 §16): what happens to each message between the
//! transport and the routing script.
//!
//! ```text
//! inbound ─▶ parse ─▶ worker (by Call-ID) ─▶ request: validate ─▶ transaction ─▶ route hook
//!                                                 ─▶ reply | relay (stateful) | forward (stateless) | drop
//!                                          └▶ response: client transaction ─▶ on-reply ─▶ upstream / selection ─▶ on-failure
//! ```

mod bad_request;
pub mod checks;
mod locality;
mod routing;
mod stateful;
mod stateless;
mod worker;

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::mpsc;

pub use locality::Locality;
pub(crate) use routing::mentions;
pub use routing::{loose_route, Destination};

use crate::script::Source;
use crate::sip::{self, Message};
use crate::tenancy::Tenancy;
use crate::transaction::Timers;
use crate::transport::{Inbound, Target, Transports};

/// Messages waiting for one worker before new ones are dropped (overload).
const WORKER_QUEUE: usize = 8192;

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

    /// Handles messages until the transports close.
    ///
    /// Messages are parsed here and handed to one worker thread per core,
    /// chosen by Call-ID: a call's messages and transactions live on one
    /// worker (no locks on the transaction table) and are handled in the
    /// order they arrived, while calls spread over every core. Workers are
    /// plain threads: route hooks are synchronous wasm calls, and WASI host
    /// code a guest may call blocks on a runtime of its own.
    pub async fn run(self: Arc<Self>, mut inbound: mpsc::Receiver<Inbound>) {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut shards: Vec<SyncSender<(Message, Source)>> = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) = sync_channel(WORKER_QUEUE);
            let worker = worker::Worker::new(self.clone(), i);
            match std::thread::Builder::new()
                .name(format!("wisp-worker-{i}"))
                .spawn(move || worker.run(rx))
            {
                Ok(_) => shards.push(tx),
                Err(err) => tracing::error!(%err, "cannot start a worker thread"),
            }
        }
        if shards.is_empty() {
            tracing::error!("no worker thread could start; not serving");
            return;
        }
        while let Some(message) = inbound.recv().await {
            let source = Source::from(&message);
            match sip::parse(message.data.clone()) {
                Ok(msg) => {
                    let shard = shard_of(&msg, shards.len());
                    match shards[shard].try_send((msg, source)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            tracing::warn!(remote = %source.remote, "worker queue full: dropping a message")
                        }
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
                Err(err) => {
                    tracing::debug!(remote = %source.remote, %err, "unparsable message");
                    if let Some(reply) = bad_request::reply_400(&message.data, &err.to_string()) {
                        let target = Target {
                            transport: source.transport,
                            addr: source.remote,
                        };
                        if let Err(err) = self.transports.send(target, reply) {
                            tracing::debug!(%err, "400 not sent");
                        }
                    }
                }
            }
        }
    }
}

/// The worker for a message: by Call-ID, so that one call stays on one worker.
fn shard_of(msg: &Message, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    msg.call_id().hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}
