//! `/v1/operations/{date}` and `/v1/operations/{date}/{number}`; `date` may be `today`.

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::get};
use chrono::NaiveDate;
use serde::Serialize;

use super::request::Endpoint;
use super::respond::{json, serve};
use super::state::AppState;
use store::{Operation, Store};

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/operations/{date}", get(day)).route("/v1/operations/{date}/{number}", get(one))
}

async fn day(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    #[derive(Serialize)]
    struct Day {
        service_date: NaiveDate,
        operations: Vec<Operation>,
    }
    let date = endpoint.date("date");
    serve(&state, endpoint, "no such service day", |store, _| async move {
        json(&Day { service_date: date, operations: store.operations(date).await? }).map(Some)
    })
    .await
}

async fn one(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    let date = endpoint.date("date");
    let (from, until) = state.http.calendar.day_bounds(date);
    serve(&state, endpoint, "no such operation", |store, endpoint| {
        let number = endpoint.param("number").to_owned();
        async move { store.operation(date, &number, from, until).await?.map(|o| json(&o)).transpose() }
    })
    .await
}
