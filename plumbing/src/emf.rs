//! CloudWatch Embedded Metric Format (EMF): a metric is a JSON line on stdout with an `_aws`
//! member saying which of its fields are metrics and dimensions. CloudWatch Logs extracts them
//! asynchronously, so recording a metric costs the function no API call and no network.
//!
//! # Example
//!
//! ```
//! use plumbing::emf::{Record, Unit};
//! let line = Record::new(&[&["FunctionName", "Route"], &["FunctionName"]])
//!     .dimension("FunctionName", "edgerail-api")
//!     .dimension("Route", "lines")
//!     .metric("Hits", Unit::Count, 12.0)
//!     .to_json(1_764_331_200_000);
//! let v: serde_json::Value = serde_json::from_str(&line).unwrap();
//! assert_eq!(v["Hits"], 12.0);
//! assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "edgerail");
//! ```

use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every edgerail metric.
pub const NAMESPACE: &str = "edgerail";

/// The `FunctionName` dimension of every edgerail metric: the Lambda function's name
/// (`AWS_LAMBDA_FUNCTION_NAME`), or `local`. It keeps two stacks in one account apart, and lets
/// alarms name the function they watch.
pub fn function_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned())
}

/// A metric's unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Occurrences.
    Count,
    /// Durations in milliseconds.
    Milliseconds,
    /// Durations in seconds.
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
            Self::Seconds => "Seconds",
        }
    }
}

/// One EMF line: dimension values and metric values at one timestamp.
#[derive(Debug, Clone)]
pub struct Record {
    /// Dimension sets: each set is one way CloudWatch aggregates the metrics (an empty set is the
    /// total over every dimension value).
    sets: Vec<Vec<&'static str>>,
    /// Dimension values.
    dimensions: Vec<(&'static str, String)>,
    /// Metric names, units and values.
    metrics: Vec<(&'static str, Unit, f64)>,
}

impl Record {
    /// An empty record aggregated along `sets`.
    pub fn new(sets: &[&[&'static str]]) -> Self {
        Self { sets: sets.iter().map(|s| s.to_vec()).collect(), dimensions: Vec::new(), metrics: Vec::new() }
    }

    /// Sets a dimension's value.
    #[must_use]
    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    /// Adds a metric value.
    #[must_use]
    pub fn metric(mut self, name: &'static str, unit: Unit, value: f64) -> Self {
        self.metrics.push((name, unit, value));
        self
    }

    /// Whether any metric was added.
    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// The JSON line, stamped `timestamp_ms` (milliseconds since the Unix epoch).
    pub fn to_json(&self, timestamp_ms: i64) -> String {
        let mut root = Map::new();
        let definitions: Vec<Value> =
            self.metrics.iter().map(|(name, unit, _)| json!({ "Name": name, "Unit": unit.as_str() })).collect();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": self.sets,
                    "Metrics": definitions,
                }],
            }),
        );
        for (name, value) in &self.dimensions {
            root.insert((*name).into(), Value::from(value.as_str()));
        }
        for (name, _, value) in &self.metrics {
            root.insert((*name).into(), Value::from(*value));
        }
        Value::Object(root).to_string()
    }

    /// Writes the line to stdout, where Lambda's log capture hands it to CloudWatch.
    pub fn emit(&self) {
        if self.is_empty() {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        println!("{}", self.to_json(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_dimensions_and_metrics() {
        let line = Record::new(&[&["Route"], &[]])
            .dimension("Route", "formation")
            .metric("Misses", Unit::Count, 3.0)
            .metric("DbTimeMs", Unit::Milliseconds, 1.5)
            .to_json(42);
        let v: Value = serde_json::from_str(&line).unwrap();
        let aws = &v["_aws"];
        assert_eq!(aws["Timestamp"], 42);
        let directive = &aws["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Route"], []]));
        assert_eq!(directive["Metrics"][1], json!({ "Name": "DbTimeMs", "Unit": "Milliseconds" }));
        assert_eq!(v["Route"], "formation");
        assert_eq!(v["Misses"], 3.0);
    }

    #[test]
    fn lambda_log_format_is_honoured_unless_asked_otherwise() {
        use crate::LogFormat;
        assert_eq!(LogFormat::resolve(Some(LogFormat::Text), true), LogFormat::Text);
        // Without AWS_LAMBDA_LOG_FORMAT in the test environment: the defaults.
        if std::env::var("AWS_LAMBDA_LOG_FORMAT").is_err() {
            assert_eq!(LogFormat::resolve(None, true), LogFormat::Json);
            assert_eq!(LogFormat::resolve(None, false), LogFormat::Text);
        }
    }
}
