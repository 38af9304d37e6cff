//! Realistic demo data: five lines, 80 stations, 100 formations, 300 operations a day from the
//! first day with sightings to two weeks ahead, and sightings over the past days (100k at scale 1,
//! over [`SIGHTING_DAYS`] days unless asked for more).
//!
//! Generation is pure and deterministic for a given `now`, scale and span, so tests can reason
//! about it. The sightings are not held: they are drawn in batches, each a slice of one service
//! day's hours, as they are loaded ([`DemoData::sightings`]), so ten million of them take no more
//! memory than one batch.
//! Loading is [`Db::load_demo`]'s job, which reports progress through a callback so that the caller
//! chooses how to show it (a progress bar, a log line, nothing).

use chrono::{DateTime, Days, NaiveDate, Utc};

use crate::calendar::ServiceCalendar;
use crate::db::Db;
use crate::error::StoreResult;
use crate::model::{Formation, Line, Operation, Station};
use crate::sql;
use crate::statement::{Statement, timestamp_text};

/// A sighting to insert (the database assigns the id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSighting {
    /// The formation seen.
    pub formation_id: String,
    /// The operation it was running.
    pub operation_number: Option<String>,
    /// Where.
    pub station_id: Option<String>,
    /// When.
    pub seen_at: DateTime<Utc>,
}

/// A complete demo data set: the small tables, and the plan of the sightings.
#[derive(Debug, Clone, Default)]
pub struct DemoData {
    /// Lines.
    pub lines: Vec<Line>,
    /// Stations of all lines.
    pub stations: Vec<Station>,
    /// Formations.
    pub formations: Vec<Formation>,
    /// Operations of every service day.
    pub operations: Vec<Operation>,
    /// The days that get sightings, oldest first.
    sighting_days: Vec<SightingDay>,
}

/// One service day's share of the sightings, drawn when [`DemoData::sightings`] reaches it.
#[derive(Debug, Clone)]
struct SightingDay {
    /// The day's start (the service calendar's), in UTC.
    start: DateTime<Utc>,
    /// Sightings fall from `start + SERVICE_FROM` to `start + until` seconds.
    until: i64,
    /// How many.
    count: u64,
    /// Operations of the day that have a formation: (line index, index in `operations`).
    runnable: Vec<(usize, usize)>,
    /// Seeds this day's draws.
    seed: u64,
}

/// Service hours, in seconds from the service day's start: 05:00 to 24:30 for a 04:00 start.
const SERVICE_FROM: i64 = 3_600;
const SERVICE_UNTIL: i64 = 73_800;

impl DemoData {
    /// Total rows, for progress reporting.
    pub fn row_count(&self) -> u64 {
        (self.lines.len() + self.stations.len() + self.formations.len() + self.operations.len()) as u64
            + self.sighting_count()
    }

    /// How many sightings [`DemoData::sightings`] yields.
    pub fn sighting_count(&self) -> u64 {
        self.sighting_days.iter().map(|d| d.count).sum()
    }

    /// The sightings in batches of at most [`SIGHTING_BATCH`] (a slice of one service day's
    /// hours each), oldest first and each in time order (so ids grow with time, as in real life).
    /// Each batch is drawn when it is reached, so memory holds one batch whatever the total.
    pub fn sightings(&self) -> impl Iterator<Item = Vec<NewSighting>> + '_ {
        self.sighting_days.iter().filter(|day| day.count > 0 && !day.runnable.is_empty()).flat_map(move |day| {
            let span = (day.until - SERVICE_FROM).max(1);
            let slices = day.count.div_ceil(SIGHTING_BATCH).clamp(1, span.unsigned_abs());
            (0..slices).map(move |slice| {
                let span = span.unsigned_abs();
                let at = |i: u64| SERVICE_FROM + i64::try_from(share_of(span, i, slices)).unwrap_or(i64::MAX);
                let share = |i: u64| share_of(day.count, i, slices);
                let (from, until) = (at(slice), at(slice + 1));
                let mut rng = fastrand::Rng::with_seed(day.seed ^ slice.wrapping_mul(0xD1B5_4A32_D192_ED03));
                let mut sightings: Vec<NewSighting> = (0..share(slice + 1) - share(slice))
                    .map(|_| {
                        let seen_at = day.start + chrono::Duration::seconds(rng.i64(from..until));
                        let (line, op) = day.runnable[rng.usize(..day.runnable.len())];
                        let operation = &self.operations[op];
                        let station = format!("{}{:02}", LINES[line].3, rng.usize(1..=16));
                        // One report in ten comes without an operation number, one in twenty
                        // without a station.
                        NewSighting {
                            formation_id: operation.formation_id.clone().unwrap_or_default(),
                            operation_number: (rng.u8(..10) != 0).then(|| operation.number.clone()),
                            station_id: (rng.u8(..20) != 0).then_some(station),
                            seen_at,
                        }
                    })
                    .collect();
                sightings.sort_by_key(|s| s.seen_at);
                sightings
            })
        })
    }
}

/// `total × upto / whole`, rounded down, without overflow: splitting `total` at the cumulative
/// points `upto` of a `whole` gives parts that differ by at most one and sum to `total`.
fn share_of(total: u64, upto: u64, whole: u64) -> u64 {
    u64::try_from(u128::from(total) * u128::from(upto) / u128::from(whole.max(1))).unwrap_or(u64::MAX)
}

/// The most sightings [`DemoData::sightings`] holds at once.
pub const SIGHTING_BATCH: u64 = 50_000;

/// Service days before today that get operations and sightings by default; the same number minus
/// one after today get operations.
pub const PAST_DAYS: u64 = 15;
/// Service days with sightings by default: the past days and today.
pub const SIGHTING_DAYS: u64 = PAST_DAYS + 1;
/// Operations per line per day (five lines: 300 a day).
pub const OPERATIONS_PER_LINE: usize = 60;
/// Sightings at scale 1.
pub const SIGHTINGS_AT_SCALE_1: f64 = 100_000.0;

const LINES: [(&str, &str, &str, &str); 5] = [
    ("minato", "Minato Line", "#e5171f", "M"),
    ("sakura", "Sakura Main Line", "#f39800", "S"),
    ("kawagoe", "Kawagoe Line", "#0079c2", "K"),
    ("tama", "Tama Line", "#009944", "T"),
    ("kaigan", "Kaigan Line", "#8f76d6", "U"),
];

const STATION_NAMES: [&str; 80] = [
    "Shiodome",
    "Hamamatsucho",
    "Tamachi",
    "Shinagawa",
    "Oimachi",
    "Omori",
    "Kamata",
    "Kawasaki",
    "Tsurumi",
    "Shin-Koyasu",
    "Higashi-Kanagawa",
    "Yokohama",
    "Sakuragicho",
    "Kannai",
    "Ishikawacho",
    "Yamate",
    "Ueno",
    "Nippori",
    "Machiya",
    "Senju-Ohashi",
    "Kita-Senju",
    "Horikiri",
    "Aoto",
    "Takasago",
    "Koiwa",
    "Ichikawa",
    "Motoyawata",
    "Funabashi",
    "Tsudanuma",
    "Makuhari",
    "Inage",
    "Chiba",
    "Ikebukuro",
    "Kita-Ikebukuro",
    "Oyama",
    "Narimasu",
    "Wakoshi",
    "Asaka",
    "Shiki",
    "Yanasegawa",
    "Mizuhodai",
    "Tsuruse",
    "Fujimino",
    "Kamifukuoka",
    "Shingashi",
    "Kawagoeshi",
    "Kasumigaseki",
    "Sakado",
    "Shinjuku",
    "Hatsudai",
    "Sasazuka",
    "Meidaimae",
    "Chitose-Karasuyama",
    "Tsutsujigaoka",
    "Chofu",
    "Fuchu",
    "Bubaigawara",
    "Seiseki-Sakuragaoka",
    "Takahatafudo",
    "Hirayama",
    "Kitano",
    "Hachioji",
    "Tama-Center",
    "Hashimoto",
    "Kamakura",
    "Yuigahama",
    "Hase",
    "Gokurakuji",
    "Inamuragasaki",
    "Shichirigahama",
    "Kamakurakokomae",
    "Koshigoe",
    "Enoshima",
    "Katase",
    "Kugenuma",
    "Fujisawa",
    "Tsujido",
    "Chigasaki",
    "Hiratsuka",
    "Oiso",
];

/// (series, cars, first number, count, lines it runs on, note every n-th)
const FLEET: [(&str, i32, u32, u32, &[usize]); 5] = [
    ("10000", 10, 10701, 30, &[0, 1]),
    ("3000", 8, 3001, 25, &[1, 2]),
    ("5000", 10, 5051, 20, &[2, 3]),
    ("8000", 6, 8101, 15, &[3, 4]),
    ("2000", 4, 2001, 10, &[4, 0]),
];

/// Generates the demo data: sightings over the `sighting_days` service days up to `now` (today
/// included), and operations from the first of them to two weeks after today.
///
/// `scale` multiplies the number of sightings (1.0 gives 100k), spread over the days (today's
/// share is what has passed of its service hours); everything else is fixed. With the default
/// span ([`SIGHTING_DAYS`]) there are 30 service days of operations.
pub fn generate(calendar: &ServiceCalendar, now: DateTime<Utc>, scale: f64, sighting_days: u64) -> DemoData {
    // At least today; at most a century (the CLI's bound), so the day arithmetic cannot overflow.
    let sighting_days = sighting_days.clamp(1, 36_500);
    let mut rng = fastrand::Rng::with_seed(0x0ED9E7A1);
    let today = calendar.service_date(now);
    let mut data = DemoData::default();

    for (i, (id, name, color, _)) in LINES.iter().enumerate() {
        data.lines.push(Line { id: (*id).to_owned(), name: (*name).to_owned(), color: Some((*color).to_owned()) });
        for (p, station) in STATION_NAMES[i * 16..(i + 1) * 16].iter().enumerate() {
            data.stations.push(Station {
                id: format!("{}{:02}", LINES[i].3, p + 1),
                line_id: (*id).to_owned(),
                name: (*station).to_owned(),
                position: i32::try_from(p + 1).unwrap_or(i32::MAX),
            });
        }
    }

    // Formations, and which can run on each line.
    let mut pools: Vec<Vec<String>> = vec![Vec::new(); LINES.len()];
    for (series, cars, first, count, lines) in FLEET {
        for n in 0..count {
            let id = format!("{}F", first + n);
            let note = match n % 9 {
                0 => Some("Refurbished interior".to_owned()),
                4 if series == "10000" => Some("Heritage livery".to_owned()),
                _ => None,
            };
            for &line in lines {
                pools[line].push(id.clone());
            }
            data.formations.push(Formation { id, series: series.to_owned(), cars, note });
        }
    }

    // Operations: each line's numbers every day, formations rotating through the line's pool.
    let first_day = today.checked_sub_days(Days::new(sighting_days - 1)).unwrap_or(today);
    let days: Vec<NaiveDate> =
        (0..sighting_days + PAST_DAYS - 1).filter_map(|d| first_day.checked_add_days(Days::new(d))).collect();
    // (line index, index in operations) of each day's operations with a formation, for sightings.
    let mut runnable: Vec<Vec<(usize, usize)>> = vec![Vec::new(); days.len()];
    for (d, day) in days.iter().enumerate() {
        for (l, line) in LINES.iter().enumerate() {
            let pool = &pools[l];
            for k in 0..OPERATIONS_PER_LINE {
                let number = format!("{:02}{}", k + 1, line.3);
                // About one operation in twenty has no formation assigned yet.
                let formation_id = (rng.u8(..20) != 0).then(|| pool[(k + d * 7) % pool.len()].clone());
                if formation_id.is_some() {
                    runnable[d].push((l, data.operations.len()));
                }
                data.operations.push(Operation { service_date: *day, number, formation_id });
            }
        }
    }

    // Sightings: spread over the sighting days by their service hours up to now.
    let wanted = (SIGHTINGS_AT_SCALE_1 * scale.max(0.0)).round() as u64;
    let mut planned: Vec<SightingDay> = days
        .iter()
        .zip(runnable)
        .take(usize::try_from(sighting_days).unwrap_or(usize::MAX))
        .enumerate()
        .map(|(d, (day, runnable))| {
            let (start, _) = calendar.day_bounds(*day);
            let until = SERVICE_UNTIL.min((now - start).num_seconds()).max(SERVICE_FROM);
            SightingDay {
                start,
                until,
                count: 0,
                runnable,
                seed: 0x0ED9E7A1 ^ (d as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            }
        })
        .collect();
    // Each day's share, in proportion to its service hours so far; the shares sum to `wanted`.
    let hours = |day: &SightingDay| if day.runnable.is_empty() { 0 } else { (day.until - SERVICE_FROM).unsigned_abs() };
    let total: u64 = planned.iter().map(hours).sum();
    if total > 0 {
        let mut before = 0;
        for day in &mut planned {
            let after = before + hours(day);
            day.count = share_of(wanted, after, total) - share_of(wanted, before, total);
            before = after;
        }
    }
    data.sighting_days = planned;
    data
}

impl Db {
    /// Replaces all data with `data` in one transaction, calling `progress` with the number of
    /// rows written after each chunk. The change it records is the tag families of `tables` (the
    /// policy's): every answer of theirs may have changed.
    ///
    /// # Errors
    ///
    /// The database failed; nothing was replaced.
    pub async fn load_demo(
        &self,
        data: &DemoData,
        tables: &[cache_policy::Table],
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> StoreResult<()> {
        const CHUNK: usize = 10_000;
        // Rows travel as one JSON array per chunk and table, unpacked server-side: one statement
        // per chunk instead of one per row. Each chunk's JSON is built when it is sent.
        async fn send<T>(
            tx: &mut crate::db::Tx,
            insert: &'static str,
            rows: &[T],
            row: impl Fn(&T) -> serde_json::Value,
            progress: &(dyn Fn(u64) + Send + Sync),
        ) -> StoreResult<()> {
            for chunk in rows.chunks(CHUNK) {
                let json = serde_json::Value::Array(chunk.iter().map(&row).collect()).to_string();
                tx.execute(Statement::new(insert).bind(json.as_str())).await?;
                progress(chunk.len() as u64);
            }
            Ok(())
        }
        let [lines, stations, formations, operations, sightings] = self.sql().demo_inserts;
        let mut tx = self.begin().await?;
        let before = tx.fetch(Statement::new(sql::MAX_CHANGE)).await?.one::<(i64,)>("change id")?.0;
        for delete in sql::DEMO_TABLES {
            tx.execute(Statement::new(delete)).await?;
        }
        send(&mut tx, lines, &data.lines, |l| serde_json::json!([l.id, l.name, l.color]), progress).await?;
        send(&mut tx, stations, &data.stations, |s| serde_json::json!([s.id, s.line_id, s.name, s.position]), progress)
            .await?;
        send(&mut tx, formations, &data.formations, |f| serde_json::json!([f.id, f.series, f.cars, f.note]), progress)
            .await?;
        send(
            &mut tx,
            operations,
            &data.operations,
            |o| serde_json::json!([o.service_date.to_string(), o.number, o.formation_id]),
            progress,
        )
        .await?;
        // The sightings, a batch at a time: only one batch is ever in memory.
        for batch in data.sightings() {
            send(
                &mut tx,
                sightings,
                &batch,
                |s| serde_json::json!([s.formation_id, s.operation_number, s.station_id, timestamp_text(s.seen_at)]),
                progress,
            )
            .await?;
        }
        // Every table was replaced, so every answer may have changed: each table's tag families
        // (`formation:*`, …) say so in a handful of rows, where the tags the triggers recorded run
        // to one per operation ever sighted (over a million for ten years of a busy site), which
        // the warmer would drain ten thousand a tick and every instance would read past its page.
        let last = tx.fetch(Statement::new(sql::MAX_CHANGE)).await?.one::<(i64,)>("change id")?.0;
        tx.execute(Statement::new(sql::LOAD_CHANGES_DELETE).bind(before).bind(last)).await?;
        for family in families(tables) {
            tx.execute(Statement::new(sql::RECORD_CHANGE).bind(family.as_str())).await?;
        }
        tx.commit().await
    }
}

/// The tag families of `tables`, each once.
fn families(tables: &[cache_policy::Table]) -> Vec<String> {
    let mut families: Vec<String> = Vec::new();
    for family in tables.iter().flat_map(cache_policy::Table::families) {
        if !families.contains(&family) {
            families.push(family);
        }
    }
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_data_has_the_specified_shape() {
        let cal = ServiceCalendar::new("Asia/Tokyo", "04:00").unwrap();
        let now: DateTime<Utc> = "2026-11-28T03:00:00Z".parse().unwrap();
        let data = generate(&cal, now, 0.05, SIGHTING_DAYS);
        assert_eq!(data.lines.len(), 5);
        assert_eq!(data.stations.len(), 80);
        assert_eq!(data.formations.len(), 100);
        assert!(data.formations.iter().any(|f| f.id == "10701F" && f.series == "10000"));
        assert_eq!(data.operations.len(), 300 * 30);
        let today = cal.service_date(now);
        assert_eq!(data.operations.iter().filter(|o| o.service_date == today).count(), 300);
        let sightings: Vec<NewSighting> = data.sightings().flatten().collect();
        assert_eq!(sightings.len(), 5_000);
        assert_eq!(data.sighting_count(), 5_000);
        assert!(sightings.iter().all(|s| s.seen_at <= now));
        assert!(sightings.windows(2).all(|w| w[0].seen_at <= w[1].seen_at));
        let station_ids: std::collections::HashSet<_> = data.stations.iter().map(|s| s.id.as_str()).collect();
        assert!(sightings.iter().filter_map(|s| s.station_id.as_deref()).all(|s| station_ids.contains(s)));
        let formation_ids: std::collections::HashSet<_> = data.formations.iter().map(|f| f.id.as_str()).collect();
        assert!(sightings.iter().all(|s| formation_ids.contains(s.formation_id.as_str())));
        assert!(sightings.iter().any(|s| cal.service_date(s.seen_at) == today));
        // The same data every time, drawn again.
        assert_eq!(data.sightings().flatten().collect::<Vec<_>>(), sightings);
    }

    #[test]
    fn a_longer_span_spreads_the_same_number_of_sightings_over_its_days() {
        let cal = ServiceCalendar::new("Asia/Tokyo", "04:00").unwrap();
        let now: DateTime<Utc> = "2026-11-28T03:00:00Z".parse().unwrap();
        let today = cal.service_date(now);
        let data = generate(&cal, now, 0.2, 3_650);
        assert_eq!(data.sighting_count(), 20_000);
        // Operations from the first day with sightings to two weeks after today.
        assert_eq!(data.operations.len(), 300 * (3_650 + 14));
        let first = today.checked_sub_days(Days::new(3_649)).unwrap();
        assert_eq!(data.operations.iter().map(|o| o.service_date).min(), Some(first));
        let sightings: Vec<NewSighting> = data.sightings().flatten().collect();
        assert_eq!(sightings.first().map(|s| cal.service_date(s.seen_at)), Some(first));
        assert!(sightings.windows(2).all(|w| w[0].seen_at <= w[1].seen_at));
        // Every past day has the same service hours, so the same share, give or take one.
        let mut per_day = std::collections::BTreeMap::<NaiveDate, u64>::new();
        for s in &sightings {
            *per_day.entry(cal.service_date(s.seen_at)).or_default() += 1;
        }
        let past: Vec<u64> = per_day.iter().filter(|(day, _)| **day < today).map(|(_, n)| *n).collect();
        assert_eq!(past.len(), 3_649);
        assert!(past.iter().max().unwrap() - past.iter().min().unwrap() <= 1, "{past:?}");
    }

    #[test]
    fn a_day_with_more_sightings_than_a_batch_is_drawn_in_slices_of_its_hours() {
        let cal = ServiceCalendar::new("Asia/Tokyo", "04:00").unwrap();
        // 23:00 in Tokyo: most of the day's service hours have passed.
        let now: DateTime<Utc> = "2026-11-28T14:00:00Z".parse().unwrap();
        let data = generate(&cal, now, 1.3, 1);
        assert_eq!(data.sighting_count(), 130_000);
        let batches: Vec<Vec<NewSighting>> = data.sightings().collect();
        assert!(batches.len() >= 3 && batches.iter().all(|b| b.len() as u64 <= SIGHTING_BATCH), "{}", batches.len());
        let sightings: Vec<NewSighting> = batches.into_iter().flatten().collect();
        assert_eq!(sightings.len(), 130_000);
        assert!(sightings.windows(2).all(|w| w[0].seen_at <= w[1].seen_at));
        assert!(sightings.iter().all(|s| s.seen_at <= now && cal.service_date(s.seen_at) == cal.service_date(now)));
        // Before the day's service starts (04:30 in Tokyo), one day has no sightings yet.
        let early: DateTime<Utc> = "2026-11-27T19:30:00Z".parse().unwrap();
        assert_eq!(generate(&cal, early, 1.0, 1).sighting_count(), 0);
    }
}
