//! The statements the data reads send, spelled as PostgreSQL receives them, so that their plans
//! can be checked (`EXPLAIN`) on a database large enough for the planner to choose as it would in
//! production: every read of `sightings` and `operations` must use an index, whatever it asks
//! for, an id that does not exist included.

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::StoreResult;
use crate::model::FORMATION_SIGHTINGS;
use crate::onemessage;
use crate::sql;
use crate::statement::Statement;

/// What the reads are asked for.
#[derive(Debug, Clone)]
pub struct Asked<'a> {
    /// A line id.
    pub line: &'a str,
    /// A formation id.
    pub formation: &'a str,
    /// A station id.
    pub station: &'a str,
    /// A service day, its operation number, and the day's bounds in UTC.
    pub day: (NaiveDate, &'a str, DateTime<Utc>, DateTime<Utc>),
    /// A page size.
    pub limit: i64,
}

/// Each data read's statements, named `read/statement`, as PostgreSQL receives them.
///
/// # Errors
///
/// A value that cannot be spelled.
pub fn postgres_reads(asked: &Asked<'_>) -> StoreResult<Vec<(&'static str, String)>> {
    let (date, number, from, until) = asked.day;
    let statements = [
        ("lines", Statement::new(sql::LINES)),
        ("line_stations/line", Statement::new(sql::LINE).bind(asked.line)),
        ("line_stations/stations", Statement::new(sql::STATIONS).bind(asked.line)),
        ("formations/formations", Statement::new(sql::FORMATIONS)),
        ("formations/latest", Statement::new(sql::POSTGRES.latest_per_formation)),
        ("formation/formation", Statement::new(sql::FORMATION).bind(asked.formation)),
        (
            "formation/sightings",
            Statement::new(sql::FORMATION_SIGHTINGS).bind(asked.formation).bind(FORMATION_SIGHTINGS),
        ),
        ("operations", Statement::new(sql::OPERATIONS).bind(date)),
        ("operation/operation", Statement::new(sql::OPERATION).bind(date).bind(number)),
        ("operation/sightings", Statement::new(sql::OPERATION_SIGHTINGS).bind(number).bind(from).bind(until)),
        ("latest_sightings", Statement::new(sql::LATEST_SIGHTINGS).bind(asked.limit)),
        ("station_sightings/station", Statement::new(sql::STATION).bind(asked.station)),
        ("station_sightings/sightings", Statement::new(sql::STATION_SIGHTINGS).bind(asked.station).bind(asked.limit)),
    ];
    statements.iter().map(|(name, statement)| Ok((*name, onemessage::spell(statement)?))).collect()
}
