//! The thread that moves every packet: a thin epoll pump around
//! [`Fabric`]. It reads packets from the hosts' TUN devices, feeds them in,
//! sleeps on a timerfd until the next delayed packet is due, and writes what
//! the fabric hands back. Commands (add a host, port forwards, stop) arrive
//! on a channel with an eventfd to wake the loop.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use crate::fabric::{Fabric, LinkHandles, PortForward, TunId};
use crate::packet;
use crate::topology::HostSpec;

/// A request to the router thread.
pub(crate) enum Command {
    AddHost {
        spec: Box<HostSpec>,
        tun: OwnedFd,
        reply: Sender<std::io::Result<(TunId, LinkHandles)>>,
    },
    AddForward {
        router: String,
        proto: u8,
        ext_port: u16,
        internal: std::net::SocketAddrV4,
        reply: Sender<bool>,
    },
    RemoveForward {
        router: String,
        proto: u8,
        ext_port: u16,
        reply: Sender<bool>,
    },
    Forwards {
        router: String,
        reply: Sender<Vec<PortForward>>,
    },
    FlushNat {
        router: String,
        reply: Sender<bool>,
    },
    Stop,
}

/// The router's handle to wake it.
#[derive(Clone)]
pub(crate) struct Waker(Arc<EventFd>);

impl Waker {
    pub(crate) fn wake(&self) {
        let _ = self.0.write(1);
    }
}

const WAKE: u64 = u64::MAX;
const TIMER: u64 = u64::MAX - 1;

pub(crate) struct Router {
    fabric: Fabric,
    tuns: Vec<OwnedFd>,
    epoll: Epoll,
    timer: TimerFd,
    wake: Arc<EventFd>,
    commands: Receiver<Command>,
    armed: Option<Instant>,
}

impl Router {
    pub(crate) fn new(
        fabric: Fabric,
        tuns: Vec<OwnedFd>,
        commands: Receiver<Command>,
    ) -> std::io::Result<(Router, Waker)> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let wake = Arc::new(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
        )?);
        let waker = Waker(wake.clone());
        epoll.add(&*wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))?;
        epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER))?;
        for (i, t) in tuns.iter().enumerate() {
            epoll.add(t, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
        }
        Ok((
            Router {
                fabric,
                tuns,
                epoll,
                timer,
                wake,
                commands,
                armed: None,
            },
            waker,
        ))
    }

    /// Runs until [`Command::Stop`] or the command channel closes.
    pub(crate) fn run(mut self) {
        let mut events = [EpollEvent::empty(); 64];
        let mut buf = vec![0u8; 65536];
        loop {
            let timeout = match self.fabric.poll_timeout() {
                Some(at) if at <= Instant::now() => EpollTimeout::ZERO,
                Some(at) => {
                    if self.armed != Some(at) {
                        let d = at
                            .saturating_duration_since(Instant::now())
                            .max(Duration::from_nanos(1));
                        if self
                            .timer
                            .set(
                                Expiration::OneShot(TimeSpec::from_duration(d)),
                                TimerSetTimeFlags::empty(),
                            )
                            .is_ok()
                        {
                            self.armed = Some(at);
                        }
                    }
                    EpollTimeout::NONE
                }
                None => EpollTimeout::NONE,
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!("netsim router: epoll failed: {e}");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    WAKE => {
                        let _ = self.wake.read();
                        if !self.handle_commands() {
                            self.fabric.flush_pcaps();
                            return;
                        }
                    }
                    TIMER => {
                        let mut b = [0u8; 8];
                        let _ = nix::unistd::read(self.timer.as_fd(), &mut b);
                        self.armed = None;
                    }
                    i => self.read_tun(i as usize, &mut buf),
                }
            }
            self.fabric.handle_timeout(Instant::now());
            while let Some((tun, pkt)) = self.fabric.poll_transmit() {
                if let Some(fd) = self.tuns.get(tun) {
                    // A full TUN queue drops the packet, as a real NIC would.
                    if nix::unistd::write(fd, &pkt).is_err() {
                        self.fabric
                            .counters
                            .tun_write_dropped
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn read_tun(&mut self, i: usize, buf: &mut [u8]) {
        let Some(fd) = self.tuns.get(i) else { return };
        // Bounded so one busy host cannot starve the others.
        for _ in 0..64 {
            match nix::unistd::read(fd.as_fd(), buf) {
                Ok(0) => return,
                Ok(n) => {
                    let now = Instant::now();
                    self.fabric.ingress(now, i, buf[..n].to_vec());
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => return,
                Err(e) => {
                    tracing::warn!("netsim router: reading TUN {i}: {e}");
                    let _ = self.epoll.delete(fd);
                    return;
                }
            }
        }
    }

    /// Handles queued commands; false means stop.
    fn handle_commands(&mut self) -> bool {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Stop => return false,
                Command::AddHost { spec, tun, reply } => {
                    let r = self.fabric.add_host(&spec).and_then(|id| {
                        debug_assert_eq!(id, self.tuns.len());
                        self.epoll
                            .add(&tun, EpollEvent::new(EpollFlags::EPOLLIN, id as u64))?;
                        self.tuns.push(tun);
                        let handles = self
                            .fabric
                            .link_handles()
                            .pop()
                            .ok_or_else(|| std::io::Error::other("no link"))?;
                        Ok((id, handles))
                    });
                    let _ = reply.send(r);
                }
                Command::AddForward {
                    router,
                    proto,
                    ext_port,
                    internal,
                    reply,
                } => {
                    let _ = reply.send(self.fabric.add_forward(&router, proto, ext_port, internal));
                }
                Command::RemoveForward {
                    router,
                    proto,
                    ext_port,
                    reply,
                } => {
                    let _ = reply.send(self.fabric.remove_forward(&router, proto, ext_port));
                }
                Command::Forwards { router, reply } => {
                    let _ = reply.send(self.fabric.forwards(&router));
                }
                Command::FlushNat { router, reply } => {
                    let _ = reply.send(self.fabric.flush_nat(&router));
                }
            }
        }
        true
    }
}

/// Protocol number from a name.
pub(crate) fn proto_number(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "udp" => Some(packet::UDP),
        "tcp" => Some(packet::TCP),
        _ => None,
    }
}
