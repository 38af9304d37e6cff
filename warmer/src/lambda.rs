//! The warmer on AWS Lambda: one tick per EventBridge scheduled event.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use lambda_runtime::{Diagnostic, LambdaEvent};

use crate::metrics::report;
use plumbing::error_chain;

use crate::tick::{Summary, TickFailure, Warmer};

/// A failed tick as Lambda reports it. The error type says whether the next tick can succeed by
/// itself (`Retryable`: throttling, network, database) or needs an operator (`NonRetryable`: a
/// rejected batch, missing permission), so alarms and log queries can tell them apart.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LambdaTickError {
    /// The failure with its causes.
    message: String,
    /// Whether the next tick can succeed unchanged.
    retryable: bool,
}

impl From<TickFailure> for LambdaTickError {
    fn from(failure: TickFailure) -> Self {
        Self { message: error_chain(&failure), retryable: failure.error.retryable() }
    }
}

impl From<LambdaTickError> for Diagnostic {
    fn from(error: LambdaTickError) -> Self {
        Self {
            error_type: if error.retryable { "Retryable" } else { "NonRetryable" }.to_owned(),
            error_message: error.message,
        }
    }
}

/// The handler: runs a tick, prints its summary as one JSON line, and returns it.
///
/// # Errors
///
/// [`LambdaTickError`] when the tick failed (its changes stay pending).
pub async fn handle_scheduled_event(
    warmer: &Warmer,
    event: LambdaEvent<EventBridgeEvent>,
) -> Result<Summary, LambdaTickError> {
    tracing::debug!(source = %event.payload.source, detail_type = %event.payload.detail_type, "scheduled tick");
    let result = warmer.tick().await;
    report(&result, warmer.metrics);
    Ok(result?)
}
