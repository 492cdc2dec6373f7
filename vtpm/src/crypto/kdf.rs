//! The TPM key derivation functions of Part 1 §11.4.10: KDFa (SP800-108 counter mode with
//! HMAC) and KDFe (SP800-56A concatenation KDF). MGF1 (RFC 8017) is the `rsa` crate's, inside
//! its OAEP and PSS.

use alloc::vec::Vec;
use zeroize::Zeroizing;

use super::hash::{HashAlg, hash, hmac};

/// The label as hashed: a terminating 0x00 is appended unless the label already ends in one.
fn label_bytes(label: &[u8]) -> (&[u8], &'static [u8]) {
    if label.last() == Some(&0) { (label, &[]) } else { (label, &[0]) }
}

/// Truncates to `bits` and masks the excess high bits of the first octet.
fn truncate(mut out: Zeroizing<Vec<u8>>, bits: u32) -> Zeroizing<Vec<u8>> {
    let bytes = bits.div_ceil(8) as usize;
    out.truncate(bytes);
    if !bits.is_multiple_of(8) {
        out[0] &= 0xFF >> (8 - bits % 8);
    }
    out
}

/// KDFa(hash, key, label, contextU, contextV, bits).
pub fn kdfa(
    alg: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let bytes = bits.div_ceil(8) as usize;
    let (label, nul) = label_bytes(label);
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + alg.size()));
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let block = Zeroizing::new(hmac(
            alg,
            key,
            &[&counter.to_be_bytes(), label, nul, context_u, context_v, &bits.to_be_bytes()],
        ));
        out.extend_from_slice(&block);
        counter += 1;
    }
    truncate(out, bits)
}

/// KDFe(hash, Z, label, partyUInfo, partyVInfo, bits).
pub fn kdfe(
    alg: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Zeroizing<Vec<u8>> {
    let bytes = bits.div_ceil(8) as usize;
    let (label, nul) = label_bytes(label);
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + alg.size()));
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let block =
            Zeroizing::new(hash(alg, &[&counter.to_be_bytes(), z, label, nul, party_u, party_v]));
        out.extend_from_slice(&block);
        counter += 1;
    }
    truncate(out, bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    // Known answers of tpm.md §4 (cross-checked there against generic SP800-108 and
    // SP800-56A implementations).
    #[test]
    fn kdfa_known_answer() {
        let out = kdfa(HashAlg::Sha256, b"key-material", b"ATH", &[1; 32], &[2; 32], 384);
        assert_eq!(
            *out,
            hex("38ac39596de6ef55c35a66fd80b860c8f556985957d72cbdbfc4c640559bbeff\
                 75940ee4d725ea3a7cb25d8c726edf58")
        );
        // A label that already ends in NUL gets no second one.
        let with_nul = kdfa(HashAlg::Sha256, b"key-material", b"ATH\0", &[1; 32], &[2; 32], 384);
        assert_eq!(out, with_nul);
    }

    #[test]
    fn kdfe_known_answer() {
        let out = kdfe(HashAlg::Sha256, &[3; 32], b"SECRET", &[4; 32], &[5; 32], 256);
        assert_eq!(*out, hex("d4f962b1effb043a5d1789fa55fd5301b31f0645202c5c1b1a2104eebdebe23a"));
    }

    #[test]
    fn kdfa_masks_partial_octet() {
        let full = kdfa(HashAlg::Sha256, b"k", b"L", b"", b"", 16);
        let part = kdfa(HashAlg::Sha256, b"k", b"L", b"", b"", 12);
        assert_eq!(part.len(), 2);
        assert_eq!(part[0] & 0xF0, 0);
        // The bit count is an input of every block, so the values differ beyond masking.
        assert_ne!(full[1..], part[1..]);
    }
}
