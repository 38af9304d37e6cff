//! The typed, validated policy model and its loading from TOML.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use crate::template::{ParamKind, PathTemplate, TagPart, TagTemplate};
use crate::{DurationError, parse_duration};

/// Why a policy could not be loaded. Every variant names the route and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The TOML is malformed or has unknown or missing fields.
    #[error("policy is not valid TOML for this schema: {0}")]
    Syntax(String),
    /// A duration field could not be parsed.
    #[error("route {route:?}, field {field}: {source}")]
    Duration {
        /// Route name (or `defaults`).
        route: String,
        /// Field name.
        field: &'static str,
        /// The parse error.
        source: DurationError,
    },
    /// Any other inconsistency.
    #[error("route {route:?}: {message}")]
    Invalid {
        /// Route name.
        route: String,
        /// What is wrong.
        message: String,
    },
    /// A table declaration is malformed.
    #[error("table {table:?}: {message}")]
    Table {
        /// Table name.
        table: String,
        /// What is wrong.
        message: String,
    },
    /// The routes' tags and the tables' tags disagree: a tag a route carries that no write
    /// touches (its answers would never be invalidated), or one a write touches that no route
    /// carries (a table's declaration drifted from the routes). The message names both sides.
    #[error("tag vocabulary: {0}")]
    Vocabulary(String),
}

/// How a table's column is spelled in a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// The value as text.
    Text,
    /// A date, as `YYYY-MM-DD`.
    Date,
    /// A timestamp, as the service day (`YYYY-MM-DD`) it falls in under the service calendar.
    ServiceDay,
}

impl ColumnKind {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "text" => Some(Self::Text),
            "date" => Some(Self::Date),
            "service_day" => Some(Self::ServiceDay),
            _ => None,
        }
    }

    /// Whether a route parameter of `kind` takes values of this column's spelling.
    fn fits(self, kind: ParamKind) -> bool {
        match self {
            Self::Text => kind == ParamKind::Id,
            Self::Date | Self::ServiceDay => matches!(kind, ParamKind::Date | ParamKind::DateOrToday),
        }
    }
}

/// A table the routes read: the tags a written row (inserted, updated from or to, deleted,
/// replaced or truncated) touches. The database's triggers are generated from this declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The table's name.
    pub name: String,
    /// How each column a tag uses is spelled (columns not listed are text).
    pub columns: Vec<(String, ColumnKind)>,
    /// The tags, bound to the row's columns.
    pub tags: Vec<TableTag>,
}

/// One tag a table's written row touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTag {
    /// The template, bound to the row's columns. When a column it uses is `NULL` in the row, the
    /// tag is not touched.
    pub template: TagTemplate,
    /// A column that must not be `NULL` for the tag to be touched, though the tag does not show it
    /// (a sighting touches its day's operations only when it names an operation).
    pub when: Option<String>,
}

impl Table {
    /// How `column` is spelled in a tag.
    pub fn column_kind(&self, column: &str) -> ColumnKind {
        self.columns.iter().find(|(c, _)| c == column).map_or(ColumnKind::Text, |(_, k)| *k)
    }

    /// What a `TRUNCATE` of the table touches: every tag a row of it can touch, each as its family
    /// ([`TagTemplate::family`]), once. Recording these costs the same whatever the table holds,
    /// where computing the removed rows' own tags reads all of them while the table is locked.
    pub fn families(&self) -> Vec<String> {
        let mut families: Vec<String> = Vec::new();
        for tag in &self.tags {
            let family = tag.template.family();
            if !families.contains(&family) {
                families.push(family);
            }
        }
        families
    }
}

/// Whether `produced` (a table's tag) renders the same tags as `carried` (a route's): the same
/// literal pieces in the same places, and each column spelled as the route parameter in its place
/// is written.
fn same_tag(table: &Table, produced: &TagTemplate, route: &Route, carried: &TagTemplate) -> bool {
    produced.parts().len() == carried.parts().len()
        && produced.parts().iter().zip(carried.parts()).all(|pair| match pair {
            (TagPart::Literal(a), TagPart::Literal(b)) => a == b,
            (TagPart::Param(column), TagPart::Param(param)) => {
                route.param_kind(param).is_some_and(|kind| table.column_kind(column).fits(kind))
            }
            _ => false,
        })
}

/// SQL identifiers the generated triggers may name: lower-case letters, digits and `_`.
fn is_sql_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A declared query parameter's type and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// A decimal integer within `min..=max`, `default` when absent.
    Integer {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
        /// Value used when the parameter is absent.
        default: i64,
    },
}

/// A declared query parameter: it is validated, and it is part of the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryParam {
    /// The parameter's name in the query string.
    pub name: String,
    /// Type and bounds.
    pub kind: QueryKind,
}

impl QueryParam {
    /// Validates a raw value (or its absence) and returns the canonical text used in cache keys.
    ///
    /// # Errors
    ///
    /// A human-readable reason for a `400`.
    pub fn normalize(&self, raw: Option<&str>) -> Result<String, String> {
        match self.kind {
            QueryKind::Integer { min, max, default } => {
                let value = match raw {
                    None => default,
                    Some(text) => text.parse::<i64>().ok().filter(|v| (min..=max).contains(v)).ok_or_else(|| {
                        format!("query parameter `{}` must be an integer from {min} to {max}", self.name)
                    })?,
                };
                Ok(value.to_string())
            }
        }
    }
}

/// One endpoint's caching, fully validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Stable name, used as the in-process cache key prefix and in logs.
    pub name: String,
    /// The path template.
    pub path: PathTemplate,
    /// Kind of each route parameter, in path order.
    pub params: Vec<(String, ParamKind)>,
    /// `max-age`: browsers cannot be invalidated, so this stays short.
    pub browser_ttl: Duration,
    /// `s-maxage`: the edge is invalidated on change, so this can be long.
    pub edge_ttl: Duration,
    /// `stale-while-revalidate`.
    pub swr: Duration,
    /// `stale-if-error`; also how long the in-process cache keeps an expired copy for failures.
    pub sie: Duration,
    /// In-process cache TTL.
    pub local_ttl: Duration,
    /// `s-maxage` of `400`/`404` answers.
    pub negative_ttl: Duration,
    /// Declared query parameters, sorted by name so cache keys are canonical.
    pub query: Vec<QueryParam>,
    /// Tag templates, bound to route parameters.
    pub tags: Vec<TagTemplate>,
    /// Whether the warmer keeps this route's paths warm.
    pub warm: bool,
}

impl Route {
    /// The `Cache-Control` value of a `200` from this route.
    pub fn cache_control(&self) -> String {
        format!(
            "public, max-age={}, s-maxage={}, stale-while-revalidate={}, stale-if-error={}",
            self.browser_ttl.as_secs(),
            self.edge_ttl.as_secs(),
            self.swr.as_secs(),
            self.sie.as_secs()
        )
    }

    /// The `Cache-Control` value of a `200` whose content stops being valid in `remaining`
    /// (the `today` alias at the service-day rollover). No stale serving is allowed: a stale copy
    /// would be the previous day's.
    pub fn cache_control_until(&self, remaining: Duration) -> String {
        format!(
            "public, max-age={}, s-maxage={}",
            self.browser_ttl.min(remaining).as_secs(),
            self.edge_ttl.min(remaining).as_secs()
        )
    }

    /// The `Cache-Control` value of a `400`/`404` from this route: brief, at the edge only.
    pub fn negative_cache_control(&self) -> String {
        negative_cache_control(self.negative_ttl)
    }

    /// The kind of a route parameter.
    pub fn param_kind(&self, name: &str) -> Option<ParamKind> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, k)| *k)
    }

    /// The response's tags for concrete parameter values.
    pub fn render_tags<'v>(&self, lookup: impl Fn(&str) -> Option<&'v str> + Copy) -> Vec<String> {
        // Validation guarantees every template parameter is a route parameter, so rendering only
        // fails if the caller passes incomplete bindings; such a tag is dropped, not invented.
        self.tags.iter().filter_map(|t| t.render(lookup)).collect()
    }
}

/// The `Cache-Control` value of a negative answer cached for `ttl` at the edge.
pub fn negative_cache_control(ttl: Duration) -> String {
    format!("public, max-age=0, s-maxage={}", ttl.as_secs())
}

/// The whole policy: every route, in declaration order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Routes in declaration order.
    routes: Vec<Route>,
    /// Negative TTL for answers that belong to no route (unknown paths).
    default_negative_ttl: Duration,
    /// The tables the routes read, with the tags their writes touch.
    tables: Vec<Table>,
}

impl Policy {
    /// Parses and validates a policy.
    ///
    /// # Errors
    ///
    /// [`PolicyError`] naming the route and field at fault.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let default_negative_ttl = match raw.defaults.negative_ttl.as_deref() {
            Some(text) => duration("defaults", "negative_ttl", text)?,
            None => Duration::from_secs(10),
        };
        let mut names = HashSet::new();
        let mut paths = HashSet::new();
        let mut routes = Vec::with_capacity(raw.route.len());
        for r in raw.route {
            let invalid = |message: String| PolicyError::Invalid { route: r.name.clone(), message };
            if r.name.is_empty() || !r.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(invalid("a route name is 1+ characters of A-Z a-z 0-9 _".into()));
            }
            if !names.insert(r.name.clone()) {
                return Err(invalid("the route name is declared twice".into()));
            }
            let path = PathTemplate::parse(&r.path).map_err(invalid)?;
            if !paths.insert(r.path.clone()) {
                return Err(invalid(format!("path {} is declared twice", r.path)));
            }
            let mut params = Vec::new();
            for name in path.params() {
                let kind_name = r
                    .params
                    .get(name)
                    .ok_or_else(|| invalid(format!("path parameter `{name}` has no kind in `params`")))?;
                let kind = ParamKind::from_name(kind_name).ok_or_else(|| {
                    invalid(format!("parameter `{name}` has unknown kind {kind_name:?} (id, date, date_or_today)"))
                })?;
                params.push((name.to_owned(), kind));
            }
            if let Some(extra) = r.params.keys().find(|k| !path.params().any(|p| p == k.as_str())) {
                return Err(invalid(format!("`params` declares `{extra}`, which is not in the path")));
            }
            let mut tags = Vec::new();
            for text in &r.tags {
                let tag = TagTemplate::parse(text).map_err(invalid)?;
                if let Some(unbound) = tag.params().find(|p| !path.params().any(|q| q == *p)) {
                    return Err(invalid(format!("tag {text:?} uses `{{{unbound}}}`, which is not a path parameter")));
                }
                tags.push(tag);
            }
            let mut query = Vec::new();
            for (name, q) in r.query {
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(invalid(format!("query parameter name {name:?} is not valid")));
                }
                let kind = match q.kind.as_str() {
                    "integer" => {
                        let (min, max, default) = (q.min.unwrap_or(i64::MIN), q.max.unwrap_or(i64::MAX), q.default);
                        let default =
                            default.ok_or_else(|| invalid(format!("query parameter `{name}` needs a default")))?;
                        if min > max || !(min..=max).contains(&default) {
                            return Err(invalid(format!("query parameter `{name}`: need min <= default <= max")));
                        }
                        QueryKind::Integer { min, max, default }
                    }
                    other => {
                        return Err(invalid(format!("query parameter `{name}` has unknown kind {other:?} (integer)")));
                    }
                };
                query.push(QueryParam { name, kind });
            }
            let d = |field, text: &str| duration(&r.name, field, text);
            let route = Route {
                browser_ttl: d("browser_ttl", &r.browser_ttl)?,
                edge_ttl: d("edge_ttl", &r.edge_ttl)?,
                swr: d("swr", &r.swr)?,
                sie: d("sie", &r.sie)?,
                local_ttl: d("local_ttl", &r.local_ttl)?,
                negative_ttl: match r.negative_ttl.as_deref() {
                    Some(text) => d("negative_ttl", text)?,
                    None => default_negative_ttl,
                },
                name: r.name.clone(),
                path,
                params,
                query,
                tags,
                warm: r.warm,
            };
            if route.local_ttl.is_zero() {
                return Err(invalid("local_ttl must be non-zero: a second of caching absorbs a burst".into()));
            }
            if route.browser_ttl > route.edge_ttl {
                return Err(invalid("browser_ttl must not exceed edge_ttl: browsers cannot be invalidated".into()));
            }
            if route.local_ttl > route.edge_ttl {
                return Err(invalid("local_ttl must not exceed edge_ttl".into()));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return Err(PolicyError::Syntax("the policy declares no [[route]]".into()));
        }
        let tables = raw.table.into_iter().map(Table::from_raw).collect::<Result<Vec<_>, _>>()?;
        let policy = Self { routes, default_negative_ttl, tables };
        if !policy.tables.is_empty() {
            policy.check_vocabulary()?;
        }
        Ok(policy)
    }

    /// Every tag a route carries is touched by some table's writes, and every tag a table's
    /// writes touch is carried by some route. (A policy without tables, such as a test's, has
    /// nothing to check against.)
    fn check_vocabulary(&self) -> Result<(), PolicyError> {
        let mut names = HashSet::new();
        if let Some(twice) = self.tables.iter().find(|t| !names.insert(t.name.as_str())) {
            return Err(PolicyError::Table { table: twice.name.clone(), message: "declared twice".into() });
        }
        for route in &self.routes {
            for carried in &route.tags {
                if !self.tables.iter().any(|t| t.tags.iter().any(|p| same_tag(t, &p.template, route, carried))) {
                    let declared: Vec<String> = self
                        .tables
                        .iter()
                        .flat_map(|t| t.tags.iter().map(move |p| format!("{}: {}", t.name, p.template)))
                        .collect();
                    return Err(PolicyError::Vocabulary(format!(
                        "route {:?} carries tag \"{carried}\", which no table's writes touch, so its answers would \
                         never be invalidated (the tables touch: {})",
                        route.name,
                        declared.join(", ")
                    )));
                }
            }
        }
        for table in &self.tables {
            for produced in table.tags.iter().map(|t| &t.template) {
                if !self.routes.iter().any(|r| r.tags.iter().any(|c| same_tag(table, produced, r, c))) {
                    let carried: Vec<String> = self
                        .routes
                        .iter()
                        .flat_map(|r| r.tags.iter().map(move |c| format!("{}: {c}", r.name)))
                        .collect();
                    return Err(PolicyError::Vocabulary(format!(
                        "table {:?} touches tag \"{produced}\", which no route carries (the routes carry: {})",
                        table.name,
                        carried.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// The tables the routes read, with the tags their writes touch.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// All routes in declaration order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route of this name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name == name)
    }

    /// Where the values of a route's parameter live: the table and column whose tag is the
    /// route's tag in which the parameter appears (`line:{line_id}` is `lines`' `line:{id}`), the
    /// first declared. So the warmer can list a warm route's paths from the tag vocabulary alone.
    pub fn value_source(&self, route: &Route, param: &str) -> Option<(&Table, &str)> {
        route.tags.iter().find_map(|carried| {
            let at = carried.parts().iter().position(|p| matches!(p, TagPart::Param(name) if name == param))?;
            self.tables.iter().find_map(|table| {
                table.tags.iter().filter(|t| same_tag(table, &t.template, route, carried)).find_map(|t| {
                    match t.template.parts().get(at) {
                        Some(TagPart::Param(column)) => Some((table, column.as_str())),
                        _ => None,
                    }
                })
            })
        })
    }

    /// The route whose template matches a concrete path, with the parameter bindings.
    pub fn match_path<'p>(&self, path: &'p str) -> Option<(&Route, Vec<(&str, &'p str)>)> {
        self.routes.iter().find_map(|r| r.path.matches(path).map(|bound| (r, bound)))
    }

    /// Negative TTL of answers that belong to no route.
    pub fn default_negative_ttl(&self) -> Duration {
        self.default_negative_ttl
    }

    /// The longest edge TTL of any route (the CDN's MaxTTL must be at least this).
    pub fn max_edge_ttl(&self) -> Duration {
        self.routes.iter().map(|r| r.edge_ttl).max().unwrap_or_default()
    }

    /// The longest local TTL of a route whose answers the change feed evicts (one that carries
    /// tags): how long an instance may hold an answer that a change later recorded must reach.
    pub fn max_evicted_local_ttl(&self) -> Duration {
        self.routes.iter().filter(|r| !r.tags.is_empty()).map(|r| r.local_ttl).max().unwrap_or_default()
    }
}

fn duration(route: &str, field: &'static str, text: &str) -> Result<Duration, PolicyError> {
    parse_duration(text).map_err(|source| PolicyError::Duration { route: route.to_owned(), field, source })
}

impl Table {
    fn from_raw(raw: RawTable) -> Result<Self, PolicyError> {
        let invalid = |message: String| PolicyError::Table { table: raw.name.clone(), message };
        if !is_sql_name(&raw.name) {
            return Err(invalid("a table name is a lower-case letter, then lower-case letters, digits or _".into()));
        }
        let mut columns = Vec::new();
        for (column, kind) in &raw.columns {
            if !is_sql_name(column) {
                return Err(invalid(format!("column name {column:?} is not a plain SQL name")));
            }
            let kind = ColumnKind::from_name(kind).ok_or_else(|| {
                invalid(format!("column `{column}` has unknown kind {kind:?} (text, date, service_day)"))
            })?;
            columns.push((column.clone(), kind));
        }
        let mut tags = Vec::new();
        for raw_tag in &raw.tags {
            let (text, when) = match raw_tag {
                RawTableTag::Plain(text) => (text, None),
                RawTableTag::Guarded { tag, when } => (tag, Some(when.clone())),
            };
            let template = TagTemplate::parse(text).map_err(invalid)?;
            if let Some(bad) = template.params().chain(when.as_deref()).find(|c| !is_sql_name(c)) {
                return Err(invalid(format!("tag {text:?} uses `{bad}`, which is not a plain SQL column name")));
            }
            tags.push(TableTag { template, when });
        }
        if let Some((unused, _)) =
            columns.iter().find(|(c, _)| !tags.iter().any(|t| t.template.params().any(|p| p == c)))
        {
            return Err(invalid(format!("`columns` declares `{unused}`, which no tag uses")));
        }
        if tags.is_empty() {
            return Err(invalid("a table's writes touch at least one tag".into()));
        }
        Ok(Self { name: raw.name, columns, tags })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    table: Vec<RawTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    #[serde(default)]
    columns: BTreeMap<String, String>,
    tags: Vec<RawTableTag>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTableTag {
    Plain(String),
    Guarded { tag: String, when: String },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    negative_ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: String,
    path: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
    browser_ttl: String,
    edge_ttl: String,
    swr: String,
    sie: String,
    local_ttl: String,
    negative_ttl: Option<String>,
    tags: Vec<String>,
    warm: bool,
    #[serde(default)]
    query: BTreeMap<String, RawQuery>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    kind: String,
    min: Option<i64>,
    max: Option<i64>,
    default: Option<i64>,
}
