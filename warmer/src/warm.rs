//! Warming: the warm set, which of its paths are due, and fetching them through the edge with
//! bounded concurrency.
//!
//! The warm set has two parts:
//! - the **floor**: the policy's `warm = true` routes, expanded with every value their
//!   parameters take (ids from the table whose tag the route's tag is, dates as today), warmed
//!   even before anything was learned;
//! - the **learned** paths: what the edge fetched from the origin for viewers, as the API
//!   instances recorded it (`store::learned`), the most fetched first.

use std::collections::HashMap;
use std::time::Duration;

use cache_policy::{ParamKind, Policy};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use store::learned::LearnedPath;
use store::outbox::Warmed;
use store::{Db, ServiceCalendar, StoreError};

/// A path of the warm set and the edge TTL of its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmPath {
    /// The URL path (and query, for a learned path that has one).
    pub path: String,
    /// How long the edge keeps it: it need not be fetched more often than this.
    pub edge_ttl: Duration,
}

/// Expands the floor of the warm set, at most `max` paths: parameterless routes first, then each
/// route's paths with every combination of its parameters' values.
///
/// # Errors
///
/// Reading ids from the store failed.
pub async fn warm_set(
    policy: &Policy,
    db: &Db,
    calendar: &ServiceCalendar,
    now: DateTime<Utc>,
    max: usize,
) -> Result<Vec<WarmPath>, StoreError> {
    let today = calendar.service_date(now).to_string();
    let mut fixed = Vec::new();
    let mut expanded = Vec::new();
    let mut ids: HashMap<(String, String), Vec<String>> = HashMap::new();
    for route in policy.routes().iter().filter(|r| r.warm) {
        let params: Vec<&str> = route.path.params().collect();
        if params.is_empty() {
            fixed.push(WarmPath { path: route.path.as_str().to_owned(), edge_ttl: route.edge_ttl });
            continue;
        }
        // Each parameter's values, then every combination of them.
        let mut combinations: Vec<Vec<String>> = vec![Vec::new()];
        for param in &params {
            let values = match route.param_kind(param) {
                Some(ParamKind::Date) => vec![today.clone()],
                Some(ParamKind::DateOrToday) => vec![today.clone(), "today".to_owned()],
                Some(ParamKind::Id) => match policy.value_source(route, param) {
                    Some((table, column)) => {
                        let key = (table.name.clone(), column.to_owned());
                        if !ids.contains_key(&key) {
                            let values = db.column_values(table, column).await?;
                            ids.insert(key.clone(), values);
                        }
                        ids.get(&key).cloned().unwrap_or_default()
                    }
                    None => {
                        tracing::warn!(route = %route.name, param, "no table's tag names this warm route's parameter");
                        Vec::new()
                    }
                },
                None => Vec::new(),
            };
            combinations = combinations
                .into_iter()
                .flat_map(|prefix| {
                    values.iter().map(move |v| {
                        let mut next = prefix.clone();
                        next.push(v.clone());
                        next
                    })
                })
                .take(max)
                .collect();
        }
        for values in combinations {
            let lookup = |name: &str| params.iter().position(|p| *p == name).map(|i| values[i].as_str());
            if let Some(path) = route.path.render(lookup) {
                expanded.push(WarmPath { path, edge_ttl: route.edge_ttl });
            }
        }
    }
    fixed.extend(expanded);
    fixed.truncate(max);
    Ok(fixed)
}

/// A learned path, with its route's edge TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The path, as the warm set fetches it.
    pub warm: WarmPath,
    /// What the API instances counted.
    pub seen: LearnedPath,
}

/// The `max` most fetched learned paths that belong to a route of the policy (a path of a route
/// since removed is ignored), most fetched first.
///
/// # Errors
///
/// The database failed.
pub async fn learned_set(policy: &Policy, db: &Db, max: usize) -> Result<Vec<Learned>, StoreError> {
    let rows = db.learned_top(max).await?;
    Ok(rows
        .into_iter()
        .filter_map(|seen| {
            let path = seen.path.split_once('?').map_or(seen.path.as_str(), |(p, _)| p);
            let (route, _) = policy.match_path(path)?;
            Some(Learned { warm: WarmPath { path: seen.path.clone(), edge_ttl: route.edge_ttl }, seen })
        })
        .collect())
}

/// One warm request's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fetched {
    /// The path.
    pub path: String,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    /// The edge's `X-Cache` header (`Hit`/`Miss`, `Hit from cloudfront`, …).
    pub x_cache: Option<String>,
    /// How long before the request the edge fetched its copy from the origin (its `Age`; none
    /// on a copy fetched for this request).
    #[serde(rename = "age_s", serialize_with = "seconds")]
    pub age: Option<Duration>,
    /// When the request was sent.
    pub at: DateTime<Utc>,
    /// The answer's `x-edgerail-version`: which data it shows.
    pub version: Option<String>,
    /// The origin's `x-local-cache`, passed on by the edge (`stale`: a copy the API served
    /// because its database failed).
    pub local_cache: Option<String>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// A duration as seconds, for JSON.
fn seconds<S: serde::Serializer>(value: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&value.map(|d| d.as_secs_f64()), serializer)
}

impl Fetched {
    /// A 2xx/3xx/4xx answer warmed the edge (a 404 is cached negatively, which is fine).
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s < 500)
    }

    /// Whether the edge already had it.
    pub fn hit(&self) -> bool {
        self.x_cache.as_deref().is_some_and(|x| x.to_ascii_lowercase().starts_with("hit"))
    }
}

/// What the warm requests that were answered found, as the warm state records it: when the edge
/// fetched each from the origin (the request's time less the copy's `Age`). A hit is not a fetch:
/// it does not make the edge's copy live any longer.
pub fn answered(fetched: &[Fetched]) -> Vec<Warmed> {
    fetched
        .iter()
        .filter(|f| f.ok())
        .map(|f| Warmed {
            path: f.path.clone(),
            status: f.status.unwrap_or_default(),
            x_cache: f.x_cache.clone(),
            fetched_at: f.at - chrono::Duration::from_std(f.age.unwrap_or_default()).unwrap_or_default(),
            verified: None,
        })
        .collect()
}

/// What answers at `base`, as `/health-check` (never cached at the edge) reports it: the build id,
/// and the hash of the settings that shape answers when the API reports one (`build+settings`).
/// A change of either means the edge may hold answers the API no longer gives. `None` when it
/// cannot be read (then nothing is decided this tick).
pub async fn build_id(client: &reqwest::Client, base: &str) -> Option<String> {
    let url = format!("{}/health-check", base.trim_end_matches('/'));
    let response = match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => response,
        Ok(response) => {
            tracing::warn!(status = %response.status(), "the API's health check failed: build unknown");
            return None;
        }
        Err(err) => {
            tracing::warn!(error = %plumbing::error_chain(&err), "the API's health check failed: build unknown");
            return None;
        }
    };
    let body: serde_json::Value = response.json().await.ok()?;
    let build = body["build"].as_str().filter(|b| !b.is_empty())?;
    Some(match body["settings"].as_str().filter(|s| !s.is_empty()) {
        Some(settings) => format!("{build}+{settings}"),
        None => build.to_owned(),
    })
}

/// GETs every path through `base`, `concurrency` at a time, each bounded by the client's timeout.
/// Failures are reported per path; one failing path does not stop the others.
pub async fn fetch_all(client: &reqwest::Client, base: &str, paths: &[WarmPath], concurrency: usize) -> Vec<Fetched> {
    let base = base.trim_end_matches('/');
    futures_util::stream::iter(paths.iter().map(|p| async move {
        // Browsers ask for compressed answers, and the edge keys on the normalized encoding.
        let request = client.get(format!("{base}{}", p.path)).header("accept-encoding", "br, gzip");
        let at = Utc::now();
        // The client marks it (WARM_SECRET), so the API does not count it among what viewers
        // made the edge fetch.
        match request.send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let x_cache = header("x-cache");
                let age = header("age").and_then(|a| a.trim().parse::<u64>().ok()).map(Duration::from_secs);
                let version = header(cache_policy::VERSION_HEADER);
                let local_cache = header("x-local-cache");
                // Read the body so the edge finishes storing it.
                let error = res.bytes().await.err().map(|e| e.to_string());
                Fetched { path: p.path.clone(), status: Some(status), x_cache, age, at, version, local_cache, error }
            }
            Err(e) => Fetched {
                path: p.path.clone(),
                status: None,
                x_cache: None,
                age: None,
                at,
                version: None,
                local_cache: None,
                error: Some(e.to_string()),
            },
        }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await
}
