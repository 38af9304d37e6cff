//! The in-process response cache: layer 3 of the caching stack, between the edge and the
//! database.
//!
//! Values are finished responses ([`CachedResponse`]) so a hit does no serialization and no
//! database round trip. moka gives per-entry TTLs (through [`Expiry`]), a byte bound and
//! coalescing: concurrent misses for one key wait for a single load.
//!
//! Two moka caches share the same `Arc`ed values: `fresh` holds an entry for the route's local TTL,
//! `stale` for the TTL plus the route's stale-if-error window (counted from the latest load), so
//! an expired copy can still be served (`x-local-cache: stale`) while the database is down. The
//! byte bound is for both together: each has half of it.
//!
//! Freshness across instances comes from the change feed ([`feed`]): at most once per poll
//! interval, and only while requests arrive, an instance reads the changes that became visible and
//! evicts entries carrying their tags from both caches.
//!
//! # Layout
//!
//! - [`response`]: the cached value.
//! - [`feed`]: the change-feed follower and the freshness bound.
//! - [`breaker`]: fail-fast after the database was found unavailable, for the instance or one route.
//! - [`evictions`]: which tags were evicted when, so an answer outlives no eviction of its tags.

mod breaker;
mod evictions;
pub(crate) mod feed;
mod response;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_policy::{is_family, tag_covers};
use moka::Expiry;
use plumbing::error_chain;
use store::{Db, FeedCursor, Position, StoreError};

pub(crate) use breaker::BREAKER_OPEN;
use breaker::{Breaker, RouteBreakers};
use evictions::Evictions;
use feed::{Apply, FEED_LIMIT, FeedSettings, Follower, Polled, Step};
pub(crate) use response::{CachedResponse, Variant};

/// Where an answer came from, for `x-local-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Served from the in-process cache.
    Hit,
    /// Loaded from the database (or shared a concurrent load).
    Miss,
    /// Database failed; an expired copy was served.
    Stale,
}

impl Outcome {
    /// `x-local-cache` value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }

    /// [`Self::as_str`] as a header value, built at compile time.
    pub(crate) fn header_value(self) -> http::HeaderValue {
        match self {
            Self::Hit => const { http::HeaderValue::from_static(Self::Hit.as_str()) },
            Self::Miss => const { http::HeaderValue::from_static(Self::Miss.as_str()) },
            Self::Stale => const { http::HeaderValue::from_static(Self::Stale.as_str()) },
        }
    }
}

/// How much sooner than the freshness bound an answer's data must be for the edge to keep it: the
/// time an answer may take from this instance to the edge's cache (see
/// [`LocalCache::edge_may_keep`]).
pub(crate) const EDGE_MARGIN: Duration = Duration::from_millis(500);

/// What a load returns: the answer, and the feed position its data is at least as new as, when
/// the load was asked to read it ([`Position::Take`]) and could.
pub(crate) type Loaded = (CachedResponse, Option<FeedCursor>);

/// Why a cached lookup produced no response.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LoadError {
    /// The database is unavailable and no stale copy exists.
    #[error("database unavailable")]
    Unavailable,
    /// The load failed for another reason (already logged).
    #[error("internal error")]
    Internal,
}

/// Per-entry lifetimes: the entry's TTL, plus its stale-if-error window in the `stale` cache.
/// A reload replaces the value, and the window restarts from it.
struct TtlExpiry {
    /// Whether this is the `stale` cache.
    stale: bool,
}

impl TtlExpiry {
    fn lifetime(&self, value: &CachedResponse) -> Duration {
        if self.stale { value.ttl + value.stale_for } else { value.ttl }
    }
}

impl Expiry<String, Arc<CachedResponse>> for TtlExpiry {
    fn expire_after_create(&self, _key: &String, value: &Arc<CachedResponse>, _now: Instant) -> Option<Duration> {
        Some(self.lifetime(value))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<CachedResponse>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(value))
    }
}

/// Configuration of the [`LocalCache`].
#[derive(Debug, Clone)]
pub(crate) struct LocalCacheConfig {
    /// Byte bound of the cache; 0 disables in-process caching (every request loads).
    pub(crate) max_bytes: u64,
    /// The change-feed follower's settings.
    pub(crate) feed: FeedSettings,
    /// Client-side bound of one load, so a connection that went silent cannot hold a request
    /// forever (the server-side statement timeout cannot fire on a dead connection).
    pub(crate) load_timeout: Duration,
}

/// The in-process cache plus the change-feed follower that keeps it fresh.
pub(crate) struct LocalCache {
    /// Entries within their local TTL.
    fresh: moka::future::Cache<String, Arc<CachedResponse>>,
    /// The same entries, kept longer for stale-if-error.
    stale: moka::future::Cache<String, Arc<CachedResponse>>,
    /// False when `max_bytes` is 0: a baseline for benchmarks, and an escape hatch.
    enabled: bool,
    /// Follows the change feed.
    feed: Follower,
    /// Which tags were evicted when: an answer is served only while none of its tags was evicted
    /// after its load started, and a load that overlaps an eviction is not kept.
    evictions: Evictions,
    /// Fail-fast after the database was found unreachable: every route.
    breaker: Breaker,
    /// Fail-fast after a route's reads ran out of time: that route.
    route_breakers: RouteBreakers,
    /// Client-side bound of one load.
    load_timeout: Duration,
}

impl std::fmt::Debug for LocalCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCache")
            .field("enabled", &self.enabled)
            .field("entries", &self.fresh.entry_count())
            .field("weighted_bytes", &self.fresh.weighted_size())
            .finish_non_exhaustive()
    }
}

impl LocalCache {
    /// Creates an empty cache.
    ///
    /// `max_bytes` bounds both moka caches together: each gets half. An entry sits in both (one
    /// shared allocation, weighed in each), so what they hold never weighs more than `max_bytes`.
    pub(crate) fn new(config: &LocalCacheConfig) -> Self {
        let build = |stale: bool| {
            moka::future::Cache::builder()
                .max_capacity((config.max_bytes / 2).max(1))
                .weigher(|_k: &String, v: &Arc<CachedResponse>| v.weight())
                .expire_after(TtlExpiry { stale })
                .support_invalidation_closures()
                .build()
        };
        Self {
            fresh: build(false),
            stale: build(true),
            enabled: config.max_bytes > 0,
            feed: Follower::new(config.feed),
            evictions: Evictions::default(),
            breaker: Breaker::new(),
            route_breakers: RouteBreakers::default(),
            load_timeout: config.load_timeout,
        }
    }

    /// Returns the response for `key`, loading it with `load` on a miss.
    ///
    /// `load` returns the response and how long to keep it, and reads the feed's position with its
    /// data when it is given [`Position::Take`]; concurrent callers for one key share a single
    /// call. An entry the change feed cannot vouch for any more is reloaded. When the load
    /// fails because the database is unavailable, an expired copy within its stale-if-error
    /// window is returned instead.
    ///
    /// # Errors
    ///
    /// [`LoadError`] when no response can be produced.
    pub(crate) async fn get_or_load<F, Fut>(
        &self,
        key: &str,
        load: F,
    ) -> Result<(Arc<CachedResponse>, Outcome), LoadError>
    where
        F: FnOnce(Position) -> Fut,
        Fut: Future<Output = Result<Loaded, StoreError>>,
    {
        if !self.enabled {
            return Box::pin(self.load_uncached(key, Position::Skip, load))
                .await
                .map(|(r, _)| (Arc::new(r), Outcome::Miss));
        }
        let requested = Instant::now();
        if let Some(hit) = self.fresh.get(key).await {
            if self.feed.vouches_for(hit.loaded_at, requested) && self.unevicted(&hit) {
                return Ok((hit, Outcome::Hit));
            }
            // Evicted (moka may not have removed it yet), or the feed has not been readable for
            // longer than the freshness bound: reload.
            self.fresh.invalidate(key).await;
        }
        // The miss path's future is large (moka's coalescing, the load, the feed position); boxed,
        // it stays out of every request's future, which the framework moves around by value.
        Box::pin(self.load(key, requested, load)).await
    }

    /// The miss path of [`Self::get_or_load`], for a request that arrived at `requested`.
    async fn load<F, Fut>(
        &self,
        key: &str,
        requested: Instant,
        load: F,
    ) -> Result<(Arc<CachedResponse>, Outcome), LoadError>
    where
        F: FnOnce(Position) -> Fut,
        Fut: Future<Output = Result<Loaded, StoreError>>,
    {
        // Taken by whichever attempt runs the load; moka runs an attempt's load only when it holds
        // no value for the key.
        let load = std::sync::Mutex::new(Some(load));
        let slot = || load.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let take = || slot().take();
        for _ in 0..2 {
            let generation = self.evictions.current();
            let following = self.feed.following();
            let loaded = self
                .fresh
                .try_get_with_by_ref(key, async {
                    let load = take().ok_or(LoadError::Internal)?;
                    let (mut response, covered) = if following || !self.feed.settings.start_with_first_read {
                        (self.load_uncached(key, Position::Skip, load).await?.0, following)
                    } else {
                        // Cold on PostgreSQL: the read also reads the feed position (see `feed`).
                        let started = Instant::now();
                        let (response, start) = self.load_uncached(key, Position::Take, load).await?;
                        (response, start.is_some_and(|cursor| self.feed.adopt(started, cursor)))
                    };
                    response.generation = generation;
                    if !self.unevicted(&response) {
                        // Its data changed while we read: serve it once, and keep it neither as a
                        // fresh entry nor as a stale copy (an older stale copy is evicted too).
                        response.ttl = Duration::ZERO;
                        response.stale_for = Duration::ZERO;
                    } else if !covered && !response.tags.is_empty() {
                        // The feed position was not known when the read started: serve it once,
                        // not as a hit (an answer no change can touch needs no position). It is
                        // as good a stale copy as any, though.
                        response.ttl = Duration::ZERO;
                    }
                    let response = Arc::new(response);
                    self.stale.insert(key.to_owned(), response.clone()).await;
                    Ok::<_, LoadError>(response)
                })
                .await;
            match loaded {
                // moka still held an answer that an eviction covers (its predicate had not reached
                // it yet) and handed it back without loading: drop it and load.
                Ok(held) if !self.unevicted(&held) && slot().is_some() => {
                    self.fresh.invalidate(key).await;
                }
                // A load another request started (coalesced), or an answer moka held: good for
                // this request only if it began no more than the freshness bound before it.
                // Otherwise a change committed long before this request could be missing from it.
                Ok(response) if !self.feed.vouches_for(response.loaded_at, requested) && slot().is_some() => {
                    let load = take().ok_or(LoadError::Internal)?;
                    return self
                        .load_uncached(key, Position::Skip, load)
                        .await
                        .map(|(r, _)| (Arc::new(r), Outcome::Miss));
                }
                Ok(response) => return Ok((response, Outcome::Miss)),
                Err(err) => {
                    return match (&*err, self.stale.get(key).await) {
                        (LoadError::Unavailable, Some(stale)) if self.unevicted(&stale) => Ok((stale, Outcome::Stale)),
                        _ => Err((*err).clone()),
                    };
                }
            }
        }
        // moka kept handing back the evicted answer: load this one without keeping it.
        let load = take().ok_or(LoadError::Internal)?;
        self.load_uncached(key, Position::Skip, load).await.map(|(r, _)| (Arc::new(r), Outcome::Miss))
    }

    /// Whether the edge may keep `response`, answered as `outcome`, for its route's TTL: only an
    /// answer kept here (not one served once) whose data is younger than the freshness bound
    /// less [`EDGE_MARGIN`]. Any change it lacks committed after its load began (or after the poll
    /// that last vouched for it), and the warmer invalidates a change no sooner than its settle
    /// time (at least the freshness bound) after it became visible: so the invalidation comes
    /// after the edge stored this answer, and removes it. An answer whose load took longer (a
    /// lock, a slow network) must not be stored: it could arrive after the invalidation of a
    /// change it lacks, and the edge would keep it for the route's whole edge TTL.
    pub(crate) fn edge_may_keep(&self, response: &CachedResponse, outcome: Outcome) -> bool {
        let bound = self.feed.settings.max_lag.saturating_sub(EDGE_MARGIN);
        let young = |response: &CachedResponse| self.feed.vouches_within(response.loaded_at, Instant::now(), bound);
        match outcome {
            // A hit was found kept and unevicted a moment ago.
            Outcome::Hit => young(response),
            Outcome::Miss => !response.ttl.is_zero() && young(response) && self.unevicted(response),
            Outcome::Stale => false,
        }
    }

    /// Whether no eviction of `response`'s tags came after its load started.
    fn unevicted(&self, response: &CachedResponse) -> bool {
        self.evictions.untouched_since(response.generation, &response.tags)
    }

    /// One load of `key`, bounded in time; its failures are logged naming the resource (the key,
    /// its parts space-separated: route name, parameters, declared query values).
    async fn load_uncached<F, Fut>(&self, key: &str, position: Position, load: F) -> Result<Loaded, LoadError>
    where
        F: FnOnce(Position) -> Fut,
        Fut: Future<Output = Result<Loaded, StoreError>>,
    {
        // The key starts with the route's name.
        let route = key.split('\n').next().unwrap_or(key);
        if self.breaker.is_open() || self.route_breakers.is_open(route) {
            return Err(LoadError::Unavailable);
        }
        let resource = || key.replace('\n', " ");
        let Ok(result) = tokio::time::timeout(self.load_timeout, load(position)).await else {
            // Slow, not unreachable (an unreachable database fails the acquire, or is caught as
            // silent, before this): this route's breaker, not the instance's. A route whose
            // statements are each under the statement timeout can still take longer together.
            self.route_breakers.trip(route);
            tracing::warn!(resource = %resource(), timeout = ?self.load_timeout, "database read timed out");
            return Err(LoadError::Unavailable);
        };
        result.map_err(|err| {
            if err.is_unavailable() {
                // Unreachable: every read fails. Out of time: this route's reads are slow.
                if err.is_unreachable() {
                    self.breaker.trip();
                } else {
                    self.route_breakers.trip(route);
                }
                tracing::warn!(resource = %resource(), error = %error_chain(&err), "database unavailable");
                LoadError::Unavailable
            } else {
                tracing::error!(resource = %resource(), error = %error_chain(&err), "load failed");
                LoadError::Internal
            }
        })
    }

    /// Lets the change-feed follower do its part before a request looks at the cache: start a
    /// poll if one is due, and wait for a poll that is due or has just started for at most the
    /// follower's `poll_wait`.
    ///
    /// Called on the request path so an idle (or frozen Lambda) instance never polls.
    pub(crate) async fn refresh(self: &Arc<Self>, store: &Db) {
        // The database is known to be unreachable: loads fail fast (or serve stale) for now, and a
        // poll would only wait out the same failure.
        if !self.enabled || self.breaker.is_open() {
            return;
        }
        match self.feed.step(Instant::now()) {
            Step::Proceed => {}
            Step::Wait { deadline, seq } => self.feed.wait(seq, deadline).await,
            Step::Start { deadline, seq } => {
                let cache = Arc::clone(self);
                let store = store.clone();
                tokio::spawn(async move { cache.poll(&store).await });
                self.feed.wait(seq, deadline).await;
            }
        }
    }

    /// Failed polls since the last call, and the time since the last successful poll started.
    pub(crate) fn feed_health(&self) -> (u64, Option<Duration>) {
        self.feed.health(Instant::now())
    }

    /// One poll. It needs no time limit of its own: the database bounds its statement, waiting
    /// for a connection is bounded by the pool, and the store takes a connection silent for
    /// longer than the statement's limit for dead. A large page still arriving is not a failure,
    /// and timing it out would trip the breaker while the database is up.
    async fn poll(&self, store: &Db) {
        let started = Instant::now();
        let cursor = self.feed.cursor();
        let read = match &cursor {
            None => store.feed_start().await.map(Polled::Started),
            Some(cursor) => store.feed_since(cursor, FEED_LIMIT).await.map(Polled::Page),
        };
        match read {
            Ok(polled) => {
                match polled.apply() {
                    Apply::Nothing => {}
                    Apply::Evict(tags) => self.evict(tags),
                    Apply::Reset => {
                        if cursor.is_some() {
                            tracing::warn!(
                                limit = FEED_LIMIT,
                                "change feed overflowed (more changes than a page, or some pruned before this \
                                 instance read them): local cache dropped"
                            );
                        }
                        self.evict_all();
                    }
                }
                self.feed.succeeded(started, Instant::now(), &polled);
            }
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "change feed poll failed");
                // An unreachable database (a silent connection among them) fails loads fast too;
                // a locked or slow feed does not (the data tables may be fine).
                if err.is_unreachable() {
                    self.breaker.trip();
                }
                self.feed.failed();
            }
        }
    }

    /// Evicts every entry carrying one of `tags`, or a tag of one of the families among them:
    /// recorded first (which is what keeps them from being served), then removed from moka's
    /// memory.
    fn evict(&self, tags: HashSet<String>) {
        tracing::debug!(count = tags.len(), "evicting changed tags");
        self.evictions.evict(&tags);
        let families: Arc<Vec<String>> = Arc::new(tags.iter().filter(|t| is_family(t)).cloned().collect());
        let tags = Arc::new(tags);
        for cache in [&self.fresh, &self.stale] {
            let (tags, families) = (tags.clone(), families.clone());
            let touched = move |t: &String| tags.contains(t) || families.iter().any(|f| tag_covers(f, t));
            // Only fails when closures are not enabled, which the builder guarantees.
            let _ = cache.invalidate_entries_if(move |_, v| v.tags.iter().any(&touched));
        }
    }

    /// Drops every entry.
    fn evict_all(&self) {
        self.evictions.evict_all();
        self.fresh.invalidate_all();
        self.stale.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use store::FeedCursor;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn following_cache_config() -> LocalCacheConfig {
        LocalCacheConfig {
            max_bytes: 1 << 20,
            feed: FeedSettings {
                poll_interval: Duration::from_secs(3600),
                poll_wait: 50 * MS,
                poll_timeout: Duration::from_secs(1),
                max_lag: Duration::from_secs(3600),
                start_with_first_read: false,
            },
            load_timeout: Duration::from_secs(5),
        }
    }

    /// A cache that follows the feed (as after its first poll), with real short lifetimes: moka
    /// has its own clock, so only real time expires entries.
    fn following_cache() -> LocalCache {
        following(&following_cache_config())
    }

    /// A cache with `config` that follows the feed.
    fn following(config: &LocalCacheConfig) -> LocalCache {
        let cache = LocalCache::new(config);
        let started = Instant::now();
        assert!(matches!(cache.feed.step(started), Step::Start { .. }));
        cache.feed.succeeded(started, started, &Polled::Started(FeedCursor::sqlite_origin()));
        cache
    }

    fn response(body: &'static str) -> CachedResponse {
        CachedResponse::new(
            StatusCode::OK,
            Bytes::from_static(body.as_bytes()),
            (body.to_owned(), HeaderValue::from_static("\"x\"")),
            vec!["lines".into()],
            Duration::ZERO,
            Instant::now(),
        )
        .with_lifetimes(400 * MS, 800 * MS)
    }

    /// An answer with `body`, tagged `lines`, kept for a minute.
    fn answer(body: String) -> CachedResponse {
        CachedResponse::new(
            StatusCode::OK,
            Bytes::from(body.clone()),
            (body, HeaderValue::from_static("\"x\"")),
            vec!["lines".into()],
            Duration::ZERO,
            Instant::now(),
        )
        .with_lifetimes(60_000 * MS, 60_000 * MS)
    }

    /// An answer carrying `version` in its body.
    fn versioned(version: u64) -> CachedResponse {
        answer(version.to_string())
    }

    fn unavailable() -> StoreError {
        StoreError::TimedOut
    }

    #[tokio::test]
    async fn the_stale_if_error_window_counts_from_the_latest_reload() {
        let cache = following_cache();
        let (_, outcome) = cache.get_or_load("k", |_| async { Ok((response("v1"), None)) }).await.unwrap();
        assert_eq!(outcome, Outcome::Miss);
        // Past the local TTL (400 ms): reloaded, which restarts the 800 ms stale window.
        tokio::time::sleep(600 * MS).await;
        let (reloaded, outcome) = cache.get_or_load("k", |_| async { Ok((response("v2"), None)) }).await.unwrap();
        assert_eq!((outcome, &reloaded.body[..]), (Outcome::Miss, &b"v2"[..]));
        // 1.5 s after the first load, 0.9 s after the reload: counted from the first load the
        // window would be over; counted from the reload it runs until 1.8 s.
        tokio::time::sleep(900 * MS).await;
        let (stale, outcome) = cache.get_or_load("k", |_| async { Err(unavailable()) }).await.unwrap();
        assert_eq!((outcome, &stale.body[..]), (Outcome::Stale, &b"v2"[..]));
    }

    #[tokio::test]
    async fn an_eviction_during_a_load_keeps_its_answer_out_of_the_cache() {
        let cache = following_cache();
        let (_, outcome) = cache
            .get_or_load("k", |_| async {
                cache.evict(HashSet::from(["lines".to_owned()]));
                Ok((response("read before the change was evicted"), None))
            })
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Miss);
        let (_, outcome) = cache.get_or_load("k", |_| async { Ok((response("v2"), None)) }).await.unwrap();
        assert_eq!(outcome, Outcome::Miss, "the overlapping load was served once, not kept");
        let (_, outcome) = cache.get_or_load("k", |_| async { Ok((response("v3"), None)) }).await.unwrap();
        assert_eq!(outcome, Outcome::Hit);
    }

    /// Loads racing "write, then evict its tag": once the last eviction and every load are done,
    /// a hit must carry the last version written. A load that read before a write and stored its
    /// answer after that write's eviction must not survive it. The writer evicts without pause
    /// while loads of many keys run, so loads are in flight when its last eviction lands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_load_racing_an_eviction_never_outlives_it() {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        const KEYS: usize = 64;
        for round in 0..40 {
            let cache = Arc::new(following_cache());
            let version = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let mut loaders = Vec::new();
            for _ in 0..6 {
                let (cache, version, stop) = (cache.clone(), version.clone(), stop.clone());
                loaders.push(tokio::spawn(async move {
                    while !stop.load(Ordering::SeqCst) {
                        for key in 0..KEYS {
                            let version = version.clone();
                            // The database read: it sees the version committed when it runs.
                            let load = |_| async move { Ok((versioned(version.load(Ordering::SeqCst)), None)) };
                            let _ = cache.get_or_load(&format!("k{key}"), load).await;
                        }
                        tokio::task::yield_now().await;
                    }
                }));
            }
            for _ in 0..200 {
                version.fetch_add(1, Ordering::SeqCst);
                cache.evict(HashSet::from(["lines".to_owned()]));
                tokio::task::yield_now().await;
            }
            stop.store(true, Ordering::SeqCst);
            for loader in loaders {
                loader.await.unwrap();
            }
            let latest = version.load(Ordering::SeqCst);
            for key in 0..KEYS {
                let load = |_| async move { Ok((versioned(latest), None)) };
                let (answer, outcome) = cache.get_or_load(&format!("k{key}"), load).await.unwrap();
                assert_eq!(
                    std::str::from_utf8(&answer.body).unwrap(),
                    latest.to_string(),
                    "round {round}, k{key}: a {} answer survived the eviction of its tag",
                    outcome.as_str()
                );
            }
        }
    }

    /// An answer tagged `tags`, kept for `ttl` and a minute of stale-if-error.
    fn tagged(body: &'static str, tags: &[&str], ttl: Duration) -> CachedResponse {
        CachedResponse::new(
            StatusCode::OK,
            Bytes::from_static(body.as_bytes()),
            (body.to_owned(), HeaderValue::from_static("\"x\"")),
            tags.iter().map(|t| (*t).to_owned()).collect(),
            Duration::ZERO,
            Instant::now(),
        )
        .with_lifetimes(ttl, Duration::from_secs(60))
    }

    #[tokio::test]
    async fn an_unrelated_eviction_during_a_reload_keeps_the_stale_copy() {
        let cache = following_cache();
        let short = 200 * MS;
        cache.get_or_load("k", |_| async move { Ok((tagged("v1", &["lines"], short), None)) }).await.unwrap();
        tokio::time::sleep(300 * MS).await;
        // The reload overlaps an eviction of another tag: its answer is still good, and kept.
        let (reloaded, _) = cache
            .get_or_load("k", |_| async {
                cache.evict(HashSet::from(["formations".to_owned()]));
                Ok((tagged("v2", &["lines"], short), None))
            })
            .await
            .unwrap();
        assert_eq!(&reloaded.body[..], b"v2");
        tokio::time::sleep(300 * MS).await;
        // The database fails: the reloaded answer is there to be served stale.
        let (stale, outcome) = cache.get_or_load("k", |_| async { Err(unavailable()) }).await.unwrap();
        assert_eq!((outcome, &stale.body[..]), (Outcome::Stale, &b"v2"[..]));
    }

    #[tokio::test]
    async fn the_edge_keeps_only_answers_younger_than_the_bound_less_the_margin() {
        let cache = following(&LocalCacheConfig {
            feed: FeedSettings { max_lag: 1_000 * MS, ..following_cache_config().feed },
            ..following_cache_config()
        });
        let minute = Duration::from_secs(60);
        let (quick, outcome) =
            cache.get_or_load("quick", |_| async move { Ok((tagged("q", &["lines"], minute), None)) }).await.unwrap();
        assert!(cache.edge_may_keep(&quick, outcome), "a quick load");
        // A load that takes longer than the bound less the margin (a lock, a slow network).
        let (slow, outcome) = cache
            .get_or_load("slow", |_| async move {
                let answer = tagged("s", &["lines"], minute);
                tokio::time::sleep(600 * MS).await;
                Ok((answer, None))
            })
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Miss);
        assert!(!cache.edge_may_keep(&slow, outcome), "a slow load is served once by the edge too");
        // A load whose data changed while it read is not kept anywhere.
        let (overlapped, outcome) = cache
            .get_or_load("overlapped", |_| async {
                cache.evict(HashSet::from(["lines".to_owned()]));
                Ok((tagged("o", &["lines"], minute), None))
            })
            .await
            .unwrap();
        assert!(!cache.edge_may_keep(&overlapped, outcome));
        assert!(!cache.edge_may_keep(&quick, Outcome::Stale), "stale answers have their own short TTL");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_joins_a_load_begun_too_long_before_it_reads_afresh() {
        let cache = Arc::new(following(&LocalCacheConfig {
            feed: FeedSettings { max_lag: 300 * MS, ..following_cache_config().feed },
            ..following_cache_config()
        }));
        let minute = Duration::from_secs(60);
        // A load that takes a second, and a request that arrives half a second into it.
        let first = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_load("k", |_| async move {
                        let answer = tagged("old", &["lines"], minute);
                        tokio::time::sleep(1_000 * MS).await;
                        Ok((answer, None))
                    })
                    .await
                    .map(|(r, _)| r.body.clone())
            })
        };
        tokio::time::sleep(500 * MS).await;
        let (joined, _) =
            cache.get_or_load("k", |_| async move { Ok((tagged("new", &["lines"], minute), None)) }).await.unwrap();
        assert_eq!(&joined.body[..], b"new", "the late request got the read it would have joined");
        assert_eq!(&first.await.unwrap().unwrap()[..], b"old");
    }

    #[tokio::test]
    async fn the_byte_bound_holds_for_fresh_and_stale_entries_together() {
        const MAX: u64 = 64 * 1024;
        let cache = following(&LocalCacheConfig { max_bytes: MAX, ..following_cache_config() });
        let body = "x".repeat(1000);
        for i in 0..500 {
            let body = body.clone();
            let _ = cache.get_or_load(&format!("k{i}"), |_| async move { Ok((answer(body), None)) }).await.unwrap();
        }
        cache.fresh.run_pending_tasks().await;
        cache.stale.run_pending_tasks().await;
        let held = cache.fresh.weighted_size() + cache.stale.weighted_size();
        assert!(held <= MAX, "{held} bytes held against a bound of {MAX}");
        assert!(cache.fresh.entry_count() > 0, "the cache still caches");
    }
}
