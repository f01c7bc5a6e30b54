//! What neither `std` nor `socket2` exposes: the per-send
//! `IP_MTU_DISCOVER`/`IPV6_MTU_DISCOVER` option, which decides whether a
//! datagram leaves with the "don't fragment" bit, and batched I/O
//! (`recvmmsg`/`sendmmsg`, many datagrams per system call).
//!
//! Unsafe is allowed here, and only here, because these are raw libc calls.
//! Each unsafe block passes pointers to live, correctly sized locals or
//! caller buffers for the duration of the call only; see the SAFETY notes.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// How the kernel treats the "don't fragment" bit for the next datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fragmentation {
    /// DF clear: routers (and the kernel) may fragment. Every datagram but
    /// a first-time MTU probe, as in libtorrent.
    Allowed,
    /// DF set and the kernel's cached path MTU ignored
    /// (`IP_PMTUDISC_PROBE`): a probe above the path MTU is dropped on the
    /// way (or refused with `EMSGSIZE` above the interface MTU), never
    /// fragmented.
    Probe,
}

const IPPROTO_IP: libc::c_int = libc::IPPROTO_IP;
const IPPROTO_IPV6: libc::c_int = libc::IPPROTO_IPV6;

/// Sets the fragmentation mode of `socket` for the datagrams sent after it.
/// An IPv6 socket gets both the IPv6 option and (best effort, for
/// IPv4-mapped destinations) the IPv4 one.
pub(super) fn set_fragmentation(
    socket: &impl AsFd,
    ipv6: bool,
    mode: Fragmentation,
) -> io::Result<()> {
    let (v4, v6) = match mode {
        Fragmentation::Allowed => (libc::IP_PMTUDISC_DONT, libc::IPV6_PMTUDISC_DONT),
        Fragmentation::Probe => (libc::IP_PMTUDISC_PROBE, libc::IPV6_PMTUDISC_PROBE),
    };
    if ipv6 {
        set_int(socket, IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, v6)?;
        let _ = set_int(socket, IPPROTO_IP, libc::IP_MTU_DISCOVER, v4);
        Ok(())
    } else {
        set_int(socket, IPPROTO_IP, libc::IP_MTU_DISCOVER, v4)
    }
}

/// Reads the fragmentation mode of `socket` (for tests).
#[cfg(test)]
pub(super) fn fragmentation(socket: &impl AsFd, ipv6: bool) -> io::Result<libc::c_int> {
    let (level, name) = if ipv6 {
        (IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER)
    } else {
        (IPPROTO_IP, libc::IP_MTU_DISCOVER)
    };
    get_int(socket, level, name)
}

/// Asks for the TTL of received IPv4 datagrams as ancillary data (for tests).
#[cfg(test)]
pub(super) fn set_recv_ttl(socket: &impl AsFd) -> io::Result<()> {
    set_int(socket, IPPROTO_IP, libc::IP_RECVTTL, 1)
}

fn set_int(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let fd = socket.as_fd();
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` is an open descriptor borrowed for the whole call, and the
    // pointer and length describe `value`, a live c_int the kernel only reads.
    let r =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (&raw const value).cast(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
fn get_int(socket: &impl AsFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let fd = socket.as_fd();
    let mut value: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: `fd` is open for the call; the pointers describe `value` and
    // `len`, live locals the kernel writes at most `len` bytes into.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if r == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Receives one datagram (blocking) and the TTL it arrived with, which
/// [`set_recv_ttl`] must have asked for (for tests).
#[cfg(test)]
pub(super) fn recv_with_ttl(socket: &std::net::UdpSocket) -> io::Result<(Vec<u8>, Option<u8>)> {
    let mut data = vec![0u8; 65536];
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: the descriptor is open; `msg` points at `iov` (which
    // describes `data`) and `control`, all live and writable for the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut msg, 0) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    data.truncate(n);
    let mut ttl = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just
    // filled, within `msg_controllen`; each IP_TTL payload is a c_int.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_TTL {
                let value = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                ttl = u8::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
        }
    }
    Ok((data, ttl))
}
