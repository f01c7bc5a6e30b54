//! Fuzz target: a responder's whole handshake fed arbitrary bytes (the
//! Noise messages' framing and decryption, then the payload), as a
//! stranger connecting to a listener would send them.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use crust::{ChannelConfig, SecretId, secure::SecureChannel};
use tokio::io::AsyncWriteExt;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        let (mut attacker, ours) = tokio::io::duplex(1 << 17);
        let _ = attacker.write_all(data).await;
        let _ = attacker.shutdown().await;
        let config = ChannelConfig {
            handshake_timeout: Duration::from_secs(1),
            ..ChannelConfig::default()
        };
        let secret = SecretId::from_bytes(&[1; 32]);
        let _ = SecureChannel::accept(ours, &secret, &config).await;
    });
});
