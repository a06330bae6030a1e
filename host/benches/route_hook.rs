//! Route-hook overhead of the bundled Rust default routing (guests/default),
//! per call, through the same script engine and warm instance pool the
//! proxy uses (the approach of `examples/hook_bench.rs`, under criterion).
//!
//! ```sh
//! cargo bench -p wisp --bench route_hook
//! ```
//!
//! The hooks one record-routed call runs in wisp:
//! - `route` on the initial INVITE (max-forwards, sanity, has-to-tag,
//!   record-route, is-myself, relay),
//! - `route` on the ACK and on the BYE (in-dialog: loose-route, then
//!   forward or relay),
//! - `on-reply` on the 180, the 200 to the INVITE and the 200 to the BYE.
//!
//! `call/all_hooks` runs those six in a row: the guest's share of a call.
//! Requests are prepared outside the timed section; nothing is asserted
//! about time (the actions are checked once, before measuring).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use wisp::proxy::TxVars;

#[path = "common/hook_call.rs"]
mod hook_call;
use hook_call::{all_hooks, call, callee, check, pool};

fn bench(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("cache dir");
    let pool = pool(cache.path());
    let call = call();
    check(&pool, &call);

    let mut group = c.benchmark_group("route_hook");
    group.bench_function("invite", |b| {
        b.iter_batched(
            || (call.invite.request(), TxVars::default()),
            |(req, mut vars)| black_box(pool.route(req, &mut vars)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("bye_in_dialog", |b| {
        b.iter_batched(
            || (call.bye.request(), TxVars::default()),
            |(req, mut vars)| black_box(pool.route(req, &mut vars)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("on_reply_200", |b| {
        b.iter_batched(
            || {
                (
                    call.invite.request(),
                    call.ok_invite.message(),
                    TxVars::default(),
                )
            },
            |(req, res, mut vars)| black_box(pool.on_reply(req, res, callee(), &mut vars)),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    c.bench_function("call/all_hooks", |b| {
        b.iter_batched(
            || call.messages(),
            |messages| all_hooks(&pool, messages),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
