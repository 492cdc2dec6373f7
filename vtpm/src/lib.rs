//! # vtpm: a TPM 2.0 engine
//!
//! A TPM 2.0 (Library spec Part 2/3, revision 1.59 and later) written in Rust for the SVSM's
//! virtual TPM. It is `no_std` + `alloc`; the `std` feature (default) adds host conveniences
//! (OS entropy, a wall clock) for the simulator and tests.
//!
//! The whole TPM state lives in memory: [`Tpm::manufacture`] creates fresh seeds from the
//! caller's entropy source, and nothing persists across instances ("NV" is RAM that survives
//! power cycles of the same instance only).
//!
//! ## Using it
//!
//! ```
//! # #[cfg(feature = "std")] {
//! use vtpm::{ClientId, OsEntropy, Tpm};
//! let mut tpm = Tpm::manufacture(Box::new(OsEntropy)).expect("entropy");
//! tpm.power_on();
//! // TPM2_Startup(TPM_SU_CLEAR)
//! let rsp = tpm.execute(ClientId(1), 0, &[0x80, 0x01, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0]);
//! assert_eq!(rsp, [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);
//! # }
//! ```
//!
//! * [`Tpm::execute`] runs one command for one client at one locality and always returns a
//!   well-formed response; malformed input gets the TPM_RC the spec prescribes, never a panic.
//! * Transient objects, sequences and loaded sessions belong to the [`ClientId`] that created
//!   them (like a resource manager: other clients cannot see or use them);
//!   [`Tpm::client_gone`] flushes them. Saved contexts may be loaded by any client.
//! * [`Tpm::power_on`] is `_TPM_Init` after power-up (a repeated power-on is a no-op);
//!   [`Tpm::power_off`] and [`Tpm::reset`] model power loss and a reset signal;
//!   [`Tpm::hash_start`]/[`Tpm::hash_data`]/[`Tpm::hash_end`] are the locality-4 H-CRTM
//!   sequence (`_TPM_Hash_Start/Data/End`).
//! * Time comes from a [`TimeSource`] (`std`: the monotonic clock); it drives TPM2_ReadClock and
//!   dictionary-attack recovery.
//! * [`Tpm::memory_in_use`] estimates the heap held by the TPM state, for benchmarks.
//!
//! ## What is implemented
//!
//! 103 commands (GetCapability(TPM_CAP_COMMANDS) lists exactly these):
//!
//! * startup and health: Startup, Shutdown (CLEAR/STATE: TPM Reset, Restart, Resume), SelfTest,
//!   IncrementalSelfTest, GetTestResult, GetRandom, StirRandom, GetCapability (ALGS, HANDLES,
//!   COMMANDS, PP_COMMANDS, AUDIT_COMMANDS, PCRS, TPM_PROPERTIES, PCR_PROPERTIES, ECC_CURVES,
//!   AUTH_POLICIES, ACT), TestParms, ReadClock, ClockSet, ClockRateAdjust;
//! * PCRs (SHA-1/256/384 banks, 24 PCRs, the reference PC Client locality table): PCR_Extend,
//!   PCR_Event, PCR_Read, PCR_Reset, PCR_Allocate; Hash, HMAC, HashSequenceStart, HMAC_Start,
//!   SequenceUpdate, SequenceComplete, EventSequenceComplete;
//! * objects: CreatePrimary, Create, CreateLoaded, Load, LoadExternal, ReadPublic,
//!   ObjectChangeAuth, EvictControl, Unseal, FlushContext, ContextSave, ContextLoad,
//!   Duplicate, Import;
//! * use: Sign, VerifySignature, RSA_Encrypt, RSA_Decrypt (OAEP, RSAES, raw), ECDH_KeyGen,
//!   ECDH_ZGen, ECC_Parameters, EncryptDecrypt, EncryptDecrypt2, Commit (ECDAA), MakeCredential,
//!   ActivateCredential; attestation: Quote, Certify, CertifyCreation, GetTime,
//!   GetSessionAuditDigest, GetCommandAuditDigest, NV_Certify;
//! * sessions: StartAuthSession (HMAC, policy, trial; unsalted, RSA-OAEP- or ECDH-salted;
//!   bound), password/HMAC/policy authorization, AES-CFB and XOR parameter encryption, session
//!   audit; command audit (SetCommandCodeAuditStatus);
//! * policy: PolicySigned, PolicySecret, PolicyTicket, PolicyOR, PolicyPCR, PolicyLocality,
//!   PolicyCommandCode, PolicyPhysicalPresence, PolicyCpHash, PolicyNameHash,
//!   PolicyDuplicationSelect, PolicyAuthorize, PolicyAuthValue, PolicyPassword, PolicyGetDigest,
//!   PolicyRestart, PolicyNvWritten, PolicyTemplate, PolicyNV, PolicyCounterTimer,
//!   PolicyAuthorizeNV;
//! * NV (RAM): NV_DefineSpace, NV_UndefineSpace, NV_UndefineSpaceSpecial, NV_ReadPublic,
//!   NV_Write, NV_Increment, NV_Extend, NV_SetBits, NV_WriteLock, NV_GlobalWriteLock, NV_Read,
//!   NV_ReadLock, NV_ChangeAuth;
//! * hierarchies: HierarchyChangeAuth, HierarchyControl, SetPrimaryPolicy, Clear, ClearControl,
//!   ChangeEPS, ChangePPS, PP_Commands, DictionaryAttackLockReset,
//!   DictionaryAttackParameters (dictionary-attack lockout with the reference defaults).
//!
//! Algorithms: RSA 1024/2048/3072 (RSASSA, RSAPSS, OAEP, RSAES), ECC NIST P-256/P-384 and
//! BN_P256 (ECDSA, ECDAA, ECDH), SHA-1/256/384/512, HMAC, AES-128/192/256 in CFB mode, XOR,
//! KDFa, KDFe, MGF1. BN_P256 (the curve TPMs offer for ECDAA attestation keys) is our own
//! group arithmetic on crypto-bigint ([`crypto::bn_p256`]); the others are RustCrypto's.
//!
//! ## Deliberately left out
//!
//! * The BN_P638 and SM2 curves, EC-Schnorr, SM2 and ECMQV schemes, EC_Ephemeral and
//!   ZGen_2Phase: no RustCrypto crate implements these, and no client in scope (Linux, OVMF,
//!   systemd, clevis, Keylime, tss-esapi's suite) uses them.
//! * Symmetric modes other than CFB (CTR, OFB, CBC, ECB) and CMAC: parameter encryption and
//!   storage use CFB only; no in-scope client uses the others.
//! * PCR_SetAuthPolicy / PCR_SetAuthValue (the PCR authorization groups), Rewrap, CertifyX509,
//!   SetAlgorithmSet, FieldUpgrade*, FirmwareRead, the Attached Component (AC_*) and ACT
//!   commands, and the v1.83+ additions: not needed by any in-scope client; they answer
//!   TPM_RC_COMMAND_CODE like every unimplemented command.
//! * Derived objects (derivation parents, TPM2_CreateLoaded under a keyed-hash parent):
//!   template validation answers TPM_RC_TYPE.
//! * Persistent storage: by design nothing outlives the `Tpm` value.
//!
//! ## Design decisions
//!
//! * **Marshalling is our own** (`marshal`, `types`): `tpm2-protocol` 1.2.3 was evaluated (it
//!   parses all command frames without alloc or panics) but its errors (`UnexpectedEnd`,
//!   `VariantMissing`, ...) do not carry the TPM_RC the spec prescribes per type (TPM_RC_HASH,
//!   TPM_RC_SCHEME, TPM_RC_KEY_SIZE, TPM_RC_CURVE, ...) nor the parameter number, its
//!   fixed-capacity types would be copied into our heap structures anyway, and its API changed
//!   incompatibly across recent releases. `cocoon-tpm-tpm2-interface` has no command or
//!   response structures. A strict cursor (`marshal::Reader`) plus one parse function per TPM
//!   type gives exact response codes in a few hundred lines.
//! * **Crypto is RustCrypto** (sha1/sha2 0.11, hmac 0.13, aes 0.9, cfb-mode 0.9, rsa 0.10,
//!   p256/p384 0.14, ecdsa 0.17), not cocoon-tpm-crypto (which is on the older digest 0.10
//!   generation). KDFa/KDFe and the DRBGs are small and written here (`crypto`); MGF1 is the
//!   `rsa` crate's (inside OAEP and PSS).
//! * **Primary keys are derived**: a KDFa-based stream seeded from the hierarchy seed, the
//!   template's name and the sensitive data drives key generation, so the same seed and template
//!   always give the same key (the values differ from other TPMs, whose seeds differ anyway).
//! * **Self-tests are real known-answer tests** (`selftest`): TPM2_Startup tests the hashes,
//!   HMAC, AES-CFB and the KDFs (~10-30 us); RSA and ECC (~3 ms on the host) are tested by
//!   TPM2_SelfTest / TPM2_IncrementalSelfTest or before the first command that may use them. A
//!   failing test puts the TPM in failure mode (TPM_RC_FAILURE to all but GetTestResult and
//!   GetCapability) until the next `_TPM_Init`.
//! * **Secrets are zeroized on drop** (`zeroize::Zeroizing`, the crates' own `ZeroizeOnDrop`).

#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

mod auth;
mod capability;
mod commands;
pub mod constants;
mod context;
pub mod crypto;
mod dispatch;
mod entity;
pub mod marshal;
mod nv;
mod object;
mod pcr;
pub mod rc;
mod selftest;
mod session;
mod state;
mod types;

use alloc::boxed::Box;
use alloc::vec::Vec;

pub use state::Tpm;

/// Identifies a client (a connection) of the TPM; transient state is owned per client.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct ClientId(pub u32);

/// The entropy source failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EntropyError;

/// Manufacturing failed (no entropy).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ManufactureError {
    /// The entropy source could not deliver the seeds.
    Entropy,
}

impl From<EntropyError> for ManufactureError {
    fn from(_: EntropyError) -> Self {
        ManufactureError::Entropy
    }
}

impl core::fmt::Display for ManufactureError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ManufactureError::Entropy => {
                f.write_str("the entropy source failed while creating the TPM seeds")
            }
        }
    }
}

/// A source of true random bytes (RDSEED, the OS, ...) that seeds and reseeds the TPM's DRBG.
pub trait EntropySource {
    /// Fills `buf` completely with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// A monotonic millisecond clock.
pub trait TimeSource {
    /// Milliseconds since an arbitrary fixed point; never decreases.
    fn now_ms(&mut self) -> u64;
}

/// A clock that does not advance (the default without `std` until one is installed).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrozenTime;

impl TimeSource for FrozenTime {
    fn now_ms(&mut self) -> u64 {
        0
    }
}

/// Entropy from the operating system (`getrandom`).
#[cfg(feature = "std")]
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

#[cfg(feature = "std")]
impl EntropySource for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        getrandom::fill(buf).map_err(|_| EntropyError)
    }
}

/// The host's monotonic clock.
#[cfg(feature = "std")]
#[derive(Debug, Clone, Copy)]
pub struct StdTime(std::time::Instant);

#[cfg(feature = "std")]
impl Default for StdTime {
    fn default() -> Self {
        StdTime(std::time::Instant::now())
    }
}

#[cfg(feature = "std")]
impl TimeSource for StdTime {
    fn now_ms(&mut self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The default clock of [`Tpm::manufacture`].
fn default_time() -> Box<dyn TimeSource + Send> {
    #[cfg(feature = "std")]
    {
        Box::new(StdTime::default())
    }
    #[cfg(not(feature = "std"))]
    {
        Box::new(FrozenTime)
    }
}

/// A response consisting of only a header with `rc` (how every failure is reported).
pub(crate) fn error_response(tag: u16, rc: rc::Rc) -> Vec<u8> {
    let mut v = Vec::with_capacity(10);
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&10u32.to_be_bytes());
    v.extend_from_slice(&rc.to_be_bytes());
    v
}
