//! `/v1/sightings/latest?limit=1..200` and `/v1/stations/{station_id}/sightings?limit=1..200`.

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::get};
use serde::Serialize;

use super::request::Endpoint;
use super::respond::{json, serve};
use super::state::AppState;
use store::{Sighting, Station, Store};

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sightings/latest", get(latest))
        .route("/v1/stations/{station_id}/sightings", get(at_station))
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

async fn at_station(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    #[derive(Serialize)]
    struct AtStation {
        station: Station,
        sightings: Vec<Sighting>,
    }
    let limit = endpoint.query_int("limit");
    serve(&state, endpoint, "no such station", |store, endpoint| {
        let id = endpoint.param("station_id").to_owned();
        async move {
            let found = store.station_sightings(&id, limit).await?;
            found.map(|(station, sightings)| json(&AtStation { station, sightings })).transpose()
        }
    })
    .await
}
