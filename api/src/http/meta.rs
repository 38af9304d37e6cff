//! `/health-check` and `/openapi.json`.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use bytes::Bytes;
use http::{HeaderValue, header};

use super::error::ApiError;
use super::request::Endpoint;
use super::respond::serve;
use super::state::AppState;

/// The OpenAPI 3.1 description of the API.
pub(crate) const OPENAPI: &str = include_str!("../../openapi.json");

/// The routes of this group.
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/health-check", get(health)).route("/openapi.json", get(openapi))
}

/// Liveness, and with `?deep=1` the database too, with the build id of the code answering (the
/// warmer reads it to notice deploys). Never cached anywhere.
async fn health(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let mut deep = false;
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name == "deep" {
            deep = match value.as_ref() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return no_store(ApiError::BadRequest {
                        message: "query parameter `deep` must be 1, true, 0 or false".into(),
                        cache_control: HeaderValue::from_static("no-store"),
                    });
                }
            };
        }
    }
    if deep {
        if let Err(err) = state.store.ping().await {
            tracing::warn!(error = %plumbing::error_chain(&err), "deep health check failed");
            return ApiError::Unavailable.into_response();
        }
        return no_store(Json(
            serde_json::json!({ "status": "ok", "database": "ok", "build": state.http.identity.build, "settings": state.http.identity.settings }),
        ));
    }
    no_store(Json(
        serde_json::json!({ "status": "ok", "build": state.http.identity.build, "settings": state.http.identity.settings }),
    ))
}

/// What `/openapi.json` answers, for the document itself (`/health-check` is not a policy route,
/// and `crate::openapi` describes it).
#[cfg(feature = "openapi")]
pub(crate) fn document(docs: &mut crate::openapi::Docs) {
    let body = serde_json::json!({
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": { "openapi": { "type": "string", "pattern": "^3\\.1\\." } },
    });
    docs.route_with_schema(
        crate::openapi::Route {
            name: "openapi",
            operation_id: "openapi",
            summary: "This document",
            ok: "OpenAPI 3.1 document",
            not_found: false,
            params: &[],
        },
        body,
    );
}

fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn openapi(State(state): State<AppState>, endpoint: Endpoint) -> Response {
    serve(&state, endpoint, "no such document", |_, _, _| async {
        Ok(store::Read { value: Some(Bytes::from_static(OPENAPI.as_bytes())), position: None, version: None })
    })
    .await
}
