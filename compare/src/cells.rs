//! The parent side shared by the cluster benchmarks (`cluster`, `openraft-cluster`): every
//! (run, G, backend) cell in its own child process, in a fresh directory, with the backend
//! order rotated from cell to cell and run to run, and the machine settled between children.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::groups::{run_for_result, settle};

/// What a benchmark's parent runs: its subcommand, backends, G values and runs.
pub struct Plan<'a> {
    /// The subcommand (`cluster`, `openraft-cluster`), also the children's first argument.
    pub mode: &'a str,
    pub backends: &'a [&'a str],
    pub groups: &'a [u64],
    pub runs: usize,
    pub timeout: Duration,
}

/// Runs every cell: `args(backend, g, dir)` gives the child's arguments after
/// `MODE --child BACKEND` (its directory `dir` is fresh and removed afterwards), `line` one
/// line of progress from a result. Returns `results["G=g"][backend] = [one result per run]`.
pub fn run_all(
    plan: &Plan<'_>,
    root: &Path,
    args: impl Fn(&str, u64, &Path) -> Vec<String>,
    line: impl Fn(&Value) -> String,
) -> Map<String, Value> {
    let mut results = Map::new();
    let n = plan.backends.len();
    for run in 0..plan.runs {
        for (gi, &g) in plan.groups.iter().enumerate() {
            for j in 0..n {
                let backend = plan.backends[(j + run + gi) % n];
                let dir = root.join(format!("run{run}-{backend}-{g}"));
                let _ = std::fs::create_dir_all(&dir);
                let mut argv: Vec<String> =
                    vec![plan.mode.into(), "--child".into(), backend.into()];
                argv.extend(args(backend, g, &dir));
                let v = run_for_result(&argv, plan.timeout);
                let _ = std::fs::remove_dir_all(&dir);
                settle();
                eprintln!(
                    "compare {}: run {}/{} G = {g:<3} {backend:<12} {}",
                    plan.mode,
                    run + 1,
                    plan.runs,
                    line(&v)
                );
                let by_backend = results.entry(format!("G={g}")).or_insert_with(|| json!({}));
                if let Value::Object(m) = by_backend {
                    if let Value::Array(a) =
                        m.entry(backend.to_string()).or_insert_with(|| json!([]))
                    {
                        a.push(v);
                    }
                }
            }
        }
    }
    results
}
