//! Temp files and folders that an interrupted run must not leave behind: outputs are written to
//! `.bartleby-*` temps beside their target and renamed into place; on SIGINT, SIGTERM or SIGHUP
//! the handler installed by [`install`] removes the temps still registered and exits 130.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PATHS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temp file or folder to remove if the process is interrupted.
pub fn register(path: &Path) {
    if let Ok(mut paths) = PATHS.lock() {
        paths.push(path.to_path_buf());
    }
}

/// `path` was renamed into place or removed.
pub fn unregister(path: &Path) {
    if let Ok(mut paths) = PATHS.lock() {
        paths.retain(|p| p != path);
    }
}

/// Installs the handler (once, at start-up).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if let Ok(paths) = PATHS.lock() {
            for p in paths.iter() {
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(p);
                } else {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
        eprintln!("error: interrupted; partial outputs removed");
        std::process::exit(130);
    });
}
