//! The proxy core (RFC 3261 §16): what happens to each message between the
//! transport and the routing script.
//!
//! ```text
//! inbound ─▶ parse ─▶ request: validate ─▶ tenant's route hook ─▶ reply | forward | drop
//!                  └▶ response: validate ─▶ relay by Via
//! ```

mod bad_request;
pub mod checks;
mod locality;
mod routing;
mod stateless;

use std::sync::Arc;

use tokio::sync::mpsc;

pub use locality::Locality;
pub use routing::{loose_route, Destination};

use crate::script::{Action, Pool, RequestCtx, Source};
use crate::sip::{self, Message};
use crate::transport::{Inbound, Target, Transports};
use stateless::stamp_received;

/// A tenant: a name and the routing component serving it.
pub struct Tenant {
    pub name: String,
    pub pool: Pool,
}

pub struct Proxy {
    transports: Arc<Transports>,
    locality: Arc<Locality>,
    tenants: Vec<Tenant>,
}

impl Proxy {
    pub fn new(
        transports: Arc<Transports>,
        locality: Arc<Locality>,
        tenants: Vec<Tenant>,
    ) -> Arc<Proxy> {
        Arc::new(Proxy {
            transports,
            locality,
            tenants,
        })
    }

    /// Handles messages until the transports close.
    ///
    /// Messages are parsed here and handed to one worker thread per core,
    /// chosen by Call-ID: the messages of one call are handled in the order
    /// they arrived (a 180 relayed after its 200 would break the caller),
    /// while different calls use every core. Workers are plain threads, not
    /// async tasks: route hooks are synchronous wasm calls, and the WASI
    /// host code a guest may call blocks on its own runtime.
    pub async fn run(self: Arc<Self>, mut inbound: mpsc::Receiver<Inbound>) {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut shards = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, mut rx) = mpsc::channel::<(Message, Source)>(1024);
            let proxy = self.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("wisp-worker-{i}"))
                .spawn(move || {
                    while let Some((msg, source)) = rx.blocking_recv() {
                        proxy.handle(msg, source);
                    }
                });
            match spawned {
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
                    if shards[shard].send((msg, source)).await.is_err() {
                        return;
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

    fn handle(&self, msg: Message, source: Source) {
        if msg.is_request() {
            self.on_request(msg, source);
        } else {
            self.on_response(msg);
        }
    }

    fn on_request(&self, msg: Message, source: Source) {
        let mut req = RequestCtx::new(msg, source);
        if let Err(err) = sip::validate(&req.msg) {
            tracing::debug!(remote = %source.remote, %err, "malformed request");
            self.reply(&req, 400, &err.to_string(), &[]);
            return;
        }
        stamp_received(&mut req.msg, &req.source);
        // Tenant selection by domain comes with multi-tenancy; until then
        // the first tenant routes everything.
        let Some(tenant) = self.tenants.first() else {
            return;
        };
        let (req, result) = tenant.pool.route(req);
        match result {
            Ok(actions) => self.execute(req, actions),
            Err(err) => {
                tracing::warn!(tenant = %tenant.name, %err, "route hook failed; answering 500");
                self.reply(&req, 500, "Server Internal Error", &[]);
            }
        }
    }

    /// Carries out what the route hook decided, in order.
    fn execute(&self, mut req: RequestCtx, actions: Vec<Action>) {
        if actions.is_empty() {
            tracing::debug!(method = ?req.msg.method(), "route hook dropped the request");
            return;
        }
        for action in actions {
            match action {
                Action::Reply {
                    code,
                    reason,
                    headers,
                } => self.reply(&req, code, &reason, &headers),
                Action::Forward { destination } => {
                    if let Err(err) = self.forward(&mut req, destination.as_deref()) {
                        tracing::info!(remote = %req.source.remote, %err, "cannot forward");
                        self.reply(&req, 500, "Cannot Forward", &[]);
                    }
                }
            }
        }
    }

    fn on_response(&self, msg: Message) {
        if let Err(err) = sip::validate(&msg) {
            tracing::debug!(%err, "dropping a malformed response");
            return;
        }
        self.relay_response(msg);
    }
}

/// The worker for a message: by Call-ID, so that one call stays on one worker.
fn shard_of(msg: &Message, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    msg.call_id().hash(&mut h);
    (h.finish() % shards.max(1) as u64) as usize
}
