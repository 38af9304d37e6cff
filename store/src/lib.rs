//! Everything edgerail keeps in its database, for the API and the warmer alike.
//!
//! The railway data is read through the [`Store`] trait, implemented for PostgreSQL (production,
//! behind RDS Proxy or PgBouncer) and SQLite (the embedded default). Both implementations pass one
//! test suite, so the default behaves like production. The crate also owns every statement on the
//! change feed (`cache_changes`, filled by database triggers so no writer has to know about
//! caching) and on the warmer's bookkeeping tables, the embedded migrations that create them, the
//! service calendar, and the demo data set.
//!
//! # Layout
//!
//! - [`model`]: the rows and answers ([`Line`] … [`Change`]).
//! - [`Store`] (`read`): read access plus the change feed; [`FeedCursor`], [`FeedPage`] and
//!   [`with_feed_start`] (`feed`).
//! - [`Db`] (`db`): either backend, and the one primitive every statement goes through (a
//!   read-only round trip, or a transaction); `postgres` / `sqlite`: the two backends' connections
//!   and migrations; `sql`: every statement's text; [`open`] picks a backend from a URL with
//!   [`DbOptions`] (`options`).
//! - `tags`: the triggers that record which tags a write touches, generated for both dialects from
//!   the tables the cache policy declares.
//! - [`outbox`]: the warmer's side of the feed: claiming, completing, pruning, its records.
//! - [`calendar`]: service days and their rollover; [`CalendarSettings`] and
//!   [`DatabaseSettings`] (`settings`): the binaries' shared clap settings for both.
//! - [`demo`]: realistic demo data, generated deterministically and loaded in bulk.
//! - [`StoreError`]: why a call failed, split into "unavailable, retry later" and the rest.
//!
//! # The change feed
//!
//! A reader keeps a [`FeedCursor`] and asks [`Store::feed_since`] for the changes that became
//! visible after it. Ids alone cannot say that on PostgreSQL: a transaction takes its ids when it
//! writes but makes them visible when it commits, possibly long after later ids were seen. So the
//! PostgreSQL cursor is a snapshot (`pg_current_snapshot()`) with the highest change id visible in
//! it, and each change row records its writer's transaction id. A poll reads the rows above that
//! id and the rows of the transactions the snapshot had in progress, and returns those visible
//! now and not then. A transaction that was open when a reader started, or ran for an hour, is
//! still seen when it commits, and its age costs a poll nothing (the poll never walks the rows
//! written since it began); a jump of millions of burned ids costs nothing either. This relies on
//! the id sequence handing out one value at a time (`CACHE 1`, the default): a writer that takes
//! its id after a snapshot then gets a higher id than any the snapshot saw. SQLite has one writer
//! at a time, so its ids become visible in order and the cursor is the last id.
//!
//! # Features
//!
//! `sqlite` (default) builds the embedded SQLite backend, bundled C library included. The Lambda
//! build leaves it out (`no_default_features` in the workspace's `lambda.build` metadata): a
//! function always reads PostgreSQL, and SQLite is a fifth of its zip.

mod calendar;
mod db;
pub mod demo;
mod error;
mod feed;
pub mod learned;
pub mod model;
mod onemessage;
mod open;
mod options;
pub mod outbox;
mod postgres;
mod read;
mod settings;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod tags;

pub use calendar::{CalendarError, DayRun, ServiceCalendar};
pub use db::Db;
pub use error::{StoreError, StoreResult};
pub use feed::{FeedCursor, FeedPage, with_feed_start};
pub use model::{
    Change, FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation,
    OperationDetail, Sighting, Station,
};
pub use open::{OpenError, open};
pub use options::DbOptions;
pub use postgres::PgStore;
pub use read::Store;
pub use settings::{CalendarSettings, DatabaseSettings};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
