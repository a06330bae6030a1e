//! Instruction counts of the hooks of `benches/route_hook.rs`, for
//! callgrind: wall-clock figures on a shared machine move by ±30%, counted
//! instructions do not.
//!
//! ```sh
//! cargo build --release -p wisp --example hook_count
//! for n in 2000 6000; do
//!   valgrind --tool=callgrind --callgrind-out-file=cg.$n \
//!     '--toggle-collect=*Pool::route_from' '--toggle-collect=*Pool::on_reply_from' \
//!     target/release/examples/hook_count invite $n
//! done
//! ```
//!
//! Each toggle names one function: entering a function that matches
//! switches counting on or off, so a pattern matching both `Pool::route`
//! and the `Pool::route_from` it calls would switch it off again inside.
//!
//! (cg.6000 − cg.2000) / 4000 is one hook call. The first thousand hooks
//! of a run cost more while the allocator and the guest's memory warm up:
//! (cg.2000 − cg.1000) / 1000 once put a change that saves 346
//! instructions at 230 more. The hooks are those of the
//! bench: `invite`, `bye`, `reply` (on-reply on the 200) and `call` (all
//! six hooks of a call).

use std::hint::black_box;

use wisp::proxy::TxVars;

#[path = "../benches/common/hook_call.rs"]
mod hook_call;
use hook_call::{all_hooks, call, callee, check, pool};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "invite".into());
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let cache = tempfile::tempdir().expect("cache dir");
    let pool = pool(cache.path());
    let call = call();
    check(&pool, &call);
    for _ in 0..n {
        match which.as_str() {
            "invite" => drop(black_box(
                pool.route(call.invite.request(), &mut TxVars::default()),
            )),
            "bye" => drop(black_box(
                pool.route(call.bye.request(), &mut TxVars::default()),
            )),
            "reply" => drop(black_box(pool.on_reply(
                call.invite.request(),
                call.ok_invite.message(),
                callee(),
                &mut TxVars::default(),
            ))),
            "call" => all_hooks(&pool, call.messages()),
            other => panic!("unknown hook {other}: invite, bye, reply or call"),
        }
    }
}
