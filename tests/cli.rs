//! The command line as an operator meets it: help, version, and `check`
//! with good and bad configurations.

use std::process::Command;

use wisp_tests::{repo_root, wisp_binary};

fn wisp(args: &[&str]) -> (i32, String, String) {
    // In a folder of its own: a serving wisp opens `wisp.db` in its
    // working directory.
    let cwd = tempfile::tempdir().expect("tempdir");
    let out = Command::new(wisp_binary().expect("wisp is built"))
        .current_dir(cwd.path())
        .args(args)
        .env("XDG_CACHE_HOME", repo_root().join("target/e2e-cache"))
        .output()
        .expect("wisp runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wisp.toml");
    std::fs::write(&path, text).expect("write config");
    let path = path.display().to_string();
    (dir, path)
}

#[test]
fn help_and_version() {
    let (code, out, _) = wisp(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--config") && out.contains("check"), "{out}");
    let (code, out, _) = wisp(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("wisp "), "{out}");
}

#[test]
fn check_accepts_the_bundled_routing() {
    let (_dir, path) = config(
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\
         [[tenant]]\nname = \"main\"\nparams = { MAX_FORWARDS = \"20\" }\n",
    );
    let (code, out, err) = wisp(&["check", "--config", &path]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("tenant main: bundled default routing ok"),
        "{out}"
    );
}

#[test]
fn check_explains_bad_config() {
    let (_dir, path) =
        config("[[listen]]\ntransport = \"carrier-pigeon\"\naddress = \"127.0.0.1:5060\"\n");
    let (code, _, err) = wisp(&["check", "--config", &path]);
    assert_ne!(code, 0);
    assert!(err.contains("carrier-pigeon"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn check_refuses_broken_components() {
    let dir = tempfile::tempdir().expect("tempdir");
    let not_wasm = dir.path().join("junk.wasm");
    std::fs::write(&not_wasm, b"this is not wasm").expect("write");
    // A valid core module that is not a component.
    let core_module = dir.path().join("core.wasm");
    std::fs::write(&core_module, b"\0asm\x01\0\0\0").expect("write");
    for (component, expect) in [
        (not_wasm.display().to_string(), "not a valid wasm component"),
        (
            core_module.display().to_string(),
            "not a valid wasm component",
        ),
        (
            "/nonexistent/route.wasm".to_string(),
            "cannot read component",
        ),
    ] {
        let (_d, path) = config(&format!(
            "[[tenant]]\nname = \"t\"\ncomponent = \"{component}\"\n"
        ));
        let (code, _, err) = wisp(&["check", "--config", &path]);
        assert_ne!(code, 0, "{component} accepted");
        assert!(err.contains(expect), "{component}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let (_d, path) = config(
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:0\"\n\
         [[tenant]]\nname = \"t\"\ncomponent = \"/nonexistent/route.wasm\"\n",
    );
    let (code, _, _) = wisp(&["--config", &path]);
    assert_ne!(code, 0, "serving with a missing component must fail");
}

#[test]
fn user_add_list_del() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("users.db");
    let (_d, path) = config(&format!(
        "[storage]\npath = \"{}\"\n[[tenant]]\nname = \"first\"\n[[tenant]]\nname = \"second\"\ndomains = [\"second.example\"]\n",
        db.display()
    ));
    let (code, out, err) = wisp(&[
        "user",
        "add",
        "alice@example.com",
        "s3cret",
        "--config",
        &path,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = wisp(&[
        "user",
        "add",
        "bob@example.com",
        "pw",
        "--tenant",
        "second",
        "--config",
        &path,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = wisp(&["user", "list", "--config", &path]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["alice@example.com\tfirst", "bob@example.com\tsecond"]
    );
    // The password itself is nowhere in the database.
    let bytes = std::fs::read(&db).expect("db");
    assert!(!bytes.windows(6).any(|w| w == b"s3cret"));

    let (code, out, _) = wisp(&["user", "list", "--tenant", "second", "--config", &path]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "bob@example.com\tsecond");
    let (code, _, _) = wisp(&["user", "del", "alice@example.com", "--config", &path]);
    assert_eq!(code, 0);
    let (code, _, err) = wisp(&["user", "del", "alice@example.com", "--config", &path]);
    assert_ne!(code, 0);
    assert!(err.contains("no subscriber"), "{err}");
    for bad in [
        vec!["user", "add", "nodomain", "pw"],
        vec!["user", "add", "a@b", ""],
        vec!["user", "add", "a@b", "pw", "--tenant", "third"],
    ] {
        let mut args = bad.clone();
        args.extend(["--config", &path]);
        let (code, _, err) = wisp(&args);
        assert_ne!(code, 0, "{bad:?} accepted");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn check_refuses_a_bad_allow_list() {
    let (_dir, path) = config(
        "[[tenant]]\nname = \"t\"\nparams = { WITH_IPAUTH = \"yes\", IPAUTH_ALLOW = \"10.0.0.0/8, nowhere\" }\n",
    );
    let (code, _, err) = wisp(&["check", "--config", &path]);
    assert_ne!(code, 0, "a bad IPAUTH_ALLOW was accepted");
    assert!(
        err.contains("IPAUTH_ALLOW") && err.contains("nowhere"),
        "{err}"
    );
}
