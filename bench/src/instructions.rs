//! The hot path, as instructions per request under Callgrind: a cached hit of the api against
//! bare axum serving the same bytes at the same route, both through hyper on a loopback socket.
//!
//! CPU time on a shared virtual machine moves by tens of percent between runs and machines, which
//! cannot settle a ratio goal near 1.25. An instruction count does not depend on what else the
//! machine is doing. Each server runs under `valgrind --tool=callgrind`; a native client (this
//! process, a blocking socket, one keep-alive connection) sends it `n` requests in one run and
//! `2n` in another. The difference of the two runs' totals, divided by `n`, is what a request
//! costs: start-up, the first (missing) request, shutdown and the client's probe cancel out.
//!
//! What a request does not cause is kept out: the api's change poll runs once a minute here (its
//! interval is production's 1 s otherwise, and a run under Callgrind is many times slower than
//! native, so its share per request would be inflated as much), and both servers run one tokio
//! worker.
//! Only user-space instructions are counted (Valgrind does not see the kernel), so the ratio is
//! that of the code edgerail adds to the framework's, without the socket's system calls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The api binary (the deploy build).
    #[arg(long)]
    api: PathBuf,
    /// The database the api reads (a hit does not touch it; the first request fills the cache).
    #[arg(long)]
    database_url: String,
    /// The URL path asked for: a route whose `local_ttl` outlasts a run under Callgrind, so
    /// every answer but the first is a hit (the bench fails otherwise).
    #[arg(long)]
    route: String,
    /// Its template in axum's syntax, for the bare axum server.
    #[arg(long)]
    route_template: String,
    /// Requests in the shorter run of each pair (the longer sends twice as many).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Rounds: each measures both servers, so the ratio's repeatability shows.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Where Callgrind's output files and the servers' logs go.
    #[arg(long)]
    work_dir: PathBuf,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

/// A server to count: how to start it on a given address.
struct Target {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Target {
    fn command(&self, addr: SocketAddr) -> Vec<String> {
        self.args.iter().map(|a| a.replace("{addr}", &addr.to_string())).collect()
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.work_dir)?;
    let api = Target {
        name: "cached",
        program: args.api.clone(),
        args: Vec::new(),
        env: vec![
            ("DATABASE_URL".into(), args.database_url.clone()),
            ("BIND_ADDR".into(), "{addr}".into()),
            ("CHANGE_POLL_INTERVAL".into(), "60s".into()),
            ("CHANGE_MAX_LAG".into(), "180s".into()),
            ("SHUTDOWN_TIMEOUT".into(), "1s".into()),
        ],
    };
    // The body the bare server sends is as long as the api's hit, measured natively first.
    let hit = native_hit(&api, &args.route, &args.work_dir)?;
    let bare = |name, headers: &[(String, String)]| -> anyhow::Result<Target> {
        let mut args =
            ["ceiling", "--addr", "{addr}", "--bytes", &hit.length.to_string(), "--route", &args.route_template]
                .map(str::to_owned)
                .to_vec();
        for (name, value) in headers {
            args.extend(["--header".to_owned(), format!("{name}: {value}")]);
        }
        Ok(Target { name, program: std::env::current_exe()?, args, env: Vec::new() })
    };
    let ceiling = bare("ceiling", &[])?;
    // The floor: bare axum sending, as fixed values, the headers the contract has every hit carry
    // (Cache-Control, ETag, Vary, the tags, x-local-cache, Server-Timing). No implementation of
    // the contract answers with fewer instructions than writing those takes.
    let extra: Vec<(String, String)> = hit
        .headers
        .iter()
        .filter(|(name, _)| !["content-length", "content-type", "date"].contains(&name.to_ascii_lowercase().as_str()))
        .cloned()
        .collect();
    let floor = bare("ceiling_with_headers", &extra)?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let mut per_request = serde_json::Map::new();
        for target in [&api, &ceiling, &floor] {
            let short = count(target, &args.route, args.requests, &args.work_dir, round)?;
            let long = count(target, &args.route, 2 * args.requests, &args.work_dir, round)?;
            if long <= short {
                bail!(
                    "{}: {long} instructions for {} requests, {short} for {}",
                    target.name,
                    2 * args.requests,
                    args.requests
                );
            }
            let instructions = (long - short) as f64 / args.requests as f64;
            eprintln!("round {}: {} {instructions:.0} instructions per request", round + 1, target.name);
            per_request.insert(target.name.into(), json!(instructions));
        }
        let of = |name: &str| per_request[name].as_f64().unwrap_or(f64::NAN);
        rounds.push(json!({
            "instructions_per_request": per_request,
            "ratio": of("cached") / of("ceiling"),
            "floor_ratio": of("ceiling_with_headers") / of("ceiling"),
            "ratio_over_floor": of("cached") / of("ceiling_with_headers"),
        }));
    }
    testbed::write_json(
        &args.out,
        &json!({
            "route": args.route,
            "requests": args.requests,
            "body_bytes": hit.length,
            "headers": extra.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            "valgrind": valgrind_version(),
            "rounds": rounds,
        }),
    )
}

/// The api's hit for `route` (the second answer, after the miss that fills the cache), from a
/// native run of it.
fn native_hit(api: &Target, route: &str, dir: &Path) -> anyhow::Result<Answer> {
    let addr = testbed::free_addr()?;
    let mut child = spawn(Command::new(&api.program), api, addr, &dir.join("native.log"))?;
    let result = (|| {
        let mut connection = connect(addr, &mut child, Duration::from_secs(30))?;
        get(&mut connection, route)?;
        let hit = get(&mut connection, route)?;
        if hit.missed {
            bail!("the second answer for {route} was not a hit");
        }
        Ok(hit)
    })();
    stop(&mut child)?;
    result
}

/// Instructions Callgrind counts over one run of `target` that answers `requests` requests.
fn count(target: &Target, route: &str, requests: usize, dir: &Path, round: usize) -> anyhow::Result<u64> {
    let addr = testbed::free_addr()?;
    let stem = format!("{}-{requests}-{round}", target.name);
    let out = dir.join(format!("callgrind.{stem}.out"));
    let mut valgrind = Command::new("valgrind");
    valgrind
        .args(["--tool=callgrind", "--dump-instr=no", "--dump-line=no"])
        .arg(format!("--callgrind-out-file={}", out.display()));
    valgrind.arg(&target.program);
    let mut child = spawn(valgrind, target, addr, &dir.join(format!("{stem}.log")))?;
    let result = (|| -> anyhow::Result<usize> {
        let mut connection = connect(addr, &mut child, Duration::from_secs(120))?;
        let mut misses = 0;
        for _ in 0..requests {
            misses += usize::from(get(&mut connection, route)?.missed);
        }
        Ok(misses)
    })();
    stop(&mut child)?;
    let misses = result.with_context(|| format!("{} under callgrind", target.name))?;
    // The first request fills the cache; another miss would be a load counted as part of the hits
    // (a local TTL running out during the run), so the route must keep its entry for longer.
    if misses > 1 {
        bail!(
            "{}: {misses} of {requests} answers were not hits: choose a route whose local_ttl outlasts the run",
            target.name
        );
    }
    let text = std::fs::read_to_string(&out).with_context(|| format!("no callgrind output at {}", out.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no instruction total in {}", out.display()))
}

fn spawn(mut command: Command, target: &Target, addr: SocketAddr, log: &Path) -> anyhow::Result<Child> {
    command.args(target.command(addr));
    for (key, value) in &target.env {
        command.env(key, value.replace("{addr}", &addr.to_string()));
    }
    let log = std::fs::File::create(log)?;
    Ok(command
        .env("TOKIO_WORKER_THREADS", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// SIGTERM, then wait: both servers drain and return from `main`, and Callgrind writes its totals.
fn stop(child: &mut Child) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill()?;
    bail!("a server did not stop within 120 s of SIGTERM")
}

/// The first connection that succeeds: until the server listens, attempts are refused by the
/// kernel and cost the server nothing, so every run sees exactly one connection.
fn connect(addr: SocketAddr, child: &mut Child, limit: Duration) -> anyhow::Result<BufReader<TcpStream>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(stream) = TcpStream::connect(addr) {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            return Ok(BufReader::new(stream));
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server exited before listening: {status}");
        }
        if Instant::now() > deadline {
            bail!("{addr} did not accept a connection within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An answer, as far as the count needs it.
struct Answer {
    /// The body's length.
    length: usize,
    /// Whether the api's `x-local-cache` said anything but `hit`.
    missed: bool,
    /// Its headers, in order.
    headers: Vec<(String, String)>,
}

/// One HTTP/1.1 GET on a keep-alive connection (a `200` is required).
fn get(connection: &mut BufReader<TcpStream>, route: &str) -> anyhow::Result<Answer> {
    connection.get_mut().write_all(format!("GET {route} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())?;
    let mut line = String::new();
    connection.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("answer {:?}", line.trim_end());
    }
    let mut length = None;
    let mut missed = false;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if connection.read_line(&mut line)? == 0 {
            bail!("the connection closed inside the headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.to_owned(), value.trim().to_owned()));
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>()?);
            } else if name.eq_ignore_ascii_case("x-local-cache") {
                missed = value.trim() != "hit";
            }
        }
    }
    let length = length.context("an answer without content-length")?;
    let mut body = vec![0; length];
    connection.read_exact(&mut body)?;
    Ok(Answer { length, missed, headers })
}

fn valgrind_version() -> String {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
