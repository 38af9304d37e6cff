//! The soak's independent checker: judges every read against the commit history the writers
//! recorded, knowing nothing of the API but its bodies and headers.
//!
//! A *key* is one fact a body can show (a formation's note, the time of its latest sighting, a
//! line's name, whether a formation exists). Each key is written by one writer at a time, so its
//! history is a sequence: the state the database held before the soak, then one entry per write,
//! with the time its `COMMIT` returned (or none, when the writer could not learn whether it
//! committed: such a state may be shown but is never required).
//!
//! A read that began at `t` must show, for every key it shows, the state of the latest write whose
//! deadline passed before `t`, or a later one. A write's deadline is its commit plus the layer's
//! bound `B`; at the edge it is pushed past every outage of the invalidation path (warmer stopped
//! or killed, purge endpoint refusing, the database or the feed unavailable to the warmer) that it
//! overlaps, plus `B` again. A read that breaks the plain bound but not the pushed one is *excused*
//! (and counted); one that breaks the pushed one is a *violation*. A read served stale on purpose
//! (`x-local-cache: stale`, or the edge's stale-if-error `X-Cache: Stale`) is counted apart and
//! must fall inside a database outage.

use std::collections::HashMap;

/// Seconds since the soak's epoch.
pub type Time = f64;

/// An interned state of some key.
pub type StateId = u32;
/// An interned key.
pub type KeyId = u32;

/// One write of one key.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub state: StateId,
    /// When its COMMIT returned; `None` while in flight or when its outcome is unknown.
    pub committed: Option<Time>,
}

/// What a key held before the soak, and every write of it since.
#[derive(Debug, Clone, Default)]
pub struct KeyHistory {
    pub initial: StateId,
    pub entries: Vec<Entry>,
}

/// Interned keys and states, and each key's history.
#[derive(Debug, Default)]
pub struct History {
    keys: HashMap<String, KeyId>,
    key_names: Vec<String>,
    states: HashMap<String, StateId>,
    state_names: Vec<String>,
    pub histories: Vec<KeyHistory>,
    /// What a key that was never seeded nor written holds (by key prefix, e.g. `absent`).
    defaults: Vec<(String, StateId)>,
}

impl History {
    pub fn key(&mut self, name: &str) -> KeyId {
        if let Some(&id) = self.keys.get(name) {
            return id;
        }
        let id = self.key_names.len() as KeyId;
        self.key_names.push(name.to_owned());
        self.keys.insert(name.to_owned(), id);
        let initial =
            self.defaults.iter().find(|(prefix, _)| name.starts_with(prefix.as_str())).map_or(0, |&(_, state)| state);
        self.histories.push(KeyHistory { initial, entries: Vec::new() });
        id
    }

    pub fn state(&mut self, text: &str) -> StateId {
        if let Some(&id) = self.states.get(text) {
            return id;
        }
        let id = self.state_names.len() as StateId;
        self.state_names.push(text.to_owned());
        self.states.insert(text.to_owned(), id);
        id
    }

    pub fn key_name(&self, key: KeyId) -> &str {
        &self.key_names[key as usize]
    }

    pub fn state_name(&self, state: StateId) -> &str {
        &self.state_names[state as usize]
    }

    /// Keys starting with `prefix` that were never seeded hold `state`.
    pub fn default_for(&mut self, prefix: &str, state: &str) {
        let state = self.state(state);
        self.defaults.push((prefix.to_owned(), state));
    }

    /// The state a key held before the soak.
    pub fn seed(&mut self, key: &str, state: &str) {
        let (key, state) = (self.key(key), self.state(state));
        self.histories[key as usize].initial = state;
    }

    /// Records a write in flight; returns its index in the key's history.
    pub fn begin(&mut self, key: &str, state: &str) -> (KeyId, usize) {
        let (key, state) = (self.key(key), self.state(state));
        let entries = &mut self.histories[key as usize].entries;
        entries.push(Entry { state, committed: None });
        (key, entries.len() - 1)
    }

    pub fn commit(&mut self, (key, index): (KeyId, usize), at: Time) {
        self.histories[key as usize].entries[index].committed = Some(at);
    }

    /// What `key` held before the soak, if it is known.
    pub fn initial_of(&self, key: &str) -> Option<&str> {
        let id = *self.keys.get(key)?;
        Some(self.state_name(self.histories[id as usize].initial))
    }
}

/// Where a read was answered from the viewer's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Through the edge (Varnish with the project's VCL).
    Edge,
    /// Straight to the Function-URL front: what an instance answers.
    Instance,
}

/// A time window `[start, end]`.
pub type Window = (Time, Time);

/// The bounds and the outage windows a read is judged with.
#[derive(Debug, Clone)]
pub struct Rules {
    /// `CHANGE_MAX_LAG`.
    pub instance_bound: f64,
    /// The edge bound (docs/freshness.md gives its formula).
    pub edge_bound: f64,
    /// Outages of the invalidation path: they push edge deadlines.
    pub edge_outages: Vec<Window>,
    /// Database outages (restart, pooler restart, black-holed connection): stale answers and
    /// `503`s are allowed in them.
    pub db_outages: Vec<Window>,
    /// How long after a database outage ends a stale answer may still be served by an instance
    /// (a load that began in the outage gives up within its statement timeout plus margin).
    pub instance_stale_slack: f64,
    /// The same at the edge, which may also keep an instance's stale answer for its `s-maxage`.
    pub edge_stale_slack: f64,
}

impl Rules {
    fn bound(&self, layer: Layer) -> f64 {
        match layer {
            Layer::Edge => self.edge_bound,
            Layer::Instance => self.instance_bound,
        }
    }

    /// The deadline of a write committed at `commit`: plain, and pushed past outages.
    fn deadline(&self, layer: Layer, commit: Time, pushed: bool) -> Time {
        let bound = self.bound(layer);
        let mut deadline = commit + bound;
        if pushed && layer == Layer::Edge {
            // Windows are few; iterate until no window overlapping [commit, deadline] moves it.
            loop {
                let moved = self
                    .edge_outages
                    .iter()
                    .filter(|&&(start, end)| start < deadline && end > commit)
                    .map(|&(_, end)| end + bound)
                    .fold(deadline, f64::max);
                if moved <= deadline {
                    break;
                }
                deadline = moved;
            }
        }
        deadline
    }

    /// Whether a read from `sent` to `answered` overlapped a database outage (with the layer's
    /// slack after it): an answer can be cut short by an outage that began while it was on its way.
    pub fn in_db_outage(&self, layer: Layer, sent: Time, answered: Time) -> bool {
        let slack = match layer {
            Layer::Edge => self.edge_stale_slack,
            Layer::Instance => self.instance_stale_slack,
        };
        self.db_outages.iter().any(|&(start, end)| answered >= start && sent <= end + slack)
    }
}

/// The judgement of one key shown by one read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judgement {
    /// Within the bound; `staleness` is how long before the read the first write it does not
    /// show committed (0 when it shows the latest committed state).
    Fresh { staleness: f64 },
    /// Outside the plain bound but inside the one pushed past outages.
    Excused { staleness: f64 },
    /// Outside the bound: the write `required` should have been shown.
    Violation { staleness: f64, required: usize },
}

/// Judges `observed` for `key` in a read that began at `at`.
pub fn judge(history: &KeyHistory, rules: &Rules, layer: Layer, at: Time, observed: StateId) -> Judgement {
    let entries = &history.entries;
    // The latest entry the read must show (or a later one), under each deadline.
    let required = |pushed: bool| {
        entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.committed.is_some_and(|c| rules.deadline(layer, c, pushed) < at))
            .map(|(i, _)| i)
            .next_back()
    };
    // The latest entry showing the observed state (`None`: the initial state).
    let shown = entries.iter().rposition(|e| e.state == observed);
    let shows = |required: Option<usize>| match (required, shown) {
        (None, _) => shown.is_some() || observed == history.initial,
        (Some(r), Some(s)) => s >= r,
        (Some(_), None) => false,
    };
    let first_missing = match shown {
        Some(s) => s + 1,
        None if observed == history.initial => 0,
        // A state no one wrote: as stale as the whole history.
        None => 0,
    };
    let staleness = entries[first_missing.min(entries.len())..]
        .iter()
        .filter_map(|e| e.committed)
        .find(|&c| c < at)
        .map_or(0.0, |c| at - c);
    let plain = required(false);
    if shows(plain) {
        return Judgement::Fresh { staleness };
    }
    let pushed = required(true);
    if shows(pushed) {
        return Judgement::Excused { staleness };
    }
    Judgement::Violation { staleness, required: pushed.unwrap_or(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            instance_bound: 2.0,
            edge_bound: 8.0,
            edge_outages: vec![(100.0, 110.0)],
            db_outages: vec![(200.0, 203.0)],
            instance_stale_slack: 7.0,
            edge_stale_slack: 12.0,
        }
    }

    fn history() -> (History, KeyId) {
        let mut h = History::default();
        h.seed("note:A", "v0");
        let w1 = h.begin("note:A", "v1");
        h.commit(w1, 10.0);
        let w2 = h.begin("note:A", "v2");
        h.commit(w2, 20.0);
        (h, w1.0)
    }

    #[test]
    fn a_read_must_show_what_committed_more_than_the_bound_before_it() {
        let (mut h, key) = history();
        let (v0, v1, v2) = (h.state("v0"), h.state("v1"), h.state("v2"));
        let hist = &h.histories[key as usize];
        let r = rules();
        // Before the first deadline anything goes.
        assert!(matches!(judge(hist, &r, Layer::Instance, 11.0, v0), Judgement::Fresh { .. }));
        // v1 committed at 10, bound 2: from 12 on, v0 breaks it.
        assert!(matches!(judge(hist, &r, Layer::Instance, 12.5, v0), Judgement::Violation { required: 0, .. }));
        assert!(matches!(judge(hist, &r, Layer::Instance, 12.5, v1), Judgement::Fresh { .. }));
        // A later state is always fine; an older one after v2's deadline is not.
        assert!(matches!(judge(hist, &r, Layer::Instance, 12.5, v2), Judgement::Fresh { .. }));
        assert!(matches!(judge(hist, &r, Layer::Instance, 22.5, v1), Judgement::Violation { required: 1, .. }));
        // The edge has a longer bound.
        assert!(matches!(judge(hist, &r, Layer::Edge, 22.5, v1), Judgement::Fresh { .. }));
        assert!(matches!(judge(hist, &r, Layer::Edge, 28.5, v1), Judgement::Violation { .. }));
    }

    #[test]
    fn staleness_counts_from_the_first_write_not_shown() {
        let (mut h, key) = history();
        let v0 = h.state("v0");
        let hist = &h.histories[key as usize];
        let Judgement::Violation { staleness, .. } = judge(hist, &rules(), Layer::Instance, 25.0, v0) else {
            panic!("v0 at 25 must be a violation");
        };
        assert!((staleness - 15.0).abs() < 1e-9);
    }

    #[test]
    fn an_outage_of_the_invalidation_path_excuses_the_edge_only() {
        let mut h = History::default();
        h.seed("line:minato", "old");
        let w = h.begin("line:minato", "new");
        h.commit(w, 98.0);
        let old = h.state("old");
        let hist = &h.histories[w.0 as usize];
        let r = rules();
        // Plain deadline 106; pushed past the outage ending at 110: 118.
        assert!(matches!(judge(hist, &r, Layer::Edge, 107.0, old), Judgement::Excused { .. }));
        assert!(matches!(judge(hist, &r, Layer::Edge, 118.5, old), Judgement::Violation { .. }));
        assert!(matches!(judge(hist, &r, Layer::Instance, 107.0, old), Judgement::Violation { .. }));
    }

    #[test]
    fn an_unknown_outcome_may_be_shown_but_is_never_required() {
        let mut h = History::default();
        h.seed("note:B", "a");
        let _unknown = h.begin("note:B", "b");
        let (a, b) = (h.state("a"), h.state("b"));
        let key = h.key("note:B");
        let hist = &h.histories[key as usize];
        let r = rules();
        assert!(matches!(judge(hist, &r, Layer::Instance, 50.0, a), Judgement::Fresh { .. }));
        assert!(matches!(judge(hist, &r, Layer::Instance, 50.0, b), Judgement::Fresh { .. }));
    }

    #[test]
    fn a_state_nobody_wrote_is_a_violation_once_anything_is_required() {
        let (mut h, key) = history();
        let bogus = h.state("bogus");
        let hist = &h.histories[key as usize];
        assert!(matches!(judge(hist, &rules(), Layer::Instance, 30.0, bogus), Judgement::Violation { .. }));
        // A key never written may show only what it held before the soak.
        let untouched = KeyHistory { initial: h.state("v0"), entries: Vec::new() };
        assert!(matches!(judge(&untouched, &rules(), Layer::Instance, 30.0, bogus), Judgement::Violation { .. }));
        let v0 = h.state("v0");
        assert!(matches!(judge(&untouched, &rules(), Layer::Instance, 30.0, v0), Judgement::Fresh { .. }));
    }

    #[test]
    fn stale_answers_are_allowed_only_in_a_database_outage_and_its_slack() {
        let r = rules();
        let at = |layer, t| r.in_db_outage(layer, t, t + 0.01);
        assert!(at(Layer::Instance, 201.0));
        assert!(at(Layer::Instance, 209.0));
        assert!(!at(Layer::Instance, 211.0));
        assert!(at(Layer::Edge, 214.0));
        assert!(!at(Layer::Edge, 199.0));
        // Sent just before the outage began, answered in it.
        assert!(r.in_db_outage(Layer::Instance, 199.9, 200.1));
    }

    #[test]
    fn keys_never_seeded_take_their_prefix_default() {
        let mut h = History::default();
        h.default_for("note:SK", "absent");
        let k = h.key("note:SK7");
        assert_eq!(h.state_name(h.histories[k as usize].initial), "absent");
    }
}
