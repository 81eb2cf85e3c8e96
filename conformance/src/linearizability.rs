// SPDX-FileCopyrightText: Copyright 2026 The waggle-store authors
// SPDX-License-Identifier: Apache-2.0

//! A bounded linearizability checker for the history of one id.
//!
//! The search is Wing and Gong's, with Lowe's memo of visited
//! (linearized set, model state) pairs, as in porcupine. Two rules keep it
//! fast on real histories:
//!
//! * **Reads go first.** A call that cannot change the state (a find, or a
//!   delete that found nothing) and whose answer agrees with the current
//!   state is linearized at once, without branching. This is sound and
//!   complete: such a call may only go next if it was invoked before every
//!   pending call returned, so moving it to the front of any valid
//!   linearization breaks no real-time order and changes no answer.
//! * **A budget.** The search counts the nodes it expands and gives up past
//!   a limit with [`Verdict::Inconclusive`] — never with a pass.
//!
//! A history that is not linearizable is reported with the calls that
//! matter: where the longest linearizable prefix stops, the state there,
//! and the calls that could have gone next but disagree with it.

use std::collections::HashSet;
use std::fmt::Write as _;

/// What one call did to the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Call {
    /// `save` of the value tagged with this number.
    Save(u64),
    /// `find_by_id`, or `find_all` projected onto the id.
    Find,
    /// `delete`.
    Delete,
}

/// What the call answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The write succeeded.
    Ok,
    /// A find returned the value tagged with this number.
    Found(u64),
    /// `NotFound`.
    NotFound,
}

/// One call: what, what came back, and when (on one logical clock), and
/// which task made it (for reports).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Event {
    pub call: Call,
    pub answer: Answer,
    pub invoked: u64,
    pub returned: u64,
    pub task: usize,
}

impl Event {
    fn describe(&self) -> String {
        let what = match self.call {
            Call::Save(v) => format!("save v{v}"),
            Call::Find => "find".to_owned(),
            Call::Delete => "delete".to_owned(),
        };
        let answer = match self.answer {
            Answer::Ok => "ok".to_owned(),
            Answer::Found(v) => format!("found v{v}"),
            Answer::NotFound => "NotFound".to_owned(),
        };
        format!(
            "[{:>5} .. {:>5}] task {:>2}: {what} -> {answer}",
            self.invoked, self.returned, self.task
        )
    }
}

/// The outcome of a check.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Some linearization explains every answer.
    Linearizable,
    /// None does; the report names the calls that matter.
    NotLinearizable(String),
    /// The budget ran out before the search could decide.
    Inconclusive {
        /// How many calls the history has.
        calls: usize,
        /// How many search nodes were expanded.
        steps: u64,
    },
}

/// The state of one id: absent, or the value tagged with this number.
type State = Option<u64>;

fn step(state: State, call: Call) -> (State, Answer) {
    match (call, state) {
        (Call::Save(v), _) => (Some(v), Answer::Ok),
        (Call::Find, Some(v)) => (state, Answer::Found(v)),
        (Call::Find, None) => (None, Answer::NotFound),
        (Call::Delete, Some(_)) => (None, Answer::Ok),
        (Call::Delete, None) => (None, Answer::NotFound),
    }
}

/// Whether `call` can leave the state as it is.
fn reads_only(call: Call, answer: Answer) -> bool {
    matches!(
        (call, answer),
        (Call::Find, _) | (Call::Delete, Answer::NotFound)
    )
}

struct Search<'a> {
    events: &'a [Event],
    done: Vec<u64>,
    path: Vec<usize>,
    seen: HashSet<(Vec<u64>, State)>,
    steps: u64,
    budget: u64,
    /// The deepest node reached: the calls placed, the state there, and the
    /// calls that could have gone next.
    best: Option<(Vec<usize>, State, Vec<usize>)>,
}

enum Outcome {
    Found,
    Exhausted,
    OutOfBudget,
}

impl Search<'_> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    /// The calls that may go next: not yet linearized, and invoked before
    /// every pending call returned.
    fn candidates(&self) -> Vec<usize> {
        let horizon = (0..self.events.len())
            .filter(|&i| !self.is_done(i))
            .map(|i| self.events[i].returned)
            .min()
            .unwrap_or(u64::MAX);
        (0..self.events.len())
            .filter(|&i| !self.is_done(i) && self.events[i].invoked <= horizon)
            .collect()
    }

    fn go(&mut self, i: usize, state: State) -> Outcome {
        self.flip(i);
        self.path.push(i);
        let outcome = self.search(state);
        self.path.pop();
        self.flip(i);
        outcome
    }

    fn search(&mut self, state: State) -> Outcome {
        if self.path.len() == self.events.len() {
            return Outcome::Found;
        }
        self.steps += 1;
        if self.steps > self.budget {
            return Outcome::OutOfBudget;
        }
        if !self.seen.insert((self.done.clone(), state)) {
            return Outcome::Exhausted;
        }
        let candidates = self.candidates();
        if self
            .best
            .as_ref()
            .is_none_or(|(p, _, _)| p.len() < self.path.len())
        {
            self.best = Some((self.path.clone(), state, candidates.clone()));
        }
        // Reads that agree go first, alone: no branching needed.
        if let Some(&i) = candidates.iter().find(|&&i| {
            let e = &self.events[i];
            reads_only(e.call, e.answer) && step(state, e.call).1 == e.answer
        }) {
            return self.go(i, state);
        }
        for i in candidates {
            let e = self.events[i];
            let (next, answer) = step(state, e.call);
            if answer != e.answer {
                continue;
            }
            match self.go(i, next) {
                Outcome::Exhausted => {}
                other => return other,
            }
        }
        Outcome::Exhausted
    }

    fn report(&self) -> String {
        let Some((path, state, next)) = &self.best else {
            return String::new();
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "the longest linearizable prefix places {} of {} calls; there the id {}",
            path.len(),
            self.events.len(),
            match *state {
                Some(v) => format!("holds v{v}"),
                None => "is absent".to_owned(),
            }
        );
        let _ = writeln!(out, "the last calls placed (oldest first):");
        for &i in &path[path.len().saturating_sub(4)..] {
            let _ = writeln!(out, "    {}", self.events[i].describe());
        }
        let _ = writeln!(
            out,
            "the calls that could go next, none of which agrees with that state:"
        );
        for &i in next {
            let _ = writeln!(out, "    {}", self.events[i].describe());
        }
        out
    }
}

/// Checks `events` (starting from an absent id) within `budget` expanded
/// search nodes.
pub(crate) fn check(events: &[Event], budget: u64) -> Verdict {
    let mut sorted = events.to_vec();
    sorted.sort_by_key(|e| e.invoked);
    let mut search = Search {
        events: &sorted,
        done: vec![0; sorted.len().div_ceil(64)],
        path: Vec::with_capacity(sorted.len()),
        seen: HashSet::new(),
        steps: 0,
        budget,
        best: None,
    };
    match search.search(None) {
        Outcome::Found => Verdict::Linearizable,
        Outcome::Exhausted => Verdict::NotLinearizable(search.report()),
        Outcome::OutOfBudget => Verdict::Inconclusive {
            calls: sorted.len(),
            steps: budget,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: u64 = 1_000_000;

    fn ev(call: Call, answer: Answer, invoked: u64, returned: u64) -> Event {
        Event {
            call,
            answer,
            invoked,
            returned,
            task: 0,
        }
    }

    fn linearizable(events: &[Event]) -> bool {
        match check(events, BUDGET) {
            Verdict::Linearizable => true,
            Verdict::NotLinearizable(_) => false,
            Verdict::Inconclusive { .. } => panic!("inconclusive on a tiny history"),
        }
    }

    #[test]
    fn accepts_and_refuses() {
        use Answer::*;
        use Call::*;
        // Sequential save then find of the same value.
        assert!(linearizable(&[
            ev(Save(1), Ok, 0, 1),
            ev(Find, Found(1), 2, 3)
        ]));
        // A find after the save returned that misses it.
        assert!(!linearizable(&[
            ev(Save(1), Ok, 0, 1),
            ev(Find, NotFound, 2, 3)
        ]));
        // Overlapping: the find may go before the save.
        assert!(linearizable(&[
            ev(Save(1), Ok, 0, 3),
            ev(Find, NotFound, 1, 2)
        ]));
        // Two deletes of one value both succeeding.
        assert!(!linearizable(&[
            ev(Save(1), Ok, 0, 1),
            ev(Delete, Ok, 2, 5),
            ev(Delete, Ok, 3, 4),
        ]));
        // Concurrent saves, then a read of either.
        for v in [1, 2] {
            assert!(linearizable(&[
                ev(Save(1), Ok, 0, 3),
                ev(Save(2), Ok, 1, 2),
                ev(Find, Found(v), 4, 5),
            ]));
        }
        // A value read back after it was overwritten (the later save returned
        // before the find began).
        assert!(!linearizable(&[
            ev(Save(1), Ok, 0, 1),
            ev(Save(2), Ok, 2, 3),
            ev(Find, Found(1), 4, 5),
        ]));
        // A read that must go between two writes, not first: the greedy
        // rule must not place it where it disagrees.
        assert!(linearizable(&[
            ev(Save(1), Ok, 0, 10),
            ev(Find, Found(1), 1, 11),
            ev(Delete, Ok, 2, 12),
            ev(Find, NotFound, 3, 13),
        ]));
    }

    /// Many overlapping reads and writes: the memo and the read rule decide
    /// it in few steps, where plain search tries every order of the reads.
    #[test]
    fn wide_overlapping_reads_are_cheap() {
        let mut events = vec![ev(Call::Save(0), Answer::Ok, 0, 1)];
        let mut t = 2;
        for round in 1..=20u64 {
            // 12 reads overlap each save; half see the old value.
            let save_at = t;
            for r in 0..12 {
                let seen = if r % 2 == 0 { round - 1 } else { round };
                events.push(ev(Call::Find, Answer::Found(seen), t + 1 + r, t + 100));
            }
            events.push(ev(Call::Save(round), Answer::Ok, save_at, t + 50));
            t += 200;
        }
        match check(&events, 10_000) {
            Verdict::Linearizable => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_budget_makes_it_inconclusive_never_a_pass() {
        // 40 overlapping saves and one impossible read at the end: the
        // search must try many orders and runs out of a tiny budget.
        let mut events: Vec<Event> = (0..40)
            .map(|v| ev(Call::Save(v), Answer::Ok, v, 100 + v))
            .collect();
        events.push(ev(Call::Find, Answer::Found(999), 50, 60));
        match check(&events, 100) {
            Verdict::Inconclusive { calls, steps } => {
                assert_eq!(calls, 41);
                assert_eq!(steps, 100);
            }
            other => panic!("expected inconclusive, got {other:?}"),
        }
    }

    #[test]
    fn a_failure_names_the_calls_that_matter() {
        use Answer::*;
        use Call::*;
        let mut events: Vec<Event> = (0..30)
            .map(|i| ev(Find, NotFound, 10 * i, 10 * i + 1))
            .collect();
        events.push(ev(Save(7), Ok, 400, 401));
        events.push(ev(Find, NotFound, 402, 403));
        let Verdict::NotLinearizable(report) = check(&events, BUDGET) else {
            panic!("expected a violation");
        };
        assert!(report.contains("places 31 of 32 calls"), "{report}");
        assert!(report.contains("holds v7"), "{report}");
        assert!(report.contains("find -> NotFound"), "{report}");
        // Trimmed: four placed calls and the one that cannot go.
        assert!(report.lines().count() <= 8, "{report}");
    }
}
