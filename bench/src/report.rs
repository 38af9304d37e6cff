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
    let (w, row) = (640.0, 28.0);
    let h = 40.0 + row * items.len() as f64;
    let top = items.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/><text x=\"10\" y=\"20\" font-size=\"14\">{title}</text>"
    );
    for (i, (label, v)) in items.iter().enumerate() {
        let y = 32.0 + i as f64 * row;
        let bw = (v / top) * (w - 260.0);
        let _ = write!(
            svg,
            "<text x=\"10\" y=\"{:.1}\">{label}</text><rect x=\"200\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"18\" fill=\"#3b7dd8\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{v:.0}</text>",
            y + 13.0,
            205.0 + bw,
            y + 13.0
        );
    }
    svg.push_str("</svg>");
    svg
}

pub fn run(dir: &Path) -> anyhow::Result<()> {
    let mut md = String::new();
    let machine = std::fs::read_to_string(dir.join("machine.txt")).unwrap_or_default();
    let _ = writeln!(
        md,
        "# edgerail benchmarks\n\n{machine}\nEvery figure is measured in this one run, on this machine; ratios compare runs made minutes apart.\n"
    );

    if let Some(hot) = load(dir, "hotpath.json") {
        let _ = writeln!(md, "## Hot path (wrk on loopback)\n");
        let _ = writeln!(md, "| target | requests/s | p50 ms | p99 ms |\n|---|---:|---:|---:|");
        for key in ["cached", "uncached", "ceiling"] {
            let r = &hot[key];
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                r["label"].as_str().unwrap_or(key),
                f(&r["rps"]),
                f(&r["p50_ms"]),
                f(&r["p99_ms"])
            );
        }
        let ratio =
            |a: &str, b: &str| hot[a]["rps"].as_f64().unwrap_or(0.0) / hot[b]["rps"].as_f64().unwrap_or(1.0).max(1e-9);
        let (ceiling, uncached) = (ratio("cached", "ceiling"), ratio("cached", "uncached"));
        let _ = writeln!(
            md,
            "\n- {} cached / framework ceiling: **{ceiling:.2}×** (goal ≥ 0.8×)\n- {} cached / uncached: **{uncached:.1}×** (goal ≥ 20×)\n",
            mark(ceiling >= 0.8),
            mark(uncached >= 20.0),
        );
        std::fs::write(
            dir.join("hotpath.svg"),
            bars(
                "Hot path, requests/s",
                &[
                    ("cached", hot["cached"]["rps"].as_f64().unwrap_or(0.0)),
                    ("uncached", hot["uncached"]["rps"].as_f64().unwrap_or(0.0)),
                    ("bare axum ceiling", hot["ceiling"]["rps"].as_f64().unwrap_or(0.0)),
                ],
            ),
        )?;
        let _ = writeln!(md, "![hot path](hotpath.svg)\n");
    }

    if let Some(cold) = load(dir, "coldstart.json") {
        let _ = writeln!(md, "## Cold start\n");
        let _ = writeln!(md, "| start | runs | p50 ms | p90 ms | max ms |\n|---|---:|---:|---:|---:|");
        for (key, label) in [
            ("health_check", "exec → first 200 /health-check"),
            ("database_route", "exec → first 200 /v1/formations (SQLite)"),
            ("lambda_mode", "Lambda mode: exec → first response posted"),
        ] {
            let r = &cold[key];
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
            "\nPeak RSS: {} KiB. {} exec → first 200 of a database route, p50: {} ms (goal under 10 ms).\n",
            cold["peak_rss_kib_max"],
            mark(first < 10.0),
            f(&cold["database_route"]["p50_ms"])
        );
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
            "## Size (release, {})\n\n| binary | bytes | zipped |\n|---|---:|---:|",
            size["target"].as_str().unwrap_or("")
        );
        for b in size["binaries"].as_array().into_iter().flatten() {
            let _ = writeln!(md, "| {} | {} | {} |", b["name"].as_str().unwrap_or(""), b["bytes"], b["zipped"]);
        }
        let _ = writeln!(md);
    }
    std::fs::write(dir.join("report.md"), &md)?;
    print!("{md}");
    Ok(())
}

/// A goal's verdict, printed beside the figure.
fn mark(met: bool) -> &'static str {
    if met { "✓" } else { "✗" }
}
