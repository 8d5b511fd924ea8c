//! Loop-mounted file-system images for `tests/filesystems.rs`: make, mount, fill, and always
//! unmount and detach (a Drop guard), or say why the case is skipped.

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_target, MIB};

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub(crate) fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// `name` in `PATH` or in the sbin directories (which a non-login root shell may lack).
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

pub(crate) fn run_tool(program: &Path, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "{} {:?}: {}: {}",
            program.display(),
            args,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Available bytes for an unprivileged writer (`f_bavail`), after `syncfs` so that btrfs has
/// committed what was written or freed.
pub(crate) fn avail(mnt: &Path) -> u64 {
    if let Ok(f) = std::fs::File::open(mnt) {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open descriptor.
        unsafe { libc::syncfs(f.as_raw_fd()) };
    }
    let c = CString::new(mnt.as_os_str().as_bytes()).unwrap();
    // SAFETY: zeroed statvfs is a valid out-parameter; `c` is a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(r, 0, "statvfs {}", mnt.display());
    st.f_bavail as u64 * st.f_frsize as u64
}

pub(crate) fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

/// A file system mounted for one test; unmounted and its loop device detached on drop (also
/// when the test panics).
pub(crate) struct Mounted {
    pub(crate) fs: &'static str,
    pub(crate) mnt: PathBuf,
    /// The loop device (`None` for tmpfs).
    dev: Option<String>,
    /// Whether `mnt` is mounted (a failed mount leaves only the loop device to detach).
    mounted: bool,
    // Dropped after `drop` ran: holds the image file and the mount point.
    _parent: tempfile::TempDir,
}

impl Mounted {
    /// Makes and mounts the file system, or says why the test cannot run here.
    pub(crate) fn new(fs: &'static str) -> Result<Mounted, String> {
        if !is_root() {
            return Err("not root (needs losetup and mount)".into());
        }
        let base = std::env::var_os("RML_FS_IMAGE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let parent = tempfile::Builder::new()
            .prefix(&format!("rml-fs-{fs}-"))
            .tempdir_in(&base)
            .map_err(|e| format!("temporary directory in {}: {e}", base.display()))?;
        let mnt = parent.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mount = find_tool("mount").ok_or("mount not found")?;
        if fs == "tmpfs" {
            let size = format!("size={}", free_target());
            run_tool(
                &mount,
                &[
                    "-t".as_ref(),
                    "tmpfs".as_ref(),
                    "-o".as_ref(),
                    size.as_ref(),
                    "tmpfs".as_ref(),
                    mnt.as_os_str(),
                ],
            )
            .map_err(|e| format!("mount tmpfs failed: {e}"))?;
            return Ok(Mounted {
                fs,
                mnt,
                dev: None,
                mounted: true,
                _parent: parent,
            });
        }
        let (mkfs_args, image_mib): (&[&str], u64) = match fs {
            // btrfs refuses images below ~110 MiB; 256 MiB keeps its block groups ordinary.
            "btrfs" => (&["-q", "-f"], 256),
            // xfsprogs >= 5.19 refuses file systems below 300 MiB.
            "xfs" => (&["-q", "-f"], 300),
            // No blocks reserved for root (we run as root and would get them).
            "ext4" => (&["-q", "-F", "-m", "0"], 64),
            _ => unreachable!(),
        };
        let mkfs_name = format!("mkfs.{fs}");
        let mkfs = find_tool(&mkfs_name).ok_or(format!("{mkfs_name} not installed"))?;
        let losetup = find_tool("losetup").ok_or("losetup not found")?;
        let image = parent.path().join(format!("{fs}.img"));
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(image_mib * MIB).unwrap();
        drop(f);
        let mut args: Vec<&std::ffi::OsStr> = mkfs_args.iter().map(|a| a.as_ref()).collect();
        args.push(image.as_os_str());
        // Installed but failing is a problem of this test (an image size), not a skip.
        if let Err(e) = run_tool(&mkfs, &args) {
            panic!("{mkfs_name} failed: {e}");
        }
        let dev = run_tool(
            &losetup,
            &["--find".as_ref(), "--show".as_ref(), image.as_os_str()],
        )
        .map_err(|e| format!("losetup failed: {e}"))?;
        let mut m = Mounted {
            fs,
            mnt,
            dev: Some(dev),
            mounted: false,
            _parent: parent,
        };
        m.mount().map_err(|e| format!("mount failed: {e}"))?;
        m.mounted = true;
        Ok(m)
    }

    pub(crate) fn mount(&self) -> Result<(), String> {
        let mount = find_tool("mount").unwrap();
        let dev = self.dev.as_deref().unwrap();
        run_tool(
            &mount,
            &[
                "-t".as_ref(),
                self.fs.as_ref(),
                dev.as_ref(),
                self.mnt.as_os_str(),
            ],
        )
        .map(|_| ())
    }

    pub(crate) fn umount(&self) -> Result<(), String> {
        let umount = find_tool("umount").ok_or("umount not found")?;
        run_tool(&umount, &[self.mnt.as_os_str()]).map(|_| ())
    }

    /// Unmounts and mounts again: what is read next comes from the device.
    pub(crate) fn remount(&self) {
        self.umount().expect("umount");
        self.mount().expect("mount");
    }

    /// Writes a filler file of non-zero data until about `free` bytes stay available.
    pub(crate) fn fill(&self, free: u64) -> u64 {
        let path = self.mnt.join("filler");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let chunk: Vec<u8> = (0..MIB as usize).map(|i| (i * 7 + 3) as u8).collect();
        for _ in 0..20 {
            let a = avail(&self.mnt);
            if a <= free + MIB {
                return a;
            }
            let mut todo = (a - free) / MIB;
            while todo > 0 {
                match f.write_all(&chunk) {
                    Ok(()) => todo -= 1,
                    // btrfs can estimate its free space high: full is as good as filled.
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return avail(&self.mnt),
                    Err(e) => panic!("write {}: {e}", path.display()),
                }
            }
            f.sync_all().unwrap();
        }
        avail(&self.mnt)
    }

    /// Makes room again: deletes the filler (tmpfs: grows the mount).
    pub(crate) fn free_space(&self) {
        if self.fs == "tmpfs" {
            let mount = find_tool("mount").unwrap();
            run_tool(
                &mount,
                &[
                    "-o".as_ref(),
                    "remount,size=256m".as_ref(),
                    self.mnt.as_os_str(),
                ],
            )
            .expect("grow tmpfs");
        } else {
            std::fs::remove_file(self.mnt.join("filler")).unwrap();
        }
        avail(&self.mnt);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mut unmounted = !self.mounted;
        for attempt in 0..5 {
            if unmounted {
                break;
            }
            if attempt > 0 {
                // Busy: a child that was just killed may still hold a file for a moment.
                std::thread::sleep(Duration::from_millis(200));
            }
            unmounted = self.umount().is_ok();
        }
        if !unmounted {
            eprintln!("umount {} failed; detaching it lazily", self.mnt.display());
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(dev) = &self.dev {
            // After a lazy unmount the device is still busy; -d then frees it when it is not.
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}
