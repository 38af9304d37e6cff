//! Which tags were evicted when: the record that decides whether a cached answer may still be
//! served.
//!
//! moka's `invalidate_entries_if` cannot carry that decision. It reaches the entries it has
//! finished storing when its scan runs, and drops the predicate once the scan is done, so an
//! answer stored moments before an eviction (its write still queued inside moka) can outlive it.
//! Here it only reclaims memory. Every answer remembers the generation its load started in, and
//! is served only while none of its tags was evicted after that.
//!
//! The state lives behind one `std::sync::RwLock`: hits take the read lock for a few map lookups,
//! evictions (at most one per change poll) the write lock; neither holds it across an `.await`.

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use cache_policy::{is_family, tag_covers};

/// Most tags remembered; past it the record starts afresh by evicting everything, which costs a
/// reload of what is cached and keeps the record's memory bounded.
const MAX_TAGS: usize = 100_000;

/// The record of evictions.
#[derive(Debug, Default)]
pub(crate) struct Evictions {
    /// See the module documentation for why a blocking lock.
    state: RwLock<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every eviction; a load belongs to the generation it started in.
    generation: u64,
    /// The generation of the last eviction of everything.
    everything: u64,
    /// The generation of each tag's last eviction.
    tags: HashMap<String, u64>,
    /// The generation of each family's last eviction (`formation:*`, recorded by a `TRUNCATE`):
    /// a handful at most, each covering every tag of its template.
    families: HashMap<String, u64>,
}

impl Evictions {
    /// The generation a load starting now belongs to.
    pub(crate) fn current(&self) -> u64 {
        self.state.read().unwrap_or_else(PoisonError::into_inner).generation
    }

    /// Records an eviction of `tags`.
    pub(crate) fn evict(&self, tags: &HashSet<String>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.generation += 1;
        let generation = state.generation;
        if state.tags.len() + state.families.len() + tags.len() > MAX_TAGS {
            state.tags.clear();
            state.families.clear();
            state.everything = generation;
            return;
        }
        for tag in tags {
            let record = if is_family(tag) { &mut state.families } else { &mut state.tags };
            record.insert(tag.clone(), generation);
        }
    }

    /// Records an eviction of everything.
    pub(crate) fn evict_all(&self) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.generation += 1;
        state.everything = state.generation;
        state.tags.clear();
        state.families.clear();
    }

    /// Whether an answer whose load started in `generation`, carrying `tags`, was evicted by
    /// nothing since.
    pub(crate) fn untouched_since(&self, generation: u64, tags: &[String]) -> bool {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let since = |at: &u64| *at > generation;
        state.everything <= generation
            && tags.iter().all(|t| {
                !state.tags.get(t).is_some_and(since)
                    && !state.families.iter().any(|(family, at)| since(at) && tag_covers(family, t))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn an_answer_is_untouched_only_by_evictions_before_its_load() {
        let e = Evictions::default();
        e.evict(&HashSet::from(["lines".to_owned()]));
        let loaded = e.current();
        assert!(e.untouched_since(loaded, &tags(&["lines", "line:minato"])), "evicted before the load started");
        e.evict(&HashSet::from(["formations".to_owned()]));
        assert!(e.untouched_since(loaded, &tags(&["lines"])), "another tag");
        e.evict(&HashSet::from(["line:minato".to_owned()]));
        assert!(!e.untouched_since(loaded, &tags(&["lines", "line:minato"])));
        let later = e.current();
        assert!(e.untouched_since(later, &tags(&["lines", "line:minato"])));
        e.evict_all();
        assert!(!e.untouched_since(later, &tags(&[])));
        assert!(e.untouched_since(e.current(), &tags(&["lines"])));
    }

    #[test]
    fn a_family_evicts_every_tag_of_its_template_and_no_other() {
        let e = Evictions::default();
        let loaded = e.current();
        e.evict(&HashSet::from(["formation:*".to_owned(), "sightings".to_owned()]));
        assert!(!e.untouched_since(loaded, &tags(&["formation:10701F"])));
        assert!(!e.untouched_since(loaded, &tags(&["sightings"])));
        assert!(e.untouched_since(loaded, &tags(&["formations", "lines", "operation:2026-11-28:01M"])));
        assert!(e.untouched_since(e.current(), &tags(&["formation:10701F"])), "loaded after it");
    }

    #[test]
    fn a_full_record_starts_afresh_by_evicting_everything() {
        let e = Evictions::default();
        let loaded = e.current();
        let many: HashSet<String> = (0..=MAX_TAGS).map(|i| format!("formation:{i}")).collect();
        e.evict(&many);
        assert!(!e.untouched_since(loaded, &tags(&["lines"])), "conservative: everything is gone");
        assert!(e.state.read().unwrap().tags.is_empty());
    }
}
