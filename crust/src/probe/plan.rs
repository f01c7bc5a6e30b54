//! What the probe does, in what order, with what time budgets: data, so
//! that a test can check it (STYLE.md point 5). `run.rs` executes it.
//!
//! Phase one runs alone because it counts new NAT mappings: the RFC 5780
//! mapping test (three servers' views of one socket), then the port
//! allocation test (fresh sockets, one mapping each). Phase two runs its
//! steps at once: filtering, hairpinning, TCP, UPnP, IPv6. The binding
//! lifetime test, when asked for, runs last and alone sets the duration.

use std::net::SocketAddr;
use std::time::Duration;

/// What to probe against, and how patiently.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeConfig {
    /// Probe servers' primary addresses (UDP, and TCP on the same port),
    /// tried in order; the first that answers runs the tests.
    pub servers: Vec<SocketAddr>,
    /// A probe server's IPv6 address, for the IPv6 test.
    pub ipv6_server: Option<SocketAddr>,
    /// Ask a UPnP gateway for a mapping and test it from outside.
    pub upnp: bool,
    /// Run the TCP tests.
    pub tcp: bool,
    /// Idle times for the binding-lifetime test (empty: skip it; it takes
    /// as long as the longest).
    pub lifetime: Vec<Duration>,
    /// Wait this long for an answer before sending a request again.
    pub retransmit: Duration,
    /// Send each request this many times at most.
    pub attempts: u32,
    /// Fresh sockets for the port allocation test.
    pub port_samples: usize,
    /// How long the server tries a TCP connection to us.
    pub tcp_timeout: Duration,
    /// How long one UPnP gateway search waits.
    pub upnp_timeout: Duration,
}

impl ProbeConfig {
    /// The defaults against these servers.
    pub fn new(servers: Vec<SocketAddr>) -> Self {
        ProbeConfig {
            servers,
            ipv6_server: None,
            upnp: true,
            tcp: true,
            lifetime: Vec::new(),
            retransmit: Duration::from_millis(300),
            attempts: 3,
            port_samples: 3,
            tcp_timeout: Duration::from_secs(2),
            upnp_timeout: Duration::from_secs(1),
        }
    }
}

/// One test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Find a server that answers, then RFC 5780 section 4.3.
    Mapping,
    /// This many fresh sockets, one binding each.
    PortAllocation(usize),
    /// RFC 5780 section 4.4.
    Filtering,
    /// A datagram from a second socket to the first one's external address.
    Hairpinning,
    /// Outgoing TCP, the unsolicited SYN, simultaneous open.
    Tcp,
    /// UPnP IGD mapping, tested from outside.
    Upnp,
    /// A binding request to the IPv6 server.
    Ipv6(SocketAddr),
    /// Mappings left idle this long, then tested from the server.
    Lifetime(Vec<Duration>),
}

/// The steps in phases: steps of one phase run concurrently, phases in
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The phases.
    pub phases: Vec<Vec<Step>>,
    /// The longest the whole plan can take.
    pub budget: Duration,
}

impl Plan {
    /// The plan for `config`.
    pub fn new(config: &ProbeConfig) -> Plan {
        let exchange = config.retransmit * config.attempts;
        let mut first = vec![Step::Mapping];
        if config.port_samples >= 2 {
            first.push(Step::PortAllocation(config.port_samples));
        }
        let mut second = vec![Step::Filtering, Step::Hairpinning];
        if config.tcp {
            second.push(Step::Tcp);
        }
        if config.upnp {
            second.push(Step::Upnp);
        }
        if let Some(v6) = config.ipv6_server {
            second.push(Step::Ipv6(v6));
        }
        let mut phases = vec![first, second];
        if !config.lifetime.is_empty() {
            phases.push(vec![Step::Lifetime(config.lifetime.clone())]);
        }
        let budget = phases
            .iter()
            .enumerate()
            .map(|(i, phase)| {
                let each = phase.iter().map(|s| step_budget(s, config, exchange));
                if i == 0 {
                    each.sum()
                } else {
                    each.max().unwrap_or_default()
                }
            })
            .sum();
        Plan { phases, budget }
    }
}

/// The longest one step can take.
fn step_budget(step: &Step, config: &ProbeConfig, exchange: Duration) -> Duration {
    match step {
        // Every server may be silent, then three exchanges.
        Step::Mapping => exchange * (config.servers.len() as u32 + 2),
        Step::PortAllocation(n) => exchange * *n as u32,
        Step::Filtering => exchange * 3,
        Step::Hairpinning => exchange * 2,
        // Connect, unsolicited SYN (the server's timeout plus an exchange),
        // simultaneous open (an exchange plus the server's three seconds).
        Step::Tcp => config.tcp_timeout * 2 + exchange * 2 + super::run::SIMULTANEOUS_WINDOW,
        // Up to three searches, the mapping, one exchange, the unmapping.
        Step::Upnp => config.upnp_timeout * 3 + exchange + config.upnp_timeout * 2,
        Step::Ipv6(_) => exchange,
        Step::Lifetime(waits) => waits.iter().max().copied().unwrap_or_default() + exchange * 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_fits_in_thirty_seconds() {
        let config = ProbeConfig::new(vec!["192.0.2.1:3478".parse().unwrap()]);
        let plan = Plan::new(&config);
        assert_eq!(
            plan.phases,
            vec![
                vec![Step::Mapping, Step::PortAllocation(3)],
                vec![Step::Filtering, Step::Hairpinning, Step::Tcp, Step::Upnp],
            ]
        );
        assert!(plan.budget < Duration::from_secs(30), "{:?}", plan.budget);
    }

    #[test]
    fn optional_steps_follow_the_config() {
        let mut config = ProbeConfig::new(vec!["192.0.2.1:3478".parse().unwrap()]);
        config.tcp = false;
        config.upnp = false;
        config.ipv6_server = Some("[2001:db8::1]:3478".parse().unwrap());
        config.lifetime = vec![Duration::from_secs(30), Duration::from_secs(120)];
        let plan = Plan::new(&config);
        assert_eq!(
            plan.phases[1],
            vec![
                Step::Filtering,
                Step::Hairpinning,
                Step::Ipv6("[2001:db8::1]:3478".parse().unwrap())
            ]
        );
        assert_eq!(
            plan.phases[2],
            vec![Step::Lifetime(config.lifetime.clone())]
        );
        assert!(plan.budget > Duration::from_secs(120));
    }
}
