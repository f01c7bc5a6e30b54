//! IPv4 packets as bytes: parse the few fields the router needs, rewrite
//! addresses and ports with incremental checksum updates (RFC 1624), and build
//! the packets the router itself originates (ICMP errors, TCP resets).
//!
//! Everything works on a raw IPv4 packet as read from a TUN device opened with
//! `IFF_NO_PI`. Call [`parse`] first; the rewrite functions take the [`Meta`]
//! it returned and keep it in step with the bytes.

use std::net::Ipv4Addr;

/// IP protocol number of ICMP.
pub(crate) const ICMP: u8 = 1;
/// IP protocol number of TCP.
pub(crate) const TCP: u8 = 6;
/// IP protocol number of UDP.
pub(crate) const UDP: u8 = 17;

/// TCP flag bits.
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// ICMP types the router looks at.
pub(crate) const ICMP_ECHO_REPLY: u8 = 0;
pub(crate) const ICMP_DEST_UNREACH: u8 = 3;
pub(crate) const ICMP_ECHO_REQUEST: u8 = 8;
pub(crate) const ICMP_TIME_EXCEEDED: u8 = 11;

/// The fields of an IPv4 packet that routing, NAT and impairment use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    /// IP protocol number.
    pub(crate) proto: u8,
    pub(crate) src: Ipv4Addr,
    pub(crate) dst: Ipv4Addr,
    /// Source port; the identifier for ICMP echo; 0 otherwise.
    pub(crate) sport: u16,
    /// Destination port; the identifier for ICMP echo; 0 otherwise.
    pub(crate) dport: u16,
    /// Offset of the transport header.
    pub(crate) l4: usize,
    pub(crate) ttl: u8,
    /// Don't-fragment bit.
    pub(crate) df: bool,
    /// True for a fragment that is not the first one (no transport header).
    pub(crate) later_fragment: bool,
    /// TCP flags, 0 for other protocols.
    pub(crate) tcp_flags: u8,
    /// ICMP type, 0 for other protocols.
    pub(crate) icmp_type: u8,
    /// Whether the transport header (ports) is fully present.
    pub(crate) has_ports: bool,
}

impl Meta {
    /// True for ICMP echo request/reply, whose identifier NAT treats as a port.
    pub(crate) fn is_icmp_echo(&self) -> bool {
        self.proto == ICMP && matches!(self.icmp_type, ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY)
    }

    /// True for ICMP errors that quote an earlier packet.
    pub(crate) fn is_icmp_error(&self) -> bool {
        self.proto == ICMP && matches!(self.icmp_type, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

/// Parses an IPv4 packet; `None` for anything else or a truncated header.
pub(crate) fn parse(b: &[u8]) -> Option<Meta> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if ihl < 20 || b.len() < ihl {
        return None;
    }
    let frag = be16(b, 6);
    let later_fragment = frag & 0x1fff != 0;
    let proto = b[9];
    let l4 = ihl;
    let rest = b.len() - l4;
    let mut m = Meta {
        proto,
        src: addr(b, 12),
        dst: addr(b, 16),
        sport: 0,
        dport: 0,
        l4,
        ttl: b[8],
        df: frag & 0x4000 != 0,
        later_fragment,
        tcp_flags: 0,
        icmp_type: 0,
        has_ports: false,
    };
    if later_fragment {
        return Some(m);
    }
    match proto {
        UDP if rest >= 8 => {
            m.sport = be16(b, l4);
            m.dport = be16(b, l4 + 2);
            m.has_ports = true;
        }
        TCP if rest >= 20 => {
            m.sport = be16(b, l4);
            m.dport = be16(b, l4 + 2);
            m.tcp_flags = b[l4 + 13];
            m.has_ports = true;
        }
        ICMP if rest >= 8 => {
            m.icmp_type = b[l4];
            if m.is_icmp_echo() {
                m.sport = be16(b, l4 + 4);
                m.dport = m.sport;
                m.has_ports = true;
            }
        }
        _ => {}
    }
    Some(m)
}

fn sum16(data: &[u8]) -> u32 {
    let mut s = 0u32;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u32::from(*last) << 8;
    }
    s
}

fn fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The Internet checksum of `data`.
pub(crate) fn checksum(data: &[u8]) -> u16 {
    !fold(sum16(data))
}

/// RFC 1624 eqn. 3: the checksum after 16-bit-aligned bytes `old` became `new`.
fn adjust(csum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut s = u32::from(!csum);
    for c in old.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        s += u32::from(!w);
    }
    for c in new.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    !fold(s)
}

/// Offset of the transport checksum, if this packet's header holds one.
fn l4_csum_at(b: &[u8], m: &Meta) -> Option<usize> {
    if m.later_fragment {
        return None;
    }
    let at = match m.proto {
        UDP => m.l4 + 6,
        TCP => m.l4 + 16,
        ICMP => m.l4 + 2,
        _ => return None,
    };
    (b.len() >= at + 2).then_some(at)
}

fn fix_l4_for_change(b: &mut [u8], m: &Meta, old: &[u8], new: &[u8], in_pseudo_header: bool) {
    if m.proto == ICMP && in_pseudo_header {
        return; // ICMP has no pseudo header
    }
    if let Some(at) = l4_csum_at(b, m) {
        let cur = be16(b, at);
        if m.proto == UDP && cur == 0 {
            return; // no checksum in use
        }
        let mut n = adjust(cur, old, new);
        if m.proto == UDP && n == 0 {
            n = 0xffff;
        }
        put16(b, at, n);
    }
}

fn set_addr(b: &mut [u8], m: &mut Meta, at: usize, new: Ipv4Addr) {
    let old: [u8; 4] = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    let new_b = new.octets();
    b[at..at + 4].copy_from_slice(&new_b);
    let c = adjust(be16(b, 10), &old, &new_b);
    put16(b, 10, c);
    fix_l4_for_change(b, m, &old, &new_b, true);
}

/// Rewrites the source address, keeping both checksums right.
pub(crate) fn set_src(b: &mut [u8], m: &mut Meta, new: Ipv4Addr) {
    set_addr(b, m, 12, new);
    m.src = new;
}

/// Rewrites the destination address, keeping both checksums right.
pub(crate) fn set_dst(b: &mut [u8], m: &mut Meta, new: Ipv4Addr) {
    set_addr(b, m, 16, new);
    m.dst = new;
}

fn set_port_at(b: &mut [u8], m: &Meta, at: usize, new: u16) {
    let old = [b[at], b[at + 1]];
    put16(b, at, new);
    fix_l4_for_change(b, m, &old, &new.to_be_bytes(), false);
}

/// Rewrites the source port (the identifier for ICMP echo).
pub(crate) fn set_sport(b: &mut [u8], m: &mut Meta, new: u16) {
    if !m.has_ports {
        return;
    }
    let at = if m.proto == ICMP { m.l4 + 4 } else { m.l4 };
    set_port_at(b, m, at, new);
    m.sport = new;
    if m.proto == ICMP {
        m.dport = new;
    }
}

/// Rewrites the destination port (the identifier for ICMP echo).
pub(crate) fn set_dport(b: &mut [u8], m: &mut Meta, new: u16) {
    if !m.has_ports {
        return;
    }
    let at = if m.proto == ICMP { m.l4 + 4 } else { m.l4 + 2 };
    set_port_at(b, m, at, new);
    m.dport = new;
    if m.proto == ICMP {
        m.sport = new;
    }
}

/// Decrements the TTL; returns false (and leaves the packet) if it would expire.
pub(crate) fn decrement_ttl(b: &mut [u8], m: &mut Meta) -> bool {
    if m.ttl <= 1 {
        return false;
    }
    let old = [b[8], b[9]];
    b[8] -= 1;
    let c = adjust(be16(b, 10), &old, &[b[8], b[9]]);
    put16(b, 10, c);
    m.ttl -= 1;
    true
}

/// The packet an ICMP error quotes, and where it sits in the outer packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quoted {
    /// Offset of the quoted IP header in the outer packet.
    pub(crate) at: usize,
    pub(crate) meta: Meta,
}

/// Parses the packet quoted inside an ICMP error.
pub(crate) fn quoted(b: &[u8], m: &Meta) -> Option<Quoted> {
    if !m.is_icmp_error() {
        return None;
    }
    let at = m.l4 + 8;
    let inner = b.get(at..)?;
    if inner.len() < 20 || inner[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(inner[0] & 0x0f) * 4;
    let proto = inner[9];
    let mut meta = Meta {
        proto,
        src: addr(inner, 12),
        dst: addr(inner, 16),
        sport: 0,
        dport: 0,
        l4: ihl,
        ttl: inner[8],
        df: false,
        later_fragment: false,
        tcp_flags: 0,
        icmp_type: 0,
        has_ports: false,
    };
    if matches!(proto, UDP | TCP) && inner.len() >= ihl + 4 {
        meta.sport = be16(inner, ihl);
        meta.dport = be16(inner, ihl + 2);
        meta.has_ports = true;
    } else if proto == ICMP && inner.len() >= ihl + 8 {
        meta.icmp_type = inner[ihl];
        if meta.is_icmp_echo() {
            meta.sport = be16(inner, ihl + 4);
            meta.dport = meta.sport;
            meta.has_ports = true;
        }
    }
    Some(Quoted { at, meta })
}

/// Rewrites one endpoint of the packet quoted in an ICMP error, then
/// recomputes the outer ICMP checksum. `source` picks the quoted source
/// (true) or destination (false).
pub(crate) fn rewrite_quoted(
    b: &mut [u8],
    outer: &Meta,
    q: &mut Quoted,
    source: bool,
    ip: Ipv4Addr,
    port: u16,
) {
    let end = b.len();
    {
        let inner = &mut b[q.at..end];
        let mut im = q.meta;
        // The quoted transport checksum may be cut off; fix it only if present.
        if source {
            set_addr_quoted(inner, &mut im, 12, ip);
            im.src = ip;
        } else {
            set_addr_quoted(inner, &mut im, 16, ip);
            im.dst = ip;
        }
        if im.has_ports {
            let port_at = match (im.proto, source) {
                (ICMP, _) => im.l4 + 4,
                (_, true) => im.l4,
                (_, false) => im.l4 + 2,
            };
            if inner.len() >= port_at + 2 {
                set_port_at(inner, &im, port_at, port);
            }
            if source {
                im.sport = port;
            } else {
                im.dport = port;
            }
        }
        q.meta = im;
    }
    let l4 = outer.l4;
    put16(b, l4 + 2, 0);
    let c = checksum(&b[l4..]);
    put16(b, l4 + 2, c);
}

fn set_addr_quoted(b: &mut [u8], m: &mut Meta, at: usize, new: Ipv4Addr) {
    let old: [u8; 4] = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    let new_b = new.octets();
    b[at..at + 4].copy_from_slice(&new_b);
    let c = adjust(be16(b, 10), &old, &new_b);
    put16(b, 10, c);
    fix_l4_for_change(b, m, &old, &new_b, true);
}

/// Builds an IPv4 header (20 bytes, DF clear, TTL 64) for a payload of `len`.
fn ip_header(out: &mut Vec<u8>, proto: u8, src: Ipv4Addr, dst: Ipv4Addr, len: usize) {
    let total = (20 + len) as u16;
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0]);
    out.extend_from_slice(&src.octets());
    out.extend_from_slice(&dst.octets());
    let c = checksum(&out[out.len() - 20..]);
    let at = out.len() - 10;
    put16(out, at, c);
}

/// Builds an ICMP error from `src` about packet `orig` (RFC 792/1191).
/// `mtu` is the next-hop MTU for "fragmentation needed".
pub(crate) fn icmp_error(
    orig: &[u8],
    om: &Meta,
    src: Ipv4Addr,
    typ: u8,
    code: u8,
    mtu: u16,
) -> Vec<u8> {
    let quote = &orig[..orig.len().min(548)];
    let len = 8 + quote.len();
    let mut out = Vec::with_capacity(20 + len);
    ip_header(&mut out, ICMP, src, om.src, len);
    out.extend_from_slice(&[typ, code, 0, 0, 0, 0]);
    out.extend_from_slice(&mtu.to_be_bytes());
    out.extend_from_slice(quote);
    let c = checksum(&out[20..]);
    put16(&mut out, 22, c);
    out
}

/// Builds the echo reply to an ICMP echo request.
pub(crate) fn echo_reply(req: &[u8], m: &Meta) -> Option<Vec<u8>> {
    if m.proto != ICMP || m.icmp_type != ICMP_ECHO_REQUEST {
        return None;
    }
    let body = &req[m.l4..];
    let mut out = Vec::with_capacity(20 + body.len());
    ip_header(&mut out, ICMP, m.dst, m.src, body.len());
    out.extend_from_slice(body);
    out[20] = ICMP_ECHO_REPLY;
    out[22] = 0;
    out[23] = 0;
    let c = checksum(&out[20..]);
    put16(&mut out, 22, c);
    Some(out)
}

/// Builds the TCP reset that answers `orig` (RFC 793, "Reset Generation").
pub(crate) fn tcp_rst(orig: &[u8], om: &Meta) -> Option<Vec<u8>> {
    if om.proto != TCP || !om.has_ports || om.tcp_flags & TCP_RST != 0 {
        return None;
    }
    let l4 = om.l4;
    let seq = u32::from_be_bytes([orig[l4 + 4], orig[l4 + 5], orig[l4 + 6], orig[l4 + 7]]);
    let ack = u32::from_be_bytes([orig[l4 + 8], orig[l4 + 9], orig[l4 + 10], orig[l4 + 11]]);
    let doff = usize::from(orig[l4 + 12] >> 4) * 4;
    let total = usize::from(be16(orig, 2)).min(orig.len());
    let payload = total.saturating_sub(l4 + doff) as u32;
    let (rseq, rack, flags) = if om.tcp_flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let syn_fin = u32::from(om.tcp_flags & (TCP_SYN | TCP_FIN) != 0);
        (
            0,
            seq.wrapping_add(payload).wrapping_add(syn_fin),
            TCP_RST | TCP_ACK,
        )
    };
    let mut out = Vec::with_capacity(40);
    ip_header(&mut out, TCP, om.dst, om.src, 20);
    out.extend_from_slice(&om.dport.to_be_bytes());
    out.extend_from_slice(&om.sport.to_be_bytes());
    out.extend_from_slice(&rseq.to_be_bytes());
    out.extend_from_slice(&rack.to_be_bytes());
    out.extend_from_slice(&[0x50, flags, 0, 0, 0, 0, 0, 0]);
    let c = transport_checksum(&out, TCP);
    put16(&mut out, 36, c);
    Some(out)
}

/// The TCP/UDP checksum of a packet with a 20-byte IP header.
fn transport_checksum(p: &[u8], proto: u8) -> u16 {
    let seg = &p[20..];
    let mut s = sum16(&p[12..20]);
    s += u32::from(proto);
    s += seg.len() as u32;
    s += sum16(seg);
    !fold(s)
}

/// Builds a UDP packet (tests).
#[cfg(test)]
pub(crate) fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut out = Vec::with_capacity(20 + len);
    ip_header(&mut out, UDP, src, dst, len);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(payload);
    let mut c = transport_checksum(&out, UDP);
    if c == 0 {
        c = 0xffff;
    }
    put16(&mut out, 26, c);
    out
}

/// Builds a TCP segment with the given flags and no payload (tests).
#[cfg(test)]
pub(crate) fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    ip_header(&mut out, TCP, src, dst, 20);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out.extend_from_slice(&7u32.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    let c = transport_checksum(&out, TCP);
    put16(&mut out, 36, c);
    out
}

/// True if the IP header checksum and (for UDP/TCP) the transport checksum verify.
#[cfg(test)]
pub(crate) fn checksums_ok(p: &[u8]) -> bool {
    let Some(m) = parse(p) else { return false };
    if checksum(&p[..m.l4]) != 0 {
        return false;
    }
    match m.proto {
        UDP | TCP => {
            let seg = &p[m.l4..];
            let mut s = sum16(&p[12..20]);
            s += u32::from(m.proto);
            s += seg.len() as u32;
            s += sum16(seg);
            fold(s) == 0xffff
        }
        ICMP => checksum(&p[m.l4..]) == 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_checksums_valid() {
        let a = Ipv4Addr::new(192, 168, 1, 2);
        let b = Ipv4Addr::new(192, 0, 2, 10);
        let mut p = udp(a, 5000, b, 53, b"hello world");
        assert!(checksums_ok(&p));
        let mut m = parse(&p).unwrap();
        set_src(&mut p, &mut m, Ipv4Addr::new(203, 0, 113, 1));
        set_sport(&mut p, &mut m, 49152);
        assert!(checksums_ok(&p));
        let m2 = parse(&p).unwrap();
        assert_eq!((m2.src, m2.sport), (Ipv4Addr::new(203, 0, 113, 1), 49152));
        let mut t = tcp(a, 1, b, 2, TCP_SYN);
        let mut tm = parse(&t).unwrap();
        set_dst(&mut t, &mut tm, a);
        set_dport(&mut t, &mut tm, 9);
        assert!(checksums_ok(&t));
        assert!(decrement_ttl(&mut t, &mut tm));
        assert!(checksums_ok(&t));
    }

    #[test]
    fn rst_answers_syn() {
        let a = Ipv4Addr::new(192, 0, 2, 1);
        let b = Ipv4Addr::new(203, 0, 113, 1);
        let syn = tcp(a, 1000, b, 2000, TCP_SYN);
        let m = parse(&syn).unwrap();
        let rst = tcp_rst(&syn, &m).unwrap();
        assert!(checksums_ok(&rst));
        let rm = parse(&rst).unwrap();
        assert_eq!((rm.src, rm.dst, rm.sport, rm.dport), (b, a, 2000, 1000));
        assert_eq!(rm.tcp_flags, TCP_RST | TCP_ACK);
    }

    #[test]
    fn icmp_error_quotes_and_rewrites() {
        let a = Ipv4Addr::new(203, 0, 113, 1);
        let b = Ipv4Addr::new(192, 0, 2, 1);
        let orig = udp(a, 40000, b, 9, b"x");
        let om = parse(&orig).unwrap();
        let mut e = icmp_error(&orig, &om, b, ICMP_DEST_UNREACH, 3, 0);
        assert!(checksums_ok(&e));
        let em = parse(&e).unwrap();
        let mut q = quoted(&e, &em).unwrap();
        assert_eq!((q.meta.src, q.meta.sport), (a, 40000));
        rewrite_quoted(&mut e, &em, &mut q, true, Ipv4Addr::new(10, 0, 0, 2), 5555);
        assert!(checksums_ok(&e));
        let q2 = quoted(&e, &parse(&e).unwrap()).unwrap();
        assert_eq!(
            (q2.meta.src, q2.meta.sport),
            (Ipv4Addr::new(10, 0, 0, 2), 5555)
        );
        assert!(checksums_ok(&e[q2.at..]));
    }
}
