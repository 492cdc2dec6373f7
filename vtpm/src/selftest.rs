//! Known-answer self-tests of the implemented algorithms (TPM 2.0 Part 1 §12 "Self-test",
//! "Failure Mode").
//!
//! Each [`Test`] runs the engine's own crypto functions on fixed inputs and compares the result
//! with an answer taken from a standard or computed by an independent implementation (the source
//! is noted at each constant). The TPM tracks which tests are still to run since the last
//! `_TPM_Init`:
//!
//! * TPM2_Startup runs the tests of the algorithms every boot uses at once (hashes, HMAC,
//!   AES-CFB, KDFa/KDFe: microseconds) — PCRs, sessions and parameter encryption need them;
//! * RSA and ECC (milliseconds) run at TPM2_SelfTest, TPM2_IncrementalSelfTest, or before the
//!   first command that may use them (any command not in [`SYMMETRIC_ONLY`]), so no algorithm is
//!   used untested;
//! * a failing test puts the TPM in failure mode: every command but TPM2_GetTestResult and
//!   TPM2_GetCapability then answers TPM_RC_FAILURE until the next `_TPM_Init`.

use alloc::vec::Vec;

use crate::constants::*;
use crate::crypto::ecc::{self, Curve, Point};
use crate::crypto::hash::{HashAlg, hash, hmac};
use crate::crypto::kdf::{kdfa, kdfe};
use crate::crypto::rsa::{self, RsaEncScheme, RsaSigScheme};
use crate::crypto::sym::aes_cfb;
use crate::state::Tpm;

/// One known-answer test; it covers the algorithms of [`Test::algorithms`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Test {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Hmac,
    AesCfb,
    Kdf,
    Rsa,
    Ecc,
}

/// Every test, in the order a full self-test runs them.
pub const ALL: [Test; 9] = [
    Test::Sha1,
    Test::Sha256,
    Test::Sha384,
    Test::Sha512,
    Test::Hmac,
    Test::AesCfb,
    Test::Kdf,
    Test::Rsa,
    Test::Ecc,
];

/// The tests TPM2_Startup runs (cheap, and needed by almost every command).
pub const AT_STARTUP: [Test; 7] =
    [Test::Sha1, Test::Sha256, Test::Sha384, Test::Sha512, Test::Hmac, Test::AesCfb, Test::Kdf];

impl Test {
    fn bit(self) -> u16 {
        1 << self as u16
    }

    /// The TPM_ALG_IDs whose implementation this test exercises.
    pub fn algorithms(self) -> &'static [u16] {
        match self {
            Test::Sha1 => &[TPM_ALG_SHA1],
            Test::Sha256 => &[TPM_ALG_SHA256],
            Test::Sha384 => &[TPM_ALG_SHA384],
            Test::Sha512 => &[TPM_ALG_SHA512],
            Test::Hmac => &[TPM_ALG_HMAC],
            Test::AesCfb => &[TPM_ALG_AES, TPM_ALG_CFB],
            Test::Kdf => &[TPM_ALG_KDF1_SP800_108, TPM_ALG_KDF1_SP800_56A],
            Test::Rsa => &[
                TPM_ALG_RSA,
                TPM_ALG_MGF1,
                TPM_ALG_RSASSA,
                TPM_ALG_RSAES,
                TPM_ALG_RSAPSS,
                TPM_ALG_OAEP,
            ],
            Test::Ecc => &[TPM_ALG_ECDSA, TPM_ALG_ECDH, TPM_ALG_ECC],
        }
    }

    /// The test covering `alg`, if it is one of ours.
    pub fn for_algorithm(alg: u16) -> Option<Test> {
        ALL.into_iter().find(|t| t.algorithms().contains(&alg))
    }
}

/// Which tests passed since `_TPM_Init`, and the failure (if any).
#[derive(Default)]
pub struct SelfTests {
    passed: u16,
    /// The test that failed: the TPM is in failure mode.
    pub failed: Option<Test>,
    /// Test-only hook: this test's expected answer is corrupted, so it fails.
    #[cfg(test)]
    pub inject_failure: Option<Test>,
}

impl SelfTests {
    /// `_TPM_Init`: everything is to be tested again (and failure mode ends).
    pub fn init(&mut self) {
        self.passed = 0;
        self.failed = None;
    }

    pub fn passed(&self, test: Test) -> bool {
        self.passed & test.bit() != 0
    }

    /// The algorithms whose tests have not run (TPML_ALG toDoList), in ID order.
    pub fn untested_algorithms(&self) -> Vec<u16> {
        let mut algs: Vec<u16> = ALL
            .into_iter()
            .filter(|t| !self.passed(*t))
            .flat_map(|t| t.algorithms().iter().copied())
            .collect();
        algs.sort_unstable();
        algs
    }

    pub fn all_passed(&self) -> bool {
        ALL.into_iter().all(|t| self.passed(t))
    }
}

/// The self-test failed: the TPM is now in failure mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SelfTestFailed;

impl Tpm {
    /// Runs `tests` (all of them if `again`, else only those not yet passed). A failure puts
    /// the TPM in failure mode.
    pub(crate) fn run_self_tests(
        &mut self,
        tests: &[Test],
        again: bool,
    ) -> Result<(), SelfTestFailed> {
        if self.self_tests.failed.is_some() {
            return Err(SelfTestFailed);
        }
        for &test in tests {
            if !again && self.self_tests.passed(test) {
                continue;
            }
            #[cfg(test)]
            let tamper = self.self_tests.inject_failure == Some(test);
            #[cfg(not(test))]
            let tamper = false;
            if run(self, test, tamper) {
                self.self_tests.passed |= test.bit();
            } else {
                self.self_tests.passed &= !test.bit();
                self.self_tests.failed = Some(test);
                return Err(SelfTestFailed);
            }
        }
        Ok(())
    }

    /// Before a command that may use any algorithm: runs the tests still pending.
    pub(crate) fn test_before_use(&mut self, cc: u32) -> Result<(), SelfTestFailed> {
        if SYMMETRIC_ONLY.contains(&cc) { Ok(()) } else { self.run_self_tests(&ALL, false) }
    }
}

/// Commands that use no RSA or ECC operation (only what TPM2_Startup tests), or that manage
/// the self-tests themselves: they run without testing RSA and ECC first.
const SYMMETRIC_ONLY: &[u32] = &[
    0x134, // NV_Increment
    0x136, // NV_Extend
    0x137, // NV_Write
    0x13C, // PCR_Event
    0x13D, // PCR_Reset
    0x13E, // SequenceComplete
    0x142, // IncrementalSelfTest
    0x143, // SelfTest
    0x144, // Startup
    0x145, // Shutdown
    0x146, // StirRandom
    0x14E, // NV_Read
    0x155, // HMAC
    0x15B, // HMAC_Start
    0x15C, // SequenceUpdate
    0x165, // FlushContext
    0x169, // NV_ReadPublic
    0x17A, // GetCapability
    0x17B, // GetRandom
    0x17C, // GetTestResult
    0x17D, // Hash
    0x17E, // PCR_Read
    0x181, // ReadClock
    0x182, // PCR_Extend
    0x185, // EventSequenceComplete
    0x186, // HashSequenceStart
];

/// Compares a result with the expected answer; `tamper` flips a bit of the answer (test hook).
fn matches(actual: &[u8], expected: &[u8], tamper: bool) -> bool {
    let mut expected = expected.to_vec();
    if tamper && let Some(b) = expected.first_mut() {
        *b ^= 1;
    }
    actual == expected.as_slice()
}

fn run(tpm: &mut Tpm, test: Test, tamper: bool) -> bool {
    match test {
        Test::Sha1 => matches(&hash(HashAlg::Sha1, &[b"abc"]), &SHA1_ABC, tamper),
        Test::Sha256 => matches(&hash(HashAlg::Sha256, &[b"abc"]), &SHA256_ABC, tamper),
        Test::Sha384 => matches(&hash(HashAlg::Sha384, &[b"abc"]), &SHA384_ABC, tamper),
        Test::Sha512 => matches(&hash(HashAlg::Sha512, &[b"abc"]), &SHA512_ABC, tamper),
        Test::Hmac => {
            matches(&hmac(HashAlg::Sha1, b"Jefe", &[HMAC_DATA]), &HMAC_SHA1, tamper)
                && matches(&hmac(HashAlg::Sha256, b"Jefe", &[HMAC_DATA]), &HMAC_SHA256, tamper)
        }
        Test::AesCfb => {
            aes_test(&AES128_KEY, &AES128_CFB_CT, tamper)
                && aes_test(&AES256_KEY, &AES256_CFB_CT, tamper)
        }
        Test::Kdf => {
            let a = kdfa(HashAlg::Sha256, b"key-material", b"ATH", &[1; 32], &[2; 32], 384);
            let e = kdfe(HashAlg::Sha256, &[3; 32], b"SECRET", &[4; 32], &[5; 32], 256);
            matches(&a, &KDFA_ANSWER, tamper) && matches(&e, &KDFE_ANSWER, tamper)
        }
        Test::Rsa => rsa_test(tpm, tamper),
        Test::Ecc => {
            ecc_test(Curve::P256, &P256, HashAlg::Sha256, tamper)
                && ecc_test(Curve::P384, &P384, HashAlg::Sha384, tamper)
        }
    }
}

fn aes_test(key: &[u8], ciphertext: &[u8], tamper: bool) -> bool {
    let mut data = AES_CFB_PT;
    aes_cfb(key, &AES_CFB_IV, &mut data, true);
    let encrypted = matches(&data, ciphertext, tamper);
    aes_cfb(key, &AES_CFB_IV, &mut data, false);
    encrypted && data == AES_CFB_PT
}

/// The private-key operations (decryption, signing) run with a 1024-bit key (the same code
/// as 2048-bit keys, at a sixth of the cost); the public-key operations with a 2048-bit key.
fn rsa_test(tpm: &mut Tpm, tamper: bool) -> bool {
    let Ok(key) = rsa::private_from_prime(&RSA1024_N, 0, &RSA1024_P) else { return false };
    let Ok(public) = rsa::public_key(&RSA2048_N, 0) else { return false };
    let digest = hash(HashAlg::Sha256, &[b"abc"]);
    let mut rng = tpm.rng();
    let oaep = rsa::decrypt(&mut rng, &key, RsaEncScheme::Oaep(HashAlg::Sha1), &[], &RSA_OAEP_CT);
    let rsaes = rsa::decrypt(&mut rng, &key, RsaEncScheme::Rsaes, &[], &RSA_RSAES_CT);
    let signed = rsa::sign(&mut rng, &key, RsaSigScheme::Rsassa(HashAlg::Sha256), &digest);
    let sha256 = HashAlg::Sha256;
    oaep.is_ok_and(|m| matches(&m, &RSA_OAEP_PT, tamper))
        && rsaes.is_ok_and(|m| m.as_slice() == RSA_RSAES_PT)
        && signed.is_ok_and(|s| s == RSA1024_RSASSA_SIG)
        && rsa::verify(&public, RsaSigScheme::Rsassa(sha256), &digest, &RSA2048_RSASSA_SIG)
        && rsa::verify(&public, RsaSigScheme::Rsapss(sha256), &digest, &RSA2048_PSS_SIG)
}

/// An ECC known answer: a key pair, an ECDSA signature of SHA(`"sample"`), and an ECDH peer
/// with the shared x-coordinate.
struct EccVector {
    d: &'static [u8],
    qx: &'static [u8],
    qy: &'static [u8],
    r: &'static [u8],
    s: &'static [u8],
    peer_x: &'static [u8],
    peer_y: &'static [u8],
    z: &'static [u8],
}

fn ecc_test(curve: Curve, v: &EccVector, hash_alg: HashAlg, tamper: bool) -> bool {
    let q = Point { x: v.qx.to_vec(), y: v.qy.to_vec() };
    let peer = Point { x: v.peer_x.to_vec(), y: v.peer_y.to_vec() };
    let digest = hash(hash_alg, &[b"sample"]);
    ecc::public_of(curve, v.d).is_ok_and(|p| matches(&p.x, v.qx, tamper) && p.y == v.qy)
        && ecc::verify(curve, &q, &digest, v.r, v.s)
        && ecc::multiply(curve, v.d, &peer).is_ok_and(|z| z.x == v.z)
}

/// Hex to bytes at compile time (a bad constant fails the build, never a run).
const fn h<const N: usize>(s: &str) -> [u8; N] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lower-case hex digit"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 2 * N, "hex constant of the wrong length");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

// FIPS 180-2 Appendix A/B/C examples: the message "abc".
const SHA1_ABC: [u8; 20] = h("a9993e364706816aba3e25717850c26c9cd0d89d");
const SHA256_ABC: [u8; 32] = h("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
const SHA384_ABC: [u8; 48] = h(
    "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
);
const SHA512_ABC: [u8; 64] = h("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
     2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");

// RFC 2202 test case 2 (HMAC-SHA-1) and RFC 4231 test case 2 (HMAC-SHA-256): key "Jefe".
const HMAC_DATA: &[u8] = b"what do ya want for nothing?";
const HMAC_SHA1: [u8; 20] = h("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
const HMAC_SHA256: [u8; 32] = h("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

// NIST SP 800-38A F.3.13 (CFB128-AES128.Encrypt) and F.3.17 (CFB128-AES256.Encrypt), first
// two blocks.
const AES_CFB_IV: [u8; 16] = h("000102030405060708090a0b0c0d0e0f");
const AES_CFB_PT: [u8; 32] = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
const AES128_KEY: [u8; 16] = h("2b7e151628aed2a6abf7158809cf4f3c");
const AES128_CFB_CT: [u8; 32] =
    h("3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93fcde3cdad9f1ce58b");
const AES256_KEY: [u8; 32] = h("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4");
const AES256_CFB_CT: [u8; 32] =
    h("dc7e84bfda79164b7ecd8486985d386039ffed143b28b1c832113c6331e5407b");

// KDFa(SHA-256, "key-material", "ATH", 32 x 01, 32 x 02, 384) and KDFe(SHA-256, 32 x 03,
// "SECRET", 32 x 04, 32 x 05, 256): the known answers of tpm.md §4, cross-checked there with
// generic SP800-108 (counter mode, HMAC) and SP800-56A (concatenation KDF) implementations.
const KDFA_ANSWER: [u8; 48] = h("38ac39596de6ef55c35a66fd80b860c8f556985957d72cbdbfc4c640559bbeff\
     75940ee4d725ea3a7cb25d8c726edf58");
const KDFE_ANSWER: [u8; 32] = h("d4f962b1effb043a5d1789fa55fd5301b31f0645202c5c1b1a2104eebdebe23a");

// RSA: the keys of "Example 1" (1024 bits) and "Example 10" (2048 bits) in RSA Laboratories'
// PKCS #1 v2.1 OAEP test vectors (oaep-vect.txt; e = 65537); the first prime of Example 1
// (recovered from n, e, d); OAEP Example 1.1 (SHA-1, MGF1-SHA-1, empty label).
const RSA1024_N: [u8; 128] = h("a8b3b284af8eb50b387034a860f146c4919f318763cd6c5598c8ae4811a1e0ab\
     c4c7e0b082d693a5e7fced675cf4668512772c0cbc64a742c6c630f533c8cc72\
     f62ae833c40bf25842e984bb78bdbf97c0107d55bdb662f5c4e0fab9845cb514\
     8ef7392dd3aaff93ae1e6b667bb3d4247616d4f5ba10d4cfd226de88d39f16fb");
const RSA1024_P: [u8; 64] = h("d32737e7267ffe1341b2d5c0d150a81b586fb3132bed2f8d5262864a9cb9f30a\
     f38be448598d413a172efb802c21acf1c11c520c2f26a471dcad212eac7ca39d");
const RSA_OAEP_PT: [u8; 28] = h("6628194e12073db03ba94cda9ef9532397d50dba79b987004afefe34");
const RSA_OAEP_CT: [u8; 128] =
    h("354fe67b4a126d5d35fe36c777791a3f7ba13def484e2d3908aff722fad468fb\
     21696de95d0be911c2d3174f8afcc201035f7b6d8e69402de5451618c21a535f\
     a9d7bfc5b8dd9fc243f8cf927db31322d6e881eaa91a996170e657a05a266426\
     d98c88003f8477c1227094a0d9fa1e8c4024309ce1ecccb5210035d47ac72e8a");
// With the Example 1 key, computed with OpenSSL (Python `cryptography`); RSASSA also checked
// with plain integer arithmetic (EMSA-PKCS1-v1_5 encoding, then m^d mod n):
// RSASSA-PKCS1-v1_5 with SHA-256 of SHA-256("abc") (deterministic);
const RSA1024_RSASSA_SIG: [u8; 128] =
    h("a6f549b299c8e771be7926f6c286062d345188d74a7c56760ba2b43a35ea1b89\
     a69efdcd91a09a4c0a7e59511de390432cc52732e92f261bc06a9a913a86bc4e\
     26d05b5b90a6f2d2881ae93f09a0b801f1c256b520850e04032beaea888789b9\
     39bf1a0e8d4d757988c01544cc9cf904d22cc49c645d78244f764ed0bedfd9e1");
// RSAES-PKCS1-v1_5 encryption of "TPM self-test".
const RSA_RSAES_PT: &[u8] = b"TPM self-test";
const RSA_RSAES_CT: [u8; 128] =
    h("0e4b83688232fce248efff27e5589d793adf35e04289364b605e849508d6da60\
     e085acc5d4cc378b320e3820d4ebbb118f997371ba745d3d0359f2b943c19791\
     67ca508825aea411578a3dcbd5858a75fc90812527a670771b16f7178d9fbb36\
     d0ca21edc1d816ee44584cabe599ea549786ac15bc4bf258bc13ec0acd7a633d");
// The Example 10 modulus; with its private key (OpenSSL, as above):
const RSA2048_N: [u8; 256] = h("ae45ed5601cec6b8cc05f803935c674ddbe0d75c4c09fd7951fc6b0caec313a8\
     df39970c518bffba5ed68f3f0d7f22a4029d413f1ae07e4ebe9e4177ce23e7f5\
     404b569e4ee1bdcf3c1fb03ef113802d4f855eb9b5134b5a7c8085adcae6fa2f\
     a1417ec3763be171b0c62b760ede23c12ad92b980884c641f5a8fac26bdad4a0\
     3381a22fe1b754885094c82506d4019a535a286afeb271bb9ba592de18dcf600\
     c2aeeae56e02f7cf79fc14cf3bdc7cd84febbbf950ca90304b2219a7aa063aef\
     a2c3c1980e560cd64afe779585b6107657b957857efde6010988ab7de417fc88\
     d8f384c4e6e72c3f943e0c31c0c4a5cc36f879d8a3ac9d7d59860eaada6b83bb");
// RSASSA-PKCS1-v1_5 with SHA-256 of SHA-256("abc") (deterministic);
const RSA2048_RSASSA_SIG: [u8; 256] =
    h("17f5ee59178c7c2c75317e6a67c6a5f3317636370caa2cba4d12069d1c676517\
     19698c011c6dd6f82bc3ea0b8b18dacf0b4341d7c93fa5a1e49fd98225e79e0d\
     267d9fb4073ee771c656ac2e0acf30ca2eadd3194d8851ae479defec5579f192\
     fad6feddb8390b061cf8a7696dc5a170dc52f7214d33de592ddf426b9868a57d\
     0f64c7bdae77b8c3b8d1342707100701c90b9b85aeef93bed6f103ad02aeb583\
     f19c073a6e2ad91b87bb4e67ddfc5fb991b35b4ddcae152c2ab50786a1b7d8ab\
     1f223d40d4e50df028d82572a36692051a8d69cd24406257f36c7901dd4af769\
     c0eb914e7e6e900ae443b89969a7490c927de68df81c9aa69681b5a347e3ebb0");
// RSASSA-PSS (SHA-256, MGF1-SHA-256, 32-octet salt) of SHA-256("abc");
const RSA2048_PSS_SIG: [u8; 256] =
    h("4226931a4a2d582b0366f93b20630b3ee0479aae8b46da7eb56f20aa2027f418\
     a725718de3aca062b7c93de8efcd814ad095c094dcaabad7cb1b921b03812007\
     7f4d587d815d45e6f60452e784bbb518a3808b4995697b6c7887bfaf94ff314a\
     4d6097c39da2c2d34998fdc15531c9bcf4ac914841c5e6b5c03b28867dd19357\
     83dd9df10283ff81a68e1615e44a80974fa44ecb69c5df442440280f3d26ecaf\
     62ea49ffce06a0c8daffec43872d40c9c327dbc49261c0d8f900cfe548f96983\
     bf573a2ccfcaeab1580c1b432d79c492450bd6c3b9933b28f5b2e7cb2bc432df\
     50e3b3decdfa8fd47af14cc7d188de700d5da45c7cef85db47b9d40ac4f29187");

// ECC: RFC 6979 A.2.5 (P-256) and A.2.6 (P-384): private key, public key, and the ECDSA
// signature of "sample" with SHA-256 / SHA-384. ECDH: the peer is 0x1234567 * G (P-256) and
// 0x7654321 * G (P-384); peer point and shared x-coordinate computed with OpenSSL (Python
// `cryptography`).
const P256: EccVector = EccVector {
    d: &h::<32>("c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"),
    qx: &h::<32>("60fed4ba255a9d31c961eb74c6356d68c049b8923b61fa6ce669622e60f29fb6"),
    qy: &h::<32>("7903fe1008b8bc99a41ae9e95628bc64f2f1b20c2d7e9f5177a3c294d4462299"),
    r: &h::<32>("efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716"),
    s: &h::<32>("f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8"),
    peer_x: &h::<32>("088bb9ff22ab291a74c86fc677ba897baadee370cc6129b82d170ba3fc26415c"),
    peer_y: &h::<32>("442da9a716067956d91eaa02b93ad409490e87cd5e758ea6a331a1deb75ba846"),
    z: &h::<32>("dfcd2b5a60b4c80e0aae60348258e03184280f487a10b54adcecb7e504fec09a"),
};
const P384: EccVector = EccVector {
    d: &h::<48>(
        "6b9d3dad2e1b8c1c05b19875b6659f4de23c3b667bf297ba9aa47740787137d896d5724e4c70a825f872c9ea60d2edf5",
    ),
    qx: &h::<48>(
        "ec3a4e415b4e19a4568618029f427fa5da9a8bc4ae92e02e06aae5286b300c64def8f0ea9055866064a254515480bc13",
    ),
    qy: &h::<48>(
        "8015d9b72d7d57244ea8ef9ac0c621896708a59367f9dfb9f54ca84b3f1c9db1288b231c3ae0d4fe7344fd2533264720",
    ),
    r: &h::<48>(
        "94edbb92a5ecb8aad4736e56c691916b3f88140666ce9fa73d64c4ea95ad133c81a648152e44acf96e36dd1e80fabe46",
    ),
    s: &h::<48>(
        "99ef4aeb15f178cea1fe40db2603138f130e740a19624526203b6351d0a3a94fa329c145786e679e7b82c71a38628ac8",
    ),
    peer_x: &h::<48>(
        "8568a35a879b0d506132993c6d911d3136a731409ab8c5d26fd7a01e81425281453a6c6adf4cd2f38c77a5042815ea48",
    ),
    peer_y: &h::<48>(
        "e85ac9cdeed95c699ca799b9c730b120f39454a5373ea1f6c64c4319553a389a28f46b7a4617ce87b26bde1769573a09",
    ),
    z: &h::<48>(
        "e9df2512f34c8425e9d910e2bb8af49a335ed9a43845f6859ade8c498121014b2070b880e0131ef62d2627b930840348",
    ),
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientId, EntropyError, EntropySource};
    use alloc::boxed::Box;

    struct Fixed;

    impl EntropySource for Fixed {
        fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
            buf.fill(7);
            Ok(())
        }
    }

    const C: ClientId = ClientId(1);

    fn command(cc: u32, params: &[u8]) -> Vec<u8> {
        let mut v = alloc::vec![0x80, 0x01];
        v.extend_from_slice(&(10 + params.len() as u32).to_be_bytes());
        v.extend_from_slice(&cc.to_be_bytes());
        v.extend_from_slice(params);
        v
    }

    fn rc(rsp: &[u8]) -> u32 {
        u32::from_be_bytes([rsp[6], rsp[7], rsp[8], rsp[9]])
    }

    fn powered(inject: Option<Test>) -> Tpm {
        let mut tpm = Tpm::manufacture(Box::new(Fixed)).expect("fixed entropy");
        tpm.self_tests.inject_failure = inject;
        tpm.power_on();
        tpm
    }

    fn startup(tpm: &mut Tpm) -> u32 {
        rc(&tpm.execute(C, 0, &command(0x144, &[0, 0])))
    }

    /// GetTestResult: (outData, testResult).
    fn test_result(tpm: &mut Tpm) -> (Vec<u8>, u32) {
        let rsp = tpm.execute(C, 0, &command(0x17C, &[]));
        assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
        let len = usize::from(u16::from_be_bytes([rsp[10], rsp[11]]));
        let data = rsp[12..12 + len].to_vec();
        let result = &rsp[12 + len..];
        assert_eq!(result.len(), 4);
        (data, u32::from_be_bytes([result[0], result[1], result[2], result[3]]))
    }

    /// IncrementalSelfTest(toTest): (rc, toDoList).
    fn incremental(tpm: &mut Tpm, algs: &[u16]) -> (u32, Vec<u16>) {
        let mut p = (algs.len() as u32).to_be_bytes().to_vec();
        for a in algs {
            p.extend_from_slice(&a.to_be_bytes());
        }
        let rsp = tpm.execute(C, 0, &command(0x142, &p));
        if rc(&rsp) != 0 {
            return (rc(&rsp), Vec::new());
        }
        let list = rsp[14..].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        (0, list)
    }

    /// TPM2_CreatePrimary of an ECC P-256 signing key in the null hierarchy: uses ECC.
    fn create_primary_ecc() -> Vec<u8> {
        let mut p = 0x4000_0007u32.to_be_bytes().to_vec();
        let auth = [0x40, 0, 0, 9, 0, 0, 1, 0, 0];
        p.extend_from_slice(&(auth.len() as u32).to_be_bytes());
        p.extend_from_slice(&auth);
        p.extend_from_slice(&[0, 4, 0, 0, 0, 0]); // inSensitive
        let public = [
            0, 0x23, 0, 0x0B, 0, 0x04, 0, 0x72, 0,
            0, // ECC, SHA-256, sign|user|fixed*|sensitive
            0, 0x10, 0, 0x18, 0, 0x0B, 0, 0x03, 0, 0x10, 0, 0, 0, 0,
        ];
        p.extend_from_slice(&(public.len() as u16).to_be_bytes());
        p.extend_from_slice(&public);
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // outsideInfo, creationPCR
        let mut v = alloc::vec![0x80, 0x02];
        v.extend_from_slice(&(10 + p.len() as u32).to_be_bytes());
        v.extend_from_slice(&0x131u32.to_be_bytes());
        v.extend_from_slice(&p);
        v
    }

    #[test]
    fn every_known_answer_passes() {
        let mut tpm = powered(None);
        for test in ALL {
            assert!(run(&mut tpm, test, false), "{test:?}");
            assert!(!run(&mut tpm, test, true), "{test:?} with a corrupted answer");
        }
    }

    #[test]
    fn every_implemented_test_algorithm_is_listed() {
        for test in ALL {
            for alg in test.algorithms() {
                assert!(crate::capability::implemented(*alg), "{alg:#x}");
                assert_eq!(Test::for_algorithm(*alg), Some(test));
            }
        }
    }

    #[test]
    fn startup_tests_symmetric_rest_on_demand() {
        let mut tpm = powered(None);
        assert_eq!(startup(&mut tpm), 0);
        // RSA and ECC are still to be tested.
        assert_eq!(test_result(&mut tpm), (Vec::new(), TPM_RC_NEEDS_TEST_VALUE));
        let (rc0, to_do) = incremental(&mut tpm, &[]);
        assert_eq!(rc0, 0);
        let mut expected: Vec<u16> =
            [Test::Rsa, Test::Ecc].iter().flat_map(|t| t.algorithms().iter().copied()).collect();
        expected.sort_unstable();
        assert_eq!(to_do, expected);
        // Testing ECDSA tests the ECC group; RSA stays.
        let (_, to_do) = incremental(&mut tpm, &[TPM_ALG_ECDSA, TPM_ALG_XOR]);
        assert_eq!(to_do, Test::Rsa.algorithms().to_vec());
        // An algorithm we do not implement (SM3) and TPM_ALG_NULL are TPM_RC_VALUE.
        assert_eq!(incremental(&mut tpm, &[0x0012]).0, 0x1C4);
        assert_eq!(incremental(&mut tpm, &[TPM_ALG_SHA1, TPM_ALG_NULL]).0, 0x1C4);
        // A command that may use RSA runs the rest first.
        let rsp = tpm.execute(C, 0, &create_primary_ecc());
        assert_eq!(rc(&rsp), 0, "{rsp:02x?}");
        assert!(tpm.self_tests.all_passed());
        assert_eq!(test_result(&mut tpm), (Vec::new(), 0));
        assert_eq!(incremental(&mut tpm, &[TPM_ALG_RSA]), (0, Vec::new()));
        // _TPM_Init starts over.
        tpm.reset();
        assert_eq!(startup(&mut tpm), 0);
        assert_eq!(test_result(&mut tpm).1, TPM_RC_NEEDS_TEST_VALUE);
        assert_eq!(rc(&tpm.execute(C, 0, &command(0x143, &[0]))), 0);
        assert_eq!(test_result(&mut tpm), (Vec::new(), 0));
        assert_eq!(rc(&tpm.execute(C, 0, &command(0x143, &[1]))), 0);
        assert_eq!(test_result(&mut tpm), (Vec::new(), 0));
    }

    const TPM_RC_NEEDS_TEST_VALUE: u32 = 0x153;

    /// Only GetTestResult and GetCapability (no sessions) answer in failure mode.
    fn assert_failure_mode(tpm: &mut Tpm, failed: Test) {
        let (data, result) = test_result(tpm);
        assert_eq!(result, 0x101);
        let algs: Vec<u16> = data.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        assert_eq!(algs, failed.algorithms());
        // GetCapability(TPM_PROPERTIES, TPM_PT_MANUFACTURER, 1).
        let cap = command(0x17A, &[0, 0, 0, 6, 0, 0, 1, 5, 0, 0, 0, 1]);
        assert_eq!(rc(&tpm.execute(C, 0, &cap)), 0);
        // Everything else: TPM_RC_FAILURE, a bare header.
        for c in [command(0x17B, &[0, 8]), command(0x17E, &[0, 0, 0, 0]), command(0x143, &[1])] {
            assert_eq!(tpm.execute(C, 0, &c), [0x80, 1, 0, 0, 0, 10, 0, 0, 1, 1]);
        }
        assert_eq!(rc(&tpm.execute(C, 0, &create_primary_ecc())), 0x101);
    }

    #[test]
    fn failing_startup_test_is_failure_mode() {
        let mut tpm = powered(Some(Test::Sha256));
        assert_eq!(startup(&mut tpm), 0x101);
        assert_failure_mode(&mut tpm, Test::Sha256);
        // _TPM_Init tests again: still broken, still failure mode.
        tpm.reset();
        assert_eq!(startup(&mut tpm), 0x101);
        assert_failure_mode(&mut tpm, Test::Sha256);
        // Repaired: the next _TPM_Init leaves failure mode.
        tpm.self_tests.inject_failure = None;
        tpm.reset();
        assert_eq!(startup(&mut tpm), 0);
        assert_eq!(test_result(&mut tpm).1, TPM_RC_NEEDS_TEST_VALUE);
    }

    #[test]
    fn failing_on_demand_test_is_failure_mode() {
        for failing in [Test::Rsa, Test::Ecc] {
            let mut tpm = powered(Some(failing));
            assert_eq!(startup(&mut tpm), 0);
            // PCR_Read needs no asymmetric test.
            assert_eq!(rc(&tpm.execute(C, 0, &command(0x17E, &[0, 0, 0, 0]))), 0);
            assert_eq!(rc(&tpm.execute(C, 0, &create_primary_ecc())), 0x101);
            assert_failure_mode(&mut tpm, failing);
        }
        // SelfTest and IncrementalSelfTest find the failure too.
        let mut tpm = powered(Some(Test::Ecc));
        assert_eq!(startup(&mut tpm), 0);
        assert_eq!(rc(&tpm.execute(C, 0, &command(0x143, &[0]))), 0x101);
        assert_failure_mode(&mut tpm, Test::Ecc);
        let mut tpm = powered(Some(Test::Rsa));
        assert_eq!(startup(&mut tpm), 0);
        assert_eq!(incremental(&mut tpm, &[TPM_ALG_ECDSA]), (0, Test::Rsa.algorithms().to_vec()));
        assert_eq!(incremental(&mut tpm, &[TPM_ALG_OAEP]).0, 0x101);
        assert_failure_mode(&mut tpm, Test::Rsa);
    }
}
