//! A NAPT of every RFC 4787 kind, as a pure function of packets and time.
//!
//! [`Nat::outbound`] translates a packet leaving the LAN (creating or
//! refreshing a mapping), [`Nat::inbound`] translates one arriving at the
//! external address (or says why it is dropped or answered). Mapping and
//! filtering behaviour, port assignment, timeouts per protocol and TCP state
//! come from [`NatConfig`]; the named presets are [`NatPreset`].

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::fate::Stream;
use crate::packet::{self, ICMP, Meta, TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, UDP};

/// On what a mapping or a filter depends besides the internal endpoint
/// (RFC 4787 sections 4.1 and 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dependence {
    /// The same for every remote endpoint.
    EndpointIndependent,
    /// Depends on the remote address.
    AddressDependent,
    /// Depends on the remote address and port.
    AddressAndPortDependent,
}

/// How external ports are chosen (RFC 4787 section 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortAssignment {
    /// Keep the internal port when free, else the next free one.
    Preserve,
    /// Each new mapping takes the previous port plus `delta`.
    Sequential {
        /// Step between consecutive mappings.
        delta: u16,
    },
    /// Uniformly random free port, from the seeded generator.
    Random,
}

/// What the NAT does with an unsolicited inbound TCP SYN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsolicited {
    /// Silently drop it.
    Drop,
    /// Answer with a TCP RST.
    Rst,
}

/// The behaviour of one NAT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatConfig {
    /// Mapping behaviour.
    pub mapping: Dependence,
    /// Filtering behaviour.
    pub filtering: Dependence,
    /// Port assignment.
    pub ports: PortAssignment,
    /// Whether a LAN host can reach another through the external address.
    #[serde(default)]
    pub hairpinning: bool,
    /// Idle timeout of UDP mappings.
    #[serde(with = "crate::link::duration_ms", default = "udp_default")]
    pub udp_timeout: Duration,
    /// Idle timeout of established TCP mappings.
    #[serde(with = "crate::link::duration_ms", default = "tcp_est_default")]
    pub tcp_established_timeout: Duration,
    /// Idle timeout of TCP mappings during setup or teardown.
    #[serde(with = "crate::link::duration_ms", default = "tcp_trans_default")]
    pub tcp_transitory_timeout: Duration,
    /// Idle timeout of ICMP echo mappings.
    #[serde(with = "crate::link::duration_ms", default = "icmp_default")]
    pub icmp_timeout: Duration,
    /// Whether inbound packets refresh a mapping too (outbound always does).
    #[serde(default)]
    pub inbound_refresh: bool,
    /// What happens to unsolicited TCP SYNs.
    #[serde(default = "unsolicited_default")]
    pub tcp_unsolicited: Unsolicited,
    /// Drop all UDP in both directions.
    #[serde(default)]
    pub block_udp: bool,
}

fn udp_default() -> Duration {
    Duration::from_secs(120)
}
fn tcp_est_default() -> Duration {
    Duration::from_secs(7440)
}
fn tcp_trans_default() -> Duration {
    Duration::from_secs(240)
}
fn icmp_default() -> Duration {
    Duration::from_secs(60)
}
fn unsolicited_default() -> Unsolicited {
    Unsolicited::Drop
}

impl NatConfig {
    fn cone(filtering: Dependence) -> Self {
        NatConfig {
            mapping: Dependence::EndpointIndependent,
            filtering,
            ports: PortAssignment::Preserve,
            hairpinning: true,
            udp_timeout: udp_default(),
            tcp_established_timeout: tcp_est_default(),
            tcp_transitory_timeout: tcp_trans_default(),
            icmp_timeout: icmp_default(),
            inbound_refresh: false,
            tcp_unsolicited: Unsolicited::Drop,
            block_udp: false,
        }
    }

    /// EIM + EIF, port preserving, hairpinning.
    pub fn full_cone() -> Self {
        Self::cone(Dependence::EndpointIndependent)
    }

    /// EIM + ADF, port preserving, hairpinning.
    pub fn restricted_cone() -> Self {
        Self::cone(Dependence::AddressDependent)
    }

    /// EIM + APDF, port preserving, hairpinning (what Linux masquerade does).
    pub fn port_restricted_cone() -> Self {
        Self::cone(Dependence::AddressAndPortDependent)
    }

    /// APDM + APDF, sequential ports (delta 1), no hairpinning.
    pub fn symmetric() -> Self {
        NatConfig {
            mapping: Dependence::AddressAndPortDependent,
            ports: PortAssignment::Sequential { delta: 1 },
            hairpinning: false,
            ..Self::cone(Dependence::AddressAndPortDependent)
        }
    }

    /// APDM + APDF, random ports, no hairpinning.
    pub fn symmetric_random() -> Self {
        NatConfig {
            ports: PortAssignment::Random,
            ..Self::symmetric()
        }
    }

    /// A carrier-grade NAT (RFC 6888): EIM + APDF, random ports, hairpinning.
    /// Put a home NAT behind it for the usual double NAT.
    pub fn cgnat() -> Self {
        NatConfig {
            ports: PortAssignment::Random,
            ..Self::port_restricted_cone()
        }
    }

    /// A port-restricted cone NAT that drops all UDP.
    pub fn udp_blocked() -> Self {
        NatConfig {
            block_udp: true,
            ..Self::port_restricted_cone()
        }
    }

    /// Sets the UDP mapping timeout.
    pub fn udp_timeout(mut self, d: Duration) -> Self {
        self.udp_timeout = d;
        self
    }

    /// Sets hairpinning.
    pub fn hairpinning(mut self, on: bool) -> Self {
        self.hairpinning = on;
        self
    }

    /// Sets the answer to unsolicited TCP SYNs.
    pub fn tcp_unsolicited(mut self, u: Unsolicited) -> Self {
        self.tcp_unsolicited = u;
        self
    }
}

/// The named router kinds of scenario files and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatPreset {
    /// No NAT: the LAN is routed as it is.
    Open,
    /// See [`NatConfig::full_cone`].
    FullCone,
    /// See [`NatConfig::restricted_cone`].
    RestrictedCone,
    /// See [`NatConfig::port_restricted_cone`].
    PortRestrictedCone,
    /// See [`NatConfig::symmetric`].
    Symmetric,
    /// See [`NatConfig::symmetric_random`].
    SymmetricRandom,
    /// See [`NatConfig::cgnat`].
    Cgnat,
    /// See [`NatConfig::udp_blocked`].
    UdpBlocked,
}

impl NatPreset {
    /// Every preset, in a fixed order.
    pub const ALL: [NatPreset; 8] = [
        NatPreset::Open,
        NatPreset::FullCone,
        NatPreset::RestrictedCone,
        NatPreset::PortRestrictedCone,
        NatPreset::Symmetric,
        NatPreset::SymmetricRandom,
        NatPreset::Cgnat,
        NatPreset::UdpBlocked,
    ];

    /// The NAT behaviour, `None` for [`NatPreset::Open`].
    pub fn config(self) -> Option<NatConfig> {
        Some(match self {
            NatPreset::Open => return None,
            NatPreset::FullCone => NatConfig::full_cone(),
            NatPreset::RestrictedCone => NatConfig::restricted_cone(),
            NatPreset::PortRestrictedCone => NatConfig::port_restricted_cone(),
            NatPreset::Symmetric => NatConfig::symmetric(),
            NatPreset::SymmetricRandom => NatConfig::symmetric_random(),
            NatPreset::Cgnat => NatConfig::cgnat(),
            NatPreset::UdpBlocked => NatConfig::udp_blocked(),
        })
    }

    /// The scenario-file name.
    pub fn name(self) -> &'static str {
        match self {
            NatPreset::Open => "open",
            NatPreset::FullCone => "full_cone",
            NatPreset::RestrictedCone => "restricted_cone",
            NatPreset::PortRestrictedCone => "port_restricted_cone",
            NatPreset::Symmetric => "symmetric",
            NatPreset::SymmetricRandom => "symmetric_random",
            NatPreset::Cgnat => "cgnat",
            NatPreset::UdpBlocked => "udp_blocked",
        }
    }
}

impl FromStr for NatPreset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NatPreset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown NAT preset {s:?}"))
    }
}

/// Counters of one NAT.
#[derive(Debug, Default)]
pub(crate) struct NatCounters {
    /// Mappings created.
    pub(crate) mappings_created: AtomicU64,
    /// Mappings that timed out.
    pub(crate) mappings_expired: AtomicU64,
    /// Packets translated outbound.
    pub(crate) translated_out: AtomicU64,
    /// Packets translated inbound.
    pub(crate) translated_in: AtomicU64,
    /// Inbound packets dropped by the filter or for lack of a mapping.
    pub(crate) dropped_filter: AtomicU64,
    /// Packets dropped because UDP is blocked.
    pub(crate) dropped_blocked: AtomicU64,
    /// Hairpinned packets.
    pub(crate) hairpinned: AtomicU64,
    /// TCP resets sent for unsolicited SYNs.
    pub(crate) rst_sent: AtomicU64,
    /// ICMP errors translated.
    pub(crate) icmp_translated: AtomicU64,
}

/// The counters of one NAT at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NatStats {
    /// Mappings created.
    pub mappings_created: u64,
    /// Mappings that timed out.
    pub mappings_expired: u64,
    /// Packets translated outbound.
    pub translated_out: u64,
    /// Packets translated inbound.
    pub translated_in: u64,
    /// Inbound packets dropped by the filter or for lack of a mapping.
    pub dropped_filter: u64,
    /// Packets dropped because UDP is blocked.
    pub dropped_blocked: u64,
    /// Hairpinned packets.
    pub hairpinned: u64,
    /// TCP resets sent for unsolicited SYNs.
    pub rst_sent: u64,
    /// ICMP errors translated.
    pub icmp_translated: u64,
}

impl NatCounters {
    /// Takes a snapshot.
    pub(crate) fn snapshot(&self) -> NatStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NatStats {
            mappings_created: r(&self.mappings_created),
            mappings_expired: r(&self.mappings_expired),
            translated_out: r(&self.translated_out),
            translated_in: r(&self.translated_in),
            dropped_filter: r(&self.dropped_filter),
            dropped_blocked: r(&self.dropped_blocked),
            hairpinned: r(&self.hairpinned),
            rst_sent: r(&self.rst_sent),
            icmp_translated: r(&self.icmp_translated),
        }
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// What to do with a packet after NAT looked at it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Translated in place; send it on.
    Forward,
    /// Drop it.
    Drop,
    /// Drop it and send this packet back towards its source.
    Reply(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpState {
    Opening,
    Established,
    Closing,
}

#[derive(Debug)]
struct Mapping {
    proto: u8,
    internal: SocketAddrV4,
    ext_port: u16,
    key: OutKey,
    permits: HashSet<SocketAddrV4>,
    expires: Instant,
    tcp: TcpState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OutKey {
    proto: u8,
    internal: SocketAddrV4,
    remote_ip: Option<Ipv4Addr>,
    remote_port: Option<u16>,
}

/// One NAT's state.
#[derive(Debug)]
pub(crate) struct Nat {
    cfg: NatConfig,
    ext_ip: Ipv4Addr,
    mappings: HashMap<u64, Mapping>,
    by_key: HashMap<OutKey, u64>,
    by_port: HashMap<(u8, u16), u64>,
    forwards: HashMap<(u8, u16), SocketAddrV4>,
    next_id: u64,
    next_seq: u16,
    rng: Stream,
    pub(crate) counters: Arc<NatCounters>,
}

const FIRST_PORT: u16 = 1024;

impl Nat {
    pub(crate) fn new(cfg: NatConfig, ext_ip: Ipv4Addr, seed: u64) -> Self {
        Nat {
            cfg,
            ext_ip,
            mappings: HashMap::new(),
            by_key: HashMap::new(),
            by_port: HashMap::new(),
            forwards: HashMap::new(),
            next_id: 0,
            next_seq: 49152,
            rng: Stream::new(seed),
            counters: Arc::new(NatCounters::default()),
        }
    }

    pub(crate) fn ext_ip(&self) -> Ipv4Addr {
        self.ext_ip
    }

    pub(crate) fn hairpinning(&self) -> bool {
        self.cfg.hairpinning
    }

    /// Forgets every mapping, as a router reboot does.
    pub(crate) fn flush(&mut self) {
        self.mappings.clear();
        self.by_key.clear();
        self.by_port.clear();
    }

    /// Adds a static (or UPnP) port forward; false if the port is taken.
    pub(crate) fn add_forward(&mut self, proto: u8, ext_port: u16, internal: SocketAddrV4) -> bool {
        if self.by_port.contains_key(&(proto, ext_port)) {
            return false;
        }
        match self.forwards.get(&(proto, ext_port)) {
            Some(existing) if *existing != internal => false,
            _ => {
                self.forwards.insert((proto, ext_port), internal);
                true
            }
        }
    }

    /// Removes a port forward; false if there was none.
    pub(crate) fn remove_forward(&mut self, proto: u8, ext_port: u16) -> bool {
        self.forwards.remove(&(proto, ext_port)).is_some()
    }

    /// The port forwards, sorted.
    pub(crate) fn forwards(&self) -> Vec<(u8, u16, SocketAddrV4)> {
        let mut v: Vec<_> = self
            .forwards
            .iter()
            .map(|((p, e), i)| (*p, *e, *i))
            .collect();
        v.sort();
        v
    }

    fn timeout(&self, m: &Mapping) -> Duration {
        match (m.proto, m.tcp) {
            (TCP, TcpState::Established) => self.cfg.tcp_established_timeout,
            (TCP, _) => self.cfg.tcp_transitory_timeout,
            (ICMP, _) => self.cfg.icmp_timeout,
            _ => self.cfg.udp_timeout,
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(m) = self.mappings.remove(&id) {
            self.by_key.remove(&m.key);
            self.by_port.remove(&(m.proto, m.ext_port));
        }
    }

    /// Returns the live mapping `id`, removing it if it has expired.
    fn live(&mut self, id: u64, now: Instant) -> bool {
        match self.mappings.get(&id) {
            Some(m) if m.expires > now => true,
            Some(_) => {
                self.remove(id);
                inc(&self.counters.mappings_expired);
                false
            }
            None => false,
        }
    }

    fn port_free(&self, proto: u8, port: u16) -> bool {
        port >= FIRST_PORT
            && !self.by_port.contains_key(&(proto, port))
            && !self.forwards.contains_key(&(proto, port))
    }

    fn allocate(&mut self, proto: u8, internal_port: u16) -> Option<u16> {
        let span = u32::from(u16::MAX - FIRST_PORT) + 1;
        let step = |p: u16, d: u16| -> u16 {
            let off = (u32::from(p.max(FIRST_PORT) - FIRST_PORT) + u32::from(d)) % span;
            FIRST_PORT + off as u16
        };
        match self.cfg.ports {
            PortAssignment::Preserve => {
                let mut p = internal_port.max(FIRST_PORT);
                for _ in 0..span {
                    if self.port_free(proto, p) {
                        return Some(p);
                    }
                    p = step(p, 1);
                }
                None
            }
            PortAssignment::Sequential { delta } => {
                let delta = delta.max(1);
                let mut p = self.next_seq;
                for _ in 0..span {
                    if self.port_free(proto, p) {
                        self.next_seq = step(p, delta);
                        return Some(p);
                    }
                    p = step(p, delta);
                }
                None
            }
            PortAssignment::Random => {
                for _ in 0..4096 {
                    let p = FIRST_PORT + (self.rng.next_u64() % u64::from(span)) as u16;
                    if self.port_free(proto, p) {
                        return Some(p);
                    }
                }
                None
            }
        }
    }

    fn out_key(&self, proto: u8, internal: SocketAddrV4, remote: SocketAddrV4) -> OutKey {
        let (remote_ip, remote_port) = match self.cfg.mapping {
            Dependence::EndpointIndependent => (None, None),
            Dependence::AddressDependent => (Some(*remote.ip()), None),
            Dependence::AddressAndPortDependent => (Some(*remote.ip()), Some(remote.port())),
        };
        OutKey {
            proto,
            internal,
            remote_ip,
            remote_port,
        }
    }

    fn permitted(&self, m: &Mapping, from: SocketAddrV4) -> bool {
        match self.cfg.filtering {
            Dependence::EndpointIndependent => true,
            Dependence::AddressDependent => m.permits.iter().any(|p| p.ip() == from.ip()),
            Dependence::AddressAndPortDependent => m.permits.contains(&from),
        }
    }

    /// Translates a packet leaving the LAN. On `Forward` its source is now
    /// the external address.
    pub(crate) fn outbound(&mut self, now: Instant, b: &mut [u8], m: &mut Meta) -> Verdict {
        if self.cfg.block_udp && m.proto == UDP {
            inc(&self.counters.dropped_blocked);
            return Verdict::Drop;
        }
        if m.is_icmp_error() {
            return self.outbound_icmp_error(now, b, m);
        }
        if !m.has_ports {
            // Protocols without ports: rewrite the address only.
            packet::set_src(b, m, self.ext_ip);
            inc(&self.counters.translated_out);
            return Verdict::Forward;
        }
        if m.proto == ICMP && m.icmp_type != packet::ICMP_ECHO_REQUEST {
            return Verdict::Drop;
        }
        let internal = SocketAddrV4::new(m.src, m.sport);
        // Traffic from a port-forward target leaves from the forwarded port.
        if let Some(((_, ext_port), _)) = self
            .forwards
            .iter()
            .find(|((p, _), i)| *p == m.proto && **i == internal)
        {
            let ext_port = *ext_port;
            packet::set_src(b, m, self.ext_ip);
            packet::set_sport(b, m, ext_port);
            inc(&self.counters.translated_out);
            return Verdict::Forward;
        }
        // ICMP echo has one identifier, no remote port: filter on the address.
        let remote_port = if m.proto == ICMP { 0 } else { m.dport };
        let remote = SocketAddrV4::new(m.dst, remote_port);
        let key = self.out_key(m.proto, internal, remote);
        let id = match self.by_key.get(&key).copied() {
            Some(id) if self.live(id, now) => id,
            _ => {
                let Some(port) = self.allocate(m.proto, m.sport) else {
                    return Verdict::Drop;
                };
                let id = self.next_id;
                self.next_id += 1;
                self.mappings.insert(
                    id,
                    Mapping {
                        proto: m.proto,
                        internal,
                        ext_port: port,
                        key,
                        permits: HashSet::new(),
                        expires: now,
                        tcp: TcpState::Opening,
                    },
                );
                self.by_key.insert(key, id);
                self.by_port.insert((m.proto, port), id);
                inc(&self.counters.mappings_created);
                id
            }
        };
        let flags = m.tcp_flags;
        let proto = m.proto;
        let Some(mut mapping) = self.mappings.remove(&id) else {
            return Verdict::Drop;
        };
        mapping.permits.insert(remote);
        if proto == TCP {
            if flags & (TCP_FIN | TCP_RST) != 0 {
                mapping.tcp = TcpState::Closing;
            } else if flags & TCP_SYN != 0
                && flags & TCP_ACK == 0
                && mapping.tcp == TcpState::Closing
            {
                mapping.tcp = TcpState::Opening;
            }
        }
        mapping.expires = now + self.timeout(&mapping);
        let ext_port = mapping.ext_port;
        self.mappings.insert(id, mapping);
        packet::set_src(b, m, self.ext_ip);
        packet::set_sport(b, m, ext_port);
        inc(&self.counters.translated_out);
        Verdict::Forward
    }

    fn outbound_icmp_error(&mut self, now: Instant, b: &mut [u8], m: &mut Meta) -> Verdict {
        // An error from a LAN host about a packet it received: the quoted
        // packet's destination is the LAN host, which must become external.
        let Some(mut q) = packet::quoted(b, m) else {
            return Verdict::Drop;
        };
        let internal = SocketAddrV4::new(q.meta.dst, q.meta.dport);
        let remote = SocketAddrV4::new(q.meta.src, q.meta.sport);
        let key = self.out_key(q.meta.proto, internal, remote);
        let port = match self.by_key.get(&key).copied() {
            Some(id) if self.live(id, now) => self.mappings.get(&id).map(|x| x.ext_port),
            _ => self
                .forwards
                .iter()
                .find(|((p, _), i)| *p == q.meta.proto && **i == internal)
                .map(|((_, e), _)| *e),
        };
        let Some(port) = port else {
            return Verdict::Drop;
        };
        let outer = *m;
        packet::rewrite_quoted(b, &outer, &mut q, false, self.ext_ip, port);
        packet::set_src(b, m, self.ext_ip);
        inc(&self.counters.icmp_translated);
        Verdict::Forward
    }

    /// Translates a packet that arrived for the external address. On
    /// `Forward` its destination is now the LAN host.
    pub(crate) fn inbound(&mut self, now: Instant, b: &mut [u8], m: &mut Meta) -> Verdict {
        if self.cfg.block_udp && m.proto == UDP {
            inc(&self.counters.dropped_blocked);
            return Verdict::Drop;
        }
        if m.is_icmp_error() {
            return self.inbound_icmp_error(now, b, m);
        }
        if !m.has_ports {
            inc(&self.counters.dropped_filter);
            return Verdict::Drop;
        }
        if let Some(internal) = self.forwards.get(&(m.proto, m.dport)).copied() {
            packet::set_dst(b, m, *internal.ip());
            packet::set_dport(b, m, internal.port());
            inc(&self.counters.translated_in);
            return Verdict::Forward;
        }
        let from = SocketAddrV4::new(m.src, if m.proto == ICMP { 0 } else { m.sport });
        let found = self
            .by_port
            .get(&(m.proto, m.dport))
            .copied()
            .filter(|id| self.live(*id, now));
        let allowed = found.filter(|id| {
            self.mappings
                .get(id)
                .is_some_and(|mp| self.permitted(mp, from))
        });
        let Some(id) = allowed else {
            inc(&self.counters.dropped_filter);
            let unsolicited_syn =
                m.proto == TCP && m.tcp_flags & TCP_SYN != 0 && m.tcp_flags & TCP_ACK == 0;
            if unsolicited_syn
                && self.cfg.tcp_unsolicited == Unsolicited::Rst
                && let Some(rst) = packet::tcp_rst(b, m)
            {
                inc(&self.counters.rst_sent);
                return Verdict::Reply(rst);
            }
            return Verdict::Drop;
        };
        let Some(mut mapping) = self.mappings.remove(&id) else {
            return Verdict::Drop;
        };
        if m.proto == TCP {
            if m.tcp_flags & (TCP_FIN | TCP_RST) != 0 {
                mapping.tcp = TcpState::Closing;
                mapping.expires = mapping.expires.min(now + self.cfg.tcp_transitory_timeout);
            } else if m.tcp_flags & TCP_ACK != 0 && mapping.tcp == TcpState::Opening {
                mapping.tcp = TcpState::Established;
                mapping.expires = now + self.cfg.tcp_established_timeout;
            }
        }
        if self.cfg.inbound_refresh {
            mapping.expires = now + self.timeout(&mapping);
        }
        let internal = mapping.internal;
        self.mappings.insert(id, mapping);
        packet::set_dst(b, m, *internal.ip());
        packet::set_dport(b, m, internal.port());
        inc(&self.counters.translated_in);
        Verdict::Forward
    }

    fn inbound_icmp_error(&mut self, now: Instant, b: &mut [u8], m: &mut Meta) -> Verdict {
        // An error about a packet we sent: its quoted source is our mapping.
        let Some(mut q) = packet::quoted(b, m) else {
            return Verdict::Drop;
        };
        if q.meta.src != self.ext_ip {
            return Verdict::Drop;
        }
        let internal = match self.by_port.get(&(q.meta.proto, q.meta.sport)).copied() {
            Some(id) if self.live(id, now) => self.mappings.get(&id).map(|x| x.internal),
            _ => self.forwards.get(&(q.meta.proto, q.meta.sport)).copied(),
        };
        let Some(internal) = internal else {
            inc(&self.counters.dropped_filter);
            return Verdict::Drop;
        };
        let outer = *m;
        packet::rewrite_quoted(b, &outer, &mut q, true, *internal.ip(), internal.port());
        packet::set_dst(b, m, *internal.ip());
        inc(&self.counters.icmp_translated);
        Verdict::Forward
    }

    /// Number of live (not yet expired) mappings.
    #[cfg(test)]
    pub(crate) fn live_mappings(&self, now: Instant) -> usize {
        self.mappings.values().filter(|m| m.expires > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{checksums_ok, parse, tcp, udp};

    const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);
    const LAN2: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 3);
    const EXT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
    const S1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const S2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    fn out(
        n: &mut Nat,
        now: Instant,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
    ) -> Option<u16> {
        let mut p = udp(src, sport, dst, dport, b"x");
        let mut m = parse(&p).unwrap();
        match n.outbound(now, &mut p, &mut m) {
            Verdict::Forward => {
                assert!(checksums_ok(&p));
                assert_eq!(m.src, EXT);
                Some(m.sport)
            }
            _ => None,
        }
    }

    fn inb(
        n: &mut Nat,
        now: Instant,
        src: Ipv4Addr,
        sport: u16,
        port: u16,
    ) -> Option<SocketAddrV4> {
        let mut p = udp(src, sport, EXT, port, b"y");
        let mut m = parse(&p).unwrap();
        match n.inbound(now, &mut p, &mut m) {
            Verdict::Forward => {
                assert!(checksums_ok(&p));
                Some(SocketAddrV4::new(m.dst, m.dport))
            }
            _ => None,
        }
    }

    #[test]
    fn mapping_behaviours() {
        let now = Instant::now();
        for (cfg, same_addr_other_port, other_addr) in [
            (NatConfig::full_cone(), true, true),
            (
                NatConfig {
                    mapping: Dependence::AddressDependent,
                    ..NatConfig::full_cone()
                },
                true,
                false,
            ),
            (NatConfig::symmetric(), false, false),
        ] {
            let mut n = Nat::new(cfg, EXT, 1);
            let a = out(&mut n, now, LAN, 5000, S1, 1).unwrap();
            let b = out(&mut n, now, LAN, 5000, S1, 2).unwrap();
            let c = out(&mut n, now, LAN, 5000, S2, 1).unwrap();
            assert_eq!(a == b, same_addr_other_port);
            assert_eq!(a == c, other_addr);
        }
    }

    #[test]
    fn filtering_behaviours() {
        let now = Instant::now();
        let internal = SocketAddrV4::new(LAN, 5000);
        for (cfg, other_port_ok, other_addr_ok) in [
            (NatConfig::full_cone(), true, true),
            (NatConfig::restricted_cone(), true, false),
            (NatConfig::port_restricted_cone(), false, false),
        ] {
            let mut n = Nat::new(cfg, EXT, 1);
            let p = out(&mut n, now, LAN, 5000, S1, 1).unwrap();
            assert_eq!(p, 5000, "port preserved");
            assert_eq!(inb(&mut n, now, S1, 1, p), Some(internal));
            assert_eq!(inb(&mut n, now, S1, 2, p).is_some(), other_port_ok);
            assert_eq!(inb(&mut n, now, S2, 1, p).is_some(), other_addr_ok);
            assert_eq!(inb(&mut n, now, S1, 1, p + 1), None, "no mapping, no entry");
        }
    }

    #[test]
    fn port_assignment() {
        let now = Instant::now();
        let mut n = Nat::new(NatConfig::symmetric(), EXT, 1);
        let ports: Vec<u16> = (0..4)
            .map(|i| out(&mut n, now, LAN, 5000, S1, 10 + i).unwrap())
            .collect();
        assert_eq!(ports, [49152, 49153, 49154, 49155]);
        let mut n = Nat::new(
            NatConfig {
                ports: PortAssignment::Sequential { delta: 7 },
                ..NatConfig::symmetric()
            },
            EXT,
            1,
        );
        let ports: Vec<u16> = (0..3)
            .map(|i| out(&mut n, now, LAN, 5000, S1, 10 + i).unwrap())
            .collect();
        assert_eq!(ports, [49152, 49159, 49166]);
        // Preservation falls back to the next free port on a clash.
        let mut n = Nat::new(NatConfig::port_restricted_cone(), EXT, 1);
        assert_eq!(out(&mut n, now, LAN, 6000, S1, 1), Some(6000));
        assert_eq!(out(&mut n, now, LAN2, 6000, S1, 1), Some(6001));
        // Random ports are reproducible from the seed.
        let rand = |seed| {
            let mut n = Nat::new(NatConfig::symmetric_random(), EXT, seed);
            (0..5)
                .map(|i| out(&mut n, now, LAN, 5000, S1, i).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(rand(3), rand(3));
        assert_ne!(rand(3), rand(4));
    }

    #[test]
    fn mappings_expire_unless_refreshed_outbound() {
        let t0 = Instant::now();
        let cfg = NatConfig::full_cone().udp_timeout(Duration::from_secs(30));
        let mut n = Nat::new(cfg, EXT, 1);
        let p = out(&mut n, t0, LAN, 5000, S1, 1).unwrap();
        // Inbound traffic does not refresh by default.
        assert!(inb(&mut n, t0 + Duration::from_secs(20), S1, 1, p).is_some());
        assert!(inb(&mut n, t0 + Duration::from_secs(31), S1, 1, p).is_none());
        assert_eq!(n.counters.snapshot().mappings_expired, 1);
        let p = out(&mut n, t0 + Duration::from_secs(40), LAN, 5000, S1, 1).unwrap();
        out(&mut n, t0 + Duration::from_secs(60), LAN, 5000, S1, 1).unwrap();
        assert!(inb(&mut n, t0 + Duration::from_secs(85), S1, 1, p).is_some());
        assert_eq!(n.live_mappings(t0 + Duration::from_secs(85)), 1);
    }

    #[test]
    fn port_forward_in_and_back_out_through_the_same_port() {
        let now = Instant::now();
        let mut n = Nat::new(NatConfig::symmetric(), EXT, 1);
        let target = SocketAddrV4::new(LAN, 8080);
        assert!(n.add_forward(UDP, 18080, target));
        assert!(
            !n.add_forward(UDP, 18080, SocketAddrV4::new(LAN2, 1)),
            "conflict"
        );
        assert_eq!(inb(&mut n, now, S1, 1, 18080), Some(target));
        assert_eq!(out(&mut n, now, LAN, 8080, S1, 1), Some(18080));
        assert!(n.remove_forward(UDP, 18080));
        assert_eq!(inb(&mut n, now, S1, 1, 18080), None);
    }

    #[test]
    fn unsolicited_syn_dropped_or_reset() {
        let now = Instant::now();
        for (u, want_rst) in [(Unsolicited::Drop, false), (Unsolicited::Rst, true)] {
            let mut n = Nat::new(NatConfig::port_restricted_cone().tcp_unsolicited(u), EXT, 1);
            let mut p = tcp(S1, 1234, EXT, 80, TCP_SYN);
            let mut m = parse(&p).unwrap();
            let v = n.inbound(now, &mut p, &mut m);
            match v {
                Verdict::Reply(rst) => {
                    assert!(want_rst);
                    let rm = parse(&rst).unwrap();
                    assert_eq!((rm.src, rm.dst, rm.tcp_flags & TCP_RST), (EXT, S1, TCP_RST));
                }
                Verdict::Drop => assert!(!want_rst),
                Verdict::Forward => panic!("unsolicited SYN forwarded"),
            }
        }
    }

    #[test]
    fn udp_blocked_drops_udp_only() {
        let now = Instant::now();
        let mut n = Nat::new(NatConfig::udp_blocked(), EXT, 1);
        assert_eq!(out(&mut n, now, LAN, 5000, S1, 1), None);
        let mut p = tcp(LAN, 5000, S1, 80, TCP_SYN);
        let mut m = parse(&p).unwrap();
        assert_eq!(n.outbound(now, &mut p, &mut m), Verdict::Forward);
    }

    #[test]
    fn inbound_icmp_error_reaches_the_internal_host() {
        let now = Instant::now();
        let mut n = Nat::new(NatConfig::symmetric(), EXT, 1);
        let mut p = udp(LAN, 5000, S1, 9, b"x");
        let mut m = parse(&p).unwrap();
        assert_eq!(n.outbound(now, &mut p, &mut m), Verdict::Forward);
        let err = packet::icmp_error(&p, &m, S1, packet::ICMP_DEST_UNREACH, 3, 0);
        let mut e = err.clone();
        let mut em = parse(&e).unwrap();
        em.dst = EXT;
        assert_eq!(n.inbound(now, &mut e, &mut em), Verdict::Forward);
        assert_eq!(em.dst, LAN);
        assert!(checksums_ok(&e));
        let q = packet::quoted(&e, &em).unwrap();
        assert_eq!((q.meta.src, q.meta.sport), (LAN, 5000));
    }
}
