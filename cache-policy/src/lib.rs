//! `cache-policy`: the one place where each edgerail endpoint's caching is declared.
//!
//! `policy.toml` (embedded at compile time) says, per route, how long browsers, the edge and the
//! in-process cache may keep an answer, which query parameters exist, which cache tags an answer
//! carries and whether the warmer keeps it warm; and, per table, which tags a written row touches
//! (the database's triggers are generated from that, and validation checks that the two sides
//! name the same tags). Every binary loads it through [`Policy::embedded`],
//! which validates it, so a policy mistake stops a deploy instead of mis-caching production.
//!
//! The crate is pure: no I/O, no clock, no async. That keeps the rules testable as plain functions.
//!
//! # Layout
//!
//! - [`duration`]: `30s` / `1d` style durations, shared with the binaries' configuration.
//! - [`template`]: path templates, tag templates and route parameter kinds.
//! - [`model`]: the typed [`Policy`] and [`Route`], loading and validation, `Cache-Control` rendering.
//! - [`plan`]: the invalidation planner (cache tags or paths, within CloudFront's limits).
//! - [`cost`]: what invalidation paths cost, and the policy once the month's budget is spent.
//!
//! # Example
//!
//! ```
//! let policy = cache_policy::Policy::embedded().expect("the embedded policy is valid");
//! let route = policy.route("formation").unwrap();
//! let tags = route.render_tags(|p| (p == "formation_id").then_some("10701F"));
//! assert_eq!(tags, ["formation:10701F"]);
//! assert!(route.cache_control().starts_with("public, max-age="));
//! ```

pub mod cost;
pub mod duration;
pub mod model;
pub mod plan;
pub mod template;

use std::sync::LazyLock;

pub use duration::{DurationError, format_duration, parse_duration};
pub use model::{
    ColumnKind, Policy, PolicyError, QueryKind, QueryParam, Route, Table, TableTag, negative_cache_control,
};
pub use template::{ANY, ParamKind, PathTemplate, Segment, TagPart, TagTemplate, is_family, is_tag_char, tag_covers};

/// The request header that marks the warmer's own fetches. The edge forwards it to the origin
/// (it is not part of any cache key), and the API does not count such a fetch in the learned warm
/// set, which would otherwise feed on itself.
pub const WARM_HEADER: &str = "x-edgerail-warm";

/// The response header that says which data an answer shows: it reflects every change this
/// version of the database sees (on PostgreSQL a snapshot, `xmin:xmax:xip`; on SQLite the last
/// change id). The edge passes it on like any header, so the warmer reads it through the edge.
pub const VERSION_HEADER: &str = "x-edgerail-version";

/// The policy text compiled into every binary.
pub const EMBEDDED_POLICY: &str = include_str!("../policy.toml");

static EMBEDDED: LazyLock<Result<Policy, PolicyError>> = LazyLock::new(|| Policy::from_toml(EMBEDDED_POLICY));

impl Policy {
    /// The embedded `policy.toml`, parsed and validated once per process.
    ///
    /// # Errors
    ///
    /// The validation error, should the embedded file be invalid (a test in this crate keeps that
    /// from ever shipping).
    pub fn embedded() -> Result<&'static Policy, &'static PolicyError> {
        EMBEDDED.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy_with(route_body: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml(&format!(
            "[[route]]\nname = \"r\"\nbrowser_ttl = \"1s\"\nedge_ttl = \"1h\"\nswr = \"1s\"\nsie = \"1s\"\nlocal_ttl = \"1s\"\nwarm = false\n{route_body}"
        ))
    }

    #[test]
    fn embedded_policy_is_valid_and_covers_every_v1_route() {
        let policy = Policy::embedded().unwrap();
        let paths: Vec<_> = policy.routes().iter().map(|r| r.path.as_str()).collect();
        for expected in [
            "/v1/lines",
            "/v1/lines/{line_id}/stations",
            "/v1/formations",
            "/v1/formations/{formation_id}",
            "/v1/operations/{date}",
            "/v1/operations/{date}/{number}",
            "/v1/sightings/latest",
            "/openapi.json",
        ] {
            assert!(paths.contains(&expected), "{expected} missing from policy.toml");
        }
        for route in policy.routes() {
            assert!(!route.local_ttl.is_zero(), "{}", route.name);
        }
    }

    #[test]
    fn renders_cache_control_headers() {
        let policy = Policy::embedded().unwrap();
        let lines = policy.route("lines").unwrap();
        assert_eq!(
            lines.cache_control(),
            "public, max-age=60, s-maxage=86400, stale-while-revalidate=60, stale-if-error=86400"
        );
        assert_eq!(lines.negative_cache_control(), "public, max-age=0, s-maxage=10");
        assert_eq!(lines.cache_control_until(Duration::from_secs(30)), "public, max-age=30, s-maxage=30");
        let latest = policy.route("sightings_latest").unwrap();
        assert_eq!(latest.negative_cache_control(), "public, max-age=0, s-maxage=5");
    }

    #[test]
    fn renders_tags_for_a_request() {
        let policy = Policy::embedded().unwrap();
        let (route, bound) = policy.match_path("/v1/operations/2026-11-28/0612").unwrap();
        assert_eq!(route.name, "operation");
        let tags = route.render_tags(|p| bound.iter().find(|(k, _)| *k == p).map(|(_, v)| *v));
        assert_eq!(tags, ["operation:2026-11-28:0612"]);
        assert!(policy.match_path("/v1/nope").is_none());
    }

    #[test]
    fn validates_declared_query_parameters() {
        let policy = Policy::embedded().unwrap();
        let limit = &policy.route("sightings_latest").unwrap().query[0];
        assert_eq!(limit.normalize(None).unwrap(), "50");
        assert_eq!(limit.normalize(Some("200")).unwrap(), "200");
        for bad in ["0", "201", "-1", "ten", "", "1e2", "9999999999999999999999"] {
            let err = limit.normalize(Some(bad)).unwrap_err();
            assert!(err.contains("from 1 to 200"), "{err}");
        }
    }

    #[test]
    fn rejects_invalid_policies_with_a_clear_message() {
        let cases = [
            ("path = \"/v1/x/{id}\"\ntags = []", "no kind"),
            ("path = \"/v1/x/{id}\"\nparams = { id = \"uuid\" }\ntags = []", "unknown kind"),
            ("path = \"/v1/x\"\nparams = { id = \"id\" }\ntags = []", "not in the path"),
            ("path = \"/v1/x\"\ntags = [\"formation:{formation_id}\"]", "not a path parameter"),
            ("path = \"/v1/x\"\ntags = [\"has space\"]", "not allowed in a tag"),
            ("path = \"v1/x\"\ntags = []", "must start with"),
            ("path = \"/v1/x\"\ntags = []\nnegative_ttl = \"soon\"", "negative_ttl"),
            (
                "path = \"/v1/x\"\ntags = []\nquery = { limit = { kind = \"integer\", min = 5, max = 1, default = 3 } }",
                "min <= default",
            ),
            ("path = \"/v1/x\"\ntags = []\nquery = { q = { kind = \"text\", default = 1 } }", "unknown kind"),
            ("path = \"/v1/x\"\ntags = []\ncolour = \"red\"", "unknown field"),
        ];
        for (body, expected) in cases {
            let err = policy_with(body).unwrap_err().to_string();
            assert!(err.contains(expected), "{body:?}: {err}");
        }
        let zero_local = Policy::from_toml(
            "[[route]]\nname = \"r\"\npath = \"/x\"\nbrowser_ttl = \"1s\"\nedge_ttl = \"1h\"\nswr = \"1s\"\nsie = \"1s\"\nlocal_ttl = \"0s\"\nwarm = false\ntags = []",
        );
        assert!(zero_local.unwrap_err().to_string().contains("local_ttl must be non-zero"));
        assert!(Policy::from_toml("").unwrap_err().to_string().contains("no [[route]]"));
    }

    #[test]
    fn a_route_parameter_takes_its_values_from_the_table_whose_tag_it_shares() {
        let policy = Policy::embedded().unwrap();
        let source = |route: &str, param: &str| {
            policy.value_source(policy.route(route).unwrap(), param).map(|(t, c)| format!("{}.{c}", t.name))
        };
        assert_eq!(source("line_stations", "line_id").as_deref(), Some("lines.id"));
        assert_eq!(source("formation", "formation_id").as_deref(), Some("formations.id"));
        assert_eq!(source("station_sightings", "station_id").as_deref(), Some("stations.id"));
        assert_eq!(source("operation", "number").as_deref(), Some("operations.number"));
        assert_eq!(source("lines", "line_id"), None, "a route without the parameter");
    }

    #[test]
    fn longest_edge_ttl_is_reported() {
        let policy = Policy::embedded().unwrap();
        assert_eq!(policy.max_edge_ttl(), Duration::from_secs(86_400));
    }

    #[test]
    fn routes_and_tables_name_the_same_tags() {
        let policy = Policy::embedded().unwrap();
        let tables: Vec<_> = policy.tables().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tables, ["lines", "stations", "formations", "operations", "sightings"]);
        let sightings = &policy.tables()[4];
        assert_eq!(sightings.column_kind("seen_at"), ColumnKind::ServiceDay);
        assert_eq!(sightings.column_kind("formation_id"), ColumnKind::Text);

        // A route's tag changed alone: nothing would invalidate its answers.
        let drifted = EMBEDDED_POLICY.replace(
            r#"tags = ["line:{line_id}"]
warm"#,
            r#"tags = ["route-line:{line_id}"]
warm"#,
        );
        assert_ne!(drifted, EMBEDDED_POLICY);
        let err = Policy::from_toml(&drifted).unwrap_err().to_string();
        assert!(err.contains(r#"route "line_stations" carries tag "route-line:{line_id}""#), "{err}");
        assert!(err.contains("stations: line:{line_id}"), "names the other side: {err}");

        // A table's tag changed alone: its writes touch what no answer carries.
        let drifted = EMBEDDED_POLICY.replace(
            "name = \"stations\"\ntags = [\"line:{line_id}\",",
            "name = \"stations\"\ntags = [\"station-line:{line_id}\",",
        );
        assert_ne!(drifted, EMBEDDED_POLICY);
        let err = Policy::from_toml(&drifted).unwrap_err().to_string();
        assert!(err.contains(r#"table "stations" touches tag "station-line:{line_id}""#), "{err}");
        assert!(err.contains("line_stations: line:{line_id}"), "names the other side: {err}");

        // The same shape with the places swapped: a date where the route has the number.
        let swapped = EMBEDDED_POLICY.replace("operation:{service_date}:{number}", "operation:{number}:{service_date}");
        assert!(matches!(Policy::from_toml(&swapped), Err(PolicyError::Vocabulary(_))));
        // A timestamp spelled as text cannot stand for a date parameter.
        let untyped = EMBEDDED_POLICY.replace(r#"columns = { seen_at = "service_day" }"#, "");
        assert!(matches!(Policy::from_toml(&untyped), Err(PolicyError::Vocabulary(_))));
        // Names that the generated SQL would splice are plain identifiers.
        let bad = EMBEDDED_POLICY.replace(r#"name = "stations""#, r#"name = "stations; DROP""#);
        assert!(matches!(Policy::from_toml(&bad), Err(PolicyError::Table { .. })));
        let bad = EMBEDDED_POLICY.replace("    \"formation:{formation_id}\",\n", "    \"formation:{Formation_Id}\",\n");
        assert_ne!(bad, EMBEDDED_POLICY);
        assert!(matches!(Policy::from_toml(&bad), Err(PolicyError::Table { .. })));
    }
    #[test]
    fn a_truncate_touches_every_tag_its_rows_could_carry() {
        let policy = Policy::embedded().unwrap();
        let sightings = &policy.tables()[4];
        assert_eq!(
            sightings.families(),
            ["sightings", "formations", "formation:*", "operations:*", "operation:*:*", "station:*"]
        );
        // Every tag an answer carries for any row of the table is covered by one of the families.
        for table in policy.tables() {
            let families = table.families();
            for tag in &table.tags {
                let rendered = tag.template.render(|_| Some("2026-11-28")).unwrap();
                assert!(families.iter().any(|f| tag_covers(f, &rendered)), "{}: {rendered}", table.name);
            }
        }
    }
}
