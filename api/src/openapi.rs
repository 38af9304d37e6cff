//! `openapi.json`, built from what the API is made of: its paths, path parameters and query
//! parameters from the cache policy, its answers' schemas from the types the handlers serialize
//! (derived with `schemars`), and each route's summary from the handler that serves it.
//!
//! The binary serves the committed `api/openapi.json`; a test builds the document here and fails
//! when the two differ, so a route cannot be added, changed or removed without its description
//! following. Behind the `openapi` feature: no deployed build links it.

use std::collections::BTreeMap;

use cache_policy::{ParamKind, Policy, QueryKind};
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

/// The descriptions the route groups give, collected by policy route name, and the schemas of the
/// types they name.
#[derive(Debug)]
pub(crate) struct Docs {
    generator: SchemaGenerator,
    /// Each route's description and its `200`'s body, by policy route name.
    routes: BTreeMap<&'static str, (Route, Value)>,
    duplicates: Vec<&'static str>,
}

/// A route's description, as its handler module gives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    /// The route's name in the policy.
    pub(crate) name: &'static str,
    /// The OpenAPI `operationId`.
    pub(crate) operation_id: &'static str,
    /// One line on what it returns.
    pub(crate) summary: &'static str,
    /// What its `200` holds.
    pub(crate) ok: &'static str,
    /// Whether it answers `404` for a resource that does not exist.
    pub(crate) not_found: bool,
    /// Each path parameter's description.
    pub(crate) params: &'static [(&'static str, &'static str)],
}

impl Docs {
    fn new() -> Self {
        let settings = SchemaSettings::draft2020_12().for_serialize().with(|s| {
            s.definitions_path = "/components/schemas".into();
            s.meta_schema = None;
        });
        Self { generator: settings.into_generator(), routes: BTreeMap::new(), duplicates: Vec::new() }
    }

    /// Documents a route whose `200` body is a `T`.
    pub(crate) fn route<T: JsonSchema>(&mut self, route: Route) {
        let body = self.generator.subschema_for::<T>().to_value();
        self.insert(route, body);
    }

    /// Documents a route whose `200` body has a schema no type of this crate describes.
    pub(crate) fn route_with_schema(&mut self, route: Route, body: Value) {
        self.insert(route, body);
    }

    fn insert(&mut self, route: Route, body: Value) {
        if self.routes.insert(route.name, (route, body)).is_some() {
            self.duplicates.push(route.name);
        }
    }
}

/// Why the document cannot be built: the policy and the handlers' descriptions disagree.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// A policy route that no handler describes.
    #[error("the policy's route `{0}` has no description: add it to its handler's `document`")]
    Undocumented(String),
    /// A description of a route the policy does not declare.
    #[error("`{0}` is described but the policy has no such route")]
    Unknown(String),
    /// A route described twice.
    #[error("the route `{0}` is described twice")]
    Duplicate(String),
    /// A path parameter without a description, or a description of one the path lacks.
    #[error("the route `{route}`: parameter `{param}` {problem}")]
    Parameter {
        /// The route.
        route: String,
        /// The parameter.
        param: String,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// The OpenAPI 3.1 document of the API that `policy` declares.
///
/// # Errors
///
/// [`DocumentError`] when a policy route has no description, or a description names a route or
/// parameter the policy lacks.
pub fn document(policy: &Policy) -> Result<Value, DocumentError> {
    let mut docs = Docs::new();
    crate::http::document(&mut docs);
    if let Some(name) = docs.duplicates.first() {
        return Err(DocumentError::Duplicate((*name).to_owned()));
    }
    let mut paths = Map::new();
    paths.insert("/health-check".into(), health_check());
    for route in policy.routes() {
        let (doc, body) =
            docs.routes.remove(route.name.as_str()).ok_or_else(|| DocumentError::Undocumented(route.name.clone()))?;
        paths.insert(route.path.as_str().to_owned(), path_item(route, &doc, body)?);
    }
    if let Some(name) = docs.routes.keys().next() {
        return Err(DocumentError::Unknown((*name).to_owned()));
    }
    let mut schemas: Map<String, Value> = docs.generator.take_definitions(true).into_iter().collect();
    schemas.insert("Error".into(), error_schema());
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "edgerail",
            "version": "1.0.0",
            "description": "Read API for railway operations: lines, stations, formations, operations and sightings. \
                Every 200 carries Cache-Control from the route's cache policy, a strong ETag (If-None-Match gives 304) \
                and the cache tags of the data it shows. Dates are service days in the configured time zone, rolling \
                over at the configured day start (Asia/Tokyo, 04:00 by default). Query parameters that are not \
                declared are ignored."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "IfNoneMatch": { "name": "If-None-Match", "in": "header", "required": false, "schema": { "type": "string" } }
            },
            "headers": cache_headers(),
            "responses": responses(),
        },
    }))
}

/// One policy route's path item: its parameters from the policy, its answers by rule.
fn path_item(route: &cache_policy::Route, doc: &Route, body: Value) -> Result<Value, DocumentError> {
    let problem =
        |param: &str, problem| DocumentError::Parameter { route: route.name.clone(), param: param.to_owned(), problem };
    let mut parameters = Vec::new();
    for (name, kind) in &route.params {
        let description = doc
            .params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| *d)
            .ok_or_else(|| problem(name, "is not described"))?;
        let mut parameter = json!({
            "name": name,
            "in": "path",
            "required": true,
            "description": description,
            "schema": param_schema(*kind),
        });
        if *kind == ParamKind::DateOrToday {
            parameter["schema"]["examples"] = json!(["2026-11-28", "today"]);
        }
        parameters.push(parameter);
    }
    if let Some((name, _)) = doc.params.iter().find(|(n, _)| !route.params.iter().any(|(p, _)| p == n)) {
        return Err(problem(name, "is described but not in the path"));
    }
    for query in &route.query {
        let QueryKind::Integer { min, max, default } = query.kind;
        parameters.push(json!({
            "name": query.name,
            "in": "query",
            "required": false,
            "schema": { "type": "integer", "minimum": min, "maximum": max, "default": default },
        }));
    }
    parameters.push(json!({ "$ref": "#/components/parameters/IfNoneMatch" }));

    let today = route.params.iter().any(|(_, kind)| *kind == ParamKind::DateOrToday);
    let ok = if today {
        format!("{} With `today`, the TTLs end at the service-day rollover.", doc.ok)
    } else {
        doc.ok.to_owned()
    };
    let headers: Map<String, Value> = CACHE_HEADERS
        .iter()
        .map(|(name, component, _, _)| {
            ((*name).to_owned(), json!({ "$ref": format!("#/components/headers/{component}") }))
        })
        .collect();
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({ "description": ok, "headers": headers, "content": { "application/json": { "schema": body } } }),
    );
    responses.insert("304".into(), json!({ "$ref": "#/components/responses/NotModified" }));
    if !route.params.is_empty() || !route.query.is_empty() {
        responses.insert("400".into(), json!({ "$ref": "#/components/responses/BadRequest" }));
    }
    if doc.not_found {
        responses.insert("404".into(), json!({ "$ref": "#/components/responses/NotFound" }));
    }
    responses.insert("503".into(), json!({ "$ref": "#/components/responses/Unavailable" }));
    Ok(json!({
        "get": {
            "operationId": doc.operation_id,
            "summary": doc.summary,
            "parameters": parameters,
            "responses": responses,
        }
    }))
}

/// What a path parameter of `kind` accepts, as the request validation checks it.
fn param_schema(kind: ParamKind) -> Value {
    let date = json!({ "type": "string", "format": "date" });
    match kind {
        ParamKind::Id => json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" }),
        ParamKind::Date => date,
        ParamKind::DateOrToday => json!({ "anyOf": [date, { "type": "string", "const": "today" }] }),
    }
}

/// The headers every policy route's `200` carries: name, component, description, and the values a
/// header with a closed set of them takes (a plain string otherwise).
const CACHE_HEADERS: [(&str, &str, &str, &[&str]); 6] = [
    (
        "Cache-Control",
        "CacheControl",
        "public, max-age=B, s-maxage=E, stale-while-revalidate=S, stale-if-error=X from the route's policy",
        &[],
    ),
    ("ETag", "ETag", "Strong validator of the representation", &[]),
    ("Cache-Tag", "CacheTag", "Comma-separated cache tags (header name configurable with CACHE_TAG_HEADER)", &[]),
    ("x-local-cache", "XLocalCache", "In-process cache outcome", &["hit", "miss", "stale"]),
    ("Server-Timing", "ServerTiming", "Time spent in the database (db;dur=ms)", &[]),
    (
        "x-edgerail-version",
        "XEdgerailVersion",
        "Which data the answer shows: it reflects every change this version of the database sees \
         (PostgreSQL: the snapshot xmin:xmax:xip its read saw at least; SQLite: the last change id)",
        &[],
    ),
];

fn cache_headers() -> Value {
    let headers: Map<String, Value> = CACHE_HEADERS
        .iter()
        .map(|(_, component, description, values)| {
            let schema = if values.is_empty() {
                json!({ "type": "string" })
            } else {
                json!({ "type": "string", "enum": values })
            };
            ((*component).to_owned(), json!({ "description": description, "schema": schema }))
        })
        .collect();
    Value::Object(headers)
}

fn responses() -> Value {
    let error = json!({ "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } });
    json!({
        "NotModified": { "description": "The If-None-Match validator matches" },
        "BadRequest": { "description": "A malformed parameter", "content": error },
        "NotFound": { "description": "No such resource (negatively cached for a few seconds)", "content": error },
        "Unavailable": {
            "description": "The database is unavailable; retry after Retry-After seconds",
            "headers": { "Retry-After": { "schema": { "type": "integer" } } },
            "content": error,
        },
    })
}

/// Every error answer's body (`http::error`).
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "enum": ["bad_request", "not_found", "method_not_allowed", "unavailable", "internal"],
                    },
                    "message": { "type": "string" },
                },
            }
        },
    })
}

/// `/health-check`, which is not a policy route (never cached).
fn health_check() -> Value {
    json!({
        "get": {
            "operationId": "healthCheck",
            "summary": "Liveness and the build id; with deep=1 the database too",
            "parameters": [{
                "name": "deep",
                "in": "query",
                "required": false,
                "schema": { "type": "string", "enum": ["1", "true", "0", "false"] },
            }],
            "responses": {
                "200": {
                    "description": "Healthy",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["status", "build", "settings"],
                        "properties": {
                            "status": { "const": "ok" },
                            "database": { "const": "ok" },
                            "build": {
                                "type": "string",
                                "description": "Build id of the code answering: a hash of its sources, or BUILD_ID",
                            },
                            "settings": {
                                "type": "string",
                                "description": "A hash of the settings that shape answers (the service calendar, the tag header)",
                            },
                        },
                    } } },
                },
                "400": { "$ref": "#/components/responses/BadRequest" },
                "503": { "$ref": "#/components/responses/Unavailable" },
            },
        }
    })
}
