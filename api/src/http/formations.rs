//! `/v1/formations` and `/v1/formations/{formation_id}`.

use axum::extract::State;
use axum::response::Response;
use axum::{Router, routing::get};
use serde::Serialize;

use super::request::Endpoint;
use super::respond::{json, serve};
use super::state::AppState;
use store::{FormationSummary, Store};

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1/formations", get(list)).route("/v1/formations/{formation_id}", get(one))
}

async fn list(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    #[derive(Serialize)]
    struct Formations {
        formations: Vec<FormationSummary>,
    }
    serve(&state, endpoint, "no such formation", |store, _| async move {
        json(&Formations { formations: store.formations().await? }).map(Some)
    })
    .await
}

async fn one(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    serve(&state, endpoint, "no such formation", |store, endpoint| {
        let id = endpoint.param("formation_id").to_owned();
        async move { store.formation(&id).await?.map(|f| json(&f)).transpose() }
    })
    .await
}
