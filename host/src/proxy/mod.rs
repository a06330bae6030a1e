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
    pub fn new(transports: Arc<Transports>, locality: Arc<Locality>, tenants: Vec<Tenant>) -> Arc<Proxy> {
        Arc::new(Proxy {
            transports,
            locality,
            tenants,
        })
    }

    /// Handles messages until the transports close.
    pub async fn run(self: Arc<Self>, mut inbound: mpsc::Receiver<Inbound>) {
        while let Some(message) = inbound.recv().await {
            let proxy = self.clone();
            tokio::spawn(async move { proxy.handle(message).await });
        }
    }

    async fn handle(&self, inbound: Inbound) {
        let source = Source::from(&inbound);
        match sip::parse(inbound.data.clone()) {
            Ok(msg) if msg.is_request() => self.on_request(msg, source).await,
            Ok(msg) => self.on_response(msg).await,
            Err(err) => {
                tracing::debug!(remote = %source.remote, %err, "unparsable message");
                if let Some(reply) = bad_request::reply_400(&inbound.data, &err.to_string()) {
                    let target = Target {
                        transport: source.transport,
                        addr: source.remote,
                    };
                    if let Err(err) = self.transports.send(target, reply).await {
                        tracing::debug!(%err, "400 not sent");
                    }
                }
            }
        }
    }

    async fn on_request(&self, msg: Message, source: Source) {
        let req = RequestCtx::new(msg, source);
        if let Err(err) = sip::validate(&req.msg) {
            tracing::debug!(remote = %source.remote, %err, "malformed request");
            self.reply(&req, 400, &err.to_string(), &[]).await;
            return;
        }
        // Tenant selection by domain comes with multi-tenancy; until then
        // the first tenant routes everything.
        let Some(tenant) = self.tenants.first() else {
            return;
        };
        let (req, result) = tenant.pool.route(req);
        match result {
            Ok(actions) => self.execute(req, actions).await,
            Err(err) => {
                tracing::warn!(tenant = %tenant.name, %err, "route hook failed; answering 500");
                self.reply(&req, 500, "Server Internal Error", &[]).await;
            }
        }
    }

    /// Carries out what the route hook decided, in order.
    async fn execute(&self, mut req: RequestCtx, actions: Vec<Action>) {
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
                } => self.reply(&req, code, &reason, &headers).await,
                Action::Forward { destination } => {
                    if let Err(err) = self.forward(&mut req, destination.as_deref()).await {
                        tracing::info!(remote = %req.source.remote, %err, "cannot forward");
                        self.reply(&req, 500, "Cannot Forward", &[]).await;
                    }
                }
            }
        }
    }

    async fn on_response(&self, msg: Message) {
        if let Err(err) = sip::validate(&msg) {
            tracing::debug!(%err, "dropping a malformed response");
            return;
        }
        self.relay_response(msg).await;
    }
}
