//! The checker on small hand-built histories: one per violation, and a valid one.

use super::*;

fn append(client: u64, key: u64, value: u64, invoke: u64, complete: u64) -> Event {
    Event {
        client,
        op: Op::Append { key, value },
        invoke,
        complete: Some(complete),
        outcome: Outcome::Ok(None),
    }
}

fn append_indeterminate(client: u64, key: u64, value: u64, invoke: u64) -> Event {
    Event {
        client,
        op: Op::Append { key, value },
        invoke,
        complete: None,
        outcome: Outcome::Indeterminate,
    }
}

fn append_failed(client: u64, key: u64, value: u64, invoke: u64) -> Event {
    Event {
        client,
        op: Op::Append { key, value },
        invoke,
        complete: Some(invoke + 1),
        outcome: Outcome::Failed,
    }
}

fn read(client: u64, key: u64, invoke: u64, complete: u64, list: &[u64]) -> Event {
    Event {
        client,
        op: Op::Read { key },
        invoke,
        complete: Some(complete),
        outcome: Outcome::Ok(Some(list.to_vec())),
    }
}

fn history(events: Vec<Event>) -> History {
    History { events }
}

/// Nodes 1, 2, 3, all with these lists.
fn agreed(lists: &[(u64, &[u64])]) -> Vec<(u64, BTreeMap<u64, Vec<u64>>)> {
    let m: BTreeMap<u64, Vec<u64>> = lists.iter().map(|(k, l)| (*k, l.to_vec())).collect();
    (1..=3).map(|n| (n, m.clone())).collect()
}

fn violations(h: &History, f: &[(u64, BTreeMap<u64, Vec<u64>>)]) -> Vec<Violation> {
    let v = check(h, f).expect_err("a violation");
    for x in &v {
        assert!(!x.to_string().is_empty());
    }
    v
}

#[test]
fn a_valid_concurrent_history_passes() {
    let h = history(vec![
        // Key 1: overlapping appends that land in the opposite order of their invokes.
        read(0, 1, 0, 2, &[]),
        append(1, 1, 1, 1, 10),
        append(2, 1, 2, 5, 15),
        read(3, 1, 6, 12, &[2]),
        read(0, 1, 8, 14, &[2]),
        read(3, 1, 16, 20, &[2, 1]),
        // Key 2: overlapping appends in invoke order, an indeterminate append present (and
        // seen by one read but not by an earlier one), one absent, a failed one absent.
        append(1, 2, 3, 20, 30),
        append(2, 2, 4, 22, 28),
        append_indeterminate(4, 2, 5, 29),
        append_indeterminate(5, 2, 6, 31),
        append_failed(6, 2, 7, 32),
        read(0, 2, 31, 33, &[3, 4]),
        read(3, 2, 34, 40, &[3, 4, 5]),
        Event {
            client: 7,
            op: Op::Read { key: 2 },
            invoke: 35,
            complete: None,
            outcome: Outcome::Indeterminate,
        },
        // Key 3: never written; nodes without the key and with an empty list agree.
        read(0, 3, 41, 42, &[]),
    ]);
    let mut f = agreed(&[(1, &[2, 1]), (2, &[3, 4, 5])]);
    f[1].1.insert(3, Vec::new());
    assert_eq!(check(&h, &f), Ok(()));
    // No node at all, no operation: nothing to check.
    assert_eq!(check(&History::default(), &[]), Ok(()));
}

#[test]
fn a_lost_acknowledged_append_is_caught() {
    let h = history(vec![append(0, 1, 1, 0, 5), append(1, 1, 2, 1, 6)]);
    let v = violations(&h, &agreed(&[(1, &[2])]));
    assert_eq!(
        v,
        vec![Violation::LostAppend {
            key: 1,
            value: 1,
            event: 0
        }]
    );
}

#[test]
fn a_failed_append_in_the_list_is_caught() {
    let h = history(vec![append(0, 1, 1, 0, 5), append_failed(1, 1, 2, 6)]);
    let v = violations(&h, &agreed(&[(1, &[1, 2])]));
    assert_eq!(
        v,
        vec![Violation::FailedAppendPresent {
            key: 1,
            value: 2,
            event: 1,
            position: 1
        }]
    );
}

#[test]
fn a_duplicate_value_is_caught() {
    let h = history(vec![append(0, 1, 1, 0, 5), append(1, 1, 2, 6, 8)]);
    let v = violations(&h, &agreed(&[(1, &[1, 2, 1, 1])]));
    assert_eq!(
        v,
        vec![Violation::DuplicateValue {
            key: 1,
            value: 1,
            event: Some(0),
            first_position: 0,
            position: 2
        }]
    );
    // Two operations appending one value: a malformed history.
    let h = history(vec![append(0, 1, 1, 0, 5), append(1, 1, 1, 6, 8)]);
    let v = violations(&h, &agreed(&[(1, &[1])]));
    assert_eq!(
        v,
        vec![Violation::DuplicateAppendOp {
            value: 1,
            first: 0,
            second: 1
        }]
    );
}

#[test]
fn a_phantom_value_is_caught() {
    let h = history(vec![
        append(0, 1, 1, 0, 5),
        append_indeterminate(1, 2, 2, 0),
    ]);
    let v = violations(&h, &agreed(&[(1, &[1, 9, 2])]));
    assert_eq!(
        v,
        vec![
            Violation::PhantomValue {
                key: 1,
                value: 9,
                position: 1,
                appended_to: None
            },
            Violation::PhantomValue {
                key: 1,
                value: 2,
                position: 2,
                appended_to: Some((2, 1))
            },
        ]
    );
    // A key no operation touched.
    let v = violations(&history(vec![]), &agreed(&[(4, &[7])]));
    assert!(matches!(
        v[..],
        [Violation::PhantomValue {
            key: 4,
            value: 7,
            ..
        }]
    ));
}

#[test]
fn nodes_that_disagree_are_caught() {
    let h = history(vec![
        append(0, 1, 1, 0, 5),
        append_indeterminate(1, 1, 2, 6),
    ]);
    let mut f = agreed(&[(1, &[1, 2])]);
    f[1].1.insert(1, vec![1]);
    f[2].1.insert(1, vec![2, 1]);
    let v = violations(&h, &f);
    assert_eq!(
        v,
        vec![Violation::Disagreement {
            key: 1,
            reference_node: 1,
            node: 2,
            index: 1,
            reference_value: Some(2),
            node_value: None,
            reference_len: 2,
            node_len: 1
        }]
    );
    // A node without the key at all.
    let mut f = agreed(&[(1, &[1])]);
    f[2].1.clear();
    assert!(matches!(
        violations(&h, &f)[..],
        [Violation::Disagreement {
            node: 3,
            index: 0,
            node_len: 0,
            ..
        }]
    ));
}

#[test]
fn a_read_that_is_not_a_prefix_is_caught() {
    let h = history(vec![
        append(0, 1, 1, 0, 5),
        append(1, 1, 2, 0, 5),
        read(2, 1, 1, 3, &[2]),
        read(2, 1, 6, 7, &[1, 2, 3]),
    ]);
    let v = violations(&h, &agreed(&[(1, &[1, 2])]));
    assert_eq!(
        v,
        vec![
            Violation::ReadNotPrefix {
                key: 1,
                event: 2,
                index: 0,
                read_value: Some(2),
                final_value: Some(1),
                read_len: 1,
                final_len: 2
            },
            Violation::ReadNotPrefix {
                key: 1,
                event: 3,
                index: 2,
                read_value: Some(3),
                final_value: None,
                read_len: 3,
                final_len: 2
            },
        ]
    );
}

#[test]
fn a_stale_read_is_caught() {
    // Append 2 completes at 5, the read starts at 6 and misses it.
    let h = history(vec![
        append(0, 1, 1, 0, 3),
        append(1, 1, 2, 1, 5),
        read(2, 1, 6, 8, &[1]),
        read(3, 1, 5, 9, &[1]), // concurrent with append 2's completion: fine
    ]);
    let v = violations(&h, &agreed(&[(1, &[1, 2])]));
    assert_eq!(
        v,
        vec![Violation::StaleRead {
            key: 1,
            append: 1,
            value: 2,
            position: 1,
            read: 2,
            read_len: 1
        }]
    );
}

#[test]
fn a_read_from_the_future_is_caught() {
    let h = history(vec![
        read(0, 1, 0, 3, &[1]),
        append(1, 1, 1, 4, 8),
        read(0, 1, 4, 6, &[1, 2]),
        append_indeterminate(2, 1, 2, 7),
    ]);
    let v = violations(&h, &agreed(&[(1, &[1, 2])]));
    assert_eq!(
        v,
        vec![
            Violation::FutureRead {
                key: 1,
                read: 0,
                read_len: 1,
                append: 1,
                value: 1,
                position: 0
            },
            Violation::FutureRead {
                key: 1,
                read: 2,
                read_len: 2,
                append: 3,
                value: 2,
                position: 1
            },
        ]
    );
}

#[test]
fn appends_out_of_real_time_order_are_caught() {
    let h = history(vec![
        append(0, 1, 1, 0, 5),
        append(1, 1, 2, 6, 9),
        append_indeterminate(2, 1, 3, 7),
    ]);
    let v = violations(&h, &agreed(&[(1, &[3, 2, 1])]));
    assert_eq!(
        v,
        vec![
            Violation::AppendsOutOfOrder {
                key: 1,
                earlier: 0,
                earlier_value: 1,
                earlier_position: 2,
                later: 1,
                later_value: 2,
                later_position: 1
            },
            Violation::AppendsOutOfOrder {
                key: 1,
                earlier: 0,
                earlier_value: 1,
                earlier_position: 2,
                later: 2,
                later_value: 3,
                later_position: 0
            },
        ]
    );
}

#[test]
fn reads_going_backwards_are_caught() {
    let h = history(vec![
        append(0, 1, 1, 0, 100),
        append(1, 1, 2, 0, 100),
        read(2, 1, 10, 20, &[1, 2]),
        read(3, 1, 30, 40, &[1]),
        read(4, 1, 20, 50, &[]), // concurrent with the first read: fine
    ]);
    let v = violations(&h, &agreed(&[(1, &[1, 2])]));
    assert_eq!(
        v,
        vec![Violation::ReadsRegress {
            key: 1,
            earlier: 2,
            earlier_len: 2,
            later: 3,
            later_len: 1
        }]
    );
}

#[test]
fn malformed_events_are_reported() {
    let mut backwards = append(0, 1, 1, 5, 5);
    backwards.complete = Some(4);
    let mut unfinished = append(0, 1, 2, 6, 7);
    unfinished.complete = None;
    let mut listless = read(0, 1, 8, 9, &[]);
    listless.outcome = Outcome::Ok(None);
    let h = history(vec![backwards, unfinished, listless]);
    let v = violations(&h, &agreed(&[(1, &[1, 2])]));
    assert_eq!(
        v.iter()
            .map(|v| match v {
                Violation::MalformedEvent { event, .. } => *event,
                other => panic!("{other}"),
            })
            .collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[test]
fn describe_around_shows_the_events_lines() {
    let events: Vec<Event> = (0..30)
        .map(|i| match i % 3 {
            0 => append(i % 4, 1, i, i * 10, i * 10 + 5),
            1 => append_indeterminate(i % 4, 1, i, i * 10),
            _ => read(i % 4, 1, i * 10, i * 10 + 5, &(0..20).collect::<Vec<_>>()),
        })
        .collect();
    let h = history(events);
    let s = describe_around(&h, &[3, 20, 99], 2);
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines.contains(&">> #3 client 3 append key 1 value 3, invoke 30, complete 35: ok"));
    assert!(lines
        .contains(&"   #4 client 0 append key 1 value 4, invoke 40, complete -: indeterminate"));
    assert!(lines.contains(&concat!(
        ">> #20 client 0 read key 1, invoke 200, complete 205: ok ",
        "[0, 1, 2, ..., 14, 15, 16, 17, 18, 19] (20 values)"
    )));
    for i in [1, 2, 4, 5, 18, 19, 21, 22] {
        assert!(s.contains(&format!("  #{i} client")), "{i}:\n{s}");
    }
    for i in [0, 6, 17, 23] {
        assert!(!s.contains(&format!("#{i} client")), "{i}:\n{s}");
    }
    assert_eq!(lines.iter().filter(|l| l.trim() == "...").count(), 3, "{s}");
    // A violation's events, as the Jepsen test prints them.
    let v = Violation::StaleRead {
        key: 1,
        append: 3,
        value: 3,
        position: 0,
        read: 20,
        read_len: 0,
    };
    let s = describe_around(&h, &v.events(), 0);
    assert_eq!(s.lines().filter(|l| l.starts_with(">>")).count(), 2, "{s}");
    assert_eq!(describe_around(&h, &[], 3), "");
}
