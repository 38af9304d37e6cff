//! `/v1/operations/{date}` and `/v1/operations/{date}/{number}`; `date` may be `today`.

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::get};
use chrono::NaiveDate;
use serde::Serialize;

use super::request::Endpoint;
use super::respond::{json, serve};
use super::state::AppState;
use store::Operation;

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/operations/{date}", get(day)).route("/v1/operations/{date}/{number}", get(one))
}

// `/v1/operations/{date}`.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(inline))]
struct Day {
    service_date: NaiveDate,
    operations: Vec<Operation>,
}

/// A service day as a path parameter.
#[cfg(feature = "openapi")]
const DATE: (&str, &str) =
    ("date", "A service day as a calendar date (YYYY-MM-DD), or `today` (the current service day)");

/// What these routes answer, for `openapi.json`.
#[cfg(feature = "openapi")]
pub(crate) fn document(docs: &mut crate::openapi::Docs) {
    use crate::openapi::Route;
    docs.route::<Day>(Route {
        name: "operations",
        operation_id: "listOperations",
        summary: "The operations of a service day",
        ok: "The day's operations, ordered by number.",
        not_found: false,
        params: &[DATE],
    });
    docs.route::<store::OperationDetail>(Route {
        name: "operation",
        operation_id: "getOperation",
        summary: "One operation and its sightings that day",
        ok: "The operation.",
        not_found: true,
        params: &[DATE, ("number", "Operation number, e.g. 01M")],
    });
}

async fn day(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    let date = endpoint.date("date");
    serve(&state, endpoint, "no such service day", |store, _, position| async move {
        store
            .operations(date, position)
            .await?
            .try_map(|operations| json(&Day { service_date: date, operations }).map(Some))
    })
    .await
}

async fn one(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    let date = endpoint.date("date");
    let bounds = state.http.calendar.day_bounds(date);
    serve(&state, endpoint, "no such operation", |store, endpoint, position| {
        let number = endpoint.param("number").to_owned();
        async move { store.operation(date, &number, bounds, position).await?.try_map(|o| o.map(|o| json(&o)).transpose()) }
    })
    .await
}
