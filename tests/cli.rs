//! The command line as an operator meets it: help, version, `check`
//! with good and bad configurations, `wisp user`, and the files wisp makes
//! (a private compile cache, a database only its owner reads), and a
//! clean stop on SIGTERM.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use wisp_tests::{headers_of, repo_root, wisp_binary, Routing, Ua, WispBuilder};

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

/// What a run of wisp gives back: exit code, stdout, stderr.
struct Run {
    code: i32,
    out: String,
    err: String,
}

/// Runs wisp in a folder of its own with `stdin` as its standard input and
/// `env` set (a `None` value removes the variable), logging at `info`.
fn wisp_with(args: &[&str], stdin: &[u8], env: &[(&str, Option<&Path>)]) -> Run {
    let cwd = tempfile::tempdir().expect("tempdir");
    let mut command = Command::new(wisp_binary().expect("wisp is built"));
    command
        .current_dir(cwd.path())
        .args(args)
        .env("XDG_CACHE_HOME", repo_root().join("target/e2e-cache"))
        .env("WISP_LOG", "info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let mut child = command.spawn().expect("wisp runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("wisp ends");
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// `wisp user add` without the password argument reads it from standard
/// input (the line end is not part of it): the subscriber then registers
/// with it through digest authentication. The database is created 0600.
#[test]
fn user_add_reads_the_password_from_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("users.db");
    // The tenant of WispBuilder's Rust routing: "default".
    let (_d, path) = config(&format!(
        "[storage]\npath = \"{}\"\n[[tenant]]\nname = \"default\"\n",
        db.display()
    ));
    let run = wisp_with(
        &["user", "add", "alice@127.0.0.1", "--config", &path],
        b"wonderland\n",
        &[],
    );
    assert_eq!(run.code, 0, "{}{}", run.out, run.err);
    assert!(run.out.contains("alice@127.0.0.1 saved"), "{}", run.out);
    // HA1s inside: only the owner may read the file or its WAL companions.
    assert_eq!(mode(&db), 0o600, "the database's mode");
    for suffix in ["-wal", "-shm"] {
        let companion = dir.path().join(format!("users.db{suffix}"));
        if companion.exists() {
            assert_eq!(mode(&companion), 0o600, "{}", companion.display());
        }
    }
    assert!(!run.err.contains("may read"), "{}", run.err);

    // Standard input empty: refused, nothing saved.
    let run = wisp_with(
        &["user", "add", "bob@127.0.0.1", "--config", &path],
        b"",
        &[],
    );
    assert_ne!(run.code, 0, "an empty standard input was accepted");
    assert!(run.err.contains("standard input is empty"), "{}", run.err);
    // An empty line: an empty password, refused.
    let run = wisp_with(
        &["user", "add", "bob@127.0.0.1", "--config", &path],
        b"\n",
        &[],
    );
    assert_ne!(run.code, 0, "an empty password was accepted");
    assert!(run.err.contains("password is empty"), "{}", run.err);
    let run = wisp_with(&["user", "list", "--config", &path], b"", &[]);
    assert_eq!(run.out.trim(), "alice@127.0.0.1\tdefault");

    // A database others may read (made before wisp created it 0600): named
    // in a warning, its mode left as it was.
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let run = wisp_with(&["user", "list", "--config", &path], b"", &[]);
    assert_eq!(run.code, 0, "{}", run.err);
    assert!(
        run.err.contains(&db.display().to_string()) && run.err.contains("0644"),
        "no warning for a readable database: {}",
        run.err
    );
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // The password read is the one digest authentication checks.
    let wisp = WispBuilder::new()
        .routing(Routing::Rust)
        .param("WITH_AUTH", "yes")
        .db(&db)
        .start()
        .expect("wisp starts");
    let alice = wisp.uri("alice");
    let mut ua = Ua::new(wisp.addr());
    let contact = format!("Contact: <sip:alice@127.0.0.1:{}>\r\n", ua.port());
    let reply = ua.register(&alice, &contact);
    assert!(reply.starts_with("SIP/2.0 401"), "{reply}");
    let challenge = headers_of(&reply, "WWW-Authenticate")[0].to_owned();
    let reply = ua.register_answering(&alice, &contact, &challenge, ("alice", "wonderland"), 1);
    assert!(reply.starts_with("SIP/2.0 200"), "{reply}");
}

const CHECK_CONFIG: &str = "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n\
     [[tenant]]\nname = \"main\"\n";

/// The default compile cache is `$XDG_CACHE_HOME/wisp`, made 0700, and
/// holds the compiled component.
#[test]
fn compile_cache_is_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let xdg = dir.path().join("xdg");
    let (_d, path) = config(CHECK_CONFIG);
    let run = wisp_with(
        &["check", "--config", &path],
        b"",
        &[("XDG_CACHE_HOME", Some(&xdg))],
    );
    assert_eq!(run.code, 0, "{}{}", run.out, run.err);
    let cache = xdg.join("wisp");
    assert_eq!(mode(&cache), 0o700, "the cache folder's mode");
    let entries: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache folder")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(
        entries
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "cwasm")),
        "{entries:?}"
    );
    assert!(!run.err.contains("no compile cache"), "{}", run.err);
}

/// Without HOME and XDG_CACHE_HOME there is no cache: a warning, and
/// nothing written to the temp folder (once `/tmp/wisp-cache`, which any
/// user could fill with native code for wisp to run).
#[test]
fn no_home_means_no_cache_and_nothing_in_tmp() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_d, path) = config(CHECK_CONFIG);
    let run = wisp_with(
        &["check", "--config", &path],
        b"",
        &[
            ("HOME", None),
            ("XDG_CACHE_HOME", None),
            ("TMPDIR", Some(tmp.path())),
        ],
    );
    assert_eq!(run.code, 0, "{}{}", run.out, run.err);
    assert!(run.out.contains("configuration ok"), "{}", run.out);
    assert!(run.err.contains("no compile cache"), "{}", run.err);
    assert_eq!(
        run.err.matches("no compile cache").count(),
        1,
        "warned once: {}",
        run.err
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("tmp")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(left.is_empty(), "written to the temp folder: {left:?}");
}

/// A configured cache folder that others may write is not used: a
/// warning saying why, nothing read or written there.
#[test]
fn a_cache_folder_others_may_write_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).expect("cache folder");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let (_d, path) = config(&format!(
        "[engine]\ncache_dir = \"{}\"\n{CHECK_CONFIG}",
        cache.display()
    ));
    let run = wisp_with(&["check", "--config", &path], b"", &[]);
    assert_eq!(run.code, 0, "{}{}", run.out, run.err);
    assert!(
        run.err.contains("no compile cache") && run.err.contains("0777"),
        "{}",
        run.err
    );
    assert_eq!(std::fs::read_dir(&cache).expect("cache").count(), 0);
    assert_eq!(mode(&cache), 0o777, "left as it was");
}

/// A stop asked for the moment wisp says it listens is a clean one
/// (exit status 0, "shutting down" logged), never SIGTERM's default
/// action: the signal is caught before the first request. Forty times,
/// since a handler set up too late loses only a race (in about one stop
/// of twenty on a quiet machine).
#[test]
fn sigterm_once_listening_is_a_clean_stop() {
    for _ in 0..40 {
        let mut wisp = WispBuilder::new().start().expect("wisp starts");
        let status = wisp.terminate().expect("wisp stops");
        assert!(status.success(), "SIGTERM is a clean stop, not {status}");
        // Every line: the log ends when the process does.
        assert!(
            wisp.log.iter().any(|line| line.contains("shutting down")),
            "no \"shutting down\" in the log"
        );
    }
}
