//! Everything edgerail keeps in its database, for the API and the warmer alike.
//!
//! One type, [`Db`], over PostgreSQL (production, behind RDS Proxy or PgBouncer) and SQLite (the
//! embedded default); every statement is written once on one primitive, and one test suite runs
//! on both backends, so the default behaves like production. The crate also owns every statement on the
//! change feed (`cache_changes`, filled by database triggers so no writer has to know about
//! caching) and on the warmer's bookkeeping tables, the embedded migrations that create them, the
//! service calendar, and the demo data set.
//!
//! # Layout
//!
//! Every statement is a method of [`Db`], written once, in the module that owns its tables:
//!
//! - `read`: the railway data ([`Db::lines`] … [`Db::station_sightings`]), each read taking a
//!   [`Position`] and returning a [`Read`].
//! - `feed`: the change feed ([`Db::feed_start`], [`Db::feed_since`]) and its [`FeedPage`];
//!   `cursor`: [`FeedCursor`].
//! - [`outbox`]: the warmer's side of the feed: claiming, completing, pruning, its records.
//! - [`learned`]: the learned warm set.
//! - [`explain`]: the data reads' statements as PostgreSQL receives them, to check their plans.
//! - `schema`: migrations and what binaries check of the schema; `tags`: the triggers that
//!   record which tags a write touches, generated for both dialects from the tables the policy
//!   declares; [`demo`]: realistic demo data and its loader.
//!
//! Beneath them, the one primitive: `db` ([`Db`] itself: a read-only round trip, or a
//! transaction), on `postgres` and `sqlite` (each backend's connections and migrations) and
//! `onemessage` (PostgreSQL's single-message reads), all built on `statement` (a statement and
//! its rows), which depends only on the crate's error type. `sql` holds every statement's text. [`open`]
//! picks a backend from a URL with [`DbOptions`]; [`calendar`] is the service calendar;
//! [`StoreError`] says why a call failed, split into "unavailable, retry later" and the rest.
//! Settings and the cache policy come from the caller: this crate parses no command line and
//! reads no global policy.
//!
//! # The change feed
//!
//! A reader keeps a [`FeedCursor`] and asks [`Db::feed_since`] for the changes that became
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
pub mod credentials;
mod cursor;
mod db;
pub mod demo;
mod error;
pub mod explain;
mod feed;
pub mod learned;
pub mod model;
mod onemessage;
mod open;
mod options;
pub mod outbox;
mod postgres;
mod read;
mod schema;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod statement;
mod tags;

pub use calendar::{CalendarError, DayRun, ServiceCalendar};
pub use cursor::{FeedCursor, version_sees, version_shows};
pub use db::Db;
pub use error::{StoreError, StoreResult};
pub use feed::FeedPage;
pub use model::{
    Change, FORMATION_SIGHTINGS, Formation, FormationDetail, FormationSummary, Line, LineStations, Operation,
    OperationDetail, Sighting, Station,
};
pub use open::{OpenError, open};
pub use options::DbOptions;
pub use postgres::PgStore;
pub use read::{Position, Read};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
