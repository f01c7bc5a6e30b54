//! Linux plumbing: create a network namespace with one TUN interface, enter a
//! namespace from a thread, and (for the CLI) a user namespace.
//!
//! [`create_host`] runs on a short-lived thread: it unshares a fresh network
//! namespace, opens `/dev/net/tun` as `eth0`, configures addresses and the
//! default route with `ip -batch`, and hands back two descriptors: the
//! namespace (kept open so it outlives the thread) and the TUN device (read
//! and written by the router). [`enter`] moves the calling thread into such a
//! namespace.

// One ioctl (TUNSETIFF) has no safe wrapper in nix; it is the only unsafe code
// in the crate and lives in `tun_set_iff` below.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

use nix::sched::{CloneFlags, setns, unshare};

use crate::error::StartError;

/// The descriptors of one host.
#[derive(Debug)]
pub(crate) struct HostNs {
    pub(crate) netns: OwnedFd,
    pub(crate) tun: OwnedFd,
}

/// Name of every host's interface.
pub(crate) const IFACE: &str = "eth0";

fn tun_set_iff(f: &File, name: &str) -> std::io::Result<()> {
    // SAFETY: `ifreq` is plain data, zero-initialised is valid; the name is
    // shorter than IFNAMSIZ and NUL-terminated by the zeroing; the ioctl reads
    // the struct and the descriptor is a live /dev/net/tun handle.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req
            .ifr_name
            .iter_mut()
            .zip(name.bytes().take(libc::IFNAMSIZ - 1))
        {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        if libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF as _, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn setup_err(what: &str) -> impl FnOnce(std::io::Error) -> StartError + '_ {
    move |source| StartError::Setup {
        what: what.to_owned(),
        source,
    }
}

fn privilege_error(e: nix::Error) -> StartError {
    StartError::Privileges(format!(
        "cannot create a network namespace ({e}); netsim needs root (or CAP_SYS_ADMIN and \
         CAP_NET_ADMIN), or the `netsim` CLI run as a normal user where unprivileged user \
         namespaces are enabled (sysctl kernel.unprivileged_userns_clone=1)"
    ))
}

/// Creates a host namespace with `eth0` carrying `addrs`, MTU `mtu`, and a
/// default route through `eth0`.
pub(crate) fn create_host(
    addrs: &[(Ipv4Addr, u8)],
    mtu: usize,
    multicast: bool,
) -> Result<HostNs, StartError> {
    let iface = Iface {
        name: IFACE.into(),
        addrs: addrs.to_vec(),
        mtu,
        multicast,
    };
    let mut ns = create_ns(vec![iface], false, None)?;
    Ok(HostNs {
        netns: ns.netns,
        tun: ns.tuns.remove(0),
    })
}

/// One TUN interface of a namespace.
#[derive(Debug, Clone)]
pub(crate) struct Iface {
    pub(crate) name: String,
    pub(crate) addrs: Vec<(Ipv4Addr, u8)>,
    pub(crate) mtu: usize,
    pub(crate) multicast: bool,
}

/// A namespace with several TUN interfaces.
#[derive(Debug)]
pub(crate) struct MultiNs {
    pub(crate) netns: OwnedFd,
    pub(crate) tuns: Vec<OwnedFd>,
}

fn open_tun(name: &str) -> Result<File, StartError> {
    let tun_file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StartError::Privileges(
                "/dev/net/tun is missing: load the tun module (modprobe tun)".into(),
            ),
            std::io::ErrorKind::PermissionDenied => StartError::Privileges(format!(
                "cannot open /dev/net/tun ({e}): it must be readable and writable by this user \
                 (mode 0666, as most distributions ship it), or run as root"
            )),
            _ => StartError::Setup {
                what: "opening /dev/net/tun".into(),
                source: e,
            },
        })?;
    tun_set_iff(&tun_file, name).map_err(setup_err("creating the TUN interface"))?;
    Ok(tun_file)
}

/// Creates a namespace with the given TUN interfaces; the default route goes
/// through the first. `forward` turns on IPv4 forwarding; `nft` is a ruleset
/// loaded with `nft -f -` inside.
pub(crate) fn create_ns(
    ifaces: Vec<Iface>,
    forward: bool,
    nft: Option<String>,
) -> Result<MultiNs, StartError> {
    let t = std::thread::Builder::new()
        .name("netsim-setup".into())
        .spawn(move || -> Result<MultiNs, StartError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(privilege_error)?;
            // No IPv6 inside: the simulator carries IPv4 only.
            for p in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{p}/disable_ipv6"), "1");
            }
            if forward {
                std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                    .map_err(setup_err("enabling forwarding"))?;
            }
            let mut tuns = Vec::new();
            let mut script = String::from("link set lo up\n");
            for i in &ifaces {
                tuns.push(OwnedFd::from(open_tun(&i.name)?));
                script += &format!("link set {} mtu {} txqueuelen 1000 up\n", i.name, i.mtu);
                if i.multicast {
                    script += &format!("link set {} multicast on\n", i.name);
                }
                for (ip, prefix) in &i.addrs {
                    script += &format!("addr add {ip}/{prefix} dev {}\n", i.name);
                }
            }
            if let Some(first) = ifaces.first() {
                script += &format!("route add default dev {}\n", first.name);
            }
            run_ip_batch(&script)?;
            if let Some(rules) = nft {
                run_tool("nft", &["-f", "-"], &rules, "install nftables")?;
            }
            let netns = File::open("/proc/thread-self/ns/net")
                .map_err(setup_err("opening the namespace"))?;
            Ok(MultiNs {
                netns: netns.into(),
                tuns,
            })
        })
        .map_err(setup_err("spawning the setup thread"))?;
    t.join().map_err(|_| StartError::Setup {
        what: "namespace setup thread".into(),
        source: std::io::Error::other("panicked"),
    })?
}

fn run_ip_batch(script: &str) -> Result<(), StartError> {
    run_tool("ip", &["-batch", "-"], script, "install iproute2")
}

fn run_tool(tool: &str, args: &[&str], input: &str, hint: &str) -> Result<(), StartError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| StartError::Tool {
            tool: tool.into(),
            message: format!("{e} ({hint})"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(setup_err("writing to a tool"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(setup_err("waiting for a tool"))?;
    if !out.status.success() {
        return Err(StartError::Tool {
            tool: tool.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

/// Moves the calling thread into the network namespace `netns`.
pub(crate) fn enter(netns: &impl AsFd) -> std::io::Result<()> {
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Makes the calling process root of a new user namespace (mapping the
/// current user to uid 0), so that a normal user can create network
/// namespaces. Must be called while the process has a single thread.
pub fn enter_user_namespace() -> std::io::Result<()> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    if uid.is_root() {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWUSER).map_err(std::io::Error::from)?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    Ok(())
}

/// Moves the calling thread into the network namespace at `path` (for
/// example a path printed by `netsim up`).
pub fn enter_netns_file(path: &std::path::Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    enter(&f)
}

/// Joins the user namespace of process `pid` if it differs from ours (for
/// `netsim exec` as a normal user into a network started by `netsim up`,
/// which runs in its own user namespace). Must be called while the process
/// has a single thread.
pub fn join_user_namespace_of(pid: u32) -> std::io::Result<()> {
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/user"))?;
    let ours = std::fs::metadata("/proc/self/ns/user")?;
    use std::os::unix::fs::MetadataExt;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Ok(());
    }
    let f = File::open(format!("/proc/{pid}/ns/user"))?;
    setns(&f, CloneFlags::CLONE_NEWUSER).map_err(std::io::Error::from)
}
