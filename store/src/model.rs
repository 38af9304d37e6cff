//! The data model: what the API serves and the change feed carries.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// A railway line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Line {
    /// Stable identifier, e.g. `minato`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Brand colour as `#rrggbb`, when the line has one.
    pub color: Option<String>,
}

/// A station on a line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Station {
    /// Stable identifier.
    pub id: String,
    /// The line the station belongs to.
    pub line_id: String,
    /// Display name.
    pub name: String,
    /// Order along the line, from 1.
    pub position: i32,
}

/// A line with its stations in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct LineStations {
    /// The line.
    pub line: Line,
    /// Its stations, ordered by position.
    pub stations: Vec<Station>,
}

/// A train formation (a fixed set of cars), e.g. `10701F` of series `10000`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Formation {
    /// Formation number.
    pub id: String,
    /// Rolling-stock series.
    pub series: String,
    /// Number of cars.
    pub cars: i32,
    /// Free-text remark (liveries, refurbishment).
    pub note: Option<String>,
}

/// A report that a formation was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Sighting {
    /// Identifier, increasing with insertion.
    pub id: i64,
    /// The formation seen.
    pub formation_id: String,
    /// The operation it was running, if known.
    pub operation_number: Option<String>,
    /// Where it was seen, if known.
    pub station_id: Option<String>,
    /// When it was seen.
    pub seen_at: DateTime<Utc>,
}

/// A formation with its latest sighting (`/v1/formations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FormationSummary {
    /// The formation.
    #[serde(flatten)]
    pub formation: Formation,
    /// Its most recent sighting.
    pub latest_sighting: Option<Sighting>,
}

/// A formation with its latest sightings (`/v1/formations/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FormationDetail {
    /// The formation.
    #[serde(flatten)]
    pub formation: Formation,
    /// Its most recent sightings, newest first.
    #[cfg_attr(feature = "openapi", schemars(length(max = FORMATION_SIGHTINGS)))]
    pub sightings: Vec<Sighting>,
}

/// How many sightings a formation's page shows.
pub const FORMATION_SIGHTINGS: i64 = 20;

/// One operation (a numbered daily working) of a service day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Operation {
    /// The service day.
    pub service_date: NaiveDate,
    /// Operation number, e.g. `0612`.
    pub number: String,
    /// The formation assigned, if any.
    pub formation_id: Option<String>,
}

/// An operation with the sightings reported for it that service day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct OperationDetail {
    /// The operation.
    #[serde(flatten)]
    pub operation: Operation,
    /// Sightings naming this operation during its service day, newest first.
    pub sightings: Vec<Sighting>,
}

/// One row of the change feed: a cache tag touched by a data write.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Change {
    /// Feed position.
    pub id: i64,
    /// The tag, in the vocabulary responses carry.
    pub tag: String,
}
