//! A rotated password: where a store reads its database URL again when the server refuses its
//! credentials, so a process recovers from a rotation without a restart.
//!
//! The store knows nothing of where URLs come from (a secret in AWS Secrets Manager, for the
//! binaries): the caller hands it a [`UrlSource`], and the store asks it again when connecting
//! fails with an authentication error, at most as often as [`reread_wait`] allows.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The longest wait between two re-reads of the URL while the source keeps saying the same: a
/// URL the server keeps refusing costs one re-read per this interval, not one per request.
pub const URL_REREAD_EVERY: Duration = Duration::from_secs(10);

/// The wait before the first re-read after one that found the URL unchanged.
const URL_REREAD_FIRST: Duration = Duration::from_secs(1);

/// How long after a re-read the next may start, when `unchanged` re-reads in a row found the
/// URL the source already gave (0: the last one found a new URL, or there was none): 1 s, then
/// doubling up to [`URL_REREAD_EVERY`]. A rotation changes the password a moment before the secret
/// (RDS's single-user strategy sets the password, tests it, then makes the new version current),
/// and a refusal in that moment reads the old secret: the next re-read must come soon after, not
/// a whole interval later, or the instance stays refused for it.
pub(crate) fn reread_wait(unchanged: u32) -> Duration {
    URL_REREAD_FIRST.saturating_mul(1 << unchanged.saturating_sub(1).min(8)).min(URL_REREAD_EVERY)
}

/// What a [`UrlSource`] returns.
pub type UrlFuture = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Where the database URL comes from, read again after the server refused the credentials: a
/// function returning the current URL, or why it could not be read (no secret text in it).
#[derive(Clone)]
pub struct UrlSource(Arc<dyn Fn() -> UrlFuture + Send + Sync>);

impl UrlSource {
    /// A source that calls `read` for the URL.
    pub fn new(read: impl Fn() -> UrlFuture + Send + Sync + 'static) -> Self {
        Self(Arc::new(read))
    }

    /// The current URL.
    pub(crate) fn url(&self) -> UrlFuture {
        (self.0)()
    }
}

impl std::fmt::Debug for UrlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSource")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reread_that_found_the_same_url_is_tried_again_soon_then_less_and_less_often() {
        let waits: Vec<u64> = (0..8).map(|n| reread_wait(n).as_secs()).collect();
        assert_eq!(waits, [1, 1, 2, 4, 8, 10, 10, 10]);
        assert_eq!(reread_wait(u32::MAX), URL_REREAD_EVERY);
    }
}
