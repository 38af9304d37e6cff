//! The triggers that record which cache tags a write touches, generated from the tables the policy
//! declares (`[[table]]` in `cache-policy/policy.toml`), for both dialects. `migrate` installs
//! them, so the tag vocabulary is written once: a route's tags and a table's tags are checked
//! against each other when the policy loads, and the database records exactly what the table
//! declares.
//!
//! A tag template's `{column}` becomes the row's value, spelled as the column's kind says; a tag
//! whose column is `NULL` is not touched (SQL's `||` with `NULL` is `NULL`, and those rows are
//! dropped).
//!
//! - PostgreSQL: one set-returning SQL function per table, `edgerail_tags_<table>(row)`, used by
//!   its statement-level triggers with transition tables (through
//!   `edgerail_record_changes_<table>`), so a bulk write records each distinct tag once. A
//!   `TRUNCATE` records the table's tag families (`formation:*`: every tag its rows could carry)
//!   at a cost that does not grow with the table, and later writes of the table in the same
//!   transaction record nothing more (a reload's tags are all in those families). The service day
//!   of a timestamp is looked up in `service_day_runs` (the calendar as data, written by `migrate`
//!   from the API's own rule), once per row in a fenced subquery the planner keeps inside the one
//!   plan.
//! - SQLite: row triggers after insert, update (old and new row) and delete, and before insert
//!   for `INSERT OR REPLACE` (which deletes the row it replaces without firing delete triggers).

use cache_policy::{ColumnKind, Table, TableTag, TagPart};

/// How one dialect spells a tag's pieces for one row.
trait Spelling {
    /// A column of the row, as tag text.
    fn column(&self, column: &str, kind: ColumnKind) -> String;
}

/// `tag` as an SQL text expression for one row: literals quoted, columns spelled by `spell`, and
/// `NULL` when its `when` column is.
fn expression(table: &Table, tag: &TableTag, row: &str, spell: &dyn Spelling) -> String {
    let pieces: Vec<String> = tag
        .template
        .parts()
        .iter()
        .map(|part| match part {
            // Tag literals are of CloudFront's tag alphabet (letters, digits, `-_.:/`): no quote.
            TagPart::Literal(text) => format!("'{text}'"),
            TagPart::Param(column) => spell.column(column, table.column_kind(column)),
        })
        .collect();
    let text = pieces.join(" || ");
    match &tag.when {
        Some(column) => format!("CASE WHEN {row}.{column} IS NOT NULL THEN {text} END"),
        None => text,
    }
}

/// A PostgreSQL row `r` of the tag function, with its service days computed in `d`.
struct PgRow;

impl Spelling for PgRow {
    fn column(&self, column: &str, kind: ColumnKind) -> String {
        match kind {
            ColumnKind::Text => format!("r.{column}::text"),
            ColumnKind::Date => format!("to_char(r.{column}, 'YYYY-MM-DD')"),
            ColumnKind::ServiceDay => format!("d.{column}"),
        }
    }
}

/// The statements that install PostgreSQL's tag functions and triggers, for `tables`, after
/// dropping those of any table no longer declared (a table taken out of the policy would
/// otherwise keep filling the outbox with tags no answer carries).
pub(crate) fn postgres(tables: &[Table]) -> Vec<String> {
    let declared = declared(tables);
    let mut ddl = vec![format!(
        "DO $$ DECLARE o record; BEGIN \
         FOR o IN SELECT t.tgname, t.tgrelid::regclass AS tbl FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid \
                  WHERE NOT t.tgisinternal \
                    AND (p.proname IN ('edgerail_record_changes', 'edgerail_record_truncate', 'edgerail_record_truncate_families') \
                         OR p.proname LIKE 'edgerail\\_record\\_changes\\_%') \
                    AND t.tgrelid::regclass::text <> ALL (ARRAY[{declared}]::text[]) LOOP \
             EXECUTE format('DROP TRIGGER %I ON %s', o.tgname, o.tbl); \
         END LOOP; \
         FOR o IN SELECT p.oid::regprocedure AS f FROM pg_proc p \
                  WHERE (p.proname LIKE 'edgerail\\_tags\\_%' AND substr(p.proname, 15) <> ALL (ARRAY[{declared}]::text[])) \
                     OR (p.proname LIKE 'edgerail\\_record\\_changes\\_%' AND substr(p.proname, 25) <> ALL (ARRAY[{declared}]::text[])) LOOP \
             EXECUTE format('DROP FUNCTION %s', o.f); \
         END LOOP; END $$"
    )];
    for table in tables {
        let name = &table.name;
        let values: Vec<String> =
            table.tags.iter().map(|t| format!("({})", expression(table, t, "r", &PgRow))).collect();
        let days: Vec<String> = table
            .columns
            .iter()
            .filter(|(_, kind)| *kind == ColumnKind::ServiceDay)
            .map(|(column, _)| {
                format!(
                    "(SELECT to_char(LEAST(s.day + floor((extract(epoch FROM r.{column}) - extract(epoch FROM s.starts_at)) / 86400)::int, s.last_day), 'YYYY-MM-DD') \
                     FROM service_day_runs s WHERE s.starts_at <= r.{column} ORDER BY s.starts_at DESC LIMIT 1) AS {column}"
                )
            })
            .collect();
        let source =
            if days.is_empty() { String::new() } else { format!("(SELECT {} OFFSET 0) d, LATERAL ", days.join(", ")) };
        ddl.push(format!(
            "CREATE OR REPLACE FUNCTION edgerail_tags_{name}(r {name}) RETURNS SETOF TEXT LANGUAGE sql STABLE AS $$ \
             SELECT t FROM {source}(VALUES {}) v (t) WHERE t IS NOT NULL $$",
            values.join(", ")
        ));
        // Static statements, which PL/pgSQL prepares once per session, where one function for
        // every table built each statement's text and parsed and planned it anew on every write
        // (about 0.15 ms of a single-row sighting insert here). A write after its transaction's
        // `TRUNCATE` of the table records nothing: the families the `TRUNCATE` recorded cover
        // every tag (`edgerail_record_truncate_families`).
        ddl.push(format!(
            "CREATE OR REPLACE FUNCTION edgerail_record_changes_{name}() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
                 IF current_setting('edgerail.truncated_' || TG_RELID, true) = pg_current_xact_id()::text THEN RETURN NULL; END IF; \
                 IF TG_OP = 'INSERT' THEN \
                     INSERT INTO cache_changes (tag) SELECT DISTINCT t FROM new_rows r, edgerail_tags_{name}(r) t; \
                 ELSIF TG_OP = 'UPDATE' THEN \
                     INSERT INTO cache_changes (tag) SELECT t FROM new_rows r, edgerail_tags_{name}(r) t \
                         UNION SELECT t FROM old_rows r, edgerail_tags_{name}(r) t; \
                 ELSE \
                     INSERT INTO cache_changes (tag) SELECT DISTINCT t FROM old_rows r, edgerail_tags_{name}(r) t; \
                 END IF; \
                 RETURN NULL; \
             END $$"
        ));
        for (event, referencing, when) in [
            ("insert", "REFERENCING NEW TABLE AS new_rows", "AFTER INSERT"),
            ("update", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", "AFTER UPDATE"),
            ("delete", "REFERENCING OLD TABLE AS old_rows", "AFTER DELETE"),
        ] {
            ddl.push(format!(
                "CREATE OR REPLACE TRIGGER {name}_changes_{event} {when} ON {name} {referencing} \
                 FOR EACH STATEMENT EXECUTE FUNCTION edgerail_record_changes_{name}()"
            ));
        }
        // Tag literals and `*` need no quoting inside a string literal.
        let families: Vec<String> = table.families().iter().map(|f| format!("'{f}'")).collect();
        ddl.push(format!(
            "CREATE OR REPLACE TRIGGER {name}_changes_truncate BEFORE TRUNCATE ON {name} \
             FOR EACH STATEMENT EXECUTE FUNCTION edgerail_record_truncate_families({})",
            families.join(", ")
        ));
    }
    // What earlier versions' triggers called: one change function for every table (dynamic SQL)
    // and a TRUNCATE function computing every removed row's tags. None calls them now.
    ddl.push("DROP FUNCTION IF EXISTS edgerail_record_changes()".to_owned());
    ddl.push("DROP FUNCTION IF EXISTS edgerail_record_truncate()".to_owned());
    // The service-day rule earlier versions wrote in SQL; no tag function calls it any more.
    ddl.push("DROP FUNCTION IF EXISTS edgerail_service_day(timestamptz)".to_owned());
    ddl.push("DROP FUNCTION IF EXISTS edgerail_day_of(timestamptz, text, interval)".to_owned());
    ddl
}

/// The declared tables' names as a list of SQL string literals (names are identifiers, checked
/// when the policy loads: no quote can occur).
fn declared(tables: &[Table]) -> String {
    tables.iter().map(|t| format!("'{}'", t.name)).collect::<Vec<_>>().join(", ")
}

/// The statement that lists, on SQLite, the change triggers of tables no longer declared: every
/// trigger that writes to `cache_changes` on another table.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_undeclared(tables: &[Table]) -> String {
    format!(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND sql LIKE '%INSERT INTO cache_changes%' \
         AND tbl_name NOT IN ({})",
        declared(tables)
    )
}

/// A SQLite row: `NEW`, `OLD`, or an alias.
#[cfg(feature = "sqlite")]
struct SqliteRow<'a>(&'a str);

#[cfg(feature = "sqlite")]
impl Spelling for SqliteRow<'_> {
    fn column(&self, column: &str, kind: ColumnKind) -> String {
        let row = self.0;
        match kind {
            // Dates are stored as `YYYY-MM-DD` text.
            ColumnKind::Text | ColumnKind::Date => format!("{row}.{column}"),
            // The run of days the instant falls in, then whole days since its start, counted in
            // whole seconds with the fraction cut off as text: SQLite keeps times to the
            // millisecond, and would round 03:59:59.9999 up into the next day.
            ColumnKind::ServiceDay => format!(
                "(SELECT min(date(s.day, printf('%+d days', (unixepoch(substr({row}.{column}, 1, 19)) - unixepoch(s.starts_at)) / 86400)), s.last_day) \
                 FROM service_day_runs s WHERE s.starts_at <= {row}.{column} ORDER BY s.starts_at DESC LIMIT 1)"
            ),
        }
    }
}

/// The statements that install SQLite's tag triggers for `tables`; `primary_key` names a table's
/// key columns (for the trigger that sees what `INSERT OR REPLACE` is about to delete).
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite(tables: &[Table], primary_key: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let mut ddl = Vec::new();
    let values = |table: &Table, rows: &[&str]| -> String {
        let values: Vec<String> = rows
            .iter()
            .flat_map(|row| table.tags.iter().map(move |t| format!("({})", expression(table, t, row, &SqliteRow(row)))))
            .collect();
        format!(
            "INSERT INTO cache_changes (tag) SELECT DISTINCT column1 FROM (VALUES {}) WHERE column1 IS NOT NULL;",
            values.join(", ")
        )
    };
    for table in tables {
        let name = &table.name;
        for (event, when, rows) in [
            ("insert", "AFTER INSERT", &["NEW"][..]),
            ("update", "AFTER UPDATE", &["OLD", "NEW"][..]),
            ("delete", "AFTER DELETE", &["OLD"][..]),
        ] {
            ddl.push(format!("DROP TRIGGER IF EXISTS {name}_changes_{event}"));
            ddl.push(format!(
                "CREATE TRIGGER {name}_changes_{event} {when} ON {name} BEGIN {} END",
                values(table, rows)
            ));
        }
        let key = primary_key(name);
        ddl.push(format!("DROP TRIGGER IF EXISTS {name}_changes_replace"));
        if !key.is_empty() {
            let matches: Vec<String> = key.iter().map(|c| format!("r.{c} = NEW.{c}")).collect();
            let selects: Vec<String> = table
                .tags
                .iter()
                .map(|t| {
                    format!(
                        "SELECT {} AS t FROM {name} r WHERE {}",
                        expression(table, t, "r", &SqliteRow("r")),
                        matches.join(" AND ")
                    )
                })
                .collect();
            ddl.push(format!(
                "CREATE TRIGGER {name}_changes_replace BEFORE INSERT ON {name} BEGIN \
                 INSERT INTO cache_changes (tag) SELECT DISTINCT t FROM ({}) WHERE t IS NOT NULL; END",
                selects.join(" UNION ALL ")
            ));
        }
    }
    ddl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_statements_follow_the_declarations() {
        let policy = cache_policy::Policy::embedded().unwrap();
        let pg = postgres(policy.tables());
        let sightings = pg.iter().find(|s| s.contains("FUNCTION edgerail_tags_sightings")).unwrap();
        assert!(sightings.contains("FROM service_day_runs s WHERE s.starts_at <= r.seen_at"), "{sightings}");
        assert!(sightings.contains("('operation:' || d.seen_at || ':' || r.operation_number::text)"), "{sightings}");
        assert!(
            sightings.contains("(CASE WHEN r.operation_number IS NOT NULL THEN 'operations:' || d.seen_at END)"),
            "{sightings}"
        );
        let operations = pg.iter().find(|s| s.contains("FUNCTION edgerail_tags_operations")).unwrap();
        assert!(operations.contains("to_char(r.service_date, 'YYYY-MM-DD')"), "{operations}");
        assert!(!operations.contains("service_day_runs"), "no calendar without a service day: {operations}");
        assert_eq!(pg.iter().filter(|s| s.starts_with("CREATE OR REPLACE TRIGGER")).count(), 4 * policy.tables().len());
        assert!(pg[0].contains("<> ALL (ARRAY['lines', "), "undeclared tables' triggers go first: {}", pg[0]);

        #[cfg(feature = "sqlite")]
        sqlite_statements(policy);
    }

    #[cfg(feature = "sqlite")]
    fn sqlite_statements(policy: &cache_policy::Policy) {
        let lite = sqlite(policy.tables(), |_| vec!["id".to_owned()]);
        let update = lite.iter().find(|s| s.starts_with("CREATE TRIGGER stations_changes_update")).unwrap();
        assert!(
            update.contains("('line:' || OLD.line_id), ('station:' || OLD.id), ('line:' || NEW.line_id)"),
            "{update}"
        );
        let replace = lite.iter().find(|s| s.starts_with("CREATE TRIGGER stations_changes_replace")).unwrap();
        assert!(replace.contains("FROM stations r WHERE r.id = NEW.id"), "{replace}");
    }
}
