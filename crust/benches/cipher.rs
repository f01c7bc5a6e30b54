//! The transport cipher's cost on this CPU: ChaCha20-Poly1305 on 64 KiB
//! frames, as `snow`'s transport state does it (RustCrypto, one buffer into
//! another) and in place with `ring` (what crust uses). The figure behind the
//! choice in `crust/src/secure/cipher.rs`.
//!
//! Run: `cargo bench -p crust --bench cipher`.

// A benchmark panics on any failure, like a test.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

const FRAME: usize = 65535 - 16;
const TOTAL: usize = 2 << 30;

fn gbytes_per_sec(bytes: usize, start: Instant) -> f64 {
    bytes as f64 / start.elapsed().as_secs_f64() / 1e9
}

fn snow_transport() -> snow::StatelessTransportState {
    let params: snow::params::NoiseParams = crust::secure::NOISE_PARAMS.parse().unwrap();
    let ik = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let rk = snow::Builder::new(params.clone())
        .generate_keypair()
        .unwrap();
    let mut i = snow::Builder::new(params.clone())
        .local_private_key(&ik.private)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::new(params)
        .local_private_key(&rk.private)
        .unwrap()
        .build_responder()
        .unwrap();
    let (mut a, mut b) = ([0u8; 512], [0u8; 512]);
    let n = i.write_message(&[], &mut a).unwrap();
    r.read_message(&a[..n], &mut b).unwrap();
    let n = r.write_message(&[], &mut a).unwrap();
    i.read_message(&a[..n], &mut b).unwrap();
    let n = i.write_message(&[], &mut a).unwrap();
    r.read_message(&a[..n], &mut b).unwrap();
    i.into_stateless_transport_mode().unwrap()
}

fn main() {
    let frames = TOTAL / FRAME;
    let plain = vec![7u8; FRAME];

    let snow = snow_transport();
    let mut out = vec![0u8; FRAME + 16];
    let start = Instant::now();
    for n in 0..frames as u64 {
        snow.write_message(n, &plain, &mut out).unwrap();
    }
    let snow_rate = gbytes_per_sec(frames * FRAME, start);

    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[9u8; 32]).unwrap());
    let mut buf = plain.clone();
    let start = Instant::now();
    for n in 0..frames as u64 {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&n.to_le_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut buf)
            .unwrap();
        let _ = std::hint::black_box(tag);
    }
    let ring_rate = gbytes_per_sec(frames * FRAME, start);

    println!(
        "| cipher, 64 KiB frames, {} MiB, one core | GB/s |",
        TOTAL >> 20
    );
    println!("|---|---|");
    println!("| snow transport (RustCrypto ChaCha20-Poly1305, out of place) | {snow_rate:.2} |");
    println!("| ring ChaCha20-Poly1305, in place (crust) | {ring_rate:.2} |");
}
