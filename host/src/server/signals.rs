//! The signals an operator sends: SIGHUP reloads, SIGINT and SIGTERM stop.
//!
//! A signal nobody listens for yet gets its default action, which for all
//! three is the process killed: nothing written behind, no clean close.
//! So each is listened for before wisp takes requests, not when it first
//! waits for one.

use std::sync::Arc;

use crate::tenancy::Tenancy;

/// SIGHUP reloads the tenants from the configuration file, from now on.
pub(super) fn reload_on_sighup(tenancy: Arc<Tenancy>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(hup) => hup,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGHUP: reload with `wisp ctl reload`");
                return;
            }
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                let tenancy = tenancy.clone();
                let outcome = tokio::task::spawn_blocking(move || tenancy.reload_config()).await;
                match outcome {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        tracing::error!(%err, "SIGHUP reload refused; nothing changed")
                    }
                    Err(err) => tracing::error!(%err, "SIGHUP reload failed"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = tenancy;
}

/// SIGINT and SIGTERM, caught from when this is made: a stop asked for
/// at any later moment is a clean one.
pub(super) struct Shutdown {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Shutdown {
    /// Listens for SIGINT and SIGTERM now; an error if the system refuses
    /// (wisp would otherwise run with no way to stop it cleanly).
    pub(super) fn listen() -> std::io::Result<Shutdown> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Shutdown {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Shutdown {})
    }

    /// Returns when SIGINT or SIGTERM arrived (since [`Shutdown::listen`]).
    pub(super) async fn requested(self) {
        #[cfg(unix)]
        {
            let Shutdown {
                mut interrupt,
                mut terminate,
            } = self;
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
