use async_trait::async_trait;
use event_core::{Error, Result, StateStore, SubscriptionRecord};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Version written into state files; newer files are refused, not misread.
const FORMAT_VERSION: u64 = 1;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Persists subscriptions in a JSON file.
///
/// The file is `{"version": 1, "subscriptions": [<SubscriptionRecord>...]}`.
/// Loading also accepts a bare array of records and an object mapping
/// subscriber ids to records (older layouts).
///
/// - **Atomic.** `save` writes a temporary file in the same directory,
///   fsyncs it, renames it over the state file and fsyncs the directory:
///   after a crash the file holds the old set or the new one, never a torn
///   mix.
/// - **Off the executor.** File I/O runs on tokio's blocking pool.
/// - **Corrupt files.** A file that is not valid state is an error naming
///   the file ([`Error::Serialization`]); an unreadable one is
///   [`Error::Io`] naming it. The file is left untouched either way. A
///   missing file loads as no subscriptions.
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
}

impl FileStateStore {
    /// A store at `path` (created on the first save, with its directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
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

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Serialization(format!(
        "state file {} is corrupt (left untouched): {reason}",
        path.display()
    ))
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<SubscriptionRecord>> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e))?;
    let records = |v: Value| -> Result<Vec<SubscriptionRecord>> {
        serde_json::from_value(v).map_err(|e| corrupt(path, e))
    };
    match value {
        Value::Array(_) => records(value),
        Value::Object(mut map) if map.contains_key("subscriptions") => {
            let version = map.get("version").and_then(Value::as_u64).unwrap_or(1);
            if version > FORMAT_VERSION {
                return Err(corrupt(
                    path,
                    format!(
                        "format version {version} is newer than this library's {FORMAT_VERSION}"
                    ),
                ));
            }
            records(map.remove("subscriptions").unwrap_or(Value::Null))
        }
        Value::Object(map) => {
            let by_id: BTreeMap<String, SubscriptionRecord> =
                serde_json::from_value(Value::Object(map)).map_err(|e| corrupt(path, e))?;
            Ok(by_id.into_values().collect())
        }
        other => Err(corrupt(
            path,
            format!("expected an object or an array, found {other}"),
        )),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| {
        io_error(
            format!("creating the directory of state file {}", path.display()),
            e,
        )
    })?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| {
            Error::invalid_config("state file", format!("{} has no file name", path.display()))
        })?;
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = written {
        // best effort: do not leave temporary files behind
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
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(err) => Err(io_error(
                format!("reading state file {}", path.display()),
                err,
            )),
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
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| join_error(&self.path, e))?
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
        // no temporary files left behind
        let names: Vec<_> = std::fs::read_dir(dir.join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["state.json".to_string()]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn corrupt_file_is_a_clear_error_and_left_untouched() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        for body in [
            &b"{not json"[..],
            b"",
            b"42",
            b"{\"version\": 1, \"subscriptions\": [{\"subscriberId\": 5}]}",
            b"{\"version\": 99, \"subscriptions\": []}",
        ] {
            std::fs::write(&path, body).unwrap();
            let err = FileStateStore::new(&path).load().await.unwrap_err();
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
        assert_eq!(
            FileStateStore::new(&path).load().await.unwrap(),
            vec![record("a", None)]
        );
        std::fs::write(
            &path,
            r#"{"a":{"subscriberId":"a","subjects":["events.market.>"],"durable":true}}"#,
        )
        .unwrap();
        assert_eq!(
            FileStateStore::new(&path).load().await.unwrap(),
            vec![record("a", None)]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn unreadable_path_is_an_io_error_naming_it() {
        let dir = temp_dir("dir-as-file");
        std::fs::create_dir_all(&dir).unwrap();
        // the "file" is a directory: reading it fails
        let err = FileStateStore::new(&dir).load().await.unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains(&dir.display().to_string()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
