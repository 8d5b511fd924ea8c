//! The checker against an exhaustive search for a linearization on small random histories,
//! and its speed on a long one.

use super::*;
use std::time::Instant;

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A linearizable history: each operation takes effect at a random tick of its interval
/// (an indeterminate append at a random tick after its invoke, or never), failed appends
/// never. `sequential` of every 4 operations run alone; `clients` run concurrently.
fn linearizable(
    rng: &mut Rng,
    n: usize,
    keys: u64,
    clients: u64,
    max_len: u64,
) -> (History, BTreeMap<u64, Vec<u64>>) {
    let mut events = Vec::with_capacity(n);
    let mut effects: Vec<(u64, usize)> = Vec::new(); // (tick, event)
    let mut free = vec![0u64; clients as usize];
    let mut now = 0u64;
    for i in 0..n {
        let sequential = (i / 1000) % 4 == 0;
        let (client, invoke) = if sequential {
            (0, now.max(free.iter().copied().max().unwrap_or(0)))
        } else {
            let c = rng.below(clients);
            (c, now.max(free[c as usize]))
        };
        let complete = invoke + 1 + rng.below(max_len);
        let key = rng.below(keys);
        let (op, is_read) = if rng.below(10) < 3 {
            (Op::Read { key }, true)
        } else {
            (
                Op::Append {
                    key,
                    value: i as u64,
                },
                false,
            )
        };
        let outcome = match rng.below(20) {
            0 => Outcome::Failed,
            1 | 2 => Outcome::Indeterminate,
            _ => Outcome::Ok(None),
        };
        let at = match outcome {
            Outcome::Ok(_) => Some(invoke + rng.below(complete - invoke + 1)),
            Outcome::Indeterminate if !is_read && rng.below(2) == 0 => {
                Some(invoke + rng.below(3 * max_len))
            }
            _ => None,
        };
        if let Some(at) = at {
            effects.push((at, i));
        }
        let complete = match outcome {
            Outcome::Indeterminate => None,
            _ => Some(complete),
        };
        events.push(Event {
            client,
            op,
            invoke,
            complete,
            outcome,
        });
        free[client as usize] = complete.unwrap_or(invoke) + 1;
        now = if sequential {
            complete.unwrap_or(invoke) + 1
        } else {
            now + rng.below(3)
        };
    }
    effects.sort_unstable();
    let mut state: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (_, i) in effects {
        let list = state.entry(events[i].op.key()).or_default();
        match events[i].op {
            Op::Append { value, .. } => list.push(value),
            Op::Read { .. } => events[i].outcome = Outcome::Ok(Some(list.clone())),
        }
    }
    (History { events }, state)
}

/// Exhaustive search for one key: is there an order of the acknowledged operations and
/// some indeterminate appends, consistent with real time, that returns every read's list
/// and ends with `last`?
fn brute_force(h: &History, last: &[u64]) -> bool {
    let ok: Vec<usize> = (0..h.events.len())
        .filter(|&i| matches!(h.events[i].outcome, Outcome::Ok(_)))
        .collect();
    let maybe: Vec<usize> = (0..h.events.len())
        .filter(|&i| {
            h.events[i].outcome == Outcome::Indeterminate
                && matches!(h.events[i].op, Op::Append { .. })
        })
        .collect();
    fn search(h: &History, ops: &[usize], placed: u32, list: &mut Vec<u64>, last: &[u64]) -> bool {
        if placed.count_ones() as usize == ops.len() {
            return list == last;
        }
        for (j, &b) in ops.iter().enumerate() {
            if placed & (1 << j) != 0 {
                continue;
            }
            // Every unplaced operation that completed before `b` was invoked must go first.
            let blocked = ops.iter().enumerate().any(|(k, &a)| {
                placed & (1 << k) == 0
                    && k != j
                    && h.events[a].outcome != Outcome::Indeterminate
                    && h.events[a].complete.unwrap() < h.events[b].invoke
            });
            if blocked {
                continue;
            }
            let found = match (&h.events[b].op, &h.events[b].outcome) {
                (Op::Append { value, .. }, _) => {
                    list.push(*value);
                    let found = search(h, ops, placed | 1 << j, list, last);
                    list.pop();
                    found
                }
                (Op::Read { .. }, Outcome::Ok(Some(r))) => {
                    r == list && search(h, ops, placed | 1 << j, list, last)
                }
                _ => unreachable!(),
            };
            if found {
                return true;
            }
        }
        false
    }
    (0..1u32 << maybe.len()).any(|subset| {
        let mut ops = ok.clone();
        ops.extend(
            (0..maybe.len())
                .filter(|b| subset & 1 << b != 0)
                .map(|b| maybe[b]),
        );
        search(h, &ops, 0, &mut Vec::new(), last)
    })
}

#[test]
fn the_checker_agrees_with_an_exhaustive_search_on_small_histories() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let (mut passed, mut failed) = (0, 0);
    for _ in 0..6000 {
        let n = 2 + rng.below(6) as usize;
        let (mut h, state) = linearizable(&mut rng, n, 1, 3, 6);
        let mut last = state.get(&0).cloned().unwrap_or_default();
        // Break most of them a little: a read's list, an operation's ticks, the final list
        // or an outcome.
        if rng.below(4) != 0 {
            let i = rng.below(n as u64) as usize;
            match rng.below(6) {
                0 => {
                    if let Outcome::Ok(Some(r)) = &mut h.events[i].outcome {
                        if r.pop().is_none() {
                            r.push(i as u64);
                        }
                    }
                }
                3 => {
                    // Earlier or later by a few ticks.
                    let e = &mut h.events[i];
                    let shift = 1 + rng.below(8);
                    if rng.below(2) == 0 && e.invoke >= shift {
                        e.invoke -= shift;
                        e.complete = e.complete.map(|c| c - shift);
                    } else {
                        e.invoke += shift;
                        e.complete = e.complete.map(|c| c + shift);
                    }
                }
                4 => {
                    if let Outcome::Ok(Some(r)) = &mut h.events[i].outcome {
                        r.truncate(rng.below(r.len() as u64 + 1) as usize);
                    }
                }
                1 if last.len() >= 2 => {
                    let j = rng.below(last.len() as u64 - 1) as usize;
                    last.swap(j, j + 1);
                }
                2 => {
                    last.pop();
                }
                _ => {
                    // An acknowledged append failed, or a failed one acknowledged.
                    let flipped = match h.events[i].outcome {
                        Outcome::Ok(None) => Outcome::Failed,
                        Outcome::Failed if !matches!(h.events[i].op, Op::Read { .. }) => {
                            Outcome::Ok(None)
                        }
                        ref o => o.clone(),
                    };
                    h.events[i].outcome = flipped;
                }
            }
        }
        let f = vec![(1, BTreeMap::from([(0, last.clone())]))];
        let expected = brute_force(&h, &last);
        let verdict = check(&h, &f);
        assert_eq!(
            verdict.is_ok(),
            expected,
            "final {last:?}, {verdict:?}\n{}",
            describe_around(&h, &[0], 10)
        );
        if expected {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    eprintln!("{passed} linearizable, {failed} not");
    assert!(
        passed > 1000 && failed > 1000,
        "{passed} passed, {failed} failed"
    );
}

#[test]
fn twenty_thousand_events_check_in_well_under_a_second() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (h, state) = linearizable(&mut rng, 20_000, 5, 8, 20);
    assert_eq!(h.events.len(), 20_000);
    let f: Vec<_> = (1..=5).map(|n| (n, state.clone())).collect();
    let reads = h
        .events
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Ok(Some(_))))
        .count();
    assert!(reads > 3000, "{reads} reads");
    let start = Instant::now();
    let verdict = check(&h, &f);
    let took = start.elapsed();
    assert_eq!(verdict, Ok(()));
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
    eprintln!("20,000 events, {reads} reads: checked in {took:?}");
}
