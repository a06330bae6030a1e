//! The `wisp` command: serve, check a configuration, or test a routing.

mod routing_test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use wisp::config::Config;

/// mimalloc (see `wisp::allocator`).
#[cfg(not(feature = "count-allocations"))]
#[global_allocator]
static ALLOCATOR: wisp::allocator::Mimalloc = wisp::allocator::Mimalloc;

#[cfg(feature = "count-allocations")]
#[global_allocator]
static ALLOCATOR: wisp::alloc_count::Counting = wisp::alloc_count::Counting;

/// A SIP proxy whose routing runs as sandboxed WebAssembly components.
///
/// Without --config, wisp listens on UDP and TCP port 5060 and routes with
/// its bundled default component.
#[derive(Parser)]
#[command(name = "wisp", version, about, long_about = None)]
struct Cli {
    /// The configuration file (TOML; see docs/configuration.md).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Serve,
    /// Check the configuration and load every component, without serving.
    /// Exits non-zero and says what is wrong when something is.
    Check,
    /// Talk to a running wisp through its admin API (`[admin]` in the
    /// configuration gives the address and token).
    Ctl {
        #[command(subcommand)]
        action: CtlAction,
    },
    /// Run a routing component against cases, without a network: each
    /// case hands a request (text, or a packet of a capture) to a hook
    /// and checks what it decides. One line per case; exit 0 when every
    /// case passes, 1 when one does not, 2 when a case file is wrong.
    /// See docs/testing-routing.md.
    Test {
        /// The component: a .wasm file, or `default` for the bundled
        /// routing.
        component: String,
        /// Case files (TOML).
        #[arg(required = true, value_name = "CASES")]
        cases: Vec<PathBuf>,
    },
    /// Manage the subscribers digest authentication checks (`WITH_AUTH`),
    /// in the database of `[storage] path`.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
}

#[derive(Subcommand)]
enum CtlAction {
    /// Tenants, their versions and counters (JSON).
    Tenants,
    /// Counters per tenant (JSON).
    Stats,
    /// Metrics in the Prometheus text format.
    Metrics,
    /// Without TENANT: re-read the configuration file (as SIGHUP does).
    /// With TENANT: a new version of that tenant's routing.
    Reload {
        tenant: Option<String>,
        /// Serve this component instead of the configured one.
        #[arg(long, value_name = "FILE", requires = "tenant")]
        component: Option<PathBuf>,
        /// Send only this percentage (1-100) of new calls to the new version.
        #[arg(long, value_name = "PERCENT", requires = "tenant")]
        canary: Option<u8>,
    },
    /// Make the tenant's canary the version serving every new call.
    Promote { tenant: String },
    /// Drop the tenant's canary.
    Rollback { tenant: String },
    /// With [cluster]: each tenant's cluster version and the version every
    /// node serves, as Redis holds them (JSON).
    Versions,
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a subscriber, or set a new password for an existing one. Only
    /// the HA1 hashes (MD5 and SHA-256) are stored.
    ///
    /// Without PASSWORD, the password is read from standard input (its
    /// first line, without the line end), or asked for without echo when
    /// standard input is a terminal.
    Add {
        /// USER@DOMAIN; the domain is the digest realm.
        address: String,
        /// The password. Avoid it: other users of the machine can see a
        /// command's arguments (`ps`), and shells keep them in history.
        password: Option<String>,
        /// The tenant the subscriber belongs to (default: the first one).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Remove a subscriber.
    Del {
        /// USER@DOMAIN
        address: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the subscribers, one `USER@DOMAIN` per line (with the tenant).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `wisp test` prints its own report, the guest's log with a failed
    // case; the host's info lines (versions loaded and unloaded) and the
    // guest's log again would bury it.
    let default_level = match cli.command {
        Some(Command::Test { .. }) => "warn,wisp::script::host_api=off",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("WISP_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(err) => {
                eprintln!("wisp: {err}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };

    match cli.command.unwrap_or(Command::Serve) {
        Command::Check => match wisp::server::check(&config) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("wisp: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Ctl { action } => ctl(&config, action),
        Command::Test { component, cases } => test(&config, &component, &cases),
        Command::User { action } => match user(&config, action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("wisp: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(err) => {
                    eprintln!("wisp: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(wisp::server::serve(config, cli.config.clone())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("wisp: {err:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn ctl(config: &Config, action: CtlAction) -> ExitCode {
    use wisp::admin::client::{self, CtlRequest};
    use wisp::admin::ReloadRequest;

    let Some(admin) = &config.admin else {
        eprintln!("wisp ctl: the configuration has no [admin] section (address, token); pass the server's --config");
        return ExitCode::from(2);
    };
    let request = match action {
        CtlAction::Tenants => CtlRequest::Tenants,
        CtlAction::Stats => CtlRequest::Stats,
        CtlAction::Metrics => CtlRequest::Metrics,
        CtlAction::Reload { tenant: None, .. } => CtlRequest::ReloadConfig,
        CtlAction::Reload {
            tenant: Some(tenant),
            component,
            canary,
        } => {
            // The server resolves paths from its own working directory.
            let component = match component.map(|p| std::path::absolute(&p).map_err(|e| (p, e))) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err((p, err))) => {
                    eprintln!("wisp ctl: {}: {err}", p.display());
                    return ExitCode::from(2);
                }
            };
            CtlRequest::ReloadTenant {
                tenant,
                request: ReloadRequest { component, canary },
            }
        }
        CtlAction::Promote { tenant } => CtlRequest::Promote(tenant),
        CtlAction::Rollback { tenant } => CtlRequest::Rollback(tenant),
        CtlAction::Versions => CtlRequest::Versions,
    };
    match client::run(admin, &request) {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("wisp ctl: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `wisp test COMPONENT CASES...`.
fn test(config: &Config, component: &str, cases: &[PathBuf]) -> ExitCode {
    let (wasm, origin) = if component == "default" {
        (
            wisp::script::DEFAULT_COMPONENT.to_vec(),
            "bundled default".to_owned(),
        )
    } else {
        match std::fs::read(component) {
            Ok(wasm) => (wasm, component.to_owned()),
            Err(err) => {
                eprintln!("wisp test: {component}: {err} (give a .wasm file, or `default` for the bundled routing)");
                return ExitCode::from(2);
            }
        }
    };
    let engine = match wisp::script::ScriptEngine::new(config.engine.cache_dir.clone()) {
        Ok(engine) => engine,
        Err(err) => {
            eprintln!("wisp test: {err:#}");
            return ExitCode::from(2);
        }
    };
    let component = routing_test::Component {
        engine,
        wasm,
        origin,
    };
    let verdict = routing_test::run_files(&component, cases, &mut std::io::stdout().lock());
    ExitCode::from(verdict.exit_code())
}

/// `wisp user add|del|list`.
fn user(config: &Config, action: UserAction) -> anyhow::Result<()> {
    use anyhow::{bail, Context};
    use wisp::services::subscribers;

    // The database, or with [cluster] Redis, which every node reads.
    let storage = subscribers::Store::open(
        config.cluster.as_ref(),
        &config.storage,
        config.tenant.iter().map(|t| t.name.clone()).collect(),
    )?;
    let tenant_of = |name: Option<String>| -> anyhow::Result<String> {
        match name {
            Some(name) if config.tenant.iter().any(|t| t.name == name) => Ok(name),
            Some(name) => bail!("no tenant \"{name}\" in the configuration"),
            None => config
                .tenant
                .first()
                .map(|t| t.name.clone())
                .context("the configuration has no tenant"),
        }
    };
    let split = |address: &str| -> anyhow::Result<(String, String)> {
        let address = address.strip_prefix("sip:").unwrap_or(address);
        match address.split_once('@') {
            Some((user, domain))
                if !user.is_empty()
                    && !domain.is_empty()
                    && !address.contains(|c: char| c.is_whitespace() || c == '"') =>
            {
                Ok((user.to_owned(), domain.to_owned()))
            }
            _ => bail!("\"{address}\" is not USER@DOMAIN"),
        }
    };
    match action {
        UserAction::Add {
            address,
            password,
            tenant,
        } => {
            let (user, domain) = split(&address)?;
            let tenant = tenant_of(tenant)?;
            let password = match password {
                Some(password) => password,
                None => read_password(&format!("{user}@{domain}"))?,
            };
            if password.is_empty() {
                bail!("the password is empty");
            }
            storage.add(&tenant, &user, &domain, &password)?;
            println!("{user}@{domain} saved (tenant {tenant})");
        }
        UserAction::Del { address, tenant } => {
            let (user, domain) = split(&address)?;
            let tenant = tenant_of(tenant)?;
            if !storage.delete(&tenant, &user, &domain)? {
                bail!("no subscriber {user}@{domain} in tenant {tenant}");
            }
            println!("{user}@{domain} removed (tenant {tenant})");
        }
        UserAction::List { tenant } => {
            let tenant = tenant.map(|t| tenant_of(Some(t))).transpose()?;
            for s in storage.list(tenant.as_deref())? {
                println!("{}@{}\t{}", s.username, s.domain, s.tenant);
            }
        }
    }
    Ok(())
}

/// The password of `wisp user add` when it is not an argument: asked twice
/// without echo on a terminal, else the first line of standard input.
fn read_password(address: &str) -> anyhow::Result<String> {
    use anyhow::{bail, Context};
    use std::io::IsTerminal;

    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let password = rpassword::prompt_password(format!("Password for {address}: "))
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("Again: ")
            .context("cannot read the password from the terminal")?;
        if password != again {
            bail!("the passwords differ; nothing saved");
        }
        Ok(password)
    } else {
        first_line(stdin.lock()).context("cannot read the password from standard input")
    }
}

/// The first line of `input` without its line end (`\n` or `\r\n`);
/// an error when the input is empty (no line at all).
fn first_line(mut input: impl std::io::BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        anyhow::bail!("no password given: standard input is empty (pass it as a line on standard input, or run on a terminal to be asked)");
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(line.to_owned())
}

#[cfg(test)]
mod tests {
    use super::first_line;

    #[test]
    fn the_password_is_the_first_line_without_its_end() {
        let read = |input: &[u8]| first_line(input).map_err(|e| e.to_string());
        assert_eq!(read(b"s3cret\n").as_deref(), Ok("s3cret"));
        assert_eq!(read(b"s3cret\r\n").as_deref(), Ok("s3cret"));
        assert_eq!(read(b"s3cret").as_deref(), Ok("s3cret"));
        // Spaces are the password's own; only the line end goes.
        assert_eq!(read(b" a b \nsecond line\n").as_deref(), Ok(" a b "));
        // An empty line is an empty password (refused by the caller).
        assert_eq!(read(b"\n").as_deref(), Ok(""));
        let err = read(b"").expect_err("no line");
        assert!(err.contains("standard input is empty"), "{err}");
        // Not UTF-8: an error, not a panic.
        assert!(read(b"\xff\xfe\n").is_err());
    }
}
