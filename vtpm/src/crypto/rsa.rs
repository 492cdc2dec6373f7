//! RSA on the `rsa` crate: key generation (also from a deterministic stream for primaries),
//! rebuilding a private key from the one prime the TPM stores, OAEP / RSAES / raw encryption
//! and RSASSA / RSAPSS signatures over TPM digests.

use alloc::boxed::Box;
use alloc::vec::Vec;
use rand_core::TryCryptoRng;
use rsa::hazmat::{rsa_decrypt_and_check, rsa_encrypt};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BoxedUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, PrivateKey, Pss, PublicKey};
use zeroize::Zeroizing;

use super::hash::HashAlg;
use crate::rc::*;

pub use rsa::{PrivateKey as RsaPrivateKey, PublicKey as RsaPublicKey};

/// Modulus sizes we implement.
pub fn key_bits_supported(bits: u16) -> bool {
    matches!(bits, 1024 | 2048 | 3072)
}

/// The public exponent a TPMS_RSA_PARMS value means (0 = 65537).
pub fn exponent_value(exponent: u32) -> u32 {
    if exponent == 0 { 65537 } else { exponent }
}

/// Whether key generation may use a TPMS_RSA_PARMS exponent: 0 (65537) or a prime of at
/// least 65537, as the reference implementation requires (TPM_RC_RANGE otherwise).
pub fn exponent_generatable(exponent: u32) -> bool {
    exponent == 0 || (exponent >= 65537 && is_prime_u32(exponent))
}

/// Whether a loaded key's exponent is acceptable: 0 (65537) or at least 7 (the reference's
/// key validation on load; TPM_RC_VALUE otherwise).
pub fn exponent_loadable(exponent: u32) -> bool {
    exponent == 0 || exponent >= 7
}

/// Primality of a 32-bit number by trial division (public values; at most 2^15 divisions).
fn is_prime_u32(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let n = u64::from(n);
    (3..).step_by(2).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

fn uint(bytes: &[u8]) -> BoxedUint {
    BoxedUint::from_be_slice_vartime(bytes)
}

/// Generates a key pair from `rng` (deterministic if `rng` is).
pub fn generate<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    bits: u16,
    exponent: u32,
) -> TpmResult<PrivateKey> {
    PrivateKey::new_with_exp(
        rng,
        usize::from(bits),
        BoxedUint::from(u64::from(exponent_value(exponent))),
    )
    .map_err(|_| TPM_RC_NO_RESULT)
}

/// A public key from modulus and exponent.
pub fn public_key(modulus: &[u8], exponent: u32) -> TpmResult<PublicKey> {
    PublicKey::new_with_size_limits(
        uint(modulus),
        BoxedUint::from(u64::from(exponent_value(exponent))),
        512..=4096,
    )
    .map_err(|_| TPM_RC_KEY)
}

/// Rebuilds the private key from the modulus, exponent and one prime (TPM2B_PRIVATE_KEY_RSA).
pub fn private_from_prime(modulus: &[u8], exponent: u32, prime: &[u8]) -> TpmResult<PrivateKey> {
    let n = uint(modulus);
    let p = uint(prime);
    let p_nz =
        Option::<crypto_bigint::NonZero<BoxedUint>>::from(crypto_bigint::NonZero::new(p.clone()))
            .ok_or(TPM_RC_BINDING)?;
    let (q, rem) = n.div_rem_vartime(&p_nz);
    if !bool::from(rem.is_zero()) {
        return Err(TPM_RC_BINDING);
    }
    let key = PrivateKey::from_p_q(p, q, BoxedUint::from(u64::from(exponent_value(exponent))))
        .map_err(|_| TPM_RC_BINDING)?;
    if modulus_bytes(key.as_public_key()).as_slice() != strip_zeros(modulus) {
        return Err(TPM_RC_BINDING);
    }
    Ok(key)
}

fn strip_zeros(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    &v[start..]
}

/// The modulus, big-endian without leading zeros (its length is the key size in octets).
pub fn modulus_bytes(key: &PublicKey) -> Vec<u8> {
    key.n().to_be_bytes_trimmed_vartime().into_vec()
}

/// Modulus size in octets.
pub fn modulus_len(key: &PublicKey) -> usize {
    key.size()
}

/// The first prime, padded to half the modulus length (the TPM's sensitive area).
pub fn prime_bytes(key: &PrivateKey) -> Zeroizing<Vec<u8>> {
    let half = key.size() / 2;
    let p = Zeroizing::new(key.primes()[0].to_be_bytes_trimmed_vartime());
    let mut out = Zeroizing::new(alloc::vec![0u8; half.saturating_sub(p.len())]);
    out.extend_from_slice(&p);
    out
}

macro_rules! with_digest {
    ($alg:expr, $d:ident => $body:expr) => {
        match $alg {
            HashAlg::Sha1 => {
                type $d = sha1::Sha1;
                $body
            }
            HashAlg::Sha256 => {
                type $d = sha2::Sha256;
                $body
            }
            HashAlg::Sha384 => {
                type $d = sha2::Sha384;
                $body
            }
            HashAlg::Sha512 => {
                type $d = sha2::Sha512;
                $body
            }
        }
    };
}

/// An RSA encryption scheme.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RsaEncScheme {
    Oaep(HashAlg),
    Rsaes,
    /// Raw RSA (TPM_ALG_NULL): the message is the integer, zero-padded to the modulus size.
    Raw,
}

/// Encrypts `msg`; `label` is used by OAEP only.
pub fn encrypt<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    key: &PublicKey,
    scheme: RsaEncScheme,
    label: &[u8],
    msg: &[u8],
) -> TpmResult<Vec<u8>> {
    let k = key.size();
    match scheme {
        RsaEncScheme::Oaep(h) => with_digest!(h, D => {
            let pad = Oaep::<D>::new_with_label(Box::<[u8]>::from(label));
            key.encrypt(rng, pad, msg).map_err(|_| TPM_RC_VALUE)
        }),
        RsaEncScheme::Rsaes => key.encrypt(rng, Pkcs1v15Encrypt, msg).map_err(|_| TPM_RC_VALUE),
        RsaEncScheme::Raw => {
            if msg.len() > k {
                return Err(TPM_RC_VALUE);
            }
            let m = BoxedUint::from_be_slice(msg, key.n().bits_precision())
                .map_err(|_| TPM_RC_VALUE)?;
            if m >= key.n().as_ref() {
                return Err(TPM_RC_VALUE);
            }
            let c = rsa_encrypt(key, &m).map_err(|_| TPM_RC_VALUE)?;
            Ok(left_pad(&c.to_be_bytes_trimmed_vartime(), k))
        }
    }
}

/// Decrypts `ct` (which must be exactly the modulus size).
pub fn decrypt<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    key: &PrivateKey,
    scheme: RsaEncScheme,
    label: &[u8],
    ct: &[u8],
) -> TpmResult<Zeroizing<Vec<u8>>> {
    let k = key.size();
    if ct.len() != k {
        return Err(TPM_RC_SIZE);
    }
    let out = match scheme {
        RsaEncScheme::Oaep(h) => with_digest!(h, D => {
            let pad = Oaep::<D>::new_with_label(Box::<[u8]>::from(label));
            key.decrypt_blinded(rng, pad, ct)
        }),
        RsaEncScheme::Rsaes => key.decrypt_blinded(rng, Pkcs1v15Encrypt, ct),
        RsaEncScheme::Raw => {
            let c =
                BoxedUint::from_be_slice(ct, key.n().bits_precision()).map_err(|_| TPM_RC_VALUE)?;
            if c >= key.n().as_ref() {
                return Err(TPM_RC_VALUE);
            }
            let m = rsa_decrypt_and_check(key, Some(rng), &c).map_err(|_| TPM_RC_VALUE)?;
            Ok(left_pad(&m.to_be_bytes_trimmed_vartime(), k))
        }
    };
    out.map(Zeroizing::new).map_err(|_| TPM_RC_VALUE)
}

fn left_pad(v: &[u8], len: usize) -> Vec<u8> {
    let mut out = alloc::vec![0u8; len.saturating_sub(v.len())];
    out.extend_from_slice(v);
    out
}

/// An RSA signature scheme.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RsaSigScheme {
    Rsassa(HashAlg),
    Rsapss(HashAlg),
}

/// Signs a digest (its length must match the scheme's hash).
pub fn sign<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    key: &PrivateKey,
    scheme: RsaSigScheme,
    digest: &[u8],
) -> TpmResult<Vec<u8>> {
    let k = key.size();
    match scheme {
        RsaSigScheme::Rsassa(h) => {
            if digest.len() != h.size() {
                return Err(TPM_RC_SIZE);
            }
            with_digest!(h, D => key.sign_with_rng(rng, Pkcs1v15Sign::new::<D>(), digest))
                .map_err(|_| TPM_RC_VALUE)
        }
        RsaSigScheme::Rsapss(h) => {
            if digest.len() != h.size() {
                return Err(TPM_RC_SIZE);
            }
            // The TPM uses a salt as long as the digest, or the largest that fits.
            let salt = h.size().min(k.saturating_sub(h.size() + 2));
            with_digest!(h, D => key.sign_with_rng(rng, Pss::<D>::new_with_salt(salt), digest))
                .map_err(|_| TPM_RC_VALUE)
        }
    }
}

/// Verifies a signature over a digest; PSS accepts any salt length.
pub fn verify(key: &PublicKey, scheme: RsaSigScheme, digest: &[u8], sig: &[u8]) -> bool {
    match scheme {
        RsaSigScheme::Rsassa(h) => {
            with_digest!(h, D => key.verify(Pkcs1v15Sign::new::<D>(), digest, sig)).is_ok()
        }
        RsaSigScheme::Rsapss(h) => with_digest!(h, D => {
            let pss = Pss::<D> { blinded: false, digest: <D as digest::Digest>::new(), salt_len: None };
            key.verify(pss, digest, sig).is_ok()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::drbg::KdfaStream;

    #[test]
    fn exponents_as_the_reference_accepts_them() {
        // 65537, 65539, 65551 and 2^32 - 5 are prime; 65541 = 3 * 7 * 3121, 2^32 - 1 = 3 * 5 *
        // 17 * 257 * 65537; 65537 * 65521 needs the longest trial division.
        for e in [0, 65537, 65539, 65551, 0xFFFF_FFFB] {
            assert!(exponent_generatable(e), "{e}");
        }
        for e in [1, 2, 3, 17, 65535, 65536, 65541, 0xFFFF_FFFF, 65537 * 65521] {
            assert!(!exponent_generatable(e), "{e}");
        }
        let primes_below_100 = (0..100).filter(|n| is_prime_u32(*n)).count();
        assert_eq!(primes_below_100, 25);
        assert!(exponent_loadable(0) && exponent_loadable(7) && exponent_loadable(65536));
        assert!(!exponent_loadable(3) && !exponent_loadable(6));
    }

    #[test]
    fn deterministic_generation_and_prime_rebuild() {
        let mut s1 = KdfaStream::new(HashAlg::Sha256, b"seed", b"test", alloc::vec![]);
        let mut s2 = KdfaStream::new(HashAlg::Sha256, b"seed", b"test", alloc::vec![]);
        let k1 = generate(&mut s1, 1024, 0).unwrap();
        let k2 = generate(&mut s2, 1024, 0).unwrap();
        let n = modulus_bytes(k1.as_public_key());
        assert_eq!(n, modulus_bytes(k2.as_public_key()));
        assert_eq!(n.len(), 128);
        let p = prime_bytes(&k1);
        let rebuilt = private_from_prime(&n, 0, &p).unwrap();
        let mut rng = KdfaStream::new(HashAlg::Sha256, b"r", b"r", alloc::vec![]);
        let digest = [9u8; 32];
        let sig = sign(&mut rng, &rebuilt, RsaSigScheme::Rsassa(HashAlg::Sha256), &digest).unwrap();
        assert!(verify(k1.as_public_key(), RsaSigScheme::Rsassa(HashAlg::Sha256), &digest, &sig));
        // A wrong prime is a binding error.
        let mut bad = p.to_vec();
        bad[10] ^= 1;
        assert_eq!(private_from_prime(&n, 0, &bad).err(), Some(TPM_RC_BINDING));
        // OAEP, PSS and raw round trips.
        let ct = encrypt(
            &mut rng,
            k1.as_public_key(),
            RsaEncScheme::Oaep(HashAlg::Sha256),
            b"L\0",
            b"hi",
        )
        .unwrap();
        let pt =
            decrypt(&mut rng, &rebuilt, RsaEncScheme::Oaep(HashAlg::Sha256), b"L\0", &ct).unwrap();
        assert_eq!(&pt[..], b"hi");
        let sig = sign(&mut rng, &rebuilt, RsaSigScheme::Rsapss(HashAlg::Sha256), &digest).unwrap();
        assert!(verify(k1.as_public_key(), RsaSigScheme::Rsapss(HashAlg::Sha256), &digest, &sig));
        let ct = encrypt(&mut rng, k1.as_public_key(), RsaEncScheme::Raw, b"", &[5u8; 20]).unwrap();
        let pt = decrypt(&mut rng, &rebuilt, RsaEncScheme::Raw, b"", &ct).unwrap();
        assert_eq!(pt[108..], [5u8; 20]);
    }
}
