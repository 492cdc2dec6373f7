//! `cargo xtask verify REPORT [--certs DIR] (--measurement HEX |
//! --no-measurement-check) (--nonce HEX (--manifest FILE | --service-data
//! FILE) | --no-report-data-check) [--host-data HEX] [--id-key-digest HEX]
//! [--author-key-digest HEX] [--family-id HEX] [--image-id HEX]
//! [--min-guest-svn N] [--min-tcb bl=N,tee=N,snp=N,ucode=N]`: verifies an SNP
//! attestation report away from the host, for the development PSP's reports
//! and real AMD ones alike.
//!
//! Checks, each printed PASS/FAIL/SKIP with its reason, then a one-line
//! verdict:
//! 1. report format (size, version, signature algorithm, signed by the VCEK:
//!    the SVSM asks the PSP for VCEK-signed reports, see
//!    `kernel::attest::client`);
//! 2. trusted root: the ARK is AMD's (public-key fingerprints of the Milan,
//!    Genoa and Turin ARKs, pinned below) or this build folder's
//!    development ARK (then the verdict says "development");
//! 3. certificate chain: ARK self-signed, ASK signed by ARK, VCEK signed by
//!    ASK (RSASSA-PSS SHA-384), each within its validity period at the
//!    verification time ([`Inputs::time`]: now for the command, a fixed
//!    instant in the tests);
//! 4. VCEK matches the report: its TCB extensions equal REPORTED_TCB and its
//!    hwID equals CHIP_ID;
//! 5. report signature (ECDSA P-384 over bytes 0..0x2A0, R/S little-endian);
//! 6. MEASUREMENT equals the expected launch digest;
//! 7. REPORT_DATA equals SHA-512(nonce ‖ manifest) and the manifest is a
//!    well-formed services manifest; for an ATTEST_SINGLE_SERVICE report,
//!    SHA-512(nonce ‖ service data) (`--service-data`, no manifest format);
//! 8. policy: debugging off, migration agent off, reserved bit 17 set, no
//!    undefined bits;
//! 9. VMPL 0 (the SVSM requested the report);
//!
//! then, only those the user asked for ([`Expectations`]), each its own
//! check: HOST_DATA, ID_KEY_DIGEST, AUTHOR_KEY_DIGEST (with AUTHOR_KEY_EN
//! set), FAMILY_ID and IMAGE_ID equal the given values, GUEST_SVN is at
//! least the given minimum, and each component of REPORTED_TCB (bootloader,
//! TEE, SNP, microcode) is at least the given minimum. An expectation not
//! given is not a check and is not printed: these fields are launch inputs a
//! guest owner may or may not pin, while checks 6 and 7 are what make a
//! report verified at all.
//!
//! Exit status 0 only if no check failed. A check whose expected value was
//! not given fails ("nothing to compare against" is not a pass) unless the
//! user opted out of it by name (`--no-measurement-check`,
//! `--no-report-data-check`); an opted-out check is SKIP and the verdict
//! then says the report's signature is valid but the report is NOT verified
//! for what was skipped.
//!
//! The certificate directory holds `ark`, `ask` and `vcek`, each `.pem` or
//! `.der` (snpguest's names).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use abi::attestation::{
    AttestationReport, Generation, REPORT_SIZE, SIGNATURE_ALGO_ECDSA_P384_SHA384, TcbVersion,
    key_info, manifest_entries, policy,
};
use anyhow::{Context, Result, bail};
use der::Decode;
use p384::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::ObjectIdentifier;
use x509_cert::Certificate;
use zerocopy::FromBytes;

/// SHA-256 of the SubjectPublicKeyInfo (DER) of AMD's ARKs, as published by
/// AMD's KDS (`/vcek/v1/<product>/cert_chain`).
const AMD_ARK_FINGERPRINTS: [(&str, &str); 3] = [
    ("AMD ARK-Milan", "9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9"),
    ("AMD ARK-Genoa", "429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831"),
    ("AMD ARK-Turin", "4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08"),
];
/// id-RSASSA-PSS.
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// AMD's VCEK extension arc.
const AMD_ARC: &str = "1.3.6.1.4.1.3704.1";

/// What to verify.
#[derive(Clone)]
pub struct Inputs {
    /// The raw report (1184 bytes).
    pub report: Vec<u8>,
    /// ARK, ASK, VCEK certificates (DER).
    pub ark: Vec<u8>,
    /// The ASK.
    pub ask: Vec<u8>,
    /// The VCEK.
    pub vcek: Vec<u8>,
    /// The development ARK of this build folder, trusted besides AMD's.
    pub dev_ark: Option<Vec<u8>>,
    /// The expected MEASUREMENT.
    pub measurement: Option<[u8; 48]>,
    /// The nonce the guest chose.
    pub nonce: Option<Vec<u8>>,
    /// The services manifest (or, with `single_service`, the service data)
    /// the SVSM returned.
    pub manifest: Option<Vec<u8>>,
    /// `manifest` is the data of one service (ATTEST_SINGLE_SERVICE), not a
    /// services manifest.
    pub single_service: bool,
    /// Checks the user chose not to make.
    pub not_checked: NotChecked,
    /// When the certificates must be valid.
    pub time: SystemTime,
}

/// Optional expectations about the report's launch identity: each one given
/// is a check that fails unless the report matches it; `None` is no check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    /// HOST_DATA (`--host-data`).
    pub host_data: Option<[u8; 32]>,
    /// ID_KEY_DIGEST (`--id-key-digest`).
    pub id_key_digest: Option<[u8; 48]>,
    /// AUTHOR_KEY_DIGEST, with AUTHOR_KEY_EN set (`--author-key-digest`).
    pub author_key_digest: Option<[u8; 48]>,
    /// FAMILY_ID (`--family-id`).
    pub family_id: Option<[u8; 16]>,
    /// IMAGE_ID (`--image-id`).
    pub image_id: Option<[u8; 16]>,
    /// The lowest acceptable GUEST_SVN (`--min-guest-svn`).
    pub min_guest_svn: Option<u32>,
    /// The lowest acceptable SVN of each REPORTED_TCB component
    /// (`--min-tcb`; `fmc` is not compared).
    pub min_tcb: Option<TcbVersion>,
}

/// Checks the user explicitly opted out of (`--no-...-check`): without an
/// expected value such a check is SKIP instead of FAIL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NotChecked {
    /// `--no-measurement-check`.
    pub measurement: bool,
    /// `--no-report-data-check`.
    pub report_data: bool,
}

/// The result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The check passed (with what was seen).
    Pass(String),
    /// The check failed (with why).
    Fail(String),
    /// Not checked: the user opted out of it.
    Skip(String),
}

/// One named check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// Short name.
    pub name: &'static str,
    /// Result.
    pub outcome: Outcome,
}

impl Check {
    fn new(name: &'static str, result: Result<String, String>) -> Check {
        Check { name, outcome: result.map_or_else(Outcome::Fail, Outcome::Pass) }
    }
}

/// Runs every check (no optional expectations).
pub fn verify(inputs: &Inputs) -> Vec<Check> {
    verify_with(inputs, &Expectations::default())
}

/// Runs every check, then one check per expectation given.
pub fn verify_with(inputs: &Inputs, expected: &Expectations) -> Vec<Check> {
    let report = match parse_report(&inputs.report) {
        Ok(report) => report,
        Err(reason) => return vec![Check::new("report format", Err(reason))],
    };
    let mut checks = vec![Check::new("report format", report_format(&report))];
    let generation = report.generation().unwrap_or(Generation::Milan);
    checks.push(Check::new("trusted root", trusted_root(&inputs.ark, inputs.dev_ark.as_deref())));
    let chain_result = chain(&inputs.ark, &inputs.ask, &inputs.vcek, inputs.time);
    checks.push(Check::new("certificate chain", chain_result));
    checks.push(Check::new("VCEK matches report", vcek_matches(&inputs.vcek, &report, generation)));
    checks.push(Check::new("report signature", signature(&inputs.vcek, &report)));
    checks.push(match (inputs.measurement, inputs.not_checked.measurement) {
        (Some(expected), _) => Check::new("measurement", measurement(&report, &expected)),
        (None, true) => skip("measurement", "not checked (--no-measurement-check)"),
        (None, false) => Check::new(
            "measurement",
            Err("no expected measurement: give --measurement HEX (the image's launch digest, \
                 e.g. svsm.igvm.digest), or --no-measurement-check to accept any image"
                .to_string()),
        ),
    });
    checks.push(match (&inputs.nonce, &inputs.manifest, inputs.not_checked.report_data) {
        (Some(nonce), Some(manifest), _) => {
            Check::new("report data", report_data(&report, nonce, manifest, inputs.single_service))
        }
        (_, _, true) => skip("report data", "not checked (--no-report-data-check)"),
        (_, _, false) => Check::new(
            "report data",
            Err("needs both --nonce and --manifest (or --service-data): give them, or \
                 --no-report-data-check to accept any nonce and manifest"
                .to_string()),
        ),
    });
    checks.push(Check::new("policy", guest_policy(report.policy)));
    checks.push(Check::new("VMPL", vmpl(report.vmpl)));
    checks.extend(expectation_checks(&report, generation, expected));
    checks
}

/// One check per expectation given, in the order of the flags.
fn expectation_checks(
    report: &AttestationReport,
    generation: Generation,
    expected: &Expectations,
) -> Vec<Check> {
    let equal = |name, field, actual: &[u8], wanted: Option<&[u8]>| {
        wanted.map(|wanted| Check::new(name, field_equals(field, actual, wanted)))
    };
    [
        equal("host data", "HOST_DATA", &report.host_data, bytes(&expected.host_data)),
        equal(
            "ID key digest",
            "ID_KEY_DIGEST",
            &report.id_key_digest,
            bytes(&expected.id_key_digest),
        ),
        expected
            .author_key_digest
            .map(|wanted| Check::new("author key digest", author_key(report, &wanted))),
        equal("family ID", "FAMILY_ID", &report.family_id, bytes(&expected.family_id)),
        equal("image ID", "IMAGE_ID", &report.image_id, bytes(&expected.image_id)),
        expected
            .min_guest_svn
            .map(|minimum| Check::new("guest SVN", guest_svn(report.guest_svn, minimum))),
        expected.min_tcb.map(|minimum| {
            let reported = TcbVersion::decode(report.reported_tcb, generation);
            Check::new("minimum TCB", min_tcb(reported, minimum))
        }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// An optional fixed-size expectation as a slice.
fn bytes<const N: usize>(value: &Option<[u8; N]>) -> Option<&[u8]> {
    value.as_ref().map(|v| &v[..])
}

/// `field` of the report (`actual`) equals the expected bytes.
fn field_equals(field: &str, actual: &[u8], expected: &[u8]) -> Result<String, String> {
    if actual != expected {
        return Err(format!("{field} {} is not the expected {}", hex(actual), hex(expected)));
    }
    Ok(hex(actual))
}

fn author_key(report: &AttestationReport, expected: &[u8; 48]) -> Result<String, String> {
    if report.key_info & key_info::AUTHOR_KEY_EN == 0 {
        return Err(
            "AUTHOR_KEY_EN is clear: the ID block was not signed with an author key".to_string()
        );
    }
    field_equals("AUTHOR_KEY_DIGEST", &report.author_key_digest, expected)
        .map(|digest| format!("{digest} (AUTHOR_KEY_EN set)"))
}

fn guest_svn(reported: u32, minimum: u32) -> Result<String, String> {
    if reported < minimum {
        return Err(format!("GUEST_SVN {reported} is below the minimum {minimum}"));
    }
    Ok(format!("GUEST_SVN {reported} >= {minimum}"))
}

fn min_tcb(reported: TcbVersion, minimum: TcbVersion) -> Result<String, String> {
    let components = [
        ("bootloader", reported.bootloader, minimum.bootloader),
        ("TEE", reported.tee, minimum.tee),
        ("SNP", reported.snp, minimum.snp),
        ("microcode", reported.microcode, minimum.microcode),
    ];
    let below: Vec<String> = components
        .iter()
        .filter(|(_, reported, minimum)| reported < minimum)
        .map(|(what, reported, minimum)| format!("{what} {reported} is below {minimum}"))
        .collect();
    if !below.is_empty() {
        return Err(format!("REPORTED_TCB {}", below.join(", ")));
    }
    let text: Vec<String> = components
        .iter()
        .map(|(what, reported, minimum)| format!("{what} {reported} >= {minimum}"))
        .collect();
    Ok(format!("REPORTED_TCB {}", text.join(", ")))
}

fn skip(name: &'static str, why: &str) -> Check {
    Check { name, outcome: Outcome::Skip(why.to_string()) }
}

fn parse_report(bytes: &[u8]) -> Result<AttestationReport, String> {
    AttestationReport::read_from_bytes(bytes)
        .map_err(|_| format!("{} bytes, a report has {REPORT_SIZE}", bytes.len()))
}

fn report_format(report: &AttestationReport) -> Result<String, String> {
    if !(2..=5).contains(&report.version) {
        return Err(format!("unknown report version {}", report.version));
    }
    if report.signature_algo != SIGNATURE_ALGO_ECDSA_P384_SHA384 {
        return Err(format!("signature algorithm {} is not ECDSA P-384", report.signature_algo));
    }
    if report.signing_key() != key_info::SIGNING_KEY_VCEK {
        return Err(format!("signed by key {} (not the VCEK)", report.signing_key()));
    }
    let generation = report.generation().ok_or_else(|| {
        format!("unknown CPU family {:#x} model {:#x}", report.cpuid_family, report.cpuid_model)
    })?;
    Ok(format!("version {}, {}, signed by the VCEK", report.version, generation.name()))
}

fn trusted_root(ark: &[u8], dev_ark: Option<&[u8]>) -> Result<String, String> {
    let spki = spki_der(ark)?;
    let fingerprint = hex(&Sha256::digest(&spki));
    if let Some((name, _)) = AMD_ARK_FINGERPRINTS.iter().find(|(_, f)| *f == fingerprint) {
        return Ok((*name).to_string());
    }
    if let Some(dev) = dev_ark
        && spki_der(dev)? == spki
    {
        return Ok(
            "this build folder's DEVELOPMENT ARK (not AMD: proves nothing on real hardware)"
                .to_string(),
        );
    }
    Err(format!("the ARK (key SHA-256 {fingerprint}) is neither AMD's nor this build folder's"))
}

fn chain(ark: &[u8], ask: &[u8], vcek: &[u8], time: SystemTime) -> Result<String, String> {
    let ark_spki = spki_der(ark)?;
    signed_by("ARK", ark, &ark_spki)?;
    signed_by("ASK", ask, &ark_spki)?;
    signed_by("VCEK", vcek, &spki_der(ask)?)?;
    for (name, cert) in [("ARK", ark), ("ASK", ask), ("VCEK", vcek)] {
        within_validity(name, cert, time)?;
    }
    Ok("ARK -> ASK -> VCEK, RSASSA-PSS SHA-384, all within their validity".to_string())
}

fn parse_cert(der: &[u8]) -> Result<Certificate, String> {
    Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))
}

fn spki_der(cert: &[u8]) -> Result<Vec<u8>, String> {
    let cert = parse_cert(cert)?;
    der::Encode::to_der(cert.tbs_certificate().subject_public_key_info()).map_err(|e| e.to_string())
}

/// Checks that `cert` carries a valid RSASSA-PSS/SHA-384 signature by the
/// RSA key `issuer_spki`.
fn signed_by(name: &str, cert: &[u8], issuer_spki: &[u8]) -> Result<(), String> {
    let parsed = parse_cert(cert)?;
    if parsed.signature_algorithm().oid != RSASSA_PSS {
        return Err(format!("the {name} is not signed with RSASSA-PSS"));
    }
    let key = <rsa::PublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_der(issuer_spki)
        .map_err(|e| format!("the {name}'s issuer key is not RSA: {e}"))?;
    let tbs = tbs_bytes(cert).ok_or_else(|| format!("the {name} has a malformed encoding"))?;
    let signature = rsa::pss::Signature::try_from(parsed.signature().raw_bytes())
        .map_err(|e| format!("the {name}'s signature is malformed: {e}"))?;
    rsa::pss::VerifyingKey::<Sha384>::new(key)
        .verify(tbs, &signature)
        .map_err(|_| format!("the {name}'s signature does not verify with its issuer's key"))
}

/// The TBSCertificate bytes exactly as encoded: the first element of the
/// outer SEQUENCE.
fn tbs_bytes(cert: &[u8]) -> Option<&[u8]> {
    let (_, inner) = der_tlv(cert)?;
    let (tbs, _) = der_tlv(inner)?;
    Some(tbs)
}

/// Splits a DER TLV off `bytes`: returns (the whole TLV, its contents).
fn der_tlv(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 {
            return None;
        }
        let len =
            bytes.get(2..2 + count)?.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, 2 + count)
    };
    let end = header.checked_add(len)?;
    Some((bytes.get(..end)?, bytes.get(header..end)?))
}

fn within_validity(name: &str, cert: &[u8], time: SystemTime) -> Result<(), String> {
    let cert = parse_cert(cert)?;
    let validity = cert.tbs_certificate().validity();
    if time < validity.not_before.to_system_time() || time > validity.not_after.to_system_time() {
        return Err(format!(
            "the {name} is outside its validity ({} to {})",
            validity.not_before, validity.not_after
        ));
    }
    Ok(())
}

/// An AMD VCEK extension's value, if present.
fn amd_extension(cert: &Certificate, suffix: &str) -> Option<Vec<u8>> {
    let oid = ObjectIdentifier::new(&format!("{AMD_ARC}.{suffix}")).ok()?;
    let extensions = cert.tbs_certificate().extensions()?;
    extensions.iter().find(|e| e.extn_id == oid).map(|e| e.extn_value.as_bytes().to_vec())
}

fn vcek_matches(
    vcek: &[u8],
    report: &AttestationReport,
    generation: Generation,
) -> Result<String, String> {
    let cert = parse_cert(vcek)?;
    let tcb = TcbVersion::decode(report.reported_tcb, generation);
    let mut spls = vec![("3.1", "bootloader", tcb.bootloader), ("3.2", "TEE", tcb.tee)];
    spls.extend([("3.3", "SNP", tcb.snp), ("3.8", "microcode", tcb.microcode)]);
    if generation == Generation::Turin {
        spls.push(("3.9", "FMC", tcb.fmc));
    }
    for (suffix, what, reported) in spls {
        let value = amd_extension(&cert, suffix)
            .ok_or_else(|| format!("the VCEK has no {what} SPL extension ({AMD_ARC}.{suffix})"))?;
        let certified = u32::from_der(&value).map_err(|e| format!("the VCEK's {what} SPL: {e}"))?;
        if certified != u32::from(reported) {
            return Err(format!(
                "REPORTED_TCB {what} {reported} but the VCEK certifies {certified}"
            ));
        }
    }
    if report.key_info & key_info::MASK_CHIP_KEY == 0 {
        let value = amd_extension(&cert, "4").ok_or("the VCEK has no hwID extension")?;
        // KDS stores the raw ID; accept it wrapped in an OCTET STRING too.
        let id = der::asn1::OctetString::from_der(&value)
            .map(|o| o.as_bytes().to_vec())
            .unwrap_or(value);
        let len = generation.chip_id_len();
        if id.len() != len || id[..] != report.chip_id[..len] {
            return Err("CHIP_ID differs from the VCEK's hwID (a VCEK of another chip)".to_string());
        }
    }
    Ok(format!(
        "TCB bl {} tee {} snp {} ucode {}, chip ID {}...",
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode,
        hex(&report.chip_id[..8])
    ))
}

fn signature(vcek: &[u8], report: &AttestationReport) -> Result<String, String> {
    let cert = parse_cert(vcek)?;
    let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(
        cert.tbs_certificate().subject_public_key_info().subject_public_key.raw_bytes(),
    )
    .map_err(|_| "the VCEK's key is not a P-384 public key".to_string())?;
    let (r, s) = report.signature.to_big_endian().ok_or("the signature has non-zero padding")?;
    let signature = p384::ecdsa::Signature::from_scalars(r, s)
        .map_err(|_| "the signature's R or S is out of range".to_string())?;
    key.verify(report.signed_bytes(), &signature)
        .map_err(|_| "the report's signature does not verify with the VCEK's key".to_string())?;
    Ok("ECDSA P-384/SHA-384 by the VCEK".to_string())
}

fn measurement(report: &AttestationReport, expected: &[u8; 48]) -> Result<String, String> {
    field_equals("MEASUREMENT", &report.measurement, expected)
}

fn report_data(
    report: &AttestationReport,
    nonce: &[u8],
    attested: &[u8],
    single_service: bool,
) -> Result<String, String> {
    let what = if single_service { "service data" } else { "manifest" };
    let expected: [u8; 64] =
        Sha512::new().chain_update(nonce).chain_update(attested).finalize().into();
    if report.report_data != expected {
        return Err(format!(
            "REPORT_DATA is not SHA-512(nonce || {what}): the nonce or the {what} differs from \
             what the SVSM attested"
        ));
    }
    if single_service {
        return Ok(format!(
            "SHA-512(nonce || service data); {} bytes of one service's data",
            attested.len()
        ));
    }
    let services = manifest_entries(attested)
        .map_err(|e| {
            format!(
                "REPORT_DATA matches, but the manifest is not a well-formed services manifest \
                 ({e:?}); if it is what ATTEST_SINGLE_SERVICE returned, give it with \
                 --service-data"
            )
        })?
        .map(|(guid, data)| format!("{guid} ({} bytes)", data.len()))
        .collect::<Vec<_>>();
    Ok(format!("SHA-512(nonce || manifest); services: {}", services.join(", ")))
}

fn guest_policy(value: u64) -> Result<String, String> {
    let mut problems = Vec::new();
    if value & policy::DEBUG != 0 {
        problems.push("debugging allowed (the host can read guest memory)");
    }
    if value & policy::MIGRATE_MA != 0 {
        problems.push("a migration agent is allowed");
    }
    if value & policy::RESERVED_ONE == 0 {
        problems.push("reserved bit 17 is clear");
    }
    if value & policy::UNDEFINED_MASK != 0 {
        problems.push("undefined bits are set");
    }
    if !problems.is_empty() {
        return Err(format!("{value:#x}: {}", problems.join("; ")));
    }
    let smt = if value & policy::SMT != 0 { "SMT allowed" } else { "no SMT" };
    Ok(format!("{value:#x}: debug off, no migration agent, {smt}"))
}

fn vmpl(value: u32) -> Result<String, String> {
    if value != 0 {
        return Err(format!("VMPL {value}: not a report the SVSM (VMPL0) requested"));
    }
    Ok("0 (requested by the SVSM)".to_string())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses hex (whitespace ignored).
pub fn unhex(text: &str) -> Result<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).context("not hex")?;
            u8::from_str_radix(pair, 16).with_context(|| format!("{pair:?} is not hex"))
        })
        .collect()
}

/// Reads `dir/<name>.pem` or `dir/<name>.der`.
pub fn read_cert(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let pem = dir.join(format!("{name}.pem"));
    let der = dir.join(format!("{name}.der"));
    if pem.exists() {
        let text = fs::read(&pem).with_context(|| format!("reading {}", pem.display()))?;
        let (_, bytes) = der::pem::decode_vec(&text)
            .with_context(|| format!("{} is not a PEM certificate", pem.display()))?;
        Ok(bytes)
    } else if der.exists() {
        fs::read(&der).with_context(|| format!("reading {}", der.display()))
    } else {
        bail!(
            "no {name}.pem or {name}.der in {}: give --certs the directory with ark, ask and vcek",
            dir.display()
        )
    }
}

/// `cargo xtask verify`.
#[derive(clap::Args)]
#[command(after_help = "Exit status: 0 if no check failed, 1 otherwise. A check without its \
expected value fails unless skipped by name (--no-measurement-check, --no-report-data-check); \
then it is SKIP and the verdict says the report is NOT verified for it.\n\n\
The launch-identity expectations (--host-data, --id-key-digest, --author-key-digest, \
--family-id, --image-id, --min-guest-svn, --min-tcb) are optional: each one given is its own \
check, printed PASS or FAIL, and one that does not match fails the verdict; one not given is \
not checked and not printed.")]
pub struct Cli {
    /// The report file (the raw 1184-byte ATTESTATION_REPORT).
    pub report: PathBuf,
    /// Directory with ark, ask and vcek (.pem or .der); default: this build
    /// folder's development chain.
    #[arg(long)]
    pub certs: Option<PathBuf>,
    /// The expected MEASUREMENT (launch digest), hex. Without it (and
    /// without --no-measurement-check) the measurement check fails.
    #[arg(long)]
    pub measurement: Option<String>,
    /// Do not check MEASUREMENT: any image is accepted, and the verdict says
    /// the report is NOT verified.
    #[arg(long, conflicts_with = "measurement")]
    pub no_measurement_check: bool,
    /// The nonce the guest gave the SVSM, hex. Without it, or without
    /// --manifest/--service-data, the report data check fails (unless
    /// --no-report-data-check).
    #[arg(long)]
    pub nonce: Option<String>,
    /// The services manifest ATTEST_SERVICES returned (a file); it must be
    /// well formed.
    #[arg(long, conflicts_with = "service_data")]
    pub manifest: Option<PathBuf>,
    /// Instead of --manifest: the service data ATTEST_SINGLE_SERVICE
    /// returned (a file).
    #[arg(long)]
    pub service_data: Option<PathBuf>,
    /// Do not check REPORT_DATA (nonce and manifest): the report may be a
    /// replay, and the verdict says it is NOT verified.
    #[arg(long, conflicts_with_all = ["nonce", "manifest", "service_data"])]
    pub no_report_data_check: bool,
    /// Check the certificates' validity at this time (YYYY-MM-DDTHH:MM:SSZ)
    /// instead of now, e.g. for a report kept from earlier.
    #[arg(long, value_parser = parse_time)]
    pub at: Option<SystemTime>,
    /// Expect this HOST_DATA (32 bytes, 64 hex digits: what the host gave
    /// at LAUNCH_FINISH).
    #[arg(long, value_name = "HEX", value_parser = hex_array::<32>)]
    pub host_data: Option<Box<[u8; 32]>>,
    /// Expect this ID_KEY_DIGEST (48 bytes, 96 hex digits: SHA-384 of the
    /// key that signed the ID block).
    #[arg(long, value_name = "HEX", value_parser = hex_array::<48>)]
    pub id_key_digest: Option<Box<[u8; 48]>>,
    /// Expect AUTHOR_KEY_EN set and this AUTHOR_KEY_DIGEST (48 bytes, 96 hex
    /// digits: SHA-384 of the ID block's author key).
    #[arg(long, value_name = "HEX", value_parser = hex_array::<48>)]
    pub author_key_digest: Option<Box<[u8; 48]>>,
    /// Expect this FAMILY_ID of the ID block (16 bytes, 32 hex digits).
    #[arg(long, value_name = "HEX", value_parser = hex_array::<16>)]
    pub family_id: Option<Box<[u8; 16]>>,
    /// Expect this IMAGE_ID of the ID block (16 bytes, 32 hex digits).
    #[arg(long, value_name = "HEX", value_parser = hex_array::<16>)]
    pub image_id: Option<Box<[u8; 16]>>,
    /// Expect GUEST_SVN (of the ID block) to be at least N.
    #[arg(long, value_name = "N")]
    pub min_guest_svn: Option<u32>,
    /// Expect each named REPORTED_TCB component to be at least its value,
    /// e.g. bl=9,tee=0,snp=23,ucode=72 (components not named: no minimum).
    #[arg(long, value_name = "bl=N,tee=N,snp=N,ucode=N", value_parser = parse_min_tcb)]
    pub min_tcb: Option<TcbVersion>,
}

/// Parses exactly `N` bytes of hex (a flag's expected field), boxed to keep
/// the command line's arguments small.
fn hex_array<const N: usize>(text: &str) -> Result<Box<[u8; N]>, String> {
    let digits = 2 * N;
    let bytes = unhex(text)
        .map_err(|e| format!("not hex ({e:#}); expected {N} bytes as {digits} hex digits"))?;
    <Box<[u8; N]>>::try_from(bytes).map_err(|bytes| {
        format!("expected {N} bytes ({digits} hex digits), got {} bytes", bytes.len())
    })
}

/// Parses `bl=N,tee=N,snp=N,ucode=N` (any of them, each once, in any order).
fn parse_min_tcb(text: &str) -> Result<TcbVersion, String> {
    let mut minimum = TcbVersion::default();
    let mut seen = Vec::new();
    for part in text.split(',') {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not NAME=N (like bl=9,tee=0,snp=23,ucode=72)"))?;
        let value: u8 =
            value.trim().parse().map_err(|_| format!("{name}={value}: N is a number 0..=255"))?;
        let name = name.trim();
        let component = match name {
            "bl" => &mut minimum.bootloader,
            "tee" => &mut minimum.tee,
            "snp" => &mut minimum.snp,
            "ucode" => &mut minimum.microcode,
            _ => return Err(format!("unknown TCB component {name:?}: use bl, tee, snp or ucode")),
        };
        if seen.contains(&name) {
            return Err(format!("{name} is given twice"));
        }
        seen.push(name);
        *component = value;
    }
    Ok(minimum)
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    text.parse::<der::DateTime>()
        .map(|t| t.to_system_time())
        .map_err(|_| format!("{text:?} is not a UTC time like 2026-06-01T00:00:00Z"))
}

/// Runs `cargo xtask verify`; exits with status 1 if any check failed.
pub fn main(cli: &Cli, build_dir: &Path) -> Result<()> {
    let status = exit_status(run(cli, build_dir)?);
    if status != 0 {
        std::process::exit(status);
    }
    Ok(())
}

/// The command's exit status for a verdict.
fn exit_status(passed: bool) -> i32 {
    if passed { 0 } else { 1 }
}

/// Runs the verifier, prints every check and the verdict; returns whether
/// no check failed.
pub fn run(args: &Cli, build_dir: &Path) -> Result<bool> {
    let dev_dir = crate::attest_certs::chain_dir(build_dir);
    let certs = args.certs.clone().unwrap_or_else(|| dev_dir.clone());
    let measurement = match &args.measurement {
        None => None,
        Some(text) => {
            Some(<[u8; 48]>::try_from(unhex(text).context("--measurement")?).map_err(|v| {
                anyhow::anyhow!("--measurement has {} bytes, a launch digest 48", v.len())
            })?)
        }
    };
    let attested = args.manifest.as_ref().or(args.service_data.as_ref());
    let inputs = Inputs {
        report: fs::read(&args.report)
            .with_context(|| format!("reading {}", args.report.display()))?,
        ark: read_cert(&certs, "ark")?,
        ask: read_cert(&certs, "ask")?,
        vcek: read_cert(&certs, "vcek")?,
        dev_ark: read_cert(&dev_dir, "ark").ok(),
        measurement,
        nonce: args.nonce.as_deref().map(unhex).transpose().context("--nonce")?,
        manifest: attested
            .map(|path| fs::read(path).with_context(|| format!("reading {}", path.display())))
            .transpose()?,
        single_service: args.service_data.is_some(),
        not_checked: NotChecked {
            measurement: args.no_measurement_check,
            report_data: args.no_report_data_check,
        },
        time: args.at.unwrap_or_else(SystemTime::now),
    };
    let expected = Expectations {
        host_data: args.host_data.as_deref().copied(),
        id_key_digest: args.id_key_digest.as_deref().copied(),
        author_key_digest: args.author_key_digest.as_deref().copied(),
        family_id: args.family_id.as_deref().copied(),
        image_id: args.image_id.as_deref().copied(),
        min_guest_svn: args.min_guest_svn,
        min_tcb: args.min_tcb,
    };
    Ok(print(&verify_with(&inputs, &expected)))
}

/// Prints the checks and the verdict; returns whether none failed.
pub fn print(checks: &[Check]) -> bool {
    for check in checks {
        let (tag, text) = match &check.outcome {
            Outcome::Pass(text) => ("PASS", text),
            Outcome::Fail(text) => ("FAIL", text),
            Outcome::Skip(text) => ("SKIP", text),
        };
        println!("{tag}  {:<20} {text}", check.name);
    }
    let (passed, verdict) = verdict(checks);
    println!("{verdict}");
    passed
}

/// The one-line verdict, and whether no check failed.
pub fn verdict(checks: &[Check]) -> (bool, String) {
    let names = |pick: fn(&Outcome) -> bool| -> Vec<&str> {
        checks.iter().filter(|c| pick(&c.outcome)).map(|c| c.name).collect()
    };
    let failed = names(|o| matches!(o, Outcome::Fail(_)));
    let skipped = names(|o| matches!(o, Outcome::Skip(_)));
    let development = checks.iter().any(|c| {
        c.name == "trusted root"
            && matches!(&c.outcome, Outcome::Pass(t) if t.contains("DEVELOPMENT"))
    });
    let chain = if development { " (development chain, not AMD)" } else { "" };
    if !failed.is_empty() {
        (false, format!("NOT VERIFIED: {} failed", failed.join(", ")))
    } else if !skipped.is_empty() {
        (
            true,
            format!(
                "SIGNATURE VALID{chain}; NOT VERIFIED: {} not checked (opted out)",
                skipped.join(", ")
            ),
        )
    } else {
        (true, format!("VERIFIED{chain}"))
    }
}

#[cfg(test)]
pub(crate) mod test_fixtures;
#[cfg(test)]
mod tests;
