//! A worker: the proxy core of the calls hashed to one shard, driven. It
//! runs on whichever thread holds its shard (see `shard.rs`): it feeds the
//! core what arrived and the time, sends what the core queued, and starts
//! the lookups the core asked for on the runtime. A shard belongs to one
//! tenant's lane (see `lanes.rs`): its hooks count that tenant's time.

use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::dns::{Locate, Resolver};
use crate::proxy::{Core, Event, Locality, LookupId, Source};
use crate::script::{HookTime, Pool};
use crate::sip::{Host, Message};
use crate::tenancy::{Tenancy, TenantHooks};
use crate::transaction::{FinishedLimit, Timers, Transactions};
use crate::transport::{Target, Transport, Transports};

use super::shard::{Handler, Shard};

/// What every worker shares.
pub(super) struct Shared {
    pub(super) transports: Arc<Transports>,
    pub(super) locality: Arc<Locality>,
    pub(super) tenancy: Arc<Tenancy>,
    pub(super) timers: Timers,
    /// The proxy's limits and the transactions counted against them.
    pub(super) admission: Arc<crate::proxy::Admission>,
    /// How many records of answered non-INVITE requests every shard may
    /// hold together (`[proxy] max_transactions`, besides the transactions
    /// in progress that it bounds too).
    pub(super) finished: Arc<FinishedLimit>,
    pub(super) resolver: Resolver,
    /// Where lookups run.
    pub(super) runtime: tokio::runtime::Handle,
}

/// What a shard is handed.
pub(super) enum Input {
    /// A message that arrived.
    Message(Message, Source),
    /// The answer to a lookup the core asked for.
    Resolved(LookupId, Result<Vec<Target>, String>),
    /// A connection to this target could not be opened.
    ConnectFailed(Target),
}

pub(super) struct Worker {
    core: Core<Arc<Pool>>,
    hooks: TenantHooks,
    shared: Arc<Shared>,
    /// Its own shard, where lookup answers are queued.
    shard: Weak<Shard<Worker>>,
}

impl Worker {
    /// The worker of shard `index` (its number in branches), for the
    /// calls of `tenant` (whose hook time it counts) or of the common lane.
    pub(super) fn new(
        shared: Arc<Shared>,
        shard: Weak<Shard<Worker>>,
        index: usize,
        tenant: Option<(String, Arc<HookTime>)>,
    ) -> Worker {
        let hooks = match tenant {
            Some((name, time)) => TenantHooks::for_tenant(shared.tenancy.clone(), name, time),
            None => TenantHooks::new(shared.tenancy.clone()),
        };
        Worker {
            core: Core::new(
                Transactions::sharing(shared.timers, shared.finished.clone()),
                shared.locality.clone(),
                index,
                shared.admission.clone(),
            ),
            hooks,
            shared,
            shard,
        }
    }

    /// Sends what the core queued and starts the lookups it asked for,
    /// until neither is left (a failed send may queue more).
    fn flush(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.core.poll_transmit() {
                progressed = true;
                if let Err(err) = self.shared.transports.send(t.target, t.data) {
                    tracing::debug!(%err, "send failed");
                    if let Some(tx) = t.tx {
                        self.core.handle_transport_error(now, tx, &mut self.hooks);
                    }
                }
            }
            while let Some(event) = self.core.poll_event() {
                progressed = true;
                match event {
                    Event::Resolve {
                        id,
                        destination,
                        response,
                    } => {
                        let Host::Name(host) = destination.host else {
                            continue;
                        };
                        self.lookup(
                            id,
                            Locate {
                                host,
                                port: destination.port,
                                transport: destination.transport,
                                secure: false,
                                response,
                            },
                        );
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    /// Looks a name up on the runtime; the answer comes back to this shard
    /// as input, handled by the next thread that holds it (the timer
    /// thread at the latest), never on the runtime's threads, which must
    /// not run hooks.
    fn lookup(&self, id: LookupId, query: Locate) {
        let resolver = self.shared.resolver.clone();
        let transports = self.shared.transports.clone();
        let shard = self.shard.clone();
        self.shared.runtime.spawn(async move {
            let result = resolver.locate(&query).await.map_err(|e| e.to_string());
            // TLS targets found by name must prove that name (RFC 5922).
            for target in result.iter().flatten() {
                if target.transport == Transport::Tls {
                    transports.expect_tls_name(target.addr, &query.host);
                }
            }
            if let Some(shard) = shard.upgrade() {
                shard.post(Input::Resolved(id, result));
            }
        });
    }
}

impl Handler for Worker {
    type Message = Input;

    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Message(msg, source) => self.core.handle(now, msg, source, &mut self.hooks),
            Input::Resolved(id, result) => {
                self.core.handle_resolved(now, id, result, &mut self.hooks)
            }
            Input::ConnectFailed(target) => {
                self.core
                    .handle_connection_failed(now, target, &mut self.hooks)
            }
        }
        self.flush(now);
    }

    fn expire(&mut self) {
        let now = Instant::now();
        if self.core.poll_timeout().is_some_and(|due| due <= now) {
            self.core.handle_timeout(now, &mut self.hooks);
        }
        self.flush(now);
    }

    fn next_due(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
}
