//! A profile: one directory holding one user.
//!
//! ```text
//! DIR/identity.key     the Ed25519 seed, mode 0600, optionally sealed
//! DIR/settings.toml    display name, listen addresses, bootstrap peers, UPnP
//! DIR/history.sqlite   contacts, requests, messages (see `store`)
//! DIR/bootstrap.json   crust's bootstrap cache
//! DIR/lock             held (flock) while a process has the profile open
//! ```
//!
//! Order of calls: [`Profile::create`] once, then [`Profile::open`] (with
//! the passphrase if the key is sealed); hand the profile to
//! [`Node::open`](crate::Node::open). The lock is held until the profile
//! (or the node that took it) is dropped, so a second process gets
//! [`ProfileError::InUse`] instead of a shared, corrupted database.
//! [`export`](Profile::export) writes the whole profile to one file and
//! [`import`] unpacks such a file into a new directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crust::{Endpoint, PeerId, SecretId};
use serde::{Deserialize, Serialize};

use crate::keyfile::{self, KeyError};

/// The environment variable naming a profile directory.
pub const PROFILE_ENV: &str = "CRUST_CHAT_PROFILE";

pub(crate) const KEY_FILE: &str = "identity.key";
pub(crate) const SETTINGS_FILE: &str = "settings.toml";
pub(crate) const HISTORY_FILE: &str = "history.sqlite";
pub(crate) const BOOTSTRAP_FILE: &str = "bootstrap.json";
const LOCK_FILE: &str = "lock";

const EXPORT_MAGIC: &[u8] = b"CRUSTCHAT-PROFILE\n";
const EXPORT_VERSION: u8 = 1;

/// The human-editable settings of a profile (`settings.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The name our friends see.
    pub display_name: String,
    /// Addresses to listen on (TCP). A fixed port lets friends reach us
    /// again after a restart.
    pub listen: Vec<SocketAddr>,
    /// Whether to run uTP (over one UDP socket) beside TCP.
    pub utp: bool,
    /// Where to bind the uTP socket; unset means the UDP port with the
    /// same address and number as the first TCP listen address.
    pub utp_listen: Option<SocketAddr>,
    /// Peers to bootstrap from, as `ID@IP:PORT` or `IP:PORT`.
    pub bootstrap: Vec<String>,
    /// Whether to ask the router for a port mapping (UPnP IGD).
    pub upnp: bool,
    /// Extra addresses to put in our invite (e.g. a forwarded public
    /// port), as `tcp:IP:PORT` or `utp:IP:PORT` (a bare `IP:PORT` is TCP).
    pub address_hints: Vec<Endpoint>,
    /// Peers that hold mail for us while we are away, as
    /// `ID@tcp:IP:PORT` (the id is required): our own always-on
    /// `crust-node --hold`, or a friend's chat node. Friends are told of
    /// them and leave sealed messages there.
    pub holders: Vec<String>,
    /// Whether to announce ourselves on the local network and find
    /// friends there with no server (UDP broadcast beacons). A node that
    /// listens on loopback only never does.
    pub lan_discovery: bool,
    /// Whether to serve the DHT that finds friends who moved: `auto`
    /// (when crust finds no NAT in front of us, or the router mapped a
    /// port), `server` (an always-on node on a public host) or `client`
    /// (only look up and publish). A node config or `--dht-mode` that
    /// says `server` or `client` wins over this.
    pub dht_mode: crate::DhtMode,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            display_name: String::new(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            utp: true,
            utp_listen: None,
            upnp: true,
            address_hints: Vec::new(),
            holders: Vec::new(),
            lan_discovery: true,
            dht_mode: crate::DhtMode::Auto,
        }
    }
}

/// Why a profile could not be created, opened, changed, exported or
/// imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// Another process (or another `Profile` in this one) has it open.
    #[error("profile {0} is already in use by another program")]
    InUse(PathBuf),
    /// [`Profile::open`] on a directory without a profile.
    #[error("no profile at {0}")]
    NotFound(PathBuf),
    /// [`Profile::create`] or [`import`] where a profile already exists.
    #[error("a profile already exists at {0}; nothing was overwritten")]
    AlreadyExists(PathBuf),
    /// No profile directory could be chosen (no home directory).
    #[error("cannot determine a profile directory; pass one explicitly")]
    NoDefaultDir,
    /// The identity key could not be read or sealed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `settings.toml` is not valid.
    #[error("settings file {path} is invalid: {message}")]
    Settings {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The history database could not be copied for an export.
    #[error("history database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// An import file is damaged, truncated or not a profile export.
    #[error("not a valid profile export: {0}")]
    BadExport(&'static str),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError + '_ {
    move |source| ProfileError::Io {
        path: path.to_owned(),
        source,
    }
}

/// An open profile. Holds the profile lock until dropped.
#[derive(Debug)]
pub struct Profile {
    dir: PathBuf,
    secret: SecretId,
    settings: Settings,
    sealed: bool,
    _lock: File,
}

impl Profile {
    /// The profile directory to use: `explicit` if given, else
    /// `$CRUST_CHAT_PROFILE`, else the platform's data directory for
    /// "Crust Chat" (`$XDG_DATA_HOME/crustchat`, usually
    /// `~/.local/share/crustchat`, on Linux).
    pub fn resolve_dir(explicit: Option<&Path>) -> Result<PathBuf, ProfileError> {
        if let Some(dir) = explicit {
            return Ok(dir.to_owned());
        }
        if let Some(dir) = std::env::var_os(PROFILE_ENV).filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir));
        }
        directories::ProjectDirs::from("", "", "Crust Chat")
            .map(|dirs| dirs.data_dir().to_owned())
            .ok_or(ProfileError::NoDefaultDir)
    }

    /// Whether `dir` holds a profile.
    pub fn exists(dir: &Path) -> bool {
        dir.join(KEY_FILE).exists()
    }

    /// Creates a new profile in `dir` (created if missing) with a new
    /// identity, sealed with `passphrase` if given. Fails if a profile is
    /// already there.
    pub fn create(
        dir: &Path,
        display_name: &str,
        passphrase: Option<&str>,
    ) -> Result<Self, ProfileError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock = lock(dir)?;
        if Self::exists(dir) {
            return Err(ProfileError::AlreadyExists(dir.to_owned()));
        }
        let secret = SecretId::generate();
        write_private(
            &dir.join(KEY_FILE),
            keyfile::seal(&secret, passphrase)?.as_bytes(),
        )?;
        let settings = Settings {
            display_name: display_name.to_owned(),
            listen: vec![SocketAddr::from(([0, 0, 0, 0], random_port()))],
            ..Settings::default()
        };
        let profile = Self {
            dir: dir.to_owned(),
            secret,
            settings,
            sealed: passphrase.is_some(),
            _lock: lock,
        };
        profile.save_settings()?;
        Ok(profile)
    }

    /// Opens the profile in `dir`. A sealed key needs its `passphrase`.
    pub fn open(dir: &Path, passphrase: Option<&str>) -> Result<Self, ProfileError> {
        if !Self::exists(dir) {
            return Err(ProfileError::NotFound(dir.to_owned()));
        }
        let lock = lock(dir)?;
        let key_path = dir.join(KEY_FILE);
        let text =
            zeroize::Zeroizing::new(fs::read_to_string(&key_path).map_err(io_error(&key_path))?);
        let secret = keyfile::open(&text, passphrase)?;
        let settings_path = dir.join(SETTINGS_FILE);
        let settings = match fs::read_to_string(&settings_path) {
            Ok(text) => toml::from_str(&text).map_err(|e| ProfileError::Settings {
                path: settings_path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Settings::default(),
            Err(e) => return Err(io_error(&settings_path)(e)),
        };
        Ok(Self {
            dir: dir.to_owned(),
            secret,
            settings,
            sealed: keyfile::is_sealed(&text),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Our public identity.
    pub fn peer_id(&self) -> PeerId {
        self.secret.peer_id()
    }

    pub(crate) fn secret(&self) -> &SecretId {
        &self.secret
    }

    /// The settings as loaded.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Replaces the settings and writes `settings.toml`.
    pub fn set_settings(&mut self, settings: Settings) -> Result<(), ProfileError> {
        self.settings = settings;
        self.save_settings()
    }

    fn save_settings(&self) -> Result<(), ProfileError> {
        let path = self.dir.join(SETTINGS_FILE);
        let text = toml::to_string_pretty(&self.settings).map_err(|e| ProfileError::Settings {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let text = format!("# Crust Chat settings. Edit while the program is not running.\n{text}");
        write_private(&path, text.as_bytes())
    }

    /// Whether the identity key is sealed with a passphrase.
    pub fn has_passphrase(&self) -> bool {
        self.sealed
    }

    /// Seals the key with a new passphrase, or stores it in the clear with
    /// `None`. (The old passphrase was proven by opening the profile.)
    pub fn change_passphrase(&mut self, new: Option<&str>) -> Result<(), ProfileError> {
        let text = keyfile::seal(&self.secret, new)?;
        write_private(&self.dir.join(KEY_FILE), text.as_bytes())?;
        self.sealed = new.is_some();
        Ok(())
    }

    /// Writes the whole profile (key file as it is on disk, so still sealed
    /// if it has a passphrase; settings; a consistent copy of the history,
    /// taken while it may be in use) to one file at `to`.
    ///
    /// The history is not encrypted in the export: keep the file as private
    /// as the profile directory.
    pub fn export(&self, to: &Path) -> Result<(), ProfileError> {
        let mut files = Vec::new();
        for name in [KEY_FILE, SETTINGS_FILE, BOOTSTRAP_FILE] {
            let path = self.dir.join(name);
            match fs::read(&path) {
                Ok(bytes) => files.push((name.to_owned(), bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && name != KEY_FILE => {}
                Err(e) => return Err(io_error(&path)(e)),
            }
        }
        let history = self.dir.join(HISTORY_FILE);
        if history.exists() {
            let snapshot = self.dir.join("export-snapshot.sqlite.tmp");
            let _ = fs::remove_file(&snapshot);
            crate::store::snapshot(&history, &snapshot)?;
            let bytes = fs::read(&snapshot).map_err(io_error(&snapshot));
            let _ = fs::remove_file(&snapshot);
            files.push((HISTORY_FILE.to_owned(), bytes?));
        }
        let body = postcard::to_stdvec(&(EXPORT_VERSION, files))
            .map_err(|_| ProfileError::BadExport("encoding failed"))?;
        let mut out = Vec::with_capacity(EXPORT_MAGIC.len() + body.len() + 32);
        out.extend_from_slice(EXPORT_MAGIC);
        out.extend_from_slice(&body);
        let digest = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(digest.as_ref());
        write_private(to, &out)
    }
}

/// Unpacks a file written by [`Profile::export`] into `dir`, which must not
/// hold a profile yet. Then open it with [`Profile::open`] (and the
/// passphrase, if the exported key was sealed).
pub fn import(file: &Path, dir: &Path) -> Result<(), ProfileError> {
    let bytes = fs::read(file).map_err(io_error(file))?;
    if bytes.len() < EXPORT_MAGIC.len() + 32 || !bytes.starts_with(EXPORT_MAGIC) {
        return Err(ProfileError::BadExport("missing header"));
    }
    let (content, digest) = bytes.split_at(bytes.len() - 32);
    if ring::digest::digest(&ring::digest::SHA256, content).as_ref() != digest {
        return Err(ProfileError::BadExport(
            "checksum mismatch (damaged or truncated)",
        ));
    }
    let (version, files): (u8, Vec<(String, Vec<u8>)>) =
        postcard::from_bytes(&content[EXPORT_MAGIC.len()..])
            .map_err(|_| ProfileError::BadExport("bad contents"))?;
    if version != EXPORT_VERSION {
        return Err(ProfileError::BadExport("unsupported version"));
    }
    let allowed = [KEY_FILE, SETTINGS_FILE, HISTORY_FILE, BOOTSTRAP_FILE];
    if !files.iter().any(|(name, _)| name == KEY_FILE)
        || files
            .iter()
            .any(|(name, _)| !allowed.contains(&name.as_str()))
    {
        return Err(ProfileError::BadExport("unexpected files"));
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let _lock = lock(dir)?;
    if Profile::exists(dir) || dir.join(HISTORY_FILE).exists() {
        return Err(ProfileError::AlreadyExists(dir.to_owned()));
    }
    // The key goes last: a profile "exists" only once every file is there.
    for (name, data) in files.iter().filter(|(n, _)| n != KEY_FILE) {
        write_private(&dir.join(name), data)?;
    }
    for (name, data) in files.iter().filter(|(n, _)| n == KEY_FILE) {
        write_private(&dir.join(name), data)?;
    }
    Ok(())
}

fn lock(dir: &Path) -> Result<File, ProfileError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(ProfileError::InUse(dir.to_owned())),
        Err(fs::TryLockError::Error(e)) => Err(io_error(&path)(e)),
    }
}

/// Writes `data` to `path` atomically (temp file, fsync, rename), readable
/// only by the owner.
fn write_private(path: &Path, data: &[u8]) -> Result<(), ProfileError> {
    let tmp = path.with_extension("tmp");
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io_error(&tmp))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error(path))
}

fn random_port() -> u16 {
    let mut bytes = [0u8; 2];
    crate::fill_random(&mut bytes);
    20_000 + u16::from_le_bytes(bytes) % 40_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_profile_directory_wins_and_the_default_is_the_data_dir() {
        let dir = Path::new("/somewhere/else");
        assert_eq!(Profile::resolve_dir(Some(dir)).unwrap(), dir);
        if std::env::var_os(PROFILE_ENV).is_none() && std::env::var_os("HOME").is_some() {
            let default = Profile::resolve_dir(None).unwrap();
            assert!(default.ends_with("crustchat"), "{}", default.display());
        }
    }

    #[test]
    fn create_then_open_gives_the_same_identity_and_settings() {
        let dir = tempfile::tempdir().unwrap();
        let id = {
            let p = Profile::create(dir.path(), "alice", None).unwrap();
            assert_eq!(p.settings().display_name, "alice");
            assert_eq!(p.settings().listen.len(), 1);
            p.peer_id()
        };
        let p = Profile::open(dir.path(), None).unwrap();
        assert_eq!(p.peer_id(), id);
        assert_eq!(p.settings().display_name, "alice");
        assert!(!p.has_passphrase());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let _p = Profile::create(dir.path(), "alice", None).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let first = Profile::create(dir.path(), "alice", None).unwrap();
        let err = Profile::open(dir.path(), None).unwrap_err();
        assert!(matches!(err, ProfileError::InUse(_)), "{err}");
        assert!(err.to_string().contains("already in use"));
        drop(first);
        Profile::open(dir.path(), None).unwrap();
    }

    #[test]
    fn create_never_overwrites_and_open_needs_a_profile() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Profile::open(dir.path(), None),
            Err(ProfileError::NotFound(_))
        ));
        let id = Profile::create(dir.path(), "a", None).unwrap().peer_id();
        assert!(matches!(
            Profile::create(dir.path(), "b", None),
            Err(ProfileError::AlreadyExists(_))
        ));
        assert_eq!(Profile::open(dir.path(), None).unwrap().peer_id(), id);
    }

    #[test]
    fn passphrase_right_wrong_missing_and_changed() {
        let dir = tempfile::tempdir().unwrap();
        let id = Profile::create(dir.path(), "a", Some("one"))
            .unwrap()
            .peer_id();
        let before = fs::read(dir.path().join(KEY_FILE)).unwrap();
        assert!(matches!(
            Profile::open(dir.path(), Some("two")),
            Err(ProfileError::Key(KeyError::WrongPassphrase))
        ));
        assert!(matches!(
            Profile::open(dir.path(), None),
            Err(ProfileError::Key(KeyError::PassphraseRequired))
        ));
        // A failed open changes nothing on disk.
        assert_eq!(fs::read(dir.path().join(KEY_FILE)).unwrap(), before);
        let mut p = Profile::open(dir.path(), Some("one")).unwrap();
        assert!(p.has_passphrase());
        p.change_passphrase(Some("two")).unwrap();
        drop(p);
        assert!(matches!(
            Profile::open(dir.path(), Some("one")),
            Err(ProfileError::Key(KeyError::WrongPassphrase))
        ));
        let mut p = Profile::open(dir.path(), Some("two")).unwrap();
        assert_eq!(p.peer_id(), id);
        p.change_passphrase(None).unwrap();
        drop(p);
        assert_eq!(Profile::open(dir.path(), None).unwrap().peer_id(), id);
    }

    #[test]
    fn settings_are_a_human_readable_file_and_older_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Profile::create(dir.path(), "Zoë", None).unwrap();
        let mut settings = p.settings().clone();
        settings.address_hints = vec!["utp:198.51.100.1:4000".parse().unwrap()];
        settings.bootstrap = vec!["192.0.2.9:5483".into()];
        settings.dht_mode = crate::DhtMode::Server;
        p.set_settings(settings.clone()).unwrap();
        drop(p);
        let text = fs::read_to_string(dir.path().join(SETTINGS_FILE)).unwrap();
        for line in [
            "display_name = \"Zoë\"",
            "utp = true",
            "upnp = true",
            "address_hints = [\"utp:198.51.100.1:4000\"]",
            "bootstrap = [\"192.0.2.9:5483\"]",
            "dht_mode = \"server\"",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
        assert_eq!(
            Profile::open(dir.path(), None).unwrap().settings(),
            &settings
        );
        // A file written before uTP: bare hints are TCP, uTP is on.
        fs::write(
            dir.path().join(SETTINGS_FILE),
            "display_name = \"Old\"\nlisten = [\"0.0.0.0:5483\"]\naddress_hints = [\"192.0.2.1:5483\"]\n",
        )
        .unwrap();
        let p = Profile::open(dir.path(), None).unwrap();
        assert_eq!(
            p.settings().address_hints,
            vec![Endpoint::tcp("192.0.2.1:5483".parse().unwrap())]
        );
        assert!(p.settings().utp);
        assert_eq!(p.settings().utp_listen, None);
        assert_eq!(p.settings().dht_mode, crate::DhtMode::Auto);
    }

    #[test]
    fn invalid_settings_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        drop(Profile::create(dir.path(), "a", None).unwrap());
        fs::write(dir.path().join(SETTINGS_FILE), "listen = 5\n").unwrap();
        let err = Profile::open(dir.path(), None).unwrap_err();
        assert!(matches!(err, ProfileError::Settings { .. }), "{err}");
        fs::write(dir.path().join(SETTINGS_FILE), "dht_mode = \"sever\"\n").unwrap();
        let err = Profile::open(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("dht_mode") || err.contains("sever"), "{err}");
    }

    #[test]
    fn export_refuses_damage_and_import_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let p = Profile::create(&src, "alice", Some("pw")).unwrap();
        let file = dir.path().join("backup.crustchat");
        p.export(&file).unwrap();

        let mut damaged = fs::read(&file).unwrap();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 1;
        let bad = dir.path().join("bad");
        fs::write(&bad, &damaged).unwrap();
        assert!(matches!(
            import(&bad, &dir.path().join("x")),
            Err(ProfileError::BadExport(_))
        ));
        assert!(!Profile::exists(&dir.path().join("x")));

        let dst = dir.path().join("dst");
        import(&file, &dst).unwrap();
        assert!(matches!(
            import(&file, &dst),
            Err(ProfileError::AlreadyExists(_))
        ));
        let q = Profile::open(&dst, Some("pw")).unwrap();
        assert_eq!(q.peer_id(), p.peer_id());
        assert_eq!(q.settings(), p.settings());
    }
}
