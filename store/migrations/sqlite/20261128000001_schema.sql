-- edgerail schema (SQLite, the embedded default). Same logical schema as PostgreSQL; row-level
-- triggers record the cache tags each write touches in cache_changes.

CREATE TABLE lines (
    id    TEXT PRIMARY KEY NOT NULL,
    name  TEXT NOT NULL,
    color TEXT
);

CREATE TABLE stations (
    id       TEXT PRIMARY KEY NOT NULL,
    line_id  TEXT NOT NULL REFERENCES lines (id),
    name     TEXT NOT NULL,
    position INTEGER NOT NULL
);
CREATE INDEX stations_line_position ON stations (line_id, position);

CREATE TABLE formations (
    id     TEXT PRIMARY KEY NOT NULL,
    series TEXT NOT NULL,
    cars   INTEGER NOT NULL,
    note   TEXT
);

CREATE TABLE operations (
    service_date TEXT NOT NULL CHECK (service_date GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    number       TEXT NOT NULL,
    formation_id TEXT REFERENCES formations (id),
    PRIMARY KEY (service_date, number)
);

-- seen_at is UTC text, 'YYYY-MM-DDTHH:MM:SS.ffffffZ', so text order is time order.
CREATE TABLE sightings (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    formation_id     TEXT NOT NULL REFERENCES formations (id),
    operation_number TEXT,
    station_id       TEXT REFERENCES stations (id),
    seen_at          TEXT NOT NULL
);
CREATE INDEX sightings_latest ON sightings (seen_at DESC, id DESC);
CREATE INDEX sightings_formation_latest ON sightings (formation_id, seen_at DESC, id DESC);

CREATE TABLE cache_changes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    tag             TEXT NOT NULL,
    changed_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    processed_at    TEXT,
    invalidation_id TEXT
);
CREATE INDEX cache_changes_pending ON cache_changes (id) WHERE processed_at IS NULL;

-- SQLite has no time zone database: the calendar is stored as the zone's UTC offset (kept in step
-- with SERVICE_TZ by `api migrate`; zones with daylight saving use the offset at migrate time).
CREATE TABLE service_calendar (
    singleton         INTEGER PRIMARY KEY CHECK (singleton = 1) DEFAULT 1,
    time_zone         TEXT NOT NULL,
    utc_offset_min    INTEGER NOT NULL,
    day_start_min     INTEGER NOT NULL
);
INSERT INTO service_calendar (time_zone, utc_offset_min, day_start_min) VALUES ('Asia/Tokyo', 540, 240);

CREATE TRIGGER lines_changes_insert AFTER INSERT ON lines BEGIN
    INSERT INTO cache_changes (tag) VALUES ('lines'), ('line:' || NEW.id);
END;
CREATE TRIGGER lines_changes_update AFTER UPDATE ON lines BEGIN
    INSERT INTO cache_changes (tag) SELECT DISTINCT column1 FROM (VALUES ('lines'), ('line:' || OLD.id), ('line:' || NEW.id));
END;
CREATE TRIGGER lines_changes_delete AFTER DELETE ON lines BEGIN
    INSERT INTO cache_changes (tag) VALUES ('lines'), ('line:' || OLD.id);
END;

CREATE TRIGGER stations_changes_insert AFTER INSERT ON stations BEGIN
    INSERT INTO cache_changes (tag) VALUES ('line:' || NEW.line_id);
END;
CREATE TRIGGER stations_changes_update AFTER UPDATE ON stations BEGIN
    INSERT INTO cache_changes (tag) SELECT DISTINCT column1 FROM (VALUES ('line:' || OLD.line_id), ('line:' || NEW.line_id));
END;
CREATE TRIGGER stations_changes_delete AFTER DELETE ON stations BEGIN
    INSERT INTO cache_changes (tag) VALUES ('line:' || OLD.line_id);
END;

CREATE TRIGGER formations_changes_insert AFTER INSERT ON formations BEGIN
    INSERT INTO cache_changes (tag) VALUES ('formations'), ('formation:' || NEW.id);
END;
CREATE TRIGGER formations_changes_update AFTER UPDATE ON formations BEGIN
    INSERT INTO cache_changes (tag) SELECT DISTINCT column1 FROM (VALUES ('formations'), ('formation:' || OLD.id), ('formation:' || NEW.id));
END;
CREATE TRIGGER formations_changes_delete AFTER DELETE ON formations BEGIN
    INSERT INTO cache_changes (tag) VALUES ('formations'), ('formation:' || OLD.id);
END;

CREATE TRIGGER operations_changes_insert AFTER INSERT ON operations BEGIN
    INSERT INTO cache_changes (tag) VALUES ('operations:' || NEW.service_date), ('operation:' || NEW.service_date || ':' || NEW.number);
END;
CREATE TRIGGER operations_changes_update AFTER UPDATE ON operations BEGIN
    INSERT INTO cache_changes (tag) SELECT DISTINCT column1 FROM (VALUES
        ('operations:' || OLD.service_date), ('operation:' || OLD.service_date || ':' || OLD.number),
        ('operations:' || NEW.service_date), ('operation:' || NEW.service_date || ':' || NEW.number));
END;
CREATE TRIGGER operations_changes_delete AFTER DELETE ON operations BEGIN
    INSERT INTO cache_changes (tag) VALUES ('operations:' || OLD.service_date), ('operation:' || OLD.service_date || ':' || OLD.number);
END;

CREATE TRIGGER sightings_changes_insert AFTER INSERT ON sightings BEGIN
    INSERT INTO cache_changes (tag) VALUES ('sightings'), ('formations'), ('formation:' || NEW.formation_id);
    INSERT INTO cache_changes (tag)
    SELECT column1 FROM (
        SELECT 'operations:' || d AS column1 FROM (SELECT date(NEW.seen_at, printf('%+d minutes', utc_offset_min - day_start_min)) AS d FROM service_calendar)
        UNION ALL
        SELECT 'operation:' || d || ':' || NEW.operation_number FROM (SELECT date(NEW.seen_at, printf('%+d minutes', utc_offset_min - day_start_min)) AS d FROM service_calendar)
    ) WHERE NEW.operation_number IS NOT NULL;
END;
CREATE TRIGGER sightings_changes_update AFTER UPDATE ON sightings BEGIN
    INSERT INTO cache_changes (tag) SELECT DISTINCT column1 FROM (VALUES
        ('sightings'), ('formations'), ('formation:' || OLD.formation_id), ('formation:' || NEW.formation_id));
    INSERT INTO cache_changes (tag)
    SELECT DISTINCT tag FROM (
        SELECT 'operations:' || date(r.seen_at, printf('%+d minutes', c.utc_offset_min - c.day_start_min)) AS tag, r.op
        FROM (SELECT OLD.seen_at AS seen_at, OLD.operation_number AS op UNION ALL SELECT NEW.seen_at, NEW.operation_number) r, service_calendar c
        UNION ALL
        SELECT 'operation:' || date(r.seen_at, printf('%+d minutes', c.utc_offset_min - c.day_start_min)) || ':' || r.op, r.op
        FROM (SELECT OLD.seen_at AS seen_at, OLD.operation_number AS op UNION ALL SELECT NEW.seen_at, NEW.operation_number) r, service_calendar c
    ) WHERE op IS NOT NULL;
END;
CREATE TRIGGER sightings_changes_delete AFTER DELETE ON sightings BEGIN
    INSERT INTO cache_changes (tag) VALUES ('sightings'), ('formations'), ('formation:' || OLD.formation_id);
    INSERT INTO cache_changes (tag)
    SELECT 'operations:' || d FROM (SELECT date(OLD.seen_at, printf('%+d minutes', utc_offset_min - day_start_min)) AS d FROM service_calendar)
    WHERE OLD.operation_number IS NOT NULL
    UNION ALL
    SELECT 'operation:' || d || ':' || OLD.operation_number FROM (SELECT date(OLD.seen_at, printf('%+d minutes', utc_offset_min - day_start_min)) AS d FROM service_calendar)
    WHERE OLD.operation_number IS NOT NULL;
END;
