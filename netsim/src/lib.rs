//! netsim: a virtual internet on one Linux machine.
//!
//! Every simulated host runs in its own network namespace where it sees one
//! TUN interface, `eth0`. A user-space router thread reads every packet from
//! those interfaces and moves it through the [`Topology`]: links that delay,
//! drop, duplicate, reorder and rate-limit ([`Impairment`]), and routers that
//! translate addresses with any RFC 4787 behaviour ([`NatConfig`],
//! [`NatPreset`]). Every random decision comes from the topology's seed.
//!
//! ```no_run
//! use netsim::{NatPreset, Topology};
//! let mut t = Topology::new().seed(1);
//! let nat = t.router("home", NatPreset::PortRestrictedCone);
//! let client = t.host("client", nat);
//! let server = t.public_host("server");
//! let server_ip = t.ip(server);
//! let [sent, got] = netsim::run(&t, [
//!     netsim::host(move || async move {
//!         let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await.unwrap();
//!         s.send_to(b"hi", (server_ip, 7)).await.unwrap()
//!     }),
//!     netsim::host(|| async {
//!         let s = tokio::net::UdpSocket::bind("0.0.0.0:7").await.unwrap();
//!         let mut b = [0; 16];
//!         s.recv_from(&mut b).await.unwrap().0
//!     }),
//! ]).unwrap();
//! # let _ = (client, sent, got);
//! ```
//!
//! Linux only; needs root (or the CLI in an unprivileged user namespace).

#[cfg(not(target_os = "linux"))]
compile_error!("netsim needs Linux: network namespaces and TUN devices");

mod classify;
mod error;
mod fabric;
mod fate;
mod link;
mod linux_router;
mod nat;
mod network;
mod packet;
mod pcap;
mod prereq;
#[cfg(test)]
mod proptests;
mod router;
pub mod scenario;

mod stun;
mod sys;
mod topology;
mod upnp;

pub use classify::{
    ClassifyError, NatReport as NatClassification, PortBehaviour, classify, serve_probes,
    stop_probes,
};
pub use error::{RunError, StartError};
pub use fabric::PortForward;
pub use link::{Fate, GilbertElliott, Impairment, LinkConfig, LinkStats};
pub use nat::{Dependence, NatConfig, NatPreset, NatStats, PortAssignment, Unsolicited};
pub use network::{
    Host, HostTask, LinkReport, NatReport, Network, Stats, effective_seed, host, run,
};
pub use prereq::{has_program, is_root, prerequisites};
pub use stun::serve_stun;
pub use sys::{enter_netns_file, enter_user_namespace, join_user_namespace_of};
pub use topology::{HostId, HostSpec, LinuxRouter, RouterId, RouterSpec, Subnet, Topology};
