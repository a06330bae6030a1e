//! `[connections]`: the bounds every stream connection lives within.

use std::time::Duration;

use serde::Deserialize;

use crate::sip::{MAX_HEADER_BYTES, MAX_STREAM_BODY};

/// Bounds on stream connections (TCP, TLS, WS, WSS). Each has a metric that counts what it refused or closed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Connections open at once, accepted and opened by us together; a
    /// connection accepted past it is closed at once.
    pub max: usize,
    /// Accepted connections from one IP address at once. Phones behind one
    /// NAT share an address: the default leaves room for an office.
    pub max_per_ip: usize,
    /// A connection nothing arrived on for this long is closed.
    pub idle_timeout_s: u64,
    /// A message begun must be whole within this long (a slow sender
    /// holding a connection with a trickle of bytes).
    pub message_timeout_ms: u64,
    /// Largest header section of a message on a stream.
    pub max_header_bytes: usize,
    /// Largest body (Content-Length) of a message on a stream.
    pub max_body_bytes: usize,
    /// Bytes waiting to be written to one connection; a message that would
    /// go past it is not sent (the peer is not reading).
    pub max_queued_bytes: usize,
    /// How long opening a connection may take (for an accepted one: its
    /// TLS handshake and WebSocket upgrade).
    pub connect_timeout_ms: u64,
    /// WebSocket: a ping goes out this often, so that NATs keep the
    /// connection and a browser's pong counts as traffic.
    pub ws_ping_interval_s: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max: 16_384,
            max_per_ip: 1_024,
            idle_timeout_s: 600,
            message_timeout_ms: 10_000,
            max_header_bytes: 32 * 1024,
            max_body_bytes: 64 * 1024,
            max_queued_bytes: 1024 * 1024,
            connect_timeout_ms: 5_000,
            ws_ping_interval_s: 30,
        }
    }
}

impl ConnectionLimits {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    pub fn message_timeout(&self) -> Duration {
        Duration::from_millis(self.message_timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn ws_ping_interval(&self) -> Duration {
        Duration::from_secs(self.ws_ping_interval_s)
    }

    /// What serde cannot check; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("max", self.max as u64),
            ("max_per_ip", self.max_per_ip as u64),
            ("idle_timeout_s", self.idle_timeout_s),
            ("message_timeout_ms", self.message_timeout_ms),
            ("max_header_bytes", self.max_header_bytes as u64),
            ("max_queued_bytes", self.max_queued_bytes as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("ws_ping_interval_s", self.ws_ping_interval_s),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("[connections] {name} must be above 0"));
        }
        if self.max_header_bytes > MAX_HEADER_BYTES {
            return Err(format!(
                "[connections] max_header_bytes may be {MAX_HEADER_BYTES} at most"
            ));
        }
        if self.max_body_bytes > MAX_STREAM_BODY {
            return Err(format!(
                "[connections] max_body_bytes may be {MAX_STREAM_BODY} at most"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_nonsense_is_named() {
        assert!(ConnectionLimits::default().check().is_ok());
        let limits: ConnectionLimits = toml::from_str("max_per_ip = 0").expect("limits");
        assert_eq!(
            limits.check().unwrap_err(),
            "[connections] max_per_ip must be above 0"
        );
        let limits: ConnectionLimits =
            toml::from_str("max_body_bytes = 999999999").expect("limits");
        assert!(limits.check().unwrap_err().contains("max_body_bytes"));
        assert!(toml::from_str::<ConnectionLimits>("maxx = 1").is_err());
    }
}
