//! When to try again to upgrade relayed connections to direct ones.
//!
//! A traversal attempt that ends on a relayed circuit goes on punching
//! until `punch_timeout`; after that the NAT driver asks [`Upgrades`] when
//! to run a whole attempt again (fresh echoes, then the rendezvous through
//! the relaying peer, punching, TCP). Only the peer with the smaller id
//! keeps a schedule, so the two sides never run two attempts at once.
//!
//! Per relayed peer: the first retry `first` after the circuit came up,
//! then twice as long after each attempt up to `max`, each delay jittered
//! by ±25% so that many relayed peers do not retry in step. A change of
//! our network ([`NetworkKey`]: addresses, NAT kind, UPnP) resets every
//! delay to `first`: what failed before may work now. Each retry has two
//! steps: [`Step::Echo`] (ask the connected peers for fresh echoes, so the
//! candidates and port predictions are current), then, [`ECHO_SETTLE`]
//! later, [`Step::Start`]. A peer whose attempt still runs is put off by
//! one delay, uncounted. The schedule ends when the peer is reached
//! directly or lost ([`Upgrades::stop`]).
//!
//! Pure: the caller passes the time and the random numbers.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::id::PeerId;
use crate::nat::{self, NatReport};

/// Between asking for fresh echoes and starting the attempt.
pub(super) const ECHO_SETTLE: Duration = Duration::from_millis(500);

/// What a retry should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// Ask every connected peer for a fresh echo.
    Echo,
    /// Run traversal attempt number `attempt` (from 1) with `peer` through
    /// `via`.
    Start {
        peer: PeerId,
        via: PeerId,
        attempt: u32,
    },
}

/// What of our network, when it changes, makes a failed upgrade worth
/// trying again at once: the local addresses, the NAT's kind, the external
/// addresses' IPs and the UPnP mapping (ports seen by echoes move with
/// every new destination of a symmetric NAT, so they do not count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NetworkKey {
    local: Vec<SocketAddr>,
    mapping: nat::Mapping,
    port_allocation: nat::PortAllocation,
    external: Vec<IpAddr>,
    upnp: Option<IpAddr>,
}

impl NetworkKey {
    pub(super) fn of(report: &NatReport) -> Self {
        let mut local = report.local_udp.clone();
        local.extend(&report.local_tcp);
        let mut external: Vec<IpAddr> = report
            .udp_external
            .iter()
            .chain(&report.tcp_observed)
            .map(SocketAddr::ip)
            .collect();
        external.sort();
        external.dedup();
        Self {
            local,
            mapping: report.mapping,
            port_allocation: report.port_allocation,
            external,
            upnp: report.upnp.as_ref().map(|m| m.external_ip),
        }
    }
}

struct Retry {
    via: PeerId,
    /// The delay before the next attempt (unjittered).
    delay: Duration,
    next_at: Instant,
    /// Echoes asked for; the attempt starts at `next_at`.
    echoed: bool,
    attempts: u32,
}

/// The upgrade retries of our relayed peers.
pub(super) struct Upgrades {
    first: Option<Duration>,
    max: Duration,
    peers: HashMap<PeerId, Retry>,
    network: Option<NetworkKey>,
}

impl Upgrades {
    /// Retries `first` after the circuit, doubling up to `max`; `None`:
    /// never.
    pub(super) fn new(first: Option<Duration>, max: Duration) -> Self {
        Self {
            first,
            max,
            peers: HashMap::new(),
            network: None,
        }
    }

    /// `peer` is reachable only through `via` now: schedule its first
    /// retry (a peer already scheduled keeps its schedule).
    pub(super) fn relayed(&mut self, peer: PeerId, via: PeerId, now: Instant, random: u64) {
        let Some(first) = self.first else { return };
        self.peers.entry(peer).or_insert_with(|| Retry {
            via,
            delay: first,
            next_at: now + jitter(first, random),
            echoed: false,
            attempts: 0,
        });
    }

    /// `peer` is reached directly, or lost: no more retries. Returns the
    /// attempts it had.
    pub(super) fn stop(&mut self, peer: &PeerId) -> Option<u32> {
        self.peers.remove(peer).map(|r| r.attempts)
    }

    /// Our network as the latest NAT report shows it; a change resets
    /// every retry's delay to the first one.
    pub(super) fn network(
        &mut self,
        key: NetworkKey,
        now: Instant,
        random: &mut impl FnMut() -> u64,
    ) {
        let changed = self.network.as_ref().is_some_and(|old| *old != key);
        self.network = Some(key);
        if !changed {
            return;
        }
        let Some(first) = self.first else { return };
        for retry in self.peers.values_mut() {
            retry.delay = first;
            retry.echoed = false;
            retry.next_at = retry.next_at.min(now + jitter(first, random()));
        }
    }

    /// When [`poll`](Self::poll) has something to do next.
    pub(super) fn next_at(&self) -> Option<Instant> {
        self.peers.values().map(|r| r.next_at).min()
    }

    /// The steps due at `now`; `busy` says whether an attempt with a peer
    /// still runs.
    pub(super) fn poll(
        &mut self,
        now: Instant,
        random: &mut impl FnMut() -> u64,
        busy: impl Fn(&PeerId) -> bool,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        let mut echo = false;
        for (peer, retry) in &mut self.peers {
            if retry.next_at > now {
                continue;
            }
            if busy(peer) {
                retry.echoed = false;
                retry.next_at = now + jitter(retry.delay, random());
            } else if !retry.echoed {
                echo = true;
                retry.echoed = true;
                retry.next_at = now + ECHO_SETTLE;
            } else {
                retry.attempts += 1;
                retry.echoed = false;
                retry.delay = (retry.delay * 2).min(self.max);
                retry.next_at = now + jitter(retry.delay, random());
                steps.push(Step::Start {
                    peer: *peer,
                    via: retry.via,
                    attempt: retry.attempts,
                });
            }
        }
        if echo {
            steps.insert(0, Step::Echo);
        }
        steps
    }
}

/// `delay` scaled by a factor in [0.75, 1.25).
fn jitter(delay: Duration, random: u64) -> Duration {
    let permille = 750 + random % 500;
    delay * u32::try_from(permille).unwrap_or(1000) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SecretId;

    fn id(n: u8) -> PeerId {
        SecretId::from_bytes(&[n; 32]).peer_id()
    }

    /// Runs the schedule of one peer, never busy, until `until`, in steps
    /// of 10 ms; returns the times of the attempts after `start`.
    fn attempts(upgrades: &mut Upgrades, start: Instant, until: Duration) -> Vec<Duration> {
        let mut random = || 250; // no jitter
        let mut out = Vec::new();
        let mut t = Duration::ZERO;
        while t <= until {
            for step in upgrades.poll(start + t, &mut random, |_| false) {
                if let Step::Start { .. } = step {
                    out.push(t);
                }
            }
            t += Duration::from_millis(10);
        }
        out
    }

    #[test]
    fn retries_back_off_to_the_cap() {
        let start = Instant::now();
        let mut upgrades = Upgrades::new(Some(Duration::from_secs(1)), Duration::from_secs(4));
        upgrades.relayed(id(1), id(9), start, 250);
        let at = attempts(&mut upgrades, start, Duration::from_secs(20));
        let secs: Vec<f64> = at.iter().map(Duration::as_secs_f64).collect();
        // Each attempt follows its echo step by 0.5 s; delays 1, 2, 4, 4...
        assert_eq!(secs, [1.5, 4.0, 8.5, 13.0, 17.5], "{secs:?}");
    }

    #[test]
    fn echo_comes_first_and_attempts_are_counted() {
        let start = Instant::now();
        let mut upgrades = Upgrades::new(Some(Duration::from_secs(1)), Duration::from_secs(60));
        let (peer, via) = (id(1), id(2));
        upgrades.relayed(peer, via, start, 250);
        let mut random = || 250;
        assert!(upgrades.poll(start, &mut random, |_| false).is_empty());
        let t = start + Duration::from_secs(1);
        assert_eq!(upgrades.poll(t, &mut random, |_| false), [Step::Echo]);
        assert_eq!(upgrades.next_at(), Some(t + ECHO_SETTLE));
        assert_eq!(
            upgrades.poll(t + ECHO_SETTLE, &mut random, |_| false),
            [Step::Start {
                peer,
                via,
                attempt: 1
            }]
        );
        assert_eq!(upgrades.stop(&peer), Some(1));
        assert_eq!(upgrades.next_at(), None);
        assert!(
            upgrades
                .poll(t + Duration::from_secs(60), &mut random, |_| false)
                .is_empty()
        );
    }

    #[test]
    fn a_busy_peer_is_put_off_uncounted() {
        let start = Instant::now();
        let mut upgrades = Upgrades::new(Some(Duration::from_secs(1)), Duration::from_secs(60));
        upgrades.relayed(id(1), id(2), start, 250);
        let mut random = || 250;
        let t = start + Duration::from_secs(1);
        assert!(upgrades.poll(t, &mut random, |_| true).is_empty());
        assert_eq!(upgrades.next_at(), Some(t + Duration::from_secs(1)));
        let t = t + Duration::from_secs(1);
        assert_eq!(upgrades.poll(t, &mut random, |_| false), [Step::Echo]);
        let steps = upgrades.poll(t + ECHO_SETTLE, &mut random, |_| false);
        assert!(matches!(steps[..], [Step::Start { attempt: 1, .. }]));
    }

    #[test]
    fn a_network_change_resets_the_backoff() {
        let start = Instant::now();
        let mut upgrades = Upgrades::new(Some(Duration::from_secs(1)), Duration::from_secs(300));
        upgrades.relayed(id(1), id(2), start, 250);
        let mut random = || 250;
        let report = NatReport::default();
        upgrades.network(NetworkKey::of(&report), start, &mut random);
        // Five attempts: the next one is 32 s away.
        attempts(&mut upgrades, start, Duration::from_secs(40));
        let now = start + Duration::from_secs(41);
        let later = upgrades.next_at().unwrap();
        assert!(later > now + Duration::from_secs(5), "{:?}", later - now);
        // The same network: nothing changes.
        upgrades.network(NetworkKey::of(&report), now, &mut random);
        assert_eq!(upgrades.next_at(), Some(later));
        // A new external address: the next retry comes after the first
        // delay again.
        let mut moved = report.clone();
        moved.udp_external = Some(SocketAddr::from(([198, 51, 100, 7], 4000)));
        upgrades.network(NetworkKey::of(&moved), now, &mut random);
        assert_eq!(upgrades.next_at(), Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn the_jitter_stays_within_a_quarter() {
        let d = Duration::from_secs(30);
        for r in [0, 1, 249, 250, 499, 500, 12345, u64::MAX] {
            let j = jitter(d, r);
            assert!(j >= d * 3 / 4 && j < d * 5 / 4, "{j:?}");
        }
    }

    #[test]
    fn off_schedules_nothing() {
        let mut upgrades = Upgrades::new(None, Duration::from_secs(300));
        upgrades.relayed(id(1), id(2), Instant::now(), 0);
        assert_eq!(upgrades.next_at(), None);
    }
}
