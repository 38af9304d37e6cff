-- `INSERT OR REPLACE` deletes the conflicting row without firing DELETE triggers (unless the
-- writer's connection enabled recursive_triggers), so the replaced row's tags would be lost when
-- they differ from the new row's. These BEFORE INSERT triggers record the tags of the row about to
-- be replaced. Lines, formations and operations need none: their tags derive from the key alone,
-- which the new row shares, and the AFTER INSERT trigger records those.
CREATE TRIGGER stations_changes_replace BEFORE INSERT ON stations BEGIN
    INSERT INTO cache_changes (tag) SELECT 'line:' || line_id FROM stations WHERE id = NEW.id;
END;

CREATE TRIGGER sightings_changes_replace BEFORE INSERT ON sightings BEGIN
    INSERT INTO cache_changes (tag)
    SELECT t FROM (
        SELECT 'formation:' || s.formation_id AS t FROM sightings s WHERE s.id = NEW.id
        UNION ALL
        SELECT 'operations:' || date(s.seen_at, printf('%+d minutes', c.utc_offset_min - c.day_start_min))
        FROM sightings s, service_calendar c WHERE s.id = NEW.id AND s.operation_number IS NOT NULL
        UNION ALL
        SELECT 'operation:' || date(s.seen_at, printf('%+d minutes', c.utc_offset_min - c.day_start_min)) || ':' || s.operation_number
        FROM sightings s, service_calendar c WHERE s.id = NEW.id AND s.operation_number IS NOT NULL
    );
END;

-- The warmer prunes processed changes older than its retention window.
CREATE INDEX cache_changes_processed ON cache_changes (processed_at) WHERE processed_at IS NOT NULL;
