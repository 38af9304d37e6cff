//! Writers as other systems write, each recording what it wrote and when its `COMMIT` returned,
//! and the reading of those facts back out of the API's bodies.
//!
//! Every key has one writer, so a key's writes happen one after another and its history is
//! ordered. The facts, and the bodies that show them:
//!
//! | key | written by | shown by |
//! |---|---|---|
//! | `note:{formation}` | short updates of hot rows; long transactions; edits; create/delete | `/v1/formations`, `/v1/formations/{id}` (`absent`: no such formation, a `404`) |
//! | `line:{line}` | long transactions | `/v1/lines`, `/v1/lines/{id}/stations` |
//! | `top:{formation}` | bulk imports; `TRUNCATE` and reload | its latest sighting's time in both formation routes (`none`: no sighting) |
//! | `latest` | bulk imports; `TRUNCATE` and reload | the first of `/v1/sightings/latest` |

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::checker::{History, KeyId, StateId};

/// Formations updated by short, frequent transactions.
pub const HOT: [&str; 10] =
    ["10701F", "10702F", "10703F", "10704F", "10705F", "10706F", "10707F", "10708F", "10709F", "10710F"];
/// Formations an operator edits now and then: a few updates seconds apart, then a rest (half a
/// minute on average, while the editor's other formations have their turn). The rest is what lets
/// a stale copy at the edge be seen: a hot row's next change would purge it again within seconds.
pub const EDITED: [&str; 15] = [
    "8101F", "8102F", "8103F", "8104F", "8105F", "8106F", "8107F", "8108F", "8109F", "8110F", "8111F", "8112F",
    "8113F", "8114F", "8115F",
];
/// Operators editing at once (see [`edits`]).
pub const EDITORS: usize = 3;
/// Formations (and lines) updated by transactions held open for seconds, in two disjoint sets.
pub const LONG: [(&[&str], &[&str]); 2] =
    [(&["minato", "sakura", "kawagoe"], &["3001F", "3002F"]), (&["tama", "kaigan"], &["3003F", "3004F", "3005F"])];
/// Formations whose sightings arrive in bulk.
pub const BULK: [&str; 5] = ["5051F", "5052F", "5053F", "5054F", "5055F"];
/// Bulk sightings are dated from here (after every demo sighting), one second per import.
const BULK_EPOCH: &str = "2030-01-01 00:00:00+00";
const BULK_EPOCH_MICROS: i64 = 1_893_456_000_000_000;

/// What the writers share with the soak.
#[derive(Debug, Clone)]
pub struct Shared {
    pub history: Arc<Mutex<History>>,
    pub epoch: Instant,
    pub running: Arc<AtomicBool>,
    /// The newest `SK{n}` formation created (viewers ask for the recent ones).
    pub newest_created: Arc<AtomicU64>,
    /// The formation each editor is editing now (its index in [`EDITED`] plus one; 0: none yet):
    /// viewers follow an edit as the operator who makes it, and those who watch it, do.
    pub editing: Arc<[AtomicUsize; EDITORS]>,
    pub seq: Arc<AtomicU64>,
    pub writes: Arc<AtomicU64>,
    pub unknown: Arc<AtomicU64>,
}

impl Shared {
    fn history(&self) -> std::sync::MutexGuard<'_, History> {
        super::lock(&self.history)
    }

    fn begin(&self, changes: &[(String, String)]) -> Vec<(KeyId, usize)> {
        let mut history = self.history();
        changes.iter().map(|(key, state)| history.begin(key, state)).collect()
    }

    fn finish(&self, ids: &[(KeyId, usize)], committed: bool) {
        if committed {
            let at = self.epoch.elapsed().as_secs_f64();
            let mut history = self.history();
            for &id in ids {
                history.commit(id, at);
            }
            self.writes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }
}

/// Micros since the Unix epoch, as the state of a `top:`/`latest` key.
fn micros_state(micros: Option<i64>) -> String {
    micros.map_or_else(|| "none".to_owned(), |m| m.to_string())
}

/// Records what the database holds before the soak: every key's initial state.
pub async fn seed_history(url: &str, history: &mut History) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    history.default_for("note:", "absent");
    history.default_for("top:", "none");
    let formations: Vec<(String, Option<String>, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT f.id, f.note, (SELECT s.seen_at FROM sightings s WHERE s.formation_id = f.id \
         ORDER BY s.seen_at DESC, s.id DESC LIMIT 1) FROM formations f",
    )
    .fetch_all(&mut conn)
    .await?;
    for (id, note, top) in formations {
        history.seed(&format!("note:{id}"), note.as_deref().unwrap_or("null"));
        history.seed(&format!("top:{id}"), &micros_state(top.map(|t| t.timestamp_micros())));
    }
    let lines: Vec<(String, String)> = sqlx::query_as("SELECT id, name FROM lines").fetch_all(&mut conn).await?;
    for (id, name) in lines {
        history.seed(&format!("line:{id}"), &name);
    }
    let latest: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT seen_at FROM sightings ORDER BY seen_at DESC, id DESC LIMIT 1")
            .fetch_optional(&mut conn)
            .await?;
    history.seed("latest", &micros_state(latest.map(|t| t.timestamp_micros())));
    Ok(())
}

async fn connect(url: &str) -> Option<PgConnection> {
    let options: PgConnectOptions = url.parse().ok()?;
    let options = options.application_name("soak-writer");
    tokio::time::timeout(Duration::from_secs(3), PgConnection::connect_with(&options)).await.ok()?.ok()
}

/// The writer's connection, (re)connected when there is none.
async fn connection<'a>(conn: &'a mut Option<PgConnection>, url: &str) -> Option<&'a mut PgConnection> {
    if conn.is_none() {
        *conn = connect(url).await;
    }
    conn.as_mut()
}

/// Records a write's outcome; after a failure the connection is dropped (the next write reconnects).
fn outcome<T, E>(
    shared: &Shared,
    ids: &[(KeyId, usize)],
    done: &Result<Result<T, E>, tokio::time::error::Elapsed>,
    conn: &mut Option<PgConnection>,
) -> bool {
    let ok = matches!(done, Ok(Ok(_)));
    shared.finish(ids, ok);
    if !ok {
        *conn = None;
    }
    ok
}

/// Waits `every` ± half.
async fn pause(every: Duration, rng: &mut fastrand::Rng) {
    tokio::time::sleep(every.mul_f64(0.5 + rng.f64())).await;
}

/// Short updates of hot rows, one at a time.
pub async fn hot(shared: Shared, url: String, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut conn = None;
    while shared.running() {
        if let Some(c) = connection(&mut conn, &url).await {
            let id = HOT[rng.usize(..HOT.len())];
            let note = format!("soak-{}", shared.next_seq());
            let ids = shared.begin(&[(format!("note:{id}"), note.clone())]);
            let done = tokio::time::timeout(
                Duration::from_secs(10),
                sqlx::query("UPDATE formations SET note = $1 WHERE id = $2").bind(&note).bind(id).execute(&mut *c),
            )
            .await;
            outcome(&shared, &ids, &done, &mut conn);
        }
        pause(Duration::from_millis(150), &mut rng).await;
    }
}

/// The formation an editor is editing now, if any.
pub fn edited_now(shared: &Shared, editor: usize) -> Option<&'static str> {
    let index = shared.editing.get(editor)?.load(Ordering::Relaxed);
    index.checked_sub(1).and_then(|i| EDITED.get(i)).copied()
}

/// Edits: each of [`EDITED`] in a seeded order, updated two or three times 1.5–4.5 s apart, then
/// looked at for [`EDIT_WATCHED`] more (its page followed by viewers past its last purge), then
/// left alone until its turn comes again. [`EDITORS`] operators edit at once, editor `e` the
/// formations `e`, `e + EDITORS`, … (five each, about 11 s apiece).
pub async fn edits(shared: Shared, url: String, editor: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut order: Vec<usize> = (editor..EDITED.len()).step_by(EDITORS).collect();
    let mut conn = None;
    while shared.running() {
        rng.shuffle(&mut order);
        for &index in &order {
            let id = EDITED[index];
            shared.editing[editor].store(index + 1, Ordering::Relaxed);
            for _ in 0..rng.usize(2..=3) {
                if !shared.running() {
                    return;
                }
                if let Some(c) = connection(&mut conn, &url).await {
                    let note = format!("soak-{}", shared.next_seq());
                    let ids = shared.begin(&[(format!("note:{id}"), note.clone())]);
                    let done = tokio::time::timeout(
                        Duration::from_secs(10),
                        sqlx::query("UPDATE formations SET note = $1 WHERE id = $2")
                            .bind(&note)
                            .bind(id)
                            .execute(&mut *c),
                    )
                    .await;
                    outcome(&shared, &ids, &done, &mut conn);
                }
                pause(Duration::from_millis(3000), &mut rng).await;
            }
            tokio::time::sleep(EDIT_WATCHED).await;
        }
    }
}

/// How long viewers keep following a formation after its last edit: past the purge of that edit
/// (a settle wait and a tick after its commit), so that the purge is followed by a miss.
const EDIT_WATCHED: Duration = Duration::from_secs(5);

/// Transactions held open for 2–5 s, each updating a line's name and a formation's note.
pub async fn long(shared: Shared, url: String, set: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (lines, formations) = LONG[set];
    let names: Vec<String> = {
        let history = shared.history();
        lines.iter().map(|l| history.initial_of(&format!("line:{l}")).unwrap_or(l).to_owned()).collect()
    };
    let mut conn = None;
    while shared.running() {
        if let Some(c) = connection(&mut conn, &url).await {
            let k = rng.usize(..lines.len());
            let f = formations[rng.usize(..formations.len())];
            let seq = shared.next_seq();
            let (name, note) = (format!("{} soak-{seq}", names[k]), format!("soak-{seq}"));
            let ids =
                shared.begin(&[(format!("line:{}", lines[k]), name.clone()), (format!("note:{f}"), note.clone())]);
            let hold = Duration::from_millis(rng.u64(2000..5000));
            let done = tokio::time::timeout(Duration::from_secs(15), async {
                let mut tx = c.begin().await?;
                sqlx::query("UPDATE lines SET name = $1 WHERE id = $2")
                    .bind(&name)
                    .bind(lines[k])
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE formations SET note = $1 WHERE id = $2")
                    .bind(&note)
                    .bind(f)
                    .execute(&mut *tx)
                    .await?;
                tokio::time::sleep(hold).await;
                tx.commit().await
            })
            .await;
            outcome(&shared, &ids, &done, &mut conn);
        }
        pause(Duration::from_millis(500), &mut rng).await;
    }
}

/// Bulk imports of sightings (thousands of rows in one statement) for the bulk formations, and
/// every fifth time a `TRUNCATE` of the table and a reload in one transaction. After a `TRUNCATE`
/// the volume it removed (`volume` rows, what the soak was seeded with) comes back, as an import
/// would restore it: [`RELOAD_BATCH`] rows a statement, each committed on its own, so that no
/// statement holds the table for long. Those rows are older than every sighting the checker
/// follows, so they change no fact.
pub async fn bulk(shared: Shared, url: String, all_formations: Vec<String>, volume: i64, seed: u64) {
    const INSERT: &str = "INSERT INTO sightings (formation_id, seen_at) \
        SELECT ($1::text[])[1 + g % 5], $2::timestamptz + ($3::bigint - g * 1000) * interval '1 microsecond' \
        FROM generate_series(0, $4::int - 1) g";
    let mut rng = fastrand::Rng::with_seed(seed);
    let bulk: Vec<String> = BULK.iter().map(|f| (*f).to_owned()).collect();
    let mut conn = None;
    let mut n = 0u64;
    while shared.running() {
        if let Some(c) = connection(&mut conn, &url).await {
            n += 1;
            let truncate = n.is_multiple_of(5);
            let offset = shared.next_seq() as i64 * 1_000_000;
            let top = BULK_EPOCH_MICROS + offset;
            let mut changes: Vec<(String, String)> = vec![("latest".to_owned(), top.to_string())];
            if truncate {
                changes.extend(
                    all_formations
                        .iter()
                        .filter(|f| !BULK.contains(&f.as_str()))
                        .map(|f| (format!("top:{f}"), "none".to_owned())),
                );
            }
            changes.extend(
                BULK.iter().enumerate().map(|(j, f)| (format!("top:{f}"), (top - j as i64 * 1000).to_string())),
            );
            let ids = shared.begin(&changes);
            let rows: i32 = if truncate { 1000 } else { 3000 };
            let done = tokio::time::timeout(Duration::from_secs(20), async {
                let mut tx = c.begin().await?;
                if truncate {
                    sqlx::query("TRUNCATE sightings").execute(&mut *tx).await?;
                }
                sqlx::query(INSERT).bind(&bulk).bind(BULK_EPOCH).bind(offset).bind(rows).execute(&mut *tx).await?;
                tx.commit().await
            })
            .await;
            let committed = outcome(&shared, &ids, &done, &mut conn);
            if truncate && committed {
                reload(&shared, &mut conn, &url, volume).await;
            }
        }
        pause(Duration::from_secs(3), &mut rng).await;
    }
}

/// Rows a reload statement inserts: about a tenth of a second of work, far inside the API's
/// statement timeout.
pub const RELOAD_BATCH: i64 = 10_000;

/// Inserts `volume` rows of sightings from 2020 and before for the bulk formations, a batch per
/// statement, while the soak runs.
async fn reload(shared: &Shared, conn: &mut Option<sqlx::PgConnection>, url: &str, volume: i64) {
    const FILLER: &str = "INSERT INTO sightings (formation_id, seen_at)         SELECT ($1::text[])[1 + g % 5], '2020-01-01 00:00:00+00'::timestamptz - ($2::bigint + g) * interval '1 second'         FROM generate_series(0, $3::bigint - 1) g";
    let bulk: Vec<String> = BULK.iter().map(|f| (*f).to_owned()).collect();
    let mut done = 0;
    while done < volume && shared.running() {
        let Some(c) = connection(conn, url).await else { return };
        let rows = RELOAD_BATCH.min(volume - done);
        let inserted = tokio::time::timeout(
            Duration::from_secs(20),
            sqlx::query(FILLER).bind(&bulk).bind(done).bind(rows).execute(&mut *c),
        )
        .await;
        match inserted {
            Ok(Ok(_)) => done += rows,
            _ => {
                *conn = None;
                return;
            }
        }
    }
}

/// Formations created and deleted (`SK1`, `SK2`, …): at most five alive, the oldest deleted first.
pub async fn deletes(shared: Shared, url: String, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut alive: VecDeque<u64> = VecDeque::new();
    let mut created = 0u64;
    let mut conn = None;
    while shared.running() {
        if let Some(c) = connection(&mut conn, &url).await {
            let seq = shared.next_seq();
            let create = alive.len() < 2 || (alive.len() < 5 && rng.bool());
            if create {
                // Created or not, an id is never reused.
                created += 1;
                let (id, note) = (format!("SK{created}"), format!("soak-{seq}"));
                let ids = shared.begin(&[(format!("note:{id}"), note.clone())]);
                let done = tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::query("INSERT INTO formations (id, series, cars, note) VALUES ($1, 'soak', 4, $2)")
                        .bind(&id)
                        .bind(&note)
                        .execute(&mut *c),
                )
                .await;
                shared.newest_created.store(created, Ordering::Relaxed);
                if outcome(&shared, &ids, &done, &mut conn) {
                    alive.push_back(created);
                }
            } else {
                let n = alive.pop_front().unwrap_or_default();
                let id = format!("SK{n}");
                let ids = shared.begin(&[(format!("note:{id}"), "absent".to_owned())]);
                let done = tokio::time::timeout(
                    Duration::from_secs(10),
                    sqlx::query("DELETE FROM formations WHERE id = $1").bind(&id).execute(&mut *c),
                )
                .await;
                // On failure the outcome is unknown: it is not deleted again (its history stays
                // one writer's, in order), and may or may not exist.
                outcome(&shared, &ids, &done, &mut conn);
            }
        }
        pause(Duration::from_secs(1), &mut rng).await;
    }
}

/// The facts a body shows: `(key, state)` pairs, interned. `None` for a route the checker does
/// not judge, or a body it cannot read (counted by the caller).
/// The body is read before the history is locked; `newest_created` is the newest `SK{n}`
/// formation the delete writer has tried to create.
pub fn observe(
    path: &str,
    status: u16,
    body: &[u8],
    newest_created: u64,
    history: &Mutex<History>,
) -> Option<Vec<(KeyId, StateId)>> {
    let facts = facts(path, status, body, newest_created)?;
    let mut history = super::lock(history);
    Some(facts.iter().map(|(key, state)| (history.key(key), history.state(state))).collect())
}

/// Whether the checker judges the answers of `path` (the routes whose bodies show the facts above).
pub fn judged(path: &str) -> bool {
    path == "/v1/formations"
        || path == "/v1/lines"
        || path == "/v1/sightings/latest"
        || (path.starts_with("/v1/formations/") && path.matches('/').count() == 3)
        || (path.starts_with("/v1/lines/") && path.ends_with("/stations"))
}

fn facts(path: &str, status: u16, body: &[u8], newest_created: u64) -> Option<Vec<(String, String)>> {
    if !judged(path) {
        return None;
    }
    let mut facts = Vec::new();
    if status == 404 {
        let id = path.strip_prefix("/v1/formations/")?;
        facts.push((format!("note:{id}"), "absent".to_owned()));
        return Some(facts);
    }
    if status != 200 {
        return None;
    }
    let body: Value = serde_json::from_slice(body).ok()?;
    let note = |f: &Value| f["note"].as_str().unwrap_or("null").to_owned();
    // The newest sighting of a list, as micros (`None`: the list is empty); `Err` if unreadable.
    let top = |list: Option<&Value>| -> Option<String> {
        match list {
            None => Some(micros_state(None)),
            Some(s) => {
                let t = chrono::DateTime::parse_from_rfc3339(s["seen_at"].as_str()?).ok()?;
                Some(micros_state(Some(t.timestamp_micros())))
            }
        }
    };
    match path {
        "/v1/formations" => {
            let mut listed = std::collections::HashSet::new();
            for f in body["formations"].as_array()? {
                let id = f["id"].as_str()?;
                listed.insert(format!("note:{id}"));
                facts.push((format!("note:{id}"), note(f)));
                let latest = Some(&f["latest_sighting"]).filter(|s| !s.is_null());
                facts.push((format!("top:{id}"), top(latest)?));
            }
            // A formation the soak created that the list leaves out is absent.
            for n in 1..=newest_created {
                let key = format!("note:SK{n}");
                if !listed.contains(&key) {
                    facts.push((key, "absent".to_owned()));
                }
            }
        }
        "/v1/lines" => {
            for l in body["lines"].as_array()? {
                facts.push((format!("line:{}", l["id"].as_str()?), l["name"].as_str()?.to_owned()));
            }
        }
        "/v1/sightings/latest" => facts.push(("latest".to_owned(), top(body["sightings"].as_array()?.first())?)),
        _ if path.starts_with("/v1/lines/") => {
            let line = &body["line"];
            facts.push((format!("line:{}", line["id"].as_str()?), line["name"].as_str()?.to_owned()));
        }
        _ => {
            let id = body["id"].as_str()?;
            facts.push((format!("note:{id}"), note(&body)));
            facts.push((format!("top:{id}"), top(body["sightings"].as_array()?.first())?));
        }
    }
    Some(facts)
}
