//! The schema: applying the embedded migrations with the triggers the policy's tables declare,
//! and what a binary checks of it at start (whether it exists, which calendar its triggers use).

use cache_policy::Table;

use crate::calendar::ServiceCalendar;
use crate::db::Db;
use crate::error::StoreResult;
use crate::sql;
use crate::statement::{Limit, Statement};

impl Db {
    /// Applies the embedded migrations, installs the triggers that record the tags `tables`
    /// declare (generated for this backend's dialect), and records the service calendar the
    /// triggers use.
    ///
    /// # Errors
    ///
    /// A migration or a statement failed; what the migrations applied stays applied.
    pub async fn migrate(&self, calendar: &ServiceCalendar, tables: &[Table]) -> StoreResult<()> {
        match self {
            Self::Postgres(s) => s.migrate(calendar, tables).await,
            #[cfg(feature = "sqlite")]
            Self::Sqlite(s) => s.migrate(calendar, tables).await,
        }
    }

    /// The service calendar the database's triggers use (set by [`Db::migrate`]): time zone name
    /// and day start in minutes. A reader whose own calendar differs would look for changes under
    /// the wrong service day's tags.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn trigger_calendar(&self) -> StoreResult<(String, i32)> {
        let [calendar] = self.read(Limit::Data, [Statement::new(self.sql().trigger_calendar)]).await?;
        calendar.one("service calendar")
    }

    /// Whether the schema exists and holds any line (used to seed the embedded default once).
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn has_data(&self) -> StoreResult<bool> {
        let [schema] = self.read(Limit::Data, [Statement::new(self.sql().has_schema)]).await?;
        if !schema.one::<(bool,)>("catalogue row")?.0 {
            return Ok(false);
        }
        let [data] = self.read(Limit::Data, [Statement::new(sql::HAS_DATA)]).await?;
        Ok(data.one::<(bool,)>("row")?.0)
    }
}
