//! Free disk space under the data directory. Below the operator's floor
//! (`mostro.min_free_disk_mb`) the box takes no new work: new orders and takes get a `cant-do`,
//! and the relay keeps only requests to the node, so trades already under way can still finish
//! with the space left. redb and LDK never get to write on a full disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the free space is read.
const EVERY: Duration = Duration::from_secs(2);

/// Whether the data directory's disk is below its floor. Cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct DiskGuard {
    dir: PathBuf,
    floor: u64,
    low: Arc<AtomicBool>,
}

impl DiskGuard {
    /// A guard for `dir` with a floor of `floor_mb` MB, read once now.
    pub fn new(dir: &Path, floor_mb: u64) -> Self {
        let g = Self {
            dir: dir.to_path_buf(),
            floor: floor_mb * 1024 * 1024,
            low: Arc::default(),
        };
        g.check();
        g
    }

    /// True while free space is under the floor.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// Bytes free for this user under the data directory (None if the system will not say).
    pub fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.dir)
    }

    /// Reads the free space, records whether it is low, and tells the operator when that
    /// changes.
    pub fn check(&self) -> bool {
        let Some(free) = self.free_bytes() else {
            return false;
        };
        let low = free < self.floor;
        let was = self.low.swap(low, Ordering::Relaxed);
        let mb = |b: u64| b / (1024 * 1024);
        if low && !was {
            tracing::error!(
                "disk almost full: {} MB free under {}, the floor is {} MB; new orders are refused until there is more. Free some space (or move the data directory to a bigger disk)",
                mb(free),
                self.dir.display(),
                mb(self.floor)
            );
        } else if was && !low {
            tracing::info!(
                "disk space back: {} MB free; taking new orders again",
                mb(free)
            );
        }
        low
    }

    /// Reads the free space every 2 seconds until the process ends.
    pub async fn watch(self) {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tick.tick().await;
            self.check();
        }
    }
}

/// Bytes free for this user on the disk that holds `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid C string and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_is_low_and_zero_is_not() {
        let dir = std::env::temp_dir();
        assert!(DiskGuard::new(&dir, 0).free_bytes().unwrap() > 0);
        assert!(!DiskGuard::new(&dir, 0).is_low());
        assert!(DiskGuard::new(&dir, u64::MAX / (1 << 21)).is_low());
    }
}
