//! [`ObserveLayer`]: the request's status counted in the metrics (how the in-process cache answered
//! is counted by the handler, which has it as a value) and, if the edge fetched it for a viewer, in
//! the learned warm set ([`crate::learn`]); and a `debug` span naming its route.
//!
//! The span is `debug`, not `info`: at the production level (`info`) an enabled span costs every
//! request its creation and the formatting of its fields, a large share of what a cached hit costs
//! in user space (the bench's hot-path figures say how much), and what it would add to the few
//! events a request can log is said by those events themselves (a failed load names the
//! resource it read). Its outcome (status, cache) is in the metrics, not on the span: no layer
//! logs a span's close.
//!
//! Written as a tower layer rather than with `axum::middleware::from_fn`: `from_fn` boxes its own
//! future, clones and boxes the inner service and boxes that service's future again, four heap
//! allocations and as many copies of the request's future per request. This one keeps the inner
//! future inline and allocates nothing, which a cached hit (the bench's hot path) feels.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::state::AppState;
use crate::learn::WARM_HEADER;

/// Wraps every route of the router (`Router::layer`, so the matched route is known).
#[derive(Debug, Clone)]
pub(crate) struct ObserveLayer {
    state: AppState,
}

impl ObserveLayer {
    pub(crate) fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, state: self.state.clone() }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Debug, Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The matched path is the route's template, so a debug log groups by route.
        let matched = request.extensions().get::<MatchedPath>();
        let span = tracing::debug_span!("request", method = %request.method(), route = matched.map_or("-", MatchedPath::as_str));
        let index = matched.and_then(|m| self.state.http.index.get(m.as_str()).copied());
        // A policy route's GET, not the warmer's: what the edge fetched for a viewer.
        let learn = index
            .filter(|_| {
                request.method() == http::Method::GET
                    && !self.state.learner.is_warmers(request.headers().get(WARM_HEADER))
            })
            .and_then(|_| request.uri().path_and_query().cloned());
        let inner = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        ObserveFuture { inner: inner.instrument(span), state: self.state.clone(), index, learn }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Observe`]: the route's, then its status and local cache outcome
    /// counted.
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        state: AppState,
        // The route's position in the policy, for its metrics (`None`: not a policy route).
        index: Option<usize>,
        // The path and query to count as fetched by the edge, if the answer is one it keeps.
        learn: Option<http::uri::PathAndQuery>,
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = ready!(this.inner.poll(cx));
        let status = response.status().as_u16();
        let state = &*this.state;
        state.metrics.observe(*this.index, status);
        if state.metrics.due() {
            state.flush_metrics();
        }
        // An answer the edge keeps (a `304` refreshes what it holds); not a `400` or a redirect.
        if let Some(path) = this.learn.as_ref().filter(|_| matches!(status, 200 | 304 | 404)) {
            state.learner.record(path.as_str(), status != 404);
        }
        state.flush_learned_if_due();
        Poll::Ready(Ok(response))
    }
}
