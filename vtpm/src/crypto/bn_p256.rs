//! The BN_P256 curve (TPM_ECC_BN_P256): the 256-bit Barreto-Naehrig curve of ISO/IEC 15946-5,
//! y² = x³ + 3 over F_p, generator (1, 2) of prime order n, cofactor 1 (parameters: TCG
//! Algorithm Registry, TPM 2.0 Part 4 curve table). TPMs offer it for ECDAA attestation keys and
//! no RustCrypto crate implements it, so the group arithmetic the TPM needs (no pairings) is
//! here, with the same interface as the NIST curves in [`super::ecc`]:
//!
//! * field and scalar arithmetic in crypto-bigint's constant-time Montgomery form;
//! * points in projective coordinates with the complete formulas for a = 0 curves of Renes,
//!   Costello and Batina ("Complete addition formulas for prime order elliptic curves", 2016,
//!   Algorithms 7 and 9): one formula for every pair of inputs, the identity and P + P
//!   included, so no case depends on secret values;
//! * scalar multiplication by double-and-add-always over all 256 bits with constant-time
//!   selection.
//!
//! Known answers (tests below): `tests/fixtures/bn_p256_vectors.txt`, computed with plain
//! Python integers and textbook affine formulas by `tests/fixtures/bn_p256_vectors.py`.

use alloc::vec::Vec;
use crypto_bigint::modular::ConstMontyForm;
use crypto_bigint::{CtEq, CtLt, CtSelect, U256, const_monty_params};
use rand_core::TryCryptoRng;
use zeroize::Zeroizing;

use super::ecc::{Point, pad};
use crate::rc::*;

/// Coordinates and scalars are 32 octets.
const SIZE: usize = 32;

/// The field prime p.
pub const P_HEX: &str = "fffffffffffcf0cd46e5f25eee71a49f0cdc65fb12980a82d3292ddbaed33013";
/// The group order n.
pub const N_HEX: &str = "fffffffffffcf0cd46e5f25eee71a49e0cdc65fb1299921af62d536cd10b500d";

const_monty_params!(FieldPrime, U256, P_HEX, "The BN_P256 field prime p.");
const_monty_params!(GroupOrder, U256, N_HEX, "The BN_P256 group order n.");

/// An element of F_p.
type Fe = ConstMontyForm<FieldPrime, { U256::LIMBS }>;
/// An integer modulo n.
type Scalar = ConstMontyForm<GroupOrder, { U256::LIMBS }>;

const P: U256 = U256::from_be_hex(P_HEX);
const N: U256 = U256::from_be_hex(N_HEX);
/// The curve constant b = 3, and 3b as the formulas use it.
const B: Fe = Fe::new(&U256::from_u8(3));
const B3: Fe = Fe::new(&U256::from_u8(9));

/// A point in projective coordinates: (X : Y : Z) is the affine (X/Z, Y/Z); Z = 0 is the
/// identity.
#[derive(Clone, Copy)]
struct Projective {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Projective {
    const IDENTITY: Projective = Projective { x: Fe::ZERO, y: Fe::ONE, z: Fe::ZERO };
    const GENERATOR: Projective =
        Projective { x: Fe::ONE, y: Fe::new(&U256::from_u8(2)), z: Fe::ONE };

    fn from_affine(x: Fe, y: Fe) -> Projective {
        Projective { x, y, z: Fe::ONE }
    }

    /// P + Q for any P, Q (Renes-Costello-Batina Algorithm 7, a = 0), written with
    /// A = X1X2, B = Y1Y2, C = Z1Z2, D = X1Y2 + X2Y1, E = Y1Z2 + Y2Z1, F = X1Z2 + X2Z1:
    /// X3 = D(B - 3bC) - 3bEF, Y3 = (B + 3bC)(B - 3bC) + 9bAF, Z3 = E(B + 3bC) + 3AD.
    fn add(&self, q: &Projective) -> Projective {
        let a = self.x.mul(&q.x);
        let b = self.y.mul(&q.y);
        let c = self.z.mul(&q.z);
        let d = self.x.add(&self.y).mul(&q.x.add(&q.y)).sub(&a).sub(&b);
        let e = self.y.add(&self.z).mul(&q.y.add(&q.z)).sub(&b).sub(&c);
        let f = self.x.add(&self.z).mul(&q.x.add(&q.z)).sub(&a).sub(&c);
        let a3 = a.double().add(&a);
        let b3c = B3.mul(&c);
        let b3f = B3.mul(&f);
        let plus = b.add(&b3c);
        let minus = b.sub(&b3c);
        Projective {
            x: d.mul(&minus).sub(&e.mul(&b3f)),
            y: plus.mul(&minus).add(&a3.mul(&b3f)),
            z: e.mul(&plus).add(&a3.mul(&d)),
        }
    }

    /// 2P for any P (Algorithm 9, a = 0): with S = Y² and T = 3bZ²,
    /// X3 = 2XY(S - 3T), Y3 = (S - 3T)(S + T) + 8ST, Z3 = 8SYZ.
    fn double(&self) -> Projective {
        let s = self.y.square();
        let t = B3.mul(&self.z.square());
        let s_minus_3t = s.sub(&t.double().add(&t));
        let eight_s = s.double().double().double();
        Projective {
            x: self.x.mul(&self.y).double().mul(&s_minus_3t),
            y: s_minus_3t.mul(&s.add(&t)).add(&eight_s.mul(&t)),
            z: eight_s.mul(&self.y).mul(&self.z),
        }
    }

    /// `self` if `choice` is false, `other` if true, in constant time.
    fn select(&self, other: &Projective, choice: crypto_bigint::Choice) -> Projective {
        Projective {
            x: self.x.ct_select(&other.x, choice),
            y: self.y.ct_select(&other.y, choice),
            z: self.z.ct_select(&other.z, choice),
        }
    }

    /// [k]P: the same doublings, additions and selections whatever the bits of k.
    fn mul(&self, k: &U256) -> Projective {
        let mut acc = Projective::IDENTITY;
        for i in (0..U256::BITS).rev() {
            acc = acc.double();
            let sum = acc.add(self);
            acc = acc.select(&sum, k.bit(i));
        }
        acc
    }

    /// The affine coordinates; `None` for the identity.
    fn to_affine(self) -> Option<(Fe, Fe)> {
        let z_inv = self.z.invert().into_option()?;
        Some((self.x.mul(&z_inv), self.y.mul(&z_inv)))
    }
}

fn to_bytes(v: &U256) -> Vec<u8> {
    v.to_be_bytes().as_slice().to_vec()
}

fn point(p: Projective) -> TpmResult<Point> {
    let (x, y) = p.to_affine().ok_or(TPM_RC_NO_RESULT)?;
    Ok(Point { x: to_bytes(&x.retrieve()), y: to_bytes(&y.retrieve()) })
}

/// A coordinate: at most 32 octets (after leading zeros) and below p.
fn coordinate(v: &[u8]) -> TpmResult<Fe> {
    let v = U256::from_be_slice(&pad(v, SIZE).ok_or(TPM_RC_ECC_POINT)?);
    if !v.ct_lt(&P).to_bool() {
        return Err(TPM_RC_ECC_POINT);
    }
    Ok(Fe::new(&v))
}

/// A point given by its affine coordinates, checked to be on the curve (every such point
/// generates the whole group: the cofactor is 1).
fn public(x: &[u8], y: &[u8]) -> TpmResult<Projective> {
    let (x, y) = (coordinate(x)?, coordinate(y)?);
    let rhs = x.square().mul(&x).add(&B);
    if !y.square().ct_eq(&rhs).to_bool() {
        return Err(TPM_RC_ECC_POINT);
    }
    Ok(Projective::from_affine(x, y))
}

/// A private scalar in [1, n-1], or `None`.
fn scalar_in_range(bytes: &[u8]) -> Option<Zeroizing<U256>> {
    let v = Zeroizing::new(U256::from_be_slice(&pad(bytes, SIZE)?));
    let valid = v.ct_lt(&N).and(v.ct_eq(&U256::ZERO).not());
    valid.to_bool().then_some(v)
}

fn scalar(d: &[u8]) -> TpmResult<Zeroizing<U256>> {
    scalar_in_range(d).ok_or(TPM_RC_KEY)
}

/// An integer (big-endian, any length) reduced modulo n.
fn mod_n(bytes: &[u8]) -> Scalar {
    let base = Scalar::new(&U256::from_u16(256));
    bytes.iter().fold(Scalar::ZERO, |acc, b| acc.mul(&base).add(&Scalar::new(&U256::from_u8(*b))))
}

/// Generates a private scalar and its public point from a byte source: candidates outside
/// [1, n-1] are rejected and redrawn.
pub fn generate(mut draw: impl FnMut(&mut [u8])) -> (Zeroizing<Vec<u8>>, Point) {
    loop {
        let mut bytes = Zeroizing::new(alloc::vec![0u8; SIZE]);
        draw(&mut bytes);
        if let Some(d) = scalar_in_range(&bytes) {
            let q = point(Projective::GENERATOR.mul(&d))
                .expect("a multiple of G by a non-zero scalar below n is not the identity");
            return (bytes, q);
        }
    }
}

/// Checks that `d` is a valid private scalar and returns its public point.
pub fn public_of(d: &[u8]) -> TpmResult<Point> {
    point(Projective::GENERATOR.mul(&*scalar(d)?))
}

/// Checks that (x, y) is on the curve.
pub fn validate(p: &Point) -> TpmResult<()> {
    public(&p.x, &p.y).map(|_| ())
}

/// d * Q, validating Q.
pub fn multiply(d: &[u8], q: &Point) -> TpmResult<Point> {
    let d = scalar(d)?;
    let q = public(&q.x, &q.y)?;
    point(q.mul(&d))
}

/// ECDSA takes the leftmost 256 bits of a longer digest (n has 256 bits), a shorter one as it is.
fn digest_scalar(digest: &[u8]) -> Scalar {
    mod_n(&digest[..digest.len().min(SIZE)])
}

/// x(R) mod n for the r of a signature; `None` for the identity.
fn x_mod_n(r: Projective) -> Option<Scalar> {
    let (x, _) = r.to_affine()?;
    Some(mod_n(&to_bytes(&x.retrieve())))
}

/// ECDSA signature (r, s) of a digest with a nonce k drawn from `rng`.
pub fn sign<R: TryCryptoRng + ?Sized>(
    rng: &mut R,
    d: &[u8],
    digest: &[u8],
) -> TpmResult<(Vec<u8>, Vec<u8>)> {
    let d = Zeroizing::new(Scalar::new(&*scalar(d)?));
    let e = digest_scalar(digest);
    loop {
        let mut k_bytes = Zeroizing::new([0u8; SIZE]);
        rng.try_fill_bytes(&mut k_bytes[..]).map_err(|_| TPM_RC_FAILURE)?;
        let Some(k) = scalar_in_range(&k_bytes[..]) else { continue };
        let r = x_mod_n(Projective::GENERATOR.mul(&k))
            .expect("a multiple of G by a non-zero scalar below n is not the identity");
        let k_inv = Zeroizing::new(
            Scalar::new(&k).invert().into_option().expect("a non-zero scalar mod a prime"),
        );
        let s = k_inv.mul(&e.add(&r.mul(&d)));
        if !r.ct_eq(&Scalar::ZERO).or(s.ct_eq(&Scalar::ZERO)).to_bool() {
            return Ok((to_bytes(&r.retrieve()), to_bytes(&s.retrieve())));
        }
    }
}

/// Checks an ECDSA signature (public values only).
pub fn verify(q: &Point, digest: &[u8], r: &[u8], s: &[u8]) -> bool {
    let Ok(q) = public(&q.x, &q.y) else { return false };
    let (Some(r), Some(s)) = (scalar_in_range(r), scalar_in_range(s)) else { return false };
    let r = Scalar::new(&r);
    let w = Scalar::new(&s).invert().into_option().expect("a non-zero scalar mod a prime");
    let u1 = digest_scalar(digest).mul(&w).retrieve();
    let u2 = r.mul(&w).retrieve();
    let sum = Projective::GENERATOR.mul(&u1).add(&q.mul(&u2));
    x_mod_n(sum).is_some_and(|x| x.ct_eq(&r).to_bool())
}

/// `bytes` (an integer of any length) reduced modulo n; `None` if zero.
pub fn reduce(bytes: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let k = mod_n(bytes);
    (!k.ct_eq(&Scalar::ZERO).to_bool()).then(|| Zeroizing::new(to_bytes(&k.retrieve())))
}

/// ECDAA: s = r + t * d mod n.
pub fn ecdaa_s(d: &[u8], r: &[u8], t: &[u8]) -> TpmResult<Vec<u8>> {
    let d = Zeroizing::new(Scalar::new(&*scalar(d)?));
    let r = Zeroizing::new(Scalar::new(&*scalar(r)?));
    Ok(to_bytes(&r.add(&mod_n(t).mul(&d)).retrieve()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::drbg::KdfaStream;
    use crate::crypto::hash::HashAlg;
    use core::convert::Infallible;

    const VECTORS: &str = include_str!("../../tests/fixtures/bn_p256_vectors.txt");

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn affine(x: &str, y: &str) -> Option<Point> {
        (x != "identity").then(|| Point { x: unhex(x), y: unhex(y) })
    }

    fn projective(p: &Point) -> Projective {
        public(&p.x, &p.y).unwrap()
    }

    fn vectors(kind: &str) -> Vec<Vec<&'static str>> {
        let rows: Vec<Vec<&str>> = VECTORS
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|f| f[0] == kind)
            .map(|f| f[1..].to_vec())
            .collect();
        assert!(!rows.is_empty(), "no {kind} vectors");
        rows
    }

    #[test]
    fn generator_has_order_n() {
        let g = Projective::GENERATOR;
        assert!(g.mul(&N).to_affine().is_none(), "[n]G = O");
        assert!(g.mul(&U256::ZERO).to_affine().is_none(), "[0]G = O");
        let minus_g = point(g.mul(&N.wrapping_sub(&U256::ONE))).unwrap();
        assert_eq!(minus_g.x, unhex(&alloc::format!("{:064x}", 1)));
        assert_eq!(minus_g.y, to_bytes(&P.wrapping_sub(&U256::from_u8(2))));
        assert_eq!(point(g.mul(&N.wrapping_add(&U256::ONE))).unwrap(), point(g).unwrap());
    }

    #[test]
    fn generator_multiples_match_python() {
        for v in vectors("mul_g") {
            let k = U256::from_be_hex(v[0]);
            let got = point(Projective::GENERATOR.mul(&k)).ok();
            assert_eq!(got, affine(v[1], v[2]), "[{}]G", v[0]);
        }
    }

    #[test]
    fn point_multiples_match_python() {
        for v in vectors("mul") {
            let q = affine(v[1], v[2]).unwrap();
            assert_eq!(multiply(&unhex(v[0]), &q).ok(), affine(v[3], v[4]));
        }
    }

    #[test]
    fn complete_addition_and_doubling_match_python() {
        for v in vectors("add") {
            let (a, b) = (affine(v[0], v[1]).unwrap(), affine(v[2], v[3]).unwrap());
            let (pa, pb) = (projective(&a), projective(&b));
            let expected = affine(v[4], v[5]);
            assert_eq!(point(pa.add(&pb)).ok(), expected);
            if a == b {
                assert_eq!(point(pa.double()).ok(), expected);
            }
            // The identity is neutral on either side, and doubles to itself.
            assert_eq!(point(pa.add(&Projective::IDENTITY)).unwrap(), a);
            assert_eq!(point(Projective::IDENTITY.add(&pb)).unwrap(), b);
        }
        assert!(Projective::IDENTITY.double().to_affine().is_none());
        assert!(Projective::IDENTITY.add(&Projective::IDENTITY).to_affine().is_none());
    }

    #[test]
    fn reduction_mod_n_matches_python() {
        for v in vectors("reduce") {
            let expected = (v[1] != "0".repeat(64)).then(|| unhex(v[1]));
            assert_eq!(reduce(&unhex(v[0])).map(|r| r.to_vec()), expected);
        }
    }

    /// Hands out the given bytes (the nonce the signer draws).
    struct FixedRng(Vec<u8>);

    impl rand_core::TryRng for FixedRng {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            let mut bytes = [0; 4];
            self.try_fill_bytes(&mut bytes)?;
            Ok(u32::from_le_bytes(bytes))
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            let mut bytes = [0; 8];
            self.try_fill_bytes(&mut bytes)?;
            Ok(u64::from_le_bytes(bytes))
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            let rest = self.0.split_off(dst.len());
            dst.copy_from_slice(&self.0);
            self.0 = rest;
            Ok(())
        }
    }

    impl TryCryptoRng for FixedRng {}

    #[test]
    fn ecdsa_matches_python_and_verifies() {
        for v in vectors("ecdsa") {
            let (d, k, e) = (unhex(v[0]), unhex(v[1]), unhex(v[2]));
            let (r, s) = sign(&mut FixedRng(k), &d, &e).unwrap();
            assert_eq!((r.clone(), s.clone()), (unhex(v[3]), unhex(v[4])));
            let q = public_of(&d).unwrap();
            assert!(verify(&q, &e, &r, &s));
            let mut bad = e.clone();
            bad[0] ^= 1;
            assert!(!verify(&q, &bad, &r, &s));
            assert!(!verify(&q, &e, &s, &r));
            assert!(!verify(&q, &e, &r, &to_bytes(&N)));
        }
    }

    #[test]
    fn nonces_outside_the_range_are_redrawn() {
        let d = unhex(vectors("ecdsa")[0][0]);
        let mut rng = FixedRng([to_bytes(&N), alloc::vec![0; 32], to_bytes(&U256::ONE)].concat());
        let (r, _) = sign(&mut rng, &d, &[1u8; 32]).unwrap();
        assert_eq!(Scalar::new(&U256::from_be_slice(&r)), Scalar::ONE, "r = x(G) mod n = 1");
    }

    #[test]
    fn ecdh_agrees_and_keys_are_deterministic() {
        let mut s = KdfaStream::new(HashAlg::Sha256, b"s", b"t", alloc::vec![]);
        let (da, qa) = generate(|b| s.fill(b));
        let (db, qb) = generate(|b| s.fill(b));
        assert_eq!(multiply(&da, &qb).unwrap(), multiply(&db, &qa).unwrap());
        assert_eq!(public_of(&da).unwrap(), qa);
        let mut again = KdfaStream::new(HashAlg::Sha256, b"s", b"t", alloc::vec![]);
        assert_eq!(generate(|b| again.fill(b)).1, qa);
    }

    #[test]
    fn invalid_points_and_scalars_are_refused() {
        let g = point(Projective::GENERATOR).unwrap();
        assert_eq!(validate(&g), Ok(()));
        let off = Point { x: g.x.clone(), y: unhex(&alloc::format!("{:064x}", 3)) };
        assert_eq!(validate(&off), Err(TPM_RC_ECC_POINT));
        // x = p + 1 is the generator's x only modulo p.
        let big_x = Point { x: to_bytes(&P.wrapping_add(&U256::ONE)), y: g.y.clone() };
        assert_eq!(validate(&big_x), Err(TPM_RC_ECC_POINT));
        let long = Point { x: [&[1u8][..], &g.x].concat(), y: g.y.clone() };
        assert_eq!(validate(&long), Err(TPM_RC_ECC_POINT));
        // (0, 0) would be the identity's x with any y: not on y² = x³ + 3.
        assert_eq!(validate(&Point { x: alloc::vec![], y: alloc::vec![] }), Err(TPM_RC_ECC_POINT));
        assert_eq!(multiply(&[1], &off), Err(TPM_RC_ECC_POINT));
        for bad in [alloc::vec![0u8], to_bytes(&N), alloc::vec![0xff; 33]] {
            assert_eq!(public_of(&bad), Err(TPM_RC_KEY));
        }
    }
}
