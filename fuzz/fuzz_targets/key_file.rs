//! Fuzz target: crust's identity key file (`SecretId::load`), read from a
//! file holding arbitrary bytes.
#![no_main]

use std::sync::OnceLock;

fn path() -> &'static std::path::PathBuf {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("crust-fuzz-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        dir.join("key")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    std::fs::write(path(), data).expect("the temporary file");
    if let Ok(secret) = crust::SecretId::load(path()) {
        // What loads saves and loads back as the same key.
        secret.save(path()).expect("save");
        let again = crust::SecretId::load(path()).expect("reload");
        assert_eq!(again.peer_id(), secret.peer_id());
    }
});
