//! `/v1/lines` and `/v1/lines/{line_id}/stations`.

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::get};
use serde::Serialize;

use super::request::Endpoint;
use super::respond::{json, serve};
use super::state::AppState;
use store::Line;

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/lines", get(list)).route("/v1/lines/{line_id}/stations", get(stations))
}

// `/v1/lines`.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(inline))]
struct Lines {
    lines: Vec<Line>,
}

/// What these routes answer, for `openapi.json`.
#[cfg(feature = "openapi")]
pub(crate) fn document(docs: &mut crate::openapi::Docs) {
    use crate::openapi::Route;
    docs.route::<Lines>(Route {
        name: "lines",
        operation_id: "listLines",
        summary: "All lines",
        ok: "All lines, ordered by id",
        not_found: false,
        params: &[],
    });
    docs.route::<store::LineStations>(Route {
        name: "line_stations",
        operation_id: "lineStations",
        summary: "A line's stations in order",
        ok: "The line and its stations",
        not_found: true,
        params: &[("line_id", "Line id")],
    });
}

async fn list(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    serve(&state, endpoint, "no such line", |store, _, position| async move {
        store.lines(position).await?.try_map(|lines| json(&Lines { lines }).map(Some))
    })
    .await
}

async fn stations(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    serve(&state, endpoint, "no such line", |store, endpoint, position| {
        let line_id = endpoint.param("line_id").to_owned();
        async move { store.line_stations(&line_id, position).await?.try_map(|l| l.map(|l| json(&l)).transpose()) }
    })
    .await
}
