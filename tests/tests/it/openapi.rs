//! `openapi.json` cannot drift from the API: it is generated from the policy and the answer types
//! (`api::openapi::document`) and must equal what is committed, every answer the contract tests
//! receive is validated against the document's schema for that path and status, and a request the
//! document calls valid is never rejected (nor one it calls invalid accepted).

use serde_json::Value;

use crate::helpers::{Backend, TestApp, assert_generated};

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.json")).unwrap();
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

/// A validator for `schema`, with the document's components in reach of its `$ref`s.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut schema = schema.clone();
    schema["components"] = doc["components"].clone();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("not a valid schema: {e}"))
}

/// Follows a local `$ref` (`#/a/b`) inside the document.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("not a local reference: {reference}"));
            resolve(doc, doc.pointer(pointer).unwrap_or_else(|| panic!("dangling reference {reference}")))
        }
        None => value,
    }
}

/// The document's path template that `path` matches (`/v1/formations/10701F` → `/v1/formations/{formation_id}`).
fn template_of(doc: &Value, path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"].as_object().unwrap().keys().find_map(|template| {
        let parts: Vec<&str> = template.split('/').collect();
        let fits = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
        fits.then(|| template.clone())
    })
}

/// Asserts that a JSON answer to `GET uri` with `status` is what the document describes.
pub fn assert_conforms(uri: &str, status: u16, body: &[u8]) {
    let doc = document();
    let path = uri.split('?').next().unwrap();
    let template = template_of(&doc, path).unwrap_or_else(|| panic!("{path} is not in openapi.json"));
    let responses = &doc["paths"][&template]["get"]["responses"];
    let response = responses
        .get(status.to_string())
        .unwrap_or_else(|| panic!("openapi.json does not document {status} for {template}"));
    let response = resolve(&doc, response);
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        assert!(body.is_empty(), "{uri}: {status} is documented without a body");
        return;
    };
    let instance: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{uri}: not JSON: {e}"));
    let validator = validator(&doc, schema);
    let errors: Vec<String> =
        validator.iter_errors(&instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{uri} ({status}) does not match openapi.json: {errors:#?}");
}

/// The schema of a path parameter of a template.
fn parameter_validator(doc: &Value, template: &str, name: &str) -> jsonschema::Validator {
    let item = &doc["paths"][template];
    let params =
        item.get("parameters").into_iter().chain(item["get"].get("parameters")).flat_map(|p| p.as_array().unwrap());
    let param = params
        .map(|p| resolve(doc, p))
        .find(|p| p["name"] == name && p["in"] == "path")
        .unwrap_or_else(|| panic!("{template} documents no path parameter {name}"));
    validator(doc, &param["schema"])
}

crate::both_backends!(schema_valid_dates_are_accepted_and_invalid_ones_rejected);

/// Every date the document allows is answered on both backends, at the extremes too (PostgreSQL
/// has no year 0, and the last day's end bound lies in year 10000): never a `500`.
async fn schema_valid_dates_are_accepted_and_invalid_ones_rejected(backend: Backend) {
    let doc = document();
    let app = TestApp::new(backend).await;
    let date = parameter_validator(&doc, "/v1/operations/{date}", "date");
    let valid = ["2026-11-28", "today", "0000-01-01", "9999-12-31", "2024-02-29"];
    let invalid = ["0000-00-00", "2026-13-01", "2026-1-1", "tomorrow", "2026-11-28T00:00:00Z", ""];
    for value in valid {
        assert!(date.is_valid(&Value::from(value)), "the document calls {value:?} invalid");
        let uri = format!("/v1/operations/{value}");
        let res = app.get(&uri).await;
        assert_eq!(res.status, 200, "{uri}: a schema-valid date was rejected: {:?}", res.body);
        assert_conforms(&uri, 200, &res.body);
        let uri = format!("/v1/operations/{value}/01A");
        let res = app.get(&uri).await;
        assert!(matches!(res.status.as_u16(), 200 | 404), "{uri}: {} {:?}", res.status, res.body);
        assert_conforms(&uri, res.status.as_u16(), &res.body);
    }
    for value in invalid {
        assert!(!date.is_valid(&Value::from(value)), "the document calls {value:?} valid");
        if value.is_empty() {
            continue;
        }
        let uri = format!("/v1/operations/{value}");
        let res = app.get(&uri).await;
        assert_eq!(res.status, 400, "{uri}");
        assert_conforms(&uri, 400, &res.body);
    }
    let id = parameter_validator(&doc, "/v1/formations/{formation_id}", "formation_id");
    for (value, ok) in [("10701F", true), ("a.b_c-d", true), ("a b", false), ("", false)] {
        assert_eq!(id.is_valid(&Value::from(value)), ok, "{value:?}");
    }
}

#[test]
fn the_committed_document_is_the_one_built_from_the_policy_and_the_types() {
    let policy = cache_policy::Policy::embedded().unwrap();
    let generated = serde_json::to_string_pretty(&api::openapi::document(policy).unwrap()).unwrap() + "\n";
    assert_generated("api/openapi.json", &generated, "the_committed_document");
}

#[test]
fn a_route_the_handlers_do_not_describe_is_an_error_naming_it() {
    let text = format!(
        "{}\n[[route]]\nname = \"extra\"\npath = \"/v1/extra\"\nbrowser_ttl = \"1s\"\nedge_ttl = \"1s\"\nswr = \"1s\"\nsie = \"1s\"\nlocal_ttl = \"1s\"\ntags = [\"lines\"]\nwarm = false\n",
        cache_policy::EMBEDDED_POLICY
    );
    let policy = cache_policy::Policy::from_toml(&text).unwrap();
    let err = api::openapi::document(&policy).unwrap_err();
    assert!(err.to_string().contains("`extra`"), "{err}");
}
