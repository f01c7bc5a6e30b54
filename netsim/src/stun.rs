//! A small STUN server (RFC 5389 Binding, with RFC 3489/5780 CHANGE-REQUEST)
//! for public hosts with two addresses: what `miniupnpd
//! ext_perform_stun=yes` and other NAT probes ask.
//!
//! [`binding_response`] is the pure part (request bytes in, reply and where
//! to send it from out); [`serve_stun`] runs it on four sockets (two
//! addresses × two ports) until `NSQUIT` arrives.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use tokio::net::UdpSocket;

const MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// Answers a Binding request from `from`. Returns the reply and whether it
/// must come from the other address and/or the other port.
pub(crate) fn binding_response(req: &[u8], from: SocketAddrV4) -> Option<(Vec<u8>, bool, bool)> {
    if req.len() < 20 || req[0] != 0x00 || req[1] != 0x01 {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([req[2], req[3]]));
    if 20 + body_len > req.len() {
        return None;
    }
    let (mut change_ip, mut change_port) = (false, false);
    let mut at = 20;
    while at + 4 <= 20 + body_len {
        let typ = u16::from_be_bytes([req[at], req[at + 1]]);
        let len = usize::from(u16::from_be_bytes([req[at + 2], req[at + 3]]));
        if typ == 0x0003 && len == 4 && at + 8 <= req.len() {
            change_ip = req[at + 7] & 0x04 != 0;
            change_port = req[at + 7] & 0x02 != 0;
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    let port = from.port();
    let ip = from.ip().octets();
    let mut out = Vec::with_capacity(44);
    out.extend_from_slice(&[0x01, 0x01, 0, 24]);
    out.extend_from_slice(&req[4..20]); // magic cookie (or old id) + transaction id
    // MAPPED-ADDRESS
    out.extend_from_slice(&[0x00, 0x01, 0, 8, 0, 1]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&ip);
    // XOR-MAPPED-ADDRESS
    out.extend_from_slice(&[0x00, 0x20, 0, 8, 0, 1]);
    out.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
    for (b, m) in ip.iter().zip(MAGIC) {
        out.push(b ^ m);
    }
    Some((out, change_ip, change_port))
}

/// Serves STUN on `addrs[0..2]` × `port, port + 1` until `NSQUIT` arrives.
pub async fn serve_stun(addrs: [Ipv4Addr; 2], port: u16) -> io::Result<()> {
    let mut socks = Vec::new();
    for a in addrs {
        for p in [port, port + 1] {
            socks.push(UdpSocket::bind((a, p)).await?);
        }
    }
    let socks = Arc::new(socks);
    let (quit_tx, mut quit_rx) = tokio::sync::mpsc::channel::<()>(1);
    let mut tasks = Vec::new();
    for i in 0..socks.len() {
        let socks = socks.clone();
        let quit_tx = quit_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socks[i].recv_from(&mut buf).await else {
                    continue;
                };
                if &buf[..n] == b"NSQUIT" {
                    let _ = quit_tx.send(()).await;
                    return;
                }
                let SocketAddr::V4(from4) = from else {
                    continue;
                };
                if let Some((reply, ci, cp)) = binding_response(&buf[..n], from4) {
                    // Index = address * 2 + port offset.
                    let j = i ^ (usize::from(ci) << 1) ^ usize::from(cp);
                    let _ = socks[j].send_to(&reply, from).await;
                }
            }
        }));
    }
    drop(quit_tx);
    let _ = quit_rx.recv().await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_binding_with_mapped_and_xor_mapped_and_change_flags() {
        let mut req = vec![0x00, 0x01, 0x00, 0x08];
        req.extend_from_slice(&MAGIC);
        req.extend_from_slice(&[7u8; 12]);
        req.extend_from_slice(&[0x00, 0x03, 0x00, 0x04, 0, 0, 0, 0x06]);
        let from = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 40000);
        let (r, ci, cp) = binding_response(&req, from).unwrap();
        assert!(ci && cp);
        assert_eq!(&r[..2], &[0x01, 0x01]);
        assert_eq!(&r[8..20], &[7u8; 12]);
        assert_eq!(&r[24..32], &[0, 1, 0x9c, 0x40, 203, 0, 113, 1]);
        let xport = u16::from_be_bytes([r[38], r[39]]) ^ 0x2112;
        assert_eq!(xport, 40000);
        assert!(binding_response(&[0x01, 0x01, 0, 0], from).is_none());
    }
}
