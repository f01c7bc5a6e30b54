//! Admission of incoming connections before their handshake.
//!
//! An incoming connection holds one of the service's handshake slots
//! (`Config::max_pending_handshakes`) until its handshake ends, at the
//! latest after the handshake timeout. Without a second limit one host
//! could take every slot with connections that never speak (slow-loris)
//! and keep real peers out for as long as it keeps reopening them. So each
//! source also has a quota (`Config::max_pending_handshakes_per_source`):
//! an IPv4 address, or an IPv6 /64, since anyone with IPv6 has a whole /64
//! to pick addresses from. A source over its quota is refused at once and
//! the slots stay free for everyone else.
//!
//! A quota of 16 leaves room for many honest peers behind one NAT (they
//! share an address, but rarely handshake at the same moment) while an
//! attacker needs `max_pending_handshakes / quota` addresses (8 by
//! default) to fill the table.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The key a quota is kept under: the address, or an IPv6 address's /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// Why an incoming connection was refused before its handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every handshake slot is taken.
    Full,
    /// This source already has its quota of handshakes in progress.
    SourceQuota,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::Full => "too many handshakes in progress",
            Refusal::SourceQuota => "too many handshakes in progress from this address",
        })
    }
}

/// Handshake slots, overall and per source.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    per_source: usize,
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Admission {
    /// Handshakes take one of `slots` (shared with relayed circuits, which
    /// have no network source and are bounded by the relay instead), at
    /// most `per_source` of them for one source (at least 1).
    pub(crate) fn new(slots: Arc<Semaphore>, per_source: usize) -> Self {
        Admission {
            slots,
            per_source: per_source.max(1),
            pending: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a slot for a handshake from `ip`, held until the ticket drops.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        let source = source_of(ip);
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let count = pending.entry(source).or_insert(0);
            if *count >= self.per_source {
                return Err(Refusal::SourceQuota);
            }
            *count += 1;
        }
        // The source's count is taken first and given back on every path
        // below, by the ticket's drop or here.
        let source = SourceCount {
            source,
            pending: self.pending.clone(),
        };
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        Ok(Ticket {
            _slot: slot,
            _source: source,
        })
    }

    /// Handshakes in progress from `ip`'s source (for tests).
    #[cfg(test)]
    fn pending_from(&self, ip: IpAddr) -> usize {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.get(&source_of(ip)).copied().unwrap_or(0)
    }
}

/// One admitted handshake; dropping it frees its slot and quota.
pub(crate) struct Ticket {
    _slot: OwnedSemaphorePermit,
    _source: SourceCount,
}

/// One unit of a source's quota, given back on drop.
struct SourceCount {
    source: IpAddr,
    pending: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for SourceCount {
    fn drop(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = pending.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn one_source_gets_its_quota_and_no_more() {
        let admission = Admission::new(Arc::new(Semaphore::new(10)), 3);
        let a = ip("192.0.2.1");
        let tickets: Vec<_> = (0..3).map(|_| admission.admit(a)).collect();
        assert!(tickets.iter().all(Result::is_ok));
        assert_eq!(admission.admit(a).err(), Some(Refusal::SourceQuota));
        // Another source is not affected.
        assert!(admission.admit(ip("192.0.2.2")).is_ok());
        // A finished handshake gives its quota back.
        drop(tickets);
        assert_eq!(admission.pending_from(a), 0);
        assert!(admission.admit(a).is_ok());
    }

    #[test]
    fn the_total_still_bounds_all_sources_together() {
        let admission = Admission::new(Arc::new(Semaphore::new(4)), 3);
        let held: Vec<_> = (1..=4)
            .map(|i| admission.admit(ip(&format!("192.0.2.{i}"))).ok())
            .collect();
        assert!(held.iter().all(Option::is_some));
        assert_eq!(admission.admit(ip("192.0.2.9")).err(), Some(Refusal::Full));
        // A refusal for a full table leaves that source's count untouched.
        assert_eq!(admission.pending_from(ip("192.0.2.9")), 0);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let admission = Admission::new(Arc::new(Semaphore::new(10)), 2);
        let _a = admission.admit(ip("2001:db8:1:2::1"));
        let _b = admission.admit(ip("2001:db8:1:2:ffff::9"));
        assert_eq!(
            admission.admit(ip("2001:db8:1:2::77")).err(),
            Some(Refusal::SourceQuota)
        );
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
        // A v4-mapped address counts as its IPv4 address.
        let _c = admission.admit(ip("::ffff:192.0.2.7"));
        let _d = admission.admit(ip("192.0.2.7"));
        assert_eq!(
            admission.admit(ip("192.0.2.7")).err(),
            Some(Refusal::SourceQuota)
        );
    }
}
