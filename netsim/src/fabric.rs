//! Every router and link of a topology as one sans-IO state machine.
//!
//! Order of calls, by the event loop in `router.rs`: [`Fabric::ingress`]
//! for each packet read from a host's TUN, [`Fabric::handle_timeout`] when
//! [`Fabric::poll_timeout`] is due, then [`Fabric::poll_transmit`] until it
//! is empty to learn which packets to write to which TUN. No I/O happens
//! here, and time comes in as `now`.
//!
//! A packet's path: host TUN → the host's link (up) → the router node of its
//! network → (NAT) → that router's link to its upstream (up) → ... → the
//! internet core → down the links towards the destination → its TUN.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fate;
use crate::link::{Fate, LinkCounters, LinkDir, flow_key};
use crate::nat::{Nat, NatCounters, Verdict};
use crate::packet::{self, Meta};
use crate::pcap::Pcap;
use crate::topology::{CORE_IP, HostSpec, Subnet, Topology};

/// Index of a host's TUN device in the fabric.
pub(crate) type TunId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Tun(TunId),
    Node(usize),
}

const UP: usize = 0;
const DOWN: usize = 1;

struct Link {
    name: String,
    /// `ends[0]` is the lower side (host or child router), `ends[1]` the node.
    ends: [End; 2],
    /// `dirs[UP]` carries lower → upper, `dirs[DOWN]` upper → lower.
    dirs: [LinkDir; 2],
    pcap: Option<Pcap>,
}

enum Kind {
    Core,
    Open,
    Nat(Box<Nat>),
    /// The LAN of a real Linux router: a switch whose way out is the
    /// router namespace's LAN interface on link `gateway`.
    Gateway {
        gateway: usize,
    },
}

struct Node {
    name: String,
    kind: Kind,
    /// Exact host/router addresses reachable through a link.
    exact: HashMap<Ipv4Addr, usize>,
    /// Subnets reachable through a link (open routers' LANs).
    subnets: Vec<(Subnet, usize)>,
    uplink: Option<usize>,
    lan: Option<Subnet>,
    /// Address used for ICMP errors sent towards the LAN.
    lan_ip: Ipv4Addr,
    /// Address used for ICMP errors sent upstream.
    wan_ip: Ipv4Addr,
}

struct Pending {
    at: Instant,
    seq: u64,
    link: usize,
    dir: usize,
    pkt: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Counters of packets the fabric itself dropped.
#[derive(Debug, Default)]
pub(crate) struct FabricCounters {
    /// Packets that were not IPv4 (IPv6 is not simulated).
    pub(crate) not_ipv4: AtomicU64,
    /// Packets with no route to their destination.
    pub(crate) no_route: AtomicU64,
    /// Packets whose TTL ran out.
    pub(crate) ttl_expired: AtomicU64,
    /// Packets to a LAN host's external address from the same LAN, on a NAT
    /// without hairpinning.
    pub(crate) hairpin_refused: AtomicU64,
    /// Packets a host's kernel did not take (its TUN queue was full).
    pub(crate) tun_write_dropped: AtomicU64,
}

/// Counters of one link, both directions.
#[derive(Debug, Clone)]
pub(crate) struct LinkHandles {
    pub(crate) name: String,
    pub(crate) up: Arc<LinkCounters>,
    pub(crate) down: Arc<LinkCounters>,
}

/// One NAT's counters.
#[derive(Debug, Clone)]
pub(crate) struct NatHandles {
    pub(crate) name: String,
    pub(crate) counters: Arc<NatCounters>,
}

/// A port mapping request for a NAT router (static forward or UPnP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortForward {
    /// `"udp"` or `"tcp"`.
    pub protocol: &'static str,
    /// Port on the router's external address.
    pub external_port: u16,
    /// Where it goes.
    pub internal: SocketAddrV4,
}

pub(crate) struct Fabric {
    seed: u64,
    nodes: Vec<Node>,
    links: Vec<Link>,
    tun_link: Vec<usize>,
    heap: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    out: VecDeque<(TunId, Vec<u8>)>,
    pcap_dir: Option<std::path::PathBuf>,
    fate_log: Option<std::io::BufWriter<std::fs::File>>,
    pub(crate) counters: Arc<FabricCounters>,
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn name_key(name: &str) -> u64 {
    fate::hash(&name.bytes().map(u64::from).collect::<Vec<_>>())
}

impl Fabric {
    /// Builds routers and links for `topology`. Host `i` gets TUN id `i`.
    pub(crate) fn new(topology: &Topology, seed: u64) -> std::io::Result<Fabric> {
        let mut f = Fabric {
            seed,
            nodes: Vec::new(),
            links: Vec::new(),
            tun_link: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            out: VecDeque::new(),
            pcap_dir: topology.pcap_dir.clone(),
            fate_log: match &topology.fate_log {
                Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
                None => None,
            },
            counters: Arc::new(FabricCounters::default()),
        };
        if let Some(dir) = &f.pcap_dir {
            std::fs::create_dir_all(dir)?;
        }
        f.nodes.push(Node {
            name: "internet".into(),
            kind: Kind::Core,
            exact: HashMap::new(),
            subnets: Vec::new(),
            uplink: None,
            lan: None,
            lan_ip: CORE_IP,
            wan_ip: CORE_IP,
        });
        // Routers: node i + 1 is router i; upstreams always come first.
        for r in &topology.routers {
            let kind = match &r.nat {
                _ if r.linux.is_some() => Kind::Gateway {
                    gateway: usize::MAX,
                },
                Some(cfg) => Kind::Nat(Box::new(Nat::new(
                    cfg.clone(),
                    r.wan_ip,
                    fate::hash(&[seed, name_key(&r.name)]),
                ))),
                None => Kind::Open,
            };
            f.nodes.push(Node {
                name: r.name.clone(),
                kind,
                exact: HashMap::new(),
                subnets: Vec::new(),
                uplink: None,
                lan: Some(r.lan),
                lan_ip: r.lan_ip(),
                wan_ip: r.wan_ip,
            });
        }
        for (i, r) in topology.routers.iter().enumerate() {
            let node = i + 1;
            let parent = r.upstream.map_or(0, |u| u.0 + 1);
            if r.linux.is_some() {
                // Two TUNs in the router's namespace: WAN (on the parent's
                // network) then LAN (the gateway of this node's switch).
                let wan_tun = f.tun_link.len();
                let wan = f.add_link(
                    &format!("{}-wan", r.name),
                    End::Tun(wan_tun),
                    parent,
                    r.link.up.clone(),
                    r.link.down.clone(),
                )?;
                f.tun_link.push(wan);
                f.nodes[parent].exact.insert(r.wan_ip, wan);
                let lan_tun = f.tun_link.len();
                let lan = f.add_link(
                    &format!("{}-lan", r.name),
                    End::Tun(lan_tun),
                    node,
                    crate::link::Impairment::none(),
                    crate::link::Impairment::none(),
                )?;
                f.tun_link.push(lan);
                f.nodes[node].kind = Kind::Gateway { gateway: lan };
                continue;
            }
            let link = f.add_link(
                &r.name,
                End::Node(node),
                parent,
                r.link.up.clone(),
                r.link.down.clone(),
            )?;
            f.nodes[node].uplink = Some(link);
            f.nodes[parent].exact.insert(r.wan_ip, link);
            if r.nat.is_none() {
                // An open LAN is routed from every ancestor up to a NAT.
                let mut at = parent;
                let mut via = link;
                loop {
                    f.nodes[at].subnets.push((r.lan, via));
                    if at == 0 || matches!(f.nodes[at].kind, Kind::Nat(_)) {
                        break;
                    }
                    let Some(up) = f.nodes[at].uplink else { break };
                    let p = up_parent(&f, up);
                    f.nodes[p].exact.insert(r.wan_ip, up);
                    via = up;
                    at = p;
                }
            }
        }
        for h in &topology.hosts {
            f.add_host(h)?;
        }
        Ok(f)
    }

    fn add_link(
        &mut self,
        name: &str,
        lower: End,
        node: usize,
        up: crate::link::Impairment,
        down: crate::link::Impairment,
    ) -> std::io::Result<usize> {
        let id = self.links.len();
        let key = name_key(name);
        let pcap = match &self.pcap_dir {
            Some(dir) => Some(Pcap::create(&dir.join(format!("{name}.pcap")))?),
            None => None,
        };
        self.links.push(Link {
            name: name.to_owned(),
            ends: [lower, End::Node(node)],
            dirs: [
                LinkDir::new(up, self.seed, key, true),
                LinkDir::new(down, self.seed, key, false),
            ],
            pcap,
        });
        Ok(id)
    }

    /// Adds a host (also to a running fabric); returns its TUN id.
    pub(crate) fn add_host(&mut self, h: &HostSpec) -> std::io::Result<TunId> {
        let tun = self.tun_link.len();
        let node = h.network.map_or(0, |r| r.0 + 1);
        let link = self.add_link(
            &h.name,
            End::Tun(tun),
            node,
            h.link.up.clone(),
            h.link.down.clone(),
        )?;
        self.tun_link.push(link);
        for (ip, _) in &h.addrs {
            self.nodes[node].exact.insert(*ip, link);
        }
        // A public host on an open router must be reachable from above.
        let mut at = node;
        while matches!(self.nodes[at].kind, Kind::Open) {
            let Some(up) = self.nodes[at].uplink else {
                break;
            };
            let parent = up_parent(self, up);
            for (ip, _) in &h.addrs {
                self.nodes[parent].exact.insert(*ip, up);
            }
            at = parent;
        }
        Ok(tun)
    }

    pub(crate) fn link_handles(&self) -> Vec<LinkHandles> {
        self.links
            .iter()
            .map(|l| LinkHandles {
                name: l.name.clone(),
                up: l.dirs[UP].counters.clone(),
                down: l.dirs[DOWN].counters.clone(),
            })
            .collect()
    }

    pub(crate) fn nat_handles(&self) -> Vec<NatHandles> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                Kind::Nat(nat) => Some(NatHandles {
                    name: n.name.clone(),
                    counters: nat.counters.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    fn nat_mut(&mut self, router: &str) -> Option<&mut Nat> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == router)
            .and_then(|n| match &mut n.kind {
                Kind::Nat(nat) => Some(&mut **nat),
                _ => None,
            })
    }

    /// Adds a port forward on a NAT router.
    pub(crate) fn add_forward(
        &mut self,
        router: &str,
        proto: u8,
        ext_port: u16,
        internal: SocketAddrV4,
    ) -> bool {
        self.nat_mut(router)
            .is_some_and(|n| n.add_forward(proto, ext_port, internal))
    }

    /// Removes a port forward.
    pub(crate) fn remove_forward(&mut self, router: &str, proto: u8, ext_port: u16) -> bool {
        self.nat_mut(router)
            .is_some_and(|n| n.remove_forward(proto, ext_port))
    }

    /// Lists a NAT router's port forwards.
    pub(crate) fn forwards(&mut self, router: &str) -> Vec<PortForward> {
        self.nat_mut(router)
            .map(|n| {
                n.forwards()
                    .into_iter()
                    .map(|(p, e, i)| PortForward {
                        protocol: if p == packet::TCP { "tcp" } else { "udp" },
                        external_port: e,
                        internal: i,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets a NAT's mappings (a router reboot).
    pub(crate) fn flush_nat(&mut self, router: &str) -> bool {
        self.nat_mut(router).map(|n| n.flush()).is_some()
    }

    /// A packet read from TUN `tun` at `now`.
    pub(crate) fn ingress(&mut self, now: Instant, tun: TunId, pkt: Vec<u8>) {
        let Some(&link) = self.tun_link.get(tun) else {
            return;
        };
        self.transmit(now, link, UP, pkt);
    }

    /// When [`Fabric::handle_timeout`] next has work.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|p| p.0.at)
    }

    /// Delivers every packet due by `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while self.heap.peek().is_some_and(|p| p.0.at <= now) {
            let Some(Reverse(p)) = self.heap.pop() else {
                break;
            };
            self.deliver(now, p.link, p.dir, p.pkt);
        }
    }

    /// The next packet to write to a TUN.
    pub(crate) fn poll_transmit(&mut self) -> Option<(TunId, Vec<u8>)> {
        self.out.pop_front()
    }

    pub(crate) fn flush_pcaps(&mut self) {
        if let Some(f) = &mut self.fate_log {
            let _ = std::io::Write::flush(f);
        }
        for l in &mut self.links {
            if let Some(p) = &mut l.pcap {
                p.flush();
            }
        }
    }

    fn transmit(&mut self, now: Instant, link: usize, dir: usize, pkt: Vec<u8>) {
        let Some(meta) = packet::parse(&pkt) else {
            inc(&self.counters.not_ipv4);
            return;
        };
        let fate = self.links[link].dirs[dir].offer(now, pkt.len(), flow_key(&meta));
        if self.fate_log.is_some() {
            self.log_fate(link, dir, &meta, fate);
        }
        match fate {
            Fate::Delivered {
                delay_ns,
                duplicate_ns,
            } => {
                if let Some(d) = duplicate_ns {
                    self.schedule(now + Duration::from_nanos(d), link, dir, pkt.clone());
                }
                if delay_ns == 0 {
                    self.deliver(now, link, dir, pkt);
                } else {
                    self.schedule(now + Duration::from_nanos(delay_ns), link, dir, pkt);
                }
            }
            Fate::TooBig => {
                let mtu = self.links[link].dirs[dir].mtu();
                let sender = self.links[link].ends[dir];
                if let (End::Node(n), true) = (sender, meta.df) {
                    // The sending router answers on the side the packet came from.
                    let src = self.nodes[n].lan_ip;
                    let err = packet::icmp_error(
                        &pkt,
                        &meta,
                        src,
                        packet::ICMP_DEST_UNREACH,
                        4,
                        mtu as u16,
                    );
                    self.route_from_node(now, n, err);
                }
            }
            Fate::Lost | Fate::QueueFull => {}
        }
    }

    fn log_fate(&mut self, link: usize, dir: usize, m: &Meta, fate: Fate) {
        let proto = match m.proto {
            packet::UDP => "udp",
            packet::TCP => "tcp",
            packet::ICMP => "icmp",
            _ => "ip",
        };
        let (kind, delay, dup) = match fate {
            Fate::Delivered {
                delay_ns,
                duplicate_ns,
            } => ("delivered", Some(delay_ns), duplicate_ns),
            Fate::Lost => ("lost", None, None),
            Fate::QueueFull => ("queue_full", None, None),
            Fate::TooBig => ("too_big", None, None),
        };
        let line = serde_json::json!({
            "link": self.links[link].name,
            "dir": if dir == UP { "up" } else { "down" },
            "flow": format!("{proto} {}:{} > {}:{}", m.src, m.sport, m.dst, m.dport),
            "index": self.links[link].dirs[dir].last_index(),
            "fate": kind,
            "delay_ns": delay,
            "duplicate_ns": dup,
        });
        if let Some(f) = &mut self.fate_log
            && std::io::Write::write_all(f, format!("{line}\n").as_bytes()).is_err()
        {
            tracing::warn!("fate log write failed; logging stopped");
            self.fate_log = None;
        }
    }

    fn schedule(&mut self, at: Instant, link: usize, dir: usize, pkt: Vec<u8>) {
        self.seq += 1;
        self.heap.push(Reverse(Pending {
            at,
            seq: self.seq,
            link,
            dir,
            pkt,
        }));
    }

    fn deliver(&mut self, now: Instant, link: usize, dir: usize, pkt: Vec<u8>) {
        let l = &mut self.links[link];
        l.dirs[dir].count_delivered(pkt.len());
        if let Some(p) = &mut l.pcap {
            p.write(&pkt);
        }
        match l.ends[1 - dir] {
            End::Tun(t) => self.out.push_back((t, pkt)),
            End::Node(n) => self.node_input(now, n, link, pkt),
        }
    }

    /// Sends `pkt` out of node `n` on `link`.
    fn send_from(&mut self, now: Instant, n: usize, link: usize, pkt: Vec<u8>) {
        let dir = if self.links[link].ends[1] == End::Node(n) {
            DOWN
        } else {
            UP
        };
        self.transmit(now, link, dir, pkt);
    }

    fn lookup(&self, n: usize, dst: Ipv4Addr) -> Option<usize> {
        let node = &self.nodes[n];
        node.exact.get(&dst).copied().or_else(|| {
            node.subnets
                .iter()
                .find(|(s, _)| s.contains(dst))
                .map(|(_, l)| *l)
        })
    }

    /// Routes a packet the node itself originated (an ICMP error).
    fn route_from_node(&mut self, now: Instant, n: usize, mut pkt: Vec<u8>) {
        let Some(mut m) = packet::parse(&pkt) else {
            return;
        };
        if let Kind::Nat(nat) = &mut self.nodes[n].kind {
            // An error about a packet already translated goes back inside.
            if m.dst == nat.ext_ip() {
                if nat.inbound(now, &mut pkt, &mut m) == Verdict::Forward {
                    self.deliver_lan(now, n, pkt, &m);
                }
                return;
            }
        }
        let egress = self.lookup(n, m.dst).or(self.nodes[n].uplink);
        if let Some(link) = egress {
            self.send_from(now, n, link, pkt);
        }
    }

    #[allow(clippy::too_many_arguments)] // one call shape, spelled out at each use
    fn icmp_back(
        &mut self,
        now: Instant,
        n: usize,
        in_link: usize,
        pkt: &[u8],
        m: &Meta,
        typ: u8,
        code: u8,
    ) {
        let from_wan = self.nodes[n].uplink == Some(in_link);
        let src = if from_wan {
            self.nodes[n].wan_ip
        } else {
            self.nodes[n].lan_ip
        };
        let err = packet::icmp_error(pkt, m, src, typ, code, 0);
        self.send_from(now, n, in_link, err);
    }

    fn node_input(&mut self, now: Instant, n: usize, in_link: usize, mut pkt: Vec<u8>) {
        let Some(mut m) = packet::parse(&pkt) else {
            inc(&self.counters.not_ipv4);
            return;
        };
        if let Kind::Gateway { gateway } = self.nodes[n].kind {
            // A switch: LAN hosts by address, everything else (multicast
            // included) to the Linux router, which does its own TTL.
            if m.dst.is_multicast() || m.dst.is_broadcast() {
                let links: Vec<usize> = self
                    .links
                    .iter()
                    .enumerate()
                    .filter(|(i, l)| *i != in_link && l.ends[1] == End::Node(n))
                    .map(|(i, _)| i)
                    .collect();
                for l in links {
                    self.send_from(now, n, l, pkt.clone());
                }
                return;
            }
            match self.lookup(n, m.dst) {
                Some(link) if link != in_link => self.send_from(now, n, link, pkt),
                Some(_) => {}
                None if in_link != gateway => self.send_from(now, n, gateway, pkt),
                None => inc(&self.counters.no_route),
            }
            return;
        }
        // Within one LAN (a switch, not a hop) the TTL stays as it is.
        let lan_local = self.nodes[n].uplink != Some(in_link)
            && matches!(self.nodes[n].kind, Kind::Nat(_))
            && (m.dst.is_multicast()
                || m.dst.is_broadcast()
                || self.nodes[n].lan.is_some_and(|s| s.contains(m.dst)));
        if !lan_local && !packet::decrement_ttl(&mut pkt, &mut m) {
            inc(&self.counters.ttl_expired);
            if !m.is_icmp_error() {
                self.icmp_back(now, n, in_link, &pkt, &m, packet::ICMP_TIME_EXCEEDED, 0);
            }
            return;
        }
        let from_wan = self.nodes[n].uplink == Some(in_link);
        let Kind::Nat(_) = &self.nodes[n].kind else {
            // Plain routing (the core and open routers).
            match self
                .lookup(n, m.dst)
                .or(self.nodes[n].uplink.filter(|u| *u != in_link))
            {
                Some(link) => self.send_from(now, n, link, pkt),
                None => {
                    inc(&self.counters.no_route);
                    if !m.is_icmp_error() {
                        self.icmp_back(now, n, in_link, &pkt, &m, packet::ICMP_DEST_UNREACH, 0);
                    }
                }
            }
            return;
        };
        let lan = self.nodes[n].lan;
        let own_lan_ip = self.nodes[n].lan_ip;
        let lan_ip_is_a_host = self.nodes[n].exact.contains_key(&own_lan_ip);
        let Kind::Nat(nat) = &mut self.nodes[n].kind else {
            return;
        };
        let ext_ip = nat.ext_ip();
        if from_wan {
            if m.dst != ext_ip {
                inc(&self.counters.no_route);
                return;
            }
            // The router answers pings to its own external address.
            if let Some(reply) = packet::echo_reply(&pkt, &m) {
                self.send_from(now, n, in_link, reply);
                return;
            }
            match nat.inbound(now, &mut pkt, &mut m) {
                Verdict::Forward => self.deliver_lan(now, n, pkt, &m),
                Verdict::Reply(r) => self.send_from(now, n, in_link, r),
                Verdict::Drop => {}
            }
            return;
        }
        if m.dst.is_multicast() || m.dst.is_broadcast() {
            // LAN-local (SSDP and friends): every other LAN link, never upstream.
            let links: Vec<usize> = self
                .links
                .iter()
                .enumerate()
                .filter(|(i, l)| *i != in_link && l.ends[1] == End::Node(n))
                .map(|(i, _)| i)
                .collect();
            for l in links {
                self.send_from(now, n, l, pkt.clone());
            }
            return;
        }
        if m.dst == own_lan_ip && !lan_ip_is_a_host {
            // The router answers pings to its own LAN address.
            if let Some(reply) = packet::echo_reply(&pkt, &m) {
                self.send_from(now, n, in_link, reply);
            }
            return;
        }
        if lan.is_some_and(|s| s.contains(m.dst)) {
            self.deliver_lan(now, n, pkt, &m);
            return;
        }
        if m.dst == ext_ip {
            if !nat.hairpinning() {
                inc(&self.counters.hairpin_refused);
                return;
            }
            if nat.outbound(now, &mut pkt, &mut m) != Verdict::Forward {
                return;
            }
            match nat.inbound(now, &mut pkt, &mut m) {
                Verdict::Forward => {
                    inc(&nat.counters.hairpinned);
                    self.deliver_lan(now, n, pkt, &m);
                }
                Verdict::Reply(r) => self.deliver_lan_parsed(now, n, r),
                Verdict::Drop => {}
            }
            return;
        }
        match nat.outbound(now, &mut pkt, &mut m) {
            Verdict::Forward => match self.nodes[n].uplink {
                Some(up) => self.send_from(now, n, up, pkt),
                None => inc(&self.counters.no_route),
            },
            Verdict::Reply(r) => self.deliver_lan_parsed(now, n, r),
            Verdict::Drop => {}
        }
    }

    fn deliver_lan_parsed(&mut self, now: Instant, n: usize, pkt: Vec<u8>) {
        if let Some(m) = packet::parse(&pkt) {
            self.deliver_lan(now, n, pkt, &m);
        }
    }

    fn deliver_lan(&mut self, now: Instant, n: usize, pkt: Vec<u8>, m: &Meta) {
        match self.lookup(n, m.dst) {
            Some(link) => self.send_from(now, n, link, pkt),
            None => inc(&self.counters.no_route),
        }
    }
}

/// The node on the upper end of `link`.
fn up_parent(f: &Fabric, link: usize) -> usize {
    match f.links[link].ends[1] {
        End::Node(p) => p,
        End::Tun(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{Impairment, LinkConfig};
    use crate::nat::NatPreset;
    use crate::packet::{checksums_ok, parse, udp};

    fn drain(f: &mut Fabric, now: Instant) -> Vec<(TunId, Vec<u8>)> {
        f.handle_timeout(now);
        std::iter::from_fn(|| f.poll_transmit()).collect()
    }

    #[test]
    fn packet_crosses_nat_and_comes_back() {
        let mut t = Topology::new();
        let r = t.router("home", NatPreset::PortRestrictedCone);
        let a = t.host("a", r);
        let s = t.public_host("s");
        let mut f = Fabric::new(&t, 1).unwrap();
        let now = Instant::now();
        f.ingress(now, a.0, udp(t.ip(a), 4000, t.ip(s), 53, b"q"));
        let out = drain(&mut f, now);
        assert_eq!(out.len(), 1);
        let (tun, p) = &out[0];
        assert_eq!(*tun, s.0);
        let m = parse(p).unwrap();
        assert_eq!((m.src, m.sport), (t.wan_ip(r), 4000));
        assert!(checksums_ok(p));
        assert_eq!(m.ttl, 62, "two routers decrement TTL");
        f.ingress(now, s.0, udp(t.ip(s), 53, t.wan_ip(r), 4000, b"a"));
        let out = drain(&mut f, now);
        let m = parse(&out[0].1).unwrap();
        assert_eq!((out[0].0, m.dst, m.dport), (a.0, t.ip(a), 4000));
        // Unsolicited from another port is filtered.
        f.ingress(now, s.0, udp(t.ip(s), 54, t.wan_ip(r), 4000, b"a"));
        assert!(drain(&mut f, now).is_empty());
    }

    #[test]
    fn router_answers_pings_on_both_sides() {
        let mut t = Topology::new();
        let r = t.router("home", NatPreset::Symmetric);
        let a = t.host("a", r);
        let s = t.public_host("s");
        let mut f = Fabric::new(&t, 1).unwrap();
        let now = Instant::now();
        for (tun, src, dst) in [
            (a.0, t.ip(a), t.router_spec(r).lan_ip()),
            (s.0, t.ip(s), t.wan_ip(r)),
        ] {
            let mut req = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 1, 0, 0];
            req.extend_from_slice(&src.octets());
            req.extend_from_slice(&dst.octets());
            req.extend_from_slice(&[8, 0, 0, 0, 0x12, 0x34, 0, 1]);
            let c = packet::checksum(&req[..20]);
            req[10..12].copy_from_slice(&c.to_be_bytes());
            let c = packet::checksum(&req[20..]);
            req[22..24].copy_from_slice(&c.to_be_bytes());
            f.ingress(now, tun, req);
            let out = drain(&mut f, now);
            assert_eq!(out.len(), 1, "reply to {dst}");
            let m = parse(&out[0].1).unwrap();
            assert_eq!((out[0].0, m.src, m.dst, m.icmp_type), (tun, dst, src, 0));
            assert!(checksums_ok(&out[0].1));
        }
    }

    #[test]
    fn latency_delays_delivery() {
        let mut t = Topology::new();
        let a = t.public_host("a");
        let b = t.public_host("b");
        t.set_link(
            a,
            LinkConfig::symmetric(Impairment::none().latency(Duration::from_millis(10))),
        );
        let mut f = Fabric::new(&t, 1).unwrap();
        let now = Instant::now();
        f.ingress(now, a.0, udp(t.ip(a), 1, t.ip(b), 2, b"x"));
        assert!(drain(&mut f, now).is_empty());
        assert_eq!(f.poll_timeout(), Some(now + Duration::from_millis(10)));
        assert_eq!(drain(&mut f, now + Duration::from_millis(10)).len(), 1);
    }

    #[test]
    fn small_mtu_on_a_router_link_returns_fragmentation_needed() {
        let mut t = Topology::new();
        let r = t.router("home", NatPreset::FullCone);
        let a = t.host("a", r);
        let s = t.public_host("s");
        t.set_router_link(r, LinkConfig::symmetric(Impairment::none().mtu(1000)));
        let mut f = Fabric::new(&t, 1).unwrap();
        let now = Instant::now();
        let mut big = udp(t.ip(a), 4000, t.ip(s), 53, &[0u8; 1200]);
        big[6] |= 0x40; // DF
        let c = packet::checksum(&{
            let mut h = big[..20].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        big[10..12].copy_from_slice(&c.to_be_bytes());
        f.ingress(now, a.0, big);
        let out = drain(&mut f, now);
        assert_eq!(out.len(), 1);
        let (tun, p) = &out[0];
        assert_eq!(*tun, a.0);
        let m = parse(p).unwrap();
        assert_eq!((m.proto, m.icmp_type, p[m.l4 + 1]), (packet::ICMP, 3, 4));
        assert_eq!(u16::from_be_bytes([p[m.l4 + 6], p[m.l4 + 7]]), 1000);
        assert!(checksums_ok(p));
    }
}
