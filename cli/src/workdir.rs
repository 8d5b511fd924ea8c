//! `bench`'s log directory: the one given (empty or new) or a temporary one, cleaned up at
//! the end unless asked to keep it.

use std::path::{Path, PathBuf};

use crate::Failure;

/// Where the log lives and what to remove at the end.
pub struct Workdir {
    /// The log directory.
    pub path: PathBuf,
    created: bool,
    keep: bool,
}

impl Workdir {
    /// `dir`, which must be empty or new, or a new temporary directory without one. With
    /// `keep`, nothing is removed at the end.
    pub fn new(dir: Option<&Path>, keep: bool) -> Result<Self, Failure> {
        match dir {
            Some(d) => {
                if d.exists() {
                    let mut rd = std::fs::read_dir(d).map_err(|e| {
                        Failure::Error(format!("read directory {}: {e}", d.display()))
                    })?;
                    if rd.next().is_some() {
                        return Err(Failure::Error(format!(
                            "bench needs an empty or new directory: {} is not empty",
                            d.display()
                        )));
                    }
                    Ok(Workdir {
                        path: d.to_path_buf(),
                        created: false,
                        keep,
                    })
                } else {
                    std::fs::create_dir_all(d).map_err(|e| {
                        Failure::Error(format!("create directory {}: {e}", d.display()))
                    })?;
                    Ok(Workdir {
                        path: d.to_path_buf(),
                        created: true,
                        keep,
                    })
                }
            }
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0);
                let path = std::env::temp_dir().join(format!(
                    "raft-mmap-log-bench-{}-{nanos}",
                    std::process::id()
                ));
                std::fs::create_dir(&path).map_err(|e| {
                    Failure::Error(format!("create directory {}: {e}", path.display()))
                })?;
                Ok(Workdir {
                    path,
                    created: true,
                    keep,
                })
            }
        }
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if self.created {
            let _ = std::fs::remove_dir_all(&self.path);
        } else if let Ok(rd) = std::fs::read_dir(&self.path) {
            // Only what the log put there: the directory was empty before.
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}
