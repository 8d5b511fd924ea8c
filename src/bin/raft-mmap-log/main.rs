//! Command-line tool (work in progress in this commit).
fn main() {
    eprintln!("raft-mmap-log: no command yet");
    std::process::exit(2);
}
