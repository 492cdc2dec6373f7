//! ECC on NIST P-256 and P-384 (p256/p384/ecdsa crates) and BN_P256 ([`super::bn_p256`]): key
//! generation (also deterministic for primaries), point validation, point multiplication (ECDH,
//! ECDH_ZGen), ECDSA over TPM digests and the ECDAA scalar arithmetic. Coordinates and scalars
//! are big-endian, padded to the curve's field size.

use alloc::vec::Vec;
use rand_core::TryCryptoRng;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::rc::*;

/// A curve the TPM implements.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Curve {
    P256,
    P384,
    BnP256,
}

impl Curve {
    pub fn from_id(id: u16) -> Option<Curve> {
        match id {
            TPM_ECC_NIST_P256 => Some(Curve::P256),
            TPM_ECC_NIST_P384 => Some(Curve::P384),
            TPM_ECC_BN_P256 => Some(Curve::BnP256),
            _ => None,
        }
    }

    pub fn id(self) -> u16 {
        match self {
            Curve::P256 => TPM_ECC_NIST_P256,
            Curve::P384 => TPM_ECC_NIST_P384,
            Curve::BnP256 => TPM_ECC_BN_P256,
        }
    }

    /// Field (and order) size in octets.
    pub fn size(self) -> usize {
        match self {
            Curve::P256 | Curve::BnP256 => 32,
            Curve::P384 => 48,
        }
    }

    pub fn key_bits(self) -> u16 {
        match self {
            Curve::P256 | Curve::BnP256 => 256,
            Curve::P384 => 384,
        }
    }
}

/// An affine point (x, y), each padded to the field size.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Point {
    pub x: Vec<u8>,
    pub y: Vec<u8>,
}

/// Left-pads `v` to `len` octets; `None` if it is longer (after dropping leading zeros).
pub fn pad(v: &[u8], len: usize) -> Option<Vec<u8>> {
    let start = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let v = &v[start..];
    if v.len() > len {
        return None;
    }
    let mut out = alloc::vec![0u8; len - v.len()];
    out.extend_from_slice(v);
    Some(out)
}

macro_rules! curve_ops {
    ($name:ident, $c:ident) => {
        mod $name {
            use super::*;
            use $c::ecdsa::signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
            use $c::ecdsa::{Signature, SigningKey, VerifyingKey};
            use $c::elliptic_curve::sec1::ToSec1Point;
            use $c::elliptic_curve::group::Group;
            use $c::{AffinePoint, FieldBytes, NonZeroScalar, ProjectivePoint, PublicKey, Scalar};

            const SIZE: usize = core::mem::size_of::<FieldBytes>();

            fn field(v: &[u8]) -> TpmResult<FieldBytes> {
                let v = pad(v, SIZE).ok_or(TPM_RC_SIZE)?;
                Ok(FieldBytes::try_from(&v[..]).expect("padded to the field size"))
            }

            pub fn scalar(d: &[u8]) -> TpmResult<NonZeroScalar> {
                Option::from(NonZeroScalar::from_repr(field(d)?)).ok_or(TPM_RC_KEY)
            }

            pub fn public(x: &[u8], y: &[u8]) -> TpmResult<PublicKey> {
                let x = pad(x, SIZE).ok_or(TPM_RC_ECC_POINT)?;
                let y = pad(y, SIZE).ok_or(TPM_RC_ECC_POINT)?;
                let mut sec1 = alloc::vec![4u8];
                sec1.extend_from_slice(&x);
                sec1.extend_from_slice(&y);
                PublicKey::from_sec1_bytes(&sec1).map_err(|_| TPM_RC_ECC_POINT)
            }

            pub fn validate(p: &Point) -> TpmResult<()> {
                public(&p.x, &p.y).map(|_| ())
            }

            fn point(p: &AffinePoint) -> TpmResult<Point> {
                let enc = p.to_sec1_point(false);
                match (enc.x(), enc.y()) {
                    (Some(x), Some(y)) => Ok(Point { x: x.to_vec(), y: y.to_vec() }),
                    _ => Err(TPM_RC_NO_RESULT),
                }
            }

            pub fn generate(mut draw: impl FnMut(&mut [u8])) -> (Zeroizing<Vec<u8>>, Point) {
                loop {
                    let mut bytes = Zeroizing::new([0u8; SIZE]);
                    draw(&mut bytes[..]);
                    let fb = FieldBytes::try_from(&bytes[..]).expect("field size");
                    if let Some(d) = Option::<NonZeroScalar>::from(NonZeroScalar::from_repr(fb)) {
                        let q = ProjectivePoint::mul_by_generator(&*d).to_affine();
                        let p = point(&q).expect("a non-zero multiple of G is not the identity");
                        return (Zeroizing::new(bytes.to_vec()), p);
                    }
                }
            }

            pub fn public_of(d: &[u8]) -> TpmResult<Point> {
                let d = scalar(d)?;
                point(&ProjectivePoint::mul_by_generator(&*d).to_affine())
            }

            pub fn multiply(d: &[u8], q: &Point) -> TpmResult<Point> {
                let d = scalar(d)?;
                let q = public(&q.x, &q.y)?;
                let r = (q.to_projective() * *d).to_affine();
                point(&r).map_err(|_| TPM_RC_NO_RESULT)
            }

            pub fn sign<R: TryCryptoRng + ?Sized>(
                rng: &mut R,
                d: &[u8],
                digest: &[u8],
            ) -> TpmResult<(Vec<u8>, Vec<u8>)> {
                let key = SigningKey::from(scalar(d)?);
                let digest = prehash(digest);
                let sig: Signature = key
                    .sign_prehash_with_rng(rng, &digest)
                    .map_err(|_| TPM_RC_VALUE)?;
                let (r, s) = sig.split_bytes();
                Ok((r.to_vec(), s.to_vec()))
            }

            pub fn verify(q: &Point, digest: &[u8], r: &[u8], s: &[u8]) -> bool {
                let Ok(key) = public(&q.x, &q.y) else { return false };
                let (Ok(r), Ok(s)) = (field(r), field(s)) else { return false };
                let Ok(sig) = Signature::from_scalars(r, s) else { return false };
                VerifyingKey::from(key).verify_prehash(&prehash(digest), &sig).is_ok()
            }

            /// An integer (big-endian, any length) reduced modulo the group order.
            fn mod_n(bytes: &[u8]) -> Scalar {
                let base = Scalar::from(256u64);
                bytes.iter().fold(Scalar::from(0u64), |acc, b| acc * base + Scalar::from(u64::from(*b)))
            }

            /// A non-zero scalar from an integer reduced modulo n (padded field bytes).
            pub fn reduce(bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
                let k = mod_n(bytes);
                if k == Scalar::from(0u64) {
                    return None;
                }
                Some(Zeroizing::new(k.to_bytes().to_vec()))
            }

            /// ECDAA: s = r + t * d mod n.
            pub fn ecdaa_s(d: &[u8], r: &[u8], t: &[u8]) -> TpmResult<Vec<u8>> {
                let d = scalar(d)?;
                let r = scalar(r)?;
                let s = *r + mod_n(t) * *d;
                Ok(s.to_bytes().to_vec())
            }

            /// ECDSA uses the leftmost bits of a longer digest; a shorter one is taken as an
            /// integer, which left-padding with zeros preserves.
            fn prehash(digest: &[u8]) -> Vec<u8> {
                if digest.len() >= SIZE {
                    digest.to_vec()
                } else {
                    let mut v = alloc::vec![0u8; SIZE - digest.len()];
                    v.extend_from_slice(digest);
                    v
                }
            }
        }
    };
}

curve_ops!(p256_ops, p256);
curve_ops!(p384_ops, p384);

macro_rules! dispatch {
    ($curve:expr, $m:ident => $body:expr) => {
        match $curve {
            Curve::P256 => {
                use p256_ops as $m;
                $body
            }
            Curve::P384 => {
                use p384_ops as $m;
                $body
            }
            Curve::BnP256 => {
                use super::bn_p256 as $m;
                $body
            }
        }
    };
}

/// Generates a private scalar and its public point from a byte source (deterministic if the
/// source is): candidates outside [1, n-1] are rejected and redrawn.
pub fn generate(curve: Curve, draw: impl FnMut(&mut [u8])) -> (Zeroizing<Vec<u8>>, Point) {
    dispatch!(curve, m => m::generate(draw))
}

/// Checks that `d` is a valid private scalar and returns its public point.
pub fn public_of(curve: Curve, d: &[u8]) -> TpmResult<Point> {
    dispatch!(curve, m => m::public_of(d))
}

/// Checks that (x, y) is on the curve.
pub fn validate_point(curve: Curve, p: &Point) -> TpmResult<()> {
    dispatch!(curve, m => m::validate(p))
}

/// d * Q, validating Q.
pub fn multiply(curve: Curve, d: &[u8], q: &Point) -> TpmResult<Point> {
    dispatch!(curve, m => m::multiply(d, q))
}

/// ECDSA signature (r, s) of a digest with a hedged nonce.
pub fn sign<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    curve: Curve,
    d: &[u8],
    digest: &[u8],
) -> TpmResult<(Vec<u8>, Vec<u8>)> {
    dispatch!(curve, m => m::sign(rng, d, digest))
}

pub fn verify(curve: Curve, q: &Point, digest: &[u8], r: &[u8], s: &[u8]) -> bool {
    dispatch!(curve, m => m::verify(q, digest, r, s))
}

/// `bytes` (an integer of any length) reduced modulo the group order; `None` if zero.
pub fn reduce(curve: Curve, bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    dispatch!(curve, m => m::reduce(bytes))
}

/// The ECDAA signature value s = r + t * d mod n.
pub fn ecdaa_s(curve: Curve, d: &[u8], r: &[u8], t: &[u8]) -> TpmResult<Vec<u8>> {
    dispatch!(curve, m => m::ecdaa_s(d, r, t))
}

/// `bytes` (an integer) reduced modulo the field prime p (public values only: variable time).
pub fn mod_p(curve: Curve, bytes: &[u8]) -> Vec<u8> {
    let p_hex = parameters(curve)[0];
    let p: Vec<u8> = (0..p_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&p_hex[i..i + 2], 16).expect("constant hex"))
        .collect();
    let p = crypto_bigint::BoxedUint::from_be_slice_vartime(&p);
    let p = crypto_bigint::NonZero::new(p).expect("the field prime is not zero");
    let v = crypto_bigint::BoxedUint::from_be_slice_vartime(bytes).rem_vartime(&p);
    pad(&v.to_be_bytes_trimmed_vartime(), curve.size()).expect("smaller than p")
}

/// Curve parameters for TPM2_ECC_Parameters: (p, a, b, gX, gY, n, h). For BN_P256 the octet
/// strings are the ones libtpms answers (a as one octet, b and G padded to 32 octets).
pub fn parameters(curve: Curve) -> [&'static str; 7] {
    match curve {
        Curve::BnP256 => [
            super::bn_p256::P_HEX,
            "00",
            "0000000000000000000000000000000000000000000000000000000000000003",
            "0000000000000000000000000000000000000000000000000000000000000001",
            "0000000000000000000000000000000000000000000000000000000000000002",
            super::bn_p256::N_HEX,
            "01",
        ],
        Curve::P256 => [
            "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
            "ffffffff00000001000000000000000000000000fffffffffffffffffffffffc",
            "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
            "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
            "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
            "01",
        ],
        Curve::P384 => [
            "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff",
            "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000fffffffc",
            "b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef",
            "aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7",
            "3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f",
            "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
            "01",
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::drbg::KdfaStream;
    use crate::crypto::hash::HashAlg;

    #[test]
    fn ecdh_agrees_and_ecdsa_verifies() {
        for curve in [Curve::P256, Curve::P384] {
            let mut s = KdfaStream::new(HashAlg::Sha256, b"s", b"t", alloc::vec![]);
            let (da, qa) = generate(curve, |b| s.fill(b));
            let (db, qb) = generate(curve, |b| s.fill(b));
            assert_eq!(multiply(curve, &da, &qb).unwrap(), multiply(curve, &db, &qa).unwrap());
            assert_eq!(public_of(curve, &da).unwrap(), qa);
            let digest = [7u8; 32];
            let (r, sig_s) = sign(&mut s, curve, &da, &digest).unwrap();
            assert!(verify(curve, &qa, &digest, &r, &sig_s));
            assert!(!verify(curve, &qb, &digest, &r, &sig_s));
            // SHA-1 sized digests work too (left-padded integer).
            let (r, sig_s) = sign(&mut s, curve, &da, &[1u8; 20]).unwrap();
            assert!(verify(curve, &qa, &[1u8; 20], &r, &sig_s));
            let mut off = qa.clone();
            off.y[5] ^= 1;
            assert_eq!(validate_point(curve, &off), Err(TPM_RC_ECC_POINT));
        }
    }

    #[test]
    fn generator_matches_published_parameters() {
        let g = public_of(Curve::P256, &[1]).unwrap();
        assert_eq!(hex(&g.x), parameters(Curve::P256)[3]);
        assert_eq!(hex(&g.y), parameters(Curve::P256)[4]);
        let g = public_of(Curve::P384, &[1]).unwrap();
        assert_eq!(hex(&g.x), parameters(Curve::P384)[3]);
    }

    fn hex(v: &[u8]) -> alloc::string::String {
        v.iter().map(|b| alloc::format!("{b:02x}")).collect()
    }
}
