//! Records the resolved versions of the compared crates (from the workspace Cargo.lock) so the
//! report names exactly what was measured.

fn main() {
    let lock =
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../Cargo.lock");
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    for (name, var) in [
        ("raft-mmap-log", "VER_OURS"),
        ("raft-log", "VER_RAFT_LOG"),
        ("raft-engine", "VER_RAFT_ENGINE"),
        ("raft-proto", "VER_RAFT_PROTO"),
        ("hiqlite-wal", "VER_HIQLITE_WAL"),
        ("okaywal", "VER_OKAYWAL"),
        ("openraft", "VER_OPENRAFT"),
    ] {
        let mut version = "unknown".to_string();
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            if l == format!("name = \"{name}\"") {
                if let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = ")) {
                    version = v.trim_matches('"').to_string();
                }
                break;
            }
        }
        println!("cargo:rustc-env={var}={version}");
    }
}
