//! Where the day files go. A local folder: the export is written into a temporary folder under
//! `.tmp/` (each file fsynced, then the folder), renamed into `{store}/{name}` in one step and the
//! parent fsynced, so a reader sees a whole export or none. An object store (S3-compatible): one
//! PUT per file, `manifest.json` last (a reader takes an export whose manifest is there).
//!
//! Delivery guarantee: what is delivered is never overwritten: delivering an export whose manifest
//! is already in place succeeds when the bytes are the same and fails otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use tillstream_runtime::fault::Hold;

use super::{ExportError, Rendered};
use crate::config::{DestinationConfig, DestinationKind};

/// What a delivery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Written,
    /// The same bytes were already in place (a delivery repeated after a crash).
    AlreadyThere,
}

/// A destination for exports.
#[derive(Clone)]
pub enum Sink {
    Local(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        prefix: String,
    },
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Local(p) => write!(f, "Local({})", p.display()),
            Sink::Object { prefix, .. } => write!(f, "Object({prefix})"),
        }
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), ExportError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

fn manifest_of(r: &Rendered) -> &[u8] {
    r.files
        .iter()
        .find(|(n, _)| n == "manifest.json")
        .map(|(_, b)| b.as_slice())
        .unwrap_or_default()
}

impl Sink {
    /// The sink a config names.
    pub fn from_config(cfg: &DestinationConfig) -> Result<Sink, ExportError> {
        match cfg.kind {
            DestinationKind::Local => Ok(Sink::Local(cfg.dir.clone())),
            DestinationKind::ObjectStore => {
                let url = cfg.url.strip_prefix("s3://").ok_or_else(|| {
                    ExportError::Invalid("destination.url must be s3://bucket/prefix".into())
                })?;
                let (bucket, prefix) = url.split_once('/').unwrap_or((url, ""));
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_region(&cfg.region)
                    .with_allow_http(cfg.allow_http);
                if !cfg.endpoint.is_empty() {
                    b = b.with_endpoint(&cfg.endpoint);
                }
                if !cfg.access_key_id.is_empty() {
                    b = b
                        .with_access_key_id(&cfg.access_key_id)
                        .with_secret_access_key(cfg.secret_access_key.expose());
                }
                Ok(Sink::Object {
                    store: Arc::new(b.build()?),
                    prefix: prefix.trim_matches('/').to_string(),
                })
            }
        }
    }

    /// Where an export lands (for logs and the run summary).
    pub fn location(&self, store: &str, name: &str) -> String {
        match self {
            Sink::Local(dir) => dir.join(store).join(name).display().to_string(),
            Sink::Object { prefix, .. } => format!("{prefix}/{store}/{name}"),
        }
    }

    /// Removes what an interrupted local delivery left in `.tmp/` (never visible as an export).
    pub fn clean_interrupted(&self) -> Result<usize, ExportError> {
        let Sink::Local(dir) = self else {
            return Ok(0);
        };
        let tmp = dir.join(".tmp");
        let Ok(entries) = std::fs::read_dir(&tmp) else {
            return Ok(0);
        };
        let mut n = 0;
        for e in entries.flatten() {
            std::fs::remove_dir_all(e.path()).map_err(io(&e.path()))?;
            n += 1;
        }
        Ok(n)
    }

    /// Delivers the files of `rendered` as `{store}/{name}/`.
    pub async fn deliver(
        &self,
        store: &str,
        name: &str,
        rendered: Rendered,
    ) -> Result<Delivery, ExportError> {
        self.deliver_holding(store, name, rendered, Hold::default())
            .await
    }

    /// [`Sink::deliver`], holding a local delivery mid-write when `hold` says so (tests kill the
    /// process then).
    pub async fn deliver_holding(
        &self,
        store: &str,
        name: &str,
        rendered: Rendered,
        hold: Hold,
    ) -> Result<Delivery, ExportError> {
        match self {
            Sink::Local(dir) => {
                let dir = dir.clone();
                let (store, name) = (store.to_string(), name.to_string());
                tokio::task::spawn_blocking(move || {
                    deliver_local(&dir, &store, &name, &rendered, &hold)
                })
                .await
                .map_err(|e| ExportError::Invalid(format!("delivery task: {e}")))?
            }
            Sink::Object { store: os, prefix } => {
                let base = if prefix.is_empty() {
                    format!("{store}/{name}")
                } else {
                    format!("{prefix}/{store}/{name}")
                };
                let manifest_path = ObjectPath::from(format!("{base}/manifest.json"));
                match os.get(&manifest_path).await {
                    Ok(existing) => {
                        let bytes = existing.bytes().await?;
                        return if bytes.as_ref() == manifest_of(&rendered) {
                            Ok(Delivery::AlreadyThere)
                        } else {
                            Err(ExportError::Conflict(base))
                        };
                    }
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
                // The manifest is the last file (render's order): a reader never sees it before
                // every file it lists.
                for (file, bytes) in rendered.files {
                    os.put(&ObjectPath::from(format!("{base}/{file}")), bytes.into())
                        .await?;
                }
                Ok(Delivery::Written)
            }
        }
    }
}

fn deliver_local(
    dir: &Path,
    store: &str,
    name: &str,
    rendered: &Rendered,
    hold: &Hold,
) -> Result<Delivery, ExportError> {
    let target = dir.join(store).join(name);
    if target.exists() {
        let existing = std::fs::read(target.join("manifest.json")).map_err(io(&target))?;
        return if existing == manifest_of(rendered) {
            Ok(Delivery::AlreadyThere)
        } else {
            Err(ExportError::Conflict(target.display().to_string()))
        };
    }
    let tmp_root = dir.join(".tmp");
    std::fs::create_dir_all(&tmp_root).map_err(io(&tmp_root))?;
    let tmp = tmp_root.join(format!("{store}-{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    for (i, (file, bytes)) in rendered.files.iter().enumerate() {
        let path = tmp.join(file);
        let mut f = std::fs::File::create(&path).map_err(io(&path))?;
        std::io::Write::write_all(&mut f, bytes).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        if i == 0 {
            hold.hold_blocking("holding a delivery mid-write");
        }
    }
    fsync_dir(&tmp)?;
    let parent = dir.join(store);
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    std::fs::rename(&tmp, &target).map_err(io(&target))?;
    fsync_dir(&parent)?;
    Ok(Delivery::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(manifest: &[u8]) -> Rendered {
        Rendered {
            export_id: "s1/d".into(),
            files: vec![
                ("ledger.csv".into(), b"a\n".to_vec()),
                ("manifest.json".into(), manifest.to_vec()),
            ],
            rows: 1,
            adjustments: 0,
        }
    }

    #[tokio::test]
    async fn a_local_delivery_appears_whole_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::Local(dir.path().to_path_buf());
        assert_eq!(
            sink.deliver("s1", "d", rendered(b"m1")).await.unwrap(),
            Delivery::Written
        );
        assert_eq!(
            std::fs::read(dir.path().join("s1/d/ledger.csv")).unwrap(),
            b"a\n"
        );
        assert_eq!(
            sink.deliver("s1", "d", rendered(b"m1")).await.unwrap(),
            Delivery::AlreadyThere
        );
        let err = sink.deliver("s1", "d", rendered(b"m2")).await.unwrap_err();
        assert!(matches!(err, ExportError::Conflict(_)), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("s1/d/manifest.json")).unwrap(),
            b"m1"
        );
        // An interrupted delivery's temp folder is never an export, and is cleaned.
        std::fs::create_dir_all(dir.path().join(".tmp/s1-x-1")).unwrap();
        assert_eq!(sink.clean_interrupted().unwrap(), 1);
    }

    #[tokio::test]
    async fn an_object_store_delivery_puts_the_manifest_last_and_never_overwrites() {
        let mem = Arc::new(object_store::memory::InMemory::new());
        let sink = Sink::Object {
            store: mem.clone(),
            prefix: "finance".into(),
        };
        sink.deliver("s1", "d", rendered(b"m1")).await.unwrap();
        let got = mem
            .get(&ObjectPath::from("finance/s1/d/ledger.csv"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), b"a\n");
        assert_eq!(
            sink.deliver("s1", "d", rendered(b"m1")).await.unwrap(),
            Delivery::AlreadyThere
        );
        assert!(sink.deliver("s1", "d", rendered(b"m2")).await.is_err());
    }
}
