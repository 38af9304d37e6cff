//! The in-process response cache (SPEC §5, layer 3).
//!
//! Values are finished responses — body bytes, strong ETag, tags — so a hit does no serialization
//! and no database round trip. moka gives per-entry TTLs (through [`Expiry`]), a byte bound and
//! coalescing: concurrent misses for one key wait for a single load.
//!
//! Two moka caches share the same `Arc`ed values: `fresh` holds an entry for the route's local TTL,
//! `stale` for the TTL plus the route's stale-if-error window, so an expired copy can still be served
//! (`x-local-cache: stale`) while the database is down.
//!
//! Freshness across instances comes from the change feed: at most once per poll interval, and only
//! while requests arrive, an instance reads new `cache_changes` rows and evicts entries carrying
//! their tags from both caches.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use moka::Expiry;

use crate::store::{Change, Store, StoreError};

/// How many change rows one poll reads at a time.
const FEED_PAGE: i64 = 1_000;
/// More pages than this in one poll means the instance was frozen for long: start afresh.
const FEED_MAX_PAGES: usize = 10;
/// How long a missing change id is re-checked: a writer's transaction that took its id earlier but
/// commits later shows up within this window.
const GAP_GRACE: Duration = Duration::from_secs(60);
/// How long loads fail fast after the database was found unavailable (also the `Retry-After`).
pub const BREAKER_OPEN: Duration = Duration::from_secs(1);

/// A body encoding the cache keeps a variant of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Brotli.
    Br,
    /// gzip.
    Gzip,
}

impl Encoding {
    /// `Content-Encoding` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Gzip => "gzip",
        }
    }
}

/// Bodies shorter than this are sent as they are: compression would not pay for its headers.
pub const MIN_COMPRESS: usize = 1_024;

/// A compressed variant of a cached body, with its own strong ETag.
#[derive(Debug)]
pub struct Encoded {
    /// The compressed bytes.
    pub body: Bytes,
    /// `"<hash>-br"` / `"<hash>-gzip"`: a strong validator must differ between representations.
    pub etag: HeaderValue,
}

/// A finished response, as the cache stores it.
#[derive(Debug)]
pub struct CachedResponse {
    /// `200`, or `404` for a resource that does not exist (negatively cached).
    pub status: StatusCode,
    /// The JSON body.
    pub body: Bytes,
    /// Hash of the body, the opaque part of every ETag of this response.
    pub hash: String,
    /// Strong ETag of the identity body.
    pub etag: HeaderValue,
    /// Tags, for eviction.
    pub tags: Vec<String>,
    /// Tags joined with `,`, ready for the tag header.
    pub tag_header: HeaderValue,
    /// Time the load spent in the database (for `Server-Timing`).
    pub db_time: Duration,
    /// In-process freshness; zero when the data changed while loading (then it is not kept).
    pub ttl: Duration,
    /// How long after `ttl` the copy may be served if the database fails.
    pub stale_for: Duration,
    /// Compressed variants, made on first demand and then reused by every hit.
    encoded: [OnceLock<Encoded>; 2],
}

impl CachedResponse {
    /// Builds a response value from a rendered body.
    pub fn new(status: StatusCode, body: Bytes, tags: Vec<String>, db_time: Duration) -> Self {
        let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&body));
        let etag = HeaderValue::try_from(format!("\"{hash}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        let tag_header = HeaderValue::try_from(tags.join(",")).unwrap_or_else(|_| HeaderValue::from_static(""));
        Self {
            status,
            body,
            hash,
            etag,
            tags,
            tag_header,
            db_time,
            ttl: Duration::ZERO,
            stale_for: Duration::ZERO,
            encoded: [OnceLock::new(), OnceLock::new()],
        }
    }

    /// Sets the in-process lifetimes.
    #[must_use]
    pub fn with_lifetimes(mut self, ttl: Duration, stale_for: Duration) -> Self {
        self.ttl = ttl;
        self.stale_for = stale_for;
        self
    }

    /// Whether the body is large enough to be worth compressing.
    pub fn compressible(&self) -> bool {
        self.body.len() >= MIN_COMPRESS
    }

    /// The body compressed with `encoding`, computed once per cached response.
    pub fn encoded(&self, encoding: Encoding) -> &Encoded {
        let slot = match encoding {
            Encoding::Br => &self.encoded[0],
            Encoding::Gzip => &self.encoded[1],
        };
        slot.get_or_init(|| {
            let body = Bytes::from(compress(&self.body, encoding));
            let etag = HeaderValue::try_from(format!("\"{}-{}\"", self.hash, encoding.as_str()))
                .unwrap_or_else(|_| self.etag.clone());
            Encoded { body, etag }
        })
    }

    /// Approximate memory held, for the cache's byte bound (compressed variants included).
    fn weight(&self) -> u32 {
        let bytes = self.body.len() * 2 + self.tag_header.len() + 256;
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

fn compress(body: &[u8], encoding: Encoding) -> Vec<u8> {
    use std::io::Write;
    match encoding {
        Encoding::Gzip => {
            let mut enc =
                flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::new(6));
            // Writing to a Vec cannot fail.
            let _ = enc.write_all(body);
            enc.finish().unwrap_or_default()
        }
        Encoding::Br => {
            let mut out = Vec::with_capacity(body.len() / 4);
            let params = brotli::enc::BrotliEncoderParams { quality: 5, lgwin: 22, ..Default::default() };
            let _ = brotli::BrotliCompress(&mut &body[..], &mut out, &params);
            out
        }
    }
}

/// Where an answer came from, for `x-local-cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the in-process cache.
    Hit,
    /// Loaded from the database (or shared a concurrent load).
    Miss,
    /// Database failed; an expired copy was served.
    Stale,
}

impl Outcome {
    /// `x-local-cache` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Stale => "stale",
        }
    }
}

/// Why a cached lookup produced no response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The database is unavailable and no stale copy exists.
    #[error("database unavailable")]
    Unavailable,
    /// The load failed for another reason (already logged).
    #[error("internal error")]
    Internal,
}

struct TtlExpiry {
    /// Extra lifetime on top of the entry's TTL: zero for `fresh`, stale-if-error for `stale`.
    stale: bool,
}

impl Expiry<String, Arc<CachedResponse>> for TtlExpiry {
    fn expire_after_create(&self, _key: &String, value: &Arc<CachedResponse>, _now: Instant) -> Option<Duration> {
        Some(if self.stale { value.ttl + value.stale_for } else { value.ttl })
    }
}

/// Position in the change feed and the ids still missing from it.
#[derive(Debug, Default)]
struct FeedState {
    /// Highest change id applied; `None` until the first successful poll.
    last_id: Option<i64>,
    /// Ids below `last_id` not seen yet (their transactions may still commit), with first-seen time.
    gaps: BTreeMap<i64, Instant>,
}

/// Configuration of the [`LocalCache`].
#[derive(Debug, Clone)]
pub struct LocalCacheConfig {
    /// Byte bound of the cache; 0 disables in-process caching (every request loads).
    pub max_bytes: u64,
    /// Minimum time between two change-feed polls of this instance.
    pub poll_interval: Duration,
}

/// The in-process cache plus the change-feed follower that keeps it fresh.
pub struct LocalCache {
    /// Entries within their local TTL.
    fresh: moka::future::Cache<String, Arc<CachedResponse>>,
    /// The same entries, kept longer for stale-if-error.
    stale: moka::future::Cache<String, Arc<CachedResponse>>,
    /// False when `max_bytes` is 0: a baseline for benchmarks, and an escape hatch.
    enabled: bool,
    /// Minimum time between polls.
    poll_interval: Duration,
    /// Milliseconds since `epoch` of the last poll attempt (successful or not).
    last_poll_ms: AtomicU64,
    /// Reference point for `last_poll_ms`.
    epoch: Instant,
    /// Single flight for polls; an instance never runs two at once.
    poll_lock: tokio::sync::Mutex<()>,
    /// Feed position, only touched under `poll_lock`.
    feed: Mutex<FeedState>,
    /// Whether the feed position is known; until then nothing is kept, since a change between a
    /// load and the first poll would otherwise go unnoticed.
    initialized: AtomicBool,
    /// Bumped on every eviction; a load that overlaps one is not cached.
    generation: AtomicU64,
    /// Milliseconds since `epoch` until which loads fail fast (the database was just unavailable).
    breaker_until_ms: AtomicU64,
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
    pub fn new(config: &LocalCacheConfig) -> Self {
        let build = |stale: bool| {
            moka::future::Cache::builder()
                .max_capacity(config.max_bytes.max(1))
                .weigher(|_k: &String, v: &Arc<CachedResponse>| v.weight())
                .expire_after(TtlExpiry { stale })
                .support_invalidation_closures()
                .build()
        };
        Self {
            fresh: build(false),
            stale: build(true),
            enabled: config.max_bytes > 0,
            poll_interval: config.poll_interval,
            last_poll_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            poll_lock: tokio::sync::Mutex::new(()),
            feed: Mutex::new(FeedState::default()),
            initialized: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            breaker_until_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether loads currently fail fast.
    pub fn breaker_open(&self) -> bool {
        self.now_ms() < self.breaker_until_ms.load(Ordering::Relaxed)
    }

    /// Records a store failure; an unavailable database opens the breaker for [`BREAKER_OPEN`].
    pub fn record_failure(&self, err: &StoreError) {
        if err.is_unavailable() {
            let until = self.now_ms() + u64::try_from(BREAKER_OPEN.as_millis()).unwrap_or(1_000);
            self.breaker_until_ms.store(until, Ordering::Relaxed);
        }
    }

    /// Returns the response for `key`, loading it with `load` on a miss.
    ///
    /// `load` returns the response and how long to keep it; concurrent callers for one key share a
    /// single call. When the load fails because the database is unavailable, an expired copy
    /// within its stale-if-error window is returned instead.
    ///
    /// # Errors
    ///
    /// [`LoadError`] when no response can be produced.
    pub async fn get_or_load<F, Fut>(&self, key: &str, load: F) -> Result<(Arc<CachedResponse>, Outcome), LoadError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedResponse, StoreError>>,
    {
        if !self.enabled {
            return self.load_uncached(load).await.map(|r| (Arc::new(r), Outcome::Miss));
        }
        if let Some(hit) = self.fresh.get(key).await {
            return Ok((hit, Outcome::Hit));
        }
        let generation = self.generation.load(Ordering::Acquire);
        let loaded = self
            .fresh
            .try_get_with_by_ref(key, async {
                let mut response = self.load_uncached(load).await?;
                if self.generation.load(Ordering::Acquire) != generation || !self.initialized.load(Ordering::Acquire) {
                    // Data changed while we read: serve this answer once, but do not keep it, or
                    // it could outlive the eviction that was meant for it.
                    response.ttl = Duration::ZERO;
                    response.stale_for = Duration::ZERO;
                }
                let response = Arc::new(response);
                self.stale.insert(key.to_owned(), response.clone()).await;
                Ok::<_, LoadError>(response)
            })
            .await;
        match loaded {
            Ok(response) => Ok((response, Outcome::Miss)),
            Err(err) => match (&*err, self.stale.get(key).await) {
                (LoadError::Unavailable, Some(stale)) => Ok((stale, Outcome::Stale)),
                _ => Err((*err).clone()),
            },
        }
    }

    async fn load_uncached<F, Fut>(&self, load: F) -> Result<CachedResponse, LoadError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedResponse, StoreError>>,
    {
        if self.breaker_open() {
            return Err(LoadError::Unavailable);
        }
        load().await.map_err(|err| {
            self.record_failure(&err);
            if err.is_unavailable() {
                tracing::warn!(error = %err, cause = ?std::error::Error::source(&err), "database unavailable");
                LoadError::Unavailable
            } else {
                tracing::error!(error = %err, cause = ?std::error::Error::source(&err), "load failed");
                LoadError::Internal
            }
        })
    }

    /// Polls the change feed if the interval has passed, evicting entries whose tags changed.
    ///
    /// Called on the request path so an idle (or frozen Lambda) instance never polls. At most one
    /// poll runs at a time; requests arriving while one is due wait for it, so a change older than
    /// the poll interval is never served from this instance's cache.
    pub async fn refresh<S: Store>(&self, store: &S) {
        if !self.enabled {
            return;
        }
        let due = || {
            let elapsed = self.now_ms().saturating_sub(self.last_poll_ms.load(Ordering::Relaxed));
            u128::from(elapsed) >= self.poll_interval.as_millis()
        };
        let initialized = self.initialized.load(Ordering::Acquire);
        if initialized && !due() {
            // A poll stamps its start time, so "not due" may mean "running right now": then wait
            // for it to finish rather than serve an entry it is about to evict.
            if self.poll_lock.try_lock().is_err() {
                drop(self.poll_lock.lock().await);
            }
            return;
        }
        // Everyone who finds a poll due waits for it (one runs it, the others find it done), so no
        // answer is served from an entry that the poll is about to evict.
        let _guard = self.poll_lock.lock().await;
        // Someone else may have polled while we waited for the lock.
        if (self.initialized.load(Ordering::Acquire) && !due()) || self.breaker_open() {
            return;
        }
        self.last_poll_ms.store(self.now_ms(), Ordering::Relaxed);
        if let Err(err) = self.poll(store).await {
            self.record_failure(&err);
            tracing::warn!(error = %err, cause = ?std::error::Error::source(&err), "change feed poll failed");
        }
    }

    async fn poll<S: Store>(&self, store: &S) -> Result<(), StoreError> {
        let (last_id, mut gap_set) = {
            let feed = self.feed.lock().map_err(|_| StoreError::Data("feed state poisoned".into()))?;
            (feed.last_id, feed.gaps.clone())
        };
        let Some(mut last_id) = last_id else {
            let max = store.max_change_id().await?;
            self.set_feed(max, BTreeMap::new());
            return Ok(());
        };
        let mut tags = HashSet::new();
        let mut also: Vec<i64> = gap_set.keys().copied().collect();
        for page in 0.. {
            if page == FEED_MAX_PAGES {
                // Too far behind to replay: start from the current end with an empty cache.
                let max = store.max_change_id().await?;
                self.generation.fetch_add(1, Ordering::AcqRel);
                self.fresh.invalidate_all();
                self.stale.invalidate_all();
                self.set_feed(max, BTreeMap::new());
                return Ok(());
            }
            let changes: Vec<Change> = store.changes_since(last_id, &also, FEED_PAGE).await?;
            let full = changes.len() as i64 == FEED_PAGE;
            for change in changes {
                if gap_set.remove(&change.id).is_none() && change.id > last_id {
                    for missing in last_id + 1..change.id {
                        gap_set.insert(missing, Instant::now());
                    }
                    last_id = change.id;
                }
                tags.insert(change.tag);
            }
            also = Vec::new();
            if !full {
                break;
            }
        }
        gap_set.retain(|_, first_seen| first_seen.elapsed() < GAP_GRACE);
        self.set_feed(last_id, gap_set);
        if !tags.is_empty() {
            self.evict(tags);
        }
        Ok(())
    }

    fn set_feed(&self, last_id: i64, gaps: BTreeMap<i64, Instant>) {
        if let Ok(mut feed) = self.feed.lock() {
            feed.last_id = Some(last_id);
            feed.gaps = gaps;
        }
        self.initialized.store(true, Ordering::Release);
    }

    /// Evicts every entry carrying one of `tags`.
    pub fn evict(&self, tags: HashSet<String>) {
        tracing::debug!(count = tags.len(), "evicting changed tags");
        self.generation.fetch_add(1, Ordering::AcqRel);
        let tags = Arc::new(tags);
        for cache in [&self.fresh, &self.stale] {
            let tags = tags.clone();
            // Only fails when closures are not enabled, which the builder guarantees.
            let _ = cache.invalidate_entries_if(move |_, v| v.tags.iter().any(|t| tags.contains(t)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_per_representation() {
        let body = Bytes::from(vec![b'a'; 4096]);
        let r = CachedResponse::new(StatusCode::OK, body, vec!["lines".into()], Duration::ZERO);
        let br = r.encoded(Encoding::Br);
        let gz = r.encoded(Encoding::Gzip);
        assert!(br.body.len() < 100 && gz.body.len() < 100);
        assert_ne!(r.etag, br.etag);
        assert_ne!(br.etag, gz.etag);
        assert!(br.etag.to_str().unwrap().starts_with(&format!("\"{}", r.hash)));
        // The variant is computed once and reused.
        assert!(std::ptr::eq(r.encoded(Encoding::Br), br));
    }

    #[test]
    fn identical_bodies_get_identical_etags() {
        let a = CachedResponse::new(StatusCode::OK, Bytes::from_static(b"{}"), vec![], Duration::ZERO);
        let b = CachedResponse::new(StatusCode::OK, Bytes::from_static(b"{}"), vec![], Duration::ZERO);
        let c = CachedResponse::new(StatusCode::OK, Bytes::from_static(b"[]"), vec![], Duration::ZERO);
        assert_eq!(a.etag, b.etag);
        assert_ne!(a.etag, c.etag);
    }
}
