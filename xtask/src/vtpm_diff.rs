//! The differential checks: hand-built commands sent to our vTPM and to
//! swtpm (libtpms) in lockstep, responses compared byte for byte where
//! libtpms is deterministic (tpm.md §11), with the few vendor- and
//! implementation-defined values masked and said why.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, ensure};

use crate::vtpm_checks::capability_entries;
use crate::vtpm_cmd::{
    Command, Marshal, Reader, Response, alg, attr, cap, cc, create_primary, flush_context,
    get_capability, hex, pcr_extend, pcr_read, public_area, rh, shutdown_clear, startup_clear,
};
use crate::vtpm_conformance::Report;
use crate::vtpm_tools::{BANKS, Fixtures, digest};
use crate::vtpm_wire::{Wire, response_code};

/// Our TPM and the reference, connected; commands go to both.
struct Diff {
    ours: Wire,
    theirs: Wire,
}

/// A handle that may differ between the two TPMs (transient objects).
#[derive(Clone, Copy)]
struct Pair {
    ours: u32,
    theirs: u32,
}

fn mismatch(command: &[u8], ours: &[u8], theirs: &[u8]) -> anyhow::Error {
    anyhow::anyhow!(
        "responses differ\n  command {}\n  ours    {}\n  swtpm   {}",
        hex(command),
        hex(ours),
        hex(theirs)
    )
}

impl Diff {
    fn both(&mut self, command: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let ours = self.ours.transact_retrying(command).context("our vTPM")?;
        let theirs = self.theirs.transact_retrying(command).context("swtpm")?;
        Ok((ours, theirs))
    }

    /// Sends `command` to both; the responses must be identical.
    fn same(&mut self, command: &Command) -> Result<Vec<u8>> {
        let bytes = command.bytes();
        let (ours, theirs) = self.both(&bytes)?;
        if ours != theirs {
            return Err(mismatch(&bytes, &ours, &theirs));
        }
        Ok(ours)
    }

    /// Like [`Diff::same`] for raw bytes.
    fn same_raw(&mut self, bytes: &[u8]) -> Result<Vec<u8>> {
        let (ours, theirs) = self.both(bytes)?;
        if ours != theirs {
            return Err(mismatch(bytes, &ours, &theirs));
        }
        Ok(ours)
    }

    /// Identical responses that are also successes.
    fn same_ok(&mut self, command: &Command) -> Result<Vec<u8>> {
        let response = self.same(command)?;
        ensure!(
            response_code(&response) == 0,
            "both TPMs answered {:#x} to {}",
            response_code(&response),
            hex(&command.bytes())
        );
        Ok(response)
    }

    /// Sends a command that returns a transient handle; the responses must
    /// be identical apart from the handle value (an implementation choice).
    fn same_loaded(&mut self, command: &Command) -> Result<(Pair, Vec<u8>)> {
        let bytes = command.bytes();
        let (ours, theirs) = self.both(&bytes)?;
        let handle = |r: &[u8]| -> Result<u32> {
            ensure!(response_code(r) == 0 && r.len() >= 14, "load failed: {}", hex(r));
            Ok(u32::from_be_bytes([r[10], r[11], r[12], r[13]]))
        };
        let pair = Pair {
            ours: handle(&ours).context("our vTPM")?,
            theirs: handle(&theirs).context("swtpm")?,
        };
        ensure!(pair.ours >> 24 == 0x80, "our handle {:#x} is not transient", pair.ours);
        if ours[..10] != theirs[..10] || ours[14..] != theirs[14..] {
            return Err(mismatch(&bytes, &ours, &theirs));
        }
        Ok((pair, ours))
    }

    /// The same command for a handle that differs between the TPMs.
    fn same_with(&mut self, handle: Pair, build: impl Fn(u32) -> Command) -> Result<Vec<u8>> {
        let (a, b) = (build(handle.ours).bytes(), build(handle.theirs).bytes());
        let ours = self.ours.transact_retrying(&a).context("our vTPM")?;
        let theirs = self.theirs.transact_retrying(&b).context("swtpm")?;
        if ours != theirs {
            return Err(mismatch(&a, &ours, &theirs));
        }
        ensure!(response_code(&ours) == 0, "both TPMs answered {:#x}", response_code(&ours));
        Ok(ours)
    }

    /// Flushes every transient object and sequence in both TPMs, so that a
    /// failed check cannot starve the next one of object slots.
    fn flush_all(&mut self) -> Result<()> {
        for wire in [&mut self.ours, &mut self.theirs] {
            for entry in capability_entries(wire, cap::HANDLES, 0x8000_0000, 4)? {
                let handle = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
                if handle >> 24 == 0x80 {
                    wire.transact(&flush_context(handle).bytes())?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self, handle: Pair) -> Result<()> {
        self.same_with(handle, flush_context).map(|_| ())
    }
}

/// (key, value) maps of a capability for both TPMs.
fn both_entries(
    d: &mut Diff,
    capability: u32,
    first: u32,
    entry_size: usize,
) -> Result<[BTreeMap<u32, Vec<u8>>; 2]> {
    let keyed = |entries: Vec<Vec<u8>>| -> BTreeMap<u32, Vec<u8>> {
        entries
            .into_iter()
            .map(|e| {
                let key = match entry_size {
                    2 | 6 => u32::from(u16::from_be_bytes([e[0], e[1]])),
                    _ => u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
                };
                let key = if capability == cap::COMMANDS { key & 0xffff } else { key };
                (key, e)
            })
            .collect()
    };
    Ok([
        keyed(capability_entries(&mut d.ours, capability, first, entry_size).context("our vTPM")?),
        keyed(capability_entries(&mut d.theirs, capability, first, entry_size).context("swtpm")?),
    ])
}

/// TPM_PT properties whose values are the vendor's or the implementation's
/// own choice (identity, dates, spec revision, capacities, the format of
/// context blobs, the number of commands): compared for presence only.
const IMPLEMENTATION_PROPERTIES: &[(u32, &str)] = &[
    (0x102, "REVISION"),
    (0x103, "DAY_OF_YEAR"),
    (0x104, "YEAR"),
    (0x105, "MANUFACTURER"),
    (0x106, "VENDOR_STRING_1"),
    (0x107, "VENDOR_STRING_2"),
    (0x108, "VENDOR_STRING_3"),
    (0x109, "VENDOR_STRING_4"),
    (0x10A, "VENDOR_TPM_TYPE"),
    (0x10B, "FIRMWARE_VERSION_1"),
    (0x10C, "FIRMWARE_VERSION_2"),
    (0x10E, "HR_TRANSIENT_MIN"),
    (0x10F, "HR_PERSISTENT_MIN"),
    (0x110, "HR_LOADED_MIN"),
    (0x111, "ACTIVE_SESSIONS_MAX"),
    (0x114, "CONTEXT_GAP_MAX"),
    (0x116, "NV_COUNTERS_MAX"),
    (0x117, "NV_INDEX_MAX"),
    (0x118, "MEMORY"),
    (0x119, "CLOCK_UPDATE"),
    (0x11A, "CONTEXT_HASH"),
    (0x11B, "CONTEXT_SYM"),
    (0x11C, "CONTEXT_SYM_SIZE"),
    (0x11D, "ORDERLY_COUNT"),
    (0x121, "MAX_OBJECT_CONTEXT"),
    (0x122, "MAX_SESSION_CONTEXT"),
    // libtpms reports the TPM family/level here, not a TPM_PS value.
    (0x123, "PS_FAMILY_INDICATOR"),
    (0x124, "PS_LEVEL"),
    (0x125, "PS_REVISION"),
    (0x126, "PS_DAY_OF_YEAR"),
    (0x127, "PS_YEAR"),
    (0x128, "SPLIT_MAX"),
    (0x129, "TOTAL_COMMANDS"),
    (0x12A, "LIBRARY_COMMANDS"),
    (0x204, "HR_LOADED_AVAIL"),
    (0x206, "HR_ACTIVE_AVAIL"),
    (0x207, "HR_TRANSIENT_AVAIL"),
    (0x209, "HR_PERSISTENT_AVAIL"),
    (0x20B, "NV_COUNTERS_AVAIL"),
    (0x20D, "LOADED_CURVES"),
    (0x20F, "MAX_AUTH_FAIL"),
    (0x210, "LOCKOUT_INTERVAL"),
    (0x211, "LOCKOUT_RECOVERY"),
    (0x212, "NV_WRITE_RECOVERY"),
];

fn compare_properties(d: &mut Diff, first: u32) -> Result<()> {
    let [ours, theirs] = both_entries(d, cap::TPM_PROPERTIES, first, 8)?;
    let group = |m: &BTreeMap<u32, Vec<u8>>| -> BTreeSet<u32> {
        m.keys().copied().filter(|k| k & 0xff00 == first).collect()
    };
    let (ours_keys, theirs_keys) = (group(&ours), group(&theirs));
    ensure!(
        ours_keys == theirs_keys,
        "property sets differ: ours lacks {:x?}, has extra {:x?}",
        theirs_keys.difference(&ours_keys).collect::<Vec<_>>(),
        ours_keys.difference(&theirs_keys).collect::<Vec<_>>()
    );
    let masked: BTreeSet<u32> = IMPLEMENTATION_PROPERTIES.iter().map(|(p, _)| *p).collect();
    let differing: Vec<String> = ours_keys
        .iter()
        .filter(|k| !masked.contains(k) && ours[k] != theirs[k])
        .map(|k| format!("{k:#x}: ours {} swtpm {}", hex(&ours[k][4..]), hex(&theirs[k][4..])))
        .collect();
    ensure!(differing.is_empty(), "properties differ: {}", differing.join(", "));
    Ok(())
}

/// TPM2B_SENSITIVE with no auth, `seed` and the private part `key`.
fn sensitive_area(kind: u16, seed: &[u8], key: &[u8]) -> Vec<u8> {
    let mut sensitive = Vec::new();
    sensitive.u16(kind).tpm2b(&[]).tpm2b(seed).tpm2b(key);
    let mut out = Vec::new();
    out.tpm2b(&sensitive);
    out
}

fn load_external(sensitive: &[u8], public: &[u8]) -> Command {
    Command::new(cc::LOAD_EXTERNAL).with(|p| {
        p.bytes(sensitive).bytes(public).u32(rh::NULL);
    })
}

const SIGN_DECRYPT_USER: u32 = attr::SIGN | attr::DECRYPT | attr::USER_WITH_AUTH;
const OBFUSCATION_SEED: [u8; 32] = [0x5e; 32];

fn hmac_key(fx: &Fixtures) -> Result<(Vec<u8>, Vec<u8>)> {
    let key = fx.get("hmac_key")?;
    let unique = digest(alg::SHA256, &[&OBFUSCATION_SEED[..], &key].concat());
    let mut params = Vec::new();
    params.u16(alg::HMAC).u16(alg::SHA256).tpm2b(&unique);
    Ok((
        sensitive_area(alg::KEYEDHASH, &OBFUSCATION_SEED, &key),
        public_area(alg::KEYEDHASH, attr::SIGN | attr::USER_WITH_AUTH, &params),
    ))
}

fn aes_key(fx: &Fixtures) -> Result<(Vec<u8>, Vec<u8>)> {
    let key = fx.get("aes_key")?;
    let unique = digest(alg::SHA256, &[&OBFUSCATION_SEED[..], &key].concat());
    let mut params = Vec::new();
    params.u16(alg::AES).u16(128).u16(alg::CFB).tpm2b(&unique);
    Ok((
        sensitive_area(alg::SYMCIPHER, &OBFUSCATION_SEED, &key),
        public_area(alg::SYMCIPHER, SIGN_DECRYPT_USER, &params),
    ))
}

fn rsa_key(fx: &Fixtures) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut params = Vec::new();
    params.u16(alg::NULL).u16(alg::NULL).u16(2048).u32(0).tpm2b(&fx.get("rsa_modulus")?);
    Ok((
        sensitive_area(alg::RSA, &[], &fx.get("rsa_prime1")?),
        public_area(alg::RSA, SIGN_DECRYPT_USER, &params),
    ))
}

fn ecc_key(fx: &Fixtures) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut params = Vec::new();
    params
        .u16(alg::NULL)
        .u16(alg::NULL)
        .u16(0x0003)
        .u16(alg::NULL)
        .tpm2b(&fx.get("p256_x")?)
        .tpm2b(&fx.get("p256_y")?);
    Ok((
        sensitive_area(alg::ECC, &[], &fx.get("p256_private")?),
        public_area(alg::ECC, SIGN_DECRYPT_USER, &params),
    ))
}

/// One differential check: our TPM and swtpm in lockstep.
type DiffCheck = fn(&mut Diff, &Fixtures) -> Result<()>;

/// The byte-for-byte differential checks (tpm.md §11), in order: they
/// share the two TPMs' state (Startup first, Shutdown last).
const DIFF_CHECKS: &[(&str, DiffCheck)] = &[
    ("diff: Startup(CLEAR); again gives TPM_RC_INITIALIZE", diff_startup),
    ("diff: Shutdown(CLEAR), power cycle, Startup(CLEAR)", diff_shutdown_power_cycle),
    ("diff: SelfTest(full), GetTestResult, IncrementalSelfTest", diff_self_test),
    ("diff: GetCapability PCRS, HANDLES (PCR, permanent)", diff_capability_pcrs_handles),
    ("diff: GetCapability TPM_PROPERTIES fixed (vendor fields masked)", diff_properties_fixed),
    ("diff: GetCapability TPM_PROPERTIES variable (capacities masked)", diff_properties_variable),
    ("diff: GetCapability ALGS attributes of common algorithms", diff_algorithms),
    ("diff: GetCapability COMMANDS attributes of common commands", diff_commands),
    ("diff: GetCapability ECC_CURVES: ours a subset of swtpm's", diff_curves),
    ("diff: TestParms of supported and refused parameter sets", diff_test_parms),
    ("diff: PCR_Extend 3 banks, PCR_Read all 24 PCRs per bank", diff_pcr_extend_read),
    ("diff: PCR_Event, PCR_Reset, PCR_Read", diff_pcr_event_reset),
    ("diff: Hash SHA-1/256/384/512 (NULL hierarchy)", diff_hash),
    ("diff: HashSequenceStart/SequenceUpdate/SequenceComplete", diff_hash_sequence),
    ("diff: EventSequenceComplete into PCR 10", diff_event_sequence),
    ("diff: LoadExternal HMAC key, HMAC, ReadPublic, FlushContext", diff_hmac_key_use),
    ("diff: LoadExternal AES-128 key, EncryptDecrypt2 CFB", diff_aes_key_use),
    ("diff: LoadExternal RSA key, Sign RSASSA, RSA_Decrypt OAEP", diff_rsa_key_use),
    ("diff: LoadExternal ECC key, ECDH_ZGen of a fixed point", diff_ecc_key_use),
    ("diff: NV_DefineSpace/ReadPublic/Write/Read/UndefineSpace", diff_nv_space),
    ("diff: error codes of bad handles, values and malformed commands", diff_error_codes),
    ("spec: a bad command tag gets TPM_ST_RSP_COMMAND + TPM_RC_BAD_TAG", diff_bad_tag),
    ("diff: Shutdown(CLEAR)", diff_shutdown),
];

/// Runs [`DIFF_CHECKS`] against our TPM and swtpm.
pub fn differential(report: &mut Report, ours: Wire, theirs: Wire, fx: &Fixtures) {
    let mut d = Diff { ours, theirs };
    for (name, check) in DIFF_CHECKS {
        report.check(name, || check(&mut d, fx));
    }
}

fn diff_startup(d: &mut Diff, _: &Fixtures) -> Result<()> {
    d.same_ok(&startup_clear())?;
    let again = d.same(&startup_clear())?;
    ensure!(response_code(&again) == 0x100, "second Startup: {:#x}", response_code(&again));
    Ok(())
}

/// swtpm_setup left an orderly shutdown in swtpm's state; give ours one
/// too so that TPMA_STARTUP_CLEAR.orderly compares.
fn diff_shutdown_power_cycle(d: &mut Diff, _: &Fixtures) -> Result<()> {
    d.same_ok(&shutdown_clear())?;
    d.ours.power_cycle()?;
    d.theirs.power_cycle()?;
    d.same_ok(&startup_clear()).map(|_| ())
}

/// After a full self-test: the same test result (success, no data) and an empty toDoList;
/// TPM_ALG_NULL and an unimplemented algorithm (SM3_256) in toTest are the same error.
fn diff_self_test(d: &mut Diff, _: &Fixtures) -> Result<()> {
    d.same_ok(&Command::new(cc::SELF_TEST).with(|p| {
        p.u8(1);
    }))?;
    d.same_ok(&Command::new(cc::GET_TEST_RESULT))?;
    let incremental = |algs: &'static [u16]| {
        Command::new(cc::INCREMENTAL_SELF_TEST).with(move |p| {
            p.u32(algs.len() as u32);
            for a in algs {
                p.u16(*a);
            }
        })
    };
    d.same_ok(&incremental(&[alg::RSA, alg::ECC, alg::SHA256, alg::AES]))?;
    for bad in [&[alg::SHA1, alg::NULL][..], &[0x0012][..]] {
        let response = d.same(&incremental(bad))?;
        ensure!(response_code(&response) != 0, "IncrementalSelfTest({bad:x?}) succeeded");
    }
    Ok(())
}

/// TestParms (TPMT_PUBLIC_PARMS) that both TPMs accept, and that both refuse the same way
/// (RSA-4096 and AES-512: TPM_RC_VALUE; SHA3-256 in a scheme: TPM_RC_HASH; an unknown type:
/// TPM_RC_TYPE).
fn diff_test_parms(d: &mut Diff, _: &Fixtures) -> Result<()> {
    let parms: &[(&[u16], &[u8])] = &[
        (&[alg::RSA, alg::NULL, alg::NULL, 2048], &[0; 4]),
        (&[alg::RSA, alg::NULL, alg::RSASSA, alg::SHA256, 3072], &[0; 4]),
        (&[alg::ECC, alg::NULL, alg::ECDSA, alg::SHA384, 0x0004, alg::NULL], &[]),
        (&[alg::SYMCIPHER, alg::AES, 256, alg::CFB], &[]),
        (&[alg::KEYEDHASH, alg::HMAC, alg::SHA512], &[]),
        (&[alg::RSA, alg::NULL, alg::NULL, 4096], &[0; 4]),
        (&[alg::SYMCIPHER, alg::AES, 512, alg::CFB], &[]),
        (&[alg::RSA, alg::NULL, alg::RSASSA, 0x0027, 2048], &[0; 4]),
        (&[0x0044, alg::NULL], &[]),
    ];
    for (i, (words, tail)) in parms.iter().enumerate() {
        let command = Command::new(cc::TEST_PARMS).with(|p| {
            for w in *words {
                p.u16(*w);
            }
            p.extend_from_slice(tail);
        });
        let response = d.same(&command)?;
        ensure!(
            (response_code(&response) == 0) == (i < 5),
            "TestParms {words:x?}: {}",
            hex(&response)
        );
    }
    Ok(())
}

fn diff_capability_pcrs_handles(d: &mut Diff, _: &Fixtures) -> Result<()> {
    d.same_ok(&get_capability(cap::PCRS, 0, 1))?;
    d.same_ok(&get_capability(cap::HANDLES, 0, 64))?;
    d.same_ok(&get_capability(cap::HANDLES, 0x4000_0000, 64))?;
    Ok(())
}

fn diff_properties_fixed(d: &mut Diff, _: &Fixtures) -> Result<()> {
    compare_properties(d, 0x100)
}

fn diff_properties_variable(d: &mut Diff, _: &Fixtures) -> Result<()> {
    compare_properties(d, 0x200)
}

fn diff_algorithms(d: &mut Diff, _: &Fixtures) -> Result<()> {
    let [ours, theirs] = both_entries(d, cap::ALGS, 0, 6)?;
    let differing: Vec<String> = ours
        .iter()
        .filter(|(k, v)| theirs.get(k).is_some_and(|t| t != *v))
        .map(|(k, v)| format!("alg {k:#x}: ours {} swtpm {}", hex(&v[2..]), hex(&theirs[k][2..])))
        .collect();
    ensure!(differing.is_empty(), "{}", differing.join(", "));
    Ok(())
}

fn diff_commands(d: &mut Diff, _: &Fixtures) -> Result<()> {
    let [ours, theirs] = both_entries(d, cap::COMMANDS, 0x11F, 4)?;
    let differing: Vec<String> = ours
        .iter()
        .filter(|(k, v)| theirs.get(k).is_some_and(|t| t != *v))
        .map(|(k, v)| format!("cc {k:#x}: ours {} swtpm {}", hex(v), hex(&theirs[k])))
        .collect();
    ensure!(differing.is_empty(), "TPMA_CC differ: {}", differing.join(", "));
    Ok(())
}

fn diff_curves(d: &mut Diff, _: &Fixtures) -> Result<()> {
    let [ours, theirs] = both_entries(d, cap::ECC_CURVES, 0, 2)?;
    let extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(k)).collect();
    ensure!(extra.is_empty(), "curves unknown to libtpms: {extra:x?}");
    ensure!(ours.contains_key(&3) && ours.contains_key(&4), "P-256/P-384 missing");
    Ok(())
}

fn diff_pcr_extend_read(d: &mut Diff, _: &Fixtures) -> Result<()> {
    for (i, pcr) in [0u32, 1, 2, 7, 16, 23, 0].iter().enumerate() {
        d.same_ok(&pcr_extend(*pcr, format!("measurement {i}").as_bytes()))?;
    }
    for bank in BANKS {
        for group in [0u32, 8, 16] {
            let pcrs: Vec<u32> = (group..group + 8).collect();
            d.same_ok(&pcr_read(bank.alg, &pcrs))?;
        }
    }
    Ok(())
}

fn diff_pcr_event_reset(d: &mut Diff, _: &Fixtures) -> Result<()> {
    d.same_ok(&Command::new(cc::PCR_EVENT).handle(9).pw().with(|p| {
        p.tpm2b(b"an event for PCR 9");
    }))?;
    d.same_ok(&Command::new(cc::PCR_RESET).handle(16).pw())?;
    d.same_ok(&pcr_read(alg::SHA256, &[9, 16]))?;
    Ok(())
}

fn diff_hash(d: &mut Diff, _: &Fixtures) -> Result<()> {
    for hash in [alg::SHA1, alg::SHA256, alg::SHA384, alg::SHA512] {
        let response = d.same_ok(&Command::new(cc::HASH).with(|p| {
            p.tpm2b(b"data to hash").u16(hash).u32(rh::NULL);
        }))?;
        let mut r = Reader::new(&response[10..]);
        ensure!(r.tpm2b()? == digest(hash, b"data to hash"), "Hash {hash:#x} value");
    }
    Ok(())
}

fn diff_hash_sequence(d: &mut Diff, _: &Fixtures) -> Result<()> {
    d.flush_all()?;
    let (seq, _) = d.same_loaded(&Command::new(cc::HASH_SEQUENCE_START).with(|p| {
        p.tpm2b(b"").u16(alg::SHA384);
    }))?;
    for part in [&b"first part "[..], b"second part "] {
        d.same_with(seq, |h| {
            Command::new(cc::SEQUENCE_UPDATE).handle(h).pw().with(|p| {
                p.tpm2b(part);
            })
        })?;
    }
    let response = d.same_with(seq, |h| {
        Command::new(cc::SEQUENCE_COMPLETE).handle(h).pw().with(|p| {
            p.tpm2b(b"last").u32(rh::NULL);
        })
    })?;
    let parsed = Response::parse(&response, 0)?;
    let want = digest(alg::SHA384, b"first part second part last");
    ensure!(parsed.reader().tpm2b()? == want, "sequence digest");
    Ok(())
}

fn diff_event_sequence(d: &mut Diff, _: &Fixtures) -> Result<()> {
    d.flush_all()?;
    let (seq, _) = d.same_loaded(&Command::new(cc::HASH_SEQUENCE_START).with(|p| {
        p.tpm2b(b"").u16(alg::NULL);
    }))?;
    d.same_with(seq, |h| {
        Command::new(cc::SEQUENCE_UPDATE).handle(h).pw().with(|p| {
            p.tpm2b(b"event sequence data");
        })
    })?;
    d.same_with(seq, |h| {
        Command::new(cc::EVENT_SEQUENCE_COMPLETE).handle(10).handle(h).pw().pw().with(|p| {
            p.tpm2b(b" end");
        })
    })?;
    d.same_ok(&pcr_read(alg::SHA1, &[10]))?;
    Ok(())
}

fn diff_hmac_key_use(d: &mut Diff, fx: &Fixtures) -> Result<()> {
    d.flush_all()?;
    let (sensitive, public) = hmac_key(fx)?;
    let (key, _) = d.same_loaded(&load_external(&sensitive, &public))?;
    let response = d.same_with(key, |h| {
        Command::new(cc::HMAC).handle(h).pw().with(|p| {
            p.tpm2b(b"message to MAC").u16(alg::SHA256);
        })
    })?;
    let mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&fx.get("hmac_key")?)
        .map(|m| hmac::Mac::chain_update(m, b"message to MAC"))
        .map(hmac::Mac::finalize)?;
    let parsed = Response::parse(&response, 0)?;
    ensure!(parsed.reader().tpm2b()? == mac.into_bytes().as_slice(), "HMAC value");
    d.same_with(key, |h| Command::new(cc::READ_PUBLIC).handle(h))?;
    d.flush(key)
}

fn diff_aes_key_use(d: &mut Diff, fx: &Fixtures) -> Result<()> {
    d.flush_all()?;
    let (sensitive, public) = aes_key(fx)?;
    let (key, _) = d.same_loaded(&load_external(&sensitive, &public))?;
    let iv = fx.get("aes_iv")?;
    for decrypt in [0u8, 1] {
        d.same_with(key, |h| {
            Command::new(cc::ENCRYPT_DECRYPT2).handle(h).pw().with(|p| {
                p.tpm2b(&[0x11; 45]).u8(decrypt).u16(alg::CFB).tpm2b(&iv);
            })
        })?;
    }
    d.flush(key)
}

fn diff_rsa_key_use(d: &mut Diff, fx: &Fixtures) -> Result<()> {
    d.flush_all()?;
    let (sensitive, public) = rsa_key(fx)?;
    let (key, _) = d.same_loaded(&load_external(&sensitive, &public))?;
    d.same_with(key, |h| Command::new(cc::READ_PUBLIC).handle(h))?;
    let message_digest = digest(alg::SHA256, b"signed message");
    d.same_with(key, |h| {
        Command::new(cc::SIGN).handle(h).pw().with(|p| {
            p.tpm2b(&message_digest)
                .u16(alg::RSASSA)
                .u16(alg::SHA256)
                .u16(0x8024)
                .u32(rh::NULL)
                .tpm2b(&[]);
        })
    })?;
    let cipher = fx.get("oaep_cipher")?;
    let response = d.same_with(key, |h| {
        Command::new(cc::RSA_DECRYPT).handle(h).pw().with(|p| {
            p.tpm2b(&cipher).u16(alg::OAEP).u16(alg::SHA256).tpm2b(&[]);
        })
    })?;
    let parsed = Response::parse(&response, 0)?;
    ensure!(parsed.reader().tpm2b()? == fx.get("oaep_plain")?, "OAEP plaintext");
    d.flush(key)
}

fn diff_ecc_key_use(d: &mut Diff, fx: &Fixtures) -> Result<()> {
    d.flush_all()?;
    let (sensitive, public) = ecc_key(fx)?;
    let (key, _) = d.same_loaded(&load_external(&sensitive, &public))?;
    let (x, y) = (fx.get("peer_x")?, fx.get("peer_y")?);
    let response = d.same_with(key, |h| {
        Command::new(cc::ECDH_ZGEN).handle(h).pw().with(|p| {
            let mut point = Vec::new();
            point.tpm2b(&x).tpm2b(&y);
            p.tpm2b(&point);
        })
    })?;
    let parsed = Response::parse(&response, 0)?;
    let mut point = Reader::new(parsed.reader().tpm2b()?);
    ensure!(point.tpm2b()? == fx.get("ecdh_z")?, "ECDH Z.x differs from OpenSSL's");
    d.flush(key)
}

fn diff_nv_space(d: &mut Diff, _: &Fixtures) -> Result<()> {
    let index = 0x0150_0030u32;
    d.same_ok(&Command::new(cc::NV_DEFINE_SPACE).handle(rh::OWNER).pw().with(|p| {
        let mut public = Vec::new();
        public.u32(index).u16(alg::SHA256).u32(0x0006_0006).tpm2b(&[]).u16(16);
        p.tpm2b(b"nvpass").tpm2b(&public);
    }))?;
    d.same_ok(&Command::new(cc::NV_READ_PUBLIC).handle(index))?;
    d.same_ok(
        &Command::new(cc::NV_WRITE)
            .handle(index)
            .handle(index)
            .auth(crate::vtpm_cmd::Auth::password(b"nvpass"))
            .with(|p| {
                p.tpm2b(b"0123456789").u16(3);
            }),
    )?;
    d.same_ok(&Command::new(cc::NV_READ_PUBLIC).handle(index))?;
    d.same(
        &Command::new(cc::NV_READ)
            .handle(index)
            .handle(index)
            .auth(crate::vtpm_cmd::Auth::password(b"nvpass"))
            .with(|p| {
                p.u16(16).u16(0);
            }),
    )?;
    d.same_ok(&Command::new(cc::NV_READ).handle(rh::OWNER).handle(index).pw().with(|p| {
        p.u16(8).u16(2);
    }))?;
    d.same_ok(&Command::new(cc::NV_UNDEFINE_SPACE).handle(rh::OWNER).handle(index).pw())?;
    Ok(())
}

/// CreatePrimary(owner) of an RSA-2048 storage key with public exponent `e`.
fn rsa_primary_with_exponent(e: u32) -> Vec<u8> {
    let attributes = attr::FIXED_TPM
        | attr::FIXED_PARENT
        | attr::SENSITIVE_DATA_ORIGIN
        | attr::USER_WITH_AUTH
        | attr::NO_DA
        | attr::RESTRICTED
        | attr::DECRYPT;
    let mut params = Vec::new();
    params.u16(alg::AES).u16(128).u16(alg::CFB).u16(alg::NULL).u16(2048).u32(e).tpm2b(&[]);
    create_primary(rh::OWNER, &public_area(alg::RSA, attributes, &params)).bytes()
}

/// Commands both TPMs must refuse with the same response code.
fn error_cases(fx: &Fixtures) -> Result<Vec<(&'static str, Vec<u8>)>> {
    Ok(vec![
        // Handles inside both TPMs' ranges (libtpms: 3 objects, 64
        // sessions); outside, the answer depends on the range.
        ("FlushContext of a transient handle not loaded", flush_context(0x8000_0002).bytes()),
        ("FlushContext of a permanent handle", flush_context(rh::OWNER).bytes()),
        ("PCR_Extend of PCR 99", pcr_extend(99, b"x").bytes()),
        ("GetCapability of capability 0x1000", get_capability(0x1000, 0, 1).bytes()),
        (
            "Hash with algorithm 0x0099",
            Command::new(cc::HASH)
                .with(|p| {
                    p.tpm2b(b"x").u16(0x0099).u32(rh::NULL);
                })
                .bytes(),
        ),
        ("unknown command code 0x1ff", Command::new(0x1ff).bytes()),
        ("vendor command code 0x20000001", Command::new(0x2000_0001).bytes()),
        (
            "size field larger than the command",
            [&[0x80, 0x01, 0, 0, 0, 0x20][..], &[0, 0, 1, 0x7b, 0, 8]].concat(),
        ),
        (
            "size field smaller than the command",
            [&[0x80, 0x01, 0, 0, 0, 0x0b][..], &[0, 0, 1, 0x7b, 0, 8]].concat(),
        ),
        ("GetRandom without its parameter", Command::new(cc::GET_RANDOM).bytes()),
        (
            "GetRandom with trailing bytes",
            Command::new(cc::GET_RANDOM)
                .with(|p| {
                    p.u16(8).u16(0);
                })
                .bytes(),
        ),
        (
            "SESSIONS tag without an authorization area",
            [&[0x80, 0x02, 0, 0, 0, 0x0c][..], &[0, 0, 1, 0x7b, 0, 8]].concat(),
        ),
        ("PCR_Extend with a session not loaded", {
            let mut c = pcr_extend(1, b"x");
            c.set_auths(vec![crate::vtpm_cmd::Auth {
                session: 0x0200_0003,
                nonce: vec![],
                attributes: 1,
                hmac: vec![],
            }]);
            c.bytes()
        }),
        (
            "NV_DefineSpace with the wrong owner password",
            Command::new(cc::NV_DEFINE_SPACE)
                .handle(rh::OWNER)
                .auth(crate::vtpm_cmd::Auth::password(b"wrong"))
                .with(|p| {
                    let mut public = Vec::new();
                    public.u32(0x0150_0031).u16(alg::SHA256).u32(0x0006_0006).tpm2b(&[]).u16(16);
                    p.tpm2b(b"").tpm2b(&public);
                })
                .bytes(),
        ),
        ("LoadExternal keyedhash signing key without a scheme", {
            let (sensitive, _) = hmac_key(fx)?;
            let unique =
                digest(alg::SHA256, &[&OBFUSCATION_SEED[..], &fx.get("hmac_key")?].concat());
            let mut params = Vec::new();
            params.u16(alg::NULL).tpm2b(&unique);
            load_external(
                &sensitive,
                &public_area(alg::KEYEDHASH, attr::SIGN | attr::USER_WITH_AUTH, &params),
            )
            .bytes()
        }),
        (
            "Startup with an unknown type",
            Command::new(cc::STARTUP)
                .with(|p| {
                    p.u16(7);
                })
                .bytes(),
        ),
        // The reference wants e = 0 (65537) or a prime >= 65537 (TPM_RC_RANGE).
        ("CreatePrimary RSA with exponent 3", rsa_primary_with_exponent(3)),
        ("CreatePrimary RSA with exponent 2^32-1 (not prime)", rsa_primary_with_exponent(u32::MAX)),
        (
            "ReadPublic of an object not loaded",
            Command::new(cc::READ_PUBLIC).handle(0x8000_0002).bytes(),
        ),
    ])
}

fn diff_error_codes(d: &mut Diff, fx: &Fixtures) -> Result<()> {
    d.flush_all()?;
    let mut failures = Vec::new();
    for (name, bytes) in &error_cases(fx)? {
        match d.same_raw(bytes) {
            Ok(response) if response_code(&response) != 0 => {}
            Ok(response) => failures.push(format!("{name}: both succeeded: {}", hex(&response))),
            Err(e) => failures.push(format!("{name}: {e:#}")),
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// libtpms 0.9 answers 0x8001/0x084 here; the spec prescribes the TPM
/// 1.2-compatible answer (Part 2, Table 19): checked on ours only.
fn diff_bad_tag(d: &mut Diff, _: &Fixtures) -> Result<()> {
    for tag in [0x8003u16, 0x00C1, 0x0000] {
        let mut bytes = Command::new(cc::GET_RANDOM)
            .with(|p| {
                p.u16(8);
            })
            .bytes();
        bytes[..2].copy_from_slice(&tag.to_be_bytes());
        let response = d.ours.transact(&bytes)?;
        ensure!(
            response == crate::vtpm_wire::BAD_TAG_RESPONSE,
            "tag {tag:#06x}: {}",
            hex(&response)
        );
    }
    Ok(())
}

fn diff_shutdown(d: &mut Diff, _: &Fixtures) -> Result<()> {
    d.same_ok(&shutdown_clear()).map(|_| ())
}
