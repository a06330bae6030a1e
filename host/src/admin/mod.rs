//! The admin API: JSON over HTTP for tenants, versions, reloads and
//! canaries, and Prometheus metrics. Every request must carry the
//! configured bearer token. `wisp ctl` ([`client`]) is its client.
//!
//! | method | path                         | does                              |
//! |--------|------------------------------|-----------------------------------|
//! | GET    | /tenants                     | tenants, versions, counters       |
//! | GET    | /tenants/{name}              | one tenant                        |
//! | GET    | /stats                       | counters per tenant               |
//! | POST   | /reload                      | re-read the config file           |
//! | POST   | /tenants/{name}/reload       | new version (`component`, `canary`) |
//! | POST   | /tenants/{name}/promote      | canary → in service               |
//! | POST   | /tenants/{name}/rollback     | drop the canary                   |
//! | GET    | /versions                    | every node's versions (`[cluster]`) |
//! | GET    | /metrics                     | Prometheus text format            |

pub mod client;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::tenancy::{Tenancy, TenancyError};

/// The `[admin]` section of the configuration file: the HTTP admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens. Default: 127.0.0.1:9060 (loopback only).
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// The bearer token every request must carry.
    pub token: String,
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9060))
}

impl AdminConfig {
    /// The checks serde cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.token.trim().is_empty() {
            return Err("[admin] token must not be empty".into());
        }
        Ok(())
    }
}

/// The body of `POST /tenants/{name}/reload`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ReloadRequest {
    /// A component file to serve instead of the configured one (an
    /// absolute path, as the server sees it).
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// Serve the new version to this percentage of new calls only.
    #[serde(default)]
    pub canary: Option<u8>,
}

#[derive(Clone)]
struct AppState {
    tenancy: Arc<Tenancy>,
    token: Arc<str>,
}

/// Binds the admin address and serves until the process ends.
pub async fn serve(config: &AdminConfig, tenancy: Arc<Tenancy>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(config.address)
        .await
        .with_context(|| format!("cannot bind the admin API on {}", config.address))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        tracing::warn!(address = %local, "the admin API listens beyond loopback");
    }
    let state = AppState {
        tenancy,
        token: config.token.as_str().into(),
    };
    let app = Router::new()
        .route("/tenants", get(tenants))
        .route("/tenants/{name}", get(tenant))
        .route("/stats", get(stats))
        .route("/reload", post(reload_config))
        .route("/tenants/{name}/reload", post(reload_tenant))
        .route("/tenants/{name}/promote", post(promote))
        .route("/tenants/{name}/rollback", post(rollback))
        .route("/versions", get(versions))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "admin API stopped");
        }
    });
    Ok(local)
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        _ => error(StatusCode::UNAUTHORIZED, "a valid bearer token is needed"),
    }
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn refused(err: TenancyError) -> Response {
    let status = match &err {
        TenancyError::UnknownTenant(_) => StatusCode::NOT_FOUND,
        TenancyError::BadPercent(_) => StatusCode::BAD_REQUEST,
        TenancyError::NoCanary(_) | TenancyError::NoConfigFile => StatusCode::CONFLICT,
        TenancyError::Load(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    error(status, &err.to_string())
}

async fn tenants(State(state): State<AppState>) -> Response {
    Json(state.tenancy.status()).into_response()
}

async fn tenant(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.tenancy.status().into_iter().find(|t| t.name == name) {
        Some(t) => Json(t).into_response(),
        None => refused(TenancyError::UnknownTenant(name)),
    }
}

async fn stats(State(state): State<AppState>) -> Response {
    let stats: serde_json::Map<String, serde_json::Value> = state
        .tenancy
        .status()
        .into_iter()
        .map(|t| {
            let value = serde_json::json!({
                "requests": t.requests,
                "replies": {
                    "1xx": t.replies[0], "2xx": t.replies[1], "3xx": t.replies[2],
                    "4xx": t.replies[3], "5xx": t.replies[4], "6xx": t.replies[5],
                },
                "traps": t.traps,
                "deadline_hits": t.deadline_hits,
                "suspended_requests": t.suspended_requests,
                "busy_requests": t.busy_requests,
            });
            (t.name, value)
        })
        .collect();
    Json(stats).into_response()
}

/// Runs a change on a blocking thread: compiling must not stall the runtime.
async fn change<T: Serialize + Send + 'static>(
    state: AppState,
    f: impl FnOnce(&Tenancy) -> Result<T, TenancyError> + Send + 'static,
) -> Response {
    match tokio::task::spawn_blocking(move || f(&state.tenancy)).await {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(err)) => refused(err),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

async fn reload_config(State(state): State<AppState>) -> Response {
    change(state, |t| t.reload_config()).await
}

async fn reload_tenant(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    // An empty body means "the configured component, in full"; anything
    // else must be a valid ReloadRequest, whatever its Content-Type says.
    let body: ReloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(body) => body,
            Err(err) => return error(StatusCode::BAD_REQUEST, &format!("bad JSON body: {err}")),
        }
    };
    change(state, move |t| {
        t.reload_tenant(&name, body.component, body.canary)
    })
    .await
}

async fn promote(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    change(state, move |t| t.promote(&name)).await
}

async fn rollback(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    change(state, move |t| t.rollback(&name)).await
}

/// The cluster's version of each tenant and what every node serves, as
/// Redis holds them.
async fn versions(State(state): State<AppState>) -> Response {
    let tenancy = state.tenancy.clone();
    match tokio::task::spawn_blocking(move || tenancy.cluster_overview()).await {
        Ok(Some(Ok(overview))) => Json(overview).into_response(),
        Ok(Some(Err(err))) => error(StatusCode::SERVICE_UNAVAILABLE, &err),
        Ok(None) => error(
            StatusCode::CONFLICT,
            "wisp runs without [cluster]: its versions are in GET /tenants",
        ),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.tenancy.metrics().render(),
    )
        .into_response()
}
