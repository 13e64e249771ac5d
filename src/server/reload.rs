//! `--reload` (development): the supervisor watches the folders of the app's source files and
//! replaces the processes, the SIGHUP way, when a `.py` file in one of them changes.
//!
//! The watching is inotify's, through the `notify` crate, on a thread of its own; its events are
//! only counted here and looked at by the supervisor's loop. Folders are watched one by one (not
//! recursively): the working directory and the module's folder from the start, then the folders
//! the server processes report their app's modules were loaded from (site-packages left out), so
//! a venv inside the project costs no watch.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

/// Changes closer together than this count as one edit (an editor's save is several events).
const SETTLE: Duration = Duration::from_millis(150);

/// The watcher, and what it has seen.
pub struct Reloader {
    watcher: notify::RecommendedWatcher,
    watched: HashSet<PathBuf>,
    /// `.py` changes seen so far.
    changes: Arc<AtomicU64>,
    /// The count when the last reload was started, and when the count last moved.
    seen: u64,
    moved_at: Option<(u64, Instant)>,
}

impl Reloader {
    /// Starts watching `folders`.
    pub fn start(folders: &[PathBuf]) -> notify::Result<Reloader> {
        let changes = Arc::new(AtomicU64::new(0));
        let counter = changes.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let edit =
                matches!(event.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_));
            if edit && event.paths.iter().any(|p| is_source(p)) {
                counter.fetch_add(1, SeqCst);
            }
        })?;
        let mut reloader = Reloader { watcher, watched: HashSet::new(), changes, seen: 0, moved_at: None };
        reloader.watch(folders);
        Ok(reloader)
    }

    /// Adds folders to the watch (those already watched, or gone, are skipped).
    pub fn watch(&mut self, folders: &[PathBuf]) {
        for f in folders {
            let Ok(f) = std::fs::canonicalize(f) else { continue };
            if self.watched.contains(&f) || !f.is_dir() {
                continue;
            }
            match self.watcher.watch(&f, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    crate::log::debug!("--reload: watching {}", f.display());
                    self.watched.insert(f);
                }
                Err(e) => crate::log::warning!("--reload: cannot watch {}: {e}", f.display()),
            }
        }
    }

    /// Whether the source changed and has been quiet for a moment since: time to reload. Each
    /// edit answers true once.
    pub fn changed(&mut self) -> bool {
        let now = self.changes.load(SeqCst);
        if now == self.seen {
            return false;
        }
        match self.moved_at {
            Some((count, at)) if count == now => {
                if at.elapsed() >= SETTLE {
                    self.seen = now;
                    self.moved_at = None;
                    return true;
                }
            }
            _ => self.moved_at = Some((now, Instant::now())),
        }
        false
    }
}

/// A Python source file (editors' temporary files, `.pyc` and the like are not).
pub fn is_source(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
        && path.file_name().is_some_and(|n| !n.to_string_lossy().starts_with(".#"))
}

/// The folders to watch before any process has reported: the working directory and the folder
/// of the module's file or package (`pkg.mod` is `pkg/mod.py` or `pkg/mod/`), relative to it.
pub fn initial_folders(module: &str) -> Vec<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut out = vec![cwd.clone()];
    let rel: PathBuf = module.split('.').collect();
    let package = cwd.join(&rel);
    if package.is_dir() {
        out.push(package);
    } else if let Some(parent) = cwd.join(rel.with_extension("py")).parent() {
        out.push(parent.to_path_buf());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        for (p, want) in [
            ("app.py", true),
            ("pkg/views.py", true),
            ("app.pyc", false),
            ("app.py~", false),
            (".#app.py", false),
            ("py", false),
        ] {
            assert_eq!(is_source(Path::new(p)), want, "{p}");
        }
    }

    #[test]
    fn an_edit_is_seen_once_it_settles() {
        let dir = std::env::temp_dir().join(format!("wsgo-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Reloader::start(std::slice::from_ref(&dir)).unwrap();
        std::fs::write(dir.join("notes.txt"), "x").unwrap();
        std::fs::write(dir.join("app.py"), "x = 1\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !r.changed() {
            assert!(Instant::now() < deadline, "no change seen");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(SETTLE * 2);
        assert!(!r.changed(), "one edit, one reload");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
