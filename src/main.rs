//! The `authgate` command line: a thin shell over the library.

use anyhow::{bail, Context, Result};
use authgate::auth::keys::{self, Generate, KeySet, Resolved};
use authgate::auth::passwords::hash_password;
use authgate::auth::sessions::SessionPolicy;
use authgate::config::{Algorithm, Config, ConfigErrors, RevocationBackend, UsersBackend};
use authgate::route::{request_host, AuthMode};
use authgate::store::users::{validate_name, User, UserStore};
use authgate::store::Store;
use clap::{Parser, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `authgate --version`: the release, the commit and the build date.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("AUTHGATE_COMMIT"),
    ", built ",
    env!("AUTHGATE_BUILD_DATE"),
    ")"
);

mod factors_cli;
mod keys_cli;

#[derive(Parser)]
#[command(name = "authgate", version = VERSION, about = "Reverse-proxy auth gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// Config file [default: $AUTHGATE_CONFIG, else config/authgate.toml]; in any position
    /// (`authgate users add NAME --config X`)
    #[arg(
        long,
        global = true,
        env = "AUTHGATE_CONFIG",
        default_value = "config/authgate.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway
    Serve(ConfigArg),
    /// Validate the config (and the users file and keys it names) and print a summary (exit
    /// 0 valid, 2 invalid); --connect also reaches the Redis it names
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        connect: bool,
    },
    /// Exit 0 when the running gateway's admin /healthz answers 200 (for exec probes and a
    /// Docker HEALTHCHECK in an image without a shell)
    Healthcheck {
        #[command(flatten)]
        config: ConfigArg,
        /// The admin address to ask (`http://127.0.0.1:9901` or `127.0.0.1:9901`); else
        /// $AUTHGATE_ADMIN, else `admin.listen` read from the config file alone (no other
        /// setting, file or variable is needed, so a config the gateway refused still works)
        #[arg(long, env = "AUTHGATE_ADMIN")]
        url: Option<String>,
    },
    /// Read a password from stdin and print its argon2id PHC string
    HashPassword,
    /// Write a new signing key (PEM; HS256: a base64 secret)
    Keygen {
        #[arg(long, value_parser = ["EdDSA", "ES256", "RS256", "HS256"])]
        alg: String,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Manage users in the configured user store
    Users {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: UsersAction,
    },
    /// API keys for machine clients (routes with api_keys = true)
    Keys {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: keys_cli::KeysAction,
    },
    /// Lift a login lockout of a client address (its failure counter; Redis store)
    Unlock {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        ip: std::net::IpAddr,
    },
    /// Log a user out everywhere: every token issued to NAME before now is rejected
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        user: String,
    },
    /// List or end a user's login sessions (the store's records; Redis, or the file store
    /// while no gateway holds it)
    Sessions {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Show how a request would be routed, or (--forward-auth PROXY) the configuration a
    /// proxy in front needs to ask authgate
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(required_unless_present = "forward_auth")]
        method: Option<String>,
        #[arg(required_unless_present = "forward_auth")]
        path: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[arg(long, value_parser = authgate::snippets::PROXIES)]
        forward_auth: Option<String>,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// USER's live sessions, newest first: sid, started, last refresh, address, method,
    /// user agent (tab-separated)
    List { user: String },
    /// End one session (SID), or every session of a user (--user USER)
    Revoke {
        /// A sid is base64url, so it may begin with `-`: taken as a value, not a flag
        #[arg(
            required_unless_present = "user",
            conflicts_with = "user",
            allow_hyphen_values = true
        )]
        sid: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Add a user; the password is read from stdin
    Add {
        name: String,
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
    },
    Remove {
        name: String,
    },
    List,
    SetRoles {
        name: String,
        #[arg(value_delimiter = ',')]
        roles: Vec<String>,
    },
    /// Lift a login lockout: clear the user's failure counter (Redis store)
    Unlock {
        name: String,
    },
    /// Enrol an authenticator app (TOTP) for a user and print its otpauth:// URI once
    Totp {
        name: String,
        /// Remove the user's authenticator app and recovery codes instead
        #[arg(long)]
        reset: bool,
    },
    /// Print ten new one-time recovery codes for a user (the old ones stop working)
    RecoveryCodes {
        name: String,
    },
}

/// See `authgate::memory`.
#[global_allocator]
static GLOBAL: authgate::memory::Allocator = authgate::memory::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<ConfigErrors>() {
                eprintln!("{ce}");
                return ExitCode::from(2);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Serve(c) => serve(&c.config),
        Command::CheckConfig { config, connect } => check_config(&config.config, connect),
        Command::Healthcheck { config, url } => healthcheck(&config.config, url.as_deref()),
        Command::HashPassword => {
            let pw = read_password("Password: ")?;
            println!("{}", hash_password(pw.as_bytes())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { alg, out } => keygen(&alg, out.as_deref()),
        Command::Users { config, action } => users(&config.config, action),
        Command::Revoke { config, user } => revoke(&config.config, &user),
        Command::Keys { config, action } => {
            let config = load(&config.config)?;
            runtime()?.block_on(keys_cli::run(&config, action))
        }
        Command::Unlock { config, ip } => unlock_ip(&config.config, ip),
        Command::Sessions { config, action } => sessions(&config.config, action),
        Command::Explain {
            config,
            forward_auth: Some(proxy),
            ..
        } => {
            let config = load(&config.config)?;
            let snippet =
                authgate::snippets::for_proxy(&proxy, &config).context("unknown proxy")?;
            print!("{snippet}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            config,
            method,
            path,
            host,
            ..
        } => explain(
            &config.config,
            method.as_deref().unwrap_or("GET"),
            path.as_deref().unwrap_or("/"),
            host.as_deref(),
        ),
    }
}

/// `writeln!` into a `String` (which cannot fail).
macro_rules! outln {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

fn load(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

fn serve(path: &Path) -> Result<ExitCode> {
    let config = load(path)?;
    let _telemetry =
        authgate::telemetry::init_serve(config.log.format, &config.log.audit, &config.tracing);
    // Per-core runtimes (`server::cores`): this thread runs worker 0, a current-thread
    // runtime (no work-stealing), with the admin listener and the background tasks; the app
    // starts the others. argon2 runs on its own pool, off these threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async {
        let signals = authgate::app::Signals::install()?;
        let app = authgate::App::start(config).await?;
        app.run_until_signal(signals).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn check_config(path: &Path, connect: bool) -> Result<ExitCode> {
    let mut out = String::new();
    let code = check_config_into(path, connect, &mut out)?;
    // "OK" only when everything passed. A closed pipe (`check-config | head`) is no error:
    // print what fits, quietly.
    if code == ExitCode::SUCCESS {
        let _ = std::io::stdout().write_all(out.as_bytes());
    }
    Ok(code)
}

/// `check-config`: everything `serve` loads (config, users, keys), and with `connect` the
/// stores it would reach; the summary into `out`.
fn check_config_into(path: &Path, connect: bool, out: &mut String) -> Result<ExitCode> {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    outln!(out, "{}: OK", path.display());
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    outln!(
        out,
        "listeners:\n  public  {scheme}://{}\n  admin   http://{}",
        config.server.listen,
        config.admin.listen
    );
    print_upstreams(&config, out);
    outln!(out, "routes (first match wins):");
    for r in config.routes.routes() {
        outln!(out, "  {}", describe_route(&config, r));
    }
    let revocation = match &config.revocation.backend {
        RevocationBackend::Memory => "memory (a restart logs everyone out)".to_owned(),
        RevocationBackend::File(p) => format!("file ({})", p.display()),
        RevocationBackend::Redis(r) => format!("redis ({})", r.topology.describe()),
    };
    let users = match &config.users.backend {
        UsersBackend::File(p) => format!("file ({})", p.display()),
        UsersBackend::Redis => "redis".to_owned(),
    };
    outln!(
        out,
        "backends:\n  revocation  {revocation}\n  users       {users}"
    );
    print_providers(&config, out);
    // Checked, never created: only `serve` may generate a missing development key.
    match KeySet::resolve(&config.tokens, Generate::No) {
        Ok(Resolved::Loaded(keys)) => {
            outln!(out, "tokens: {:?}, kid {}", config.tokens.algorithm, keys.kid);
        }
        Ok(Resolved::WillGenerate(p)) => outln!(
            out,
            "tokens: {:?}, signing key {} missing: `authgate serve` will generate it (tokens.generate_missing_key = true)",
            config.tokens.algorithm,
            p.display()
        ),
        Err(e) => {
            eprintln!("error: {}: tokens: {e}", path.display());
            return Ok(ExitCode::from(2));
        }
    }
    // The users file as `serve` reads it (a missing or malformed one, or a hash over
    // login.max_hash_memory, would stop it).
    if let UsersBackend::File(_) = &config.users.backend {
        let store = Store::Memory(authgate::store::MemoryStore::new());
        match UserStore::open(&config.users, &store, config.login.max_hash_memory) {
            Ok(u) => {
                outln!(
                    out,
                    "users: {} in the file",
                    u.snapshot().map_or(0, |m| m.len())
                );
                let threads = config.login.max_concurrent_hashes;
                if threads > 0 {
                    if let Some(w) = authgate::limits::hash_memory_warning(
                        threads,
                        u.costliest().memory_bytes(),
                        authgate::limits::memory_limit(),
                    ) {
                        eprintln!("warning: {}: {w}", path.display());
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return Ok(ExitCode::from(2));
            }
        }
    }
    if connect {
        if let RevocationBackend::Redis(_) = &config.revocation.backend {
            let reached = runtime()?.block_on(async {
                let store = Store::new(&config.revocation)?;
                store.ping().await
            });
            match reached {
                Ok(()) => outln!(out, "redis: reachable"),
                Err(e) => {
                    eprintln!("error: {}: redis: {e}", path.display());
                    return Ok(ExitCode::from(2));
                }
            }
        }
        // Each identity provider: discovery and keys, as `serve` fetches them.
        let mut unreachable = false;
        for cfg in &config.login.oidc {
            let p = authgate::auth::oidc::provider::Provider::new(cfg.clone());
            match runtime()?.block_on(p.discover()) {
                Ok(d) => outln!(
                    out,
                    "oidc {}: reachable ({} signing keys, {})",
                    cfg.name,
                    d.keys.len(),
                    d.meta.issuer
                ),
                Err(e) => {
                    eprintln!("error: {}: oidc {}: {e}", path.display(), cfg.name);
                    unreachable = true;
                }
            }
        }
        // The span collector: a warning only (serve starts without it; spans are dropped).
        if let Some(url) = &config.tracing.otlp_traces_url {
            match reach_url(url) {
                Ok(()) => outln!(out, "otlp: reachable ({url})"),
                Err(e) => eprintln!(
                    "warning: {}: otlp {url}: {e} (the gateway starts without it; spans are dropped until it answers)",
                    path.display()
                ),
            }
        }
        if unreachable {
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A TCP connection to an `http://` URL's host and port, within 3 s.
fn reach_url(url: &str) -> Result<()> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().context("no host")?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?;
    let mut last = anyhow::anyhow!("{host} has no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(3)) {
            Ok(_) => return Ok(()),
            Err(e) => last = anyhow::anyhow!("cannot connect to {a}: {e}"),
        }
    }
    Err(last)
}

/// `[[login.oidc]]` as `check-config` and `explain` show them.
fn print_providers(config: &Config, out: &mut String) {
    if !config.login.password {
        outln!(
            out,
            "password form: off (login.password = false: single sign-on only)"
        );
    }
    if config.login.oidc.is_empty() {
        return;
    }
    outln!(out, "identity providers (/auth/oidc/<name>/...):");
    for p in &config.login.oidc {
        let client = if p.client_secret.is_some() {
            "confidential"
        } else {
            "public, PKCE only"
        };
        let users = match p.users {
            authgate::config::OidcUsers::Any => "any",
            authgate::config::OidcUsers::Known => "known",
        };
        outln!(
            out,
            "  {:<10} {} (client {}, {client}; users = {users}; {} role mappings)",
            p.name,
            p.issuer,
            p.client_id,
            p.role_map.len()
        );
    }
}

fn print_upstreams(config: &Config, out: &mut String) {
    outln!(out, "upstreams:");
    for u in &config.upstreams {
        let hosts: Vec<String> = u
            .targets
            .iter()
            .map(|t| {
                format!(
                    "{}://{}",
                    if t.https { "https" } else { "http" },
                    t.authority
                )
            })
            .collect();
        let balance = if hosts.len() > 1 {
            format!(
                ", {:?}, eject after {} for {:?}",
                u.balance, u.eject_after, u.eject_for
            )
        } else {
            String::new()
        };
        outln!(
            out,
            "  {:<12} {}  (connect {:?}, request {:?}{balance})",
            u.name,
            hosts.join(" "),
            u.connect_timeout,
            u.request_timeout
        );
    }
}

/// `admin.listen` from the config file alone, leniently: the default when absent; None when it
/// names a variable or does not parse.
fn admin_listen(path: &Path) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(path).ok()?;
    let table: toml::Table = text.parse().ok()?;
    match table.get("admin").and_then(|a| a.get("listen")) {
        None => "127.0.0.1:9901".parse().ok(),
        Some(v) => v.as_str()?.parse().ok(),
    }
}

fn healthcheck(path: &Path, url: Option<&str>) -> Result<ExitCode> {
    use std::io::Read;
    let given = url.map(|u| {
        let hostport = u
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        std::net::ToSocketAddrs::to_socket_addrs(hostport)
            .ok()
            .and_then(|mut a| a.next())
            .with_context(|| format!("--url {u:?} is not an address (http://HOST:PORT)"))
    });
    let mut addr = match given {
        Some(a) => a?,
        None => admin_listen(path).with_context(|| {
            format!(
                "cannot read admin.listen from {}: pass --url http://HOST:PORT",
                path.display()
            )
        })?,
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let limit = std::time::Duration::from_secs(2);
    let answer = (|| -> Result<String, std::io::Error> {
        let mut tcp = std::net::TcpStream::connect_timeout(&addr, limit)?;
        tcp.set_read_timeout(Some(limit))?;
        tcp.set_write_timeout(Some(limit))?;
        tcp.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut text = String::new();
        tcp.take(4096).read_to_string(&mut text)?;
        Ok(text)
    })();
    match answer {
        Ok(text) if text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200") => {
            println!("healthy: http://{addr}/healthz");
            Ok(ExitCode::SUCCESS)
        }
        Ok(text) => {
            eprintln!(
                "unhealthy: http://{addr}/healthz answered {}",
                text.lines().next().unwrap_or("nothing")
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("unhealthy: http://{addr}/healthz: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn describe_route(config: &Config, r: &authgate::route::Route) -> String {
    let methods = r.methods.as_ref().map_or("*".to_owned(), |m| {
        m.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
    });
    let auth = match r.auth {
        AuthMode::Public => "public".to_owned(),
        AuthMode::Required if r.roles.is_empty() => "required".to_owned(),
        AuthMode::Required => format!("required, roles any of [{}]", r.roles.join(", ")),
    };
    let mut extra = String::new();
    if r.case_insensitive {
        extra.push_str(", case-insensitive");
    }
    if let Some(p) = &r.strip_prefix {
        extra.push_str(&format!(", strip_prefix {p}"));
    }
    match &r.host_header {
        authgate::route::HostHeader::Client => {}
        authgate::route::HostHeader::Upstream => extra.push_str(", Host: the upstream's"),
        authgate::route::HostHeader::Literal(v) => {
            extra.push_str(&format!(", Host: {}", v.to_str().unwrap_or("?")))
        }
    }
    format!(
        "routes[{}] (line {}): {} {}{} -> {} ({auth}{extra})",
        r.index,
        r.line,
        methods,
        r.pattern.as_str(),
        r.host
            .as_ref()
            .map_or(String::new(), |h| format!(" host={h}")),
        r.upstream
            .map_or("(judge only)", |u| config.upstreams[u].name.as_str()),
    )
}

fn explain(path: &Path, method: &str, target: &str, host: Option<&str>) -> Result<ExitCode> {
    let config = load(path)?;
    let method = http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .context("not an HTTP method")?;
    let raw_path = target.split('?').next().unwrap_or("");
    let normalized = match authgate::path::normalize(raw_path) {
        Ok(n) => n,
        Err(e) => {
            println!("path: rejected with 400 invalid_request: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("normalized path: {}", normalized.forward);
    if normalized.judged != normalized.forward {
        println!("judged as:       {}", normalized.judged);
    }
    if authgate::auth::endpoints::is_own(&normalized.judged) {
        println!("served by the gateway itself (/auth/*)");
        if normalized.judged.starts_with("/auth/oidc/") || normalized.judged == "/auth/login" {
            let mut out = String::new();
            print_providers(&config, &mut out);
            print!("{out}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    match config
        .routes
        .lookup(&method, host.map(request_host), &normalized.judged)
    {
        Some(r) => {
            println!("matches: {}", describe_route(&config, r));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!("no route matches: 404 not_found");
            Ok(ExitCode::from(1))
        }
    }
}

fn read_password(prompt: &str) -> Result<String, anyhow::Error> {
    let pw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("cannot read the password")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if pw.is_empty() {
        bail!("empty password");
    }
    Ok(pw)
}

fn keygen(alg: &str, out: Option<&Path>) -> Result<ExitCode> {
    let alg = Algorithm::parse(alg).context("unknown algorithm")?;
    match out {
        Some(path) => {
            keys::write_new_key(path, alg)?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            let pem = keys::generate(alg)?;
            std::io::stdout().write_all(pem.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

/// The store and user store the management commands (`users`, `keys`) work on: the
/// configured revocation store (the file store belongs to the running gateway: one process
/// holds it, so an in-memory one stands in), and the user store, starting a users file that
/// does not exist yet and never refusing one for a costly hash (serve does).
fn open_user_store(config: &Config) -> Result<(Store, UserStore)> {
    let store = match &config.revocation.backend {
        RevocationBackend::File(_) => Store::Memory(authgate::store::MemoryStore::new()),
        _ => Store::new(&config.revocation)?,
    };
    if let UsersBackend::File(p) = &config.users.backend {
        if !p.exists() {
            authgate::store::users::write_file(p, &[])?;
        }
    }
    let users = UserStore::open(&config.users, &store, u64::MAX)?;
    Ok((store, users))
}

fn users(path: &Path, action: UsersAction) -> Result<ExitCode> {
    let config = load(path)?;
    let rt = runtime()?;
    rt.block_on(async {
        let (store, users) = open_user_store(&config)?;
        match action {
            UsersAction::Add { name, roles } => {
                validate_name(&name)?;
                validate_roles(&roles)?;
                let pw = read_password("Password for the new user: ")?;
                let user = User {
                    name: name.clone(),
                    password_hash: hash_password(pw.as_bytes())?,
                    roles,
                    ..User::default()
                };
                if !users.create(&user).await? {
                    bail!("user {name:?} exists already");
                }
                println!("added {name}");
            }
            UsersAction::Remove { name } => {
                if !users.remove(&name).await? {
                    bail!("no user {name:?}");
                }
                println!("removed {name}");
            }
            UsersAction::List => {
                for u in users.list().await? {
                    println!("{}\t{}", u.name, u.roles.join(","));
                }
            }
            UsersAction::SetRoles { name, roles } => {
                validate_roles(&roles)?;
                if !users.set_roles(&name, &roles).await? {
                    bail!("no user {name:?}");
                }
                println!("{name}: roles {}", roles.join(","));
            }
            UsersAction::Unlock { name } => {
                if !matches!(store, Store::Redis(_)) {
                    bail!("`authgate users unlock` needs revocation.backend = \"redis\": the memory and file stores' counters live inside the running gateway (they reset when failure_window passes, or on restart)");
                }
                store.clear_failures(&authgate::auth::sessions::user_counter(&name)).await?;
                println!("unlocked {name}: its failure counter is cleared");
            }
            UsersAction::Totp { name, reset } => {
                factors_cli::totp_cmd(&config, &users, &name, reset).await?;
            }
            UsersAction::RecoveryCodes { name } => {
                factors_cli::recovery_codes_cmd(&config, &users, &name).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn validate_roles(roles: &[String]) -> Result<(), anyhow::Error> {
    for r in roles {
        authgate::store::users::validate_role(r)?;
    }
    Ok(())
}

fn unlock_ip(path: &Path, ip: std::net::IpAddr) -> Result<ExitCode> {
    let config = load(path)?;
    if !matches!(config.revocation.backend, RevocationBackend::Redis(_)) {
        bail!("`authgate unlock --ip` needs revocation.backend = \"redis\": the memory and file stores' counters live inside the running gateway; ask it: POST /admin/unlock with ip=ADDR on the admin listener (with admin.token_file), or wait for failure_window");
    }
    runtime()?.block_on(async {
        let store = Store::new(&config.revocation)?;
        store
            .clear_failures(&authgate::auth::sessions::ip_counter(ip))
            .await?;
        println!("unlocked {ip}: its failure counter is cleared");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn revoke(path: &Path, user: &str) -> Result<ExitCode> {
    let config = load(path)?;
    if config.revocation.backend == RevocationBackend::Memory {
        bail!("`authgate revoke` needs revocation.backend = \"redis\": the memory store lives inside the running gateway (use POST /auth/logout?all=true with the user's token instead)");
    }
    let ttl = SessionPolicy::new(&config).revocation_ttl();
    runtime()?.block_on(async {
        let store = Store::new(&config.revocation)?;
        store
            .revoke_user(user, authgate::clock::now_secs(), ttl)
            .await?;
        println!("revoked every token issued to {user} until now");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `authgate sessions list|revoke`: straight to the store the gateway uses.
fn sessions(path: &Path, action: SessionsAction) -> Result<ExitCode> {
    let config = load(path)?;
    if config.revocation.backend == RevocationBackend::Memory {
        bail!("`authgate sessions` needs revocation.backend = \"redis\" or \"file\": the memory store lives inside the running gateway (use the admin listener: GET /admin/sessions?user=NAME)");
    }
    let ttl = SessionPolicy::new(&config).revocation_ttl();
    runtime()?.block_on(async {
        let store = Store::new(&config.revocation)?;
        match action {
            SessionsAction::List { user } => {
                for s in store.sessions_of(&user).await? {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.sid,
                        authgate::clock::utc_text(s.started),
                        s.last_refresh
                            .map_or_else(|| "-".to_owned(), authgate::clock::utc_text),
                        if s.ip.is_empty() { "-" } else { &s.ip },
                        s.method,
                        s.user_agent
                    );
                }
            }
            SessionsAction::Revoke {
                user: Some(user), ..
            } => {
                store
                    .revoke_user(&user, authgate::clock::now_secs(), ttl)
                    .await?;
                println!("revoked every session of {user}");
            }
            SessionsAction::Revoke { sid: Some(sid), .. } => {
                let Some(user) = store.session_owner(&sid).await? else {
                    bail!("no live session {sid:?} is known (expired, or pushed out of its user's list: `authgate sessions revoke --user USER` ends them all)");
                };
                store.revoke_session(&user, &sid, ttl).await?;
                println!("revoked session {sid} of {user}");
            }
            SessionsAction::Revoke { .. } => bail!("name a SID or --user USER"),
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
