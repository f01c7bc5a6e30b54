//! What neither `std` nor `socket2` exposes: the per-send
//! `IP_MTU_DISCOVER`/`IPV6_MTU_DISCOVER` option, which decides whether a
//! datagram leaves with the "don't fragment" bit, and batched I/O
//! (`recvmmsg`/`sendmmsg`, many datagrams per system call; GSO trains out
//! with `UDP_SEGMENT`, GRO trains in with `UDP_GRO`).
//!
//! Unsafe is allowed here, and only here, because these are raw libc calls.
//! Each unsafe block passes pointers to live, correctly sized locals or
//! caller buffers for the duration of the call only; see the SAFETY notes.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

/// Datagrams per batched receive or send.
pub(super) const BATCH: usize = 32;

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

/// Bytes of each receive slot: the largest UDP payload (65 507 bytes), and
/// the largest GRO train the kernel builds.
pub(super) const SLOT: usize = 1 << 16;

/// The receive slots of one socket: [`BATCH`] × [`SLOT`] bytes of
/// anonymous memory that the kernel maps on first touch, so an idle socket
/// costs no resident memory (from the heap, glibc would clear 2 MiB of
/// reused memory for each new socket once its mmap threshold has risen,
/// and a NAT traversal binds hundreds). Heap memory if mapping fails.
pub(super) enum Slots {
    Mapped {
        ptr: std::ptr::NonNull<u8>,
        len: usize,
    },
    Heap(Vec<u8>),
}

// SAFETY: `Mapped` owns its mapping exclusively (like a Box<[u8]>), so
// moving it to another thread is sound.
unsafe impl Send for Slots {}

impl Slots {
    pub(super) fn new() -> Self {
        let len = BATCH * SLOT;
        // SAFETY: an anonymous private mapping of `len` bytes with no
        // address hint touches no existing memory; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        match std::ptr::NonNull::new(ptr.cast::<u8>()) {
            Some(ptr) if ptr.as_ptr().cast() != libc::MAP_FAILED => Self::Mapped { ptr, len },
            _ => Self::Heap(vec![0u8; len]),
        }
    }
}

impl std::ops::Deref for Slots {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // SAFETY: the mapping is `len` readable bytes, zero-filled by
            // the kernel, alive until drop.
            Self::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *len) },
            Self::Heap(v) => v,
        }
    }
}

impl std::ops::DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            // SAFETY: as above, writable, and `&mut self` makes this the
            // only reference.
            Self::Mapped { ptr, len } => unsafe {
                std::slice::from_raw_parts_mut(ptr.as_ptr(), *len)
            },
            Self::Heap(v) => v,
        }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        if let Self::Mapped { ptr, len } = self {
            // SAFETY: unmaps exactly the mapping `new` made, once; no slice
            // into it outlives `self`.
            unsafe {
                libc::munmap(ptr.as_ptr().cast(), *len);
            }
        }
    }
}

/// One received message: `len` bytes in slot `slot` from `from`, made of
/// datagrams of `segment` bytes (the last perhaps shorter) when the kernel
/// coalesced a train of them (GRO), else one datagram (`segment == len`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival {
    pub(super) slot: usize,
    pub(super) len: usize,
    pub(super) from: SocketAddr,
    pub(super) segment: usize,
}

/// Asks the kernel to coalesce trains of equal-sized datagrams from one
/// sender into one message (`UDP_GRO`); [`recv_batch`] splits them again.
/// Loopback hands a GSO train over whole.
pub(super) fn enable_gro(socket: &impl AsFd) -> io::Result<()> {
    set_int(socket, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Room for one `UDP_GRO` control message (an int) per received message.
const CONTROL_WORDS: usize = 4;

/// Receives up to [`BATCH`] messages without blocking, message `i` into
/// `slots[i * SLOT..][..SLOT]`; pushes an [`Arrival`] for each to `out`,
/// and returns how many arrived. A truncated message (cannot happen with
/// 64 KiB slots) is dropped. `WouldBlock` when nothing is queued.
pub(super) fn recv_batch(
    socket: &impl AsFd,
    slots: &mut [u8],
    out: &mut Vec<Arrival>,
) -> io::Result<usize> {
    let n = (slots.len() / SLOT).min(BATCH);
    // SAFETY: iovec, sockaddr_storage and mmsghdr are plain old data for
    // which all-zero is valid.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    // u64s keep each control buffer aligned for cmsghdr.
    let mut control = [[0u64; CONTROL_WORDS]; BATCH];
    for (i, slot) in slots.chunks_exact_mut(SLOT).take(n).enumerate() {
        iovs[i] = libc::iovec {
            iov_base: slot.as_mut_ptr().cast(),
            iov_len: slot.len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = (&raw mut addrs[i]).cast();
        h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        h.msg_iov = &raw mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = control[i].as_mut_ptr().cast();
        h.msg_controllen = size_of::<[u64; CONTROL_WORDS]>() as _;
    }
    // SAFETY: the first `n` headers point at `iovs` (each describing a live,
    // writable slot of the stated length), at `addrs` and at `control`; all
    // of them outlive the call, and the kernel writes only within those
    // bounds.
    let r = unsafe {
        libc::recvmmsg(
            socket.as_fd().as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let received = usize::try_from(r).map_err(|_| io::Error::last_os_error())?;
    for (i, h) in hdrs.iter().enumerate().take(received) {
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            continue;
        }
        let len = h.msg_len as usize;
        let mut segment = len;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel just
        // filled, within the `msg_controllen` it set; a UDP_GRO payload is
        // an int.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const h.msg_hdr);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                    let size =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                    if let Ok(size) = usize::try_from(size)
                        && size > 0
                    {
                        segment = size.min(len.max(1));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&raw const h.msg_hdr, cmsg);
            }
        }
        if let Some(from) = socket_addr(&addrs[i]) {
            out.push(Arrival {
                slot: i,
                len,
                from,
                segment,
            });
        }
    }
    Ok(received)
}

/// Sends `datagrams` (at most [`BATCH`]) without blocking, in order, in one
/// system call; returns how many went. An error is the first unsent
/// datagram's (`WouldBlock` when the socket buffer is full).
pub(super) fn send_batch(
    socket: &impl AsFd,
    datagrams: &[(&[u8], SocketAddr)],
) -> io::Result<usize> {
    let n = datagrams.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    let addrs: Vec<socket2::SockAddr> = datagrams[..n]
        .iter()
        .map(|(_, to)| socket2::SockAddr::from(*to))
        .collect();
    // SAFETY: plain old data, all-zero is valid.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: datagrams[i].0.as_ptr().cast_mut().cast(),
            iov_len: datagrams[i].0.len(),
        };
        let h = &mut hdrs[i].msg_hdr;
        h.msg_name = addrs[i].as_ptr().cast_mut().cast();
        h.msg_namelen = addrs[i].len();
        h.msg_iov = &raw mut iovs[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers point at `iovs` (each describing a live
    // datagram the kernel only reads) and at `addrs` (live socket addresses
    // of the stated length); all outlive the call.
    let r = unsafe {
        libc::sendmmsg(
            socket.as_fd().as_raw_fd(),
            hdrs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(r).map_err(|_| io::Error::last_os_error())
}

/// Most segments one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS`
/// is 64 on older kernels).
pub(super) const GSO_SEGMENTS: usize = 64;

/// Sends `segments` to `to` in one `sendmsg` with `UDP_SEGMENT` (GSO): the
/// kernel splits the concatenation back into one datagram per segment, so
/// every segment but the last must be exactly `segments[0].len()` bytes
/// and the last no longer. Errors as for [`send_batch`]; `EIO` or
/// `EINVAL` mean the path cannot do GSO.
pub(super) fn send_gso(
    socket: &impl AsFd,
    segments: &[&[u8]],
    to: SocketAddr,
) -> io::Result<usize> {
    let n = segments.len().min(GSO_SEGMENTS);
    let Some(first) = segments.first() else {
        return Ok(0);
    };
    let size =
        u16::try_from(first.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain old data, all-zero is valid.
    let mut iovs: [libc::iovec; GSO_SEGMENTS] = unsafe { std::mem::zeroed() };
    for (iov, seg) in iovs.iter_mut().zip(&segments[..n]) {
        *iov = libc::iovec {
            iov_base: seg.as_ptr().cast_mut().cast(),
            iov_len: seg.len(),
        };
    }
    let addr = socket2::SockAddr::from(to);
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: plain old data, all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr().cast_mut().cast();
    msg.msg_namelen = addr.len();
    msg.msg_iov = iovs.as_mut_ptr();
    msg.msg_iovlen = n as _;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
    // SAFETY: `msg` describes `control`, which is larger than one cmsghdr
    // with a u16 payload, so the first header and its data lie inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
    }
    // SAFETY: `msg` points at `addr`, `iovs` (each describing a live
    // segment the kernel only reads) and `control`, all live for the call.
    let r = unsafe {
        libc::sendmsg(
            socket.as_fd().as_raw_fd(),
            &raw const msg,
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(r)
        .map(|_| n)
        .map_err(|_| io::Error::last_os_error())
}

fn socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // fits in it and needs no stricter alignment.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*std::ptr::from_ref(s).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The largest UDP payload the route to `remote` carries, as the kernel
/// knows it (the interface MTU, or a smaller path MTU it has learnt).
pub(super) fn route_udp_payload(remote: SocketAddr) -> io::Result<u16> {
    let (any, level, name, overhead): (SocketAddr, _, _, libc::c_int) = if remote.is_ipv4() {
        (
            SocketAddr::from(([0, 0, 0, 0], 0)),
            IPPROTO_IP,
            libc::IP_MTU,
            28,
        )
    } else {
        (
            SocketAddr::from(([0u16; 8], 0)),
            IPPROTO_IPV6,
            libc::IPV6_MTU,
            48,
        )
    };
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(remote)?;
    let mtu = get_int(&probe, level, name)?;
    Ok(u16::try_from((mtu - overhead).clamp(0, 65507)).unwrap_or(0))
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
