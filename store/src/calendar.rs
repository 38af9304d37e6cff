//! Service days: railway days run from `SERVICE_DAY_START` (04:00 by default) in `SERVICE_TZ`
//! (Asia/Tokyo) to the same time next morning, so a train at 00:30 belongs to the previous day.
//!
//! Zones come from the IANA database bundled with jiff (compiled in, so a function needs no
//! zoneinfo on its image); the rest of the code speaks chrono, converted at this module's edge.

use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone, Timelike, Utc};
use jiff::{Timestamp, tz::TimeZone as Zone};

/// Why a calendar setting was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// Not an IANA zone name.
    #[error("unknown time zone {0:?} (expected an IANA name such as Asia/Tokyo)")]
    UnknownZone(String),
    /// Not `HH:MM`.
    #[error("invalid service day start {0:?} (expected HH:MM, e.g. 04:00)")]
    DayStart(String),
}

/// The service calendar: a time zone and the local time at which a service day starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCalendar {
    /// Zone the timetable is written in.
    tz: Zone,
    /// Its name as the database spells it (`asia/tokyo` is read as `Asia/Tokyo`).
    name: String,
    /// Local time at which one service day ends and the next begins.
    day_start: NaiveTime,
}

impl ServiceCalendar {
    /// Builds a calendar from configuration text.
    ///
    /// # Errors
    ///
    /// [`CalendarError`] for an unknown zone or a malformed start time.
    pub fn new(tz: &str, day_start: &str) -> Result<Self, CalendarError> {
        // Names from the database only (fixed offsets and POSIX rules are not looked up there),
        // as PostgreSQL's triggers need one.
        let zone = Zone::get(tz).map_err(|_| CalendarError::UnknownZone(tz.to_owned()))?;
        let name = zone.iana_name().unwrap_or(tz).to_owned();
        let day_start =
            NaiveTime::parse_from_str(day_start, "%H:%M").map_err(|_| CalendarError::DayStart(day_start.to_owned()))?;
        Ok(Self { tz: zone, name, day_start })
    }

    /// The IANA zone name.
    pub fn zone_name(&self) -> &str {
        &self.name
    }

    /// Minutes after local midnight at which a service day starts.
    pub fn day_start_minutes(&self) -> i32 {
        i32::try_from(self.day_start.signed_duration_since(NaiveTime::MIN).num_minutes()).unwrap_or(0)
    }

    /// How the calendar the database's triggers use (`zone`, day start in minutes) differs from
    /// this one, in words; `None` when they agree. Triggers on another calendar tag sightings with
    /// the wrong service day, so `operations:{date}` pages would not be invalidated.
    pub fn mismatch(&self, zone: &str, day_start_minutes: i32) -> Option<String> {
        let ours = self.day_start_minutes();
        if zone == self.zone_name() && day_start_minutes == ours {
            return None;
        }
        Some(format!(
            "the database's triggers use {zone} with days starting {:02}:{:02}, this process {} {:02}:{:02}",
            day_start_minutes / 60,
            day_start_minutes % 60,
            self.zone_name(),
            ours / 60,
            ours % 60
        ))
    }

    /// Compares `theirs`, the runs of days a database holds that overlap `from` to `to`, with this
    /// calendar, day by day: where each day of the range starts. `None` when every day starts at
    /// the same instant (so every instant falls in the same day), else the first day that differs.
    pub fn runs_mismatch(&self, theirs: &[DayRun], from: NaiveDate, to: NaiveDate) -> Option<String> {
        const DAY: TimeDelta = TimeDelta::days(1);
        let mut day = from;
        while day <= to {
            let ours = self.day_start_instant(day);
            let run = theirs.iter().find(|r| r.day <= day && day <= r.last_day);
            let start = run.and_then(|r| Some(r.starts_at + DAY * i32::try_from((day - r.day).num_days()).ok()?));
            if start != Some(ours) {
                let theirs = start.map_or_else(|| "nowhere".to_owned(), |s| s.to_rfc3339());
                return Some(format!(
                    "the database's triggers start service day {day} at {theirs}, this process's {} calendar at {}: \
                     its zone rules changed since `api migrate`",
                    self.zone_name(),
                    ours.to_rfc3339()
                ));
            }
            day = day.succ_opt()?;
        }
        None
    }

    /// The zone's UTC offset in seconds at `at`.
    fn offset_seconds(&self, at: DateTime<Utc>) -> i32 {
        // jiff's instants span years -9999..=9999; clamping outside them keeps the zone's
        // earliest or latest offset, which is what those instants would have.
        let seconds = at.timestamp().clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second());
        Timestamp::from_second(seconds).map_or(0, |t| self.tz.to_offset(t).seconds())
    }

    /// The zone's UTC offset in minutes at `at` (SQLite's calendar row keeps it for the triggers
    /// of versions before the runs of days).
    pub fn utc_offset_minutes(&self, at: DateTime<Utc>) -> i32 {
        self.offset_seconds(at) / 60
    }

    /// The service day that `at` belongs to: the one whose [`Self::day_bounds`] contain it, as the
    /// database's triggers find it in [`Self::day_runs`] when they tag a sighting.
    ///
    /// The wall clock alone would not do: where a day starts inside a fold, the repeated hour's
    /// second pass would read as the previous day again, and a sighting would be tagged with one
    /// day while it appears on another day's page.
    pub fn service_date(&self, at: DateTime<Utc>) -> NaiveDate {
        let local = at.naive_utc() + TimeDelta::seconds(i64::from(self.offset_seconds(at)));
        // By the wall clock, off by at most a day next to a clock change.
        let guess = (local - self.day_start.signed_duration_since(NaiveTime::MIN)).date();
        if at < self.day_start_instant(guess) {
            guess.pred_opt().unwrap_or(guess)
        } else if guess.succ_opt().is_some_and(|next| at >= self.day_start_instant(next)) {
            guess.succ_opt().unwrap_or(guess)
        } else {
            guess
        }
    }

    /// The instant a service day starts. A start that falls in a clock change resolves to the
    /// later instant, as PostgreSQL resolves a local time: inside a gap (spring forward) the day
    /// starts when the clock has jumped, the same distance later; in a fold (fall back) at the
    /// second of the repeated times. Days are contiguous: each ends where the next starts.
    pub fn day_start_instant(&self, date: NaiveDate) -> DateTime<Utc> {
        let local = date.and_time(self.day_start);
        // Only outside jiff's years (±9999) is there no answer; UTC wall time is the best guess.
        self.instant_of(local).unwrap_or_else(|| Utc.from_utc_datetime(&local))
    }

    /// The instant the zone's clocks show `local`, the later one in a gap or a fold.
    fn instant_of(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let civil = jiff::civil::DateTime::new(
            i16::try_from(local.year()).ok()?,
            i8::try_from(local.month()).ok()?,
            i8::try_from(local.day()).ok()?,
            i8::try_from(local.hour()).ok()?,
            i8::try_from(local.minute()).ok()?,
            0,
            0,
        )
        .ok()?;
        let instant = self.tz.to_ambiguous_timestamp(civil).later().ok()?;
        DateTime::from_timestamp(instant.as_second(), 0)
    }

    /// `[start, end)` of a service day in UTC.
    pub fn day_bounds(&self, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        let next = date.checked_add_days(Days::new(1)).unwrap_or(date);
        (self.day_start_instant(date), self.day_start_instant(next))
    }

    /// The calendar as data, for the database's triggers: the runs of 24-hour service days from
    /// 0001-01-01 to the end of the zone's known rules (year 9999), in order.
    ///
    /// Between two clock changes every service day lasts exactly 86,400 s, so the whole calendar
    /// is a short list: a day that does not start 24 hours after its predecessor begins a new run
    /// (about two a year in a zone with daylight saving, a handful in Asia/Tokyo). `migrate`
    /// writes the list to `service_day_starts`, and a trigger finds an instant's day as the last
    /// run that started at or before it, plus the whole days since, but no later than the run's
    /// last day (which lasts 25 hours when the clocks fall back). The rule itself (where a day
    /// starts, inside a gap or a fold) is therefore written once, here, in
    /// [`Self::day_start_instant`], and the database can only agree with [`Self::service_date`].
    pub fn day_runs(&self) -> Vec<DayRun> {
        const DAY: TimeDelta = TimeDelta::days(1);
        let (Some(first), Some(last)) = (NaiveDate::from_ymd_opt(1, 1, 1), NaiveDate::from_ymd_opt(9999, 12, 31))
        else {
            return Vec::new();
        };
        let mut runs = vec![DayRun { starts_at: self.day_start_instant(first), day: first, last_day: last }];
        let mut cursor = runs[0].starts_at;
        while let Some(run) = runs.last().copied() {
            let Some(change) = self.next_change(cursor) else { break };
            // The day the change falls in, if days kept lasting 24 hours; it or the next one is
            // the first to start elsewhere than the run's grid says (none, if only the zone's
            // abbreviation changed).
            let within = (change - run.starts_at).num_days();
            let moved = (within..within + 3).find_map(|n| {
                let day = run.day.checked_add_days(Days::new(u64::try_from(n).ok()?))?;
                let starts_at = self.day_start_instant(day);
                (starts_at != run.starts_at + DAY * i32::try_from(n).ok()?).then_some(DayRun {
                    starts_at,
                    day,
                    last_day: last,
                })
            });
            match moved {
                Some(next) if next.day <= last => {
                    cursor = next.starts_at.max(change);
                    if let Some(ending) = runs.last_mut() {
                        ending.last_day = next.day.pred_opt().unwrap_or(ending.day);
                    }
                    runs.push(next);
                }
                Some(_) => break,
                None => cursor = change,
            }
        }
        runs
    }

    /// The zone's first clock change strictly after `at`, if its rules have one before year 10000.
    fn next_change(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let after = Timestamp::from_second(at.timestamp()).ok()?;
        let change = self.tz.following(after).next()?.timestamp();
        DateTime::from_timestamp(change.as_second(), change.subsec_nanosecond().try_into().ok()?)
    }

    /// Time left in the service day containing `now`: how long an answer for `today` stays right.
    pub fn until_rollover(&self, now: DateTime<Utc>) -> Duration {
        let (_, end) = self.day_bounds(self.service_date(now));
        (end - now).to_std().unwrap_or(Duration::ZERO)
    }
}

/// A run of service days: `day` starts at `starts_at`, and each following day 86,400 s after the
/// one before, up to `last_day`, which ends when the next run starts (it may be longer or shorter
/// than 24 hours: the clocks change during it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRun {
    /// The instant the run's first day starts.
    pub starts_at: DateTime<Utc>,
    /// The run's first day.
    pub day: NaiveDate,
    /// The run's last day.
    pub last_day: NaiveDate,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokyo() -> ServiceCalendar {
        ServiceCalendar::new("Asia/Tokyo", "04:00").unwrap()
    }

    #[test]
    fn runs_that_a_rules_change_moved_are_a_mismatch() {
        let london = ServiceCalendar::new("Europe/London", "04:00").unwrap();
        let (from, to) = (NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(), NaiveDate::from_ymd_opt(2027, 12, 31).unwrap());
        let runs: Vec<DayRun> = london.day_runs().into_iter().filter(|r| r.last_day >= from && r.day <= to).collect();
        assert!(runs.len() >= 4, "two clock changes a year: {runs:?}");
        assert_eq!(london.runs_mismatch(&runs, from, to), None);
        // A clock change a week later than the rules say now: the days of that week start an
        // hour off.
        let mut moved = runs.clone();
        moved[0].last_day = moved[0].last_day + Days::new(7);
        moved[1].starts_at += TimeDelta::days(7);
        moved[1].day = moved[1].day + Days::new(7);
        let text = london.runs_mismatch(&moved, from, to).unwrap();
        assert!(text.contains(&format!("service day {}", runs[1].day)), "{text}");
        // A clock change the database does not know at all.
        let mut unknown = runs[..1].to_vec();
        unknown[0].last_day = NaiveDate::from_ymd_opt(9999, 12, 31).unwrap();
        assert!(london.runs_mismatch(&unknown, from, to).is_some());
        // The same days described from an earlier run start agree.
        assert_eq!(tokyo().runs_mismatch(&tokyo().day_runs(), from, to), None);
    }

    fn utc(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn small_hours_belong_to_the_previous_service_day() {
        let cal = tokyo();
        // 2026-11-28 03:59 JST is still the 27th's service day; 04:00 JST starts the 28th.
        assert_eq!(cal.service_date(utc("2026-11-27T18:59:00Z")).to_string(), "2026-11-27");
        assert_eq!(cal.service_date(utc("2026-11-27T19:00:00Z")).to_string(), "2026-11-28");
        assert_eq!(cal.service_date(utc("2026-11-28T14:59:00Z")).to_string(), "2026-11-28");
    }

    #[test]
    fn rollover_is_at_day_start() {
        let cal = tokyo();
        assert_eq!(cal.until_rollover(utc("2026-11-28T18:00:00Z")), Duration::from_secs(3600));
        assert_eq!(cal.until_rollover(utc("2026-11-27T19:00:00Z")), Duration::from_secs(86_400));
        let (start, end) = cal.day_bounds("2026-11-28".parse().unwrap());
        assert_eq!(start, utc("2026-11-27T19:00:00Z"));
        assert_eq!(end, utc("2026-11-28T19:00:00Z"));
    }

    #[test]
    fn daylight_saving_zones_keep_days_contiguous() {
        let cal = ServiceCalendar::new("Europe/London", "04:00").unwrap();
        // Clocks go forward at 01:00 UTC on 29 March 2026: the service day of the 28th is 23 hours.
        let (start, end) = cal.day_bounds("2026-03-28".parse().unwrap());
        assert_eq!(end - start, chrono::Duration::hours(23));
        let (_, prev_end) = cal.day_bounds("2026-03-27".parse().unwrap());
        assert_eq!(prev_end, start);
    }

    #[test]
    fn starts_inside_a_clock_change_resolve_as_clocks_do() {
        // New York springs forward 02:00 → 03:00 on 8 March 2026 and falls back 02:00 → 01:00 on
        // 1 November 2026.
        let cal = ServiceCalendar::new("America/New_York", "02:30").unwrap();
        assert_eq!(cal.day_start_instant("2026-03-08".parse().unwrap()), utc("2026-03-08T07:30:00Z"));
        let cal = ServiceCalendar::new("America/New_York", "01:30").unwrap();
        // 01:30 comes twice: at 05:30Z (EDT) and 06:30Z (EST); the day starts at the second.
        assert_eq!(cal.day_start_instant("2026-11-01".parse().unwrap()), utc("2026-11-01T06:30:00Z"));
        assert_eq!(cal.service_date(utc("2026-11-01T06:30:00Z")).to_string(), "2026-11-01");
        assert_eq!(cal.service_date(utc("2026-11-01T05:40:00Z")).to_string(), "2026-10-31");
        assert_eq!(cal.service_date(utc("2026-11-01T06:10:00Z")).to_string(), "2026-10-31");
        assert_eq!(cal.utc_offset_minutes(utc("2026-11-01T06:10:00Z")), -300);
    }

    #[test]
    fn every_instant_of_a_daylight_saving_year_lies_within_its_own_service_day() {
        for (zone, start) in [("America/New_York", "01:30"), ("America/New_York", "02:30"), ("Europe/London", "01:00")]
        {
            let cal = ServiceCalendar::new(zone, start).unwrap();
            let mut at = utc("2026-01-01T00:00:00Z");
            while at < utc("2027-01-01T00:00:00Z") {
                let day = cal.service_date(at);
                let (from, until) = cal.day_bounds(day);
                assert!(from <= at && at < until, "{zone} {start}: {at} is given {day}, which is [{from}, {until})");
                at += TimeDelta::minutes(1);
            }
        }
    }

    /// An instant's day as the triggers find it in [`ServiceCalendar::day_runs`]: the last run
    /// started at or before it, plus the whole days since, at most its last day.
    fn day_by_runs(runs: &[DayRun], at: DateTime<Utc>) -> Option<NaiveDate> {
        let run = runs.get(runs.partition_point(|r| r.starts_at <= at).checked_sub(1)?)?;
        let days = (at - run.starts_at).num_seconds().div_euclid(86_400);
        Some(run.day.checked_add_days(Days::new(u64::try_from(days).ok()?))?.min(run.last_day))
    }

    #[test]
    fn the_day_runs_give_every_instant_the_calendars_service_day() {
        for (zone, start) in [
            ("America/New_York", "01:30"),
            ("America/New_York", "02:30"),
            ("Europe/London", "01:00"),
            ("Asia/Tokyo", "04:00"),
            ("Australia/Lord_Howe", "02:00"),
        ] {
            let cal = ServiceCalendar::new(zone, start).unwrap();
            let runs = cal.day_runs();
            assert!(
                runs.windows(2).all(|w| w[0].starts_at < w[1].starts_at && w[0].last_day.succ_opt() == Some(w[1].day)),
                "{zone}"
            );
            // Each run's days are on its 24-hour grid, and the next run's first day is not.
            for pair in runs.windows(2) {
                let days = (pair[1].day - pair[0].day).num_days();
                assert_ne!(pair[1].starts_at, pair[0].starts_at + TimeDelta::days(days), "{zone}: {pair:?}");
            }
            for year in [1948, 2026, 2100, 9998] {
                let mut at = utc(&format!("{year}-01-01T00:00:00Z"));
                let end = utc(&format!("{}-01-01T00:00:00Z", year + 1));
                while at < end {
                    assert_eq!(day_by_runs(&runs, at), Some(cal.service_date(at)), "{zone} {start}: {at}");
                    at += TimeDelta::minutes(if year == 2026 { 5 } else { 37 });
                }
            }
            // A day's first and last second.
            for day in ["2026-03-08", "2026-03-29", "2026-10-25", "2026-11-01", "0001-01-02", "9999-12-30"] {
                let (from, until) = cal.day_bounds(day.parse().unwrap());
                assert_eq!(day_by_runs(&runs, from).unwrap().to_string(), day, "{zone} {start}");
                assert_eq!(
                    day_by_runs(&runs, until - TimeDelta::seconds(1)).unwrap().to_string(),
                    day,
                    "{zone} {start}"
                );
            }
        }
    }

    #[test]
    fn a_zone_without_daylight_saving_is_a_few_runs_and_one_with_it_two_a_year() {
        let tokyo = tokyo().day_runs();
        assert!(tokyo.len() < 20, "{}", tokyo.len());
        assert_eq!(tokyo.last().map(|r| r.day.year() < 1960), Some(true), "{tokyo:?}");
        let new_york = ServiceCalendar::new("America/New_York", "04:00").unwrap().day_runs();
        assert!((15_000..25_000).contains(&new_york.len()), "{}", new_york.len());
        assert_eq!(new_york.first().map(|r| r.day.to_string()), Some("0001-01-01".to_owned()));
        assert!(new_york.last().is_some_and(|r| r.day.year() == 9999), "{:?}", new_york.last());
    }

    #[test]
    fn zone_names_are_spelled_as_the_database_spells_them() {
        assert_eq!(ServiceCalendar::new("asia/tokyo", "04:00").unwrap().zone_name(), "Asia/Tokyo");
        assert_eq!(ServiceCalendar::new("UTC", "04:00").unwrap().zone_name(), "UTC");
        // The database's older names stand, as PostgreSQL accepts them.
        assert_eq!(ServiceCalendar::new("Japan", "04:00").unwrap().zone_name(), "Japan");
        for offset in ["+09:00", "EST5EDT,M3.2.0,M11.1.0"] {
            assert_eq!(ServiceCalendar::new(offset, "04:00"), Err(CalendarError::UnknownZone(offset.into())));
        }
    }

    #[test]
    fn a_different_trigger_calendar_is_described() {
        assert_eq!(tokyo().mismatch("Asia/Tokyo", 240), None);
        assert_eq!(
            tokyo().mismatch("Europe/London", 180).unwrap(),
            "the database's triggers use Europe/London with days starting 03:00, this process Asia/Tokyo 04:00"
        );
    }

    #[test]
    fn rejects_bad_settings() {
        assert_eq!(
            ServiceCalendar::new("Mars/Olympus", "04:00").unwrap_err(),
            CalendarError::UnknownZone("Mars/Olympus".into())
        );
        assert!(ServiceCalendar::new("Asia/Tokyo", "4am").is_err());
        assert_eq!(tokyo().day_start_minutes(), 240);
        assert_eq!(tokyo().utc_offset_minutes(Utc::now()), 540);
    }
}
