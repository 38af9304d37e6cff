//! Invalidation backends: CloudFront, an HTTP purge of a Varnish-style cache, or none.

use std::time::Duration;

use aws_sdk_cloudfront::error::SdkError;
use aws_sdk_cloudfront::operation::create_invalidation::CreateInvalidationError;
use aws_sdk_cloudfront::types::{InvalidationBatch, Paths};
use cache_policy::plan::{BatchError, Limits, validate_batch};
use store::outbox::ClaimedTag;

/// Why an invalidation was not accepted. Every variant leaves the changes pending.
#[derive(Debug, thiserror::Error)]
pub enum InvalidationError {
    /// The batch breaks a CloudFront rule; it was not sent.
    #[error("invalid batch: {0}")]
    Batch(#[from] BatchError),
    /// CloudFront kept saying too many invalidations are in progress.
    #[error("too many invalidations in progress (gave up after {0} attempts)")]
    TooManyInProgress(u32),
    /// CloudFront rejected the batch as too large.
    #[error("CloudFront rejected the batch as too large: {0}")]
    BatchTooLarge(String),
    /// CloudFront rejected an argument.
    #[error("CloudFront rejected an argument: {0}")]
    InvalidArgument(String),
    /// The credentials may not invalidate this distribution.
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// The distribution does not exist.
    #[error("no such distribution: {0}")]
    NoSuchDistribution(String),
    /// The request did not get an answer (network, timeout, 5xx).
    #[error("CloudFront request failed: {0}")]
    Transport(String),
    /// The purge request failed.
    #[error("purge failed: {0}")]
    Purge(String),
    /// A required setting is missing.
    #[error("{0}")]
    Config(String),
    /// The submission was still going (retrying a throttled one, say) when the tick had to end.
    #[error("no answer before the tick's deadline")]
    Deadline,
}

impl InvalidationError {
    /// Whether a later attempt can succeed without anyone changing anything.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::TooManyInProgress(_) | Self::Transport(_) | Self::Purge(_) | Self::Deadline)
    }
}

/// An invalidation the backend accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The backend's id (CloudFront's invalidation id).
    pub id: String,
    /// Its status as reported (`InProgress`, `Completed`, …).
    pub status: String,
}

/// The id prefix of a batch CloudFront already had (sent by a tick that died after sending): done
/// as far as the changes go, but not known to have completed.
pub const ALREADY_SENT: &str = "existing-";

/// Whether an invalidation status means done. CloudFront says `Completed`; moto says `COMPLETED`.
pub fn is_completed(status: &str) -> bool {
    status.eq_ignore_ascii_case("completed")
}

/// The HTTPS client for AWS calls (CloudFront, and the credential providers behind it): the SDK's
/// hyper client on rustls with ring, the one crypto provider of every TLS connection these
/// binaries make (the SDK's default client would link aws-lc-rs as a second one). Trusts the
/// system's certificate store (the Lambda runtime image carries one).
pub fn https_client() -> aws_sdk_cloudfront::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// The CloudFront backend.
#[derive(Debug, Clone)]
pub struct CloudFront {
    /// SDK client (endpoint, region and credentials from the standard AWS configuration).
    client: aws_sdk_cloudfront::Client,
    /// The one distribution this warmer may invalidate.
    distribution_id: String,
    /// First backoff delay for TooManyInvalidationsInProgress.
    retry_base: Duration,
    /// Attempts for TooManyInvalidationsInProgress.
    retry_attempts: u32,
}

impl CloudFront {
    /// A client from the standard AWS configuration: credentials chain, region (CloudFront is
    /// global: `us-east-1` when none is set), and `AWS_ENDPOINT_URL_CLOUDFRONT` / `AWS_ENDPOINT_URL`.
    /// Every call is bounded by `timeout` (the SDK's own defaults set none on an operation): a
    /// CloudFront API that accepts a request and never answers fails the call, not the tick's
    /// whole lease.
    pub async fn from_env(
        distribution_id: String,
        retry_base: Duration,
        retry_attempts: u32,
        timeout: Duration,
    ) -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .operation_attempt_timeout(timeout)
            .operation_timeout(timeout)
            .build();
        // The loader's own region chain, so that its providers use the same HTTP client.
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client())
            .timeout_config(timeouts)
            .load()
            .await;
        let config = match config.region() {
            Some(_) => config,
            None => config.into_builder().region(aws_config::Region::new("us-east-1")).build(),
        };
        Self::with_client(aws_sdk_cloudfront::Client::new(&config), distribution_id, retry_base, retry_attempts)
    }

    /// Uses an existing client (tests point it at recorded responses).
    pub fn with_client(
        client: aws_sdk_cloudfront::Client,
        distribution_id: String,
        retry_base: Duration,
        retry_attempts: u32,
    ) -> Self {
        Self { client, distribution_id, retry_base, retry_attempts: retry_attempts.max(1) }
    }

    /// Validates and sends a batch, retrying `TooManyInvalidationsInProgress` with exponential
    /// backoff. The caller reference makes a retried batch idempotent at CloudFront.
    ///
    /// # Errors
    ///
    /// [`InvalidationError`]; nothing was invalidated.
    pub async fn submit(&self, items: &[String], caller_reference: &str) -> Result<Submitted, InvalidationError> {
        validate_batch(items, &Limits::default())?;
        let paths = Paths::builder()
            .quantity(i32::try_from(items.len()).unwrap_or(i32::MAX))
            .set_items(Some(items.to_vec()))
            .build()
            .map_err(|e| InvalidationError::InvalidArgument(e.to_string()))?;
        let batch = InvalidationBatch::builder()
            .paths(paths)
            .caller_reference(caller_reference)
            .build()
            .map_err(|e| InvalidationError::InvalidArgument(e.to_string()))?;
        let mut delay = self.retry_base;
        for attempt in 1..=self.retry_attempts {
            let result = self
                .client
                .create_invalidation()
                .distribution_id(&self.distribution_id)
                .invalidation_batch(batch.clone())
                .send()
                .await;
            match result {
                Ok(out) => {
                    let inv = out.invalidation().ok_or_else(|| {
                        InvalidationError::Transport("CloudFront answered without an invalidation".into())
                    })?;
                    return Ok(Submitted { id: inv.id().to_owned(), status: inv.status().to_owned() });
                }
                Err(SdkError::ServiceError(e)) => {
                    let message = e.err().to_string();
                    match e.into_err() {
                        CreateInvalidationError::TooManyInvalidationsInProgress(_) => {
                            tracing::warn!(attempt, ?delay, "too many invalidations in progress, backing off");
                            if attempt < self.retry_attempts {
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                        }
                        CreateInvalidationError::BatchTooLarge(_) => {
                            return Err(InvalidationError::BatchTooLarge(message));
                        }
                        CreateInvalidationError::InvalidArgument(_)
                        | CreateInvalidationError::InconsistentQuantities(_)
                        | CreateInvalidationError::MissingBody(_) => {
                            return Err(InvalidationError::InvalidArgument(message));
                        }
                        CreateInvalidationError::AccessDenied(_) => {
                            return Err(InvalidationError::AccessDenied(message));
                        }
                        CreateInvalidationError::NoSuchDistribution(_) => {
                            return Err(InvalidationError::NoSuchDistribution(self.distribution_id.clone()));
                        }
                        other => {
                            let code = aws_sdk_cloudfront::error::ProvideErrorMetadata::code(&other).unwrap_or("");
                            if code == "AccessDenied" {
                                return Err(InvalidationError::AccessDenied(message));
                            }
                            if code == "InvalidationBatchAlreadyExists" {
                                // The reference hashes the change ids *and* the items, so an
                                // existing batch under it is this very batch, accepted earlier
                                // (a tick that died after sending): done, not an error.
                                tracing::info!(caller_reference, "CloudFront already has this batch");
                                return Ok(Submitted {
                                    id: format!("{ALREADY_SENT}{caller_reference}"),
                                    status: "Completed".into(),
                                });
                            }
                            return Err(InvalidationError::Transport(format!("{code} {message}")));
                        }
                    }
                }
                Err(other) => return Err(InvalidationError::Transport(plumbing::error_chain(&other))),
            }
        }
        Err(InvalidationError::TooManyInProgress(self.retry_attempts))
    }

    /// The current status of an invalidation.
    ///
    /// # Errors
    ///
    /// The request failed.
    pub async fn status(&self, id: &str) -> Result<String, InvalidationError> {
        let out = self
            .client
            .get_invalidation()
            .distribution_id(&self.distribution_id)
            .id(id)
            .send()
            .await
            .map_err(|e| InvalidationError::Transport(plumbing::error_chain(&e)))?;
        Ok(out.invalidation().map(|i| i.status().to_owned()).unwrap_or_default())
    }
}

/// The purge backend: HTTP `PURGE` per path (a trailing `*` purges the prefix) and an xkey purge
/// for `#tag` items, against a Varnish-style cache (see `local/varnish.vcl`).
#[derive(Debug, Clone)]
pub struct Purge {
    /// HTTP client.
    client: reqwest::Client,
    /// Base URL of the cache, without a trailing slash.
    base: String,
}

impl Purge {
    /// A purge backend for `base`, each request bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// The HTTP client could not be built (its TLS backend failed to start).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { client, base: base.trim_end_matches('/').to_owned() })
    }

    /// Purges every item.
    ///
    /// # Errors
    ///
    /// The cache refused a purge or could not be reached.
    pub async fn submit(&self, items: &[String], caller_reference: &str) -> Result<Submitted, InvalidationError> {
        validate_batch(items, &Limits::default())?;
        let method = reqwest::Method::from_bytes(b"PURGE").map_err(|e| InvalidationError::Purge(e.to_string()))?;
        let tags: Vec<&str> = items.iter().filter_map(|i| i.strip_prefix('#')).collect();
        for chunk in tags.chunks(100) {
            let res = self
                .client
                .request(method.clone(), format!("{}/", self.base))
                .header("xkey-purge", chunk.join(" "))
                .send()
                .await
                .map_err(|e| InvalidationError::Purge(e.to_string()))?;
            if !res.status().is_success() {
                return Err(InvalidationError::Purge(format!("tag purge answered {}", res.status())));
            }
        }
        for path in items.iter().filter(|i| i.starts_with('/')) {
            let res = self
                .client
                .request(method.clone(), format!("{}{path}", self.base))
                .send()
                .await
                .map_err(|e| InvalidationError::Purge(e.to_string()))?;
            if !res.status().is_success() {
                return Err(InvalidationError::Purge(format!("PURGE {path} answered {}", res.status())));
            }
        }
        Ok(Submitted { id: format!("purge-{caller_reference}"), status: "Completed".into() })
    }
}

/// The configured backend.
#[derive(Debug, Clone)]
pub enum Invalidator {
    /// CloudFront.
    CloudFront(CloudFront),
    /// Varnish-style purge.
    Purge(Purge),
    /// Log only.
    None,
}

impl Invalidator {
    /// Short name, for summaries and the invalidations table.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CloudFront(_) => "cloudfront",
            Self::Purge(_) => "purge",
            Self::None => "none",
        }
    }

    /// Sends a batch.
    ///
    /// # Errors
    ///
    /// [`InvalidationError`]; nothing was invalidated.
    pub async fn submit(&self, items: &[String], caller_reference: &str) -> Result<Submitted, InvalidationError> {
        match self {
            Self::CloudFront(cf) => cf.submit(items, caller_reference).await,
            Self::Purge(p) => p.submit(items, caller_reference).await,
            Self::None => {
                validate_batch(items, &Limits::default())?;
                tracing::info!(?items, "INVALIDATOR=none: not invalidating");
                Ok(Submitted { id: format!("none-{caller_reference}"), status: "Completed".into() })
            }
        }
    }

    /// Waits until an invalidation completes (CloudFront), polling every `every`, at most `limit`.
    /// Returns the last status seen. `progress` is called with each status.
    ///
    /// # Errors
    ///
    /// A status request failed.
    pub async fn wait(
        &self,
        submitted: &Submitted,
        every: Duration,
        limit: Duration,
        mut progress: impl FnMut(&str, Duration),
    ) -> Result<String, InvalidationError> {
        let Self::CloudFront(cf) = self else { return Ok(submitted.status.clone()) };
        let started = std::time::Instant::now();
        let mut status = submitted.status.clone();
        loop {
            progress(&status, started.elapsed());
            if is_completed(&status) || started.elapsed() >= limit {
                return Ok(status);
            }
            tokio::time::sleep(every).await;
            status = cf.status(&submitted.id).await?;
        }
    }
}

/// A caller reference derived from the database's identity, the claimed changes (per tag: how
/// many, and the range of their ids) and the planned items.
///
/// Retrying the same changes with the same batch is idempotent at CloudFront (it returns the
/// existing invalidation instead of creating one). If the retry plans a different batch for the
/// same changes (the month's budget or the service day moved on), the reference differs too:
/// CloudFront would otherwise refuse it (`InvalidationBatchAlreadyExists`) on every tick, and the
/// changes would never be processed. `identity` (the database's system and timeline, see
/// `store::Db::identity`) keeps a restored database, whose change ids rewind, from reusing the
/// references of its past: CloudFront would answer with the old invalidation and purge nothing.
pub fn caller_reference(identity: &str, claimed: &[ClaimedTag], items: &[String]) -> String {
    let first = claimed.iter().map(|t| t.first_id).min().unwrap_or(0);
    let last = claimed.iter().map(|t| t.last_id).max().unwrap_or(0);
    let changes: i64 = claimed.iter().map(|t| t.changes).sum();
    let mut bytes = Vec::with_capacity(claimed.len() * 32 + identity.len());
    bytes.extend_from_slice(identity.as_bytes());
    bytes.push(0);
    for t in claimed {
        bytes.extend_from_slice(t.tag.as_bytes());
        bytes.push(0);
        for n in [t.changes, t.first_id, t.last_id] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
    }
    let batch = xxhash_rust::xxh3::xxh3_64(items.join("\n").as_bytes());
    format!("edgerail-{first}-{last}-{changes}-{:016x}-{batch:016x}", xxhash_rust::xxh3::xxh3_64(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(tag: &str, changes: i64, first_id: i64, last_id: i64) -> ClaimedTag {
        ClaimedTag {
            tag: tag.into(),
            changes,
            first_id,
            last_id,
            written_by: last_id.to_string(),
            age_ms: 0,
            from_commit: false,
            repaired_by: None,
        }
    }

    /// `caller_reference` for the database identity the other tests share.
    fn caller_reference(claimed: &[ClaimedTag], items: &[String]) -> String {
        super::caller_reference("7716104371536365529:1", claimed, items)
    }

    #[test]
    fn a_restored_database_does_not_reuse_the_references_of_its_past() {
        let batch = ["/v1/lines".to_owned()];
        let claimed = [tag("lines", 1, 40, 40)];
        // The same change ids and items after a point-in-time restore: another timeline.
        assert_ne!(
            super::caller_reference("7716104371536365529:1", &claimed, &batch),
            super::caller_reference("7716104371536365529:2", &claimed, &batch)
        );
        // A retry on the same history is the same request.
        assert_eq!(
            super::caller_reference("7716104371536365529:2", &claimed, &batch),
            super::caller_reference("7716104371536365529:2", &claimed, &batch)
        );
    }

    #[test]
    fn caller_reference_is_a_function_of_the_claimed_changes_and_the_batch() {
        let batch = ["/v1/lines".to_owned()];
        let other = ["/v1/lines".to_owned(), "/v1/formations".to_owned()];
        let claimed = [tag("lines", 2, 1, 3), tag("line:minato", 1, 2, 2)];
        assert_eq!(caller_reference(&claimed, &batch), caller_reference(&claimed, &batch));
        assert_ne!(caller_reference(&claimed, &batch), caller_reference(&claimed[..1], &batch));
        assert_ne!(
            caller_reference(&claimed, &batch),
            caller_reference(&[tag("lines", 2, 1, 4), tag("line:minato", 1, 2, 2)], &batch)
        );
        assert_ne!(
            caller_reference(&claimed, &batch),
            caller_reference(&[tag("lines", 3, 1, 3), tag("line:minato", 1, 2, 2)], &batch)
        );
        assert_ne!(caller_reference(&claimed, &batch), caller_reference(&claimed, &other));
        assert!(caller_reference(&claimed, &batch).starts_with("edgerail-1-3-3-"));
    }

    #[test]
    fn completion_is_case_insensitive() {
        assert!(is_completed("Completed"));
        assert!(is_completed("COMPLETED"));
        assert!(!is_completed("InProgress"));
    }
}
