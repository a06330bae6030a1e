//! The link's machinery: a `wisp-cluster` thread running a current-thread
//! tokio runtime, with one supervisor task that (re)connects a multiplexed
//! command connection and a pub/sub connection, watches them, and flips
//! the `up` flag — once per change, logged and in `wisp_cluster_redis_up`.
//!
//! Commands are spawned on that runtime and their answer comes back over a
//! channel, so that hook threads (plain threads) and tokio tasks of the
//! server's runtime alike can wait on them with a bound. A command that
//! finds the connection broken wakes the supervisor, which checks with a
//! PING and reconnects; until then the others fail as fast as the broken
//! socket does, and once `up` is false they fail without sending.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus_client::metrics::gauge::Gauge;
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use tokio::sync::{mpsc, Notify};

use super::{ClusterError, OnMessage};

/// What is sent to Redis.
pub(super) enum Request {
    Cmd(redis::Cmd),
    Pipe(redis::Pipeline),
}

/// Between two reconnection attempts: from the first to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle link checks that Redis still answers.
const PING_INTERVAL: Duration = Duration::from_secs(1);

type Handlers = Vec<(String, Arc<OnMessage>)>;

struct Shared {
    up: AtomicBool,
    gauge: Gauge,
    /// The command connection while up.
    conn: Mutex<Option<MultiplexedConnection>>,
    subscriptions: Mutex<Handlers>,
    on_up: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
    /// A command saw the connection fail.
    trouble: Notify,
    /// The [`super::Cluster`] is gone: the supervisor ends.
    closed: AtomicBool,
    closing: Notify,
}

impl Shared {
    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub(super) struct Link {
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
    /// New channels for the pub/sub connection.
    subscribe: mpsc::UnboundedSender<String>,
}

impl Link {
    pub(super) fn start(
        client: redis::Client,
        timeout: Duration,
        url: String,
    ) -> anyhow::Result<Link> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let shared = Arc::new(Shared {
            up: AtomicBool::new(false),
            gauge: Gauge::default(),
            conn: Mutex::new(None),
            subscriptions: Mutex::new(Vec::new()),
            on_up: Mutex::new(Vec::new()),
            trouble: Notify::new(),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
        });
        let (subscribe, channels) = mpsc::unbounded_channel();
        let supervisor = Supervisor {
            client,
            timeout,
            url,
            shared: shared.clone(),
            channels,
            reported: None,
        };
        std::thread::Builder::new()
            .name("wisp-cluster".into())
            .spawn(move || runtime.block_on(supervisor.run()))?;
        Ok(Link {
            runtime: handle,
            shared,
            subscribe,
        })
    }

    pub(super) fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Acquire)
    }

    pub(super) fn gauge(&self) -> Gauge {
        self.shared.gauge.clone()
    }

    pub(super) fn run_blocking<T: redis::FromRedisValue + Send + 'static>(
        &self,
        timeout: Duration,
        request: Request,
    ) -> Result<T, ClusterError> {
        let conn = self.shared.connection().ok_or(ClusterError::Down)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(send(conn, request, timeout, &shared).await);
        });
        // The task is bounded by `timeout` already; the margin covers a
        // busy link thread.
        rx.recv_timeout(timeout + Duration::from_millis(50))
            .unwrap_or(Err(ClusterError::Timeout))
    }

    pub(super) async fn run_async<T: redis::FromRedisValue + Send + 'static>(
        &self,
        timeout: Duration,
        request: Request,
    ) -> Result<T, ClusterError> {
        let conn = self.shared.connection().ok_or(ClusterError::Down)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = self.shared.clone();
        self.runtime.spawn(async move {
            let _ = tx.send(send(conn, request, timeout, &shared).await);
        });
        rx.await.unwrap_or(Err(ClusterError::Timeout))
    }

    pub(super) fn subscribe(&self, channel: &str, on_message: OnMessage) {
        self.shared
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((channel.to_owned(), Arc::new(on_message)));
        // Subscribed now if the link is up, at the next connection if not.
        let _ = self.subscribe.send(channel.to_owned());
    }

    pub(super) fn on_up(&self, f: Box<dyn Fn() + Send + Sync>) {
        let f: Arc<dyn Fn() + Send + Sync> = Arc::from(f);
        self.shared
            .on_up
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f.clone());
        // The link may have come up before this was registered (it starts
        // before the services): what comes with "up" happens now.
        if self.is_up() {
            f();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.closing.notify_one();
    }
}

/// Sends one request on the link's runtime, bounded by `timeout`.
async fn send<T: redis::FromRedisValue>(
    mut conn: MultiplexedConnection,
    request: Request,
    timeout: Duration,
    shared: &Shared,
) -> Result<T, ClusterError> {
    let sent = match &request {
        Request::Cmd(cmd) => tokio::time::timeout(timeout, cmd.query_async::<T>(&mut conn)).await,
        Request::Pipe(pipe) => {
            tokio::time::timeout(timeout, pipe.query_async::<T>(&mut conn)).await
        }
    };
    match sent {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) if is_link_failure(&err) => {
            shared.trouble.notify_one();
            Err(ClusterError::Down)
        }
        Ok(Err(err)) => Err(ClusterError::Redis(err.to_string())),
        Err(_) => {
            shared.trouble.notify_one();
            Err(ClusterError::Timeout)
        }
    }
}

fn is_link_failure(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error()
        || err.is_timeout()
}

struct Supervisor {
    client: redis::Client,
    timeout: Duration,
    url: String,
    shared: Arc<Shared>,
    channels: mpsc::UnboundedReceiver<String>,
    /// The state last logged (none yet at start).
    reported: Option<bool>,
}

/// Why a connected link ended.
enum Ended {
    Lost(String),
    Closed,
}

impl Supervisor {
    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        while !self.shared.closed.load(Ordering::Acquire) {
            let shared = self.shared.clone();
            let connected = tokio::select! {
                c = self.connect() => c,
                _ = shared.closing.notified() => return,
            };
            match connected {
                Ok((conn, sink, stream)) => {
                    backoff = BACKOFF_MIN;
                    *self.shared.conn.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(conn.clone());
                    self.set_up(true, None);
                    let ended = self.serve(conn, sink, stream).await;
                    *self.shared.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    match ended {
                        Ended::Closed => return,
                        Ended::Lost(why) => self.set_up(false, Some(why)),
                    }
                }
                Err(why) => {
                    self.set_up(false, Some(why));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shared.closing.notified() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Both connections, with every channel subscribed, or why not.
    async fn connect(
        &mut self,
    ) -> Result<(MultiplexedConnection, PubSubSink, PubSubStream), String> {
        let bound = self.timeout.max(Duration::from_secs(1));
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(bound))
            .set_response_timeout(Some(bound));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        let pubsub = tokio::time::timeout(bound, self.client.get_async_pubsub())
            .await
            .map_err(|_| "pub/sub connection timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let (mut sink, stream) = pubsub.split();
        // Whatever was queued is in the list too: subscribe the list.
        while self.channels.try_recv().is_ok() {}
        let mut channels: Vec<String> = self
            .shared
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        channels.sort();
        channels.dedup();
        if !channels.is_empty() {
            tokio::time::timeout(bound, sink.subscribe(&channels))
                .await
                .map_err(|_| "SUBSCRIBE timed out".to_string())?
                .map_err(|e| e.to_string())?;
        }
        Ok((conn, sink, stream))
    }

    /// Serves a connected link until it fails or the cluster closes.
    async fn serve(
        &mut self,
        mut conn: MultiplexedConnection,
        mut sink: PubSubSink,
        mut stream: PubSubStream,
    ) -> Ended {
        let shared = self.shared.clone();
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ended::Lost("pub/sub connection closed".into());
                    };
                    self.dispatch(message.get_channel_name(), message.get_payload_bytes());
                }
                channel = self.channels.recv() => {
                    let Some(channel) = channel else { return Ended::Closed };
                    match tokio::time::timeout(self.timeout.max(Duration::from_secs(1)), sink.subscribe(&channel)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => return Ended::Lost(format!("SUBSCRIBE {channel}: {err}")),
                        Err(_) => return Ended::Lost(format!("SUBSCRIBE {channel} timed out")),
                    }
                }
                _ = ping.tick() => {
                    if let Err(why) = self.ping(&mut conn).await {
                        return Ended::Lost(why);
                    }
                }
                _ = shared.trouble.notified() => {
                    if let Err(why) = self.ping(&mut conn).await {
                        return Ended::Lost(why);
                    }
                }
                _ = shared.closing.notified() => return Ended::Closed,
            }
        }
    }

    async fn ping(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, redis::cmd("PING").query_async::<String>(conn))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("PING timed out".into()),
        }
    }

    fn dispatch(&self, channel: &str, payload: &[u8]) {
        let handlers: Vec<Arc<OnMessage>> = self
            .shared
            .subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, f)| f.clone())
            .collect();
        for handler in handlers {
            handler(payload);
        }
    }

    /// Flips the state, saying so once per change; coming up runs the
    /// `on_up` callbacks (caches forget what they may have missed).
    fn set_up(&mut self, up: bool, why: Option<String>) {
        self.shared.up.store(up, Ordering::Release);
        self.shared.gauge.set(i64::from(up));
        if self.reported == Some(up) {
            return;
        }
        self.reported = Some(up);
        if up {
            tracing::info!(redis = %self.url, "cluster: link to redis up");
            let callbacks: Vec<_> = self
                .shared
                .on_up
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            for f in callbacks {
                f();
            }
        } else {
            tracing::warn!(
                redis = %self.url,
                why = why.as_deref().unwrap_or(""),
                "cluster: link to redis down; REGISTER answers 500 and cached bindings serve lookups until it is back"
            );
        }
    }
}
