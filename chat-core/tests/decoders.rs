//! Bad input: the decoders for what comes from outside (invite codes typed
//! or pasted by users, export files) never panic on arbitrary input, and
//! invites round-trip for arbitrary contents. (The wire decoder has the
//! same property test inside the crate, `proto::tests`.)

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{IpAddr, SocketAddr};

use chat_core::{Endpoint, Invite, PeerId};
use proptest::prelude::*;

fn peer(seed: [u8; 32]) -> PeerId {
    // Every secret seed gives a valid public key.
    crust::SecretId::from_bytes(&seed).peer_id()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invite_parsing_never_panics(text in ".{0,300}") {
        let _ = text.parse::<Invite>();
        let _ = format!("crust:{text}").parse::<Invite>();
    }

    #[test]
    fn invites_round_trip(
        seed in any::<[u8; 32]>(),
        name in "\\PC{0,40}",
        token in any::<[u8; 4]>(),
        addrs in proptest::collection::vec((any::<[u8; 4]>(), any::<[u8; 16]>(), any::<bool>(), any::<u16>(), 0..3u8), 0..8),
    ) {
        // Each distinct address with TCP, uTP or both (in that order, as
        // the decoder gives them back).
        let mut seen = Vec::new();
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for (v4, v6, is_v6, port, transports) in addrs {
            let ip = if is_v6 { IpAddr::from(v6) } else { IpAddr::from(v4) };
            let addr = SocketAddr::new(ip, port);
            if seen.contains(&addr) {
                continue;
            }
            seen.push(addr);
            if transports != 1 {
                endpoints.push(Endpoint::tcp(addr));
            }
            if transports != 0 {
                endpoints.push(Endpoint::utp(addr));
            }
        }
        let addrs = endpoints;
        let name: String = name.chars().scan(0, |len, c| { *len += c.len_utf8(); (*len <= 64).then_some(c) }).collect();
        let invite = Invite { peer: peer(seed), name, addrs, token };
        prop_assert_eq!(invite.to_string().parse::<Invite>().unwrap(), invite.clone());
        prop_assert_eq!(invite.to_qr_text().parse::<Invite>().unwrap(), invite);
    }

    #[test]
    fn importing_arbitrary_bytes_fails_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("export");
        let mut data = b"CRUSTCHAT-PROFILE\n".to_vec();
        data.extend_from_slice(&bytes);
        std::fs::write(&file, &data).unwrap();
        prop_assert!(chat_core::import(&file, &dir.path().join("p")).is_err());
        prop_assert!(!chat_core::Profile::exists(&dir.path().join("p")));
    }
}
