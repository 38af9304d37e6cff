-- A station's latest sightings and an operation's sightings of a day, by index. Without them both
-- reads walked the latest-sightings index (or the table) keeping one row in dozens: at 2 M
-- sightings a station's page took 139 ms, a station that does not exist as long, and at ten
-- times that a read reaches the statement timeout.
CREATE INDEX sightings_station_latest ON sightings (station_id, seen_at DESC, id DESC);
CREATE INDEX sightings_operation_latest ON sightings (operation_number, seen_at DESC, id DESC);
