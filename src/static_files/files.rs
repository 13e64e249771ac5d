//! Opening mapped files safely, and what each core thread remembers about them.
//!
//! Files are opened with `openat2(RESOLVE_BENEATH)` relative to the mapped folder, so neither
//! `..` nor a symbolic link can lead outside it, and without a race between a check and the
//! open. Opening is a blocking system call: it runs on a small shared thread pool, never on a
//! core thread. What was found (the open file, its metadata, and the contents of files up to
//! 64 KiB) is kept per core thread and re-checked at most once a second, so a hot file costs no
//! system call beyond the socket write, and a path with no file behind it (most app URLs under
//! `--static-map /=...`) costs no file-system call either.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::StaticMap;
use crate::http::date::{DATE_LEN, format_http_date};

/// How long what was learnt about a path is trusted before it is checked again.
pub const REVALIDATE: Duration = Duration::from_secs(1);
/// Files up to this size are kept in memory (and written from there); bigger ones keep their
/// descriptor and go out with `sendfile(2)`, the kernel moving the pages without a copy through
/// this process (1 MiB files: see README.md, "Performance").
pub const KEEP_FILE: u64 = 64 * 1024;
/// Memory one core thread may use for kept file contents.
pub const KEEP_BUDGET: usize = 32 << 20;
/// Paths remembered per core thread (found or not).
const MAX_SLOTS: usize = 8192;

/// One `--static-map` entry with its folder open.
pub struct Root {
    /// The URL prefix, without a trailing slash.
    pub prefix: Vec<u8>,
    /// The folder, canonical.
    pub dir: PathBuf,
    fd: OwnedFd,
}

/// The mapped folders, in command-line order.
pub struct Roots(pub Vec<Root>);

impl Roots {
    /// Opens every mapped folder (at start-up).
    pub fn open(maps: &[StaticMap]) -> io::Result<Roots> {
        let mut roots = Vec::new();
        for m in maps {
            let dir = File::open(&m.dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", m.dir.display())))?;
            roots.push(Root { prefix: m.prefix.clone(), dir: m.dir.clone(), fd: OwnedFd::from(dir) });
        }
        Ok(Roots(roots))
    }
}

/// A regular file found under a root.
#[derive(Debug)]
pub struct StaticFile {
    /// The open file, kept only when its contents are not: a file kept in memory holds no
    /// descriptor.
    pub file: Option<Arc<File>>,
    /// Its size in bytes.
    pub size: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime: u64,
    /// Strong entity tag: modification time and size, as nginx makes them.
    pub etag: Vec<u8>,
    /// Its modification time as an HTTP date.
    pub last_modified: [u8; DATE_LEN],
    /// The whole contents, when the file is small enough to keep.
    pub body: Option<Bytes>,
    ident: Ident,
}

/// The outcome of opening a path on the blocking pool.
enum Opened {
    /// No regular file there (missing, a folder, a device, outside the root).
    Nothing,
    /// The same file as before.
    Same,
    Found(StaticFile),
}

/// Opens `rel` beneath `root`; `None` when it is not a regular file inside the root.
pub fn open_beneath(root: &Root, rel: &[u8]) -> io::Result<Option<(File, std::fs::Metadata)>> {
    use crate::sys::fs::Beneath;
    let Ok(path) = CString::new(rel) else { return Ok(None) };
    let file = match crate::sys::fs::open_beneath(root.fd.as_raw_fd(), &path)? {
        Beneath::File(f) => f,
        Beneath::Nothing => return Ok(None),
        Beneath::Unsupported => match open_checked(root, rel)? {
            Some(f) => f,
            None => return Ok(None),
        },
    };
    let meta = file.metadata()?;
    Ok(meta.file_type().is_file().then_some((file, meta)))
}

/// Kernels before 5.6 have no openat2: resolve links, check the result is inside the root, then
/// open that path without following a link swapped in meanwhile.
fn open_checked(root: &Root, rel: &[u8]) -> io::Result<Option<File>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let joined = root.dir.join(std::ffi::OsStr::from_bytes(rel));
    let Ok(real) = std::fs::canonicalize(&joined) else { return Ok(None) };
    if !real.starts_with(&root.dir) {
        return Ok(None);
    }
    let flags = crate::sys::fs::OPEN_FLAGS | crate::sys::fs::NO_FOLLOW;
    match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&real) {
        Ok(f) => Ok(Some(f)),
        Err(_) => Ok(None),
    }
}

/// Opens and describes a file; reads it whole when it is small and memory allows.
fn open_file(root: &Root, rel: &[u8], previous: Option<Ident>, keep: u64) -> Opened {
    match open_beneath(root, rel) {
        Ok(Some((file, meta))) => describe(file, &meta, previous, keep),
        Ok(None) | Err(_) => Opened::Nothing,
    }
}

type Ident = (u64, u64, i64, i64, u64);

fn describe(file: File, meta: &std::fs::Metadata, previous: Option<Ident>, keep: u64) -> Opened {
    let ident = (meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.size());
    if previous == Some(ident) {
        return Opened::Same;
    }
    let size = meta.size();
    let body = if size <= keep.min(KEEP_FILE) {
        let mut buf = Vec::with_capacity(size as usize);
        match (&file).take(size).read_to_end(&mut buf) {
            Ok(_) if buf.len() as u64 == size => Some(Bytes::from(buf)),
            // Shrinking while being read, or unreadable: not servable now.
            _ => return Opened::Nothing,
        }
    } else {
        None
    };
    let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
    let etag = format!("\"{:x}-{:x}\"", mtime, size).into_bytes();
    Opened::Found(StaticFile {
        file: if body.is_some() { None } else { Some(Arc::new(file)) },
        size,
        mtime,
        etag,
        last_modified: format_http_date(mtime),
        body,
        ident,
    })
}

/// Opens a file an application named (X-Sendfile): absolute or relative to the working
/// directory, links followed, as the original. `None`: no regular file there.
pub async fn open_path(path: Vec<u8>) -> Option<Rc<StaticFile>> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let opened = monoio::spawn_blocking(move || {
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(&path));
        let flags = crate::sys::fs::OPEN_FLAGS;
        let file = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.file_type().is_file() {
            return None;
        }
        match describe(file, &meta, None, KEEP_FILE) {
            Opened::Found(f) => Some(f),
            _ => None,
        }
    })
    .await;
    opened.ok().flatten().map(Rc::new)
}

struct Slot {
    found: Option<Found>,
    checked: Instant,
}

/// A file and its `.gz` sibling, if it has one.
#[derive(Clone)]
pub struct Found {
    /// The file itself.
    pub file: Rc<StaticFile>,
    /// Its `.gz` sibling, if there is one.
    pub gz: Option<Rc<StaticFile>>,
}

type Slots = HashMap<Box<[u8]>, Slot>;

/// What one core thread knows about mapped paths: one map per root.
pub struct FileCache {
    roots: Arc<Roots>,
    slots: RefCell<Vec<Slots>>,
    kept: Cell<usize>,
}

impl FileCache {
    /// An empty cache over the open folders.
    pub fn new(roots: Arc<Roots>) -> FileCache {
        let slots = roots.0.iter().map(|_| HashMap::new()).collect();
        FileCache { roots, slots: RefCell::new(slots), kept: Cell::new(0) }
    }

    /// The mapped folders.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// The regular file at `rel` under root `index` and its `.gz` sibling, if there is one.
    pub async fn lookup(&self, index: usize, rel: &[u8]) -> Option<Found> {
        let now = Instant::now();
        let previous = {
            let slots = self.slots.borrow();
            match slots.get(index)?.get(rel) {
                Some(s) if now.duration_since(s.checked) < REVALIDATE => return s.found.clone(),
                Some(s) => s.found.clone(),
                None => None,
            }
        };
        let roots = self.roots.clone();
        let owned = rel.to_vec();
        let idents = previous.as_ref().map(|f| (f.file.ident, f.gz.as_ref().map(|g| g.ident)));
        let keep = KEEP_BUDGET.saturating_sub(self.kept.get()) as u64;
        let opened = monoio::spawn_blocking(move || {
            let root = &roots.0[index];
            let file = open_file(root, &owned, idents.map(|i| i.0), keep);
            let mut gz_name = owned;
            gz_name.extend_from_slice(b".gz");
            let gz = match file {
                Opened::Nothing => Opened::Nothing,
                _ => open_file(root, &gz_name, idents.and_then(|i| i.1), keep),
            };
            (file, gz)
        })
        .await;
        let Ok((file, gz)) = opened else {
            // The pool dropped the task: say nothing is there, and don't remember it.
            return None;
        };
        let pick = |o: Opened, old: Option<Rc<StaticFile>>| match o {
            Opened::Same => old,
            Opened::Found(f) => Some(Rc::new(f)),
            Opened::Nothing => None,
        };
        let found = pick(file, previous.as_ref().map(|p| p.file.clone()))
            .map(|file| Found { file, gz: pick(gz, previous.and_then(|p| p.gz)) });
        self.remember(index, rel, found.clone(), Instant::now());
        found
    }

    fn remember(&self, index: usize, rel: &[u8], found: Option<Found>, checked: Instant) {
        let mut all = self.slots.borrow_mut();
        let Some(slots) = all.get_mut(index) else { return };
        if slots.len() >= MAX_SLOTS {
            // Forget what is due for a check anyway; if that is not enough, forget everything.
            slots.retain(|_, s| checked.duration_since(s.checked) < REVALIDATE);
            if slots.len() >= MAX_SLOTS {
                slots.clear();
            }
            self.kept.set(all.iter().flat_map(|m| m.values()).map(|s| kept_len(&s.found)).sum());
        }
        let Some(slots) = all.get_mut(index) else { return };
        let added = kept_len(&found);
        let removed =
            slots.insert(Box::from(rel), Slot { found, checked }).map_or(0, |old| kept_len(&old.found));
        self.kept.set((self.kept.get() + added).saturating_sub(removed));
    }
}

fn kept_len(found: &Option<Found>) -> usize {
    let len = |f: &Rc<StaticFile>| f.body.as_ref().map_or(0, Bytes::len);
    found.as_ref().map_or(0, |f| len(&f.file) + f.gz.as_ref().map_or(0, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A folder removed when dropped.
    pub(crate) struct TempDir {
        pub path: PathBuf,
    }

    impl TempDir {
        fn new() -> TempDir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let name = format!("wsgo-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(name);
            std::fs::create_dir_all(&path).unwrap();
            TempDir { path }
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }

    fn tree() -> (TempDir, Root) {
        let d = TempDir::new();
        let root_dir = d.path.join("root");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::write(root_dir.join("a.txt"), "hello txt\n").unwrap();
        std::fs::write(root_dir.join("sub/b.css"), "b{}").unwrap();
        std::fs::write(d.path.join("secret"), "secret").unwrap();
        symlink("../secret", root_dir.join("escape")).unwrap();
        symlink(d.path.join("secret"), root_dir.join("abs_escape")).unwrap();
        symlink("sub/b.css", root_dir.join("inside")).unwrap();
        symlink("/etc", root_dir.join("etc")).unwrap();
        let fifo = CString::new(root_dir.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let root_dir = std::fs::canonicalize(root_dir).unwrap();
        let root = Roots::open(&[StaticMap { prefix: Vec::new(), dir: root_dir }]).unwrap().0.remove(0);
        (d, root)
    }

    #[test]
    fn opens_only_regular_files_inside_the_root() {
        let (_d, root) = tree();
        let table: &[(&str, Option<&str>)] = &[
            ("a.txt", Some("hello txt\n")),
            ("sub/b.css", Some("b{}")),
            ("inside", Some("b{}")),
            ("escape", None),
            ("abs_escape", None),
            ("etc/hostname", None),
            ("sub", None),
            ("fifo", None),
            ("missing", None),
            ("a.txt/x", None),
            ("../secret", None),
        ];
        for (rel, want) in table {
            let got = match open_file(&root, rel.as_bytes(), None, KEEP_FILE) {
                Opened::Found(f) => Some(String::from_utf8(f.body.unwrap().to_vec()).unwrap()),
                Opened::Nothing => None,
                Opened::Same => panic!("no previous"),
            };
            assert_eq!(got.as_deref(), *want, "{rel}");
        }
    }

    #[test]
    fn revalidation_sees_the_same_file_and_big_files_are_not_kept() {
        let (_d, root) = tree();
        let Opened::Found(f) = open_file(&root, b"a.txt", None, KEEP_FILE) else { panic!() };
        assert_eq!(f.size, 10);
        assert!(f.etag.starts_with(b"\"") && f.etag.ends_with(b"-a\""));
        assert!(matches!(open_file(&root, b"a.txt", Some(f.ident), KEEP_FILE), Opened::Same));
        let Opened::Found(big) = open_file(&root, b"a.txt", None, 4) else { panic!() };
        assert!(big.body.is_none());
        assert_eq!(big.size, 10);
    }
}
