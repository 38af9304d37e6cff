//! `/v1/formations` and `/v1/formations/{formation_id}`.

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::get};
use serde::Serialize;

use super::request::Endpoint;
use super::respond::{json, serve};
use super::state::AppState;
use store::FormationSummary;

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/formations", get(list)).route("/v1/formations/{formation_id}", get(one))
}

// `/v1/formations`.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", schemars(inline))]
struct Formations {
    formations: Vec<FormationSummary>,
}

/// What these routes answer, for `openapi.json`.
#[cfg(feature = "openapi")]
pub(crate) fn document(docs: &mut crate::openapi::Docs) {
    use crate::openapi::Route;
    docs.route::<Formations>(Route {
        name: "formations",
        operation_id: "listFormations",
        summary: "All formations with their latest sighting",
        ok: "All formations, ordered by id",
        not_found: false,
        params: &[],
    });
    docs.route::<store::FormationDetail>(Route {
        name: "formation",
        operation_id: "getFormation",
        summary: "One formation with its 20 latest sightings",
        ok: "The formation",
        not_found: true,
        params: &[("formation_id", "Formation number, e.g. 10701F")],
    });
}

async fn list(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    serve(&state, endpoint, "no such formation", |store, _, position| async move {
        store.formations(position).await?.try_map(|formations| json(&Formations { formations }).map(Some))
    })
    .await
}

async fn one(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    serve(&state, endpoint, "no such formation", |store, endpoint, position| {
        let id = endpoint.param("formation_id").to_owned();
        async move { store.formation(&id, position).await?.try_map(|f| f.map(|f| json(&f)).transpose()) }
    })
    .await
}
