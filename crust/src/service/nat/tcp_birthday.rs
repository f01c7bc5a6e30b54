//! The birthday technique over TCP: a random-port NAT against an
//! endpoint-independent one when UDP cannot be used (a router that blocks
//! it maps TCP endpoint-independently all the same).
//!
//! **The hard side** (its NAT maps each TCP destination to a random port)
//! opens [`SOCKETS`] listeners on fresh local ports and, from each port,
//! sends one SYN to the easy side's mapped TCP endpoint `E` (its listener's
//! port as the echoes show it). Each SYN makes a NAT session on a random
//! external port `q` that lets `E` in; the SYN itself dies at the easy
//! side's NAT, which filters it. The connecting socket is dropped before
//! the kernel would retransmit (one SYN each, paid for from the attempt's
//! budget); the listener stays until the attempt ends.
//!
//! **The easy side** sends SYNs from its listener's port (`SO_REUSEPORT`,
//! as `nat::tcp`) to distinct random ports of the hard side's public
//! address, each from a socket dropped after [`super::TCP_TRY`]. Each SYN
//! opens its own NAT's filter for that address and port.
//!
//! A match — an easy-side SYN to one of the `q` — connects in either order:
//! if the hard side's SYN came first, the easy side's SYN passes the hard
//! NAT and reaches that port's listener; if the easy side's came first, the
//! hard side's SYN passes the easy NAT (opened for `q`) and reaches the
//! easy side's listener, whose answer completes the hard side's connect.
//! (Within a few hundred ms of each other the two SYNs meet in a
//! simultaneous open.) So, as for UDP, the order does not matter, and with
//! `n` sockets and `k` probed ports out of R = 64 512 no match happens with
//! probability `(1 − n/R)^k`.
//!
//! **Roles.** Every connection the hard side gets (accepted or connected)
//! runs the Noise initiator; every one the easy side's probes get runs the
//! responder, and one its listener accepts is an ordinary incoming
//! connection (the service's accept loop responds). No case has two
//! initiators, and nobody waits to find out.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use tokio::task::{AbortHandle, JoinSet};

use super::{
    AttemptBudget, Driver, MappingHint, RelayedOnly, TCP_TRY, direct, finish_punched_tcp,
    is_public, random_u64,
};
use crate::id::PeerId;
use crate::nat;
use crate::wire::Candidates;

/// Listeners the random-port side opens, one SYN from each: one NAT session
/// each, the same count as the UDP birthday's sockets.
pub(super) const SOCKETS: usize = nat::BIRTHDAY_SOCKETS;
/// Random ports the endpoint-independent side probes, at most.
pub(super) const PROBES: usize = nat::BIRTHDAY_PROBES;
/// The technique leaves one budget slot in this many to the rest of the
/// attempt (its UDP probes and plain TCP dials).
const LEAVE_ONE_IN: usize = 16;
/// Most of the hard side's public addresses the easy side probes.
const TARGET_IPS: usize = 2;

/// Our part in the technique.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    /// Our NAT maps TCP at random: listeners, one SYN each to `target`.
    Hard { target: SocketAddr },
    /// Ours maps it endpoint-independently: SYNs from our listener's port
    /// to random ports of `ips`.
    Easy { ips: Vec<IpAddr> },
}

/// Our role, from our TCP mapping and the peer's candidates; `None` if the
/// technique does not apply (or the peer offers nothing to aim at).
fn role(ours: MappingHint, theirs: &Candidates) -> Option<Role> {
    let public = theirs.tcp.iter().copied().filter(is_public);
    match (ours, theirs.tcp_mapping) {
        (MappingHint::RandomPerDestination, MappingHint::EndpointIndependent) => {
            // The peer lists its listener's mapping first (after a UPnP
            // mapping, which a plain dial reaches anyway).
            let target = public.into_iter().next()?;
            Some(Role::Hard { target })
        }
        (MappingHint::EndpointIndependent, MappingHint::RandomPerDestination) => {
            let mut ips: Vec<IpAddr> = Vec::new();
            for ip in public.map(|a| a.ip()) {
                if !ips.contains(&ip) && ips.len() < TARGET_IPS {
                    ips.push(ip);
                }
            }
            (!ips.is_empty()).then_some(Role::Easy { ips })
        }
        _ => None,
    }
}

/// What the technique's tasks share.
#[derive(Clone)]
struct Attempt {
    inner: std::sync::Arc<super::Inner>,
    commands: tokio::sync::mpsc::UnboundedSender<super::Command>,
    input: tokio::sync::mpsc::UnboundedSender<super::NatInput>,
    relayed: RelayedOnly,
    budget: AttemptBudget,
    peer: PeerId,
    started: Instant,
    deadline: Instant,
}

impl Attempt {
    fn done(&self) -> bool {
        Instant::now() >= self.deadline || direct(&self.inner, &self.relayed, &self.peer)
    }

    /// The next budget slot but one in [`LEAVE_ONE_IN`], `i` counting.
    async fn slot(&self, i: usize) {
        if i % LEAVE_ONE_IN == LEAVE_ONE_IN - 1 {
            tokio::time::sleep(lock_interval(&self.budget)).await;
        }
        self.budget.spray_slot().await;
    }

    /// The handshake on a connection the technique got, and its
    /// registration.
    async fn finish(&self, stream: tokio::net::TcpStream, initiator: bool) {
        let _ = stream.set_nodelay(true);
        let (Ok(remote), Ok(local)) = (stream.peer_addr(), stream.local_addr()) else {
            return;
        };
        tracing::debug!(peer = %self.peer, %remote, initiator, elapsed = ?self.started.elapsed(),
            "TCP birthday: connected");
        let (inner, commands, input) = (&self.inner, &self.commands, &self.input);
        let ends = (remote, local);
        finish_punched_tcp(
            inner,
            commands,
            input,
            self.peer,
            stream,
            initiator,
            ends,
            self.started,
        )
        .await;
    }
}

fn lock_interval(budget: &AttemptBudget) -> std::time::Duration {
    super::lock(&budget.budget).interval()
}

impl Driver {
    /// Starts the birthday technique over TCP in session `session` if it
    /// applies: a task (its sockets and sub-tasks end with it) whose abort
    /// handle the session keeps.
    pub(super) fn start_tcp_birthday(&self, session: u64) -> Option<AbortHandle> {
        let s = self.sessions.get(&session)?;
        let report = self.inner.nat_report();
        let ours = super::hint(report.tcp_mapping, report.tcp_port_allocation);
        let role = role(ours, &s.theirs)?;
        let attempt = Attempt {
            inner: self.inner.clone(),
            commands: self.commands.clone(),
            input: self.input_tx.clone(),
            relayed: self.relayed_only.clone(),
            budget: s.budget.clone(),
            peer: s.peer,
            started: s.started,
            deadline: s.deadline,
        };
        tracing::debug!(peer = %s.peer, ?role, "birthday technique over TCP");
        let task = match role {
            Role::Hard { target } => tokio::spawn(hard(attempt, target)),
            Role::Easy { ips } => {
                let listeners = report.local_tcp;
                tokio::spawn(easy(attempt, ips, listeners))
            }
        };
        Some(task.abort_handle())
    }
}

/// The random-port side: [`SOCKETS`] listeners, one SYN from each port to
/// `target`; every connection either way runs the Noise initiator. Runs
/// until aborted (the listeners must stay while the peer probes).
async fn hard(attempt: Attempt, target: SocketAddr) {
    let any = if target.is_ipv4() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    };
    let mut tasks = JoinSet::new();
    for i in 0..SOCKETS {
        attempt.slot(i).await;
        if attempt.done() {
            break;
        }
        let listener = match nat::tcp::listen(SocketAddr::new(any, 0)) {
            Ok(listener) => listener,
            Err(e) => {
                // Out of descriptors or ports, say: go on with fewer.
                tracing::info!(error = %e, opened = i, "cannot open more TCP birthday sockets");
                break;
            }
        };
        let Ok(local) = listener.local_addr() else {
            continue;
        };
        let attempt = attempt.clone();
        tasks.spawn(async move {
            let connect = async {
                match tokio::time::timeout(TCP_TRY, nat::tcp::connect_from(local, target)).await {
                    Ok(Ok(stream)) => stream,
                    // Dropped before the kernel would send a second SYN;
                    // the listener takes what comes now.
                    _ => std::future::pending().await,
                }
            };
            let accept = async {
                loop {
                    if let Ok((stream, _)) = listener.accept().await {
                        break stream;
                    }
                }
            };
            let stream = tokio::select! {
                stream = connect => stream,
                stream = accept => stream,
            };
            attempt.finish(stream, true).await;
        });
    }
    tracing::debug!(peer = %attempt.peer, sockets = tasks.len(), "TCP birthday: all SYNs sent");
    // Keep the listeners until the attempt ends (it aborts this task,
    // which drops them all).
    while tasks.join_next().await.is_some() {}
}

/// The endpoint-independent side: SYNs from our listener's port to
/// distinct random ports of `ips`, each socket dropped after
/// [`TCP_TRY`]; a connection runs the Noise responder.
async fn easy(attempt: Attempt, ips: Vec<IpAddr>, listeners: Vec<SocketAddr>) {
    let mut used: HashSet<(IpAddr, u16)> = HashSet::new();
    let mut rng = random_u64() | 1;
    let span = u64::from(u16::MAX - nat::FIRST_NAT_PORT) + 1;
    let mut tasks = JoinSet::new();
    for i in 0..PROBES {
        attempt.slot(i).await;
        if attempt.done() {
            break;
        }
        let ip = ips[i % ips.len()];
        let port = loop {
            // xorshift64, as the UDP birthday's easy side.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let port = nat::FIRST_NAT_PORT + (rng % span) as u16;
            if used.insert((ip, port)) {
                break port;
            }
        };
        let to = SocketAddr::new(ip, port);
        let Some(local) = nat::tcp::shared_port(&listeners, to) else {
            return;
        };
        let attempt = attempt.clone();
        tasks.spawn(async move {
            let connected = tokio::time::timeout(TCP_TRY, nat::tcp::connect_from(local, to)).await;
            if let Ok(Ok(stream)) = connected {
                attempt.finish(stream, false).await;
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(tcp: &[&str], tcp_mapping: MappingHint) -> Candidates {
        Candidates {
            tcp: tcp.iter().map(|a| a.parse().unwrap()).collect(),
            tcp_mapping,
            ..Candidates::default()
        }
    }

    #[test]
    fn the_roles_follow_the_tcp_mappings() {
        let easy = candidates(
            &["192.168.1.2:5483", "203.0.113.5:5483", "203.0.113.5:5483"],
            MappingHint::EndpointIndependent,
        );
        assert_eq!(
            role(MappingHint::RandomPerDestination, &easy),
            Some(Role::Hard {
                target: "203.0.113.5:5483".parse().unwrap()
            })
        );
        let hard = candidates(
            &[
                "10.0.0.2:5483",
                "198.51.100.7:40001",
                "198.51.100.7:2222",
                "198.51.100.8:5483",
                "198.51.100.9:5483",
            ],
            MappingHint::RandomPerDestination,
        );
        assert_eq!(
            role(MappingHint::EndpointIndependent, &hard),
            Some(Role::Easy {
                ips: vec![
                    "198.51.100.7".parse().unwrap(),
                    "198.51.100.8".parse().unwrap()
                ]
            })
        );
        // Both random, both endpoint-independent, unknown, or nothing
        // public to aim at: not this technique.
        assert_eq!(role(MappingHint::RandomPerDestination, &hard), None);
        assert_eq!(role(MappingHint::EndpointIndependent, &easy), None);
        assert_eq!(role(MappingHint::Unknown, &hard), None);
        let private = candidates(&["10.0.0.2:5483"], MappingHint::EndpointIndependent);
        assert_eq!(role(MappingHint::RandomPerDestination, &private), None);
    }
}
