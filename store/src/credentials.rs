//! A rotated password: where a store reads its database URL again when the server refuses its
//! credentials, so a process recovers from a rotation without a restart.
//!
//! The store knows nothing of where URLs come from (a secret in AWS Secrets Manager, for the
//! binaries): the caller hands it a [`UrlSource`], and the store asks it again, at most once per
//! [`URL_REREAD_EVERY`], when connecting fails with an authentication error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The least time between two re-reads of the URL: a rotation whose secret is not updated yet
/// (the moment between a password change and the secret's new version) costs one re-read per this
/// interval, not one per request.
pub const URL_REREAD_EVERY: Duration = Duration::from_secs(10);

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
