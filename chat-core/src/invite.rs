//! Invites: the `crust:` code that lets someone send us a friend request.
//!
//! An invite carries our peer id, display name, address hints (each a
//! crust [`Endpoint`](crust::Endpoint): TCP or uTP) and the
//! current request token (a Tox-style "nospam": rotating it makes old codes
//! useless, see [`Node::rotate_request_token`](crate::Node::rotate_request_token)),
//! followed by a 4-byte SHA-256 checksum, all base32-encoded behind
//! `crust:`. Parsing ignores case, spaces and dashes, so a code read aloud
//! or re-typed still works, and rejects any typo by its checksum.
//!
//! The QR form is the same text in upper case, which QR's alphanumeric
//! mode stores compactly.
//!
//! Versions: 2 (written now) tags each address with the transports it
//! serves (TCP, uTP or both, one entry for an address serving both); 1
//! (before uTP) had untagged addresses, which are read as TCP, so codes
//! handed out by older programs still work.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crust::{Endpoint, PeerId, Transport};

const SCHEME: &str = "crust:";
/// The version written.
const VERSION: u8 = 2;
/// The first version: addresses without transport flags, meaning TCP.
const VERSION_TCP_ONLY: u8 = 1;
const MAX_NAME_BYTES: usize = 64;
/// Most distinct socket addresses in a code (each may serve TCP and uTP).
const MAX_ADDRS: usize = 8;
/// Address kind byte (version 2): the low nibble is the IP family (4 or
/// 6), these bits the transports served there.
const KIND_TCP: u8 = 0x10;
const KIND_UTP: u8 = 0x20;

/// What someone needs to send us a friend request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Who.
    pub peer: PeerId,
    /// Their display name (at most 64 bytes; longer names are cut).
    pub name: String,
    /// Where to try first: TCP and uTP endpoints (at most 8 distinct
    /// socket addresses are kept, each with both transports).
    pub addrs: Vec<Endpoint>,
    /// The request token current when the invite was made.
    pub token: [u8; 4],
}

/// Why a string is not an invite.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// It does not start with `crust:`.
    #[error("not an invite: it should start with \"crust:\"")]
    Scheme,
    /// Characters outside the invite alphabet.
    #[error("not an invite: it contains characters that cannot be in a code")]
    Encoding,
    /// The checksum does not match: a typo, or a truncated code.
    #[error("invite code is mistyped or incomplete (checksum mismatch)")]
    Checksum,
    /// Checksum fine but contents unusable (a newer version, a bad key).
    #[error("invite code is not understood: {0}")]
    Contents(&'static str),
}

/// A QR code as a square of modules, row by row (`true` = dark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrMatrix {
    /// Modules per side.
    pub width: usize,
    /// `width * width` modules, row-major.
    pub dark: Vec<bool>,
}

impl Invite {
    fn payload(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(self.peer.as_bytes());
        out.extend_from_slice(&self.token);
        let name = truncate_utf8(&self.name, MAX_NAME_BYTES);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        // One entry per socket address, flagged with its transports, in
        // the order the addresses first appear.
        let mut entries: Vec<(SocketAddr, u8)> = Vec::new();
        for endpoint in &self.addrs {
            let flag = match endpoint.transport {
                Transport::Utp => KIND_UTP,
                _ => KIND_TCP,
            };
            if let Some((_, flags)) = entries.iter_mut().find(|(a, _)| *a == endpoint.addr) {
                *flags |= flag;
            } else if entries.len() < MAX_ADDRS {
                entries.push((endpoint.addr, flag));
            }
        }
        out.push(entries.len() as u8);
        for (addr, flags) in entries {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    out.push(4 | flags);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6 | flags);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&addr.port().to_be_bytes());
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum);
        out
    }

    /// The code in the upper-case form QR codes store compactly.
    pub fn to_qr_text(&self) -> String {
        self.to_string().to_ascii_uppercase()
    }

    /// The QR code's modules, for a client to draw.
    pub fn qr_matrix(&self) -> QrMatrix {
        let code = self.qr_code();
        QrMatrix {
            width: code.width(),
            dark: code
                .to_colors()
                .into_iter()
                .map(|c| c == qrcode::Color::Dark)
                .collect(),
        }
    }

    /// The QR code drawn with Unicode half blocks (two rows per line), dark
    /// modules as `█`, with a quiet zone; print on a light background or
    /// invert for dark terminals.
    pub fn qr_unicode(&self) -> String {
        self.qr_code()
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Dark)
            .light_color(qrcode::render::unicode::Dense1x2::Light)
            .build()
    }

    fn qr_code(&self) -> qrcode::QrCode {
        // An invite is at most ~230 characters: always fits a QR code at
        // medium error correction.
        match qrcode::QrCode::with_error_correction_level(self.to_qr_text(), qrcode::EcLevel::M) {
            Ok(code) => code,
            Err(_) => {
                // Unreachable for the sizes above; fall back to low error
                // correction rather than fail to show anything.
                qrcode::QrCode::with_error_correction_level(self.to_qr_text(), qrcode::EcLevel::L)
                    .unwrap_or_else(|_| unreachable_qr())
            }
        }
    }
}

#[allow(clippy::panic)]
fn unreachable_qr() -> qrcode::QrCode {
    panic!("an invite of bounded size always fits a QR code")
}

impl fmt::Display for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = data_encoding::BASE32_NOPAD
            .encode(&self.payload())
            .to_ascii_lowercase();
        write!(f, "{SCHEME}{code}")
    }
}

impl FromStr for Invite {
    type Err = InviteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let prefix = s.get(..SCHEME.len()).ok_or(InviteError::Scheme)?;
        if !prefix.eq_ignore_ascii_case(SCHEME) {
            return Err(InviteError::Scheme);
        }
        let code: String = s[SCHEME.len()..]
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !code
            .bytes()
            .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c))
        {
            return Err(InviteError::Encoding);
        }
        // Only letters of the alphabet, but not a whole number of bytes:
        // characters are missing.
        let bytes = data_encoding::BASE32_NOPAD
            .decode(code.as_bytes())
            .map_err(|_| InviteError::Checksum)?;
        if bytes.len() < 5 {
            return Err(InviteError::Checksum);
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        if checksum(body) != sum {
            return Err(InviteError::Checksum);
        }
        let mut r = Reader(body);
        let version = r.take(1)?[0];
        if version > VERSION {
            return Err(InviteError::Contents("made by a newer version"));
        }
        if version < VERSION_TCP_ONLY {
            return Err(InviteError::Contents("unknown version"));
        }
        let peer_bytes: [u8; 32] = r.array()?;
        let peer =
            PeerId::from_bytes(peer_bytes).map_err(|_| InviteError::Contents("bad peer id"))?;
        let token: [u8; 4] = r.array()?;
        let name_len = r.take(1)?[0] as usize;
        let name = std::str::from_utf8(r.take(name_len)?)
            .map_err(|_| InviteError::Contents("name is not UTF-8"))?
            .to_owned();
        let count = r.take(1)?[0] as usize;
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            let kind = r.take(1)?[0];
            let flags = if version == VERSION_TCP_ONLY {
                KIND_TCP
            } else {
                kind & 0xf0
            };
            if flags == 0 || flags & !(KIND_TCP | KIND_UTP) != 0 {
                return Err(InviteError::Contents("bad address"));
            }
            let family = if version == VERSION_TCP_ONLY {
                kind
            } else {
                kind & 0x0f
            };
            let ip = match family {
                4 => IpAddr::from(r.array::<4>()?),
                6 => IpAddr::from(r.array::<16>()?),
                _ => return Err(InviteError::Contents("bad address")),
            };
            let addr = SocketAddr::new(ip, u16::from_be_bytes(r.array()?));
            if flags & KIND_TCP != 0 {
                addrs.push(Endpoint::tcp(addr));
            }
            if flags & KIND_UTP != 0 {
                addrs.push(Endpoint::utp(addr));
            }
        }
        if !r.0.is_empty() {
            return Err(InviteError::Contents("trailing bytes"));
        }
        Ok(Self {
            peer,
            name,
            addrs,
            token,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], InviteError> {
        if self.0.len() < n {
            return Err(InviteError::Contents("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], InviteError> {
        self.take(N)?
            .try_into()
            .map_err(|_| InviteError::Contents("truncated"))
    }
}

fn checksum(bytes: &[u8]) -> [u8; 4] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut sum = [0u8; 4];
    sum.copy_from_slice(&digest.as_ref()[..4]);
    sum
}

pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust::SecretId;

    fn invite() -> Invite {
        Invite {
            peer: SecretId::generate().peer_id(),
            name: "Zoë".into(),
            addrs: vec![
                "tcp:127.0.0.1:5000".parse().unwrap(),
                "utp:127.0.0.1:5000".parse().unwrap(),
                "utp:[2001:db8::1]:443".parse().unwrap(),
                "tcp:192.0.2.7:80".parse().unwrap(),
            ],
            token: [1, 2, 3, 4],
        }
    }

    #[test]
    fn round_trips_in_every_accepted_spelling() {
        let inv = invite();
        let text = inv.to_string();
        assert!(text.starts_with("crust:"));
        assert_eq!(text.parse::<Invite>().unwrap(), inv);
        assert_eq!(inv.to_qr_text().parse::<Invite>().unwrap(), inv);
        let spaced: String = text
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                if i > 6 && i % 5 == 0 {
                    vec!['-', c]
                } else {
                    vec![c]
                }
            })
            .collect();
        assert_eq!(format!("  {spaced}\n").parse::<Invite>().unwrap(), inv);
    }

    #[test]
    fn every_single_character_typo_is_rejected() {
        let text = invite().to_string();
        let alphabet = "abcdefghijklmnopqrstuvwxyz234567";
        for i in "crust:".len()..text.len() {
            let original = text.as_bytes()[i] as char;
            let replacement = alphabet.chars().find(|&c| c != original).unwrap();
            let mut typo = text.clone();
            typo.replace_range(i..=i, &replacement.to_string());
            assert!(typo.parse::<Invite>().is_err(), "typo at {i} accepted");
        }
        for cut in 1..8 {
            assert_eq!(
                text[..text.len() - cut].parse::<Invite>().unwrap_err(),
                InviteError::Checksum,
                "cut {cut}"
            );
        }
        assert_eq!(
            "tox:abc".parse::<Invite>().unwrap_err(),
            InviteError::Scheme
        );
        assert_eq!(
            "crust:!!".parse::<Invite>().unwrap_err(),
            InviteError::Encoding
        );
    }

    /// A version-1 code (before uTP), built byte by byte as the old
    /// program wrote it.
    fn version_1_code(peer: &PeerId, addrs: &[SocketAddr]) -> String {
        let mut out = vec![1u8];
        out.extend_from_slice(peer.as_bytes());
        out.extend_from_slice(&[9, 9, 9, 9]);
        out.push(3);
        out.extend_from_slice(b"Old");
        out.push(addrs.len() as u8);
        for addr in addrs {
            match addr.ip() {
                IpAddr::V4(ip) => {
                    out.push(4);
                    out.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    out.push(6);
                    out.extend_from_slice(&ip.octets());
                }
            }
            out.extend_from_slice(&addr.port().to_be_bytes());
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum);
        format!(
            "{SCHEME}{}",
            data_encoding::BASE32_NOPAD
                .encode(&out)
                .to_ascii_lowercase()
        )
    }

    #[test]
    fn old_version_1_codes_still_decode_with_tcp_addresses() {
        let peer = SecretId::generate().peer_id();
        let addrs: Vec<SocketAddr> = vec![
            "198.51.100.4:7000".parse().unwrap(),
            "[2001:db8::2]:7001".parse().unwrap(),
        ];
        let parsed: Invite = version_1_code(&peer, &addrs).parse().unwrap();
        assert_eq!(parsed.peer, peer);
        assert_eq!(parsed.name, "Old");
        assert_eq!(parsed.token, [9, 9, 9, 9]);
        assert_eq!(
            parsed.addrs,
            addrs.iter().map(|a| Endpoint::tcp(*a)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_address_serving_both_transports_is_one_entry_and_newer_codes_are_refused() {
        let inv = invite();
        // 3 distinct socket addresses: 1 + 32 + 4 + 1 + 4 ("Zoë") + 1 +
        // (7 + 19 + 7) + 4 checksum bytes.
        assert_eq!(inv.payload().len(), 1 + 32 + 4 + 1 + 4 + 1 + 33 + 4);
        let mut payload = inv.payload();
        payload[0] = VERSION + 1;
        let n = payload.len();
        let sum = checksum(&payload[..n - 4]);
        payload[n - 4..].copy_from_slice(&sum);
        let text = format!(
            "{SCHEME}{}",
            data_encoding::BASE32_NOPAD
                .encode(&payload)
                .to_ascii_lowercase()
        );
        assert_eq!(
            text.parse::<Invite>().unwrap_err(),
            InviteError::Contents("made by a newer version")
        );
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let mut inv = invite();
        inv.name = "é".repeat(100);
        let parsed: Invite = inv.to_string().parse().unwrap();
        assert_eq!(parsed.name, "é".repeat(32));
    }

    #[test]
    fn qr_code_is_square_and_rendered() {
        let inv = invite();
        let m = inv.qr_matrix();
        assert!(m.width >= 21);
        assert_eq!(m.dark.len(), m.width * m.width);
        assert!(m.dark.iter().any(|&d| d) && m.dark.iter().any(|&d| !d));
        let art = inv.qr_unicode();
        assert!(art.lines().count() >= m.width / 2);
        assert!(art.contains('█'));
    }
}
