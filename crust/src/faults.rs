//! Test-only faults: hooks that make a service misbehave on purpose, so the
//! hostile-peer tests can check what its peers do about it. Compiled only
//! with the `fault-injection` feature (crust's own tests turn it on through
//! a dev-dependency on this crate); every hook is off until a test arms it
//! for one service, named by its id, so tests running side by side in one
//! process don't disturb each other. Not a stable API.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use crate::id::PeerId;

/// Relays that flip a bit in every packet they forward.
static TAMPERING_RELAYS: Mutex<Option<HashSet<PeerId>>> = Mutex::new(None);

fn tampering() -> MutexGuard<'static, Option<HashSet<PeerId>>> {
    TAMPERING_RELAYS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes the service `relay` change every relayed packet it forwards from
/// now on (`on`), or stop doing so: the relay then delivers bytes that are
/// not what the sender's secure channel sent.
pub fn tamper_relayed_bytes(relay: PeerId, on: bool) {
    let mut set = tampering();
    let set = set.get_or_insert_with(HashSet::new);
    if on {
        set.insert(relay);
    } else {
        set.remove(&relay);
    }
}

/// The bytes relay `relay` forwards: `data`, or `data` with its last bit
/// flipped if the relay is set to tamper.
pub(crate) fn relayed(relay: PeerId, data: Bytes) -> Bytes {
    let armed = tampering().as_ref().is_some_and(|set| set.contains(&relay));
    if !armed || data.is_empty() {
        return data;
    }
    let mut changed = data.to_vec();
    if let Some(last) = changed.last_mut() {
        *last ^= 1;
    }
    Bytes::from(changed)
}
