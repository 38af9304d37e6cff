//! The hot path, as CPU time per request: what a request costs the server, independent of how the
//! scheduler shares two cores between load generator and server (which is what loopback
//! throughput mostly measures).
//!
//! The servers run pinned to one core (`taskset`, in `bench/run.sh`), wrk to the others. Each
//! round loads every target once, in turn, so the rounds interleave; a target's CPU time is the
//! change of its process's user + system time (`/proc/PID/stat`) over its wrk run, divided by the
//! requests wrk completed. The ratios are taken within each round, and the report gives their
//! median and spread over the rounds.
//!
//! A virtual machine's CPU time drifts by tens of percent within seconds, so the order matters:
//! targets are loaded in the order given on even rounds and in reverse on odd ones. Targets given
//! next to each other (the cached route and the bare framework) are then measured back to back in
//! every round, and neither is always the one that runs first after a change of load.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `name|pid|url`: a server process to load and the URL wrk asks it for (repeatable).
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    /// Rounds (each loads every target once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Length of each wrk run.
    #[arg(long, default_value = "8s")]
    duration: String,
    /// wrk's connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// The PostgreSQL postmaster the servers read from: its processes' CPU time is reported per
    /// request too (what a miss costs the database).
    #[arg(long)]
    postmaster: Option<u32>,
    /// Cores wrk runs on (`taskset -c` syntax).
    #[arg(long, default_value = "0")]
    wrk_cpus: String,
    /// Output JSON.
    #[arg(long)]
    out: PathBuf,
}

struct Target {
    name: String,
    pid: u32,
    url: String,
}

/// User + system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are positional.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| anyhow::anyhow!("odd /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    Ok((ticks(11) + ticks(12)) / ticks_per_second)
}

/// CPU time of a process and its children (a postmaster and its backends), in seconds: backends
/// come and go, so this is a sum over those alive at the time, taken before and after a run that
/// keeps its connections open.
fn tree_cpu_seconds(root: u32, ticks_per_second: f64) -> f64 {
    let mut total = cpu_seconds(root, ticks_per_second).unwrap_or(0.0);
    let Ok(entries) = std::fs::read_dir("/proc") else { return total };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok()));
        if parent == Some(root) {
            total += cpu_seconds(pid, ticks_per_second).unwrap_or(0.0);
        }
    }
    total
}

/// wrk's summary: requests completed, requests/s, p50 and p99 latency (ms), non-2xx answers.
fn wrk(args: &Args, url: &str) -> anyhow::Result<Value> {
    let output = Command::new("taskset")
        .args(["-c", &args.wrk_cpus, "wrk", "-t1", &format!("-c{}", args.connections), "-d", &args.duration])
        .args(["--latency", url])
        .output()?;
    anyhow::ensure!(output.status.success(), "wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let after = |prefix: &str| {
        text.lines().find_map(|l| l.trim_start().strip_prefix(prefix)).and_then(|rest| rest.split_whitespace().next())
    };
    let ms = |v: Option<&str>| {
        let v = v.unwrap_or("nan");
        if let Some(us) = v.strip_suffix("us") {
            us.parse::<f64>().unwrap_or(f64::NAN) / 1e3
        } else if let Some(ms) = v.strip_suffix("ms") {
            ms.parse().unwrap_or(f64::NAN)
        } else {
            v.trim_end_matches('s').parse::<f64>().unwrap_or(f64::NAN) * 1e3
        }
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no request count in wrk's output:\n{text}"))?;
    Ok(json!({
        "requests": requests,
        "rps": after("Requests/sec:").and_then(|v| v.parse::<f64>().ok()),
        "p50_ms": ms(after("50%")),
        "p99_ms": ms(after("99%")),
        "non_2xx": after("Non-2xx or 3xx responses:").and_then(|v| v.parse::<u64>().ok()).unwrap_or(0),
    }))
}

/// Median and spread of some samples.
fn spread(mut v: Vec<f64>) -> Value {
    v.sort_by(f64::total_cmp);
    json!({ "median": testbed::percentile(&v, 50.0), "min": v.first(), "max": v.last(), "samples": v })
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let targets: Vec<Target> = args
        .targets
        .iter()
        .map(|t| {
            let mut parts = t.splitn(3, '|');
            let (Some(name), Some(pid), Some(url)) = (parts.next(), parts.next(), parts.next()) else {
                anyhow::bail!("a target is name|pid|url, not {t:?}");
            };
            Ok(Target { name: name.to_owned(), pid: pid.parse()?, url: url.to_owned() })
        })
        .collect::<anyhow::Result<_>>()?;
    let ticks: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?.trim().parse()?;
    let mut rounds = Vec::new();
    for number in 0..args.rounds {
        let mut round = serde_json::Map::new();
        let order: Vec<&Target> =
            if number % 2 == 0 { targets.iter().collect() } else { targets.iter().rev().collect() };
        for target in order {
            let before = cpu_seconds(target.pid, ticks)?;
            let db_before = args.postmaster.map(|pm| tree_cpu_seconds(pm, ticks));
            let mut load = wrk(args, &target.url)?;
            let cpu = cpu_seconds(target.pid, ticks)? - before;
            let requests = load["requests"].as_f64().unwrap_or(0.0).max(1.0);
            load["cpu_us_per_request"] = json!(cpu * 1e6 / requests);
            if let (Some(pm), Some(db_before)) = (args.postmaster, db_before) {
                let db = (tree_cpu_seconds(pm, ticks) - db_before).max(0.0);
                load["db_cpu_us_per_request"] = json!(db * 1e6 / requests);
            }
            round.insert(target.name.clone(), load);
            // Let the server settle (connection teardown, deferred work) before the next target.
            std::thread::sleep(Duration::from_millis(500));
        }
        rounds.push(Value::Object(round));
    }
    let per_target =
        |name: &str, field: &str| -> Vec<f64> { rounds.iter().filter_map(|r| r[name][field].as_f64()).collect() };
    let mut summary = serde_json::Map::new();
    for target in &targets {
        summary.insert(
            target.name.clone(),
            json!({
                "url": target.url,
                "cpu_us_per_request": spread(per_target(&target.name, "cpu_us_per_request")),
                "db_cpu_us_per_request": spread(per_target(&target.name, "db_cpu_us_per_request")),
                "rps": spread(per_target(&target.name, "rps")),
                "p50_ms": spread(per_target(&target.name, "p50_ms")),
                "p99_ms": spread(per_target(&target.name, "p99_ms")),
            }),
        );
    }
    // Ratios within each round.
    let ratio = |a: &str, b: &str| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| Some(r[a]["cpu_us_per_request"].as_f64()? / r[b]["cpu_us_per_request"].as_f64()?))
            .collect()
    };
    testbed::write_json(
        &args.out,
        &json!({
            "rounds": rounds,
            "targets": summary,
            "cpu_ratio_cached_over_ceiling": spread(ratio("cached", "ceiling")),
            "cpu_ratio_uncached_over_cached": spread(ratio("uncached", "cached")),
            // The whole cost of a miss: the server's CPU plus the database's.
            "cpu_ratio_uncached_with_database_over_cached": spread(
                rounds
                    .iter()
                    .filter_map(|r| {
                        let u = &r["uncached"];
                        Some(
                            (u["cpu_us_per_request"].as_f64()? + u["db_cpu_us_per_request"].as_f64()?)
                                / r["cached"]["cpu_us_per_request"].as_f64()?,
                        )
                    })
                    .collect()
            ),
            "wrk": { "connections": args.connections, "duration": args.duration, "cpus": args.wrk_cpus },
        }),
    )
}
