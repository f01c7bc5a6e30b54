//! The bootstrap cache: peers that accepted a direct connection before.
//!
//! A JSON file, most recent success first, bounded in size. It is written
//! atomically (temporary file, sync, rename), so a crash leaves the old or
//! the new file. A file that cannot be read or parsed is logged, moved aside
//! as `<name>.bad`, and replaced by an empty cache: a damaged cache never
//! stops a service from starting.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Endpoint;
use crate::id::PeerId;

const FORMAT_VERSION: u32 = 1;
/// Endpoints remembered per peer.
const ADDRS_PER_PEER: usize = 4;

/// One remembered peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Who.
    pub id: PeerId,
    /// Where it answered, and over what transport, most recent first.
    pub addrs: Vec<Endpoint>,
    /// When it last accepted us, in seconds since the Unix epoch.
    pub last_success: u64,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    peers: Vec<CacheEntry>,
}

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The file could not be read or written.
    #[error("bootstrap cache {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not a valid cache.
    #[error("bootstrap cache {path} is damaged: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Peers to try first on the next start.
#[derive(Debug)]
pub struct BootstrapCache {
    path: PathBuf,
    capacity: usize,
    entries: Vec<CacheEntry>,
}

impl BootstrapCache {
    /// The cache's usual place: `bootstrap-cache.json` in the data
    /// directory for "crust", if the platform has one.
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "crust")
            .map(|dirs| dirs.data_dir().join("bootstrap-cache.json"))
    }

    /// Opens the cache at `path`. A missing file gives an empty cache; a
    /// damaged or unreadable one is moved aside as `.bad`, and the error is
    /// returned alongside the empty cache that replaces it.
    pub fn open(path: &Path, capacity: usize) -> (Self, Option<CacheError>) {
        let mut cache = Self {
            path: path.to_owned(),
            capacity,
            entries: Vec::new(),
        };
        let problem = match std::fs::read(path) {
            Ok(bytes) => match parse(&bytes) {
                Ok(peers) => {
                    cache.entries = peers;
                    cache.normalise();
                    None
                }
                Err(reason) => Some(reason),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(e.to_string()),
        };
        let error = problem.map(|reason| {
            let bad = bad_path(path);
            let moved = std::fs::rename(path, &bad);
            tracing::warn!(
                path = %path.display(),
                %reason,
                kept_as = %bad.display(),
                moved_aside = moved.is_ok(),
                "bootstrap cache is damaged; starting with an empty one"
            );
            CacheError::Damaged {
                path: path.to_owned(),
                reason,
            }
        });
        (cache, error)
    }

    /// The file this cache is saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remembered peers, most recent success first.
    pub fn entries(&self) -> &[CacheEntry] {
        &self.entries
    }

    /// Records that `id` accepted a direct connection at `addr` at `when`.
    pub fn record_success(&mut self, id: PeerId, addr: Endpoint, when: SystemTime) {
        let secs = when
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let entry = match self.entries.iter().position(|e| e.id == id) {
            Some(i) => self.entries.remove(i),
            None => CacheEntry {
                id,
                addrs: Vec::new(),
                last_success: secs,
            },
        };
        let mut entry = entry;
        entry.addrs.retain(|a| *a != addr);
        entry.addrs.insert(0, addr);
        entry.addrs.truncate(ADDRS_PER_PEER);
        entry.last_success = entry.last_success.max(secs);
        self.entries.insert(0, entry);
        self.normalise();
    }

    /// Forgets a peer.
    pub fn remove(&mut self, id: &PeerId) {
        self.entries.retain(|e| e.id != *id);
    }

    /// Writes the cache to its file atomically.
    pub fn save(&self) -> Result<(), CacheError> {
        let file = CacheFile {
            version: FORMAT_VERSION,
            peers: self.entries.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| CacheError::Damaged {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        crate::fsutil::write_atomically(&self.path, false, |f| std::io::Write::write_all(f, &json))
            .map_err(|source| CacheError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Most recent first, one entry per peer, at most `capacity`.
    fn normalise(&mut self) {
        self.entries
            .sort_by_key(|e| std::cmp::Reverse(e.last_success));
        let mut seen = std::collections::HashSet::new();
        self.entries
            .retain(|e| seen.insert(e.id) && !e.addrs.is_empty());
        self.entries.truncate(self.capacity);
    }
}

/// Parses a cache file's bytes (read from disk: untrusted). The error is a
/// reason for the log.
pub(crate) fn parse(bytes: &[u8]) -> Result<Vec<CacheEntry>, String> {
    match serde_json::from_slice::<CacheFile>(bytes) {
        Ok(file) if file.version == FORMAT_VERSION => Ok(file.peers),
        Ok(file) => Err(format!("unknown format version {}", file.version)),
        Err(e) => Err(e.to_string()),
    }
}

fn bad_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".bad");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretId;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn entries_are_saved_and_loaded_most_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache.json");
        let (mut cache, err) = BootstrapCache::open(&path, 10);
        assert!(err.is_none());
        let (a, b) = (
            SecretId::generate().peer_id(),
            SecretId::generate().peer_id(),
        );
        cache.record_success(a, "tcp:127.0.0.1:1".parse().unwrap(), at(100));
        cache.record_success(b, "tcp:127.0.0.1:2".parse().unwrap(), at(200));
        cache.record_success(a, "tcp:127.0.0.1:3".parse().unwrap(), at(300));
        cache.save().unwrap();
        let (loaded, err) = BootstrapCache::open(&path, 10);
        assert!(err.is_none());
        let ids: Vec<_> = loaded.entries().iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![a, b]);
        assert_eq!(
            loaded.entries()[0].addrs,
            vec![
                "tcp:127.0.0.1:3".parse::<Endpoint>().unwrap(),
                "tcp:127.0.0.1:1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn the_oldest_entries_are_dropped_beyond_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let (mut cache, _) = BootstrapCache::open(&dir.path().join("c.json"), 3);
        let ids: Vec<_> = (0..5).map(|_| SecretId::generate().peer_id()).collect();
        for (i, id) in ids.iter().enumerate() {
            cache.record_success(*id, "tcp:127.0.0.1:1".parse().unwrap(), at(i as u64));
        }
        let kept: Vec<_> = cache.entries().iter().map(|e| e.id).collect();
        assert_eq!(kept, vec![ids[4], ids[3], ids[2]]);
    }

    #[test]
    fn a_damaged_file_is_kept_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::fs::write(&path, b"{\"version\":1,\"peers\":[{\"id\":\"garbage").unwrap();
        let (mut cache, err) = BootstrapCache::open(&path, 10);
        assert!(matches!(err, Some(CacheError::Damaged { .. })));
        assert!(cache.entries().is_empty());
        let bad = dir.path().join("cache.json.bad");
        assert!(std::fs::read_to_string(&bad).unwrap().contains("garbage"));
        cache.record_success(
            SecretId::generate().peer_id(),
            "tcp:127.0.0.1:1".parse().unwrap(),
            at(1),
        );
        cache.save().unwrap();
        assert_eq!(BootstrapCache::open(&path, 10).0.entries().len(), 1);
    }

    #[test]
    fn a_future_format_or_binary_junk_is_treated_as_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::fs::write(&path, b"{\"version\":99,\"peers\":[]}").unwrap();
        assert!(BootstrapCache::open(&path, 10).1.is_some());
        std::fs::write(&path, [0xffu8, 0, 1, 2]).unwrap();
        assert!(BootstrapCache::open(&path, 10).1.is_some());
        // A directory where the file should be is unreadable, not a crash.
        let dir_path = dir.path().join("a-directory");
        std::fs::create_dir(&dir_path).unwrap();
        let (cache, err) = BootstrapCache::open(&dir_path, 10);
        assert!(err.is_some());
        assert!(cache.entries().is_empty());
    }
}
