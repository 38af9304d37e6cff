//! The URLs a reader asks for and the Zipf popularity they are asked with, shared by the
//! measurements that replay a realistic workload.

use chrono::{Days, NaiveDate};

/// Every page of the demo data a reader would ask for, with the operations of each of `dates`.
pub fn urls(dates: &[NaiveDate]) -> Vec<String> {
    let mut urls = vec!["/v1/lines".to_owned(), "/v1/formations".to_owned(), "/v1/sightings/latest".to_owned()];
    for line in ["minato", "sakura", "kawagoe", "tama", "kaigan"] {
        urls.push(format!("/v1/lines/{line}/stations"));
    }
    for (first, count) in [(10701, 30), (3001, 25), (5051, 20), (8101, 15), (2001, 10)] {
        for n in 0..count {
            urls.push(format!("/v1/formations/{}F", first + n));
        }
    }
    for date in dates {
        urls.push(format!("/v1/operations/{date}"));
        for line in ["M", "S", "K", "T", "U"] {
            for k in 1..=60 {
                urls.push(format!("/v1/operations/{date}/{k:02}{line}"));
            }
        }
    }
    urls
}

/// Today's service date (the demo calendar's), and every service day the demo data covers.
pub fn service_days() -> anyhow::Result<(NaiveDate, Vec<NaiveDate>)> {
    let calendar = store::ServiceCalendar::new("Asia/Tokyo", "04:00")?;
    let today = calendar.service_date(chrono::Utc::now());
    let first = today.checked_sub_days(Days::new(store::demo::PAST_DAYS)).unwrap_or(today);
    let days = (0..2 * store::demo::PAST_DAYS).filter_map(|d| first.checked_add_days(Days::new(d))).collect();
    Ok((today, days))
}

/// Zipf(s) over `n` ranks: rank k is asked with weight 1 / k^s.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(s)).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Self { cdf }
    }

    /// A rank in `0..n`.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let x = rng.f64();
        self.cdf.partition_point(|&p| p < x).min(self.cdf.len().saturating_sub(1))
    }
}

/// Where a workload through the local edge runs: the edge, the database the API reads (writes go
/// there too) and the warmer that ticks meanwhile.
#[derive(Debug, Clone, clap::Args)]
pub struct Edge {
    /// Base URL of the edge (Varnish with local/varnish.vcl, which accepts PURGE from loopback).
    #[arg(long)]
    pub edge: String,
    /// Database the API reads (writes go here).
    #[arg(long)]
    pub database_url: String,
    /// The warmer binary.
    #[arg(long)]
    pub warmer: std::path::PathBuf,
}

impl Edge {
    /// One warmer tick with the purge backend against the edge, `settings` added; its summary line
    /// (`null` if it printed none).
    pub async fn tick(&self, settings: &[(&str, String)]) -> serde_json::Value {
        let out = tokio::process::Command::new(&self.warmer)
            .arg("--once")
            .env_clear()
            .env("DATABASE_URL", &self.database_url)
            .env("INVALIDATOR", "purge")
            .env("PURGE_URL", &self.edge)
            .env("WARM_BASE_URL", &self.edge)
            .env("WARMER_SETTLE", "1s")
            .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
            .stderr(std::process::Stdio::null())
            .output()
            .await;
        out.ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().last().and_then(|l| serde_json::from_str(l).ok()))
            .unwrap_or(serde_json::Value::Null)
    }
}
