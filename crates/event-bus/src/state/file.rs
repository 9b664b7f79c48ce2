use async_trait::async_trait;
use event_core::{Error, Result, StateStore, SubscriptionRecord};
use std::hash::{BuildHasher as _, RandomState};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

mod format;
mod lock;

use format::{FORMAT_VERSION, parse};
use lock::Seen;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Persists subscriptions in a JSON file.
///
/// The file is `{"version": 1, "subscriptions": [<SubscriptionRecord>...]}`.
/// Loading also accepts a bare array of records and an object mapping
/// subscriber ids to records (older layouts).
///
/// A load never returns less than the file holds (the bus saves what it
/// loaded, so whatever a load passed over, the next save would erase):
///
/// - a key given twice in one JSON object (readers keep the last) is
///   refused, in every layout;
/// - in the versioned layout, a field this library does not read (`"max_deliver"`
///   for `"maxDeliver"`, a typo, a field of a newer library) is refused,
///   naming it, the JSON pointer of the object holding it and the field it
///   may have meant; so is `"version": 0`. Known fields written out at their
///   default (`"maxDeliver": null`, `"options": null`) load;
/// - the older layouts, written by earlier libraries that stored fields
///   this one never read, still load when they hold such fields, with a
///   warning naming them (the next save drops them).
///
/// - **Atomic.** `save` writes a temporary file in the same directory,
///   fsyncs it, renames it over the state file and fsyncs the directory:
///   after a crash the file holds the old set or the new one, never a torn
///   mix.
/// - **One store at a time.** Each save writes the whole set, so two
///   stores saving to one file would erase each other's subscriptions. The
///   first load or save takes an exclusive advisory lock on
///   `.{file name}.lock` next to the state file (created if missing, never
///   deleted; one this user may not write, left by another user, is opened
///   for reading, which locks as well), held until the store and all its
///   clones are dropped (or the process exits). Another store on the
///   file, in this process or another, even by another path (a symbolic
///   link), gets [`Error::Conflict`] from each load and save, and the file
///   is left as it was; once the holder is gone, its next load or save
///   takes the lock (a child process the holder forked keeps the lock
///   until it starts its program, a moment later). Clones share the lock:
///   give the store to one bus only. On a file system that cannot lock
///   (no lock support, or an NFS mount whose lock service is not running),
///   the store works unlocked and logs a warning once.
/// - **Read-only locations.** Where the store cannot create the lock file
///   (a read-only volume, a directory this user may not write), a load
///   reads the file without the lock and logs a warning: the lock guards
///   against saves, and none can happen there. Saves fail with
///   [`Error::Io`] and leave the file as it was; once the location is
///   writable, the next load or save takes the lock. A save that takes it
///   finds the file as the store last loaded it, or is refused with
///   [`Error::Conflict`] and leaves it as it is: another store took the
///   lock first and saved, and this store's set, built on the older file,
///   would erase what that one wrote. A load then takes the lock and reads
///   the file as it is now.
/// - **Off the executor.** File I/O, the lock's included, runs on tokio's
///   blocking pool.
/// - **Ordered.** Saves through one store (and its clones) land in the
///   order they were issued, even when a caller stopped waiting for one.
/// - **Crashes.** A save writes a temporary file next to the state file
///   and renames it over the state file, so a crash leaves the old state or
///   the new, never a mix. The temporary file of a save a crash cut short
///   is removed by the next store that takes the lock.
/// - **In place.** The new file keeps the old one's permissions; a symbolic
///   link is followed (once, when the lock is taken: the store then keeps
///   to the file it locked) and stays a link.
/// - **Files it cannot read.** A file that is not valid state (including
///   the refusals above) is an error naming the file
///   ([`Error::Serialization`]); an unreadable one is [`Error::Io`] naming
///   it (a directory too); a special file (a FIFO, a device such as
///   `/dev/zero`, a socket) is [`Error::InvalidConfig`] from loads and
///   saves alike, before anything is read or written. Nothing is loaded,
///   and the file is left untouched either way. A missing file loads as no
///   subscriptions.
/// - **Rollbacks.** A file written by a newer version (a higher format
///   version, or a field this version does not know) is refused the same
///   way, and the error says so: rolling back past a version that wrote
///   new state needs that state removed (or the file), since this version
///   would drop what it cannot read on its next save.
///
/// ```no_run
/// use event_bus::{EventBus, state::FileStateStore};
/// use std::sync::Arc;
///
/// # async fn demo(bus: EventBus) -> event_core::Result<()> {
/// bus.set_state_store(Arc::new(FileStateStore::new("/var/lib/app/subscriptions.json"))).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileStateStore {
    path: PathBuf,
    shared: Arc<Shared>,
}

/// What a store shares with its clones.
#[derive(Debug, Default)]
struct Shared {
    order: WriteOrder,
    ownership: lock::Ownership,
}

/// Orders the writes of one store (and its clones): a save whose caller
/// stopped waiting still runs on the blocking pool, and must not land after
/// a save that was issued later.
#[derive(Debug, Default)]
struct WriteOrder {
    /// Ticket of the next save.
    next: AtomicU64,
    /// Ticket of the save whose state is in the file; held while writing.
    written: Mutex<u64>,
}

impl FileStateStore {
    /// A store at `path` (created on the first save; its directory and lock
    /// file on the first load or save).
    ///
    /// Nothing is touched until then. The first load or save locks the file
    /// for this store and its clones, until the last of them is dropped:
    /// another store on the file, in this process or another, gets
    /// [`Error::Conflict`] meanwhile (see the [type docs](Self)). If
    /// `path` is a symbolic link, the lock is taken next to the file it
    /// points to, saves replace that file, and the link stays. A relative
    /// `path` is taken from the working directory of the first load or
    /// save, and the store keeps to that file. Saves through one store and
    /// its clones land in the order they were issued.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            shared: Arc::default(),
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn io_error(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}

fn join_error(path: &Path, err: tokio::task::JoinError) -> Error {
    io_error(
        format!("state file {}: blocking task failed", path.display()),
        std::io::Error::other(err.to_string()),
    )
}

/// Longest chain of symbolic links followed (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// The file a save must replace: `path`, or what it points to if it is a
/// symbolic link (renaming over the link would replace the link itself and
/// leave its target stale). A dangling link resolves to its target, which
/// the save creates.
fn resolve_symlinks(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&current).map_err(|e| {
                    io_error(
                        format!("reading the link {} to the state file", current.display()),
                        e,
                    )
                })?;
                current = match current.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            // a regular file, a missing one, or one whose metadata cannot be
            // read (the write reports that)
            _ => return Ok(current),
        }
    }
    Err(io_error(
        format!("state file {}", path.display()),
        std::io::Error::other(format!("more than {MAX_SYMLINKS} symbolic links")),
    ))
}

/// Attempts at a fresh temporary file name before giving up.
const TEMP_ATTEMPTS: usize = 64;

/// Creates a new temporary file next to the state file.
///
/// The name carries the pid, a random number drawn once per process and a
/// counter: a file left by a crashed process that had the same pid (pid 1 in
/// a container, restarted) or by another process with the same pid (another
/// container sharing the volume) does not collide with it. A name that is
/// taken anyway is skipped, never opened or removed.
///
/// With `permissions` (the state file's, on unix), the file is created
/// with them (less what the umask removes), never with more: the state of
/// a file only its owner may read is never in a file others could open.
fn create_temp(
    dir: &Path,
    file_name: &str,
    permissions: Option<&std::fs::Permissions>,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if let Some(permissions) = permissions {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        options.mode(permissions.mode() & 0o777);
    }
    #[cfg(not(unix))]
    let _ = permissions;
    static NONCE: OnceLock<u64> = OnceLock::new();
    let nonce = *NONCE.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(
            ".{file_name}.tmp-{}-{nonce:016x}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!(
            "{TEMP_ATTEMPTS} temporary file names in {} are taken",
            dir.display()
        ),
    ))
}

/// Removes the temporary files of saves that never finished (the process
/// was killed between creating one and renaming it over the state file)
/// next to `target`, so that a crash loop does not pile them up. Called
/// only with the lock held, when no other store can be writing one.
/// Best effort: a file that cannot be removed is logged and left.
fn remove_stale_temps(target: &Path) {
    let Ok(name) = file_name(target) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    let dir = parent_dir(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(is_temp_suffix)
            && entry.file_type().is_ok_and(|t| t.is_file());
        if !is_temp {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => tracing::info!(
                file = %entry.path().display(),
                "removed the temporary file of a state save that never finished"
            ),
            Err(err) => tracing::warn!(
                file = %entry.path().display(),
                error = %err,
                "could not remove the temporary file of an unfinished state save"
            ),
        }
    }
}

/// Whether `suffix`, what follows `.{name}.tmp-` in a file name, is one
/// [`create_temp`] writes (`<pid>-<16 hex digits>-<counter>`) or earlier
/// versions wrote (`<pid>-<counter>`). Anything else is another file: the
/// lock file or a temporary file of a state file whose own name starts
/// with `{name}.tmp-` (`state.json.tmp-b` next to `state.json`).
fn is_temp_suffix(suffix: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = suffix.split('-').collect();
    match parts.as_slice() {
        [pid, nonce, counter] => {
            digits(pid)
                && nonce.len() == 16
                && nonce.bytes().all(|b| b.is_ascii_hexdigit())
                && digits(counter)
        }
        [pid, counter] => digits(pid) && digits(counter),
        _ => false,
    }
}

/// The directory of `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The bytes of the state file `target` (`path` as the store was given
/// it, for errors), `None` if it is missing; a special file is refused
/// before anything is read ([`check_not_special`]).
fn read_state(target: &Path, path: &Path) -> Result<Option<Vec<u8>>> {
    check_not_special(target)?;
    match std::fs::read(target) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_error(
            format!("reading state file {}", path.display()),
            err,
        )),
    }
}

/// Refuses a state file `path` that is a special file (a FIFO, a device, a
/// socket): reading a FIFO waits for a writer, reading `/dev/zero` never
/// ends, and a save would replace it. (A directory fails to read and to be
/// replaced, an [`Error::Io`] naming it.)
fn check_not_special(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else {
        // missing (loads as empty), or unreadable: the read says why
        return Ok(());
    };
    let file_type = meta.file_type();
    if file_type.is_file() || file_type.is_dir() {
        return Ok(());
    }
    let kind = special_kind(&file_type);
    Err(Error::invalid_config(
        "state file",
        format!(
            "{} is {kind}, not a regular file (left untouched): give the store the path of a file",
            path.display()
        ),
    ))
}

#[cfg(unix)]
fn special_kind(file_type: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_file_type: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// The file name of the state file `path`.
fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::invalid_config("state file", format!("{} has no file name", path.display()))
        })
}

/// Creates `dir`, the directory of the state file `path`, with its missing
/// ancestors.
fn create_dir(dir: &Path, path: &Path) -> Result<()> {
    create_dir_synced(dir).map_err(|e| {
        io_error(
            format!("creating the directory of state file {}", path.display()),
            e,
        )
    })
}

/// Creates `dir` with its missing ancestors, and syncs the directories
/// that hold the new entries.
fn create_dir_synced(dir: &Path) -> std::io::Result<()> {
    // directories this call creates, deepest first
    let created: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(dir)?;
    // a new directory's entry lives in its parent: sync those too, or a
    // power loss could take the directory, and the state file in it, away
    for new_dir in &created {
        let parent = match new_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        if let Err(err) = sync_dir(parent) {
            tracing::warn!(dir = %parent.display(), error = %err, "could not sync a directory");
        }
    }
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = parent_dir(path);
    create_dir(&dir, path)?;
    let file_name = file_name(path)?;
    let old = std::fs::metadata(path).ok().map(|meta| meta.permissions());
    let (tmp, mut file) = create_temp(&dir, &file_name, old.as_ref())
        .map_err(|e| io_error(format!("writing state file {}", path.display()), e))?;
    let written = (|| -> std::io::Result<()> {
        // the replacement keeps the permissions the user gave the file (a
        // file system that cannot set them still gets the new state); it
        // was created with no more than those, and gets exactly those
        // before anything is written
        if let Some(permissions) = old
            && let Err(err) = file.set_permissions(permissions)
        {
            tracing::warn!(
                path = %path.display(),
                error = %err,
                "could not give the new state file the permissions of the old one"
            );
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = written {
        // best effort: do not leave our temporary file behind
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(
            format!("writing state file {}", path.display()),
            err,
        ));
    }
    // The new file is in place (readers see it); only the durability of the
    // rename is in doubt. Reporting an error here would make the caller
    // believe the old state is still current, so warn instead.
    if let Err(err) = sync_dir(&dir) {
        tracing::warn!(
            path = %path.display(),
            error = %err,
            "state file replaced, but syncing its directory failed: the rename may not survive a power loss"
        );
    }
    Ok(())
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Directories cannot be opened for syncing on this platform; the rename
    // is made durable by the file system.
    Ok(())
}

#[async_trait]
impl StateStore for FileStateStore {
    async fn load(&self) -> Result<Vec<SubscriptionRecord>> {
        let path = self.path.clone();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let target = shared.ownership.target(&path, lock::Access::Read)?;
            let read = read_state(&target.path, &path)?;
            if !target.claimed {
                shared.ownership.read_unclaimed(Seen::of(read.as_deref()));
            }
            match read {
                Some(bytes) => parse(&path, &bytes),
                None => Ok(Vec::new()),
            }
        })
        .await
        .map_err(|e| join_error(&self.path, e))?
    }

    async fn save(&self, subscriptions: &[SubscriptionRecord]) -> Result<()> {
        let body = serde_json::json!({
            "version": FORMAT_VERSION,
            "subscriptions": subscriptions,
        });
        let bytes = serde_json::to_vec_pretty(&body)?;
        let path = self.path.clone();
        let shared = self.shared.clone();
        let ticket = shared.order.next.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::task::spawn_blocking(move || {
            let target = shared.ownership.target(&path, lock::Access::Write)?.path;
            let mut written = shared
                .order
                .written
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if *written > ticket {
                // a later save is already in the file
                return Ok(());
            }
            check_not_special(&target)?;
            write_atomically(&target, &bytes)?;
            *written = ticket;
            Ok(())
        })
        .await
        .map_err(|e| join_error(&self.path, e))?
    }

    /// `"state file <path>"`.
    fn location(&self) -> String {
        format!("state file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_core::{SubscribeOptions, SubscriptionFilter};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "a3s-event-bus-state-{name}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn record(id: &str, options: Option<SubscribeOptions>) -> SubscriptionRecord {
        SubscriptionRecord {
            filter: SubscriptionFilter {
                subscriber_id: id.into(),
                subjects: vec!["events.market.>".into()],
                durable: true,
            },
            options,
        }
    }

    /// A FIFO at the path made a load wait for a writer (here: for ever,
    /// until the bus's timeout), and a save replaced it with a file. Both
    /// are refused, naming the path and what is there, and it is left as
    /// it is.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_fifo_at_the_path_is_refused_and_left_alone() {
        use std::os::unix::fs::FileTypeExt as _;
        let dir = temp_dir("special");
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("state.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let store = FileStateStore::new(&fifo);
        assert_eq!(store.location(), format!("state file {}", fifo.display()));
        let wait = std::time::Duration::from_secs(10);
        let Ok(loaded) = tokio::time::timeout(wait, store.load()).await else {
            // end the read stuck on the FIFO (the runtime waits for its
            // blocking threads when the test ends): open and close the
            // writing end, which the reader sees as the end of the file
            drop(std::fs::OpenOptions::new().write(true).open(&fifo));
            panic!("a load of a FIFO waited for a writer");
        };
        let err = loaded.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&fifo.display().to_string()), "{text}");
        assert!(text.contains("a FIFO"), "{text}");
        let err = store.save(&[record("a", None)]).await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The temporary file is created with no more permissions than the
    /// state file it replaces (it was created under the umask, 0644 here,
    /// and narrowed only later, so a reader could open it in between and
    /// read the new state through that handle).
    #[cfg(unix)]
    #[test]
    fn the_temporary_file_is_created_with_no_more_than_the_state_files_permissions() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("temp-mode");
        std::fs::create_dir_all(&dir).unwrap();
        let private = std::fs::Permissions::from_mode(0o600);
        let (tmp, file) = create_temp(&dir, "state.json", Some(&private)).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_file(tmp).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn missing_file_loads_empty_and_save_round_trips() {
        let dir = temp_dir("rt");
        let store = FileStateStore::new(dir.join("nested/state.json"));
        assert!(store.load().await.unwrap().is_empty());
        let records = vec![
            record("a", None),
            record(
                "b",
                Some(SubscribeOptions {
                    max_deliver: Some(3),
                    ..Default::default()
                }),
            ),
        ];
        store.save(&records).await.unwrap();
        assert_eq!(store.load().await.unwrap(), records);
        store.save(&records[..1]).await.unwrap();
        assert_eq!(store.load().await.unwrap(), records[..1]);
        // no temporary files left behind, only the lock file
        let mut names: Vec<_> = std::fs::read_dir(dir.join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, [".state.json.lock", "state.json"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A process killed between creating a save's temporary file and
    /// renaming it left the file behind; a crash loop piled them up. The
    /// store that takes the lock next removes them, and nothing else.
    #[tokio::test]
    async fn temporary_files_of_unfinished_saves_are_removed_with_the_lock() {
        let dir = temp_dir("stale-temps");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        // another store's files: `state.json.tmp-b` is a state file too
        let keep = [
            ".other.json.tmp-7-0123456789abcdef-0",
            "state.json.tmp-not-ours",
            "notes",
            ".state.json.tmp-b.lock",
            ".state.json.tmp-b.tmp-7-0123456789abcdef-0",
            ".state.json.tmp-7-0123456789abcdef-0.partial",
        ];
        for name in [
            ".state.json.tmp-4242-0123456789abcdef-0",
            ".state.json.tmp-1-5",
        ]
        .iter()
        .chain(&keep)
        {
            std::fs::write(dir.join(name), b"{\"half\": ").unwrap();
        }
        let records = vec![record("a", None)];
        let store = FileStateStore::new(&path);
        store.save(&records).await.unwrap();
        assert_eq!(store.load().await.unwrap(), records);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut expected = vec![".state.json.lock", "state.json"];
        expected.extend(keep);
        expected.sort();
        assert_eq!(names, expected);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn corrupt_file_is_a_clear_error_and_left_untouched() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let deep = "[".repeat(100_000);
        let truncated = b"{\"version\": 1, \"subscriptions\": [{\"subscriberId\": \"a\", \"subj";
        for body in [
            &b"{not json"[..],
            b"",
            b"42",
            b"{\"version\": 1, \"subscriptions\": [{\"subscriberId\": 5}]}",
            b"{\"version\": 99, \"subscriptions\": []}",
            // not UTF-8, a byte-order mark, zeros from a lost write, nesting
            // deeper than any parser stack, a torn write
            b"\xff\xfe{\x00}",
            b"\xef\xbb\xbf{\"version\": 1, \"subscriptions\": []}",
            &[0u8; 4096],
            deep.as_bytes(),
            truncated,
        ] {
            std::fs::write(&path, body).unwrap();
            let err = load_fresh(&path).await.unwrap_err();
            assert!(matches!(err, Error::Serialization(_)), "{err}");
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), body);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn older_layouts_load() {
        let dir = temp_dir("legacy");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        std::fs::write(
            &path,
            r#"[{"subscriberId":"a","subjects":["events.market.>"],"durable":true}]"#,
        )
        .unwrap();
        assert_eq!(load_fresh(&path).await.unwrap(), vec![record("a", None)]);
        std::fs::write(
            &path,
            r#"{"a":{"subscriberId":"a","subjects":["events.market.>"],"durable":true}}"#,
        )
        .unwrap();
        assert_eq!(load_fresh(&path).await.unwrap(), vec![record("a", None)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The original library (0.3/0.4) wrote the ack wait and the backoff in
    /// seconds (`ackWaitSecs`, `backoffSecs`) and passed JetStream's
    /// "unlimited" `maxDeliver: -1` through: its files load with those
    /// options as they were meant, in both of its layouts, and the next
    /// save writes them under this library's names.
    #[tokio::test]
    async fn the_original_librarys_option_names_and_units_load_as_meant() {
        use std::time::Duration;
        let dir = temp_dir("v04");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let old = r#"{"subscriberId":"billing","subjects":["events.market.>"],"durable":true,
            "options":{"maxDeliver":5,"backoffSecs":[1,5,30],"maxAckPending":100,
            "deliverPolicy":{"type":"new"},"ackWaitSecs":60}}"#;
        let expected = SubscribeOptions {
            max_deliver: Some(5),
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            max_ack_pending: Some(100),
            deliver_policy: event_core::DeliverPolicy::New,
            ack_wait: Some(Duration::from_secs(60)),
        };
        for body in [format!("[{old}]"), format!(r#"{{"billing":{old}}}"#)] {
            std::fs::write(&path, &body).unwrap();
            let store = FileStateStore::new(&path);
            let loaded = load_once_free(&store).await;
            assert_eq!(loaded, vec![record("billing", Some(expected.clone()))]);
            // written back under this library's names, and read the same
            store.save(&loaded).await.unwrap();
            let saved = std::fs::read_to_string(&path).unwrap();
            let json: serde_json::Value = serde_json::from_str(&saved).unwrap();
            assert_eq!(
                json.pointer("/subscriptions/0/options/ackWaitMs"),
                Some(&serde_json::json!(60_000)),
                "{saved}"
            );
            assert!(!saved.contains("Secs"), "{saved}");
            assert_eq!(store.load().await.unwrap(), loaded);
        }
        // JetStream's special values keep their meaning: unlimited
        // deliveries and pending acks, the default ack wait and limit
        for (options, expected) in [
            (r#"{"maxDeliver":-1}"#, SubscribeOptions::default()),
            (
                r#"{"maxDeliver":0,"ackWaitSecs":0,"maxAckPending":0}"#,
                SubscribeOptions::default(),
            ),
            (
                r#"{"maxAckPending":-1}"#,
                SubscribeOptions {
                    max_ack_pending: Some(u64::MAX),
                    ..SubscribeOptions::default()
                },
            ),
        ] {
            std::fs::write(
                &path,
                format!(
                    r#"[{{"subscriberId":"a","subjects":["events.market.>"],"durable":true,"options":{options}}}]"#
                ),
            )
            .unwrap();
            assert_eq!(
                load_fresh(&path).await.unwrap(),
                vec![record("a", Some(expected))],
                "{options}"
            );
        }
        // what cannot be converted is refused, naming it; the file is kept
        for (options, named) in [
            (r#"{"ackWaitSecs":60,"ackWaitMs":1000}"#, "ackWaitMs"),
            (r#"{"ackWaitSecs":-1}"#, "ackWaitSecs"),
            (r#"{"backoffSecs":[1,"5"]}"#, "backoffSecs"),
            (r#"{"backoffSecs":5}"#, "backoffSecs"),
            (r#"{"ackWaitSecs":18446744073709551615}"#, "ackWaitSecs"),
        ] {
            let body = format!(
                r#"[{{"subscriberId":"a","subjects":["events.market.>"],"durable":true,"options":{options}}}]"#
            );
            std::fs::write(&path, &body).unwrap();
            let err = load_fresh(&path).await.unwrap_err();
            assert!(err.to_string().contains("/0/options"), "{options}: {err}");
            assert!(err.to_string().contains(named), "{options}: {err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
        }
        // the versioned layout is this library's own: no conversion there
        std::fs::write(
            &path,
            r#"{"version":1,"subscriptions":[{"subscriberId":"a","subjects":["events.market.>"],"durable":true,"options":{"ackWaitSecs":60}}]}"#,
        )
        .unwrap();
        let err = load_fresh(&path).await.unwrap_err();
        assert!(err.to_string().contains("ackWaitSecs"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_version_that_is_not_an_integer_is_refused_not_misread() {
        let dir = temp_dir("version");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let rec = r#"{"subscriberId":"a","subjects":["events.market.>"],"durable":true}"#;
        for version in [r#""2""#, "2.5", "-1", "null", "true", "{}"] {
            let body = format!(r#"{{"version": {version}, "subscriptions": [{rec}]}}"#);
            std::fs::write(&path, &body).unwrap();
            let err = load_fresh(&path).await.unwrap_err();
            assert!(matches!(err, Error::Serialization(_)), "{version}: {err}");
            assert!(err.to_string().contains("version"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), body.as_bytes());
        }
        // files this library wrote, and files without a version, still load
        for body in [
            format!(r#"{{"version": 1, "subscriptions": [{rec}]}}"#),
            format!(r#"{{"subscriptions": [{rec}]}}"#),
        ] {
            std::fs::write(&path, &body).unwrap();
            assert_eq!(load_fresh(&path).await.unwrap(), vec![record("a", None)]);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Loads `body` from a fresh file; the error, which must name the file
    /// and leave it untouched.
    async fn refused(dir: &Path, body: &str) -> String {
        let path = dir.join("state.json");
        std::fs::write(&path, body).unwrap();
        let err = load_fresh(&path).await.unwrap_err();
        assert!(matches!(err, Error::Serialization(_)), "{body}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), body);
        msg
    }

    const REC: &str = r#"{"subscriberId":"a","subjects":["events.market.>"],"durable":true}"#;

    /// JSON lets a key appear twice and readers keep the last: a file with
    /// `subscriptions` twice loaded the second (empty) list, and the next
    /// save erased the first. Every object of every layout refuses a key
    /// given twice, naming it.
    #[tokio::test]
    async fn a_key_given_twice_is_refused_naming_it() {
        let dir = temp_dir("duplicate");
        std::fs::create_dir_all(&dir).unwrap();
        for (body, key) in [
            (
                format!(r#"{{"version":1,"subscriptions":[{REC}],"subscriptions":[]}}"#),
                "subscriptions",
            ),
            (
                format!(r#"{{"version":1,"version":1,"subscriptions":[{REC}]}}"#),
                "version",
            ),
            (
                r#"[{"subscriberId":"a","subjects":["events.market.>"],"durable":true,"durable":false}]"#
                    .to_owned(),
                "durable",
            ),
            (
                r#"{"version":1,"subscriptions":[{"subscriberId":"a","subjects":["events.market.>"],"durable":true,"options":{"maxDeliver":3,"maxDeliver":null}}]}"#
                    .to_owned(),
                "maxDeliver",
            ),
            (format!(r#"{{"a":{REC},"a":{REC}}}"#), "a"),
        ] {
            let msg = refused(&dir, &body).await;
            assert!(msg.contains(&format!("`{key}` given twice")), "{msg}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A field this library does not read in a version-1 file (a hand edit
    /// in the wrong case, a typo) is refused, naming it and where it is:
    /// `"max_deliver": 3` was ignored (deliveries unlimited) and erased by
    /// the next save.
    #[tokio::test]
    async fn a_field_this_library_does_not_read_is_refused_naming_it() {
        let dir = temp_dir("unknown");
        std::fs::create_dir_all(&dir).unwrap();
        let with_options = |options: &str| {
            format!(
                r#"{{"version":1,"subscriptions":[{{"subscriberId":"a","subjects":["events.market.>"],"durable":true,"options":{options}}}]}}"#
            )
        };
        for (body, field, at, hint) in [
            (
                with_options(r#"{"max_deliver":3}"#),
                "max_deliver",
                "/subscriptions/0/options",
                Some("maxDeliver"),
            ),
            (
                with_options(r#"{"maxDeliver":3,"rateLimit":5}"#),
                "rateLimit",
                "/subscriptions/0/options",
                None,
            ),
            (
                with_options(r#"{"deliverPolicy":{"type":"all","sequence":5}}"#),
                "sequence",
                "/subscriptions/0/options/deliverPolicy",
                None,
            ),
            (
                r#"{"subscriptions":[{"subscriberId":"a","subjects":["events.market.>"],"durable":true,"option":{"maxDeliver":3}}]}"#
                    .to_owned(),
                "option",
                "/subscriptions/0",
                Some("options"),
            ),
            (
                format!(r#"{{"version":1,"subscriptions":[{REC}],"comment":"by hand"}}"#),
                "comment",
                "",
                None,
            ),
        ] {
            let msg = refused(&dir, &body).await;
            let at = if at.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("at `{at}`")
            };
            assert!(
                msg.contains(&format!("unknown field `{field}` {at}")),
                "{msg}"
            );
            // a rollback meets a newer version's file: say so, not "corrupt"
            assert!(msg.contains("written by a newer version"), "{msg}");
            assert!(!msg.contains("corrupt"), "{msg}");
            if let Some(hint) = hint {
                assert!(msg.contains(&format!("did you mean `{hint}`")), "{msg}");
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A value of the wrong type was refused with serde's words alone
    /// (`invalid type: string "yes", expected a boolean`), which do not say
    /// which of many records holds it. The error names the record by its
    /// JSON pointer and subscriber id, in both array layouts.
    #[tokio::test]
    async fn a_value_of_the_wrong_type_names_its_record() {
        let dir = temp_dir("wrong-type");
        std::fs::create_dir_all(&dir).unwrap();
        let bad = r#"{"subscriberId":"billing","subjects":["events.b.>"],"durable":"yes"}"#;
        for (body, at) in [
            (
                format!(r#"{{"version":1,"subscriptions":[{REC},{bad}]}}"#),
                "record /subscriptions/1 (subscriber \"billing\")",
            ),
            (
                format!("[{REC},{REC},{bad}]"),
                "record /2 (subscriber \"billing\")",
            ),
        ] {
            let msg = refused(&dir, &body).await;
            assert!(msg.contains(at), "{msg}");
            assert!(msg.contains("expected a boolean"), "{msg}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn version_0_is_refused() {
        let dir = temp_dir("version-0");
        std::fs::create_dir_all(&dir).unwrap();
        let msg = refused(&dir, &format!(r#"{{"version":0,"subscriptions":[{REC}]}}"#)).await;
        assert!(msg.contains("format version 0"), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// What the refusals must not catch: every field this library writes,
    /// with every deliver policy, and known fields written out at their
    /// defaults (which a save leaves out: nothing is lost).
    #[tokio::test]
    async fn every_field_this_library_reads_loads() {
        use event_core::DeliverPolicy;
        let dir = temp_dir("known");
        let store = FileStateStore::new(dir.join("state.json"));
        let full = |policy| SubscribeOptions {
            max_deliver: Some(3),
            backoff: vec![std::time::Duration::from_millis(5)],
            max_ack_pending: Some(7),
            deliver_policy: policy,
            ack_wait: Some(std::time::Duration::from_secs(2)),
        };
        let records: Vec<SubscriptionRecord> = [
            DeliverPolicy::All,
            DeliverPolicy::Last,
            DeliverPolicy::New,
            DeliverPolicy::ByStartSequence { sequence: 4 },
            DeliverPolicy::ByStartTime { timestamp: 5 },
            DeliverPolicy::LastPerSubject,
        ]
        .into_iter()
        .enumerate()
        .map(|(n, policy)| record(&format!("s{n}"), Some(full(policy))))
        .chain([record("none", None)])
        .collect();
        store.save(&records).await.unwrap();
        assert_eq!(store.load().await.unwrap(), records);
        drop(store);
        let path = dir.join("state.json");
        std::fs::write(
            &path,
            r#"{"version":1,"subscriptions":[
                {"subscriberId":"a","subjects":["events.market.>"],"durable":true,"options":null},
                {"subscriberId":"b","subjects":["events.market.>"],"durable":true,"options":
                    {"maxDeliver":null,"backoffMs":[],"maxAckPending":null,"ackWaitMs":null}}]}"#,
        )
        .unwrap();
        assert_eq!(
            load_fresh(&path).await.unwrap(),
            vec![
                record("a", None),
                record("b", Some(SubscribeOptions::default()))
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The unversioned layouts of earlier libraries may hold fields this
    /// library never read: they still load (with a warning naming them).
    #[tokio::test]
    async fn older_layouts_with_fields_this_library_does_not_read_still_load() {
        let dir = temp_dir("legacy-unknown");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let old = r#"{"subscriberId":"a","subjects":["events.market.>"],"durable":true,"options":{"maxDeliver":3,"backoff":[{"secs":1,"nanos":0}]}}"#;
        let expected = vec![record(
            "a",
            Some(SubscribeOptions {
                max_deliver: Some(3),
                ..Default::default()
            }),
        )];
        for body in [format!("[{old}]"), format!(r#"{{"a":{old}}}"#)] {
            std::fs::write(&path, &body).unwrap();
            assert_eq!(load_fresh(&path).await.unwrap(), expected);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_legacy_map_with_a_subscriber_named_subscriptions_loads() {
        let dir = temp_dir("legacy-name");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        std::fs::write(
            &path,
            r#"{"subscriptions":{"subscriberId":"subscriptions","subjects":["events.market.>"],"durable":true},
                "version":{"subscriberId":"version","subjects":["events.market.>"],"durable":true}}"#,
        )
        .unwrap();
        assert_eq!(
            load_fresh(&path).await.unwrap(),
            vec![record("subscriptions", None), record("version", None)]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_cancelled_save_never_overwrites_a_later_one() {
        // A caller that stops waiting for a save (a timeout around
        // `update_subscription`) leaves its write queued or running on the
        // blocking pool. A later save must not be overwritten by it when it
        // runs: the file ends with the newest state.
        let dir = temp_dir("cancelled");
        let path = dir.join("state.json");
        let store = FileStateStore::new(&path);
        let old = vec![record("old", None)];
        let new = vec![record("new", None)];
        // a runtime whose only blocking thread is busy: the old write waits
        let busy = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .build()
            .unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        busy.spawn_blocking(move || gate.recv());
        busy.block_on(async {
            let mut old = Box::pin(store.save(&old));
            // poll once: the write is handed to the blocking pool, then the
            // caller gives up
            std::future::poll_fn(|cx| {
                assert!(old.as_mut().poll(cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await;
        });
        let other = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        other.block_on(store.save(&new)).unwrap();
        // the abandoned write runs now; dropping the runtime waits for it
        release.send(()).unwrap();
        drop(busy);
        assert_eq!(other.block_on(store.load()).unwrap(), new);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn temporary_files_left_by_a_crashed_process_with_the_same_pid_do_not_block_saves() {
        // A process killed between creating its temporary file and renaming
        // it leaves the file behind. After a restart the new process often
        // has the same pid (pid 1 in a container), and its saves must not
        // trip over the leftovers.
        let dir = temp_dir("leftover");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let next = TEMP_COUNTER.load(Ordering::Relaxed);
        for n in next..next + 1000 {
            std::fs::write(
                dir.join(format!(".state.json.tmp-{}-{n}", std::process::id())),
                b"{\"torn",
            )
            .unwrap();
        }
        let store = FileStateStore::new(&path);
        store.save(&[record("a", None)]).await.unwrap();
        assert_eq!(store.load().await.unwrap(), vec![record("a", None)]);
        // the store holding the lock removed the leftovers (no other store
        // can be writing them): the state file and its lock file are left
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_symlinked_state_file_stays_a_symlink_and_its_target_is_updated() {
        let dir = temp_dir("symlink");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let target = dir.join("data/real.json");
        let link = dir.join("state.json");
        // one store at a time owns the file, whichever path it goes by
        FileStateStore::new(&target)
            .save(&[record("a", None)])
            .await
            .unwrap();
        // a relative link, as `ln -s data/real.json state.json` makes
        std::os::unix::fs::symlink("data/real.json", &link).unwrap();
        let via_link = FileStateStore::new(&link);
        once_free(|| async { via_link.save(&[record("b", None)]).await })
            .await
            .unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the symlink was replaced by a regular file"
        );
        assert_eq!(via_link.load().await.unwrap(), vec![record("b", None)]);
        drop(via_link);
        assert_eq!(load_fresh(&target).await.unwrap(), vec![record("b", None)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_save_keeps_the_permissions_of_the_state_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("mode");
        let path = dir.join("state.json");
        let store = FileStateStore::new(&path);
        store.save(&[record("a", None)]).await.unwrap();
        for mode in [0o600, 0o640, 0o664] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            store.save(&[record("b", None)]).await.unwrap();
            let got = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(got, mode, "{got:o} != {mode:o}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn assert_conflict(err: &Error, path: &Path) {
        match err {
            Error::Conflict { resource, reason } => {
                assert!(resource.contains(&path.display().to_string()), "{resource}");
                assert!(reason.contains("another store or process"), "{reason}");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    /// `op`, retried for up to 5 s while it is refused because another
    /// store holds the file's lock (any other outcome, a conflict over a
    /// file that changed included, is returned at once): for a file whose
    /// store was just dropped. Its lock file is closed at once, but a
    /// process this one forks in that moment (other tests here spawn
    /// `mkfifo`, `chattr` and copies of this binary) holds a copy of it,
    /// and so the lock, until the child execs: run with many test threads,
    /// a store opened right after another was dropped was refused in 19 of
    /// 40 runs of these tests.
    async fn once_free<T, F: Future<Output = Result<T>>>(mut op: impl FnMut() -> F) -> Result<T> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match op().await {
                Err(Error::Conflict { reason, .. })
                    if reason.contains("holds it") && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    }

    /// `store.load()`, retried while another store holds the lock (see
    /// [`once_free`]), unwrapped.
    async fn load_once_free(store: &FileStateStore) -> Vec<SubscriptionRecord> {
        once_free(|| store.load()).await.unwrap()
    }

    /// A load by a new store at `path`, retried while another store holds
    /// the lock (see [`once_free`]): for a file a store just used.
    async fn load_fresh(path: &Path) -> Result<Vec<SubscriptionRecord>> {
        once_free(|| async { FileStateStore::new(path).load().await }).await
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_file_is_refused_until_the_first_is_gone() {
        let dir = temp_dir("owned");
        let path = dir.join("state.json");
        let first = FileStateStore::new(&path);
        let clone = first.clone();
        first.save(&[record("a", None)]).await.unwrap();
        let body = std::fs::read(&path).unwrap();

        let second = FileStateStore::new(&path);
        assert_conflict(&second.load().await.unwrap_err(), &path);
        assert_conflict(&second.save(&[record("b", None)]).await.unwrap_err(), &path);
        assert_eq!(std::fs::read(&path).unwrap(), body, "the file changed");

        // the owner and its clones keep working: they share the lock
        clone
            .save(&[record("a", None), record("c", None)])
            .await
            .unwrap();
        assert_eq!(
            first.load().await.unwrap(),
            vec![record("a", None), record("c", None)]
        );
        drop(first);
        // a clone still holds it
        assert_conflict(&second.load().await.unwrap_err(), &path);
        drop(clone);

        // the owner is gone: the refused store takes the file over
        assert_eq!(
            load_once_free(&second).await,
            vec![record("a", None), record("c", None)]
        );
        second.save(&[record("b", None)]).await.unwrap();
        assert_eq!(second.load().await.unwrap(), vec![record("b", None)]);
        assert_conflict(&FileStateStore::new(&path).load().await.unwrap_err(), &path);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Clones of one store racing to their first save, on several threads,
    /// share one lock: none is refused, the file holds one of their sets
    /// whole, and a later save through any clone lands. Independent stores
    /// racing for a new file: exactly one takes it, the others are refused
    /// with a conflict, and the file holds the winner's set.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn stores_racing_for_a_file_share_it_as_clones_and_conflict_otherwise() {
        let dir = temp_dir("race");
        let path = dir.join("state.json");
        let store = FileStateStore::new(&path);
        let sets: Vec<Vec<SubscriptionRecord>> = (0..16)
            .map(|i| (0..=i).map(|j| record(&format!("s{j}"), None)).collect())
            .collect();
        let saves: Vec<_> = sets
            .iter()
            .map(|set| {
                let clone = store.clone();
                let set = set.clone();
                tokio::spawn(async move { clone.save(&set).await })
            })
            .collect();
        for save in saves {
            save.await.unwrap().unwrap();
        }
        let held = store.load().await.unwrap();
        assert!(sets.contains(&held), "{held:?}");
        store.clone().save(&sets[3]).await.unwrap();
        assert_eq!(store.load().await.unwrap(), sets[3]);
        drop(store);

        let fresh = dir.join("fresh.json");
        let stores: Vec<FileStateStore> = (0..8).map(|_| FileStateStore::new(&fresh)).collect();
        let saves: Vec<_> = stores
            .iter()
            .zip(&sets)
            .map(|(store, set)| {
                let (store, set) = (store.clone(), set.clone());
                tokio::spawn(async move { store.save(&set).await.map(|()| set) })
            })
            .collect();
        let mut won = Vec::new();
        for save in saves {
            match save.await.unwrap() {
                Ok(set) => won.push(set),
                Err(err) => assert_conflict(&err, &fresh),
            }
        }
        assert_eq!(won.len(), 1, "{} stores took the file", won.len());
        let owner = stores
            .iter()
            .find(|s| {
                s.shared
                    .ownership
                    .target(&fresh, lock::Access::Read)
                    .is_ok()
            })
            .unwrap();
        assert_eq!(owner.load().await.unwrap(), won[0]);
        drop(stores);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_first_load_of_a_missing_file_already_owns_it() {
        // loading a file that does not exist yet (a first start) claims it:
        // another store cannot slip in before the first save
        let dir = temp_dir("owned-missing");
        let path = dir.join("nested/state.json");
        let first = FileStateStore::new(&path);
        assert!(first.load().await.unwrap().is_empty());
        let second = FileStateStore::new(&path);
        assert_conflict(&second.load().await.unwrap_err(), &path);
        assert_conflict(&second.save(&[record("b", None)]).await.unwrap_err(), &path);
        assert!(!path.exists(), "the refused save wrote the file");
        first.save(&[record("a", None)]).await.unwrap();
        assert_eq!(first.load().await.unwrap(), vec![record("a", None)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn two_symbolic_links_to_one_file_conflict() {
        let dir = temp_dir("owned-links");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let target = dir.join("data/real.json");
        let relative = dir.join("a.json");
        let absolute = dir.join("b.json");
        std::os::unix::fs::symlink("data/real.json", &relative).unwrap();
        std::os::unix::fs::symlink(&target, &absolute).unwrap();
        let owner = FileStateStore::new(&relative);
        owner.save(&[record("a", None)]).await.unwrap();
        for other in [&absolute, &target] {
            let store = FileStateStore::new(other);
            assert_conflict(&store.load().await.unwrap_err(), other);
            assert_conflict(&store.save(&[record("b", None)]).await.unwrap_err(), other);
        }
        assert_eq!(owner.load().await.unwrap(), vec![record("a", None)]);
        drop(owner);
        assert_eq!(
            load_fresh(&absolute).await.unwrap(),
            vec![record("a", None)]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Set in the child process of
    /// [`a_state_file_owned_by_another_process_is_refused`]: the state file
    /// it holds until its stdin closes.
    const HOLDER_ENV: &str = "A3S_EVENT_BUS_TEST_STATE_LOCK_HOLDER";
    /// What the child prints once it holds the file.
    const HOLDING: &str = "a3s-state-lock-holder: holding";

    /// Kills the child process if the test fails before waiting for it.
    struct Holder(std::process::Child);

    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[tokio::test]
    async fn a_state_file_owned_by_another_process_is_refused() {
        use std::io::BufRead as _;
        if let Ok(path) = std::env::var(HOLDER_ENV) {
            // the child: take the file, say so, hold it until stdin closes
            let store = FileStateStore::new(&path);
            store.save(&[record("child", None)]).await.unwrap();
            println!("{HOLDING}");
            std::io::stdout().flush().unwrap();
            let _ = std::io::stdin().read_line(&mut String::new());
            drop(store);
            return;
        }
        let dir = temp_dir("owned-process");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let name = concat!(
            module_path!(),
            "::a_state_file_owned_by_another_process_is_refused"
        );
        let name = name.split_once("::").map_or(name, |(_, rest)| rest);
        let mut holder = Holder(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--nocapture", "--test-threads=1"])
                .env(HOLDER_ENV, &path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = holder.0.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("the child exited without taking the file")
                .unwrap();
            // libtest's "test <name> ... " may precede it on the line
            if line.ends_with(HOLDING) {
                break;
            }
        }

        let store = FileStateStore::new(&path);
        assert_conflict(&store.load().await.unwrap_err(), &path);
        assert_conflict(
            &store.save(&[record("parent", None)]).await.unwrap_err(),
            &path,
        );

        // the child lets go (its stdin closes) and exits; the refused save
        // left its state in the file
        drop(holder.0.stdin.take());
        assert!(holder.0.wait().unwrap().success(), "the child failed");
        assert_eq!(store.load().await.unwrap(), vec![record("child", None)]);
        store.save(&[record("parent", None)]).await.unwrap();
        assert_eq!(store.load().await.unwrap(), vec![record("parent", None)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Set in the child process of
    /// [`a_relative_path_keeps_to_the_file_it_locked_after_a_change_of_directory`]:
    /// the directory it works in.
    const CHDIR_ENV: &str = "A3S_EVENT_BUS_TEST_STATE_CHDIR";

    #[tokio::test]
    async fn a_relative_path_keeps_to_the_file_it_locked_after_a_change_of_directory() {
        if let Ok(dir) = std::env::var(CHDIR_ENV) {
            // the child (the working directory is the process's): a store
            // at a relative path locks the file in the working directory;
            // after a change of directory its saves still go to that file,
            // not to one in the new directory that it never locked
            let dir = PathBuf::from(dir);
            let (first, second) = (dir.join("first"), dir.join("second"));
            std::fs::create_dir_all(&first).unwrap();
            std::fs::create_dir_all(&second).unwrap();
            std::env::set_current_dir(&first).unwrap();
            let store = FileStateStore::new("state.json");
            assert!(store.load().await.unwrap().is_empty());
            std::env::set_current_dir(&second).unwrap();
            store.save(&[record("a", None)]).await.unwrap();
            assert!(
                !second.join("state.json").exists(),
                "saved to a file it did not lock"
            );
            assert_eq!(store.load().await.unwrap(), vec![record("a", None)]);
            assert!(first.join("state.json").exists(), "the locked file");
            return;
        }
        let dir = temp_dir("chdir");
        std::fs::create_dir_all(&dir).unwrap();
        let name = concat!(
            module_path!(),
            "::a_relative_path_keeps_to_the_file_it_locked_after_a_change_of_directory"
        );
        let name = name.split_once("::").map_or(name, |(_, rest)| rest);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHDIR_ENV, &dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the child failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_lock_file_that_cannot_be_opened_is_an_io_error_naming_it() {
        let dir = temp_dir("lock-dir");
        let path = dir.join("state.json");
        let lock = dir.join(".state.json.lock");
        // a directory where the lock file goes: opening it for writing fails
        std::fs::create_dir_all(&lock).unwrap();
        let store = FileStateStore::new(&path);
        for err in [
            store.load().await.unwrap_err(),
            store.save(&[record("a", None)]).await.unwrap_err(),
        ] {
            assert!(matches!(err, Error::Io { .. }), "{err}");
            assert!(
                err.to_string().contains(&lock.display().to_string()),
                "{err}"
            );
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{err}"
            );
        }
        assert!(!path.exists(), "saved without the lock");
        // fixed, the same store takes the lock and works
        std::fs::remove_dir(&lock).unwrap();
        store.save(&[record("a", None)]).await.unwrap();
        assert_eq!(store.load().await.unwrap(), vec![record("a", None)]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A file or directory made immutable (`chattr +i`), which refuses
    /// writing even to root, as these tests run; mutable again when
    /// dropped.
    #[cfg(target_os = "linux")]
    struct Immutable(PathBuf);

    #[cfg(target_os = "linux")]
    impl Immutable {
        /// `path` made immutable, or `None` (with a `SKIPPED` line naming
        /// `test`) where `chattr` cannot do that or writing still works.
        fn make(path: &Path, test: &str) -> Option<Self> {
            let made = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            let guard = Self(path.to_path_buf());
            let probe = if path.is_dir() {
                std::fs::write(path.join(".probe"), b"").is_ok()
            } else {
                std::fs::OpenOptions::new().write(true).open(path).is_ok()
            };
            if !made || probe {
                eprintln!("SKIPPED {test}: chattr +i unavailable");
                return None;
            }
            Some(guard)
        }
    }

    #[cfg(target_os = "linux")]
    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
    }

    /// A lock file this user may not write (left by another user, or
    /// read-only) still locks: it is opened for reading.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_lock_file_this_user_may_not_write_still_locks() {
        let dir = temp_dir("lock-read-only");
        let path = dir.join("state.json");
        let lock = dir.join(".state.json.lock");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&lock, b"").unwrap();
        let Some(guard) = Immutable::make(&lock, "a_lock_file_this_user_may_not_write_still_locks")
        else {
            std::fs::remove_dir_all(dir).unwrap();
            return;
        };
        let store = FileStateStore::new(&path);
        store.save(&[record("a", None)]).await.unwrap();
        assert_eq!(store.load().await.unwrap(), vec![record("a", None)]);
        // and it is a lock: another store is refused
        let err = FileStateStore::new(&path).load().await.unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        drop(store);
        drop(guard);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A state file where this store cannot create its lock file (a
    /// read-only volume, a directory it may not write; here an immutable
    /// directory) loads without the lock, since no save can happen there;
    /// saves fail and leave it as it was; once the location is writable,
    /// the store takes the lock.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_state_file_in_a_read_only_location_loads_and_refuses_saves() {
        let dir = temp_dir("read-only-dir");
        let path = dir.join("state.json");
        std::fs::create_dir_all(&dir).unwrap();
        // a state file shipped without a lock file (written by hand, an
        // image, an older version)
        let before = serde_json::to_vec(&serde_json::json!({
            "version": 1,
            "subscriptions": [record("a", None)],
        }))
        .unwrap();
        std::fs::write(&path, &before).unwrap();
        let Some(guard) = Immutable::make(
            &dir,
            "a_state_file_in_a_read_only_location_loads_and_refuses_saves",
        ) else {
            std::fs::remove_dir_all(dir).unwrap();
            return;
        };
        let store = FileStateStore::new(&path);
        assert_eq!(store.load().await.unwrap(), vec![record("a", None)]);
        // nobody holds it: another reader loads too
        let other = FileStateStore::new(&path);
        assert_eq!(other.load().await.unwrap(), vec![record("a", None)]);
        // a missing directory under a read-only one loads as no
        // subscriptions
        let missing = FileStateStore::new(dir.join("sub").join("state.json"));
        assert_eq!(missing.load().await.unwrap(), vec![]);
        let err = store.save(&[record("b", None)]).await.unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        drop(guard);
        // writable again: the first store claims the file, the other is
        // refused
        store.save(&[record("b", None)]).await.unwrap();
        assert_eq!(store.load().await.unwrap(), vec![record("b", None)]);
        assert_conflict(&other.load().await.unwrap_err(), &path);
        drop(store);
        drop(other);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Two stores loaded a file in a read-only location, unlocked. Once it
    /// was writable, the first to save claimed it and saved; the other's
    /// save then wrote its own set over that one, erasing a subscription
    /// whose save had succeeded. A store whose file changed since it loaded
    /// it unlocked is refused instead, and takes the file with a new load.
    #[tokio::test]
    async fn a_store_that_loaded_a_read_only_file_does_not_save_over_a_later_save() {
        let test = "a_store_that_loaded_a_read_only_file_does_not_save_over_a_later_save";
        let dir = temp_dir("read-only-race");
        let path = dir.join("state.json");
        let missing_path = dir.join("sub").join("state.json");
        std::fs::create_dir_all(&dir).unwrap();
        let shipped = serde_json::to_vec(&serde_json::json!({
            "version": 1,
            "subscriptions": [record("a", None)],
        }))
        .unwrap();
        std::fs::write(&path, &shipped).unwrap();
        let Some(guard) = Immutable::make(&dir, test) else {
            std::fs::remove_dir_all(dir).unwrap();
            return;
        };
        let first = FileStateStore::new(&path);
        let second = FileStateStore::new(&path);
        let unchanged = FileStateStore::new(&path);
        for store in [&first, &second, &unchanged] {
            assert_eq!(store.load().await.unwrap(), vec![record("a", None)]);
        }
        let missing_first = FileStateStore::new(&missing_path);
        let missing_second = FileStateStore::new(&missing_path);
        assert_eq!(missing_first.load().await.unwrap(), vec![]);
        assert_eq!(missing_second.load().await.unwrap(), vec![]);
        drop(guard);

        // the first to save finds the file as it loaded it
        let saved = vec![record("a", None), record("first", None)];
        first.save(&saved).await.unwrap();
        drop(first);
        let written = std::fs::read(&path).unwrap();
        let err = once_free(|| async {
            second
                .save(&[record("a", None), record("second", None)])
                .await
        })
        .await
        .unwrap_err();
        assert_conflict(&err, &path);
        assert!(err.to_string().contains("changed since"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), written);
        // refused again until it loads: its set is still the stale one
        let err = second.save(&[record("second", None)]).await.unwrap_err();
        assert_conflict(&err, &path);
        // a load claims the file and reads what it holds now
        assert_eq!(load_once_free(&second).await, saved);
        let merged = vec![
            record("a", None),
            record("first", None),
            record("second", None),
        ];
        second.save(&merged).await.unwrap();
        assert_eq!(second.load().await.unwrap(), merged);
        drop(second);
        // a file saved back unchanged is no conflict
        std::fs::write(&path, &shipped).unwrap();
        once_free(|| async { unchanged.save(&[record("b", None)]).await })
            .await
            .unwrap();
        assert_eq!(unchanged.load().await.unwrap(), vec![record("b", None)]);
        drop(unchanged);

        // a file missing at the load and created since is a change too
        missing_first.save(&[record("m", None)]).await.unwrap();
        drop(missing_first);
        let err = once_free(|| async { missing_second.save(&[record("n", None)]).await })
            .await
            .unwrap_err();
        assert_conflict(&err, &missing_path);
        assert_eq!(
            load_once_free(&missing_second).await,
            vec![record("m", None)]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn unreadable_path_is_an_io_error_naming_it() {
        let dir = temp_dir("dir-as-file");
        let path = dir.join("state.json");
        std::fs::create_dir_all(&path).unwrap();
        // the "file" is a directory: reading it fails
        let err = load_fresh(&path).await.unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
