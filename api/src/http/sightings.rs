//! `/v1/sightings/latest?limit=1..200`.

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::get};
use serde::Serialize;

use super::request::Endpoint;
use super::respond::{json, serve};
use super::state::AppState;
use store::{Sighting, Store};

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/sightings/latest", get(latest))
}

async fn latest(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    #[derive(Serialize)]
    struct Latest {
        sightings: Vec<Sighting>,
    }
    let limit = endpoint.query_int("limit");
    serve(&state, endpoint, "no sightings", |store, _| async move {
        json(&Latest { sightings: store.latest_sightings(limit).await? }).map(Some)
    })
    .await
}
