//! Builds the bundled default routing (guests/default) for wasm32-wasip2,
//! so that `wisp` without a config file has a component to serve.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().unwrap_or(&manifest_dir).to_path_buf();
    for watched in [
        "guests/default",
        "guests/Cargo.toml",
        "sdk-rust/src",
        "sdk-rust/Cargo.toml",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    // A component built elsewhere (a packager's, or a stand-in while the
    // guest does not build): used as it is.
    println!("cargo:rerun-if-env-changed=WISP_DEFAULT_COMPONENT_PATH");
    if let Some(path) = std::env::var_os("WISP_DEFAULT_COMPONENT_PATH") {
        println!(
            "cargo:rustc-env=WISP_DEFAULT_COMPONENT={}",
            PathBuf::from(path).display()
        );
        return;
    }

    // One guest build shared by every profile of the host (debug, release,
    // clippy): next to the host's target dir, not in OUT_DIR.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_relative() { root.join(d) } else { d })
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-guests");

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(root.join("guests/Cargo.toml"))
        .args(["-p", "wisp-default-routing", "--target-dir"])
        .arg(&target_dir);
    // The host's own build settings must not leak into the guest build
    // (clippy's wrapper, sanitizer flags of a fuzz build, a forced target).
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTDOCFLAGS",
    ] {
        build.env_remove(var);
    }
    let status = build
        .status()
        .unwrap_or_else(|err| fail(&format!("cannot run cargo: {err}")));
    if !status.success() {
        fail(
            "building guests/default for wasm32-wasip2 failed; if the target is missing, \
             run `rustup target add wasm32-wasip2`",
        );
    }
    let wasm = target_dir.join("wasm32-wasip2/release/wisp_default_routing.wasm");
    if !Path::new(&wasm).exists() {
        fail(&format!("{} was not produced", wasm.display()));
    }
    println!("cargo:rustc-env=WISP_DEFAULT_COMPONENT={}", wasm.display());
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
