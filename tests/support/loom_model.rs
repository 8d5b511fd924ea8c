//! The loom runner the model-checking tests share (`tests/loom_*.rs`, each with
//! `#[path = "support/loom_model.rs"] mod loom_model;`).

/// Runs `f` under loom with at most three preemptions per execution (loom's usual bound:
/// enough for the races these models check, which need one or two), so that a check stays
/// in seconds. `LOOM_MAX_PREEMPTIONS` still overrides it.
pub fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}
