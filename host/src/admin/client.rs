//! `wisp ctl`: the admin API's client, reading the address and token from
//! the same configuration file as the server.

use std::time::Duration;

use serde_json::Value;

use super::{AdminConfig, ReloadRequest};

/// What `wisp ctl` can ask.
#[derive(Debug)]
pub enum CtlRequest {
    Tenants,
    Stats,
    Metrics,
    /// The whole configuration file again.
    ReloadConfig,
    ReloadTenant {
        tenant: String,
        request: ReloadRequest,
    },
    Promote(String),
    Rollback(String),
    /// Every node's versions, from the cluster's Redis.
    Versions,
}

/// Why a ctl command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach the admin API at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// The server refused; its message.
    #[error("{0}")]
    Refused(String),
}

/// Sends the request; returns the text to print.
pub fn run(admin: &AdminConfig, request: &CtlRequest) -> Result<String, CtlError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    let base = format!("http://{}", admin.address);
    let auth = format!("Bearer {}", admin.token);
    let unreachable = |err: ureq::Error| CtlError::Unreachable {
        address: admin.address.to_string(),
        reason: err.to_string(),
    };
    let empty = serde_json::json!({});
    let (path, body) = match request {
        CtlRequest::Tenants => ("/tenants".to_owned(), None),
        CtlRequest::Stats => ("/stats".to_owned(), None),
        CtlRequest::Metrics => ("/metrics".to_owned(), None),
        CtlRequest::ReloadConfig => ("/reload".to_owned(), Some(empty)),
        CtlRequest::ReloadTenant { tenant, request } => (
            format!("/tenants/{tenant}/reload"),
            Some(serde_json::to_value(request).unwrap_or(empty)),
        ),
        CtlRequest::Promote(t) => (format!("/tenants/{t}/promote"), Some(empty)),
        CtlRequest::Rollback(t) => (format!("/tenants/{t}/rollback"), Some(empty)),
        CtlRequest::Versions => ("/versions".to_owned(), None),
    };
    let url = format!("{base}{path}");
    let mut response = match body {
        Some(body) => agent
            .post(&url)
            .header("Authorization", &auth)
            .send_json(&body)
            .map_err(unreachable)?,
        None => agent
            .get(&url)
            .header("Authorization", &auth)
            .call()
            .map_err(unreachable)?,
    };
    let status = response.status();
    let text = response.body_mut().read_to_string().map_err(unreachable)?;
    if !status.is_success() {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or(text);
        return Err(CtlError::Refused(format!("{} ({status})", message)));
    }
    Ok(match request {
        CtlRequest::Metrics => text,
        CtlRequest::ReloadConfig
        | CtlRequest::ReloadTenant { .. }
        | CtlRequest::Promote(_)
        | CtlRequest::Rollback(_) => describe_changes(&text),
        _ => serde_json::from_str::<Value>(&text)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or(text),
    })
}

/// One line per change report: "tenant acme: reloaded → version 3 (path), 12.5 ms".
fn describe_changes(text: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return text.to_owned();
    };
    let reports = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    reports
        .iter()
        .map(|r| {
            let field = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
            let tenant = field("tenant");
            let action = field("action");
            let mut line = format!(
                "tenant {}: {}",
                tenant.as_str().unwrap_or("?"),
                action.as_str().unwrap_or("?")
            );
            if let Some(v) = field("version").as_u64() {
                line.push_str(&format!(", version {v}"));
            }
            if let Some(o) = field("origin").as_str() {
                line.push_str(&format!(" ({o})"));
            }
            if let Some(ms) = field("took_ms").as_f64() {
                line.push_str(&format!(", {ms} ms"));
            }
            if let Some(cluster) = field("cluster").as_str() {
                line.push_str(&format!("; cluster: {cluster}"));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}
