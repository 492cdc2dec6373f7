//! Keys and policies against known values: the TCG EK templates give the standard EK shape,
//! the EK policy is PolicySecret(TPM_RH_ENDORSEMENT), primaries are re-derivable, contexts
//! round-trip, and hostile command bytes never break the engine.

mod common;
use common::*;

const EK_POLICY: &str = "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa";

/// The TCG EK Credential Profile template L-1 (RSA 2048) as a TPMT_PUBLIC.
fn ek_rsa_template() -> Vec<u8> {
    let mut t =
        hex(&format!("0001 000b 000300b2 0020 {EK_POLICY} 0006 0080 0043 0010 0800 00000000 0100"));
    t.extend_from_slice(&[0u8; 256]);
    t
}

/// Template L-2 (ECC NIST P-256).
fn ek_ecc_template() -> Vec<u8> {
    let mut t =
        hex(&format!("0023 000b 000300b2 0020 {EK_POLICY} 0006 0080 0043 0010 0003 0010 0020"));
    t.extend_from_slice(&[0u8; 32]);
    t.extend_from_slice(&[0, 32]);
    t.extend_from_slice(&[0u8; 32]);
    t
}

fn tpm2b(v: &[u8]) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

/// CreatePrimary(hierarchy, template) with empty auth; returns (handle, outPublic).
fn create_primary(tpm: &mut vtpm::Tpm, hierarchy: u32, template: &[u8]) -> (u32, Vec<u8>) {
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("0004 0000 0000")); // inSensitive: empty auth, empty data
    rest.extend_from_slice(&tpm2b(template));
    rest.extend_from_slice(&hex("0000 00000000")); // outsideInfo, creationPCR
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x131, &[hierarchy], &rest));
    assert_eq!(rc(&rsp), 0, "CreatePrimary failed: {rsp:02x?}");
    let handle = u32::from_be_bytes(rsp[10..14].try_into().unwrap());
    let size = u16::from_be_bytes(rsp[18..20].try_into().unwrap()) as usize;
    (handle, rsp[20..20 + size].to_vec())
}

fn flush(tpm: &mut vtpm::Tpm, h: u32) {
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x165, &[], &h.to_be_bytes()))), 0);
}

#[test]
fn ek_templates_give_standard_eks_and_are_rederivable() {
    let mut tpm = started();
    for template in [ek_rsa_template(), ek_ecc_template()] {
        let (h, public) = create_primary(&mut tpm, 0x4000_000B, &template);
        // Everything but the unique field is the template; unique is the key.
        let unique_at = template.len() - if template[1] == 1 { 258 } else { 68 };
        assert_eq!(public[..unique_at], template[..unique_at]);
        assert_eq!(public.len(), template.len());
        assert!(public[unique_at + 2..].iter().any(|&b| b != 0));
        flush(&mut tpm, h);
        // Same seed and template: the same key.
        let (h2, again) = create_primary(&mut tpm, 0x4000_000B, &template);
        assert_eq!(again, public);
        flush(&mut tpm, h2);
        // Another hierarchy (another seed): another key.
        let (h3, other) = create_primary(&mut tpm, 0x4000_0001, &template);
        assert_ne!(other, public);
        flush(&mut tpm, h3);
    }
}

#[test]
fn ek_policy_is_policy_secret_endorsement() {
    let mut tpm = started();
    // StartAuthSession(NULL, NULL, nonce 16, no salt, TRIAL, NULL sym, SHA-256).
    let mut p = tpm2b(&[7u8; 16]);
    p.extend_from_slice(&hex("0000 03 0010 000b"));
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x176, &[0x4000_0007, 0x4000_0007], &p));
    assert_eq!(rc(&rsp), 0);
    let session = u32::from_be_bytes(rsp[10..14].try_into().unwrap());
    // PolicySecret(TPM_RH_ENDORSEMENT, session, nonce=empty, cpHash=empty, ref=empty, 0).
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("0000 0000 0000 00000000"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x151, &[0x4000_000B, session], &rest));
    assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x189, &[session], &[]));
    assert_eq!(rsp[10..], tpm2b(&hex(EK_POLICY))[..]);
}

#[test]
fn context_save_load_round_trip() {
    let mut tpm = started();
    let (h, public) = create_primary(&mut tpm, 0x4000_0001, &ek_ecc_template());
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x162, &[h], &[]));
    assert_eq!(rc(&rsp), 0);
    let context = rsp[10..].to_vec();
    flush(&mut tpm, h);
    // Another client loads it and reads the same public area.
    let other = vtpm::ClientId(2);
    let rsp = tpm.execute(other, 0, &cmd(0x8001, 0x161, &[], &context));
    assert_eq!(rc(&rsp), 0);
    let h2 = u32::from_be_bytes(rsp[10..14].try_into().unwrap());
    let rsp = tpm.execute(other, 0, &cmd(0x8001, 0x173, &[h2], &[]));
    assert_eq!(rsp[12..12 + public.len()], public[..]);
    // The first client does not see the second client's object.
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x173, &[h2], &[]))), 0x910);
    // A tampered context fails its integrity check.
    let mut bad = context.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x161, &[], &bad))), 0x1DF);
    tpm.client_gone(other);
    assert_eq!(rc(&tpm.execute(other, 0, &cmd(0x8001, 0x173, &[h2], &[]))), 0x910);
}

/// A small deterministic PRNG for mutation testing.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn mutated_commands_always_get_well_formed_responses() {
    let mut tpm = started();
    let (key, _) = create_primary(&mut tpm, 0x4000_0001, &ek_ecc_template());
    let mut seeds: Vec<Vec<u8>> = vec![
        cmd(0x8001, 0x17B, &[], &[0, 8]),
        cmd(0x8001, 0x17A, &[], &hex("00000006 00000100 00000040")),
        cmd(0x8001, 0x17E, &[], &hex("00000002 000b 03 ffffff 0004 03 010000")),
        cmd(0x8001, 0x173, &[key], &[]),
        cmd(0x8001, 0x162, &[key], &[]),
    ];
    let mut create = pw_auth(b"");
    create.extend_from_slice(&hex("0004 0000 0000"));
    create.extend_from_slice(&tpm2b(&ek_rsa_template()));
    create.extend_from_slice(&hex("0000 00000000"));
    seeds.push(cmd(0x8002, 0x153, &[key], &create));
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for i in 0..3000 {
        let mut c = seeds[i % seeds.len()].clone();
        let flips = 1 + rng.next() % 4;
        for _ in 0..flips {
            let at = (rng.next() as usize) % c.len();
            c[at] = rng.next() as u8;
        }
        if rng.next().is_multiple_of(5) {
            let cut = (rng.next() as usize) % c.len();
            c.truncate(cut);
        }
        let rsp = tpm.execute(C, (rng.next() % 5) as u8, &c);
        assert!(rsp.len() >= 10);
        assert_eq!(u32::from_be_bytes(rsp[2..6].try_into().unwrap()) as usize, rsp.len());
    }
}

/// Starts a policy session (SHA-256); returns (handle, nonceTPM).
fn policy_session(tpm: &mut vtpm::Tpm) -> (u32, Vec<u8>) {
    let mut p = tpm2b(&[7u8; 16]);
    p.extend_from_slice(&hex("0000 01 0010 000b"));
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x176, &[0x4000_0007, 0x4000_0007], &p));
    assert_eq!(rc(&rsp), 0);
    (u32::from_be_bytes(rsp[10..14].try_into().unwrap()), rsp[16..48].to_vec())
}

#[test]
fn policy_ticket_replays_policy_secret() {
    let mut tpm = started();
    let (s1, nonce) = policy_session(&mut tpm);
    // PolicySecret(owner) with expiration -60 s: returns a timeout and a ticket.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&tpm2b(&nonce));
    rest.extend_from_slice(&hex("0000 0000"));
    rest.extend_from_slice(&(-60i32).to_be_bytes());
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x151, &[0x4000_0001, s1], &rest));
    assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
    let size = u32::from_be_bytes(rsp[10..14].try_into().unwrap()) as usize;
    let params = &rsp[14..14 + size];
    assert_eq!(params[..2], [0, 8]);
    let timeout = params[2..10].to_vec();
    let ticket = params[10..].to_vec();
    assert_eq!(ticket[..6], hex("8023 40000001"));
    let digest1 = tpm.execute(C, 0, &cmd(0x8001, 0x189, &[s1], &[]))[10..].to_vec();
    // PolicyTicket in a new session gives the same policy digest.
    let (s2, _) = policy_session(&mut tpm);
    let mut p = tpm2b(&timeout);
    p.extend_from_slice(&hex("0000 0000"));
    p.extend_from_slice(&tpm2b(&hex("40000001")));
    p.extend_from_slice(&ticket);
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x172, &[s2], &p));
    assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
    assert_eq!(tpm.execute(C, 0, &cmd(0x8001, 0x189, &[s2], &[]))[10..], digest1[..]);
    // A forged ticket is refused.
    let mut forged = p.clone();
    let n = forged.len();
    forged[n - 1] ^= 1;
    let (s3, _) = policy_session(&mut tpm);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x172, &[s3], &forged))), 0x5E0);
}

#[test]
fn ecdaa_commit_and_sign_satisfy_the_signature_equation() {
    use p256::elliptic_curve::ops::Reduce;
    use p256::elliptic_curve::sec1::{FromSec1Point, ToSec1Point};
    use p256::{AffinePoint, ProjectivePoint, Scalar};
    let mut tpm = started();
    let template = hex("0023 000b 00040072 0000 0010 001a 000b 0000 0003 0010 0000 0000");
    let (key, public) = create_primary(&mut tpm, 0x4000_0001, &template);
    // Commit with empty P1, s2, y2: E = [r]G.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("0000 0000 0000"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x18B, &[key], &rest));
    assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
    let p = &rsp[14..];
    assert_eq!(p[..4], [0, 0, 0, 0], "K and L are empty");
    let e = &p[4..4 + 2 + 68];
    let count = u16::from_be_bytes([p[4 + 70], p[4 + 71]]);
    let point = |x: &[u8], y: &[u8]| {
        let mut sec1 = vec![4u8];
        sec1.extend_from_slice(x);
        sec1.extend_from_slice(y);
        let enc = p256::Sec1Point::from_bytes(&sec1).unwrap();
        ProjectivePoint::from(AffinePoint::from_sec1_point(&enc).unwrap())
    };
    let e_point = point(&e[4..36], &e[38..70]);
    let q = point(&public[public.len() - 66..public.len() - 34], &public[public.len() - 32..]);
    // Sign(digest, ECDAA sha256 count) with a NULL-hierarchy hash ticket.
    let digest = [0x42u8; 32];
    let (sign, rsp) = ecdaa_sign(&mut tpm, key, count, &digest);
    let sig = &rsp[14..];
    let nonce_k = &sig[6..38];
    let s = &sig[40..72];
    // [s]G == E + [H(nonceK || digest)]Q.
    use sha2::Digest;
    let t = sha2::Sha256::new().chain_update(nonce_k).chain_update(digest).finalize();
    let t = <Scalar as Reduce<p256::FieldBytes>>::reduce(&t);
    let s = <Scalar as Reduce<p256::FieldBytes>>::reduce(&p256::FieldBytes::try_from(s).unwrap());
    let lhs = (ProjectivePoint::GENERATOR * s).to_affine().to_sec1_point(false);
    let rhs = (e_point + q * t).to_affine().to_sec1_point(false);
    assert_eq!(lhs, rhs);
    // A commit is used once.
    assert_eq!(rc(&tpm.execute(C, 0, &sign)), 0x2C4);
}

/// Sign(`digest`, ECDAA SHA-256 with commit `count`) by `key`, with a
/// NULL-hierarchy hash ticket; returns the command (to replay) and the
/// response, checked to succeed with an ECDAA signature.
fn ecdaa_sign(tpm: &mut vtpm::Tpm, key: u32, count: u16, digest: &[u8; 32]) -> (Vec<u8>, Vec<u8>) {
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&tpm2b(digest));
    rest.extend_from_slice(&hex("001a 000b"));
    rest.extend_from_slice(&count.to_be_bytes());
    rest.extend_from_slice(&hex("8024 40000007 0000"));
    let sign = cmd(0x8002, 0x15D, &[key], &rest);
    let rsp = tpm.execute(C, 0, &sign);
    assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
    assert_eq!(rsp[14..18], hex("001a 000b")[..]);
    (sign, rsp)
}

/// An ECDAA signing key template on BN_P256 (as tss-esapi's create_ak_2 makes one).
fn bn_ecdaa_template(attributes: &str) -> Vec<u8> {
    hex(&format!("0023 000b {attributes} 0000 0010 001a 000b 0000 0010 0010 0000 0000"))
}

#[test]
fn bn_p256_primaries_are_on_the_curve_and_rederivable() {
    use vtpm::crypto::ecc::{Curve, Point, validate_point};
    let mut tpm = started();
    let template = bn_ecdaa_template("00040072");
    let (h1, public) = create_primary(&mut tpm, 0x4000_0001, &template);
    let (h2, again) = create_primary(&mut tpm, 0x4000_0001, &template);
    assert_eq!(public, again);
    let n = public.len();
    assert_eq!(public[..n - 68], template[..template.len() - 4]);
    assert_eq!([public[n - 68], public[n - 67], public[n - 34], public[n - 33]], [0, 32, 0, 32]);
    let q = Point { x: public[n - 66..n - 34].to_vec(), y: public[n - 32..].to_vec() };
    assert_eq!(validate_point(Curve::BnP256, &q), Ok(()));
    flush(&mut tpm, h1);
    flush(&mut tpm, h2);
}

#[test]
fn bn_p256_ecdaa_signature_reveals_the_commit_with_the_key() {
    use crypto_bigint::{NonZero, U256};
    use sha2::Digest;
    use vtpm::crypto::ecc::{Curve, public_of};
    let n = NonZero::new(U256::from_be_hex(vtpm::crypto::bn_p256::N_HEX)).unwrap();
    let d = U256::from_be_hex("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    let d_bytes = d.to_be_bytes().as_slice().to_vec();
    let q = public_of(Curve::BnP256, &d_bytes).unwrap();
    let mut tpm = started();
    // LoadExternal(sensitive with d, public sign|userWithAuth with Q, TPM_RH_NULL).
    let mut sensitive = hex("0023 0000 0000");
    sensitive.extend_from_slice(&tpm2b(&d_bytes));
    let mut public = bn_ecdaa_template("00040040");
    public.truncate(public.len() - 4);
    public.extend_from_slice(&tpm2b(&q.x));
    public.extend_from_slice(&tpm2b(&q.y));
    let mut rest = tpm2b(&sensitive);
    rest.extend_from_slice(&tpm2b(&public));
    rest.extend_from_slice(&hex("40000007"));
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x167, &[], &rest));
    assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
    let key = u32::from_be_bytes(rsp[10..14].try_into().unwrap());
    // Commit with empty P1, s2, y2: E = [r]G.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("0000 0000 0000"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x18B, &[key], &rest));
    assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
    let p = &rsp[14..];
    assert_eq!(p[..4], [0, 0, 0, 0], "K and L are empty");
    let (e_x, e_y) = (&p[8..40], &p[42..74]);
    let count = u16::from_be_bytes([p[74], p[75]]);
    // Sign(digest, ECDAA sha256 count), no ticket needed (unrestricted key).
    let digest = [0x5au8; 32];
    let (sign, rsp) = ecdaa_sign(&mut tpm, key, count, &digest);
    let sig = &rsp[14..];
    let nonce_k = &sig[6..38];
    let s = U256::from_be_slice(&sig[40..72]);
    // s = r + t d mod n with t = H(nonceK || digest): r = s - t d must give E = [r]G.
    let t = sha2::Sha256::new().chain_update(nonce_k).chain_update(digest).finalize();
    let t = U256::from_be_slice(&t).rem_vartime(&n);
    let r = s.sub_mod(&t.mul_mod(&d, &n), &n);
    let e = public_of(Curve::BnP256, r.to_be_bytes().as_slice()).unwrap();
    assert_eq!((e.x.as_slice(), e.y.as_slice()), (e_x, e_y));
    // A commit is used once.
    assert_eq!(rc(&tpm.execute(C, 0, &sign)), 0x2C4);
}

#[test]
fn bn_p256_parameters_are_libtpms_bytes() {
    let mut tpm = started();
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x178, &[], &hex("0010")));
    // swtpm 0.7.1 / libtpms 0.9.2's answer to ECC_Parameters(TPM_ECC_BN_P256).
    let libtpms = hex("8001000000c2000000000010010000100010\
         0020fffffffffffcf0cd46e5f25eee71a49f0cdc65fb12980a82d3292ddbaed33013 000100\
         00200000000000000000000000000000000000000000000000000000000000000003\
         00200000000000000000000000000000000000000000000000000000000000000001\
         00200000000000000000000000000000000000000000000000000000000000000002\
         0020fffffffffffcf0cd46e5f25eee71a49e0cdc65fb1299921af62d536cd10b500d 000101");
    assert_eq!(rsp, libtpms);
    // GetCapability(ECC_CURVES) lists it after the NIST curves.
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17A, &[], &hex("00000008 00000000 00000010")));
    assert_eq!(rsp[10..], hex("00 00000008 00000003 0003 0004 0010")[..]);
    // TestParms accepts an ECDAA BN_P256 key.
    let rsp =
        tpm.execute(C, 0, &cmd(0x8001, 0x18A, &[], &hex("0023 0010 001a 000b 0000 0010 0010")));
    assert_eq!(rc(&rsp), 0);
}

/// CreatePrimary(owner) of an RSA-2048 storage key with `exponent`: the response code.
fn create_rsa_with_exponent(tpm: &mut vtpm::Tpm, exponent: u32) -> u32 {
    let mut template = hex("0001 000b 00030472 0000 0006 0080 0043 0010 0800");
    template.extend_from_slice(&exponent.to_be_bytes());
    template.extend_from_slice(&[0, 0]);
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("0004 0000 0000"));
    rest.extend_from_slice(&tpm2b(&template));
    rest.extend_from_slice(&hex("0000 00000000"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x131, &[0x4000_0001], &rest));
    if rc(&rsp) == 0 {
        flush(tpm, u32::from_be_bytes(rsp[10..14].try_into().unwrap()));
    }
    rc(&rsp)
}

#[test]
fn rsa_exponents_follow_the_reference() {
    let mut tpm = started();
    // Generation: 0 or a prime >= 65537, else TPM_RC_RANGE unnumbered (as libtpms answers).
    for e in [3, 4, 65536, 65541, 0xFFFF_FFFF] {
        assert_eq!(create_rsa_with_exponent(&mut tpm, e), 0x08D, "exponent {e}");
    }
    assert_eq!(create_rsa_with_exponent(&mut tpm, 65539), 0);
    // Loading a public key: an exponent below 7 is TPM_RC_VALUE on inPublic (parameter 2).
    for (e, expected) in [(3u32, 0x2C4), (6, 0x2C4), (0, 0)] {
        let mut public = hex("0001 000b 00060000 0000 0010 0010 0800");
        public.extend_from_slice(&e.to_be_bytes());
        let mut modulus = vec![0xC5u8; 256];
        modulus[255] = 0x0B;
        public.extend_from_slice(&tpm2b(&modulus));
        let mut rest = tpm2b(&[]);
        rest.extend_from_slice(&tpm2b(&public));
        rest.extend_from_slice(&hex("40000007"));
        let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x167, &[], &rest));
        assert_eq!(rc(&rsp), expected, "exponent {e}: {rsp:02x?}");
        if expected == 0 {
            flush(&mut tpm, u32::from_be_bytes(rsp[10..14].try_into().unwrap()));
        }
    }
}
