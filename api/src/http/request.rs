//! [`Endpoint`]: the request, as the cache policy sees it.
//!
//! Extracting it validates every route parameter and declared query parameter (a `400` before any
//! cache or database work), resolves `today` to the current service day, ignores undeclared query
//! parameters, and builds the in-process cache key from what remains.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams};
use cache_policy::{ParamKind, Route};
use chrono::{NaiveDate, Utc};
use http::request::Parts;
use http::{HeaderValue, header};
use smallvec::SmallVec;

use super::error::ApiError;
use super::negotiate::{Encoding, choose_encoding};
use super::state::{AppState, HttpSettings, RouteHeaders};

/// A validated request for one policy route.
#[derive(Debug)]
pub(crate) struct Endpoint {
    /// Shared settings, holding the route's precomputed headers.
    settings: Arc<HttpSettings>,
    /// Index of the route in `settings.routes`.
    index: usize,
    /// Route parameters after validation (`today` already resolved to a date), as where their
    /// values are in `key`: a hit then allocates nothing for them.
    params: SmallVec<[(&'static str, Range<usize>); 2]>,
    /// Declared query parameters, normalized, defaults filled in; values in `key` as well.
    query: SmallVec<[(&'static str, Range<usize>); 1]>,
    /// Set when the path said `today`: the time until the service day rolls over.
    pub(crate) today_remaining: Option<Duration>,
    /// In-process cache key: route name, parameters and declared query values.
    pub(crate) key: String,
    /// The encoding negotiated from `Accept-Encoding` (used when the body is worth compressing).
    pub(crate) encoding: Option<Encoding>,
    /// `If-None-Match`, kept alone rather than cloning every request header.
    pub(crate) if_none_match: Option<HeaderValue>,
}

impl Endpoint {
    /// Precomputed headers of the route.
    pub(crate) fn headers(&self) -> &RouteHeaders {
        &self.settings.routes[self.index]
    }

    /// The route's position in the policy.
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The route.
    pub(crate) fn route(&self) -> &'static Route {
        self.headers().route
    }

    /// A route parameter's (resolved) value.
    pub(crate) fn param(&self, name: &str) -> &str {
        self.params.iter().find(|(n, _)| *n == name).map_or("", |(_, at)| &self.key[at.clone()])
    }

    /// A date parameter, already validated.
    pub(crate) fn date(&self, name: &str) -> NaiveDate {
        self.param(name).parse().unwrap_or_default()
    }

    /// A declared integer query parameter, already validated.
    pub(crate) fn query_int(&self, name: &str) -> i64 {
        self.query
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, at)| self.key[at.clone()].parse().ok())
            .unwrap_or_default()
    }

    /// The response's tags.
    pub(crate) fn tags(&self) -> Vec<String> {
        self.route().render_tags(|p| Some(self.param(p)))
    }
}

impl FromRequestParts<AppState> for Endpoint {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let settings = &state.http;
        let index = parts
            .extensions
            .get::<MatchedPath>()
            .and_then(|m| settings.index.get(m.as_str()).copied())
            .ok_or(ApiError::Internal)?;
        let headers = &settings.routes[index];
        let route = headers.route;
        let bad = |message: String| ApiError::BadRequest { message, cache_control: headers.negative.clone() };
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| bad("the path is not valid UTF-8".into()))?;

        let mut key = String::with_capacity(64);
        key.push_str(&route.name);
        let mut params = SmallVec::new();
        let mut today_remaining = None;
        for (name, kind) in &route.params {
            let value = raw.iter().find(|(n, _)| n == name).map(|(_, v)| v).unwrap_or_default();
            kind.check(value).map_err(|reason| bad(format!("path parameter `{name}` {reason}")))?;
            key.push('\n');
            let start = key.len();
            match kind {
                ParamKind::DateOrToday if value == "today" => {
                    let now = Utc::now();
                    today_remaining = Some(settings.calendar.until_rollover(now));
                    write!(key, "{}", settings.calendar.service_date(now)).map_err(|_| ApiError::Internal)?;
                }
                ParamKind::Date | ParamKind::DateOrToday => {
                    NaiveDate::parse_from_str(value, "%Y-%m-%d")
                        .map_err(|_| bad(format!("path parameter `{name}` is not a calendar date")))?;
                    key.push_str(value);
                }
                ParamKind::Id => key.push_str(value),
            }
            params.push((name.as_str(), start..key.len()));
        }

        // Valid values are unreserved characters, so a percent sign means a non-canonical
        // spelling of a canonical path (`10701%46` for `10701F`). The edge would keep it as an
        // object of its own that no invalidation of the canonical path reaches: send the viewer
        // to the canonical path instead, which is invalidated when the data changes.
        if parts.uri.path().contains('%') {
            let lookup = |name: &str| raw.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
            if let Some(canonical) = route.path.render(lookup).filter(|c| c != parts.uri.path()) {
                let location = match parts.uri.query() {
                    Some(query) => format!("{canonical}?{query}"),
                    None => canonical,
                };
                return Err(ApiError::NonCanonical { location, cache_control: headers.cache_control.clone() });
            }
        }

        let mut query = SmallVec::new();
        for declared in &route.query {
            let mut found = None;
            for (name, value) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
                if name == declared.name {
                    if found.is_some() {
                        return Err(bad(format!("query parameter `{}` is given more than once", declared.name)));
                    }
                    found = Some(value);
                }
            }
            let value = declared.normalize(found.as_deref()).map_err(bad)?;
            key.push('\n');
            key.push_str(&declared.name);
            key.push('=');
            let start = key.len();
            key.push_str(&value);
            query.push((declared.name.as_str(), start..key.len()));
        }
        Ok(Self {
            encoding: choose_encoding(&parts.headers),
            if_none_match: parts.headers.get(header::IF_NONE_MATCH).cloned(),
            settings: settings.clone(),
            index,
            params,
            query,
            today_remaining,
            key,
        })
    }
}
