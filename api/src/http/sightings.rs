//! `/v1/sightings/latest?limit=1..200` and `/v1/stations/{station_id}/sightings?limit=1..200`.

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::get};
use serde::Serialize;

use super::request::Endpoint;
use super::respond::{json, serve};
use super::state::AppState;
use store::{Sighting, Station};

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sightings/latest", get(latest))
        .route("/v1/stations/{station_id}/sightings", get(at_station))
}

// `/v1/sightings/latest`.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(inline))]
struct Latest {
    sightings: Vec<Sighting>,
}

// `/v1/stations/{station_id}/sightings`.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(inline))]
struct AtStation {
    station: Station,
    sightings: Vec<Sighting>,
}

/// What these routes answer, for `openapi.json`.
#[cfg(feature = "openapi")]
pub(crate) fn document(docs: &mut crate::openapi::Docs) {
    use crate::openapi::Route;
    docs.route::<Latest>(Route {
        name: "sightings_latest",
        operation_id: "latestSightings",
        summary: "The latest sightings",
        ok: "Newest first",
        not_found: false,
        params: &[],
    });
    docs.route::<AtStation>(Route {
        name: "station_sightings",
        operation_id: "stationSightings",
        summary: "The latest sightings at a station",
        ok: "Newest first",
        not_found: true,
        params: &[("station_id", "Station id")],
    });
}

async fn latest(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    let limit = endpoint.query_int("limit");
    serve(&state, endpoint, "no sightings", |store, _, position| async move {
        store.latest_sightings(limit, position).await?.try_map(|sightings| json(&Latest { sightings }).map(Some))
    })
    .await
}

async fn at_station(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    let limit = endpoint.query_int("limit");
    serve(&state, endpoint, "no such station", |store, endpoint, position| {
        let id = endpoint.param("station_id").to_owned();
        async move {
            let found = store.station_sightings(&id, limit, position).await?;
            found.try_map(|found| found.map(|(station, sightings)| json(&AtStation { station, sightings })).transpose())
        }
    })
    .await
}
