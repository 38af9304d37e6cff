//! The markdown report (and SVG plots) from the JSON results in one directory.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

fn load(dir: &Path, name: &str) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
}

fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 1.0 => format!("{x:.2}"),
        Some(x) => format!("{x:.3}"),
        None => v.to_string(),
    }
}

/// A histogram of `samples` as an SVG.
fn histogram(title: &str, unit: &str, samples: &[f64]) -> String {
    let (w, h, pad) = (640.0, 260.0, 40.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{pad}\" y=\"20\" font-size=\"14\">{title}</text>"
    );
    if samples.is_empty() {
        svg.push_str("<text x=\"40\" y=\"120\">no samples</text></svg>");
        return svg;
    }
    let min = samples.iter().copied().fold(f64::INFINITY, f64::min);
    let max = samples.iter().copied().fold(f64::NEG_INFINITY, f64::max).max(min + 1e-9);
    let bins = 20usize;
    let mut counts = vec![0usize; bins];
    for s in samples {
        let i = (((s - min) / (max - min)) * bins as f64).floor() as usize;
        counts[i.min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1) as f64;
    let bw = (w - 2.0 * pad) / bins as f64;
    for (i, c) in counts.iter().enumerate() {
        let bh = (*c as f64 / top) * (h - 2.0 * pad - 10.0);
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#3b7dd8\"/>",
            pad + i as f64 * bw + 1.0,
            h - pad - bh,
            bw - 2.0,
            bh
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"black\"/>\
         <text x=\"{pad}\" y=\"{t}\">{min:.2} {unit}</text><text x=\"{x2}\" y=\"{t}\" text-anchor=\"end\">{max:.2} {unit}</text>\
         <text x=\"{mid}\" y=\"{t}\" text-anchor=\"middle\">n = {n}</text></svg>",
        y = h - pad,
        x2 = w - pad,
        t = h - pad + 18.0,
        mid = w / 2.0,
        n = samples.len()
    );
    svg
}

/// Horizontal bars comparing named values.
fn bars(title: &str, items: &[(&str, f64)]) -> String {
    let (w, row, label_w) = (760.0, 28.0, 330.0);
    let h = 40.0 + row * items.len() as f64;
    let top = items.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"10\" y=\"20\" font-size=\"14\">{title}</text>"
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 32.0 + i as f64 * row;
        let bw = (v / top) * (w - label_w - 70.0);
        let _ = write!(
            svg,
            "<text x=\"10\" y=\"{:.1}\">{label}</text><rect x=\"{label_w}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"18\" fill=\"#3b7dd8\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y + 13.0,
            label_w + 5.0 + bw,
            y + 13.0,
            f(&Value::from(*v)),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The markers around the summary in README.md and in the published results: the bench rewrites
/// what lies between them, and a test checks that the two copies agree.
pub const SUMMARY_START: &str = "<!-- bench summary: written by bench/run.sh -->";
pub const SUMMARY_END: &str = "<!-- end of bench summary -->";

/// Writes `report.md` (and the plots) in `dir`; with `publish`, a repository root, also
/// `bench/RESULTS.md`, its plots in `bench/results/`, and the summary in `README.md`.
pub fn run(dir: &Path, publish: Option<&Path>) -> anyhow::Result<()> {
    let mut md = String::new();
    let machine = std::fs::read_to_string(dir.join("machine.txt")).unwrap_or_default();
    let summary = summary(dir, &machine);
    let _ = writeln!(
        md,
        "# edgerail benchmarks\n\n{machine}\nEvery figure is measured in this one run, on this machine; ratios compare runs made minutes apart.\n\n\
         {SUMMARY_START}\n{summary}{SUMMARY_END}\n"
    );

    if let Some(hot) = load(dir, "hotpath.json") {
        let _ = writeln!(
            md,
            "## Hot path: CPU time per request (servers pinned to one core, wrk on the others)\n\n\
             {} interleaved rounds of {} each, the cached route and bare axum back to back in each (the order \
             reversed every other round); ratios are taken within a round, and each figure is the median \
             (min–max) over the rounds.\n",
            hot["rounds"].as_array().map_or(0, Vec::len),
            hot["wrk"]["duration"].as_str().unwrap_or("?")
        );
        let _ = writeln!(
            md,
            "| target | CPU µs / request | database CPU µs / request | requests/s | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|---:|"
        );
        for (key, label) in [
            ("cached", "edgerail, cached"),
            ("uncached", "edgerail, in-process cache off (PostgreSQL)"),
            ("ceiling", "bare axum, the same route template serving static bytes"),
        ] {
            let t = &hot["targets"][key];
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} |",
                spread(&t["cpu_us_per_request"]),
                spread(&t["db_cpu_us_per_request"]),
                spread(&t["rps"]),
                spread(&t["p50_ms"]),
                spread(&t["p99_ms"])
            );
        }
        let ceiling = &hot["cpu_ratio_cached_over_ceiling"];
        let uncached = &hot["cpu_ratio_uncached_over_cached"];
        let _ = writeln!(
            md,
            "\n- CPU per request, cached / bare axum: **{}×** ({}–{} over the rounds; for orientation: the \
             1.25× goal is judged by instructions, below, which do not move with the machine)\n- {} CPU per request, uncached / cached: **{}×** ({}–{}; goal ≥ 20×)\n- counting the database's CPU too (the whole cost of a miss): **{}×** ({}–{})\n",
            f(&ceiling["median"]),
            f(&ceiling["min"]),
            f(&ceiling["max"]),
            mark(uncached["median"].as_f64().is_some_and(|r| r >= 20.0)),
            f(&uncached["median"]),
            f(&uncached["min"]),
            f(&uncached["max"]),
            f(&hot["cpu_ratio_uncached_with_database_over_cached"]["median"]),
            f(&hot["cpu_ratio_uncached_with_database_over_cached"]["min"]),
            f(&hot["cpu_ratio_uncached_with_database_over_cached"]["max"]),
        );
        let cpu = |key: &str| hot["targets"][key]["cpu_us_per_request"]["median"].as_f64().unwrap_or(0.0);
        if cpu("ceiling") > 0.0 {
            // What the server-only ratio could reach at this miss cost, were a hit as cheap as the
            // bare framework serving the same bytes.
            let _ = writeln!(
                md,
                "A hit cannot cost the server less than the bare framework does: at this run's miss cost, the server-only ratio could reach at most {:.1}× (uncached / bare axum).\n",
                cpu("uncached") / cpu("ceiling")
            );
        }
        std::fs::write(
            dir.join("hotpath.svg"),
            bars(
                "Hot path, CPU µs per request (median)",
                &[("cached", cpu("cached")), ("uncached", cpu("uncached")), ("bare axum ceiling", cpu("ceiling"))],
            ),
        )?;
        let _ = writeln!(md, "![hot path](hotpath.svg)\n");
    }

    if let Some(counted) = load(dir, "instructions.json") {
        instructions(&mut md, &counted);
    }

    if let Some(lambda) = load(dir, "lambda.json") {
        let _ = writeln!(
            md,
            "## Lambda mode (local Runtime API, {} MB, PostgreSQL)\n\n\
             Handler time: event handed to the function → response posted, what Lambda bills per invocation.\n",
            lambda["memory_mb"]
        );
        let _ = writeln!(
            md,
            "| invocations of {} | n | mean ms | p50 ms | p90 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|",
            lambda["route"].as_str().unwrap_or("")
        );
        for (key, label) in [("hit", "cached hit"), ("miss", "miss (in-process cache off)")] {
            let r = &lambda[key];
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} | {} | {} |",
                r["invocations"],
                f(&r["mean_ms"]),
                f(&r["p50_ms"]),
                f(&r["p90_ms"]),
                f(&r["p99_ms"]),
                f(&r["max_ms"])
            );
        }
        let hit = &lambda["hit"];
        let zipf = &lambda["zipf"];
        let peak_mib = zipf["peak_rss_kib"].as_f64().unwrap_or(f64::INFINITY) / 1024.0;
        let _ = writeln!(
            md,
            "\n- {} cached hit, p50: **{} ms** (goal ≤ 1 ms; p99 {} ms; all {} were hits: {})\n\
             - {} peak RSS over a Zipf (s = {}) workload of {} invocations over {} URLs ({} distinct requested, {} hits, mean {} ms): **{peak_mib:.1} MiB** at {} MB (goal < 100 MiB)\n",
            mark(hit["p50_ms"].as_f64().is_some_and(|p| p <= 1.0) && hit["hits"] == hit["invocations"]),
            f(&hit["p50_ms"]),
            f(&hit["p99_ms"]),
            hit["invocations"],
            hit["hits"] == hit["invocations"],
            mark(peak_mib < 100.0),
            zipf["zipf_s"],
            zipf["invocations"],
            zipf["urls"],
            zipf["distinct_urls_requested"],
            zipf["hits"],
            f(&zipf["mean_ms"]),
            lambda["memory_mb"],
        );
    }

    if let Some(wire) = load(dir, "wire.json") {
        let _ = writeln!(
            md,
            "## Database round trips (misses of {}, in-process cache off, counted on the wire)\n\n\
             A proxy counts the server's ReadyForQuery messages (one per round trip) and can hold each answer back \
             to add a fixed time per round trip, as a VPC or RDS Proxy does. The count includes the ping sqlx \
             sends as a connection goes back to its pool, after the answer.\n",
            wire["route"].as_str().unwrap_or("")
        );
        let _ = writeln!(
            md,
            "| build | round trips / miss | miss p50 ms, loopback | miss p50 ms, +{} ms per round trip | cold first request: round trips, connecting included |\n|---|---:|---:|---:|---:|",
            f(&wire["edgerail"]["delayed"]["added_ms_per_round_trip"])
        );
        for (key, label) in [("edgerail", "edgerail"), ("baseline", "baseline (an older build)")] {
            let w = &wire[key];
            if w.is_null() {
                continue;
            }
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} |",
                f(&w["loopback"]["round_trips_per_miss"]),
                f(&w["loopback"]["p50_ms"]),
                f(&w["delayed"]["p50_ms"]),
                trips_text(&w["cold_first_request_round_trips"])
            );
        }
        let trips = wire["edgerail"]["loopback"]["round_trips_per_miss"].as_f64().unwrap_or(f64::INFINITY);
        let _ = writeln!(
            md,
            "\n- {} round trips per miss: **{}** (goal ≤ 2)\n",
            mark(trips.round() <= 2.0),
            f(&Value::from(trips))
        );
    }

    if let Some(cold) = load(dir, "coldstart.json") {
        let _ = writeln!(md, "## Cold start\n");
        let _ = writeln!(md, "| start | runs | p50 ms | p90 ms | max ms |\n|---|---:|---:|---:|---:|");
        for (key, label) in [
            ("health_check", "exec → first 200 /health-check"),
            ("database_route", "exec → first 200 /v1/formations (SQLite)"),
            ("postgres_health_check", "exec → first 200 /health-check (PostgreSQL configured)"),
            ("postgres_route", "exec → first 200 /v1/lines (PostgreSQL)"),
            ("pooled_route", "exec → first 200 /v1/lines (PostgreSQL through PgBouncer, server connection open)"),
            ("lambda_mode", "Lambda mode: exec → first response posted"),
        ] {
            let r = &cold[key];
            if r["runs"].as_u64().unwrap_or(0) == 0 {
                continue;
            }
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} | {} |",
                r["runs"],
                f(&r["p50_ms"]),
                f(&r["p90_ms"]),
                f(&r["max_ms"])
            );
        }
        let first = cold["database_route"]["p50_ms"].as_f64().unwrap_or(f64::INFINITY);
        let _ = writeln!(
            md,
            "\nPeak RSS: {} KiB. {} exec → first 200 of a database route, p50: {} ms (goal under 10 ms).",
            cold["peak_rss_kib_max"],
            mark(first < 10.0),
            f(&cold["database_route"]["p50_ms"])
        );
        let (pg, pg_health) =
            (cold["postgres_route"]["p50_ms"].as_f64(), cold["postgres_health_check"]["p50_ms"].as_f64());
        if let (Some(pg), Some(health)) = (pg, pg_health) {
            let trips = load(dir, "wire.json").map(|w| w["edgerail"]["cold_first_request_round_trips"].clone());
            let _ = writeln!(
                md,
                "{} exec → first 200 of /v1/lines on PostgreSQL / of /health-check, p50: **{:.2}×** ({} ms / {} ms; goal ≤ 2.5×); its first request's round trips, connecting included: {}.",
                mark(pg / health.max(1e-9) <= 2.5),
                pg / health.max(1e-9),
                f(&Value::from(pg)),
                f(&Value::from(health)),
                trips.map_or_else(|| "not measured".to_owned(), |t| trips_text(&t))
            );
            if let Some(talk) = cold["postgres_conversation"]["p50_ms"].as_f64() {
                let plain =
                    cold["postgres_conversation_without_tls"]["p50_ms"].as_f64().map_or_else(String::new, |p| {
                        format!(" ({} ms when the connection skips TLS)", f(&Value::from(p)))
                    });
                let _ = writeln!(
                    md,
                    "The database conversation of that first request alone, timed from a running process (a new connection: the server starts a backend, TLS, SCRAM; then the same read): {} ms p50{plain}. No client answers sooner than a started process plus that conversation: on this server the floor is **{:.2}×** the health check. What the api adds beyond its process start and that conversation: {} ms (medians of separate starts; below zero is noise).",
                    f(&Value::from(talk)),
                    (health + talk) / health.max(1e-9),
                    f(&Value::from(pg - health - talk))
                );
            }
            if let Some(pooled) = cold["pooled_route"]["p50_ms"].as_f64() {
                let _ = writeln!(
                    md,
                    "{} The same route through a pooler whose server connection is already open (PgBouncer here, RDS Proxy on AWS), so the first request costs a login to the pooler instead of a new backend: **{:.2}×** ({} ms; goal ≤ 2.5×).",
                    mark(pooled / health.max(1e-9) <= 2.5),
                    pooled / health.max(1e-9),
                    f(&Value::from(pooled))
                );
            }
        }
        let _ = writeln!(md);
        let samples: Vec<f64> = cold["health_check"]["samples_ms"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        std::fs::write(dir.join("coldstart.svg"), histogram("exec → first 200 (/health-check)", "ms", &samples))?;
        let _ = writeln!(md, "![cold start distribution](coldstart.svg)\n");
    }

    if let Some(off) = load(dir, "offload.json") {
        let _ = writeln!(
            md,
            "## Origin offload (Zipf s = {} over {} URLs, through the local edge)\n",
            off["zipf_s"], off["urls"]
        );
        let _ = writeln!(
            md,
            "| figure | value |\n|---|---:|\n| end-user requests | {} |\n| reached the origin | {} ({:.2}%) |\n| minimum possible (distinct URL × data version requested) | {} |\n| origin / minimum | {} **{}×** (goal ≤ 1.1×) |\n| including the warmer's origin fetches | {}× |\n| database queries per origin request | {} |\n| writes per second | {} |\n| warmer ticks (warm requests that reached the origin) | {} ({}) |\n| staleness after a write, p50 / p99 | {} ms / {} ms |\n| errors | {} |\n",
            off["requests"],
            off["origin_requests"],
            off["origin_share"].as_f64().unwrap_or(0.0) * 100.0,
            off["minimum_origin_requests"],
            mark(off["origin_vs_minimum"].as_f64().is_some_and(|r| r <= 1.1)),
            f(&off["origin_vs_minimum"]),
            f(&Value::from(
                (off["origin_requests"].as_f64().unwrap_or(0.0) + off["warm_origin_requests"].as_f64().unwrap_or(0.0))
                    / off["minimum_origin_requests"].as_f64().unwrap_or(1.0).max(1.0)
            )),
            f(&off["db_queries_per_origin_request"]),
            f(&off["writes_per_s"]),
            off["warmer_ticks"],
            off["warm_origin_requests"],
            f(&off["staleness_ms"]["p50"]),
            f(&off["staleness_ms"]["p99"]),
            off["errors"],
        );
        let samples: Vec<f64> = off["staleness_ms"]["samples"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        std::fs::write(dir.join("staleness.svg"), histogram("time until the edge serves a write", "ms", &samples))?;
        std::fs::write(
            dir.join("offload.svg"),
            bars(
                "Requests",
                &[
                    ("end-user requests", off["requests"].as_f64().unwrap_or(0.0)),
                    ("reached the origin", off["origin_requests"].as_f64().unwrap_or(0.0)),
                    ("minimum possible", off["minimum_origin_requests"].as_f64().unwrap_or(0.0)),
                ],
            ),
        )?;
        let _ = writeln!(md, "![offload](offload.svg)\n![staleness](staleness.svg)\n");
    }

    if let Some(ws) = load(dir, "warmset.json") {
        let (fixed, learned) = (&ws["arms"]["fixed"], &ws["arms"]["learned"]);
        let share = |arm: &Value| arm["found_warm_share"].as_f64();
        let pct = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.1}%", v * 100.0));
        let _ = writeln!(
            md,
            "## The warm set: fixed against learned (Zipf s = {} over {} URLs, {} s each, {} writes/s)\n",
            ws["zipf_s"], ws["urls"], ws["duration_s"], ws["writes_per_s"]
        );
        let _ = writeln!(
            md,
            "| figure | fixed | learned | goal |\n|---|---:|---:|---|\n\
             | found warm (held when invalidated, asked again > 5 s later: next request an edge hit) | {} of {} ({}) | {} of {} ({}) | {} learned ≥ 95% |\n\
             | edge miss ratio of viewer requests | {} | {} | {} learned ≤ fixed |\n\
             | origin requests per viewer request, warm fetches included | {} | {} | {} learned ≤ fixed |\n\
             | most warm requests in one tick (budget {}) | {} | {} | {} within |\n\
             | learned paths (most) / re-warmed in all | {} / {} | {} / {} | |\n\
             | viewer requests / errors | {} / {} | {} / {} | |\n",
            fixed["found_warm"],
            fixed["invalidated_then_asked"],
            pct(share(fixed)),
            learned["found_warm"],
            learned["invalidated_then_asked"],
            pct(share(learned)),
            mark(share(learned).is_some_and(|s| s >= 0.95)),
            f(&fixed["edge_miss_ratio"]),
            f(&learned["edge_miss_ratio"]),
            mark(learned["edge_miss_ratio"].as_f64() <= fixed["edge_miss_ratio"].as_f64()),
            f(&fixed["origin_per_viewer_request"]),
            f(&learned["origin_per_viewer_request"]),
            mark(learned["origin_per_viewer_request"].as_f64() <= fixed["origin_per_viewer_request"].as_f64()),
            ws["warm_budget"],
            fixed["warm_requests_per_tick_max"],
            learned["warm_requests_per_tick_max"],
            mark(fixed["within_budget"].as_bool() == Some(true) && learned["within_budget"].as_bool() == Some(true)),
            fixed["learned_paths_max"],
            fixed["learned_rewarmed"],
            learned["learned_paths_max"],
            learned["learned_rewarmed"],
            fixed["viewer_requests"],
            fixed["errors"],
            learned["viewer_requests"],
            learned["errors"],
        );
    }

    let mut conns = Vec::new();
    for name in ["connections-pgbouncer-50.json", "connections-pgbouncer-200.json", "connections-direct-200.json"] {
        if let Some(c) = load(dir, name) {
            conns.push(c);
        }
    }
    if !conns.is_empty() {
        let _ = writeln!(md, "## Connections (simulated Lambda instances, PostgreSQL max_connections = 50)\n");
        let _ = writeln!(
            md,
            "| setup | instances | requests | errors | of which 503 | p50 ms | p99 ms | max ms | peak server connections |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for c in &conns {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c["label"].as_str().unwrap_or(""),
                c["instances"],
                c["requests"],
                c["errors"],
                c["unavailable_503"],
                f(&c["p50_ms"]),
                f(&c["p99_ms"]),
                f(&c["max_ms"]),
                c["peak_server_connections"]
            );
        }
        let _ = writeln!(md);
    }

    if let Some(size) = load(dir, "size.json") {
        let _ = writeln!(
            md,
            "## Size (deploy profile, {})\n\n| binary | bytes | zipped |\n|---|---:|---:|",
            size["target"].as_str().unwrap_or("")
        );
        for b in size["binaries"].as_array().into_iter().flatten() {
            let _ = writeln!(md, "| {} | {} | {} |", b["name"].as_str().unwrap_or(""), b["bytes"], b["zipped"]);
        }
        let _ = writeln!(md);
    }
    if let Some(reads) = load(dir, "reads.json") {
        reads_section(
            &mut md,
            &reads,
            load(dir, "instructions.json").as_ref(),
            load(dir, "instructions-scale.json").as_ref(),
        );
        let items: Vec<(String, f64)> = reads["cases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let label = format!("{}: {}", c["route"].as_str().unwrap_or(""), c["case"].as_str().unwrap_or(""));
                (label, c["db_p99_ms"].as_f64().unwrap_or(0.0))
            })
            .collect();
        let items: Vec<(&str, f64)> = items.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        std::fs::write(dir.join("reads.svg"), bars("A miss at scale: database time p99, ms", &items))?;
        let _ = writeln!(md, "![miss latency per route at scale](reads.svg)\n");
    }
    if let Some(writes) = load(dir, "writes.json") {
        writes_section(&mut md, &writes);
    }
    if let Some(busy) = load(dir, "busy.json") {
        busy_section(&mut md, &busy);
        std::fs::write(dir.join("tables.svg"), tables_plot(&busy))?;
        let _ = writeln!(md, "![the system's tables over time](tables.svg)\n");
    }
    if let Some(soak) = load(dir, "soak.json") {
        soak_section(&mut md, &soak);
        std::fs::write(dir.join("soak.svg"), timeline(&soak))?;
    }
    std::fs::write(dir.join("report.md"), &md)?;
    print!("{md}");
    if let Some(root) = publish {
        publish_results(dir, root, &md, &summary)?;
    }
    Ok(())
}

/// Copies the report into the repository: `bench/RESULTS.md` (its plots under `bench/results/`)
/// and the summary between the README's markers, so no figure is pasted by hand.
fn publish_results(dir: &Path, root: &Path, md: &str, summary: &str) -> anyhow::Result<()> {
    let plots = root.join("bench/results");
    let _ = std::fs::remove_dir_all(&plots);
    std::fs::create_dir_all(&plots)?;
    let mut results = md.to_owned();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "svg") {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            std::fs::copy(&path, plots.join(&name))?;
            results = results.replace(&format!("]({name})"), &format!("](results/{name})"));
        }
    }
    std::fs::write(root.join("bench/RESULTS.md"), results)?;
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path)?;
    let (Some(start), Some(end)) = (readme.find(SUMMARY_START), readme.find(SUMMARY_END)) else {
        anyhow::bail!("README.md has no bench summary markers ({SUMMARY_START} … {SUMMARY_END})");
    };
    let updated = format!("{}{SUMMARY_START}\n{summary}{}", &readme[..start], &readme[end..]);
    std::fs::write(readme_path, updated)?;
    eprintln!("published bench/RESULTS.md, bench/results/ and the README's summary");
    Ok(())
}

/// A few lines for the README: the walls a container moved to Lambda usually hits, and what this
/// run (`machine`: its `machine.txt`) measured for edgerail at each.
fn summary(dir: &Path, machine: &str) -> String {
    let date = machine.lines().find_map(|l| l.strip_prefix("- date: ")).unwrap_or_default();
    let mut rows = Vec::new();
    if let Some(cold) = load(dir, "coldstart.json") {
        rows.push(format!(
            "| cold start | 9.2 s billed init with a container image, 2.4 s with a zip and a Node adapter | {} ms from exec to the first answer in Lambda mode (p50), {} ms to a first PostgreSQL read through a pooler |",
            f(&cold["lambda_mode"]["p50_ms"]),
            f(&cold["pooled_route"]["p50_ms"])
        ));
    }
    if let Some(c) = load(dir, "connections-pgbouncer-200.json") {
        rows.push(format!(
            "| connections | 80+ concurrent functions exhaust a small PostgreSQL | {} simulated instances through PgBouncer to `max_connections = 50`: {} server connections at peak, {} errors |",
            c["instances"], c["peak_server_connections"], c["errors"]
        ));
    }
    if let Some(lambda) = load(dir, "lambda.json") {
        rows.push(format!(
            "| a read | every request reaches the database | a cached hit: {} ms of handler time (p50); a miss {} ms |",
            f(&lambda["hit"]["p50_ms"]),
            f(&lambda["miss"]["p50_ms"])
        ));
    }
    if let Some(off) = load(dir, "offload.json") {
        rows.push(format!(
            "| the origin | each edge miss is a function invocation | {:.2}% of viewer requests reached the origin through the edge, with writes and invalidations |",
            off["origin_share"].as_f64().unwrap_or(0.0) * 100.0
        ));
    }
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "| wall | the usual container-to-Lambda path | edgerail, measured by `bench/run.sh` ({date}) |\n|---|---|---|\n{}\n",
        rows.join("\n")
    )
}

/// The soak: reads checked per layer, violations, staleness, answers, the fleet and the database.
fn soak_section(md: &mut String, soak: &Value) {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let _ = writeln!(
        md,
        "## Soak: a Lambda-shaped fleet under faults, every read checked ({:.0} s, seed {}, {})\n\n\
         Bounds: **{} s** for what an instance answers (`CHANGE_MAX_LAG`), **{} s** at the edge \
         (a period and two ticks of the warmer on its schedule, the purge's propagation, {} s here, and {}). \
         {} sightings (`--scale {}`). {} reads ({:.0}/s), {} writes \
         ({} of unknown outcome, after a fault).\n\n![soak: staleness over time against the fault windows](soak.svg)\n",
        soak["duration_s"].as_f64().unwrap_or(0.0),
        soak["seed"],
        soak["date"].as_str().unwrap_or(""),
        f(&soak["bounds_s"]["instance"]),
        f(&soak["bounds_s"]["edge"]),
        f(&soak["edge_caches"]["propagation_s"]),
        if soak["edge_caches"]["shield"].as_bool() == Some(true) {
            "behind a shield one repair: another propagation"
        } else {
            "no shield"
        },
        soak["settings"]["sightings"],
        soak["settings"]["scale"],
        soak["reads"],
        soak["reads_per_s"].as_f64().unwrap_or(0.0),
        soak["writes"],
        soak["writes_unknown_outcome"],
    );
    let _ = writeln!(
        md,
        "| layer | reads | checked | violations | excused by an outage | served stale (db down) | staleness p50 / p99 / max ms | answers by status | latency p50 / p99 ms |\n|---|---:|---:|---:|---:|---:|---|---|---|"
    );
    for layer in ["edge", "instance"] {
        let l = &soak["layers"][layer];
        let statuses = l["by_status"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let lat = &soak["latency_ms"][layer];
        let _ = writeln!(
            md,
            "| {layer} | {} | {} | {} | {} | {} | {} / {} / {} | {statuses} | {} / {} |",
            l["reads"],
            l["judged"],
            l["violations"],
            l["excused_by_outage"],
            l["stale_answers"],
            f(&l["staleness_ms"]["p50"]),
            f(&l["staleness_ms"]["p99"]),
            f(&l["staleness_ms"]["max"]),
            f(&lat["p50"]),
            f(&lat["p99"]),
        );
    }
    let fleet = &soak["fleet"];
    let conns = &soak["connections"];
    let deploy = &soak["latency_ms"]["edge_after_deploy"];
    let faults = soak["fault_counts"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    let harness: Vec<&str> =
        soak["harness_errors"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !harness.is_empty() {
        let _ = writeln!(
            md,
            "\n- ✗ **the harness failed** (a fault it could not provoke or end), so this run's verdict says nothing \
             about the product: {}",
            harness.join("; ")
        );
    }
    let _ = writeln!(
        md,
        "\n- {} failures: {}\n- faults: {faults}\n- fleet: {} invocations, {} cold starts, peak {} instances (reserved {}), {} `429`s, \
         {} retired ({} killed after the 500 ms window, {} left connections open)\n- database connections, peak: {} direct \
         (cap {}), {} PgBouncer server (cap {}), {} warmer{}, {} in all; most held by one instance: {}\n- edge latency in the \
         10 s after a deploy: p50 {} ms, p99 {} ms ({} reads)\n- warmer: {} invocations ({} started two at once, {}{} killed by \
         faults, {} at their timeout), {} ticks ({} failed, {} found the lease held), tick p50 {} ms, max {} ms (allowance {} ms)\n",
        mark(n(&soak["failures"]) == 0 && harness.is_empty()),
        if n(&soak["failures"]) == 0 { "none".to_owned() } else { soak["failures_by_kind"].to_string() },
        fleet["invocations"],
        fleet["cold_starts"],
        fleet["peak_instances"],
        soak["settings"]["reserved_concurrency"],
        fleet["throttles"],
        fleet["retired"],
        fleet["killed_after_shutdown_window"],
        fleet["lingering_connections"],
        conns["peak_direct"],
        conns["direct_cap"],
        conns["peak_pooled"],
        conns["pooled_cap"],
        conns["peak_warmer"],
        // Runs from before the warmer had a cap report none.
        conns["warmer_cap"].as_u64().map(|cap| format!(" (cap {cap})")).unwrap_or_default(),
        conns["peak_total"],
        conns["peak_per_instance"],
        f(&deploy["p50"]),
        f(&deploy["p99"]),
        deploy["n"],
        soak["warmer"]["invocations"],
        soak["warmer"]["overlapping_starts"],
        soak["warmer"]["throttled"].as_u64().map(|n| format!("{n} throttled, ")).unwrap_or_default(),
        soak["warmer"]["killed_by_faults"],
        soak["warmer"]["killed_at_timeout"],
        soak["warmer"]["ticks"],
        soak["warmer"]["failed_ticks"],
        soak["warmer"]["lease_held"],
        f(&soak["warmer"]["tick_ms"]["p50"]),
        f(&soak["warmer"]["tick_ms"]["max"]),
        soak["warmer"]["tick_allowance_ms"],
    );
    for failure in soak["first_failures"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "  - {failure}");
    }
    // The long run's goals: no failure, in enough checked reads at both layers, for fifteen
    // minutes on ten times the demo data.
    let (edge, instance) = (n(&soak["layers"]["edge"]["judged"]), n(&soak["layers"]["instance"]["judged"]));
    let long = soak["duration_s"].as_f64().unwrap_or(0.0) >= 900.0 && n(&soak["settings"]["sightings"]) >= 1_000_000;
    let _ = writeln!(
        md,
        "- {} the long run's goals: no failure in at least 2,000,000 checked reads at the edge ({edge}) and \
         1,000,000 at instances ({instance}), over fifteen minutes on a million sightings or more ({})",
        mark(harness.is_empty() && n(&soak["failures"]) == 0 && edge >= 2_000_000 && instance >= 1_000_000 && long),
        if long { "it ran so" } else { "it did not" },
    );
    let checks = &soak["warmer_checks"];
    if checks.is_object() {
        let edge = &soak["layers"]["edge"]["staleness_ms"];
        let _ = writeln!(
            md,
            "- the warmer's own check, reading back through the first edge cache what each invalidation emptied: \
             {} pages showed their changes, {} were stale after the invalidation completed ({} repaired by a second one, \
             {} stale still), {} could not say; freshness it measured (from each change's {}): median of the ticks' \
             medians {} s, largest {} s. The checker, over every read at every edge cache: staleness p50 {} ms, p99 {} ms, \
             max {} ms",
            checks["verified"],
            checks["verified_stale"],
            checks["repaired"],
            checks["repair_failed"],
            checks["verified_unknown"],
            checks["freshness_from"].as_array().and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("commit"),
            f(&checks["freshness_p50_s"]),
            f(&checks["freshness_max_s"]),
            f(&edge["p50"]),
            f(&edge["p99"]),
            f(&edge["max"]),
        );
    }
    let agreement = &soak["warmer_agreement"];
    if agreement.is_object() {
        let judged = n(&agreement["judged"]);
        let _ = writeln!(
            md,
            "- {} the warmer's verdicts against the checker's judgement of the very answers it read: {} of {judged} pages \
             agree ({} it found fresh lacked a write committed before its mark; {} it found stale were copies older than \
             a change the checker does not follow; {} found stale were made after their writes; {} answers could not be \
             decoded)",
            if judged == 0 {
                "✗ (none judged)"
            } else {
                mark(n(&agreement["missed"]) == 0 && n(&agreement["false_alarms"]) == 0)
            },
            agreement["agree"],
            agreement["missed"],
            agreement["stale_unfollowed"],
            agreement["false_alarms"],
            agreement["unreadable"],
        );
        let (warmer, users) = (&agreement["freshness_warmer_s"], &agreement["freshness_users_s"]);
        let _ = writeln!(
            md,
            "- {} freshness, where the warmer and the viewers at its edge cache measure the same write and the edge held \
             the old copy until the warmer's invalidation ({} pages): the warmer's p50 / p99 / max {} / {} / {} s, the \
             users' (commit to the first viewer read with it) {} / {} / {} s, within {} s (a tick, and a propagation and a \
             poll for each purge the warmer waits out); {} pages got the change from an earlier invalidation (the \
             warmer's figure an upper bound there), {} were measured from an earlier write the checker does not follow, \
             {} from a later change (the tick that sent it did not read back); {} read without the change after the \
             warmer found it fresh",
            match agreement["freshness_agrees"].as_bool() {
                Some(agrees) => mark(agrees),
                None => "✗ (nothing compared)",
            },
            agreement["freshness_compared"],
            f(&warmer["p50"]),
            f(&warmer["p99"]),
            f(&warmer["max"]),
            f(&users["p50"]),
            f(&users["p99"]),
            f(&users["max"]),
            f(&agreement["freshness_tolerance_s"]),
            agreement["freshness_brought_earlier"],
            agreement["freshness_from_unfollowed"],
            agreement["freshness_short"],
            agreement["freshness_regressed"],
        );
    }
    let layers = &soak["edge_caches"];
    if layers["shield"].as_bool() == Some(true) {
        let per_edge = layers["per_edge"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        format!(
                            "edge cache {k}: {} reads, {} hits, {} refilled from the shield, {} violations",
                            v["reads"], v["hits"], v["refills_from_shield"], v["violations"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- edge layers (a shield behind the edge caches, each purge reaching each layer within {} s, repeated: {}): \
             {per_edge}; purges taken per layer (edge caches, then the shield): {}",
            f(&layers["propagation_s"]),
            layers["repeat"],
            layers["purges_per_layer"],
        );
    }
    let _ = writeln!(
        md,
        "\n| fault | times | reads checked at the edge / at instances while in force | violations | `503`s | stale answers |\n|---|---:|---|---:|---:|---:|"
    );
    for (kind, row) in soak["by_fault"].as_object().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {kind} | {} | {} / {} | {} | {} | {} |",
            row["times"], row["checked_edge"], row["checked_instance"], row["violations"], row["503"], row["stale"]
        );
    }
}

/// Staleness over time per layer (the worst read of each second), with the fault windows behind.
fn timeline(soak: &Value) -> String {
    let (w, h, pad) = (900.0, 300.0, 40.0);
    let series = soak["staleness_series"].as_array().cloned().unwrap_or_default();
    let end = soak["duration_s"].as_f64().unwrap_or(1.0).max(1.0);
    let top = series
        .iter()
        .flat_map(|p| [p[1].as_f64().unwrap_or(0.0), p[2].as_f64().unwrap_or(0.0)])
        .fold(soak["bounds_s"]["edge"].as_f64().unwrap_or(1.0), f64::max)
        * 1.1;
    let x = |t: f64| pad + (t / end) * (w - 2.0 * pad);
    let y = |s: f64| h - pad - (s / top) * (h - 2.0 * pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{pad}\" y=\"18\" font-size=\"13\">staleness of the worst read each second \
         (blue: edge, orange: instance; grey: faults; dashed: the bounds)</text>"
    );
    for fault in soak["faults"].as_array().into_iter().flatten().filter(|f| f["idle"].as_bool() != Some(true)) {
        let (a, b) = (fault["start"].as_f64().unwrap_or(0.0), fault["end"].as_f64().unwrap_or(0.0));
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{pad}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#ddd\"><title>{}</title></rect>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" transform=\"rotate(-90 {:.1} {:.1})\">{}</text>",
            x(a),
            (x(b) - x(a)).max(1.0),
            h - 2.0 * pad,
            fault["kind"].as_str().unwrap_or(""),
            x(a) + 9.0,
            h - pad - 4.0,
            x(a) + 9.0,
            h - pad - 4.0,
            fault["kind"].as_str().unwrap_or(""),
        );
    }
    for (bound, color) in [("edge", "#3b7dd8"), ("instance", "#e07b20")] {
        let b = soak["bounds_s"][bound].as_f64().unwrap_or(0.0);
        let _ = write!(
            svg,
            "<line x1=\"{pad}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"{color}\" stroke-dasharray=\"4 3\"/>",
            y(b),
            w - pad,
            y(b)
        );
    }
    for (i, color) in [(1, "#3b7dd8"), (2, "#e07b20")] {
        let points: Vec<String> = series
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p[0].as_f64().unwrap_or(0.0)), y(p[i].as_f64().unwrap_or(0.0))))
            .collect();
        let _ = write!(svg, "<polyline fill=\"none\" stroke=\"{color}\" points=\"{}\"/>", points.join(" "));
    }
    let _ = write!(
        svg,
        "<line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/><text x=\"{pad}\" y=\"{t}\">0 s</text>\
         <text x=\"{r}\" y=\"{t}\" text-anchor=\"end\">{end:.0} s</text><text x=\"4\" y=\"{yt:.1}\">{top:.1} s</text></svg>",
        b = h - pad,
        r = w - pad,
        t = h - pad + 16.0,
        yt = pad + 4.0,
    );
    svg
}

/// The round trips of a cold first request: protocol ones, and the network turns they took.
fn trips_text(v: &Value) -> String {
    format!("{} ({} network turns, authentication included)", v["protocol"], v["network"])
}

/// The Callgrind section: instructions per request of a hit, of bare axum, and of bare axum
/// sending the hit's headers (the floor), by round.
fn instructions(md: &mut String, counted: &Value) {
    let headers: Vec<String> = counted["headers"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(|h| format!("`{h}`")).collect())
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "## Hot path: instructions per request (Callgrind)\n\n\
         Each server runs under Callgrind ({}) and answers {} and then {} requests for `{}` ({} bytes) on \
         one keep-alive connection, in two runs; the difference of the runs' totals over {} is what a \
         request costs, start-up and shutdown cancelled out. User space only: the kernel's share of a \
         socket is the same for every server and is not counted. The floor is bare axum sending, as \
         fixed values, the headers every hit carries by contract ({}).\n",
        counted["valgrind"].as_str().unwrap_or("valgrind"),
        counted["requests"],
        counted["requests"].as_u64().unwrap_or(0) * 2,
        counted["route"].as_str().unwrap_or(""),
        counted["body_bytes"],
        counted["requests"],
        headers.join(", "),
    );
    let _ = writeln!(
        md,
        "| round | edgerail, cached hit | bare axum, same route and bytes | bare axum with the hit's headers | hit / bare | floor / bare | hit / floor |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    let rounds = counted["rounds"].as_array().cloned().unwrap_or_default();
    let mut ratios = Vec::new();
    let mut floors = Vec::new();
    for (i, round) in rounds.iter().enumerate() {
        let per = &round["instructions_per_request"];
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {}× | {}× | {}× |",
            i + 1,
            f(&per["cached"]),
            f(&per["ceiling"]),
            f(&per["ceiling_with_headers"]),
            f(&round["ratio"]),
            f(&round["floor_ratio"]),
            f(&round["ratio_over_floor"])
        );
        ratios.extend(round["ratio"].as_f64());
        floors.extend(round["floor_ratio"].as_f64());
    }
    let worst = ratios.iter().copied().fold(f64::NAN, f64::max);
    let best = ratios.iter().copied().fold(f64::NAN, f64::min);
    let floor = floors.iter().copied().fold(f64::NAN, f64::min);
    let _ = writeln!(
        md,
        "\n- {} instructions per request, cached / bare axum: **{worst:.3}×** in the worse round (goal ≤ 1.25×); \
         the headers alone, written by bare axum, already cost **{floor:.3}×**\n\
         - {} the rounds' ratios differ by **{:.2}%** (goal: within 2%)\n",
        mark(worst <= 1.25),
        mark(ratios.len() >= 2 && (worst - best) / best <= 0.02),
        (worst - best) / best * 100.0,
    );
}

/// Every route's miss at the seeded volume, from the api's own database time (`bench reads`), and
/// a hit's instructions there against the demo data's.
fn reads_section(md: &mut String, r: &Value, demo: Option<&Value>, scale: Option<&Value>) {
    let _ = writeln!(
        md,
        "## Reads at scale ({} sightings, {} operations; in-process cache off)\n\n\
         Each case {} times in a row on a warm connection. `db` is the api's own `Server-Timing` (the database \
         conversation, the answer's JSON included); `total` is the client's whole request.\n\n\
         | route | case | status | db p50 ms | db p99 ms | db max ms | total p99 ms | goal p99 ≤ 20 ms |\n\
         |---|---|---:|---:|---:|---:|---:|---|",
        r["sightings"], r["operations"], r["requests"]
    );
    for c in r["cases"].as_array().into_iter().flatten() {
        let p99 = c["db_p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c["route"].as_str().unwrap_or(""),
            c["case"].as_str().unwrap_or(""),
            c["status"],
            f(&c["db_p50_ms"]),
            f(&c["db_p99_ms"]),
            f(&c["db_max_ms"]),
            f(&c["total_p99_ms"]),
            mark(p99 <= 20.0)
        );
    }
    let _ = writeln!(md);
    // A hit's instructions per request: the mean over the rounds of each run.
    let hit = |v: &Value| {
        let rounds = v["rounds"].as_array().cloned().unwrap_or_default();
        let counts: Vec<f64> = rounds.iter().filter_map(|r| r["instructions_per_request"]["cached"].as_f64()).collect();
        (!counts.is_empty()).then(|| counts.iter().sum::<f64>() / counts.len() as f64)
    };
    let route = scale.and_then(|s| s["route"].as_str()).unwrap_or_default().to_owned();
    if let (Some(demo), Some(scale)) = (demo.and_then(hit), scale.and_then(hit)) {
        let change = scale / demo - 1.0;
        let _ = writeln!(
            md,
            "- {} a cached hit of `{route}` costs {scale:.0} instructions per request on this data and {demo:.0} on the demo data \
             (Callgrind, as above): **{:+.2}%** (goal: within 5%)\n",
            mark(change.abs() <= 0.05),
            change * 100.0,
        );
    }
}

/// The system's own tables at a busy site's write rate, with the warmer ticking (`bench busy`).
fn busy_section(md: &mut String, b: &Value) {
    let _ = writeln!(
        md,
        "## The system's own tables at a busy site's rate ({} sightings)\n\n\
         {} sightings inserted at {} a second ({} achieved) for {:.0} s, each its own transaction ({} failed; p50 {} ms, p99 {} ms), \
         while {} viewer requests went through the local edge to an api following the change feed, and the warmer ran \
         every {} s with `WARMER_RETENTION={}s` (minutes, so that the levelling shows in the run) and \
         `WARM_LEARNED_MAX={}` (below the workload's distinct URLs). Sizes are the table's and its indexes' bytes, \
         the largest seen in a window of one retention and one tick (the prunes make them swing) ending at the \
         run's middle and at its end.\n\n\
         | table | rows, middle | rows, end | bytes, middle | bytes, end | growth | levels off |\n\
         |---|---:|---:|---:|---:|---:|---|",
        b["sightings"],
        b["written"],
        f(&b["rate"]),
        f(&b["writes_per_s"]),
        b["duration_s"].as_f64().unwrap_or(0.0),
        b["write_failures"],
        f(&b["write_ms"]["p50"]),
        f(&b["write_ms"]["p99"]),
        b["viewer_requests"],
        f(&b["tick_every_s"]),
        b["retention_s"],
        b["learned_max"],
    );
    for (name, t) in b["tables"].as_object().into_iter().flatten() {
        let growth = t["growth"].as_f64().unwrap_or(f64::INFINITY);
        // The record of invalidations is bounded by the calendar (this month and the last), not by
        // the run: one row per batch sent.
        let verdict = if name == "cache_invalidations" {
            "by the month: one row a batch".to_owned()
        } else {
            format!("{} ≤ 10%", mark(growth <= 0.10))
        };
        let _ = writeln!(
            md,
            "| `{name}` | {} | {} | {} | {} | {:+.1}% | {verdict} |",
            t["rows_middle"],
            t["rows_end"],
            t["bytes_middle"],
            t["bytes_end"],
            growth * 100.0
        );
    }
    let _ = writeln!(
        md,
        "\nWhat reading and bounding the outbox cost, from `pg_stat_statements`, per call in each half of the run \
         (blocks: shared buffers hit or read):\n\n\
         | statement | first half: calls | rows | blocks | ms | second half: calls | rows | blocks | ms |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let halves = b["halves"].as_array().cloned().unwrap_or_default();
    if let [first, second] = halves.as_slice() {
        for (kind, a) in first["statements"].as_object().into_iter().flatten() {
            let z = &second["statements"][kind];
            let _ = writeln!(
                md,
                "| {kind} | {} | {} | {} | {} | {} | {} | {} | {} |",
                a["calls"],
                f(&a["rows_per_call"]),
                f(&a["blocks_per_call"]),
                f(&a["ms_per_call"]),
                z["calls"],
                f(&z["rows_per_call"]),
                f(&z["blocks_per_call"]),
                f(&z["ms_per_call"]),
            );
        }
        // What a poll reads shows in the buffers it touches: fewer than one per new change (a
        // page holds dozens of rows), where reading the retained rows would touch the table's
        // hundreds of pages. The ten cover the index's upper pages and an idle poll.
        let new_only = halves.iter().all(|h| {
            let blocks = h["statements"]["poll"]["blocks_per_call"].as_f64().unwrap_or(f64::INFINITY);
            h["statements"]["poll"]["calls"].as_u64().unwrap_or(0) > 0
                && blocks <= h["changes_per_poll"].as_f64().unwrap_or(0.0) + 10.0
        });
        let _ = writeln!(
            md,
            "\n- {} polls read only what is new: {} and {} buffers per poll in the two halves, while {} and {} changes \
             were recorded per poll (a poll returned {} and {} rows)",
            mark(new_only),
            f(&first["statements"]["poll"]["blocks_per_call"]),
            f(&second["statements"]["poll"]["blocks_per_call"]),
            f(&first["changes_per_poll"]),
            f(&second["changes_per_poll"]),
            f(&first["statements"]["poll"]["rows_per_call"]),
            f(&second["statements"]["poll"]["rows_per_call"]),
        );
    }
    let ticks = b["ticks"].as_array().cloned().unwrap_or_default();
    let settle = b["settle_s"].as_f64().unwrap_or(0.0);
    // A tick without its summary (the warmer failed to start or run) or with an error failed.
    let failed = ticks.iter().filter(|t| t["summary"].as_bool() != Some(true) || !t["error"].is_null()).count();
    // Nothing pending has no oldest change.
    let drained = ticks.iter().all(|t| {
        let oldest = match t["oldest_pending_age_s"].as_f64() {
            Some(age) => age,
            None if t["pending"].as_i64() == Some(0) => 0.0,
            None => f64::INFINITY,
        };
        oldest <= settle + t["duration_ms"].as_f64().unwrap_or(0.0) / 1e3 + 2.0
    });
    let worst = ticks.iter().filter_map(|t| t["oldest_pending_age_s"].as_f64()).fold(0.0, f64::max);
    let claimed: Vec<String> = ticks.iter().map(|t| t["changes"].to_string()).collect();
    let _ = writeln!(
        md,
        "- {} the backlog drains every tick: {} ticks, {failed} failed; the oldest change left pending after a tick \
         was {worst:.1} s old (the settle time is {settle} s); changes claimed per tick: {}\n",
        mark(drained && failed == 0 && !ticks.is_empty()),
        ticks.len(),
        claimed.join(", "),
    );
}

/// Each of the system's tables over the busy run: its bytes (table and indexes), one panel each.
fn tables_plot(b: &Value) -> String {
    let (w, panel, pad) = (760.0, 120.0, 40.0);
    let tables = b["tables"].as_object().cloned().unwrap_or_default();
    let h = 30.0 + panel * tables.len() as f64;
    let end = b["duration_s"].as_f64().unwrap_or(1.0).max(1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"{pad}\" y=\"18\" font-size=\"13\">the system's tables \
         over the run: table and index kB (0 to {end:.0} s)</text>"
    );
    for (i, (name, t)) in tables.iter().enumerate() {
        let series = t["series"].as_array().cloned().unwrap_or_default();
        let kb = |p: &Value| (p[2].as_f64().unwrap_or(0.0) + p[3].as_f64().unwrap_or(0.0)) / 1024.0;
        let top = series.iter().map(kb).fold(1.0, f64::max) * 1.1;
        let base = 30.0 + panel * (i as f64 + 1.0) - 20.0;
        let x = |s: f64| pad + (s / end) * (w - 2.0 * pad);
        let y = |v: f64| base - (v / top) * (panel - 40.0);
        let points: Vec<String> =
            series.iter().map(|p| format!("{:.1},{:.1}", x(p[0].as_f64().unwrap_or(0.0)), y(kb(p)))).collect();
        let _ = write!(
            svg,
            "<text x=\"{pad}\" y=\"{:.1}\">{name} (top {top:.0} kB)</text>\
             <line x1=\"{pad}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" stroke=\"black\"/>\
             <polyline fill=\"none\" stroke=\"#3b7dd8\" points=\"{}\"/>",
            base - panel + 38.0,
            w - pad,
            points.join(" "),
        );
    }
    svg.push_str("</svg>");
    svg
}

/// What the triggers cost the writers, at the seeded volume (`bench writes`).
fn writes_section(md: &mut String, w: &Value) {
    let _ = writeln!(
        md,
        "## Writes at scale ({} sightings, PostgreSQL, synchronous commit, round trip included)\n\n\
         Each write with edgerail's triggers and without them (`DISABLE TRIGGER USER`: the foreign keys stay), in \
         alternating rounds of one run. An import is `TRUNCATE sightings` and a reload in one transaction: its \
         `ACCESS EXCLUSIVE` lock is held from the `TRUNCATE` to the end of the reload, and every reader of the \
         table waits that long.\n\n\
         The floor is the write without the triggers, its statement writing the outbox rows they would record \
         (six for a sighting, two for a formation): what any trigger recording them costs at least. The goal is \
         the ratio, or within 1.1× of the floor where the floor is above it.\n\n\
         | write | with triggers p50 ms | without p50 ms | ratio | floor p50 ms (ratio) | with / floor | goal |\n\
         |---|---:|---:|---:|---:|---:|---|",
        w["sightings"]
    );
    for (key, label, goal) in [
        ("single_insert", "one sighting, own transaction", 1.5),
        ("hot_update", "a hot formation's row, own transaction", 1.5),
    ] {
        let x = &w[key];
        let ratio = x["ratio"].as_f64().unwrap_or(f64::INFINITY);
        let over = x["over_floor"].as_f64().unwrap_or(f64::INFINITY);
        let _ = writeln!(
            md,
            "| {label} | {} | {} | {} | {} ({}) | {} | {} ≤ {goal}× or ≤ 1.1× the floor |",
            f(&x["triggers_p50"]),
            f(&x["bare_p50"]),
            f(&x["ratio"]),
            f(&x["floor_p50"]),
            f(&x["floor_ratio"]),
            f(&x["over_floor"]),
            mark(ratio <= goal || over <= 1.1)
        );
    }
    let bulk = &w["bulk_insert"]["ms"];
    let ratio = bulk["ratio"].as_f64().unwrap_or(f64::INFINITY);
    let _ = writeln!(
        md,
        "| {} sightings, one statement | {} | {} | {} | | | {} ≤ 2× |",
        w["bulk_insert"]["rows"],
        f(&bulk["triggers_p50"]),
        f(&bulk["bare_p50"]),
        f(&bulk["ratio"]),
        mark(ratio <= 2.0)
    );
    let _ = writeln!(
        md,
        "\n| import: `TRUNCATE` and reload of {} rows | `TRUNCATE` ms | lock held s | changes recorded |\n|---|---:|---:|---:|",
        w["import"]["reload_rows"]
    );
    for run in w["import"]["runs"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            run["mode"].as_str().unwrap_or(""),
            f(&run["truncate_ms"]),
            f(&run["lock_held_s"]),
            run["changes_recorded"]
        );
    }
    let added = w["import"]["added_lock_s"].as_f64().unwrap_or(f64::INFINITY);
    let _ = writeln!(
        md,
        "\n- {} the triggers add **{} s** to the import's lock (goal ≤ 2 s; one run each, so the reload's own \
         variation is in the figure)\n",
        mark(added <= 2.0),
        f(&Value::from(added))
    );
}

/// `median (min–max)` of a spread written by the hot-path measurement.
fn spread(v: &Value) -> String {
    format!("{} ({}–{})", f(&v["median"]), f(&v["min"]), f(&v["max"]))
}

/// A goal's verdict, printed beside the figure.
fn mark(met: bool) -> &'static str {
    if met { "✓" } else { "✗" }
}
