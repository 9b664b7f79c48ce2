//! One store at a time on a state file: an exclusive advisory lock on a
//! lock file next to it, held by a store and its clones.

use super::{
    create_dir_synced, file_name, io_error, parent_dir, read_state, remove_stale_temps,
    resolve_symlinks,
};
use event_core::{Error, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::hash::{DefaultHasher, Hasher as _};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// What a store claims its file for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// A load: where the lock cannot be taken because the location is
    /// read-only to this store, the file is read without it.
    Read,
    /// A save: never without the lock (or a file system that cannot lock).
    Write,
}

/// The state file a store (and its clones) owns, once it has claimed it.
#[derive(Debug, Default)]
pub(super) struct Ownership {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    claim: Option<Claim>,
    /// What the last load read while the file was not claimed (a read-only
    /// location): the first save that claims the file checks that it still
    /// holds that, as the store's set was built on it.
    read_unclaimed: Option<Seen>,
}

/// What a state file held when a load read it: its length and a hash of
/// its bytes, or `None` for a missing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen(Option<(usize, u64)>);

impl Seen {
    /// The file's content as read (`None`: the file was missing).
    pub(super) fn of(bytes: Option<&[u8]>) -> Self {
        Self(bytes.map(|bytes| {
            let mut hasher = DefaultHasher::new();
            hasher.write(bytes);
            (bytes.len(), hasher.finish())
        }))
    }

    /// What `target` holds now.
    fn now(target: &Path, path: &Path) -> Result<Self> {
        Ok(Self::of(read_state(target, path)?.as_deref()))
    }
}

/// The file a load or save works on.
#[derive(Debug)]
pub(super) struct Target {
    /// The state file, absolute, its symbolic links resolved.
    pub(super) path: PathBuf,
    /// Whether the store has claimed it (`false`: a load in a read-only
    /// location, see [`Ownership::read_unclaimed`]).
    pub(super) claimed: bool,
}

#[derive(Debug)]
struct Claim {
    /// The file loads read and saves replace: the store's path, made
    /// absolute and with its symbolic links resolved when the file was
    /// claimed.
    target: PathBuf,
    /// The open lock file, locked; closing it (when the last clone of the
    /// store drops) releases the lock. `None` where the file system cannot
    /// lock.
    _lock: Option<File>,
}

impl Ownership {
    /// The file to read or replace for the store at `path`, claimed first
    /// if the store has not claimed it yet.
    ///
    /// [`Error::Conflict`] while another store (here or in another process)
    /// holds it: nothing is claimed, and a later call tries again. For
    /// [`Access::Read`], a location read-only to this store (where it
    /// cannot create the lock file) gives the file unclaimed, and a later
    /// call tries to claim it again.
    ///
    /// A save claiming the file after a load read it unclaimed is also
    /// [`Error::Conflict`] if the file changed since that load (another
    /// store claimed and saved it while this one could not lock): the
    /// store's set was built on what it loaded, and saving it would erase
    /// what the other wrote. Nothing is claimed then; a load claims the
    /// file and reads what it holds now. Blocking: call it on the blocking
    /// pool.
    pub(super) fn target(&self, path: &Path, access: Access) -> Result<Target> {
        // held while claiming: clones racing to their first load or save
        // must share one lock, not take two that conflict
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(claim) = &state.claim {
            return Ok(Target {
                path: claim.target.clone(),
                claimed: true,
            });
        }
        // absolute: a relative path would name another file (one it never
        // locked) after a change of the working directory (an empty path
        // stays empty: it has no file name, which is the error to report)
        let absolute = if path.as_os_str().is_empty() {
            path.to_path_buf()
        } else {
            std::path::absolute(path).map_err(|e| {
                io_error(
                    format!("resolving the path of state file {}", path.display()),
                    e,
                )
            })?
        };
        let target = resolve_symlinks(&absolute)?;
        let lock = match lock(path, &target, access)? {
            Lock::Held(file) => {
                // no other store writes this file now: temporary files
                // next to it are from saves that never finished
                remove_stale_temps(&target);
                Some(file)
            }
            Lock::Unsupported => None,
            // not claimed: if the location becomes writable, the next load
            // or save takes the lock before anything is written
            Lock::ReadOnly => {
                return Ok(Target {
                    path: target,
                    claimed: false,
                });
            }
        };
        if access == Access::Write
            && let Some(seen) = state.read_unclaimed
            && Seen::now(&target, path)? != seen
        {
            // dropping `lock` releases it
            return Err(Error::Conflict {
                resource: format!("state file {}", path.display()),
                reason: "it changed since this store loaded it without the lock (its location \
                         was read-only then), so another store or process saved to it meanwhile: \
                         saving this store's set would erase what that one wrote. Load the file \
                         again (restart the bus) to take the set it holds now"
                    .into(),
            });
        }
        // a load now reads the file under the lock; a save found it as loaded
        state.read_unclaimed = None;
        state.claim = Some(Claim {
            target: target.clone(),
            _lock: lock,
        });
        Ok(Target {
            path: target,
            claimed: true,
        })
    }

    /// Records what a load read from the file while it was not claimed
    /// (see [`target`](Self::target)); ignored once the file is claimed.
    pub(super) fn read_unclaimed(&self, seen: Seen) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.claim.is_none() {
            state.read_unclaimed = Some(seen);
        }
    }
}

/// How a claim went.
#[derive(Debug)]
enum Lock {
    /// The open lock file, locked.
    Held(File),
    /// The file system cannot lock: the store works unlocked.
    Unsupported,
    /// A load where this store cannot create the lock file: the location
    /// is read-only to it, so it cannot save there either.
    ReadOnly,
}

/// Locks `.{name}.lock` next to `target`, the resolved state file of the
/// store at `path`: two paths to one file (symbolic links) lock one lock
/// file. The lock file is created if missing and never deleted: a store
/// deleting it could leave the next store locking a new file while an old
/// one still holds the deleted one.
fn lock(path: &Path, target: &Path, access: Access) -> Result<Lock> {
    let dir = parent_dir(target);
    let lock_path = dir.join(format!(".{}.lock", file_name(target)?));
    let opened = create_dir_synced(&dir)
        .map_err(|err| ("creating the directory of", err))
        .and_then(|()| {
            open_lock_file(&lock_path).map_err(|err| ("opening the lock file for", err))
        });
    let file = match opened {
        Ok(file) => file,
        // Reading without the lock is safe where this store cannot write:
        // the lock keeps a store's saves from erasing another's
        // subscriptions, and this one cannot save here (a state file
        // shipped on a read-only volume, say).
        Err((_, err)) if access == Access::Read && is_read_only(&err) => {
            tracing::warn!(
                path = %path.display(),
                lock = %lock_path.display(),
                error = %err,
                "the state file's location is read-only to this store: it is loaded without \
                 the lock, and saves fail until the location is writable"
            );
            return Ok(Lock::ReadOnly);
        }
        Err((what, err)) => {
            return Err(io_error(
                format!(
                    "{what} state file {} (lock file {})",
                    path.display(),
                    lock_path.display()
                ),
                err,
            ));
        }
    };
    Ok(if settle(file.try_lock(), path, &lock_path)? {
        Lock::Held(file)
    } else {
        Lock::Unsupported
    })
}

/// Whether `err`, from creating a file or directory, says this store may
/// not write there: a read-only file system, or no permission.
fn is_read_only(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied
    )
}

/// Opens (creating it if missing) the lock file. One this user may not
/// write (left by another user, say a one-off run as root, made immutable,
/// or on a read-only file system) is opened for reading instead: a lock
/// needs an open file, not write access, and the store worked there before
/// it locked. When that fails too, the first error is the one reported.
fn open_lock_file(lock_path: &Path) -> std::io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path)
    {
        Err(err) if is_read_only(&err) => OpenOptions::new()
            .read(true)
            .open(lock_path)
            .map_err(|_| err),
        other => other,
    }
}

/// What the outcome of locking `lock_path` means for the store at `path`:
/// `true` locked, `false` used unlocked (the file system cannot lock).
fn settle(result: Result<(), TryLockError>, path: &Path, lock_path: &Path) -> Result<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Err(Error::Conflict {
            resource: format!("state file {}", path.display()),
            reason: format!(
                "another store or process holds it (lock file {}); a state file is used by one \
                 store (and its clones) at a time, as each save writes the whole set",
                lock_path.display()
            ),
        }),
        // unusable would be worse than unlocked: the store worked before
        // it locked, and works as it did then
        Err(TryLockError::Error(err)) if cannot_lock(&err) => {
            tracing::warn!(
                path = %path.display(),
                lock = %lock_path.display(),
                error = %err,
                "the file system cannot lock the state file: it is used unlocked, and another \
                 store or process using it would go unnoticed (the last save wins)"
            );
            Ok(false)
        }
        Err(TryLockError::Error(err)) => Err(io_error(
            format!(
                "locking the lock file {} of state file {}",
                lock_path.display(),
                path.display()
            ),
            err,
        )),
    }
}

/// Whether `err`, from locking, says the file system cannot lock: it does
/// not support locks, or (`ENOLCK`, "no locks available") it has no lock
/// service, as an NFS mount whose lock daemon is not running.
fn cannot_lock(err: &std::io::Error) -> bool {
    #[cfg(unix)]
    if err.raw_os_error() == Some(libc::ENOLCK) {
        return true;
    }
    err.kind() == ErrorKind::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_system_that_cannot_lock_leaves_the_store_usable() {
        let path = Path::new("/data/state.json");
        let lock_path = Path::new("/data/.state.json.lock");
        let unsupported = std::io::Error::new(ErrorKind::Unsupported, "no locks here");
        assert!(!settle(Err(TryLockError::Error(unsupported)), path, lock_path).unwrap());
        assert!(settle(Ok(()), path, lock_path).unwrap());
    }

    #[cfg(unix)]
    #[test]
    fn a_file_system_without_a_lock_service_leaves_the_store_usable() {
        // an NFS mount whose lock service (lockd, statd) is not running
        // answers every lock with ENOLCK, "no locks available": it cannot
        // lock, as one that does not support locks
        let path = Path::new("/data/state.json");
        let lock_path = Path::new("/data/.state.json.lock");
        let no_locks = std::io::Error::from_raw_os_error(libc::ENOLCK);
        assert!(!settle(Err(TryLockError::Error(no_locks)), path, lock_path).unwrap());
    }

    #[test]
    fn a_read_only_file_system_or_a_denied_write_is_a_read_only_location() {
        for kind in [ErrorKind::ReadOnlyFilesystem, ErrorKind::PermissionDenied] {
            assert!(is_read_only(&std::io::Error::from(kind)), "{kind:?}");
        }
        for kind in [
            ErrorKind::IsADirectory,
            ErrorKind::NotFound,
            ErrorKind::StorageFull,
        ] {
            assert!(!is_read_only(&std::io::Error::from(kind)), "{kind:?}");
        }
    }

    #[test]
    fn a_held_lock_is_a_conflict_and_a_failed_one_an_io_error_naming_the_files() {
        let path = Path::new("/data/state.json");
        let lock_path = Path::new("/data/.state.json.lock");
        let err = settle(Err(TryLockError::WouldBlock), path, lock_path).unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        let err = settle(
            Err(TryLockError::Error(std::io::Error::new(
                ErrorKind::PermissionDenied,
                "denied",
            ))),
            path,
            lock_path,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("/data/state.json"), "{text}");
        assert!(text.contains("/data/.state.json.lock"), "{text}");
    }
}
