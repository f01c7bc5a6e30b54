//! Bad bytes on disk (#11): a damaged or hostile identity key file or
//! settings file makes `Profile::open` fail with an error, never panic,
//! and leaves the file as it was. (Invite codes, profile import and the
//! wire decoder are covered by `tests/decoders.rs` and `proto::tests`.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use chat_core::Profile;
use proptest::prelude::*;

/// A fresh profile (plain key) in a temporary directory.
fn profile() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    drop(Profile::create(&dir.path().join("p"), "me", None).unwrap());
    dir
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_garbage_key_file_is_refused_and_kept(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let root = profile();
        let dir = root.path().join("p");
        let key = dir.join("identity.key");
        std::fs::write(&key, &bytes).unwrap();
        prop_assert!(Profile::open(&dir, None).is_err());
        prop_assert!(Profile::open(&dir, Some("passphrase")).is_err());
        prop_assert_eq!(std::fs::read(&key).unwrap(), bytes);
    }

    #[test]
    fn a_mangled_key_file_opens_or_is_refused(bit in any::<usize>(), keep in any::<usize>()) {
        let root = profile();
        let dir = root.path().join("p");
        let key = dir.join("identity.key");
        let mut bytes = std::fs::read(&key).unwrap();
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        bytes.truncate(keep % (bytes.len() + 1));
        std::fs::write(&key, &bytes).unwrap();
        // A flip inside the base32 seed can give another valid seed; a
        // flip anywhere else, or a cut, must be an error.
        let _ = Profile::open(&dir, None);
        prop_assert_eq!(std::fs::read(&key).unwrap(), bytes);
    }

    #[test]
    fn garbage_settings_are_refused(text in "\\PC{0,200}") {
        let root = profile();
        let dir = root.path().join("p");
        std::fs::write(dir.join("settings.toml"), &text).unwrap();
        // Either the settings parse (fields are optional) or they are an error.
        let _ = Profile::open(&dir, None);
    }

    #[test]
    fn sealed_messages_open_only_unchanged(bytes in proptest::collection::vec(any::<u8>(), 0..2000), flip in any::<usize>()) {
        chat_core::fuzzing::sealed_message(&bytes, flip);
    }
}
