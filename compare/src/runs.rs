//! Several runs of the whole comparison, for a noisy machine: the machine is settled before
//! every child process (sync, page cache dropped where root, write-back drained), the engine
//! order rotates from run to run, and the report gives each figure's median (the ratios to
//! the machine's limits included) with its range (min–max over the runs).

use std::fmt::Write;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::report::{human, ROWS};

/// Lets the previous child's write-back finish and empties the page cache (where allowed)
/// before the next child starts: `sync`, `drop_caches` (root only), then waits until the
/// kernel's dirty and write-back pages are below 1 MiB (at most 10 s), then 300 ms more.
/// Returns what was done, for the report.
pub fn settle() -> &'static str {
    // SAFETY: plain syscall, no arguments.
    unsafe { libc::sync() };
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) && dirty_kib().is_some_and(|k| k > 1024) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    if dropped {
        "sync, page cache dropped, write-back drained, 300 ms idle"
    } else {
        "sync, write-back drained, 300 ms idle (page cache not dropped: needs root)"
    }
}

/// `Dirty` + `Writeback` from /proc/meminfo, in KiB.
fn dirty_kib() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(field("Dirty:")? + field("Writeback:")?)
}

/// `names` rotated left by `run` places: run r starts with the r-th engine.
pub fn rotated<'a>(names: &[&'a str], run: usize) -> Vec<&'a str> {
    let mut v = names.to_vec();
    if !v.is_empty() {
        let k = run % v.len();
        v.rotate_left(k);
    }
    v
}

/// Folds the reports of several runs into one of the same shape whose numbers are the
/// medians over the runs where they are present (a cell that failed in every run keeps its
/// first error), and two more of the same shape with the minima and maxima.
pub fn aggregate(runs: &[Value]) -> (Value, Value, Value) {
    let first = runs.first().cloned().unwrap_or(Value::Null);
    let refs: Vec<&Value> = runs.iter().collect();
    (
        fold(&first, &refs, median),
        fold(&first, &refs, |v| v.first().copied().unwrap_or(f64::NAN)),
        fold(&first, &refs, |v| v.last().copied().unwrap_or(f64::NAN)),
    )
}

fn median(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The shape of `shape` (keys from every run, missing ones taken from the first run that has
/// them), with every number replaced by `pick` of the sorted numbers at that place.
fn fold(shape: &Value, runs: &[&Value], pick: fn(&[f64]) -> f64) -> Value {
    match shape {
        Value::Object(_) => {
            let mut keys: Vec<String> = Vec::new();
            for r in runs {
                if let Value::Object(m) = r {
                    for k in m.keys() {
                        if !keys.contains(k) {
                            keys.push(k.clone());
                        }
                    }
                }
            }
            let mut out = Map::new();
            for k in keys {
                let sub: Vec<&Value> = runs.iter().filter_map(|r| r.get(&k)).collect();
                // An `ok` cell in any run wins over an `err` in another.
                let sample = sub
                    .iter()
                    .find(|v| !v.is_null())
                    .copied()
                    .unwrap_or(&Value::Null);
                out.insert(k, fold(sample, &sub, pick));
            }
            Value::Object(out)
        }
        Value::Number(_) => {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r.as_f64()).collect();
            v.sort_by(f64::total_cmp);
            serde_json::Number::from_f64(pick(&v)).map_or(Value::Null, Value::Number)
        }
        other => other.clone(),
    }
}

/// The ranges table: each row's min–max per engine over the runs.
pub fn render_ranges(lo: &Value, hi: &Value, engines: &[&str], workloads: &[&str], n: usize) {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nRange over {n} runs (min–max; the table above has the medians):\n"
    );
    let mut head = "| workload |".to_string();
    let mut sep = "|---|".to_string();
    for e in engines {
        let _ = write!(head, " {e} |");
        sep.push_str("---:|");
    }
    let _ = writeln!(o, "{head}\n{sep}");
    for row in ROWS.iter().filter(|r| workloads.contains(&r.workload)) {
        let mut line = format!("| {} |", row.label);
        for e in engines {
            let at = |r: &Value| r["engines"][*e]["cells"][row.workload]["ok"][row.metric].as_f64();
            match (at(lo), at(hi)) {
                (Some(a), Some(b)) => {
                    let _ = write!(line, " {}–{} |", human(a), human(b));
                }
                _ => line.push_str(" n/a |"),
            }
        }
        let _ = writeln!(o, "{line}");
    }
    print!("{o}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn medians_and_ranges_per_number() {
        let runs = vec![
            json!({"e": {"ok": {"x": 3.0}}, "s": "a"}),
            json!({"e": {"ok": {"x": 1.0}}, "s": "b"}),
            json!({"e": {"ok": {"x": 2.0}}, "s": "c"}),
        ];
        let (m, lo, hi) = aggregate(&runs);
        assert_eq!(m["e"]["ok"]["x"].as_f64(), Some(2.0));
        assert_eq!(lo["e"]["ok"]["x"].as_f64(), Some(1.0));
        assert_eq!(hi["e"]["ok"]["x"].as_f64(), Some(3.0));
        assert_eq!(m["s"], "a");
    }

    #[test]
    fn an_ok_cell_wins_over_a_failed_run() {
        let runs = vec![
            json!({"c": {"err": "boom"}}),
            json!({"c": {"ok": {"x": 5.0}}}),
        ];
        let (m, _, _) = aggregate(&runs);
        assert_eq!(m["c"]["ok"]["x"].as_f64(), Some(5.0));
    }

    #[test]
    fn rotation_starts_each_run_with_the_next_engine() {
        assert_eq!(rotated(&["a", "b", "c"], 1), vec!["b", "c", "a"]);
        assert_eq!(rotated(&["a", "b", "c"], 3), vec!["a", "b", "c"]);
    }
}
