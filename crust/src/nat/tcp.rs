//! TCP sockets that share the listener's port, for TCP hole punching.
//!
//! A NAT maps the listener's port only when something leaves from it. So
//! the listener is bound with `SO_REUSEPORT` (and `SO_REUSEADDR`), and
//! outgoing connections bind the same port where they can: the peers'
//! echoes of those connections then tell us the NAT's mapping of the
//! listener's port, and a punching attempt connects *from* that port to
//! the peer's listener while the peer does the same towards us. Each SYN
//! opens its own NAT for the other; the second to arrive meets a socket in
//! `SYN_SENT` and the kernel completes a TCP simultaneous open, so both
//! sides end with a connected socket and both think they dialled (the
//! secure channel's roles are then decided by peer id, see
//! `service/nat.rs`).
//!
//! `SO_REUSEPORT` would also let a second listener share the port; the
//! listener first checks with a plain bind that the port is free, so two
//! services still cannot listen on one port.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn socket_for(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    socket.set_reuseport(true)?;
    Ok(socket)
}

/// A listener on `addr` whose port outgoing connections can share.
///
/// A port already in use fails with `AddrInUse` and, on Linux, an error
/// message naming the sockets that hold it (from `/proc/thread-self/net`): one
/// matrix run in about 500 saw this in a fresh network namespace, cause
/// unknown; the next one will say what held the port.
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    listen_once(addr).map_err(|e| explain_in_use(addr, e))
}

fn listen_once(addr: SocketAddr) -> io::Result<TcpListener> {
    if addr.port() != 0 {
        // The port must be free: SO_REUSEPORT alone would share it with
        // another listener of the same user.
        drop(std::net::TcpListener::bind(addr)?);
    }
    let socket = socket_for(addr)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// `e`, with the holders of `addr`'s port added if it is `AddrInUse`.
fn explain_in_use(addr: SocketAddr, e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::AddrInUse || addr.port() == 0 {
        return e;
    }
    let holders = port_holders(addr.port());
    if holders.is_empty() {
        return e;
    }
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{e}; port {} held by: {}", addr.port(), holders.join(", ")),
    )
}

/// The TCP sockets of this thread's network namespace bound to `port`, as
/// `/proc/thread-self/net/tcp` and `tcp6` list them: "local remote state
/// uid inode". (`/proc/net` is the main thread's namespace, not ours when
/// this thread entered another, as netsim's hosts do.) Empty where there
/// is no such file.
fn port_holders(port: u16) -> Vec<String> {
    const STATES: [&str; 12] = [
        "?",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
    ];
    let suffix = format!(":{port:04X}");
    let mut out = Vec::new();
    for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !f[1].ends_with(&suffix) {
                continue;
            }
            let state = usize::from_str_radix(f[3], 16)
                .ok()
                .and_then(|s| STATES.get(s))
                .unwrap_or(&"?");
            out.push(format!(
                "{} {} {state} uid {} inode {}",
                f[1], f[2], f[7], f[9]
            ));
        }
    }
    out
}

/// Connects to `remote` from `local` (a port our listener also uses).
pub(crate) async fn connect_from(local: SocketAddr, remote: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket_for(local)?;
    socket.bind(local)?;
    socket.connect(remote).await
}

/// The address an outgoing connection to `remote` should bind to share the
/// listener's port: the unspecified address of `remote`'s family with the
/// port of a listener of that family. `listeners` are our listeners'
/// addresses, one per local address. `None` with no such listener, or if
/// `remote` is that listener itself (a socket connected to its own port).
pub(crate) fn shared_port(listeners: &[SocketAddr], remote: SocketAddr) -> Option<SocketAddr> {
    let port = listeners
        .iter()
        .find(|l| l.is_ipv4() == remote.is_ipv4() && l.port() != 0)?
        .port();
    let ours = listeners.contains(&remote)
        || (remote.port() == port && (remote.ip().is_loopback() || remote.ip().is_unspecified()));
    if ours {
        return None;
    }
    let ip = if remote.is_ipv4() {
        std::net::IpAddr::from([0, 0, 0, 0])
    } else {
        std::net::IpAddr::from([0u16; 8])
    };
    Some(SocketAddr::new(ip, port))
}

/// The peer's TCP candidates in the order to try them: a TCP try takes a
/// budget slot every other one at most, so the first SYN should be the
/// one likely to meet the peer's. Across two NATs that is an address on
/// the internet (the peer's mapped or observed listener, then UPnP and
/// the predicted ports, as the peer listed them), not its LAN address,
/// which our NAT sends to the internet where nothing answers. The order
/// is kept as the peer listed it (local first) when the peer shares one
/// of our public addresses (`our_public`: behind the same NAT, where its
/// LAN address is the one that works without hairpinning).
pub(crate) fn order_targets(theirs: &[SocketAddr], our_public: &[IpAddr]) -> Vec<SocketAddr> {
    let mut targets = theirs.to_vec();
    if theirs.iter().any(|a| our_public.contains(&a.ip())) {
        return targets;
    }
    // A stable sort: the peer's order within each group.
    targets.sort_by_key(|a| lan_only(a.ip()));
    targets
}

/// Whether `ip` can only be reached inside a LAN (private, carrier-grade
/// shared, link-local, loopback, unique-local).
fn lan_only(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (a == 100 && (b & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn public_candidates_go_first_across_nats() {
        let theirs = [
            a("192.168.3.2:4000"),
            a("100.64.1.2:4000"),
            a("203.0.113.3:4000"),
            a("203.0.113.3:4001"),
        ];
        let ours = [IpAddr::from([203, 0, 113, 2])];
        assert_eq!(
            order_targets(&theirs, &ours),
            [theirs[2], theirs[3], theirs[0], theirs[1]]
        );
    }

    #[test]
    fn behind_the_same_nat_the_lan_address_stays_first() {
        let theirs = [a("192.168.3.2:4000"), a("203.0.113.3:4000")];
        let ours = [IpAddr::from([203, 0, 113, 3])];
        assert_eq!(order_targets(&theirs, &ours), theirs);
        // Only LAN addresses (loopback tests): as listed.
        let theirs = [a("127.0.0.1:4000"), a("[::1]:4000")];
        assert_eq!(order_targets(&theirs, &[]), theirs);
    }

    #[tokio::test]
    async fn a_connection_can_leave_from_the_listeners_port() {
        let a = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let b = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let stream = connect_from(a_addr, b_addr).await.unwrap();
        assert_eq!(stream.local_addr().unwrap(), a_addr);
        let (_, from) = b.accept().await.unwrap();
        assert_eq!(from, a_addr);
        // A second listener on the same port is still refused, and on
        // Linux the error names the holders.
        let e = listen(a_addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        if cfg!(target_os = "linux") {
            assert!(e.to_string().contains("LISTEN"), "{e}");
        }
    }

    #[test]
    fn the_shared_port_follows_the_family_and_never_loops() {
        let l4: SocketAddr = "192.168.1.2:4000".parse().unwrap();
        let l6: SocketAddr = "[fd00::2]:4001".parse().unwrap();
        let far: SocketAddr = "203.0.113.9:80".parse().unwrap();
        let far6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        assert_eq!(
            shared_port(&[l4, l6], far),
            Some("0.0.0.0:4000".parse().unwrap())
        );
        assert_eq!(
            shared_port(&[l4, l6], far6),
            Some("[::]:4001".parse().unwrap())
        );
        assert_eq!(shared_port(&[l6], far), None);
        assert_eq!(shared_port(&[l4], "127.0.0.1:4000".parse().unwrap()), None);
        assert_eq!(shared_port(&[l4], l4), None);
        assert!(shared_port(&[l4], "127.0.0.1:4002".parse().unwrap()).is_some());
        // Another host's listener on the same port is fine.
        assert!(shared_port(&[l4], "192.168.1.3:4000".parse().unwrap()).is_some());
    }
}
