//! Many connections on one socket: demultiplexing by (address, connection
//! id), accepting SYNs into a bounded half-open table and accept queue, and
//! answering packets for unknown connections with a rate-limited RESET.
//!
//! An incoming connection stays half-open (answered, not offered) until the
//! initiator's first DATA arrives; only then does [`Endpoint::accept`]
//! return it. Half-open connections expire after ten seconds of silence.
//!
//! Call order, in the driver's loop: [`Endpoint::handle_datagram`] for every
//! uTP datagram received; [`Endpoint::handle_timeout`] when
//! [`Endpoint::poll_timeout`] passes; then [`Endpoint::poll_transmit`] until
//! `None`; then [`Endpoint::poll_event`] until `None`. New connections come
//! from [`Endpoint::connect`] and [`Endpoint::accept`]; reach one with
//! [`Endpoint::connection_mut`] and [`Endpoint::remove`] it when done.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::config::EndpointConfig;
use super::connection::{Connection, Event, State, Transmit};
use super::packet::{self, DecodeError, Header, Packet, PacketType};
use super::rng::SplitMix64;

/// Names one connection of an [`Endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub u64);

/// What happened to a datagram handed to [`Endpoint::handle_datagram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatagramOutcome {
    /// Delivered to this connection.
    Connection(ConnectionHandle),
    /// A SYN started this half-open connection; [`Endpoint::accept`] returns
    /// it once the initiator's first DATA arrives.
    Incoming(ConnectionHandle),
    /// No connection wanted it (a RESET may have been queued).
    Ignored,
    /// A SYN was refused: accept queue or half-open table full.
    Refused,
}

#[derive(Debug)]
struct Entry {
    conn: Connection,
    /// Counted in the half-open table until its first DATA.
    half_open: bool,
    accepted: bool,
}

/// A uTP endpoint; see the module docs for the call order.
#[derive(Debug)]
pub struct Endpoint {
    config: EndpointConfig,
    rng: SplitMix64,
    conns: BTreeMap<ConnectionHandle, Entry>,
    by_id: HashMap<(SocketAddr, u16), ConnectionHandle>,
    next_handle: u64,
    incoming: VecDeque<ConnectionHandle>,
    half_open: usize,
    transmits: VecDeque<Transmit>,
    reset_tokens: f64,
    reset_refilled: Option<Instant>,
    cursor: Option<ConnectionHandle>,
    /// The peer and connection of the last datagram polled, for `recycle`.
    last_transmitter: Option<(SocketAddr, ConnectionHandle)>,
    event_cursor: Option<ConnectionHandle>,
}

impl Endpoint {
    /// A new endpoint; every random choice derives from `seed`.
    pub fn new(config: EndpointConfig, seed: u64) -> Self {
        Self {
            reset_tokens: f64::from(config.reset_burst),
            config,
            rng: SplitMix64::new(seed),
            conns: BTreeMap::new(),
            by_id: HashMap::new(),
            next_handle: 0,
            incoming: VecDeque::new(),
            half_open: 0,
            transmits: VecDeque::new(),
            reset_refilled: None,
            cursor: None,
            last_transmitter: None,
            event_cursor: None,
        }
    }

    fn new_handle(&mut self) -> ConnectionHandle {
        self.next_handle += 1;
        ConnectionHandle(self.next_handle)
    }

    /// Starts a connection to `remote`.
    pub fn connect(&mut self, now: Instant, remote: SocketAddr) -> ConnectionHandle {
        // Our recv_id and send_id (= recv_id + 1) must both be free for this peer.
        let recv_id = loop {
            let id = self.rng.next_u16();
            if !self.by_id.contains_key(&(remote, id))
                && !self.by_id.contains_key(&(remote, id.wrapping_add(1)))
            {
                break id;
            }
        };
        let conn = Connection::connect_with_id(
            now,
            remote,
            self.config.connection.clone(),
            recv_id,
            &mut self.rng,
        );
        let handle = self.new_handle();
        self.by_id.insert((remote, recv_id), handle);
        self.conns.insert(
            handle,
            Entry {
                conn,
                half_open: false,
                accepted: true,
            },
        );
        handle
    }

    /// Takes the next incoming connection whose handshake is complete (the
    /// initiator speaks first), if any.
    pub fn accept(&mut self) -> Option<ConnectionHandle> {
        while let Some(h) = self.incoming.pop_front() {
            if let Some(e) = self.conns.get_mut(&h) {
                e.accepted = true;
                return Some(h);
            }
        }
        None
    }

    /// The live connection with `remote` that packets addressed to
    /// `recv_id` reach, half-open ones included.
    pub fn find(&self, remote: SocketAddr, recv_id: u16) -> Option<ConnectionHandle> {
        self.by_id.get(&(remote, recv_id)).copied()
    }

    /// Number of connections, in any state, that have not been removed.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Number of incoming connections still waiting for their first DATA.
    pub fn half_open_count(&self) -> usize {
        self.half_open
    }

    /// A connection, to inspect.
    pub fn connection(&self, handle: ConnectionHandle) -> Option<&Connection> {
        self.conns.get(&handle).map(|e| &e.conn)
    }

    /// Every connection, to inspect.
    pub fn connections(&self) -> impl Iterator<Item = (ConnectionHandle, &Connection)> {
        self.conns.iter().map(|(h, e)| (*h, &e.conn))
    }

    /// A connection, to read, write or close.
    pub fn connection_mut(&mut self, handle: ConnectionHandle) -> Option<&mut Connection> {
        self.conns.get_mut(&handle).map(|e| &mut e.conn)
    }

    /// Forgets a connection (aborting it if it is still alive; the peer gets
    /// a RESET from its next packet).
    pub fn remove(&mut self, handle: ConnectionHandle) {
        if let Some(e) = self.conns.remove(&handle) {
            if e.half_open {
                self.half_open -= 1;
            }
            self.by_id.remove(&(e.conn.remote(), e.conn.recv_id()));
        }
    }

    /// Handles one datagram from `remote`. Malformed datagrams are an error
    /// and change nothing.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        datagram: &[u8],
    ) -> Result<DatagramOutcome, DecodeError> {
        let p = Packet::decode(datagram)?;
        let id = p.header.conn_id;
        let handle = match p.header.ty {
            // A SYN is addressed by the initiator's recv_id; ours is id + 1.
            PacketType::Syn => self.by_id.get(&(remote, id.wrapping_add(1))).copied(),
            // libutp and libtorrent send RESET with either id; accept id ± 1.
            PacketType::Reset => [id, id.wrapping_add(1), id.wrapping_sub(1)]
                .into_iter()
                .find_map(|i| self.by_id.get(&(remote, i)).copied()),
            _ => self.by_id.get(&(remote, id)).copied(),
        };
        if let Some(h) = handle {
            self.deliver(now, h, &p);
            return Ok(DatagramOutcome::Connection(h));
        }
        match p.header.ty {
            PacketType::Syn => Ok(self.handle_syn(now, remote, &p)),
            PacketType::Reset => Ok(DatagramOutcome::Ignored),
            _ => {
                self.send_reset(now, remote, &p.header);
                Ok(DatagramOutcome::Ignored)
            }
        }
    }

    fn deliver(&mut self, now: Instant, h: ConnectionHandle, p: &Packet<'_>) {
        let Some(e) = self.conns.get_mut(&h) else {
            return;
        };
        e.conn.handle_packet(now, p);
        if e.half_open && e.conn.state() != State::SynRecv {
            e.half_open = false;
            self.half_open -= 1;
            // Only now, with the initiator's first DATA, does the
            // application hear of it: a SYN whose reply was lost, and
            // that was retried under a new id, leaves no phantom behind.
            if e.conn.state() != State::Dead {
                self.incoming.push_back(h);
            }
        }
        if e.conn.state() == State::Dead {
            self.retire(h);
        }
    }

    /// A dead connection leaves the demultiplexer at once (so its ids are
    /// free and later packets get RESET); the application still holds it.
    fn retire(&mut self, h: ConnectionHandle) {
        let Some(e) = self.conns.get_mut(&h) else {
            return;
        };
        if e.half_open {
            e.half_open = false;
            self.half_open -= 1;
        }
        let key = (e.conn.remote(), e.conn.recv_id());
        if self.by_id.get(&key) == Some(&h) {
            self.by_id.remove(&key);
        }
        if !e.accepted {
            self.conns.remove(&h);
            self.incoming.retain(|i| *i != h);
        }
    }

    fn handle_syn(&mut self, now: Instant, remote: SocketAddr, p: &Packet<'_>) -> DatagramOutcome {
        if !self.config.accept_incoming || self.by_id.contains_key(&(remote, p.header.conn_id)) {
            return DatagramOutcome::Refused;
        }
        // A full half-open table makes room by dropping its oldest entry
        // (a BSD-style SYN cache): SYNs from spoofed addresses cost an
        // attacker nothing, and refusing new ones would lock real peers
        // out for the ten seconds a half-open entry lives. A real initiator
        // sends its first DATA one round trip after its SYN, so it leaves
        // the table long before a flood can push it out.
        while self.half_open > 0
            && (self.half_open >= self.config.max_half_open
                || self.incoming.len() + self.half_open >= self.config.accept_queue)
        {
            self.evict_oldest_half_open();
        }
        if self.incoming.len() + self.half_open >= self.config.accept_queue
            || self.half_open >= self.config.max_half_open
        {
            return DatagramOutcome::Refused;
        }
        let Ok(conn) = Connection::accept_packet(
            now,
            remote,
            p,
            self.config.connection.clone(),
            &mut self.rng,
        ) else {
            return DatagramOutcome::Ignored;
        };
        let h = self.new_handle();
        self.by_id.insert((remote, conn.recv_id()), h);
        self.conns.insert(
            h,
            Entry {
                conn,
                half_open: true,
                accepted: false,
            },
        );
        self.half_open += 1;
        DatagramOutcome::Incoming(h)
    }

    /// Forgets the oldest half-open connection (handles grow with time).
    fn evict_oldest_half_open(&mut self) {
        let Some(h) = self
            .conns
            .iter()
            .find(|(_, e)| e.half_open)
            .map(|(h, _)| *h)
        else {
            // The count and the flags disagree; trust the flags.
            self.half_open = 0;
            return;
        };
        self.remove(h);
    }

    /// Token bucket: a flood of stray packets gets only a trickle of RESETs.
    fn send_reset(&mut self, now: Instant, remote: SocketAddr, to: &Header) {
        let burst = f64::from(self.config.reset_burst);
        if let Some(last) = self.reset_refilled {
            let refill = now.saturating_duration_since(last).as_secs_f64()
                * f64::from(self.config.resets_per_second);
            self.reset_tokens = (self.reset_tokens + refill).min(burst);
        }
        self.reset_refilled = Some(now);
        if self.reset_tokens < 1.0 {
            return;
        }
        self.reset_tokens -= 1.0;
        let header = Header {
            ty: PacketType::Reset,
            conn_id: to.conn_id,
            timestamp: 0,
            timestamp_diff: 0,
            wnd_size: 0,
            seq_nr: self.rng.next_u16(),
            ack_nr: to.seq_nr,
        };
        let mut contents = Vec::new();
        packet::encode(&header, None, &[], &mut contents);
        self.transmits.push_back(Transmit {
            destination: remote,
            contents,
            dont_fragment: false,
        });
    }

    /// A connecting connection took a new id for its SYN retry; keep the
    /// table in step, and make sure the new id (and id + 1) is free.
    fn rekey(&mut self, h: ConnectionHandle, old_id: u16) {
        let Some(e) = self.conns.get_mut(&h) else {
            return;
        };
        let remote = e.conn.remote();
        if self.by_id.get(&(remote, old_id)) == Some(&h) {
            self.by_id.remove(&(remote, old_id));
        }
        let mut id = e.conn.recv_id();
        while self.by_id.contains_key(&(remote, id))
            || self.by_id.contains_key(&(remote, id.wrapping_add(1)))
        {
            id = self.rng.next_u16();
        }
        e.conn.renew_syn_id(id);
        self.by_id.insert((remote, id), h);
    }

    /// Runs every connection's due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<ConnectionHandle> = self
            .conns
            .iter()
            .filter(|(_, e)| e.conn.poll_timeout().is_some_and(|t| t <= now))
            .map(|(h, _)| *h)
            .collect();
        for h in due {
            let Some(e) = self.conns.get_mut(&h) else {
                continue;
            };
            let old_id = e.conn.recv_id();
            e.conn.handle_timeout(now);
            if e.conn.state() == State::Dead {
                self.retire(h);
            } else if e.conn.recv_id() != old_id {
                self.rekey(h, old_id);
            }
        }
    }

    /// The earliest timer of any connection.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|e| e.conn.poll_timeout())
            .min()
    }

    /// Hands back the buffer of a datagram that has been sent, for the
    /// connection with `remote` to build its next one in (no allocation
    /// per datagram; see `Connection::recycle`). Optional.
    pub fn recycle(&mut self, remote: SocketAddr, contents: Vec<u8>) {
        if let Some(h) = self.last_transmitter.filter(|(addr, _)| *addr == remote)
            && let Some(e) = self.conns.get_mut(&h.1)
            && e.conn.wants_buffers()
        {
            e.conn.recycle(contents);
        }
    }

    /// The next datagram to send: endpoint RESETs first, then the
    /// connections in turn, so one busy connection cannot starve the rest.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        let start = self.cursor.map_or(0, |c| c.0);
        // After the cursor, then wrapping round to it (no allocation: this
        // runs once per datagram sent).
        for (h, e) in self
            .conns
            .range_mut(ConnectionHandle(start.saturating_add(1))..)
        {
            if let Some(t) = e.conn.poll_transmit(now) {
                self.cursor = Some(*h);
                self.last_transmitter = Some((t.destination, *h));
                return Some(t);
            }
        }
        for (h, e) in self.conns.range_mut(..=ConnectionHandle(start)) {
            if let Some(t) = e.conn.poll_transmit(now) {
                self.cursor = Some(*h);
                self.last_transmitter = Some((t.destination, *h));
                return Some(t);
            }
        }
        None
    }

    /// The next event of any accepted connection.
    pub fn poll_event(&mut self) -> Option<(ConnectionHandle, Event)> {
        let start = self.event_cursor.map_or(0, |c| c.0);
        for (h, e) in self.conns.range_mut(ConnectionHandle(start)..) {
            if e.accepted
                && let Some(ev) = e.conn.poll_event()
            {
                self.event_cursor = Some(*h);
                return Some((*h, ev));
            }
        }
        for (h, e) in self.conns.range_mut(..ConnectionHandle(start)) {
            if e.accepted
                && let Some(ev) = e.conn.poll_event()
            {
                self.event_cursor = Some(*h);
                return Some((*h, ev));
            }
        }
        None
    }

    /// The socket refused `transmit` (a "don't fragment" path-MTU probe) as
    /// too large (`EMSGSIZE`); the connection that sent it takes it as the
    /// probe's loss, not as congestion.
    pub fn handle_transmit_too_large(&mut self, now: Instant, transmit: &Transmit) {
        let Ok(p) = Packet::decode(&transmit.contents) else {
            return;
        };
        let send_id = p.header.conn_id;
        let remote = transmit.destination;
        let found = [send_id.wrapping_sub(1), send_id.wrapping_add(1)]
            .into_iter()
            .filter_map(|id| self.by_id.get(&(remote, id)).copied())
            .find(|h| {
                self.conns
                    .get(h)
                    .is_some_and(|e| e.conn.send_id() == send_id)
            });
        if let Some(e) = found.and_then(|h| self.conns.get_mut(&h)) {
            e.conn.handle_mtu_probe_rejected(now);
        }
    }
}
