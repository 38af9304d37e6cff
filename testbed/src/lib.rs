//! The local stand-ins for production that edgerail's benchmarks and its soak share, so each is
//! written once: a Lambda Runtime API ([`runtime`]), the local edge ([`edge`]), the demo data's
//! URLs and their popularity ([`workload`]), and small helpers (free ports, percentiles, JSON
//! results, durations as the binaries spell them).

pub mod edge;
pub mod runtime;
pub mod workload;

/// A duration argument (`500ms`, `2s`, `10m`), as the binaries spell them (the binaries' own parser).
pub use plumbing::settings::parse_duration;

/// A loopback address no one listens on now, for a server about to start.
///
/// # Errors
///
/// No port could be bound.
pub fn free_addr() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Percentile of a sorted slice (nearest rank); NaN for an empty one.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Writes a JSON result.
///
/// # Errors
///
/// The file cannot be written.
pub fn write_json(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    Ok(())
}
