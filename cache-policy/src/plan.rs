//! The invalidation planner: which CloudFront items cover a set of changed cache tags.
//!
//! Two modes. **Tags**: one `#tag` item per tag (CloudFront cache-tag invalidation, or an xkey
//! purge locally); a tag family (`formation:*`, what a `TRUNCATE` records), which no answer
//! carries as a tag, is planned as paths. **Paths**: every route whose tag templates match a tag
//! yields the concrete path(s) the tag affects; a route parameter the tag leaves unbound (or that
//! a family spells `*`) becomes a `*` at the end of the longest valid prefix; routes with declared
//! query parameters get a trailing `*` so every query variant is covered; many paths under one
//! prefix collapse into one wildcard when that is cheaper.
//! Every batch stays within CloudFront's limits.
//!
//! The monthly budget coarsens a batch only within a resource collection (`/v1/formations/*`),
//! never to a site-wide wildcard: a change that touches a few objects must not flush the edge.
//! What happens once the budget is spent is [`crate::cost`]'s policy.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Policy, Route};
use crate::template::{ANY, ParamKind, Segment, TagPart, TagTemplate, is_family, is_tag_char};

/// How changes are invalidated at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `#tag` items.
    Tags,
    /// Concrete paths and wildcards.
    Paths,
}

/// CloudFront's limits and the operator's cost settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Items in one invalidation (CloudFront: 3000).
    pub max_items: usize,
    /// Wildcard paths in one batch; CloudFront allows 15 wildcard paths in progress at once.
    pub max_wildcards: usize,
    /// Length of one path (CloudFront: 4000).
    pub max_path_len: usize,
    /// Length of one tag (CloudFront: 256).
    pub max_tag_len: usize,
    /// This many concrete paths under one prefix are replaced by a single wildcard.
    pub collapse_at: usize,
    /// Paths left in the month's budget; the planner coarsens the batch towards it, within
    /// collections, as far as that goes (it may stay above it).
    pub budget_remaining: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_items: 3_000,
            max_wildcards: 15,
            max_path_len: 4_000,
            max_tag_len: 256,
            collapse_at: 50,
            budget_remaining: None,
        }
    }
}

/// Facts the planner needs from outside (it is pure: no clock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Today's service date (`YYYY-MM-DD`): its pages are also reachable as `today`.
    pub today: Option<String>,
}

/// A planned invalidation batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The items, sorted, each `#tag` or a path starting with `/`.
    pub items: Vec<String>,
}

impl Plan {
    /// Number of wildcard paths.
    pub fn wildcards(&self) -> usize {
        self.items.iter().filter(|i| i.ends_with('*')).count()
    }
}

/// Why a batch cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// More items than CloudFront accepts.
    #[error("{count} items exceed the limit of {max}")]
    TooManyItems {
        /// Items in the batch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More wildcard paths than may be in progress.
    #[error("{count} wildcard paths exceed the limit of {max}")]
    TooManyWildcards {
        /// Wildcards in the batch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An item CloudFront would reject.
    #[error("invalid item {item:?}: {reason}")]
    InvalidItem {
        /// The item.
        item: String,
        /// Why.
        reason: &'static str,
    },
    /// Nothing to invalidate.
    #[error("the batch is empty")]
    Empty,
}

/// Checks a batch against CloudFront's rules before it is sent.
///
/// # Errors
///
/// The first rule the batch breaks.
pub fn validate_batch(items: &[String], limits: &Limits) -> Result<(), BatchError> {
    if items.is_empty() {
        return Err(BatchError::Empty);
    }
    if items.len() > limits.max_items {
        return Err(BatchError::TooManyItems { count: items.len(), max: limits.max_items });
    }
    let mut wildcards = 0;
    for item in items {
        let invalid = |reason| BatchError::InvalidItem { item: item.clone(), reason };
        if let Some(tag) = item.strip_prefix('#') {
            if tag.is_empty() || tag.len() > limits.max_tag_len {
                return Err(invalid("a tag is 1 to 256 characters"));
            }
            if !tag.chars().all(is_tag_char) {
                return Err(invalid("a tag may only contain A-Z a-z 0-9 - _ . : /"));
            }
        } else {
            if !item.starts_with('/') {
                return Err(invalid("a path must start with /"));
            }
            if item.len() > limits.max_path_len {
                return Err(invalid("a path is at most 4000 characters"));
            }
            if item.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid("a path may not contain whitespace"));
            }
            match item.find('*') {
                Some(at) if at != item.len() - 1 => return Err(invalid("`*` may only be the last character")),
                Some(_) => wildcards += 1,
                None => {}
            }
        }
    }
    if wildcards > limits.max_wildcards {
        return Err(BatchError::TooManyWildcards { count: wildcards, max: limits.max_wildcards });
    }
    Ok(())
}

/// Binds a tag against a template, returning the parameter values, or `None` if the tag is not an
/// instance of the template (or a value is not valid for its route parameter). A parameter a
/// family spells [`ANY`] is left unbound.
pub fn bind_tag<'t>(template: &TagTemplate, route: &Route, tag: &'t str) -> Option<Vec<(String, &'t str)>> {
    let mut rest = tag;
    let mut bound = Vec::new();
    let parts = template.parts();
    for (i, part) in parts.iter().enumerate() {
        match part {
            TagPart::Literal(lit) => rest = rest.strip_prefix(lit.as_str())?,
            TagPart::Param(name) => {
                // A value runs to the next literal (values never contain the tag separators).
                let end = match parts.get(i + 1) {
                    Some(TagPart::Literal(next)) => rest.find(next.as_str())?,
                    _ => rest.len(),
                };
                let value = &rest[..end];
                if value == ANY {
                    // A family's parameter: any value, left unbound.
                    route.param_kind(name)?;
                    rest = &rest[end..];
                    continue;
                }
                let kind = route.param_kind(name)?;
                let valid = match kind {
                    ParamKind::Id => kind.check(value).is_ok(),
                    ParamKind::Date | ParamKind::DateOrToday => ParamKind::Date.check(value).is_ok(),
                };
                if !valid {
                    return None;
                }
                bound.push((name.clone(), value));
                rest = &rest[end..];
            }
        }
    }
    rest.is_empty().then_some(bound)
}

/// The paths of `route` affected by `tag`: exact where the tag binds every parameter, otherwise a
/// wildcard at the end of the longest prefix before the first unbound parameter.
pub fn route_paths(route: &Route, tag: &str, context: &Context) -> Vec<String> {
    let mut out = Vec::new();
    for template in &route.tags {
        let Some(bound) = bind_tag(template, route, tag) else { continue };
        let mut variants = vec![bound.clone()];
        // Today's pages are also served under the `today` alias.
        if let Some(today) = &context.today {
            for (name, value) in &bound {
                if *value == today.as_str() && route.param_kind(name) == Some(ParamKind::DateOrToday) {
                    let mut alias = bound.clone();
                    for entry in &mut alias {
                        if entry.0 == *name {
                            entry.1 = "today";
                        }
                    }
                    variants.push(alias);
                }
            }
        }
        for bound in variants {
            let mut path = String::new();
            let mut wildcard = false;
            for segment in route.path.segments() {
                match segment {
                    Segment::Literal(lit) => {
                        path.push('/');
                        path.push_str(lit);
                    }
                    Segment::Param(name) => match bound.iter().find(|(n, _)| n == name) {
                        Some((_, value)) => {
                            path.push('/');
                            path.push_str(value);
                        }
                        None => {
                            path.push_str("/*");
                            wildcard = true;
                            break;
                        }
                    },
                }
            }
            if !wildcard && !route.query.is_empty() {
                // Every query-string variant of the path is a separate object at the edge.
                path.push('*');
            }
            out.push(path);
        }
    }
    out
}

/// Plans the invalidation of `tags`.
pub fn plan(policy: &Policy, tags: &BTreeSet<String>, mode: Mode, limits: &Limits, context: &Context) -> Plan {
    match mode {
        Mode::Tags => plan_tags(policy, tags, limits, context),
        Mode::Paths => plan_paths(policy, tags, limits, context),
    }
}

/// One `#tag` item per tag; a family (which no answer carries as a tag) becomes the wildcard
/// paths of the routes it covers, as in [`Mode::Paths`].
fn plan_tags(policy: &Policy, tags: &BTreeSet<String>, limits: &Limits, context: &Context) -> Plan {
    let (families, tags): (BTreeSet<String>, BTreeSet<String>) = tags.iter().cloned().partition(|t| is_family(t));
    let valid = |t: &&String| !t.is_empty() && t.len() <= limits.max_tag_len && t.chars().all(is_tag_char);
    let mut items: Vec<String> = tags.iter().filter(valid).map(|t| format!("#{t}")).collect();
    let all_valid = items.len() == tags.len();
    if !families.is_empty() {
        items.extend(plan_paths(policy, &families, limits, context).items);
        items.sort();
    }
    let wildcards = items.iter().filter(|i| i.ends_with('*')).count();
    if items.len() > limits.max_items || !all_valid || wildcards > limits.max_wildcards {
        // More tags than CloudFront takes in one batch (or a tag it cannot take): everything, once.
        return Plan { items: vec!["/*".to_owned()] };
    }
    Plan { items }
}

fn plan_paths(policy: &Policy, tags: &BTreeSet<String>, limits: &Limits, context: &Context) -> Plan {
    let mut paths = BTreeSet::new();
    for tag in tags {
        for route in policy.routes() {
            paths.extend(route_paths(route, tag, context));
        }
    }
    paths.retain(|p| p.len() <= limits.max_path_len);
    let budget = limits.budget_remaining.map_or(limits.max_items, |b| b.min(limits.max_items)).max(1);
    let fits_cloudfront = |items: &[String]| {
        items.len() <= limits.max_items && items.iter().filter(|i| i.ends_with('*')).count() <= limits.max_wildcards
    };
    let mut collapse_at = limits.collapse_at.max(2);
    loop {
        let items = collapse(&paths, collapse_at);
        let fits = fits_cloudfront(&items);
        if fits && items.len() <= budget {
            return Plan { items };
        }
        if collapse_at == 2 {
            // As coarse as a collection gets. Over the budget is a cost the operator has chosen
            // to pay (see `cost`); over CloudFront's limits is impossible to send.
            if fits {
                return Plan { items };
            }
            break;
        }
        collapse_at = (collapse_at / 2).max(2);
    }
    // One wildcard per collection (`/v1/stations/*`): coarser than any grouping by parent, which
    // cannot join paths whose parents all differ (`/v1/stations/{id}/sightings*`), but still not
    // the whole site.
    let items = collapse_collections(&paths);
    if fits_cloudfront(&items) {
        return Plan { items };
    }
    // Nothing within CloudFront's limits: one wildcard for everything still covers every URL.
    Plan { items: vec!["/*".to_owned()] }
}

/// Replaces every group of two or more paths inside one collection (the first two segments,
/// `/v1/stations/`) by the collection's wildcard, dropping what a wildcard covers.
fn collapse_collections(paths: &BTreeSet<String>) -> Vec<String> {
    collapse_by(paths, 2, |path| path.match_indices('/').nth(2).map_or(path, |(i, _)| &path[..=i]))
}

/// Replaces groups of at least `at` paths that share a parent prefix by `prefix*`, dropping paths
/// that a wildcard in the set already covers.
fn collapse(paths: &BTreeSet<String>, at: usize) -> Vec<String> {
    collapse_by(paths, at, |path| path.trim_end_matches('*').rfind('/').map_or("/", |i| &path[..=i]))
}

/// Groups `paths` by the prefix `group` gives each (ending in `/`), replaces every group of at
/// least `at` by `prefix*`, and drops the paths a wildcard in the result covers.
fn collapse_by<'p>(paths: &'p BTreeSet<String>, at: usize, group: impl Fn(&'p str) -> &'p str) -> Vec<String> {
    let mut groups: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for path in paths {
        groups.entry(group(path)).or_default().push(path);
    }
    let mut items: BTreeSet<String> = BTreeSet::new();
    for (prefix, members) in groups {
        // A collection (`/v1/formations/`) may collapse; `/` or `/v1/` would be the whole site.
        if members.len() >= at && prefix.ends_with('/') && prefix.matches('/').count() >= 3 {
            items.insert(format!("{prefix}*"));
        } else {
            items.extend(members.into_iter().cloned());
        }
    }
    let wildcards: Vec<String> =
        items.iter().filter(|i| i.ends_with('*')).map(|w| w.trim_end_matches('*').to_owned()).collect();
    items
        .into_iter()
        .filter(|item| !wildcards.iter().any(|w| item.starts_with(w.as_str()) && item.trim_end_matches('*') != w))
        .collect()
}

/// Whether a planned item covers a concrete URL path (with or without a query string).
pub fn covers(item: &str, url: &str) -> bool {
    match item.strip_suffix('*') {
        Some(prefix) => url.starts_with(prefix),
        None => url == item,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> &'static Policy {
        Policy::embedded().unwrap()
    }

    fn tags(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    fn today() -> Context {
        Context { today: Some("2026-11-28".into()) }
    }

    #[test]
    fn tag_mode_prefixes_each_tag() {
        let plan = plan(policy(), &tags(&["formation:10701F", "formations"]), Mode::Tags, &Limits::default(), &today());
        assert_eq!(plan.items, ["#formation:10701F", "#formations"]);
        validate_batch(&plan.items, &Limits::default()).unwrap();
    }

    #[test]
    fn path_mode_maps_tags_to_route_paths() {
        let plan = plan(
            policy(),
            &tags(&[
                "formation:10701F",
                "formations",
                "sightings",
                "operations:2026-11-28",
                "operation:2026-11-27:01M",
            ]),
            Mode::Paths,
            &Limits::default(),
            &today(),
        );
        assert_eq!(
            plan.items,
            [
                "/v1/formations",
                "/v1/formations/10701F",
                "/v1/operations/2026-11-27/01M",
                "/v1/operations/2026-11-28",
                "/v1/operations/today",
                "/v1/sightings/latest*",
            ]
        );
        validate_batch(&plan.items, &Limits::default()).unwrap();
    }

    #[test]
    fn a_family_plans_the_wildcards_of_the_collections_it_covers_in_either_mode() {
        let truncated = tags(&["sightings", "formations", "formation:*", "operations:*", "operation:*:*", "station:*"]);
        let paths = plan(policy(), &truncated, Mode::Paths, &Limits::default(), &today());
        assert_eq!(
            paths.items,
            ["/v1/formations", "/v1/formations/*", "/v1/operations/*", "/v1/sightings/latest*", "/v1/stations/*"]
        );
        let tagged = plan(policy(), &truncated, Mode::Tags, &Limits::default(), &today());
        assert_eq!(
            tagged.items,
            ["#formations", "#sightings", "/v1/formations/*", "/v1/operations/*", "/v1/stations/*"]
        );
        for plan in [paths, tagged] {
            validate_batch(&plan.items, &Limits::default()).unwrap();
            for url in ["/v1/formations/10701F", "/v1/operations/2026-11-27/01M", "/v1/operations/today"] {
                assert!(plan.items.iter().any(|i| covers(i, url)), "{url} not covered by {:?}", plan.items);
            }
            assert!(!plan.items.iter().any(|i| covers(i, "/v1/lines")), "lines are not sightings");
        }
        let one_day = plan(policy(), &tags(&["operation:2026-11-27:*"]), Mode::Paths, &Limits::default(), &today());
        assert_eq!(one_day.items, ["/v1/operations/2026-11-27/*"]);
    }

    #[test]
    fn unknown_or_malformed_tags_plan_nothing() {
        let plan = plan(
            policy(),
            &tags(&["nonsense", "formation:bad id", "operations:tomorrow"]),
            Mode::Paths,
            &Limits::default(),
            &today(),
        );
        assert!(plan.items.is_empty());
    }

    #[test]
    fn many_paths_under_one_prefix_collapse_into_a_wildcard() {
        let many: BTreeSet<String> = (0..120).map(|i| format!("formation:{}F", 10_000 + i)).collect();
        let collapsed = plan(policy(), &many, Mode::Paths, &Limits::default(), &today());
        assert_eq!(collapsed.items, ["/v1/formations/*"]);
        let few: BTreeSet<String> = (0..3).map(|i| format!("formation:{}F", 10_000 + i)).collect();
        assert_eq!(plan(policy(), &few, Mode::Paths, &Limits::default(), &today()).items.len(), 3);
    }

    #[test]
    fn paths_whose_parents_all_differ_collapse_into_their_collection_not_the_site() {
        let stations: Vec<String> = (1..=40).map(|n| format!("station:S{n:02}")).collect();
        let stations: Vec<&str> = stations.iter().map(String::as_str).collect();
        let plan = plan(policy(), &tags(&stations), Mode::Paths, &Limits::default(), &today());
        assert_eq!(plan.items, ["/v1/stations/*"]);
        let one = plan_paths(policy(), &tags(&["station:S01"]), &Limits::default(), &today());
        assert_eq!(one.items, ["/v1/stations/S01/sightings*"], "one station stays precise");
    }

    #[test]
    fn budget_coarsens_the_batch() {
        let some: BTreeSet<String> = (0..10).map(|i| format!("formation:{}F", 10_000 + i)).collect();
        let limits = Limits { budget_remaining: Some(2), ..Limits::default() };
        let plan = plan(policy(), &some, Mode::Paths, &limits, &today());
        assert_eq!(plan.items, ["/v1/formations/*"]);
    }

    #[test]
    fn a_spent_budget_never_turns_a_small_change_into_a_site_wide_flush() {
        let sighting: BTreeSet<String> = ["sightings", "formations", "formation:10701F", "operations:2026-11-28"]
            .iter()
            .map(|t| (*t).to_owned())
            .collect();
        for remaining in [0, 1, 2] {
            let limits = Limits { budget_remaining: Some(remaining), ..Limits::default() };
            for mode in [Mode::Paths, Mode::Tags] {
                let plan = plan(policy(), &sighting, mode, &limits, &today());
                assert!(!plan.items.iter().any(|i| i == "/*" || i == "/v1/*"), "{mode:?} {remaining}: {plan:?}");
                assert!(plan.items.len() <= 8, "{plan:?}");
            }
        }
    }

    #[test]
    fn batch_validation_enforces_cloudfront_rules() {
        let limits = Limits::default();
        let ok = |items: &[&str]| validate_batch(&items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), &limits);
        assert!(ok(&["/v1/lines", "/v1/formations/*", "#formations"]).is_ok());
        assert!(matches!(ok(&[]), Err(BatchError::Empty)));
        assert!(matches!(ok(&["v1/lines"]), Err(BatchError::InvalidItem { .. })));
        assert!(matches!(ok(&["/v1/*/stations"]), Err(BatchError::InvalidItem { .. })));
        assert!(matches!(ok(&["#bad tag"]), Err(BatchError::InvalidItem { .. })));
        let long_tag = format!("#{}", "a".repeat(257));
        assert!(matches!(ok(&[long_tag.as_str()]), Err(BatchError::InvalidItem { .. })));
        let long_path = format!("/{}", "a".repeat(4000));
        assert!(matches!(ok(&[long_path.as_str()]), Err(BatchError::InvalidItem { .. })));
        let wild: Vec<String> = (0..16).map(|i| format!("/w{i}/*")).collect();
        assert!(matches!(validate_batch(&wild, &limits), Err(BatchError::TooManyWildcards { count: 16, .. })));
        let many: Vec<String> = (0..3001).map(|i| format!("/p{i}")).collect();
        assert!(matches!(validate_batch(&many, &limits), Err(BatchError::TooManyItems { .. })));
    }

    /// Deterministic pseudo-random tag sets (no dependency on a property-testing crate).
    fn random_tags(seed: u64) -> BTreeSet<String> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let count = 1 + next(400);
        (0..count)
            .map(|_| match next(9) {
                // Now and then a family, as a `TRUNCATE` records.
                8 => {
                    ["formation:*", "operations:*", "operation:*:*", "station:*", "line:*"][next(5) as usize].to_owned()
                }
                0 => "lines".to_owned(),
                1 => format!("line:l{}", next(30)),
                2 => "formations".to_owned(),
                3 => format!("formation:{}F", 1000 + next(500)),
                4 => format!("operations:2026-11-{:02}", 1 + next(28)),
                5 => format!("operation:2026-11-{:02}:{:02}M", 1 + next(28), next(60)),
                6 => "sightings".to_owned(),
                _ => format!("formation:{}F", 2000 + next(3)),
            })
            .collect()
    }

    /// Every concrete URL the tag's routes serve for it.
    fn affected_urls(tag: &str, context: &Context) -> Vec<String> {
        let mut urls = Vec::new();
        for route in policy().routes() {
            for path in route_paths(route, tag, context) {
                // A wildcard stands for URLs under it; pick representative ones.
                let base = path.trim_end_matches('*').to_owned();
                urls.push(base.clone());
                urls.push(format!("{base}?limit=7"));
                if path.ends_with("/*") {
                    urls.push(format!("{base}anything"));
                }
            }
        }
        urls
    }

    #[test]
    fn property_every_affected_url_is_covered_and_no_batch_breaks_a_limit() {
        let context = today();
        for seed in 0..300 {
            let tags = random_tags(seed);
            for mode in [Mode::Paths, Mode::Tags] {
                for budget in [None, Some(5), Some(1)] {
                    let limits =
                        Limits { budget_remaining: budget, collapse_at: 2 + (seed as usize % 60), ..Limits::default() };
                    let batch = plan(policy(), &tags, mode, &limits, &context);
                    if batch.items.is_empty() {
                        continue;
                    }
                    validate_batch(&batch.items, &limits).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                    let tagged = batch.items.iter().any(|i| i.starts_with('#'));
                    if mode == Mode::Tags && tagged {
                        // Each tag as itself; only the families are left to the paths.
                        let planned: BTreeSet<_> = batch.items.iter().filter_map(|i| i.strip_prefix('#')).collect();
                        let concrete: BTreeSet<_> = tags.iter().map(String::as_str).filter(|t| !is_family(t)).collect();
                        assert_eq!(planned, concrete, "seed {seed}");
                    }
                    for tag in tags.iter().filter(|t| !tagged || is_family(t)) {
                        for url in affected_urls(tag, &context) {
                            let path_only = url.split('?').next().unwrap_or("");
                            let query_route = path_only == "/v1/sightings/latest";
                            let covered =
                                batch.items.iter().any(|i| covers(i, &url) || (!query_route && covers(i, path_only)));
                            assert!(
                                covered,
                                "seed {seed}, budget {budget:?}: {url} ({tag}) not covered by {:?}",
                                batch.items
                            );
                        }
                    }
                }
            }
        }
    }
}
