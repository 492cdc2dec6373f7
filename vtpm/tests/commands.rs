//! Commands no client flow exercises, checked by their results: EncryptDecrypt(2) against the
//! SP 800-38A vectors, ECC_Parameters against the NIST P-256 constants, NV_SetBits,
//! NV_ChangeAuth, ChangeEPS/ChangePPS, the command audit digest recomputed by Part 3's
//! formulas, CertifyCreation and NV_Certify attestations (signature verified), PolicyNV's
//! policy digest, ClockSet and ClockRateAdjust, the session audit digest of an HMAC session
//! (GetSessionAuditDigest, signature verified with RustCrypto's p256), PolicyAuthorizeNV and
//! NV_UndefineSpaceSpecial.

mod common;
use common::*;
use vtpm::crypto::ecc::{self, Curve, Point};
use vtpm::crypto::hash::{HashAlg, hash};

const OWNER: u32 = 0x4000_0001;
const NULL: u32 = 0x4000_0007;
const ENDORSEMENT: u32 = 0x4000_000B;
const PLATFORM: u32 = 0x4000_000C;
const INDEX: u32 = 0x0150_0020;

fn tpm2b(v: &[u8]) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v);
    out
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    hash(HashAlg::Sha256, parts)
}

/// A cursor over response bytes.
struct Rsp<'a>(&'a [u8]);

impl<'a> Rsp<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    fn tpm2b(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.take(n)
    }
}

/// The parameter area of a successful response (`handle`: it has a response handle).
fn params(rsp: &[u8], handle: bool) -> Rsp<'_> {
    assert_eq!(rc(rsp), 0, "command failed: {rsp:02x?}");
    let start = if handle { 14 } else { 10 };
    if rsp[..2] == [0x80, 0x02] {
        let size = u32::from_be_bytes(rsp[start..start + 4].try_into().unwrap()) as usize;
        Rsp(&rsp[start + 4..start + 4 + size])
    } else {
        Rsp(&rsp[start..])
    }
}

/// An authorization area of one or more password sessions with empty passwords.
fn pw_auths(n: usize) -> Vec<u8> {
    let one = &pw_auth(b"")[4..];
    let all: Vec<u8> = one.iter().copied().cycle().take(one.len() * n).collect();
    let mut v = (all.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&all);
    v
}

/// An unrestricted ECC P-256 ECDSA-SHA256 signing key template.
const ECC_SIGN_TEMPLATE: &str = "0023 000b 00040072 0000 0010 0018 000b 0003 0010 0000 0000";

/// CreatePrimary: (handle, outPublic, creationHash, creationTicket bytes, name).
fn create_primary(
    tpm: &mut vtpm::Tpm,
    hierarchy: u32,
    template: &str,
) -> (u32, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("0004 0000 0000"));
    rest.extend_from_slice(&tpm2b(&hex(template)));
    rest.extend_from_slice(&hex("0000 00000000"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x131, &[hierarchy], &rest));
    let handle = u32::from_be_bytes(rsp[10..14].try_into().unwrap());
    let mut p = params(&rsp, true);
    let public = p.tpm2b().to_vec();
    p.tpm2b(); // creationData
    let creation_hash = p.tpm2b().to_vec();
    let ticket_start = p.0;
    p.u16();
    p.u32();
    p.tpm2b();
    let ticket = ticket_start[..ticket_start.len() - p.0.len()].to_vec();
    let name = p.tpm2b().to_vec();
    (handle, public, creation_hash, ticket, name)
}

/// The public point of an ECC TPM2B_PUBLIC's contents.
fn ecc_point(public: &[u8]) -> Point {
    let mut p = Rsp(public);
    p.take(public.len() - 4 - 2 * 32);
    let x = p.tpm2b().to_vec();
    let y = p.tpm2b().to_vec();
    Point { x, y }
}

/// TPMS_ATTEST: checks magic and type, returns (extraData, attested).
fn attest_body(attest: &[u8], st: u16) -> (Vec<u8>, Vec<u8>) {
    let mut a = Rsp(attest);
    assert_eq!(a.u32(), 0xff54_4347, "TPM_GENERATED_VALUE");
    assert_eq!(a.u16(), st);
    a.tpm2b(); // qualifiedSigner
    let extra = a.tpm2b().to_vec();
    a.take(17 + 8); // clockInfo, firmwareVersion
    (extra, a.0.to_vec())
}

/// A TPMT_SIGNATURE of ECDSA-SHA256 over `attest`, verified with `key`.
fn assert_ecdsa_signed(signature: &mut Rsp, attest: &[u8], key: &Point) {
    assert_eq!(signature.u16(), 0x0018);
    assert_eq!(signature.u16(), 0x000b);
    let r = signature.tpm2b().to_vec();
    let s = signature.tpm2b().to_vec();
    let digest = sha256(&[attest]);
    assert!(ecc::verify(Curve::P256, key, &digest, &r, &s), "signature does not verify");
    let mut other = digest.clone();
    other[0] ^= 1;
    assert!(!ecc::verify(Curve::P256, key, &other, &r, &s));
}

/// LoadExternal of an AES-128-CFB symmetric key into the null hierarchy.
fn load_aes(tpm: &mut vtpm::Tpm, key: &[u8]) -> u32 {
    let seed = [9u8; 32];
    let mut sensitive = hex("0025");
    sensitive.extend_from_slice(&tpm2b(&[]));
    sensitive.extend_from_slice(&tpm2b(&seed));
    sensitive.extend_from_slice(&tpm2b(key));
    let mut public = hex("0025 000b 00060040 0000 0006 0080 0043");
    public.extend_from_slice(&tpm2b(&sha256(&[&seed, key])));
    let mut p = tpm2b(&sensitive);
    p.extend_from_slice(&tpm2b(&public));
    p.extend_from_slice(&NULL.to_be_bytes());
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x167, &[], &p));
    assert_eq!(rc(&rsp), 0, "LoadExternal: {rsp:02x?}");
    u32::from_be_bytes(rsp[10..14].try_into().unwrap())
}

// NIST SP 800-38A F.3.13, CFB128-AES128, the first two blocks.
const AES_KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
const AES_IV: &str = "000102030405060708090a0b0c0d0e0f";
const AES_PT: &str = "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51";
const AES_CT: &str = "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b";

#[test]
fn encrypt_decrypt_gives_sp800_38a_cfb() {
    let mut tpm = started();
    let key = load_aes(&mut tpm, &hex(AES_KEY));
    // EncryptDecrypt(key; decrypt, mode, ivIn, inData) -> outData, ivOut.
    let run = |tpm: &mut vtpm::Tpm, decrypt: u8, data: &[u8], iv: &[u8]| {
        let mut rest = pw_auth(b"");
        rest.push(decrypt);
        rest.extend_from_slice(&hex("0043"));
        rest.extend_from_slice(&tpm2b(iv));
        rest.extend_from_slice(&tpm2b(data));
        let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x164, &[key], &rest));
        let mut p = params(&rsp, false);
        (p.tpm2b().to_vec(), p.tpm2b().to_vec())
    };
    let (ct, iv_out) = run(&mut tpm, 0, &hex(AES_PT), &hex(AES_IV));
    assert_eq!(ct, hex(AES_CT));
    // The chaining value is the last ciphertext block: continuing gives the stream.
    assert_eq!(iv_out, hex(&AES_CT[32..]));
    let (first, iv1) = run(&mut tpm, 0, &hex(&AES_PT[..32]), &hex(AES_IV));
    let (second, _) = run(&mut tpm, 0, &hex(&AES_PT[32..]), &iv1);
    assert_eq!([first, second].concat(), hex(AES_CT));
    let (pt, _) = run(&mut tpm, 1, &hex(AES_CT), &hex(AES_IV));
    assert_eq!(pt, hex(AES_PT));
    // A partial block is a prefix of the stream.
    let (part, _) = run(&mut tpm, 0, &hex(&AES_PT[..40]), &hex(AES_IV));
    assert_eq!(part, hex(&AES_CT[..40]));
    // EncryptDecrypt2(key; inData, decrypt, mode = NULL (the key's CFB), ivIn).
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&tpm2b(&hex(AES_PT)));
    rest.extend_from_slice(&hex("00 0010"));
    rest.extend_from_slice(&tpm2b(&hex(AES_IV)));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x193, &[key], &rest));
    assert_eq!(params(&rsp, false).tpm2b(), hex(AES_CT));
    // A mode the key does not have (CTR) is TPM_RC_MODE on parameter 2.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("00 0040"));
    rest.extend_from_slice(&tpm2b(&hex(AES_IV)));
    rest.extend_from_slice(&tpm2b(&hex(AES_PT)));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x164, &[key], &rest))) & 0xBF, 0x89);
}

#[test]
fn ecc_parameters_are_the_nist_p256_constants() {
    let mut tpm = started();
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x178, &[], &hex("0003")));
    let mut p = params(&rsp, false);
    assert_eq!(p.u16(), 0x0003);
    assert_eq!(p.u16(), 256);
    assert_eq!(p.u16(), 0x0010); // kdf: NULL
    assert_eq!(p.u16(), 0x0010); // sign: NULL
    let p256 = [
        "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff",
        "ffffffff00000001000000000000000000000000fffffffffffffffffffffffc",
        "5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b",
        "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296",
        "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5",
        "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551",
        "01",
    ];
    for (i, want) in p256.iter().enumerate() {
        assert_eq!(p.tpm2b(), hex(want), "field {i} (p, a, b, gX, gY, n, h)");
    }
    assert!(p.0.is_empty());
    // P-521 is not implemented: TPM_RC_CURVE on parameter 1.
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x178, &[], &hex("0005")))), 0x1E6);
}

/// NV_DefineSpace(owner, auth, index with attributes and policy, size).
fn define(tpm: &mut vtpm::Tpm, attributes: u32, auth: &[u8], policy: &[u8], size: u16) {
    define_by(tpm, OWNER, attributes, auth, policy, size);
}

/// NV_DefineSpace(`hierarchy`, auth, index with attributes and policy, size).
fn define_by(
    tpm: &mut vtpm::Tpm,
    hierarchy: u32,
    attributes: u32,
    auth: &[u8],
    policy: &[u8],
    size: u16,
) {
    let mut public = INDEX.to_be_bytes().to_vec();
    public.extend_from_slice(&hex("000b"));
    public.extend_from_slice(&attributes.to_be_bytes());
    public.extend_from_slice(&tpm2b(policy));
    public.extend_from_slice(&size.to_be_bytes());
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&tpm2b(auth));
    rest.extend_from_slice(&tpm2b(&public));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x12A, &[hierarchy], &rest))), 0);
}

/// NV_Read(auth handle with password, INDEX, size, offset).
fn nv_read(tpm: &mut vtpm::Tpm, auth: u32, password: &[u8], size: u16) -> Vec<u8> {
    let mut rest = pw_auth(password);
    rest.extend_from_slice(&size.to_be_bytes());
    rest.extend_from_slice(&0u16.to_be_bytes());
    tpm.execute(C, 0, &cmd(0x8002, 0x14E, &[auth, INDEX], &rest))
}

fn nv_write(tpm: &mut vtpm::Tpm, auth: u32, password: &[u8], data: &[u8]) -> u32 {
    let mut rest = pw_auth(password);
    rest.extend_from_slice(&tpm2b(data));
    rest.extend_from_slice(&0u16.to_be_bytes());
    rc(&tpm.execute(C, 0, &cmd(0x8002, 0x137, &[auth, INDEX], &rest)))
}

const OWNERWRITE: u32 = 1 << 1;
const AUTHWRITE: u32 = 1 << 2;
const NO_DA: u32 = 1 << 25;
const OWNERREAD: u32 = 1 << 17;
const AUTHREAD: u32 = 1 << 18;
const NT_BITS: u32 = 2 << 4;

#[test]
fn nv_set_bits_accumulates() {
    let mut tpm = started();
    define(&mut tpm, NT_BITS | OWNERWRITE | OWNERREAD, b"", b"", 8);
    assert_eq!(rc(&nv_read(&mut tpm, OWNER, b"", 8)), 0x14A, "unwritten: NV_UNINITIALIZED");
    for bits in [0x0000_0000_0000_0005u64, 0x8000_0000_0000_0100] {
        let mut rest = pw_auth(b"");
        rest.extend_from_slice(&bits.to_be_bytes());
        assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x135, &[OWNER, INDEX], &rest))), 0);
    }
    assert_eq!(params(&nv_read(&mut tpm, OWNER, b"", 8), false).tpm2b(), hex("8000000000000105"));
    // A bit field is not written with NV_Write: TPM_RC_ATTRIBUTES (unnumbered, as the
    // reference).
    assert_eq!(nv_write(&mut tpm, OWNER, b"", &[0; 8]), 0x082);
}

/// StartAuthSession(NULL, NULL) of a policy session with SHA-256; returns the handle.
fn policy_session(tpm: &mut vtpm::Tpm) -> u32 {
    let mut p = tpm2b(&[7u8; 16]);
    p.extend_from_slice(&hex("0000 01 0010 000b"));
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x176, &[NULL, NULL], &p));
    assert_eq!(rc(&rsp), 0);
    u32::from_be_bytes(rsp[10..14].try_into().unwrap())
}

/// An authorization area with one policy session and no HMAC.
fn policy_auth(session: u32) -> Vec<u8> {
    let mut s = session.to_be_bytes().to_vec();
    s.extend_from_slice(&hex("0000 00 0000"));
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&s);
    v
}

fn policy_digest(tpm: &mut vtpm::Tpm, session: u32) -> Vec<u8> {
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x189, &[session], &[]));
    params(&rsp, false).tpm2b().to_vec()
}

#[test]
fn nv_change_auth_with_its_policy() {
    let mut tpm = started();
    // authPolicy = PolicyCommandCode(TPM_CC_NV_ChangeAuth).
    let policy = sha256(&[&[0; 32], &hex("0000016c 0000013b")]);
    define(&mut tpm, AUTHWRITE | AUTHREAD | NO_DA, b"old", &policy, 4);
    assert_eq!(nv_write(&mut tpm, INDEX, b"old", b"data"), 0);
    let session = policy_session(&mut tpm);
    let code = tpm.execute(C, 0, &cmd(0x8001, 0x16C, &[session], &hex("0000013b")));
    assert_eq!(rc(&code), 0);
    assert_eq!(policy_digest(&mut tpm, session), policy);
    let mut rest = policy_auth(session);
    rest.extend_from_slice(&tpm2b(b"new"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x13B, &[INDEX], &rest))), 0);
    // The new value authorizes; the old one no longer does.
    assert_eq!(params(&nv_read(&mut tpm, INDEX, b"new", 4), false).tpm2b(), b"data");
    // (TPM_RC_BAD_AUTH: the index is NO_DA, so no lockout implication).
    assert_eq!(rc(&nv_read(&mut tpm, INDEX, b"old", 4)), 0x9A2);
    // The ADMIN role of an NV index needs a policy session: TPM_RC_AUTH_TYPE.
    let mut rest = pw_auth(b"new");
    rest.extend_from_slice(&tpm2b(b"x"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x13B, &[INDEX], &rest))), 0x124);
}

#[test]
fn change_eps_and_pps_replace_their_seed_only() {
    let mut tpm = started();
    let primary = |tpm: &mut vtpm::Tpm, h: u32| {
        let (handle, public, ..) = create_primary(tpm, h, ECC_SIGN_TEMPLATE);
        assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x165, &[], &handle.to_be_bytes()))), 0);
        public
    };
    let (ek, srk, pk) =
        (primary(&mut tpm, ENDORSEMENT), primary(&mut tpm, OWNER), primary(&mut tpm, PLATFORM));
    // An endorsement password, which ChangeEPS clears.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&tpm2b(b"endorsement"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x129, &[ENDORSEMENT], &rest))), 0);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x124, &[PLATFORM], &pw_auth(b"")))), 0);
    let ek2 = primary(&mut tpm, ENDORSEMENT);
    assert_ne!(ek2, ek);
    assert_eq!(primary(&mut tpm, OWNER), srk);
    assert_eq!(primary(&mut tpm, PLATFORM), pk);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x125, &[PLATFORM], &pw_auth(b"")))), 0);
    assert_ne!(primary(&mut tpm, PLATFORM), pk);
    assert_eq!(primary(&mut tpm, ENDORSEMENT), ek2);
    assert_eq!(primary(&mut tpm, OWNER), srk);
    // Only the platform may (TPMI_RH_PLATFORM: TPM_RC_VALUE on handle 1).
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x124, &[OWNER], &pw_auth(b"")))), 0x184);
}

/// GetCommandAuditDigest(endorsement, NULL key): (auditCounter, digestAlg, auditDigest,
/// commandDigest).
fn command_audit(tpm: &mut vtpm::Tpm) -> (u64, u16, Vec<u8>, Vec<u8>) {
    let mut rest = pw_auths(2);
    rest.extend_from_slice(&hex("0000 0010"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x133, &[ENDORSEMENT, NULL], &rest));
    let mut p = params(&rsp, false);
    let attest = p.tpm2b().to_vec();
    assert_eq!(p.u16(), 0x0010, "unsigned");
    let (_, body) = attest_body(&attest, 0x8015);
    let mut a = Rsp(&body);
    let counter = a.u64();
    let alg = a.u16();
    (counter, alg, a.tpm2b().to_vec(), a.tpm2b().to_vec())
}

#[test]
fn command_audit_digest_follows_part3() {
    let mut tpm = started();
    // SetCommandCodeAuditStatus(owner; alg NULL, set {GetRandom}, clear {}): itself audited.
    let set_params = hex("0010 00000001 0000017b 00000000");
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&set_params);
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x140, &[OWNER], &rest));
    assert_eq!(rc(&rsp), 0);
    let cp_set = sha256(&[&hex("00000140"), &OWNER.to_be_bytes(), &set_params]);
    let rp_set = sha256(&[&hex("00000000 00000140")]);
    let mut digest = sha256(&[&[0; 32], &cp_set, &rp_set]);
    // GetRandom(8), audited: cpHash = H(cc || params), rpHash = H(rc || cc || params).
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17B, &[], &hex("0008")));
    assert_eq!(rc(&rsp), 0);
    let cp = sha256(&[&hex("0000017b 0008")]);
    let rp = sha256(&[&hex("00000000 0000017b"), &rsp[10..]]);
    digest = sha256(&[&digest, &cp, &rp]);
    let commands = sha256(&[&hex("00000140 0000017b")]);
    assert_eq!(command_audit(&mut tpm), (1, 0x000b, digest, commands.clone()));
    // Reading it resets the digest: the next audited command starts a new one (counter 2).
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17B, &[], &hex("0008")));
    let rp = sha256(&[&hex("00000000 0000017b"), &rsp[10..]]);
    let fresh = sha256(&[&[0; 32], &cp, &rp]);
    assert_eq!(command_audit(&mut tpm), (2, 0x000b, fresh, commands));
    // Changing the algorithm takes no lists (TPM_RC_VALUE) and is not itself audited.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("000c 00000001 0000017b 00000000"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x140, &[OWNER], &rest))), 0x1C4);
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("000c 00000000 00000000"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x140, &[OWNER], &rest))), 0);
    let (counter, alg, _, commands) = command_audit(&mut tpm);
    assert_eq!((counter, alg), (2, 0x000c));
    assert_eq!(commands, hash(HashAlg::Sha384, &[&hex("00000140 0000017b")]));
}

#[test]
fn certify_creation_signs_the_creation_hash() {
    let mut tpm = started();
    let (signer, signer_public, ..) = create_primary(&mut tpm, OWNER, ECC_SIGN_TEMPLATE);
    let (object, _, creation_hash, ticket, name) = create_primary(
        &mut tpm,
        OWNER,
        "0023 000b 00040072 0000 0010 0018 000b 0004 0010 0000 0000",
    );
    let key = ecc_point(&signer_public);
    // CertifyCreation(signer (password), object; qualifyingData, creationHash, NULL, ticket).
    let certify = |tpm: &mut vtpm::Tpm, creation_hash: &[u8]| {
        let mut rest = pw_auth(b"");
        rest.extend_from_slice(&tpm2b(b"nonce"));
        rest.extend_from_slice(&tpm2b(creation_hash));
        rest.extend_from_slice(&hex("0010"));
        rest.extend_from_slice(&ticket);
        tpm.execute(C, 0, &cmd(0x8002, 0x14A, &[signer, object], &rest))
    };
    let rsp = certify(&mut tpm, &creation_hash);
    let mut p = params(&rsp, false);
    let attest = p.tpm2b().to_vec();
    assert_ecdsa_signed(&mut p, &attest, &key);
    let (extra, body) = attest_body(&attest, 0x801A);
    assert_eq!(extra, b"nonce");
    assert_eq!(body, [tpm2b(&name), tpm2b(&creation_hash)].concat());
    // Another creation hash does not match the ticket: TPM_RC_TICKET on parameter 4.
    let mut other = creation_hash.clone();
    other[0] ^= 1;
    assert_eq!(rc(&certify(&mut tpm, &other)), 0x4E0);
}

#[test]
fn nv_certify_signs_the_contents() {
    let mut tpm = started();
    define(&mut tpm, OWNERWRITE | OWNERREAD, b"", b"", 16);
    assert_eq!(nv_write(&mut tpm, OWNER, b"", b"0123456789abcdef"), 0);
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x169, &[INDEX], &[]));
    let mut p = params(&rsp, false);
    p.tpm2b();
    let index_name = p.tpm2b().to_vec();
    let (signer, signer_public, ..) = create_primary(&mut tpm, OWNER, ECC_SIGN_TEMPLATE);
    // NV_Certify(signer, owner, index; qualifyingData, NULL scheme, size 6, offset 4).
    let mut rest = pw_auths(2);
    rest.extend_from_slice(&tpm2b(b"q"));
    rest.extend_from_slice(&hex("0010 0006 0004"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x184, &[signer, OWNER, INDEX], &rest));
    let mut p = params(&rsp, false);
    let attest = p.tpm2b().to_vec();
    assert_ecdsa_signed(&mut p, &attest, &ecc_point(&signer_public));
    let (extra, body) = attest_body(&attest, 0x8014);
    assert_eq!(extra, b"q");
    assert_eq!(body, [tpm2b(&index_name), hex("0004"), tpm2b(b"456789")].concat());
}

#[test]
fn policy_nv_compares_and_extends_the_digest() {
    let mut tpm = started();
    define(&mut tpm, AUTHWRITE | AUTHREAD | NO_DA, b"", b"", 8);
    assert_eq!(nv_write(&mut tpm, INDEX, b"", b"abcdefgh"), 0);
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x169, &[INDEX], &[]));
    let mut p = params(&rsp, false);
    p.tpm2b();
    let index_name = p.tpm2b().to_vec();
    // PolicyNV(index (password), index, session; operandB, offset, operation).
    let policy_nv = |tpm: &mut vtpm::Tpm, session: u32, operand: &[u8], offset: u16, op: u16| {
        let mut rest = pw_auth(b"");
        rest.extend_from_slice(&tpm2b(operand));
        rest.extend_from_slice(&offset.to_be_bytes());
        rest.extend_from_slice(&op.to_be_bytes());
        rc(&tpm.execute(C, 0, &cmd(0x8002, 0x149, &[INDEX, INDEX, session], &rest)))
    };
    let session = policy_session(&mut tpm);
    assert_eq!(policy_nv(&mut tpm, session, b"cde", 2, 0x0000), 0); // TPM_EO_EQ
    // policyDigest' = H(policyDigest || TPM_CC_PolicyNV || H(operandB || offset || op) || name).
    let args = sha256(&[b"cde", &hex("0002 0000")]);
    let want = sha256(&[&[0; 32], &hex("00000149"), &args, &index_name]);
    assert_eq!(policy_digest(&mut tpm, session), want);
    // "abcd" < "abce" unsigned (TPM_EO_UNSIGNED_LT = 5); "abcd" == "abcx" is TPM_RC_POLICY.
    assert_eq!(policy_nv(&mut tpm, session, b"abce", 0, 0x0005), 0);
    assert_eq!(policy_nv(&mut tpm, session, b"abcc", 0, 0x0005), 0x126);
    assert_eq!(policy_nv(&mut tpm, session, b"abcx", 0, 0x0000), 0x126);
    // Past the end of the index: TPM_RC_NV_RANGE.
    assert_eq!(policy_nv(&mut tpm, session, b"gh!", 6, 0x0000), 0x146);
}

/// ReadClock: the clock (ms).
fn clock(tpm: &mut vtpm::Tpm) -> u64 {
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x181, &[], &[]));
    let mut p = params(&rsp, false);
    p.u64();
    p.u64()
}

#[test]
fn clock_set_only_advances() {
    let mut tpm = started();
    let now = clock(&mut tpm);
    let set = |tpm: &mut vtpm::Tpm, t: u64| {
        let mut rest = pw_auth(b"");
        rest.extend_from_slice(&t.to_be_bytes());
        rc(&tpm.execute(C, 0, &cmd(0x8002, 0x128, &[OWNER], &rest)))
    };
    let later = now + 3_600_000;
    assert_eq!(set(&mut tpm, later), 0);
    assert!((later..later + 60_000).contains(&clock(&mut tpm)));
    // Back in time: TPM_RC_VALUE on parameter 1.
    assert_eq!(set(&mut tpm, now), 0x1C4);
    assert!(clock(&mut tpm) >= later);
    // ClockRateAdjust(owner; TPM_CLOCK_MEDIUM_SLOWER) is accepted; an out-of-range value is not.
    let mut rest = pw_auth(b"");
    rest.push(0xFE);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x130, &[OWNER], &rest))), 0);
    let mut rest = pw_auth(b"");
    rest.push(0x10);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x130, &[OWNER], &rest))), 0x1C4);
}

#[test]
fn nv_global_write_lock_until_startup() {
    let mut tpm = started();
    const GLOBALLOCK: u32 = 1 << 15;
    define(&mut tpm, OWNERWRITE | OWNERREAD | GLOBALLOCK, b"", b"", 4);
    assert_eq!(nv_write(&mut tpm, OWNER, b"", b"abcd"), 0);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x132, &[OWNER], &pw_auth(b"")))), 0);
    assert_eq!(nv_write(&mut tpm, OWNER, b"", b"efgh"), 0x148, "TPM_RC_NV_LOCKED");
    assert_eq!(params(&nv_read(&mut tpm, OWNER, b"", 4), false).tpm2b(), b"abcd");
    // The lock lasts until the next Startup.
    tpm.reset();
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x144, &[], &[0, 0]))), 0);
    assert_eq!(nv_write(&mut tpm, OWNER, b"", b"efgh"), 0);
}

#[test]
fn set_primary_policy_authorizes_the_owner_by_policy() {
    let mut tpm = started();
    // CreatePrimary(owner) authorized by a policy session with PolicyCommandCode(CreatePrimary).
    let policy = sha256(&[&[0; 32], &hex("0000016c 00000131")]);
    let create = |tpm: &mut vtpm::Tpm| {
        let session = policy_session(tpm);
        let code = tpm.execute(C, 0, &cmd(0x8001, 0x16C, &[session], &hex("00000131")));
        assert_eq!(rc(&code), 0);
        let mut rest = policy_auth(session);
        rest.extend_from_slice(&hex("0004 0000 0000"));
        rest.extend_from_slice(&tpm2b(&hex(ECC_SIGN_TEMPLATE)));
        rest.extend_from_slice(&hex("0000 00000000"));
        rc(&tpm.execute(C, 0, &cmd(0x8002, 0x131, &[OWNER], &rest)))
    };
    // No owner policy yet: TPM_RC_AUTH_UNAVAILABLE.
    assert_eq!(create(&mut tpm), 0x12F);
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&tpm2b(&policy));
    rest.extend_from_slice(&hex("000b"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x12E, &[OWNER], &rest))), 0);
    assert_eq!(create(&mut tpm), 0);
    // A digest of the wrong size for the algorithm: TPM_RC_SIZE on parameter 1.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&tpm2b(&[1; 20]));
    rest.extend_from_slice(&hex("000b"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x12E, &[OWNER], &rest))), 0x1D5);
}

#[test]
fn policy_counter_timer_compares_the_clock() {
    let mut tpm = started();
    let session = policy_session(&mut tpm);
    // PolicyCounterTimer(session; operandB, offset, operation) on TPMS_TIME_INFO.clock.
    let counter_timer = |tpm: &mut vtpm::Tpm, operand: u64, op: u16| {
        let mut p = tpm2b(&operand.to_be_bytes());
        p.extend_from_slice(&8u16.to_be_bytes());
        p.extend_from_slice(&op.to_be_bytes());
        rc(&tpm.execute(C, 0, &cmd(0x8001, 0x16D, &[session], &p)))
    };
    assert_eq!(counter_timer(&mut tpm, 0, 0x0003), 0); // clock > 0 (TPM_EO_UNSIGNED_GT)
    // policyDigest' = H(policyDigest || TPM_CC_PolicyCounterTimer || H(operandB || offset || op)).
    let args = sha256(&[&0u64.to_be_bytes(), &hex("0008 0003")]);
    let want = sha256(&[&[0; 32], &hex("0000016d"), &args]);
    assert_eq!(policy_digest(&mut tpm, session), want);
    assert_eq!(counter_timer(&mut tpm, u64::MAX, 0x0003), 0x126, "TPM_RC_POLICY");
}

#[test]
fn pp_commands_need_physical_presence() {
    let mut tpm = started();
    // PP_Commands(platform; setList {ClockSet}, clearList {}) always needs physical presence.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("00000001 00000128 00000000"));
    let pp_commands = cmd(0x8002, 0x12D, &[PLATFORM], &rest);
    assert_eq!(rc(&tpm.execute(C, 0, &pp_commands)) & 0xBF, 0x90, "TPM_RC_PP");
    tpm.set_physical_presence(true);
    assert_eq!(rc(&tpm.execute(C, 0, &pp_commands)), 0);
    tpm.set_physical_presence(false);
    // ClockSet with platform authorization now needs physical presence; with owner's, not.
    let clock_set = |tpm: &mut vtpm::Tpm, auth: u32| {
        let mut rest = pw_auth(b"");
        rest.extend_from_slice(&u64::MAX.wrapping_shr(8).to_be_bytes());
        rc(&tpm.execute(C, 0, &cmd(0x8002, 0x128, &[auth], &rest)))
    };
    assert_eq!(clock_set(&mut tpm, PLATFORM) & 0xBF, 0x90);
    assert_eq!(clock_set(&mut tpm, OWNER), 0);
    // GetCapability(PP_COMMANDS) lists it.
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17A, &[], &hex("00000003 00000000 00000010")));
    let mut p = params(&rsp, false);
    p.take(1 + 4);
    let count = p.u32();
    let listed: Vec<u32> = (0..count).map(|_| p.u32()).collect();
    assert!(listed.contains(&0x128) && listed.contains(&0x12D), "{listed:x?}");
}

/// NV_ReadPublic(INDEX): the index's Name.
fn nv_name(tpm: &mut vtpm::Tpm) -> Vec<u8> {
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x169, &[INDEX], &[]));
    let mut p = params(&rsp, false);
    p.tpm2b();
    p.tpm2b().to_vec()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use digest::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// An HMAC session in use: its handle and the TPM's last nonce.
struct HmacSession {
    handle: u32,
    nonce_tpm: Vec<u8>,
}

const CONTINUE_SESSION: u8 = 0x01;
const AUDIT: u8 = 0x80;

impl HmacSession {
    /// StartAuthSession(NULL, NULL) of an unbound, unsalted SHA-256 HMAC session: its
    /// sessionKey is empty (Part 1, session key creation), so the HMAC key is the entity's authValue.
    fn start(tpm: &mut vtpm::Tpm) -> HmacSession {
        let mut p = tpm2b(&[7u8; 32]);
        p.extend_from_slice(&hex("0000 00 0010 000b"));
        let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x176, &[NULL, NULL], &p));
        let handle = u32::from_be_bytes(rsp[10..14].try_into().unwrap());
        let nonce_tpm = params(&rsp, true).tpm2b().to_vec();
        assert_eq!(nonce_tpm.len(), 32);
        HmacSession { handle, nonce_tpm }
    }

    /// Runs `cc` (no response handle) with this session authorizing the first handle (its
    /// authValue `auth`, the handles' `names`) with session attributes `attrs`. Checks the
    /// response HMAC (Part 1, response HMAC) and returns (cpHash, rpHash, response parameters).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        tpm: &mut vtpm::Tpm,
        attrs: u8,
        auth: &[u8],
        cc: u32,
        handles: &[u32],
        names: &[&[u8]],
        parameters: &[u8],
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let nonce_caller = [cc as u8; 16];
        // cpHash = H(commandCode || names || parameters); the command HMAC is over
        // cpHash || nonceCaller || nonceTPM || sessionAttributes (Part 1, HMAC computation).
        let cc_bytes = cc.to_be_bytes();
        let mut cp_parts: Vec<&[u8]> = vec![&cc_bytes];
        cp_parts.extend_from_slice(names);
        cp_parts.push(parameters);
        let cp = sha256(&cp_parts);
        let mac = hmac_sha256(auth, &[&cp, &nonce_caller, &self.nonce_tpm, &[attrs]]);
        let mut area = self.handle.to_be_bytes().to_vec();
        area.extend_from_slice(&tpm2b(&nonce_caller));
        area.push(attrs);
        area.extend_from_slice(&tpm2b(&mac));
        let mut rest = (area.len() as u32).to_be_bytes().to_vec();
        rest.extend_from_slice(&area);
        rest.extend_from_slice(parameters);
        let rsp = tpm.execute(C, 0, &cmd(0x8002, cc, handles, &rest));
        let out = params(&rsp, false).0.to_vec();
        // rpHash = H(responseCode || commandCode || parameters).
        let rp = sha256(&[&0u32.to_be_bytes(), &cc_bytes, &out]);
        let mut session = Rsp(&rsp[14 + out.len()..]);
        let nonce_tpm = session.tpm2b().to_vec();
        assert_ne!(nonce_tpm, self.nonce_tpm, "a fresh nonceTPM per response");
        assert_eq!(session.take(1), [attrs]);
        let want = hmac_sha256(auth, &[&rp, &nonce_tpm, &nonce_caller, &[attrs]]);
        assert_eq!(session.tpm2b(), want, "response HMAC");
        assert!(session.0.is_empty());
        self.nonce_tpm = nonce_tpm;
        (cp, rp, out)
    }
}

#[test]
fn session_audit_digest_follows_part3() {
    let mut tpm = started();
    let (signer, signer_public, ..) = create_primary(&mut tpm, OWNER, ECC_SIGN_TEMPLATE);
    define(&mut tpm, AUTHWRITE | AUTHREAD | NO_DA, b"secret", b"", 8);
    let mut session = HmacSession::start(&mut tpm);
    // GetSessionAuditDigest(endorsement, signer, session; qualifyingData, NULL scheme):
    // (TPMS_ATTEST, TPMT_SIGNATURE).
    let session_audit = |tpm: &mut vtpm::Tpm, session: u32| {
        let mut rest = pw_auths(2);
        rest.extend_from_slice(&tpm2b(b"audit"));
        rest.extend_from_slice(&hex("0010"));
        let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x14D, &[ENDORSEMENT, signer, session], &rest));
        let mut p = params(&rsp, false);
        let attest = p.tpm2b().to_vec();
        (attest, p.0.to_vec())
    };
    // Never used for audit: the digest is all zeros (the reference's initial value).
    let (attest, _) = session_audit(&mut tpm, session.handle);
    let (_, body) = attest_body(&attest, 0x8016);
    assert_eq!(body[1..], tpm2b(&[0; 32])[..]);

    // Two audited commands: NV_Write then NV_Read, each authorized by the session.
    // sessionDigest' = H(sessionDigest || cpHash || rpHash), from a zero digest (Part 1,
    // session audit; Part 3 §18.5).
    let unwritten = nv_name(&mut tpm);
    let write = [tpm2b(b"abcdefgh"), hex("0000")].concat();
    let names: [&[u8]; 2] = [&unwritten, &unwritten];
    let (cp, rp, _) = session.run(
        &mut tpm,
        CONTINUE_SESSION | AUDIT,
        b"secret",
        0x137,
        &[INDEX, INDEX],
        &names,
        &write,
    );
    let mut digest = sha256(&[&[0; 32], &cp, &rp]);
    let written = nv_name(&mut tpm);
    assert_ne!(written, unwritten, "TPMA_NV_WRITTEN is in the Name");
    let names: [&[u8]; 2] = [&written, &written];
    let (cp, rp, out) = session.run(
        &mut tpm,
        CONTINUE_SESSION | AUDIT,
        b"secret",
        0x14E,
        &[INDEX, INDEX],
        &names,
        &hex("0004 0002"),
    );
    assert_eq!(out, tpm2b(b"cdef"));
    digest = sha256(&[&digest, &cp, &rp]);
    // Used without the audit attribute, the session leaves its digest alone.
    session.run(
        &mut tpm,
        CONTINUE_SESSION,
        b"secret",
        0x14E,
        &[INDEX, INDEX],
        &names,
        &hex("0001 0000"),
    );

    let (attest, signature) = session_audit(&mut tpm, session.handle);
    let (extra, body) = attest_body(&attest, 0x8016); // TPM_ST_ATTEST_SESSION_AUDIT
    assert_eq!(extra, b"audit");
    // TPMS_SESSION_AUDIT_INFO: exclusiveSession (a TPMI_YES_NO), sessionDigest. The engine does
    // not implement exclusive audit sessions (it always reports NO), so only the encoding of
    // exclusiveSession is checked here.
    assert!(body[0] <= 1, "exclusiveSession {}", body[0]);
    assert_eq!(body[1..], tpm2b(&digest)[..], "sessionDigest");
    assert_ecdsa_signed(&mut Rsp(&signature), &attest, &ecc_point(&signer_public));
    // The same signature, verified by RustCrypto's p256 (SHA-256 of the TPMS_ATTEST).
    {
        use p256::ecdsa::signature::Verifier;
        let point = ecc_point(&signer_public);
        let key =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&[&[4], &point.x[..], &point.y].concat())
                .expect("the signer's public point is on P-256");
        let mut s = Rsp(&signature);
        s.take(4); // ECDSA, SHA-256
        let rs = [s.tpm2b(), s.tpm2b()].concat();
        let sig = p256::ecdsa::Signature::from_slice(&rs).expect("r, s in range");
        assert!(key.verify(&attest, &sig).is_ok());
        let mut other = attest.clone();
        other[attest.len() - 1] ^= 1;
        assert!(key.verify(&other, &sig).is_err());
    }
    // A policy session is not a TPMI_SH_HMAC: TPM_RC_VALUE on handle 3.
    let policy = policy_session(&mut tpm);
    let mut rest = pw_auths(2);
    rest.extend_from_slice(&hex("0000 0010"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x14D, &[ENDORSEMENT, signer, policy], &rest));
    assert_eq!(rc(&rsp), 0x384);
}

#[test]
fn policy_authorize_nv_takes_the_approved_policy_from_nv() {
    let mut tpm = started();
    // An index holding a TPMT_HA (SHA-256): 2 + 32 octets.
    define(&mut tpm, AUTHWRITE | AUTHREAD | NO_DA, b"", b"", 34);
    // The approved policy: PolicyCommandCode(TPM_CC_GetRandom).
    let approved = sha256(&[&[0; 32], &hex("0000016c 0000017b")]);
    // PolicyAuthorizeNV(authHandle (password), INDEX, session).
    let authorize_nv = |tpm: &mut vtpm::Tpm, auth: u32, session: u32| {
        rc(&tpm.execute(C, 0, &cmd(0x8002, 0x192, &[auth, INDEX, session], &pw_auth(b""))))
    };
    let approve = |tpm: &mut vtpm::Tpm, session: u32, cc: u32| {
        let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x16C, &[session], &cc.to_be_bytes()));
        assert_eq!(rc(&rsp), 0);
    };
    let session = policy_session(&mut tpm);
    approve(&mut tpm, session, 0x17B);
    assert_eq!(policy_digest(&mut tpm, session), approved);
    // Not yet written: TPM_RC_NV_UNINITIALIZED (NV read access checks, Part 3 §31.13).
    assert_eq!(authorize_nv(&mut tpm, INDEX, session), 0x14A);
    assert_eq!(nv_write(&mut tpm, INDEX, b"", &[hex("000b"), approved.clone()].concat()), 0);
    // The owner may not read this index: TPM_RC_NV_AUTHORIZATION.
    assert_eq!(authorize_nv(&mut tpm, OWNER, session), 0x149);
    assert_eq!(policy_digest(&mut tpm, session), approved);

    // policyDigest' = H(0…0 || TPM_CC_PolicyAuthorizeNV || nvIndex->Name) (Part 3 §23.22).
    assert_eq!(authorize_nv(&mut tpm, INDEX, session), 0);
    let name = nv_name(&mut tpm);
    assert_eq!(policy_digest(&mut tpm, session), sha256(&[&[0; 32], &hex("00000192"), &name]));

    // A session whose digest is not the approved one: TPM_RC_VALUE, digest unchanged.
    let other = policy_session(&mut tpm);
    approve(&mut tpm, other, 0x17A);
    let before = policy_digest(&mut tpm, other);
    assert_eq!(authorize_nv(&mut tpm, INDEX, other), 0x084);
    assert_eq!(policy_digest(&mut tpm, other), before);
    // An approved policy of another hash algorithm than the session's: TPM_RC_HASH.
    let sha1 = [hex("0004"), vec![0x11; 20]].concat();
    assert_eq!(nv_write(&mut tpm, INDEX, b"", &sha1), 0);
    assert_eq!(authorize_nv(&mut tpm, INDEX, session), 0x083);
    // An algorithm the TPM does not implement (SM3_256): TPM_RC_HASH from unmarshaling.
    let sm3 = [hex("0012"), vec![0x11; 32]].concat();
    assert_eq!(nv_write(&mut tpm, INDEX, b"", &sm3), 0);
    assert_eq!(authorize_nv(&mut tpm, INDEX, session), 0x083);
}

const PPWRITE: u32 = 1 << 0;
const POLICY_DELETE: u32 = 1 << 10;
const PPREAD: u32 = 1 << 16;
const PLATFORMCREATE: u32 = 1 << 30;

#[test]
fn nv_undefine_space_special_deletes_by_policy() {
    let mut tpm = started();
    // authPolicy = PolicyCommandCode(TPM_CC_NV_UndefineSpaceSpecial).
    let policy = sha256(&[&[0; 32], &hex("0000016c 0000011f")]);
    let attributes = PPWRITE | PPREAD | POLICY_DELETE | PLATFORMCREATE | NO_DA;
    define_by(&mut tpm, PLATFORM, attributes, b"", &policy, 8);
    // NV_UndefineSpace does not delete a POLICY_DELETE index: TPM_RC_ATTRIBUTES, handle 2.
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x122, &[PLATFORM, INDEX], &pw_auth(b"")));
    assert_eq!(rc(&rsp), 0x282);
    assert_eq!(nv_name(&mut tpm).len(), 34, "still defined");
    // NV_UndefineSpaceSpecial(INDEX (policy session), platform (password)).
    let undefine_special = |tpm: &mut vtpm::Tpm, session: u32| {
        let mut area = policy_auth(session);
        let password = &pw_auth(b"")[4..];
        area.extend_from_slice(password);
        let size = (area.len() - 4) as u32;
        area[..4].copy_from_slice(&size.to_be_bytes());
        rc(&tpm.execute(C, 0, &cmd(0x8002, 0x11F, &[INDEX, PLATFORM], &area)))
    };
    // A session without the policy's assertion: TPM_RC_POLICY_FAIL on session 1.
    let session = policy_session(&mut tpm);
    assert_eq!(undefine_special(&mut tpm, session), 0x99D);
    assert_eq!(nv_name(&mut tpm).len(), 34, "still defined");
    let session = policy_session(&mut tpm);
    let code = tpm.execute(C, 0, &cmd(0x8001, 0x16C, &[session], &hex("0000011f")));
    assert_eq!(rc(&code), 0);
    assert_eq!(undefine_special(&mut tpm, session), 0);
    // Gone: NV_ReadPublic is TPM_RC_HANDLE on handle 1.
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x169, &[INDEX], &[]))), 0x18B);

    // An index without TPMA_NV_POLICY_DELETE, even with that policy: TPM_RC_ATTRIBUTES,
    // handle 1.
    define(&mut tpm, OWNERWRITE | OWNERREAD | NO_DA, b"", &policy, 8);
    let session = policy_session(&mut tpm);
    let code = tpm.execute(C, 0, &cmd(0x8001, 0x16C, &[session], &hex("0000011f")));
    assert_eq!(rc(&code), 0);
    assert_eq!(undefine_special(&mut tpm, session), 0x182);
    assert_eq!(nv_name(&mut tpm).len(), 34, "still defined");
}
