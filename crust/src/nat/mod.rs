//! NAT traversal's pure parts: what we know about our addresses
//! ([`NatReport`], classification), crust's own datagrams, local
//! addresses, the UPnP client, and the hole-punching plan. The driver that
//! does the I/O is `service/nat.rs`.

pub(crate) mod datagram;
mod local;
mod punch;
mod report;
pub(crate) mod tcp;
pub(crate) mod upnp;

pub(crate) use datagram::Datagram;
pub(crate) use local::{behind_nat, local_ips};
pub(crate) use punch::{
    BIRTHDAY_PROBES, BIRTHDAY_SOCKETS, Birthday, Budget, FIRST_NAT_PORT, Probe, PunchPlan,
};
pub(crate) use report::classify;
pub use report::{Mapping, NatReport, Observation, PortAllocation, UpnpMapping};
