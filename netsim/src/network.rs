//! A running virtual internet: one namespace per host, one router thread.
//!
//! [`Network::start`] creates every host namespace and starts the router;
//! [`Network::spawn`] runs a closure inside a host on its own current-thread
//! tokio runtime, [`Network::command`] starts an external program there;
//! [`Network::add_host`] grows a running network; [`Network::stats`] reads
//! the counters; dropping the network stops the router and frees everything.
//! [`run`] wraps all of it for the common test shape.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use serde::Serialize;

use crate::error::{RunError, StartError};
use crate::fabric::{Fabric, FabricCounters, LinkHandles, NatHandles, PortForward};
use crate::link::LinkStats;
use crate::nat::NatStats;
use crate::router::{Command, Router, Waker, proto_number};
use crate::sys;
use crate::topology::{HostId, HostSpec, RouterId, Topology};

struct HostHandle {
    name: String,
    addrs: Vec<Ipv4Addr>,
    netns: Arc<OwnedFd>,
}

/// A running virtual internet. Dropping it stops the router.
pub struct Network {
    topology: Topology,
    seed: u64,
    hosts: Vec<HostHandle>,
    commands: Sender<Command>,
    waker: Waker,
    router: Option<JoinHandle<()>>,
    links: Vec<LinkHandles>,
    nats: Vec<NatHandles>,
    fabric: Arc<FabricCounters>,
    /// Namespaces of real Linux routers, by router index.
    linux_routers: Vec<(usize, Arc<OwnedFd>)>,
    upnpds: Vec<crate::linux_router::Upnpd>,
    stun: Option<(HostId, Ipv4Addr, HostTask<std::io::Result<()>>)>,
    igds: Vec<(
        tokio::sync::oneshot::Sender<()>,
        HostTask<std::io::Result<()>>,
    )>,
}

/// Name of the public host that serves STUN for miniupnpd.
pub(crate) const STUN_HOST: &str = "netsim-stun";
const STUN_PORT: u16 = 3478;

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("seed", &self.seed)
            .field("hosts", &self.hosts.len())
            .finish()
    }
}

/// The seed a topology runs with: `NETSIM_SEED` if set, else its own.
pub fn effective_seed(topology: &Topology) -> u64 {
    std::env::var("NETSIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(topology.seed)
}

/// Counters of one link.
#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    /// The host or router the link attaches.
    pub name: String,
    /// Towards the network.
    pub up: LinkStats,
    /// From the network.
    pub down: LinkStats,
}

/// Counters of one NAT.
#[derive(Debug, Clone, Serialize)]
pub struct NatReport {
    /// The router's name.
    pub name: String,
    /// Its counters.
    pub stats: NatStats,
}

/// Every counter of a network at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Per link.
    pub links: Vec<LinkReport>,
    /// Per NAT.
    pub nats: Vec<NatReport>,
    /// Non-IPv4 packets dropped.
    pub not_ipv4: u64,
    /// Packets without a route.
    pub no_route: u64,
    /// Packets whose TTL expired.
    pub ttl_expired: u64,
    /// Hairpin attempts on NATs without hairpinning.
    pub hairpin_refused: u64,
    /// Packets dropped because a host's TUN queue was full.
    pub tun_write_dropped: u64,
}

impl Stats {
    /// The counters of the link named `name`.
    pub fn link(&self, name: &str) -> Option<&LinkReport> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The counters of the NAT named `name`.
    pub fn nat(&self, name: &str) -> Option<&NatStats> {
        self.nats.iter().find(|n| n.name == name).map(|n| &n.stats)
    }
}

/// A closure running in a host.
#[derive(Debug)]
pub struct HostTask<T> {
    host: String,
    seed: u64,
    handle: JoinHandle<T>,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

impl<T> HostTask<T> {
    /// Waits for the closure's value.
    pub fn join(self) -> Result<T, RunError> {
        self.handle.join().map_err(|p| {
            let message = panic_message(&*p);
            eprintln!(
                "netsim: host {} failed: {message}; seed {} (NETSIM_SEED={} replays it)",
                self.host, self.seed, self.seed
            );
            RunError::HostPanicked {
                host: self.host,
                seed: self.seed,
                message,
            }
        })
    }

    /// Whether the closure has returned.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

impl Network {
    /// Creates the hosts' namespaces and starts the router.
    pub fn start(topology: &Topology) -> Result<Network, StartError> {
        topology.validate().map_err(StartError::Topology)?;
        // miniupnpd needs a STUN server to accept a documentation-range WAN
        // address; one public host is added for it.
        let mut topology = topology.clone();
        let needs_stun = topology
            .routers
            .iter()
            .any(|r| r.linux.is_some_and(|l| l.upnp));
        let stun_host = needs_stun.then(|| topology.public_host_with_addrs(STUN_HOST, 2));
        let igd_routers: Vec<RouterId> = topology
            .routers()
            .filter(|r| {
                let spec = topology.router_spec(*r);
                spec.upnp && spec.linux.is_none() && spec.nat.is_some()
            })
            .collect();
        let igds: Vec<(RouterId, HostId)> = igd_routers
            .into_iter()
            .map(|r| {
                let name = format!("{}-upnp", topology.router_spec(r).name);
                (r, topology.service_host(&name, r))
            })
            .collect();
        let topology = &topology;
        topology.validate().map_err(StartError::Topology)?;
        let seed = effective_seed(topology);
        let fabric = Fabric::new(topology, seed).map_err(|source| StartError::Setup {
            what: "building the router".into(),
            source,
        })?;
        // Namespaces are created in parallel: each needs a thread and an `ip` run.
        let made: Vec<Result<sys::HostNs, StartError>> = std::thread::scope(|s| {
            let jobs: Vec<_> = topology
                .hosts
                .iter()
                .map(|h| s.spawn(move || sys::create_host(&h.addrs, h.link.up.mtu, true)))
                .collect();
            jobs.into_iter()
                .map(|j| {
                    j.join()
                        .unwrap_or_else(|_| Err(StartError::Topology("setup panicked".into())))
                })
                .collect()
        });
        let mut hosts = Vec::new();
        let mut tuns = Vec::new();
        // Real Linux routers' TUNs come first, in router order (see Fabric::new).
        let mut linux_routers = Vec::new();
        for (i, r) in topology.routers.iter().enumerate() {
            if r.linux.is_some() {
                let ns = crate::linux_router::start(r)?;
                tuns.extend(ns.tuns);
                linux_routers.push((i, Arc::new(ns.netns)));
            }
        }
        for (h, ns) in topology.hosts.iter().zip(made) {
            let ns = ns?;
            hosts.push(HostHandle {
                name: h.name.clone(),
                addrs: h.addrs.iter().map(|a| a.0).collect(),
                netns: Arc::new(ns.netns),
            });
            tuns.push(ns.tun);
        }
        let links = fabric.link_handles();
        let nats = fabric.nat_handles();
        let counters = fabric.counters.clone();
        let (tx, rx) = mpsc::channel();
        let (router, waker) =
            Router::new(fabric, tuns, rx).map_err(|source| StartError::Setup {
                what: "starting the router loop".into(),
                source,
            })?;
        let handle = std::thread::Builder::new()
            .name("netsim-router".into())
            .spawn(move || router.run())
            .map_err(|source| StartError::Setup {
                what: "spawning the router thread".into(),
                source,
            })?;
        let mut net = Network {
            topology: topology.clone(),
            seed,
            hosts,
            commands: tx,
            waker,
            router: Some(handle),
            links,
            nats,
            fabric: counters,
            linux_routers,
            upnpds: Vec::new(),
            stun: None,
            igds: Vec::new(),
        };
        for (r, h) in igds {
            let spec = topology.router_spec(r);
            let ctl = crate::upnp::Control {
                router: spec.name.clone(),
                commands: net.commands.clone(),
                waker: net.waker.clone(),
                lan_ip: spec.lan_ip(),
                wan_ip: spec.wan_ip,
            };
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = net
                .spawn(h, move || crate::upnp::serve(ctl, rx))
                .map_err(|e| StartError::Setup {
                    what: "starting UPnP IGD".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            net.igds.push((tx, task));
        }
        if let Some(h) = stun_host {
            let addrs = topology.addrs(h);
            let a = [addrs[0], addrs[1]];
            let task = net
                .spawn(h, move || crate::stun::serve_stun(a, STUN_PORT))
                .map_err(|e| StartError::Setup {
                    what: "starting the STUN server".into(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            net.stun = Some((h, a[0], task));
            // Let the STUN sockets bind before miniupnpd asks.
            std::thread::sleep(std::time::Duration::from_millis(50));
            for (i, ns) in &net.linux_routers {
                let spec = &topology.routers[*i];
                if spec.linux.is_some_and(|l| l.upnp) {
                    let d = crate::linux_router::start_upnpd(spec, ns, a[0])?;
                    net.upnpds.push(d);
                }
            }
        }
        Ok(net)
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The topology, including hosts added while running.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Finds a host by name.
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.hosts.iter().position(|h| h.name == name).map(HostId)
    }

    /// A host's name.
    pub fn host_name(&self, host: HostId) -> &str {
        &self.hosts[host.0].name
    }

    /// A host's addresses.
    pub fn host_addrs(&self, host: HostId) -> &[Ipv4Addr] {
        &self.hosts[host.0].addrs
    }

    /// A path other processes can open to join the host's namespace
    /// (`nsenter --net=PATH`), valid while this process runs.
    pub fn netns_path(&self, host: HostId) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.hosts[host.0].netns.as_raw_fd()
        ))
    }

    /// Runs `f` inside `host` on a fresh current-thread tokio runtime.
    pub fn spawn<F, Fut, T>(&self, host: HostId, f: F) -> Result<HostTask<T>, RunError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let h = &self.hosts[host.0];
        let netns = h.netns.clone();
        let name = h.name.clone();
        let handle = std::thread::Builder::new()
            .name(format!("netsim-{name}"))
            .spawn(move || {
                if let Err(e) = sys::enter(&*netns) {
                    panic!("cannot enter the host's namespace: {e}");
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => panic!("cannot build the host's runtime: {e}"),
                };
                rt.block_on(f())
            })
            .map_err(|source| RunError::Spawn {
                host: name.clone(),
                source,
            })?;
        Ok(HostTask {
            host: name,
            seed: self.seed,
            handle,
        })
    }

    fn linux_ns(&self, router: RouterId) -> std::io::Result<Arc<OwnedFd>> {
        self.linux_routers
            .iter()
            .find(|(i, _)| *i == router.0)
            .map(|(_, ns)| ns.clone())
            .ok_or_else(|| std::io::Error::other("not a Linux router"))
    }

    /// Starts an external program inside a real Linux router's namespace
    /// (for example `nft list ruleset`).
    pub fn router_command(
        &self,
        router: RouterId,
        cmd: &mut std::process::Command,
    ) -> std::io::Result<std::process::Child> {
        let netns = self.linux_ns(router)?;
        std::thread::scope(|s| {
            s.spawn(|| {
                sys::enter(&*netns)?;
                cmd.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("spawn thread panicked")))
        })
    }

    /// Like [`Network::netns_path`], for a real Linux router.
    pub fn router_netns_path(&self, router: RouterId) -> Option<PathBuf> {
        let ns = self.linux_ns(router).ok()?;
        Some(PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            ns.as_raw_fd()
        )))
    }

    /// Starts an external program inside `host`.
    pub fn command(
        &self,
        host: HostId,
        cmd: &mut std::process::Command,
    ) -> std::io::Result<std::process::Child> {
        let netns = self.hosts[host.0].netns.clone();
        std::thread::scope(|s| {
            s.spawn(|| {
                sys::enter(&*netns)?;
                cmd.spawn()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("spawn thread panicked")))
        })
    }

    fn call<R>(&self, make: impl FnOnce(Sender<R>) -> Command) -> Result<R, StartError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| StartError::RouterGone)?;
        self.waker.wake();
        rx.recv().map_err(|_| StartError::RouterGone)
    }

    /// Adds a public host to the running network.
    pub fn add_public_host(&mut self, name: &str) -> Result<HostId, StartError> {
        let id = self.topology.public_host(name);
        self.finish_add(id)
    }

    /// Adds a host on a router's LAN to the running network.
    pub fn add_host(&mut self, name: &str, router: RouterId) -> Result<HostId, StartError> {
        let id = self.topology.host(name, router);
        self.finish_add(id)
    }

    fn finish_add(&mut self, id: HostId) -> Result<HostId, StartError> {
        if let Err(e) = self.topology.validate() {
            self.topology.hosts.pop();
            return Err(StartError::Topology(e));
        }
        let spec: HostSpec = self.topology.host_spec(id).clone();
        let ns = sys::create_host(&spec.addrs, spec.link.up.mtu, true)?;
        let name = spec.name.clone();
        let addrs = spec.addrs.iter().map(|a| a.0).collect();
        let tun = ns.tun;
        let (_, handles) = self
            .call(|reply| Command::AddHost {
                spec: Box::new(spec),
                tun,
                reply,
            })?
            .map_err(|source| StartError::Setup {
                what: "adding a host".into(),
                source,
            })?;
        self.links.push(handles);
        self.hosts.push(HostHandle {
            name,
            addrs,
            netns: Arc::new(ns.netns),
        });
        Ok(id)
    }

    /// Forwards `protocol` ("udp"/"tcp") port `external_port` of a NAT router
    /// to `internal`. False if the port is in use or the router has no NAT.
    pub fn add_port_forward(
        &self,
        router: RouterId,
        protocol: &str,
        external_port: u16,
        internal: SocketAddrV4,
    ) -> Result<bool, StartError> {
        let proto = proto_number(protocol)
            .ok_or_else(|| StartError::Topology(format!("unknown protocol {protocol}")))?;
        let name = self.topology.router_spec(router).name.clone();
        self.call(|reply| Command::AddForward {
            router: name,
            proto,
            ext_port: external_port,
            internal,
            reply,
        })
    }

    /// Removes a port forward.
    pub fn remove_port_forward(
        &self,
        router: RouterId,
        protocol: &str,
        external_port: u16,
    ) -> Result<bool, StartError> {
        let proto = proto_number(protocol)
            .ok_or_else(|| StartError::Topology(format!("unknown protocol {protocol}")))?;
        let name = self.topology.router_spec(router).name.clone();
        self.call(|reply| Command::RemoveForward {
            router: name,
            proto,
            ext_port: external_port,
            reply,
        })
    }

    /// A NAT router's port forwards.
    pub fn port_forwards(&self, router: RouterId) -> Result<Vec<PortForward>, StartError> {
        let name = self.topology.router_spec(router).name.clone();
        self.call(|reply| Command::Forwards {
            router: name,
            reply,
        })
    }

    /// Forgets every mapping of a NAT router, as a reboot would.
    pub fn reboot_nat(&self, router: RouterId) -> Result<bool, StartError> {
        let name = self.topology.router_spec(router).name.clone();
        self.call(|reply| Command::FlushNat {
            router: name,
            reply,
        })
    }

    /// Reads every counter.
    pub fn stats(&self) -> Stats {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            links: self
                .links
                .iter()
                .map(|l| LinkReport {
                    name: l.name.clone(),
                    up: l.up.snapshot(),
                    down: l.down.snapshot(),
                })
                .collect(),
            nats: self
                .nats
                .iter()
                .map(|n| NatReport {
                    name: n.name.clone(),
                    stats: n.counters.snapshot(),
                })
                .collect(),
            not_ipv4: r(&self.fabric.not_ipv4),
            no_route: r(&self.fabric.no_route),
            ttl_expired: r(&self.fabric.ttl_expired),
            hairpin_refused: r(&self.fabric.hairpin_refused),
            tun_write_dropped: r(&self.fabric.tun_write_dropped),
        }
    }

    /// Stops the router (flushing pcap files) and returns the final counters.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        self.upnpds.clear();
        for (tx, task) in self.igds.drain(..) {
            let _ = tx.send(());
            if let Err(e) = task.join() {
                tracing::warn!("UPnP service: {e}");
            }
        }
        if let Some((h, ip, task)) = self.stun.take() {
            if let Ok(q) = self.spawn(h, move || crate::classify::stop_probes(ip, STUN_PORT)) {
                let _ = q.join();
            }
            let _ = task.join();
        }
        if let Some(h) = self.router.take() {
            let _ = self.commands.send(Command::Stop);
            self.waker.wake();
            let _ = h.join();
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A closure to run in one host; see [`host`].
pub struct Host<T> {
    f: Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = T>>> + Send>,
}

impl<T> std::fmt::Debug for Host<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Host")
    }
}

/// Wraps an async closure to run inside a host by [`run`].
pub fn host<F, Fut, T>(f: F) -> Host<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    Host {
        f: Box::new(move || Box::pin(f()) as Pin<Box<dyn Future<Output = T>>>),
    }
}

/// Starts `topology`, runs the `i`th closure in its `i`th host (all at once),
/// waits for all of them, stops the network and returns their values.
pub fn run<T: Send + 'static, const N: usize>(
    topology: &Topology,
    hosts: [Host<T>; N],
) -> Result<[T; N], RunError> {
    if topology.hosts.len() != N {
        return Err(RunError::HostCount {
            expected: topology.hosts.len(),
            got: N,
        });
    }
    let net = Network::start(topology)?;
    let mut tasks = Vec::with_capacity(N);
    for (i, h) in hosts.into_iter().enumerate() {
        tasks.push(net.spawn(HostId(i), h.f)?);
    }
    let mut out = Vec::with_capacity(N);
    let mut first_err = None;
    for t in tasks {
        match t.join() {
            Ok(v) => out.push(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    drop(net);
    if let Some(e) = first_err {
        return Err(e);
    }
    match out.try_into() {
        Ok(a) => Ok(a),
        Err(_) => Err(RunError::HostCount {
            expected: N,
            got: 0,
        }),
    }
}
