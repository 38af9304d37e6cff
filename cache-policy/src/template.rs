//! Route path templates (`/v1/formations/{formation_id}`), tag templates (`formation:{formation_id}`)
//! and the kinds of value a route parameter may take.

use std::fmt;

/// One `/`-separated piece of a route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Matched verbatim.
    Literal(String),
    /// Bound to the route parameter of this name.
    Param(String),
}

/// A route path such as `/v1/operations/{date}/{number}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    /// The original text, kept for display and for registering the axum route.
    raw: String,
    /// The parsed segments, without the leading empty one.
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses a template. Parameters must fill a whole segment.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong, for [`crate::PolicyError`].
    pub fn parse(raw: &str) -> Result<Self, String> {
        let rest = raw.strip_prefix('/').ok_or_else(|| format!("path {raw:?} must start with `/`"))?;
        let mut segments = Vec::new();
        for piece in rest.split('/') {
            if piece.is_empty() {
                return Err(format!("path {raw:?} has an empty segment"));
            }
            if let Some(name) = piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if !is_identifier(name) {
                    return Err(format!("path {raw:?}: `{piece}` is not a valid parameter"));
                }
                segments.push(Segment::Param(name.to_owned()));
            } else if piece.contains(['{', '}', '*', ':', '?', '#']) {
                return Err(format!("path {raw:?}: segment `{piece}` has a reserved character"));
            } else {
                segments.push(Segment::Literal(piece.to_owned()));
            }
        }
        Ok(Self { raw: raw.to_owned(), segments })
    }

    /// The template as written (also valid axum 0.8 route syntax).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed segments.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Names of the parameters, in path order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Matches a concrete path, returning the parameter bindings in path order.
    pub fn matches<'a>(&self, path: &'a str) -> Option<Vec<(&str, &'a str)>> {
        let rest = path.strip_prefix('/')?;
        let pieces: Vec<&str> = rest.split('/').collect();
        if pieces.len() != self.segments.len() {
            return None;
        }
        let mut bound = Vec::new();
        for (segment, piece) in self.segments.iter().zip(pieces) {
            match segment {
                Segment::Literal(lit) if lit == piece => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if piece.is_empty() => return None,
                Segment::Param(name) => bound.push((name.as_str(), piece)),
            }
        }
        Some(bound)
    }

    /// Renders a concrete path, taking parameter values from `lookup`.
    ///
    /// Returns `None` when a parameter has no value.
    pub fn render<'v>(&self, lookup: impl Fn(&str) -> Option<&'v str>) -> Option<String> {
        let mut out = String::with_capacity(self.raw.len() + 16);
        for segment in &self.segments {
            out.push('/');
            match segment {
                Segment::Literal(lit) => out.push_str(lit),
                Segment::Param(name) => out.push_str(lookup(name)?),
            }
        }
        Some(out)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// One piece of a tag template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagPart {
    /// Copied verbatim.
    Literal(String),
    /// Replaced by the route parameter's value.
    Param(String),
}

/// A cache tag template such as `operation:{date}:{number}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate {
    /// The original text, for display.
    raw: String,
    /// Literal and parameter pieces in order.
    parts: Vec<TagPart>,
}

impl TagTemplate {
    /// Parses a tag template.
    ///
    /// # Errors
    ///
    /// A message saying what is wrong, for [`crate::PolicyError`].
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("a tag template is empty".to_owned());
        }
        let mut parts = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest.find('}').ok_or_else(|| format!("tag {raw:?} has an unclosed `{{`"))?;
                    let name = &rest[1..end];
                    if !is_identifier(name) {
                        return Err(format!("tag {raw:?}: `{{{name}}}` is not a valid parameter"));
                    }
                    parts.push(TagPart::Param(name.to_owned()));
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    let literal = &rest[..end];
                    if let Some(bad) = literal.chars().find(|&c| !is_tag_char(c)) {
                        return Err(format!("tag {raw:?} has the character {bad:?}, not allowed in a tag"));
                    }
                    parts.push(TagPart::Literal(literal.to_owned()));
                    rest = &rest[end..];
                }
            }
        }
        Ok(Self { raw: raw.to_owned(), parts })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed pieces.
    pub fn parts(&self) -> &[TagPart] {
        &self.parts
    }

    /// Names of the parameters the template uses.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TagPart::Param(name) => Some(name.as_str()),
            TagPart::Literal(_) => None,
        })
    }

    /// The family of every tag the template renders: each parameter spelled [`ANY`], as in
    /// `operation:*:*`. A `TRUNCATE` records its table's families instead of reading every row it
    /// removes (which held the table's exclusive lock for seconds per million rows); see
    /// [`tag_covers`] for what a family covers.
    pub fn family(&self) -> String {
        self.render(|_| Some(ANY)).unwrap_or_default()
    }

    /// Renders the tag, taking parameter values from `lookup`. `None` when one is missing.
    pub fn render<'v>(&self, lookup: impl Fn(&str) -> Option<&'v str>) -> Option<String> {
        let mut out = String::with_capacity(self.raw.len() + 16);
        for part in &self.parts {
            match part {
                TagPart::Literal(lit) => out.push_str(lit),
                TagPart::Param(name) => out.push_str(lookup(name)?),
            }
        }
        Some(out)
    }
}

impl fmt::Display for TagTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// What values a route parameter accepts. Validation happens before any cache or database work,
/// so malformed input is a cheap `400` and never reaches a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// An identifier: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    Id,
    /// A calendar date `YYYY-MM-DD`.
    Date,
    /// A date, or `today` for the current service day.
    DateOrToday,
}

impl ParamKind {
    /// Parses the kind's name as written in `policy.toml`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "id" => Some(Self::Id),
            "date" => Some(Self::Date),
            "date_or_today" => Some(Self::DateOrToday),
            _ => None,
        }
    }

    /// The name as written in `policy.toml`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Date => "date",
            Self::DateOrToday => "date_or_today",
        }
    }

    /// Checks the syntax of a value (a date's calendar validity is the caller's to check, since
    /// that needs a calendar library this pure crate does without).
    ///
    /// # Errors
    ///
    /// A short human-readable reason.
    pub fn check(self, value: &str) -> Result<(), &'static str> {
        match self {
            Self::Id => {
                if value.is_empty() || value.len() > 64 {
                    Err("must be 1 to 64 characters long")
                } else if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                    Err("may only contain letters, digits, `.`, `_` and `-`")
                } else {
                    Ok(())
                }
            }
            Self::Date => check_date_syntax(value),
            Self::DateOrToday if value == "today" => Ok(()),
            Self::DateOrToday => check_date_syntax(value).map_err(|_| "must be YYYY-MM-DD or `today`"),
        }
    }
}

fn check_date_syntax(value: &str) -> Result<(), &'static str> {
    let b = value.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if shape_ok { Ok(()) } else { Err("must be a date YYYY-MM-DD") }
}

/// Stands for any value of a parameter in a tag family ([`TagTemplate::family`]). It is outside
/// the tag alphabet ([`is_tag_char`]), so a family is never a tag an answer carries.
pub const ANY: &str = "*";

/// Whether a tag is a family (has an [`ANY`] for some parameter) rather than one concrete tag.
pub fn is_family(tag: &str) -> bool {
    tag.contains(ANY)
}

/// Whether the changed tag `changed` covers the tag `tag` an answer carries: the same tag, or a
/// family in which each [`ANY`] stands for one parameter value (one or more characters, none of
/// them the separator `:`, which no parameter value contains).
pub fn tag_covers(changed: &str, tag: &str) -> bool {
    match changed.split_once(ANY) {
        None => changed == tag,
        Some((literal, rest)) => {
            let Some(tail) = tag.strip_prefix(literal) else { return false };
            let longest = tail.find(':').unwrap_or(tail.len());
            (1..=longest).any(|n| tail.is_char_boundary(n) && tag_covers(rest, &tail[n..]))
        }
    }
}

/// Characters CloudFront accepts in a cache tag, which is also the tag vocabulary's alphabet.
pub fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.:/".contains(c)
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_template_parses_matches_and_renders() {
        let t = PathTemplate::parse("/v1/operations/{date}/{number}").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["date", "number"]);
        assert_eq!(t.matches("/v1/operations/2026-11-28/0612"), Some(vec![("date", "2026-11-28"), ("number", "0612")]));
        assert_eq!(t.matches("/v1/operations/2026-11-28"), None);
        assert_eq!(t.matches("/v1/operation/2026-11-28/1"), None);
        assert_eq!(t.matches("/v1/operations//1"), None);
        let rendered = t.render(|p| Some(if p == "date" { "2026-01-02" } else { "7" }));
        assert_eq!(rendered.as_deref(), Some("/v1/operations/2026-01-02/7"));
        assert_eq!(t.render(|_| None), None);
    }

    #[test]
    fn path_template_rejects_bad_templates() {
        for bad in ["v1/lines", "/v1//lines", "/v1/{}", "/v1/x{id}", "/v1/{1d}", "/v1/*rest"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_template_renders_parameters() {
        let t = TagTemplate::parse("operation:{date}:{number}").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["date", "number"]);
        let tag = t.render(|p| Some(if p == "date" { "2026-11-28" } else { "0612" }));
        assert_eq!(tag.as_deref(), Some("operation:2026-11-28:0612"));
        assert!(TagTemplate::parse("bad tag").is_err());
        assert!(TagTemplate::parse("x:{open").is_err());
        assert!(TagTemplate::parse("").is_err());
    }

    #[test]
    fn a_family_covers_every_tag_of_its_template_and_no_other() {
        let t = TagTemplate::parse("operation:{date}:{number}").unwrap();
        assert_eq!(t.family(), "operation:*:*");
        assert!(is_family(&t.family()));
        assert!(!is_family("operation:2026-11-28:0612"));
        assert_eq!(TagTemplate::parse("formations").unwrap().family(), "formations");
        assert!(tag_covers("operation:*:*", "operation:2026-11-28:0612"));
        assert!(!tag_covers("operation:*:*", "operations:2026-11-28"));
        assert!(!tag_covers("operation:*:*", "operation:2026-11-28"), "a value for each parameter");
        assert!(!tag_covers("operation:*:*", "operation::0612"), "values are never empty");
        assert!(tag_covers("operations:*", "operations:2026-11-28"));
        assert!(!tag_covers("operations:*", "operation:2026-11-28:0612"));
        assert!(tag_covers("formation:*", "formation:10701F"));
        assert!(!tag_covers("formation:*", "formations"));
        assert!(!tag_covers("formation:*", "formation:10701F:x"), "one value, not two");
        assert!(tag_covers("operation:2026-11-28:*", "operation:2026-11-28:0612"));
        assert!(!tag_covers("operation:2026-11-28:*", "operation:2026-11-27:0612"));
        assert!(tag_covers("formations", "formations"));
        assert!(!tag_covers("formations", "formation:10701F"));
    }

    #[test]
    fn param_kinds_check_syntax() {
        assert!(ParamKind::Id.check("10701F").is_ok());
        assert!(ParamKind::Id.check("").is_err());
        assert!(ParamKind::Id.check("a/b").is_err());
        assert!(ParamKind::Id.check("%27%20OR").is_err());
        assert!(ParamKind::Id.check(&"x".repeat(65)).is_err());
        assert!(ParamKind::Date.check("2026-11-28").is_ok());
        assert!(ParamKind::Date.check("today").is_err());
        assert!(ParamKind::Date.check("2026-1-28").is_err());
        assert!(ParamKind::DateOrToday.check("today").is_ok());
        assert!(ParamKind::DateOrToday.check("yesterday").is_err());
    }
}
