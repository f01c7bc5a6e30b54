//! UPnP IGD port mappings for the service's UDP socket and TCP listener,
//! through `igd-next`'s blocking client (run on tokio's blocking pool, so
//! the tree needs no HTTP stack of its own).
//!
//! Order: [`map`] once (searches the gateway, asks for our own port numbers
//! outside and falls back to any port), [`map`] again before the lease runs
//! out (same external ports), [`unmap`] on clean shutdown. No gateway is an
//! ordinary answer, reported as an error string and logged at debug level.

use std::net::SocketAddr;
use std::time::Duration;

use igd_next::{Gateway, PortMappingProtocol, SearchOptions};

use super::UpnpMapping;

/// Shown in the router's mapping table.
const DESCRIPTION: &str = "crust";

/// What to map.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    pub(crate) udp: Option<SocketAddr>,
    pub(crate) tcp: Option<SocketAddr>,
    pub(crate) lease: Duration,
}

/// Finds the gateway (a few SSDP searches: the first can be missed).
pub(crate) fn search(timeout: Duration) -> Result<Gateway, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let mut options = SearchOptions::default();
        options.timeout = Some(timeout);
        match igd_next::search_gateway(options) {
            Ok(gateway) => return Ok(gateway),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("no UPnP gateway: {last}"))
}

/// Maps (or renews) both ports. `previous` keeps the external ports of an
/// earlier mapping when renewing.
pub(crate) fn map(
    gateway: &Gateway,
    request: Request,
    previous: Option<&UpnpMapping>,
) -> Result<UpnpMapping, String> {
    let external_ip = gateway
        .get_external_ip()
        .map_err(|e| format!("UPnP external address: {e}"))?;
    let lease = u32::try_from(request.lease.as_secs()).unwrap_or(u32::MAX);
    let one = |protocol, local: Option<SocketAddr>, before: Option<SocketAddr>| {
        let local = local?;
        let wanted = before.map_or(local.port(), |a| a.port());
        let port = add(gateway, protocol, wanted, local, lease)
            .or_else(|e| {
                tracing::debug!(error = %e, ?protocol, wanted, "UPnP: own port refused; any port");
                gateway
                    .add_any_port(protocol, local, lease, DESCRIPTION)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| tracing::debug!(error = %e, ?protocol, "UPnP mapping failed"))
            .ok()?;
        Some(SocketAddr::new(external_ip, port))
    };
    let udp = one(
        PortMappingProtocol::UDP,
        request.udp,
        previous.and_then(|p| p.udp),
    );
    let tcp = one(
        PortMappingProtocol::TCP,
        request.tcp,
        previous.and_then(|p| p.tcp),
    );
    if udp.is_none() && tcp.is_none() {
        return Err("the UPnP gateway refused every mapping".into());
    }
    Ok(UpnpMapping {
        external_ip,
        udp,
        tcp,
    })
}

/// `AddPortMapping`, retried with a permanent lease for gateways that only
/// take those (error 725).
fn add(
    gateway: &Gateway,
    protocol: PortMappingProtocol,
    external: u16,
    local: SocketAddr,
    lease: u32,
) -> Result<u16, String> {
    match gateway.add_port(protocol, external, local, lease, DESCRIPTION) {
        Ok(()) => Ok(external),
        Err(igd_next::AddPortError::OnlyPermanentLeasesSupported) => gateway
            .add_port(protocol, external, local, 0, DESCRIPTION)
            .map(|()| external)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes the mappings; failures only logged (the lease ends them anyway).
pub(crate) fn unmap(gateway: &Gateway, mapping: &UpnpMapping) {
    for (protocol, addr) in [
        (PortMappingProtocol::UDP, mapping.udp),
        (PortMappingProtocol::TCP, mapping.tcp),
    ] {
        if let Some(addr) = addr
            && let Err(e) = gateway.remove_port(protocol, addr.port())
        {
            tracing::debug!(error = %e, ?protocol, "UPnP: removing the mapping failed");
        }
    }
}
