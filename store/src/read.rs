//! The railway data as the API serves it: each read a method of [`Db`], written once as
//! statements for one read-only round trip, run by the same test suite on both backends.
//!
//! A reader that follows the change feed needs to know which changes a read's data already
//! shows. Every read therefore takes a [`Position`]: with [`Position::Take`] the same round trip
//! also reads the feed's position, and the [`Read`] it returns carries it. It is an argument and a
//! result, never a setting the read finds somewhere.

use chrono::{DateTime, NaiveDate, Utc};

use crate::cursor::FeedCursor;
use crate::db::Db;
use crate::error::StoreResult;
use crate::model::{
    FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation, OperationDetail,
    Sighting, Station,
};
use crate::sql::{self, summaries};
use crate::statement::{Limit, Rows, Statement};

/// Whether a read also takes the change feed's position, in the same round trip as its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The data alone (and its version, which takes no lock).
    Skip,
    /// The position too (see [`Read::position`]).
    Take,
}

/// What a read returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<T> {
    /// The data.
    pub value: T,
    /// With [`Position::Take`], the feed position the data is at least as new as: every change
    /// at or before it is in `value`, so a reader that follows the feed from here misses nothing.
    /// `None` when it was not asked for, or could not be read without waiting (something holds
    /// the change feed locked).
    pub position: Option<FeedCursor>,
    /// The data's version: it reflects every change this version sees (see
    /// [`crate::version_sees`]). On PostgreSQL the snapshot the data statements saw at least
    /// (`xmin:xmax:xip`), on SQLite the last change id. `None` only when the position was asked
    /// for and could not be read.
    pub version: Option<String>,
}

impl<T> Read<T> {
    /// The same read with its value turned into another.
    ///
    /// # Errors
    ///
    /// Whatever `f` fails with.
    pub fn try_map<U, E>(self, f: impl FnOnce(T) -> Result<U, E>) -> Result<Read<U>, E> {
        Ok(Read { value: f(self.value)?, position: self.position, version: self.version })
    }
}

impl Db {
    /// Runs a read's statements, with the feed's position when asked for, and the data's version.
    async fn read_data<const N: usize>(
        &self,
        position: Position,
        statements: [Statement<'_>; N],
    ) -> StoreResult<([Rows; N], Option<FeedCursor>, Option<String>)> {
        match position {
            Position::Skip => {
                let (rows, version) = self.read_versioned(Limit::Data, statements).await?;
                Ok((rows, None, version))
            }
            Position::Take => self.read_at(Limit::Data, statements).await,
        }
    }

    /// Every line, ordered by id.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn lines(&self, position: Position) -> StoreResult<Read<Vec<Line>>> {
        let ([lines], position, version) = self.read_data(position, [Statement::new(sql::LINES)]).await?;
        Ok(Read { value: lines.decode()?, position, version })
    }

    /// A line and its stations; `None` when the line does not exist.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn line_stations(&self, line_id: &str, position: Position) -> StoreResult<Read<Option<LineStations>>> {
        let ([line, stations], position, version) = self
            .read_data(position, [Statement::new(sql::LINE).bind(line_id), Statement::new(sql::STATIONS).bind(line_id)])
            .await?;
        let value = match line.first::<Line>()? {
            Some(line) => Some(LineStations { line, stations: stations.decode::<Station>()? }),
            None => None,
        };
        Ok(Read { value, position, version })
    }

    /// Every formation with its latest sighting, ordered by id.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn formations(&self, position: Position) -> StoreResult<Read<Vec<FormationSummary>>> {
        let ([formations, latest], position, version) = self
            .read_data(position, [Statement::new(sql::FORMATIONS), Statement::new(self.sql().latest_per_formation)])
            .await?;
        Ok(Read {
            value: summaries(formations.decode::<Formation>()?, latest.decode::<Sighting>()?),
            position,
            version,
        })
    }

    /// One formation with its latest sightings; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn formation(&self, id: &str, position: Position) -> StoreResult<Read<Option<FormationDetail>>> {
        let ([formation, sightings], position, version) = self
            .read_data(
                position,
                [
                    Statement::new(sql::FORMATION).bind(id),
                    Statement::new(sql::FORMATION_SIGHTINGS).bind(id).bind(FORMATION_SIGHTINGS),
                ],
            )
            .await?;
        let value = match formation.first::<Formation>()? {
            Some(formation) => Some(FormationDetail { formation, sightings: sightings.decode()? }),
            None => None,
        };
        Ok(Read { value, position, version })
    }

    /// The operations of a service day, ordered by number.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn operations(&self, date: NaiveDate, position: Position) -> StoreResult<Read<Vec<Operation>>> {
        let ([operations], position, version) =
            self.read_data(position, [Statement::new(sql::OPERATIONS).bind(date)]).await?;
        Ok(Read { value: operations.decode()?, position, version })
    }

    /// One operation and its sightings within `[from, until)`, the service day in UTC; `None`
    /// when the operation does not exist.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn operation(
        &self,
        date: NaiveDate,
        number: &str,
        (from, until): (DateTime<Utc>, DateTime<Utc>),
        position: Position,
    ) -> StoreResult<Read<Option<OperationDetail>>> {
        let ([operation, sightings], position, version) = self
            .read_data(
                position,
                [
                    Statement::new(sql::OPERATION).bind(date).bind(number),
                    Statement::new(sql::OPERATION_SIGHTINGS).bind(number).bind(from).bind(until),
                ],
            )
            .await?;
        let value = match operation.first::<Operation>()? {
            Some(operation) => Some(OperationDetail { operation, sightings: sightings.decode()? }),
            None => None,
        };
        Ok(Read { value, position, version })
    }

    /// The latest `limit` sightings, newest first.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn latest_sightings(&self, limit: i64, position: Position) -> StoreResult<Read<Vec<Sighting>>> {
        let ([sightings], position, version) =
            self.read_data(position, [Statement::new(sql::LATEST_SIGHTINGS).bind(limit)]).await?;
        Ok(Read { value: sightings.decode()?, position, version })
    }

    /// A station and the latest `limit` sightings there, newest first; `None` when the station
    /// does not exist.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn station_sightings(
        &self,
        station_id: &str,
        limit: i64,
        position: Position,
    ) -> StoreResult<Read<Option<(Station, Vec<Sighting>)>>> {
        let ([station, sightings], position, version) = self
            .read_data(
                position,
                [
                    Statement::new(sql::STATION).bind(station_id),
                    Statement::new(sql::STATION_SIGHTINGS).bind(station_id).bind(limit),
                ],
            )
            .await?;
        let value = match station.first::<Station>()? {
            Some(station) => Some((station, sightings.decode()?)),
            None => None,
        };
        Ok(Read { value, position, version })
    }
}
