//! The tokio driver: one UDP socket, one [`Endpoint`], many streams.
//!
//! [`UtpSocket::bind`] opens the socket and spawns the driver task, a thin
//! pump: receive a datagram and hand it to the endpoint (or, when it is not
//! uTP, to the caller's channel), run due timers, send every transmit, wake
//! the streams whose connections have events, and sleep until the next
//! datagram, timer or application call. Streams and the socket share the
//! endpoint behind a mutex that is never held across an `.await`.
//!
//! Call order: `bind`, then any number of [`UtpSocket::connect`] and
//! [`UtpSocket::accept`]; read and write the [`UtpStream`]s; drop them (or
//! `shutdown` them) when done. The driver stops when the socket and every
//! stream are gone.
//!
//! uTP's initiator speaks first: `accept` returns a stream once its first
//! bytes have arrived, and a stream that is connected but never written to
//! is never accepted.
//!
//! Socket buffers: `bind` asks for [`SOCKET_BUFFER`] bytes each way; the OS
//! may grant less (Linux caps at `net.core.rmem_max`/`wmem_max`, and reports
//! twice what it grants); [`UtpSocket::buffer_sizes`] says what it got.
//!
//! Local congestion is back-pressure, never loss: `send_to` waits while the
//! socket buffer is full (`WouldBlock`), and `ENOBUFS` (a full device
//! queue) is retried after a short pause, so the endpoint, which already
//! counts the packet as in flight, never sees it vanish and never cuts its
//! window for it (libtorrent's "stalled socket" bug).
//!
//! Don't fragment (Linux): every datagram leaves with DF clear
//! (`IP_PMTUDISC_DONT`, so a path with a smaller MTU fragments it rather
//! than dropping it) except a first-time MTU probe, which goes out with DF
//! set and the kernel's cached path MTU ignored (`IP_PMTUDISC_PROBE`): it
//! either arrives whole or not at all. A resent probe is fragmentable like
//! any other packet, as in libtorrent. The mode is a socket option, so it
//! is switched around each probe under the send lock that serialises every
//! send on the socket (see [`UtpSocket::send_datagram_with_ttl`]). Elsewhere
//! the OS default applies.
//!
//! Batched I/O (Linux): when the socket turns readable, the driver
//! drains the socket with `recvmmsg` (32 datagrams per call) and sends with
//! `sendmmsg` (32 per call); a run of equal-sized datagrams to one peer
//! goes as one GSO send (`UDP_SEGMENT`) where the path supports it (turned
//! off for the socket at the first failure). On receive, GRO (`UDP_GRO`)
//! lets the kernel hand over a train of equal-sized datagrams from one
//! sender as one message (loopback passes a GSO train through whole), which
//! the driver splits again. Every receive slot holds 64 KiB, the largest
//! datagram, as crust's hello promises the peer.
//!
//! Path MTU: the driver tells each connection the route's MTU (`IP_MTU` of
//! a connected probe socket, `Connection::set_interface_mtu`): for an
//! outgoing connection at `connect`, for an incoming one when its SYN
//! carried crust's hello. When both ends announce the hello (the default,
//! `Config::crust_hello`), or with `Config::mtu_from_interface`, the MTU
//! search starts from it, so the DF probes can find e.g. loopback's 64 KiB;
//! against other implementations it stays under `Config::mtu_ceiling`.

use std::collections::HashMap;
use std::future::poll_fn;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};

use sys::Fragmentation;

use super::proto::{
    ConnectionHandle, DatagramOutcome, Endpoint, EndpointConfig, Event, ReadError, State, Transmit,
    looks_like_utp,
};

/// A datagram that is not uTP, with its sender.
pub type OtherDatagram = (Vec<u8>, SocketAddr);

/// How many non-uTP datagrams wait for the caller before new ones are dropped.
const OTHER_QUEUE: usize = 1024;
/// Datagrams handled per wake-up before the driver flushes transmits.
const RECV_BATCH: usize = 128;
/// Most bytes one GSO send carries: the whole train is one UDP datagram
/// to the kernel, so it must fit in 64 KiB.
const GSO_MAX_BYTES: usize = 65_000;
/// Receive and send buffer size `bind` asks the OS for.
const SOCKET_BUFFER: usize = 4 << 20;
/// Pause before resending a datagram the OS refused with `ENOBUFS`.
const NOBUFS_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);
/// `ENOBUFS` retries before the datagram is given up as lost (about 1 s),
/// so a wedged interface cannot stall the driver forever.
const NOBUFS_RETRIES: u32 = 1000;

/// How often [`UtpSocket::flush`] looks whether every connection is
/// flushed.
const FLUSH_POLL: Duration = Duration::from_millis(5);

#[cfg(target_os = "linux")]
const EMSGSIZE: i32 = 90;
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
const EMSGSIZE: i32 = 40;
#[cfg(windows)]
const EMSGSIZE: i32 = 10040;
#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    windows
)))]
const EMSGSIZE: i32 = -1;

#[cfg(target_os = "linux")]
const ENOBUFS: i32 = 105;
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
const ENOBUFS: i32 = 55;
#[cfg(windows)]
const ENOBUFS: i32 = 10055;
#[cfg(not(any(
    target_os = "linux",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    windows
)))]
const ENOBUFS: i32 = -1;

#[derive(Default)]
struct Wakers {
    read: Option<Waker>,
    write: Option<Waker>,
}

struct Inner {
    endpoint: Endpoint,
    wakers: HashMap<ConnectionHandle, Wakers>,
    accept_waker: Option<Waker>,
    /// Handles whose stream was dropped; removed once their connection ends.
    released: Vec<ConnectionHandle>,
}

struct Shared {
    socket: Arc<UdpSocket>,
    /// Held for every send on the socket, so that a per-send socket option
    /// (a low TTL, the don't-fragment mode) applies to that datagram only.
    send: tokio::sync::Mutex<SendOptions>,
    /// `Config::mtu_from_interface` or `Config::crust_hello`: tell each
    /// connection the route's interface MTU (it decides whether to use it).
    mtu_from_interface: bool,
    /// Whether GSO sends (`UDP_SEGMENT`) work on this socket; turned off at
    /// the first failure.
    gso: AtomicBool,
    inner: Mutex<Inner>,
    wake_driver: Arc<Notify>,
    shutdown: Arc<Notify>,
}

/// The socket options the last send left in place.
struct SendOptions {
    ipv6: bool,
    fragmentation: Fragmentation,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown.notify_one();
    }
}

/// One UDP socket carrying many uTP connections.
#[derive(Clone)]
pub struct UtpSocket {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UtpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpSocket")
            .field("local_addr", &self.shared.socket.local_addr().ok())
            .finish()
    }
}

impl UtpSocket {
    /// Waits until every connection on this socket has had all it was
    /// given acknowledged — the bytes written and, for a stream shut down,
    /// its FIN — or has died, for at most `limit`; returns whether all
    /// were. uTP lives in this process: the driver stops with the last
    /// handle, taking unsent bytes with it, so a service calls this before
    /// it stops, and its last messages (a goodbye) reach the peer.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let flushed = self
                .shared
                .lock()
                .endpoint
                .connections()
                .all(|(_, c)| c.is_flushed());
            if flushed {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            self.shared.wake_driver.notify_one();
            tokio::time::sleep(FLUSH_POLL).await;
        }
    }

    /// Binds `addr` and starts the driver on the current tokio runtime.
    /// Datagrams that are not uTP (crust's own, which start with `b"CRST"`)
    /// arrive on the returned channel; when the caller falls behind by more
    /// than a thousand, newer ones are dropped.
    pub async fn bind(
        addr: SocketAddr,
        config: EndpointConfig,
    ) -> io::Result<(Self, mpsc::Receiver<OtherDatagram>)> {
        let socket = Arc::new(UdpSocket::from_std(bind_udp(addr)?)?);
        let ipv6 = addr.is_ipv6();
        if let Err(e) = sys::set_fragmentation(&*socket, ipv6, Fragmentation::Allowed) {
            tracing::debug!(%addr, error = %e, "uTP socket: cannot clear don't-fragment");
        }
        if let Err(e) = sys::enable_gro(&*socket) {
            tracing::debug!(%addr, error = %e, "uTP socket: no GRO");
        }
        if let Ok((recv, send)) = buffer_sizes(&socket) {
            tracing::debug!(%addr, recv, send, asked = SOCKET_BUFFER, "uTP socket buffers");
        }
        let seed = RandomState::new().hash_one((addr, Instant::now()));
        let shared = Arc::new(Shared {
            socket: socket.clone(),
            send: tokio::sync::Mutex::new(SendOptions {
                ipv6,
                fragmentation: Fragmentation::Allowed,
            }),
            mtu_from_interface: config.connection.mtu_from_interface
                || config.connection.crust_hello,
            gso: AtomicBool::new(cfg!(target_os = "linux")),
            inner: Mutex::new(Inner {
                endpoint: Endpoint::new(config, seed),
                wakers: HashMap::new(),
                accept_waker: None,
                released: Vec::new(),
            }),
            wake_driver: Arc::new(Notify::new()),
            shutdown: Arc::new(Notify::new()),
        });
        let (tx, rx) = mpsc::channel(OTHER_QUEUE);
        tokio::spawn(drive(
            Arc::downgrade(&shared),
            socket,
            shared.wake_driver.clone(),
            shared.shutdown.clone(),
            tx,
        ));
        Ok((Self { shared }, rx))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }

    /// The receive and send buffer sizes the OS granted, as it reports them
    /// (Linux reports twice the usable size).
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        buffer_sizes(&self.shared.socket)
    }

    /// Sends a non-uTP datagram from the same socket (so it shares the NAT
    /// mapping the connections use).
    pub async fn send_datagram(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        let _send = self.shared.send.lock().await;
        self.shared.socket.send_to(data, to).await
    }

    /// Sends a non-uTP datagram with IP TTL (IPv6: hop limit) `ttl`, for hole
    /// punching: a first packet that opens the local NAT's mapping but dies
    /// before it reaches the far one. Only this datagram gets the TTL: the
    /// option is set, the datagram sent and the option restored while the
    /// socket's send lock is held, so no uTP packet (nor any other datagram)
    /// leaves with it, even if this future is dropped midway. Fails with
    /// `InvalidInput` for a TTL of 0 or above 255.
    pub async fn send_datagram_with_ttl(
        &self,
        data: &[u8],
        to: SocketAddr,
        ttl: u32,
    ) -> io::Result<usize> {
        if !(1..=255).contains(&ttl) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("TTL {ttl} is outside 1..=255"),
            ));
        }
        let send = self.shared.send.lock().await;
        let _ttl = TtlGuard::set(&self.shared.socket, send.ipv6, ttl)?;
        self.shared.socket.send_to(data, to).await
    }

    /// Opens a stream to `remote`, completing when the handshake does.
    pub async fn connect(&self, remote: SocketAddr) -> io::Result<UtpStream> {
        let ceiling = self
            .shared
            .mtu_from_interface
            .then(|| sys::route_udp_payload(remote).ok())
            .flatten();
        let handle = {
            let mut inner = self.shared.lock();
            let handle = inner.endpoint.connect(Instant::now(), remote);
            if let Some(ceiling) = ceiling
                && let Some(conn) = inner.endpoint.connection_mut(handle)
            {
                // Used once the reply shows a crust peer (or if forced).
                conn.set_interface_mtu(ceiling);
            }
            handle
        };
        self.shared.wake_driver.notify_one();
        let stream = UtpStream {
            shared: self.shared.clone(),
            handle,
        };
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let Some(conn) = inner.endpoint.connection(handle) else {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
            };
            match conn.state() {
                State::SynSent => {
                    inner.wakers.entry(handle).or_default().write = Some(cx.waker().clone());
                    Poll::Pending
                }
                State::Dead => Poll::Ready(Err(lost(conn.error()))),
                _ => Poll::Ready(Ok(())),
            }
        })
        .await?;
        Ok(stream)
    }

    /// Waits for the next incoming stream.
    pub async fn accept(&self) -> io::Result<UtpStream> {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            match inner.endpoint.accept() {
                Some(handle) => Poll::Ready(Ok(UtpStream {
                    shared: self.shared.clone(),
                    handle,
                })),
                None => {
                    inner.accept_waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// A non-blocking UDP socket bound to `addr` with buffers raised towards
/// [`SOCKET_BUFFER`]. Raising them is best effort: the OS caps or refuses
/// big buffers, and a small buffer only costs speed.
fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Sets a socket's unicast TTL (and, on an IPv6 socket, its hop limit)
/// and restores the previous values when dropped.
struct TtlGuard<'a> {
    socket: &'a UdpSocket,
    v4: Option<u32>,
    v6: Option<u32>,
}

impl<'a> TtlGuard<'a> {
    fn set(socket: &'a UdpSocket, ipv6: bool, ttl: u32) -> io::Result<Self> {
        let s = socket2::SockRef::from(socket);
        let mut guard = Self {
            socket,
            v4: None,
            v6: None,
        };
        if ipv6 {
            guard.v6 = Some(s.unicast_hops_v6()?);
            s.set_unicast_hops_v6(ttl)?;
            // IPv4-mapped destinations use the IPv4 TTL; best effort.
            if let Ok(old) = s.ttl_v4()
                && s.set_ttl_v4(ttl).is_ok()
            {
                guard.v4 = Some(old);
            }
        } else {
            guard.v4 = Some(s.ttl_v4()?);
            s.set_ttl_v4(ttl)?;
        }
        Ok(guard)
    }
}

impl Drop for TtlGuard<'_> {
    fn drop(&mut self) {
        let s = socket2::SockRef::from(self.socket);
        if let Some(old) = self.v4
            && let Err(e) = s.set_ttl_v4(old)
        {
            tracing::warn!(error = %e, "uTP socket: cannot restore the TTL");
        }
        if let Some(old) = self.v6
            && let Err(e) = s.set_unicast_hops_v6(old)
        {
            tracing::warn!(error = %e, "uTP socket: cannot restore the hop limit");
        }
    }
}

fn buffer_sizes(socket: &UdpSocket) -> io::Result<(usize, usize)> {
    let s = socket2::SockRef::from(socket);
    Ok((s.recv_buffer_size()?, s.send_buffer_size()?))
}

fn lost(error: Option<super::proto::ConnectionError>) -> io::Error {
    use super::proto::ConnectionError as E;
    let kind = match error {
        Some(E::Reset) => io::ErrorKind::ConnectionReset,
        Some(E::ConnectTimedOut | E::TimedOut | E::IdleTimeout) => io::ErrorKind::TimedOut,
        Some(E::Aborted) => io::ErrorKind::ConnectionAborted,
        _ => io::ErrorKind::NotConnected,
    };
    match error {
        Some(e) => io::Error::new(kind, e),
        None => io::Error::from(kind),
    }
}

/// One uTP connection as a byte stream.
pub struct UtpStream {
    shared: Arc<Shared>,
    handle: ConnectionHandle,
}

impl std::fmt::Debug for UtpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpStream")
            .field("handle", &self.handle)
            .finish()
    }
}

impl UtpStream {
    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        let inner = self.shared.lock();
        inner
            .endpoint
            .connection(self.handle)
            .map(|c| c.remote())
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }

    /// The largest UDP payload the connection knows to pass the path (its
    /// path-MTU search result so far).
    pub fn path_mtu(&self) -> Option<u16> {
        self.shared
            .lock()
            .endpoint
            .connection(self.handle)
            .map(|c| c.path_mtu())
    }

    /// Counters of the underlying connection.
    pub fn stats(&self) -> Option<super::proto::ConnectionStats> {
        self.shared
            .lock()
            .endpoint
            .connection(self.handle)
            .map(|c| c.stats())
    }

    /// Waits until both directions are finished: our FIN is acknowledged
    /// (so is every byte written before it) and the peer's FIN has arrived.
    /// Call it after `shutdown` and after reading to the end; fails if the
    /// connection dies first. Shares the write waker, so don't poll it
    /// concurrently with a write on the same stream.
    pub async fn closed(&self) -> io::Result<()> {
        poll_fn(|cx| {
            let mut inner = self.shared.lock();
            let Some(conn) = inner.endpoint.connection(self.handle) else {
                return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
            };
            match (conn.state(), conn.error()) {
                (State::Closed, _) | (State::Dead, None) => Poll::Ready(Ok(())),
                (State::Dead, error) => Poll::Ready(Err(lost(error))),
                _ => {
                    inner.wakers.entry(self.handle).or_default().write = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.shared.lock();
        let handle = self.handle;
        let Some(conn) = inner.endpoint.connection_mut(handle) else {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
        };
        match conn.read(buf.initialize_unfilled()) {
            Ok(n) => {
                buf.advance(n);
                drop(inner);
                // Reading may open the window: let the driver tell the peer.
                self.shared.wake_driver.notify_one();
                Poll::Ready(Ok(()))
            }
            Err(ReadError::Blocked) => {
                inner.wakers.entry(handle).or_default().read = Some(cx.waker().clone());
                Poll::Pending
            }
            Err(ReadError::Lost(e)) => Poll::Ready(Err(lost(Some(e)))),
        }
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.shared.lock();
        let handle = self.handle;
        let Some(conn) = inner.endpoint.connection_mut(handle) else {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::NotConnected)));
        };
        if conn.state() == State::Dead {
            return Poll::Ready(Err(lost(conn.error())));
        }
        let n = conn.write(data);
        if n > 0 || data.is_empty() {
            drop(inner);
            self.shared.wake_driver.notify_one();
            return Poll::Ready(Ok(n));
        }
        if conn.send_capacity() == 0 && matches!(conn.state(), State::Closed) {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        // A full send buffer is back-pressure: wait for acknowledgements.
        inner.wakers.entry(handle).or_default().write = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.wake_driver.notify_one();
        Poll::Ready(Ok(()))
    }

    /// Queues a FIN after the buffered bytes; reading goes on until the peer
    /// closes too.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(conn) = self.shared.lock().endpoint.connection_mut(self.handle) {
            conn.close();
        }
        self.shared.wake_driver.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for UtpStream {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if let Some(conn) = inner.endpoint.connection_mut(self.handle) {
            // Whatever was written still goes out, followed by a FIN.
            conn.close();
        }
        inner.wakers.remove(&self.handle);
        inner.released.push(self.handle);
        drop(inner);
        self.shared.wake_driver.notify_one();
    }
}

/// The driver task; see the module docs.
async fn drive(
    weak: std::sync::Weak<Shared>,
    socket: Arc<UdpSocket>,
    wake: Arc<Notify>,
    shutdown: Arc<Notify>,
    other: mpsc::Sender<OtherDatagram>,
) {
    let mut slots = sys::Slots::new();
    let mut arrived = Vec::with_capacity(sys::BATCH);
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let deadline = shared.lock().endpoint.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        // Hold no strong reference while parked, so dropping the last
        // handle can end the driver.
        drop(shared);
        let readable = tokio::select! {
            r = socket.readable() => r.is_ok(),
            () = sleep => false,
            () = wake.notified() => false,
            () = shutdown.notified() => return,
        };
        let Some(shared) = weak.upgrade() else {
            return;
        };
        // Read the clock after each receive call, never before: a datagram
        // stamped before it arrived (the driver preempted between reading
        // the clock and draining the socket) understates its one-way delay,
        // and the base delay, a ten-minute minimum, would keep that.
        let mut now = Instant::now();
        if readable {
            let mut inner = shared.lock();
            // Drain what is queued, a batch per system call, then flush
            // once.
            let mut handled = 0;
            while handled < RECV_BATCH {
                arrived.clear();
                let Ok(count) = socket.try_io(Interest::READABLE, || {
                    sys::recv_batch(&*socket, &mut slots, &mut arrived)
                }) else {
                    break;
                };
                now = Instant::now();
                for a in &arrived {
                    let data = &slots[a.slot * sys::SLOT..][..a.len];
                    // A GRO train: datagrams of `segment` bytes, the last
                    // perhaps shorter.
                    for datagram in data.chunks(a.segment.max(1)) {
                        handle_datagram(
                            &mut inner,
                            shared.mtu_from_interface,
                            &other,
                            now,
                            datagram,
                            a.from,
                        );
                        handled += 1;
                    }
                }
                if count < sys::BATCH {
                    break;
                }
            }
        }
        shared.lock().endpoint.handle_timeout(now);
        flush(&shared, &socket).await;
        dispatch_events(&shared);
    }
}

fn handle_datagram(
    inner: &mut Inner,
    mtu_from_interface: bool,
    other: &mpsc::Sender<OtherDatagram>,
    now: Instant,
    data: &[u8],
    from: SocketAddr,
) {
    if looks_like_utp(data) {
        // Malformed uTP is dropped; the error only says why.
        let outcome = inner.endpoint.handle_datagram(now, from, data);
        // Ask the OS only for a peer that can use it (one syscall set per
        // accepted SYN, under the half-open limit).
        if mtu_from_interface
            && let Ok(DatagramOutcome::Incoming(h)) = outcome
            && let Some(conn) = inner.endpoint.connection_mut(h)
            && (conn.peer_is_crust() || conn.forces_interface_mtu())
            && let Ok(ceiling) = sys::route_udp_payload(from)
        {
            conn.set_interface_mtu(ceiling);
        }
    } else {
        let _ = other.try_send((data.to_vec(), from));
    }
}

/// What a failed `send_to` means for the packet.
#[derive(Debug, PartialEq, Eq)]
enum SendFailure {
    /// Local congestion: send the same datagram again shortly.
    Retry,
    /// An MTU probe above the path MTU: tell the endpoint.
    TooLarge,
    /// Gone (unreachable, no route, ...): uTP's loss recovery resends it.
    Lost,
}

fn classify_send_error(e: &io::Error, dont_fragment: bool) -> SendFailure {
    match e.raw_os_error() {
        Some(code) if code == ENOBUFS => SendFailure::Retry,
        Some(code) if code == EMSGSIZE && dont_fragment => SendFailure::TooLarge,
        _ if e.kind() == io::ErrorKind::WouldBlock => SendFailure::Retry,
        _ => SendFailure::Lost,
    }
}

/// Sends every transmit the endpoint has, a batch per system call
/// (`sendmmsg`). Each batch holds datagrams of one fragmentation mode, so a
/// first-time MTU probe goes in a batch of its own with "don't fragment".
async fn flush(shared: &Shared, socket: &UdpSocket) {
    let mut options = shared.send.lock().await;
    let mut batch: Vec<Transmit> = Vec::with_capacity(sys::BATCH);
    // A probe polled while a batch of ordinary datagrams was filling.
    let mut held: Option<Transmit> = None;
    loop {
        if let Some(t) = held.take() {
            batch.clear();
            batch.push(t);
        } else {
            let mut inner = shared.lock();
            // The buffers of what went out build the next datagrams.
            for t in batch.drain(..) {
                inner.endpoint.recycle(t.destination, t.contents);
            }
            let now = Instant::now();
            while batch.len() < sys::BATCH {
                let Some(t) = inner.endpoint.poll_transmit(now) else {
                    break;
                };
                if t.dont_fragment {
                    // The probe goes alone, after what we have.
                    if batch.is_empty() {
                        batch.push(t);
                    } else {
                        held = Some(t);
                    }
                    break;
                }
                batch.push(t);
            }
        }
        let Some(first) = batch.first() else {
            break;
        };
        let wanted = if first.dont_fragment {
            Fragmentation::Probe
        } else {
            Fragmentation::Allowed
        };
        if options.fragmentation != wanted {
            match sys::set_fragmentation(socket, options.ipv6, wanted) {
                Ok(()) => options.fragmentation = wanted,
                Err(e) => tracing::debug!(error = %e, "uTP socket: cannot switch don't-fragment"),
            }
        }
        send_batch(shared, socket, &batch).await;
    }
    // Leave the socket fragmentable for whoever sends next.
    if options.fragmentation != Fragmentation::Allowed
        && sys::set_fragmentation(socket, options.ipv6, Fragmentation::Allowed).is_ok()
    {
        options.fragmentation = Fragmentation::Allowed;
    }
}

/// Sends `batch` in order: each run of datagrams to one peer with equal
/// sizes (the last may be shorter) in one GSO send where the path allows,
/// the rest with `sendmmsg`.
async fn send_batch(shared: &Shared, socket: &UdpSocket, batch: &[Transmit]) {
    let mut i = 0;
    while i < batch.len() {
        let run = if shared.gso.load(Ordering::Relaxed) {
            gso_run(&batch[i..])
        } else {
            0
        };
        if run >= 2 && send_gso(shared, socket, &batch[i..i + run]).await {
            i += run;
            continue;
        }
        // Without GSO: a run of one, or the rest once GSO is off.
        let end = if shared.gso.load(Ordering::Relaxed) {
            i + run.max(1)
        } else {
            batch.len()
        };
        send_mmsg(shared, socket, &batch[i..end]).await;
        i = end;
    }
}

/// How many datagrams at the front of `batch` one GSO send can carry.
fn gso_run(batch: &[Transmit]) -> usize {
    let Some(first) = batch.first() else {
        return 0;
    };
    if first.dont_fragment {
        return 1;
    }
    let size = first.contents.len();
    let mut total = size;
    let mut k = 1;
    while let Some(t) = batch.get(k) {
        let len = t.contents.len();
        if k == sys::GSO_SEGMENTS
            || t.destination != first.destination
            || t.dont_fragment
            || len > size
            || total + len > GSO_MAX_BYTES
        {
            break;
        }
        total += len;
        k += 1;
        if len < size {
            break;
        }
    }
    k
}

/// Sends `run` as one GSO datagram train; false if it did not go (the
/// caller sends it another way). A path that cannot do GSO turns it off
/// for the socket.
async fn send_gso(shared: &Shared, socket: &UdpSocket, run: &[Transmit]) -> bool {
    let segments: Vec<&[u8]> = run.iter().map(|t| &t.contents[..]).collect();
    let to = run[0].destination;
    let mut retries = 0;
    loop {
        let e = match socket.try_io(Interest::WRITABLE, || {
            sys::send_gso(&*socket, &segments, to)
        }) {
            Ok(_) => return true,
            Err(e) => e,
        };
        if e.kind() == io::ErrorKind::WouldBlock {
            let _ = socket.writable().await;
            continue;
        }
        match e.raw_os_error() {
            Some(code) if code == ENOBUFS && retries < NOBUFS_RETRIES => {
                retries += 1;
                tokio::time::sleep(NOBUFS_PAUSE).await;
            }
            _ => {
                tracing::debug!(error = %e, "uTP socket: GSO off");
                shared.gso.store(false, Ordering::Relaxed);
                return false;
            }
        }
    }
}

/// Sends `batch` in order with `sendmmsg`. A full socket buffer waits for
/// room and a full device queue is retried: local congestion delays packets
/// instead of losing them. Any other error loses that one datagram (uTP's
/// recovery resends it), except a probe refused as too large, which the
/// endpoint hears of.
async fn send_mmsg(shared: &Shared, socket: &UdpSocket, batch: &[Transmit]) {
    let datagrams: Vec<(&[u8], SocketAddr)> = batch
        .iter()
        .map(|t| (&t.contents[..], t.destination))
        .collect();
    let mut sent = 0;
    let mut retries = 0;
    while sent < batch.len() {
        let result = socket.try_io(Interest::WRITABLE, || {
            sys::send_batch(&*socket, &datagrams[sent..])
        });
        let e = match result {
            Ok(n) => {
                sent += n.max(1).min(batch.len() - sent);
                retries = 0;
                continue;
            }
            Err(e) => e,
        };
        if e.kind() == io::ErrorKind::WouldBlock {
            let _ = socket.writable().await;
            continue;
        }
        let t = &batch[sent];
        match classify_send_error(&e, t.dont_fragment) {
            SendFailure::Retry if retries < NOBUFS_RETRIES => {
                retries += 1;
                tokio::time::sleep(NOBUFS_PAUSE).await;
            }
            SendFailure::TooLarge => {
                shared
                    .lock()
                    .endpoint
                    .handle_transmit_too_large(Instant::now(), t);
                sent += 1;
            }
            SendFailure::Retry | SendFailure::Lost => sent += 1,
        }
    }
}

fn dispatch_events(shared: &Shared) {
    let mut wake = Vec::new();
    let mut inner = shared.lock();
    while let Some((h, event)) = inner.endpoint.poll_event() {
        let Some(w) = inner.wakers.get_mut(&h) else {
            continue;
        };
        match event {
            Event::Readable | Event::PeerFinished => wake.extend(w.read.take()),
            Event::Writable | Event::Connected => wake.extend(w.write.take()),
            Event::Closed | Event::Lost(_) => {
                wake.extend(w.read.take());
                wake.extend(w.write.take());
            }
        }
    }
    if let Some(w) = inner.accept_waker.take() {
        wake.push(w);
    }
    let released = std::mem::take(&mut inner.released);
    for h in released {
        let finished = inner
            .endpoint
            .connection(h)
            .is_none_or(|c| c.is_drained() || (c.state() == State::SynSent));
        if finished {
            inner.endpoint.remove(h);
        } else {
            inner.released.push(h);
        }
    }
    drop(inner);
    for w in wake {
        w.wake();
    }
}

impl UtpSocket {
    /// A snapshot of every connection: the peer and its
    /// [`Diagnostics`](super::proto::Diagnostics).
    pub fn diagnostics(&self) -> Vec<(SocketAddr, super::proto::Diagnostics)> {
        self.shared
            .lock()
            .endpoint
            .connections()
            .map(|(_, c)| (c.remote(), c.diagnostics()))
            .collect()
    }

    /// Number of connections the endpoint still tracks (for tests and
    /// diagnostics).
    pub fn connection_count(&self) -> usize {
        self.shared.lock().endpoint.connection_count()
    }
}

#[cfg(test)]
mod tests;

#[cfg(target_os = "linux")]
mod sys;

/// Elsewhere the OS default applies; see the module docs.
#[cfg(not(target_os = "linux"))]
mod sys {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Fragmentation {
        Allowed,
        Probe,
    }

    pub(super) fn set_fragmentation(
        _socket: &tokio::net::UdpSocket,
        _ipv6: bool,
        _mode: Fragmentation,
    ) -> std::io::Result<()> {
        Ok(())
    }

    pub(super) fn route_udp_payload(_remote: std::net::SocketAddr) -> std::io::Result<u16> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    pub(super) const GSO_SEGMENTS: usize = 1;

    pub(super) fn send_gso(
        _socket: &tokio::net::UdpSocket,
        _segments: &[&[u8]],
        _to: std::net::SocketAddr,
    ) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// One datagram per call: no `recvmmsg`/`sendmmsg` here.
    pub(super) const BATCH: usize = 32;

    pub(super) const SLOT: usize = 1 << 16;

    /// One slot here (one datagram per call).
    pub(super) struct Slots(Vec<u8>);

    impl Slots {
        pub(super) fn new() -> Self {
            Self(vec![0u8; SLOT])
        }
    }

    impl std::ops::Deref for Slots {
        type Target = [u8];
        fn deref(&self) -> &[u8] {
            &self.0
        }
    }

    impl std::ops::DerefMut for Slots {
        fn deref_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
    }

    #[derive(Debug, Clone, Copy)]
    pub(super) struct Arrival {
        pub(super) slot: usize,
        pub(super) len: usize,
        pub(super) from: std::net::SocketAddr,
        pub(super) segment: usize,
    }

    pub(super) fn enable_gro(_socket: &tokio::net::UdpSocket) -> std::io::Result<()> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    pub(super) fn recv_batch(
        socket: &tokio::net::UdpSocket,
        slots: &mut [u8],
        out: &mut Vec<Arrival>,
    ) -> std::io::Result<usize> {
        let (len, from) = socket.try_recv_from(&mut slots[..SLOT])?;
        out.push(Arrival {
            slot: 0,
            len,
            from,
            segment: len,
        });
        Ok(1)
    }

    pub(super) fn send_batch(
        socket: &tokio::net::UdpSocket,
        datagrams: &[(&[u8], std::net::SocketAddr)],
    ) -> std::io::Result<usize> {
        match datagrams.first() {
            Some((data, to)) => socket.try_send_to(data, *to).map(|_| 1),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod io_tests {
    use super::*;

    #[tokio::test]
    async fn socket_buffers_are_raised_as_far_as_the_os_allows() {
        let (socket, _) = UtpSocket::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            EndpointConfig::default(),
        )
        .await
        .expect("bind");
        let (recv, send) = socket.buffer_sizes().expect("sizes");
        println!("asked for {SOCKET_BUFFER} each way; granted recv {recv}, send {send}");
        #[cfg(target_os = "linux")]
        {
            let cap = |name: &str| {
                std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
            };
            // Linux grants min(asked, cap) and reports double that.
            if let Some(max) = cap("rmem_max") {
                assert!(
                    recv >= SOCKET_BUFFER.min(max),
                    "recv {recv}, rmem_max {max}"
                );
            }
            if let Some(max) = cap("wmem_max") {
                assert!(
                    send >= SOCKET_BUFFER.min(max),
                    "send {send}, wmem_max {max}"
                );
            }
        }
    }

    #[test]
    fn a_full_local_buffer_is_back_pressure_not_loss() {
        let nobufs = io::Error::from_raw_os_error(ENOBUFS);
        let would_block = io::Error::from(io::ErrorKind::WouldBlock);
        let too_big = io::Error::from_raw_os_error(EMSGSIZE);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_send_error(&nobufs, false), SendFailure::Retry);
        assert_eq!(classify_send_error(&would_block, false), SendFailure::Retry);
        #[cfg(any(target_os = "linux", target_os = "macos", windows))]
        {
            assert_eq!(classify_send_error(&too_big, true), SendFailure::TooLarge);
            assert_eq!(classify_send_error(&too_big, false), SendFailure::Lost);
        }
        assert_eq!(classify_send_error(&refused, false), SendFailure::Lost);
        let _ = too_big;
    }
}
