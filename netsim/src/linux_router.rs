//! A real Linux router: a namespace with a WAN and a LAN TUN interface,
//! kernel forwarding, an nftables masquerade with the chains `miniupnpd`
//! expects, and optionally `miniupnpd` itself.
//!
//! [`start`] creates the namespace (the fabric then owns its two TUNs);
//! [`start_upnpd`] starts `miniupnpd` inside once the router thread runs;
//! dropping the [`Upnpd`] stops it and removes its files.

use std::process::{Child, Command, Stdio};

use crate::error::StartError;
use crate::sys::{self, Iface, MultiNs};
use crate::topology::RouterSpec;

/// Interface names inside the router namespace.
pub(crate) const WAN: &str = "wan0";
pub(crate) const LAN: &str = "lan0";

/// The nftables ruleset: masquerade out of WAN, a stateful forward filter,
/// and the empty chains miniupnpd fills with its port mappings.
fn ruleset() -> String {
    format!(
        r#"table inet filter {{
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "{LAN}" oifname "{WAN}" accept
        jump miniupnpd
    }}
    chain miniupnpd {{
    }}
    chain prerouting {{
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        oifname "{WAN}" masquerade
    }}
    chain prerouting_miniupnpd {{
    }}
    chain postrouting_miniupnpd {{
    }}
}}
"#
    )
}

/// miniupnpd 2.3 refuses to forward ports when its WAN address is in a
/// reserved range (documentation ranges included) unless STUN confirms that
/// the address is reachable, so it is pointed at a STUN server
/// ([`crate::serve_stun`]) on a public host of the scenario.
fn upnpd_conf(spec: &RouterSpec, stun: std::net::Ipv4Addr) -> String {
    let lan = spec.lan;
    format!(
        "ext_ifname={WAN}\n\
         listening_ip={LAN}\n\
         port=5000\n\
         enable_natpmp=yes\n\
         enable_upnp=yes\n\
         secure_mode=yes\n\
         system_uptime=yes\n\
         notify_interval=60\n\
         clean_ruleset_interval=600\n\
         ext_perform_stun=yes\n\
         ext_stun_host={stun}\n\
         ext_stun_port=3478\n\
         uuid=00000000-0000-4000-8000-{:012x}\n\
         upnp_table_name=filter\n\
         upnp_nat_table_name=filter\n\
         upnp_forward_chain=miniupnpd\n\
         upnp_nat_chain=prerouting_miniupnpd\n\
         upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
         allow 1024-65535 {}/{} 1024-65535\n\
         deny 0-65535 0.0.0.0/0 0-65535\n",
        u32::from(spec.wan_ip),
        lan.addr,
        lan.prefix
    )
}

/// Creates the router namespace; returns it with TUNs `[wan, lan]`.
pub(crate) fn start(spec: &RouterSpec) -> Result<MultiNs, StartError> {
    let wan = Iface {
        name: WAN.into(),
        addrs: vec![(spec.wan_ip, 24)],
        mtu: spec.link.up.mtu,
        multicast: false,
    };
    let lan = Iface {
        name: LAN.into(),
        addrs: vec![(spec.lan_ip(), spec.lan.prefix)],
        mtu: 1500,
        multicast: true,
    };
    sys::create_ns(vec![wan, lan], true, Some(ruleset()))
}

/// A running miniupnpd; stopped on drop.
#[derive(Debug)]
pub(crate) struct Upnpd {
    child: Child,
    files: Vec<std::path::PathBuf>,
}

impl Drop for Upnpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("NETSIM_KEEP_LOGS").is_some() {
            eprintln!("netsim: miniupnpd files kept: {:?}", self.files);
            return;
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Starts miniupnpd inside the router namespace `netns`.
pub(crate) fn start_upnpd(
    spec: &RouterSpec,
    netns: &std::os::fd::OwnedFd,
    stun: std::net::Ipv4Addr,
) -> Result<Upnpd, StartError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let base = std::env::temp_dir().join(format!(
        "netsim-miniupnpd-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        spec.name
    ));
    let conf = base.with_extension("conf");
    let pid = base.with_extension("pid");
    let log = base.with_extension("log");
    std::fs::write(&conf, upnpd_conf(spec, stun)).map_err(|source| StartError::Setup {
        what: "writing miniupnpd.conf".into(),
        source,
    })?;
    let log_file = std::fs::File::create(&log).map_err(|source| StartError::Setup {
        what: "creating the miniupnpd log".into(),
        source,
    })?;
    let child = std::thread::scope(|s| {
        s.spawn(|| {
            sys::enter(netns)?;
            Command::new("miniupnpd")
                .arg("-d")
                .arg("-f")
                .arg(&conf)
                .arg("-P")
                .arg(&pid)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("spawn thread panicked")))
    })
    .map_err(|e| StartError::Tool {
        tool: "miniupnpd".into(),
        message: format!("{e} (install miniupnpd)"),
    })?;
    Ok(Upnpd {
        child,
        files: vec![conf, pid, log],
    })
}
