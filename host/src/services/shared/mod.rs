//! The services whose state the nodes of a cluster share (`[cluster]`):
//! kv, the guests' rate limits and the subscribers, kept in Redis through
//! the link of [`crate::cluster`]. The registrar's and the dispatcher's
//! shared parts live beside them (`location/shared.rs`,
//! `dispatcher/shared.rs`). Without `[cluster]` none of this runs.

mod degraded;
pub mod kv;
pub mod ratelimit;
pub mod subscribers;
