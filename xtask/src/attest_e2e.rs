//! The attestation test of `cargo xtask test`, end to end: the test guest
//! asks the SVSM for attestation from inside the guest (its `attest` mode,
//! `tests/guest/src/attest.rs`), and what it receives is verified here, away
//! from the guest, with the verifier behind `cargo xtask verify`.
//!
//! 1. The guest's own cases (protocol 1 with hostile inputs and too-small
//!    buffers, exact result codes; the vTPM's EK through protocol 2) all
//!    pass, and the boot ends with the guest's success exit.
//! 2. Its outputs arrive intact (`test_guest::blob`): nonce, report,
//!    manifest, certificate table, the 32-byte-nonce and single-service
//!    reports, the CreatePrimary response. They are written to
//!    `build/attest-e2e/` (with the certificates as PEM) so the verifier can
//!    be rerun by hand; the command is printed.
//! 3. The report verifies against the image's expected measurement
//!    (`svsm.igvm.digest` of the build), the nonce and the manifest, with the
//!    certificates the SVSM returned and this build folder's development
//!    ARK as the root: every check passes, none is skipped. The other two
//!    reports verify too, and virtee's `sev` crate, an independent verifier,
//!    reads the report in AMD's layout byte for byte and accepts it (and
//!    refuses it with one bit flipped).
//! 4. Tampering fails, each for its own reason and only that: one flipped
//!    bit in the report (signature), the manifest and the nonce (report
//!    data); a wrong expected measurement (measurement); the certificates of
//!    a second development chain made for this run (trusted root, VCEK,
//!    signature), and that chain's VCEK alone (chain, VCEK, signature).
//! 5. The manifest's vTPM entry (and the single-service data) is the EK
//!    public area (TPMT_PUBLIC) that TPM2_CreatePrimary with the standard
//!    EK template L-1 returned in the guest, and has that template's shape.
//!
//! One line per check; the tier fails if any check fails.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use abi::attestation::{
    CERT_GUID_ARK, CERT_GUID_ASK, CERT_GUID_VCEK, Guid, VTPM_SERVICE_GUID, find_certificate,
    manifest_entries,
};
use anyhow::{Context, Result, bail};
use test_guest::blob;
use test_guest::ek::{EK_TEMPLATE, EK_TEMPLATE_SIZE};
use test_guest::mode::Mode;
use test_guest::report::ATTEST_CASES;

use crate::attest_certs::{self, DevChain};
use crate::attest_verify::{self, Check, Inputs, NotChecked, Outcome, hex};
use crate::builder::BuiltImage;
use crate::env::Env;
use crate::guest_tests::{self, Tally};

/// Bytes of template L-1 before its `unique` field (the modulus).
const EK_TEMPLATE_FIELDS: usize = 58;
/// RSA-2048 modulus bytes.
const EK_MODULUS_SIZE: usize = 256;
/// The byte of REPORT_ID whose bit the report tamper case flips: a field
/// only the signature protects.
const REPORT_ID_OFFSET: usize = 0x140;
const _: () = assert!(REPORT_ID_OFFSET + 32 <= abi::attestation::REPORT_SIGNED_SIZE);

/// `cargo xtask test`, attestation tier.
pub fn run(env: &Env) -> Result<String> {
    let image = guest_tests::build_image(env)?;
    let measurement = expected_measurement(&image)?;
    let chain = attest_certs::load_or_create(&attest_certs::chain_dir(&env.build))?;
    let output = guest_tests::boot(&image.rom, Mode::Attest, 1)?;
    let out_dir = env.build.join("attest-e2e");
    let mut tally = Tally::new("attest-e2e");
    guest_tests::check_cases(&output, Mode::Attest, ATTEST_CASES, &mut tally);
    match blob::parse_blobs(&output.serial).map_err(anyhow::Error::msg).and_then(Outputs::new) {
        Ok(outputs) => {
            tally.check("outputs", true, "every blob arrived whole");
            check_outputs(&outputs, &chain, measurement, &out_dir, &mut tally)?;
        }
        Err(why) => tally.check("outputs", false, &format!("{why:#}")),
    }
    println!("attest-e2e: {} passed, {} failed", tally.passed(), tally.failed());
    if tally.failed() > 0 || tally.passed() == 0 {
        bail!("{} of {} attestation checks failed", tally.failed(), tally.total());
    }
    Ok(format!(
        "{} checks passed (guest cases, report verified, 6 tamper cases refused, EK matches)",
        tally.total()
    ))
}

/// The launch digest the build wrote next to the image.
fn expected_measurement(image: &BuiltImage) -> Result<[u8; 48]> {
    let path = PathBuf::from(format!("{}.digest", image.igvm.display()));
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let bytes = attest_verify::unhex(text.trim()).with_context(|| path.display().to_string())?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!("{} holds {} bytes, a launch digest 48", path.display(), b.len())
    })
}

/// What the guest received, by the names it printed them under.
struct Outputs {
    nonce: Vec<u8>,
    report: Vec<u8>,
    manifest: Vec<u8>,
    certs: Vec<u8>,
    short_nonce: Vec<u8>,
    short_nonce_report: Vec<u8>,
    short_nonce_manifest: Vec<u8>,
    single_report: Vec<u8>,
    single_data: Vec<u8>,
    ek_create_primary: Vec<u8>,
}

impl Outputs {
    fn new(mut blobs: BTreeMap<String, Vec<u8>>) -> Result<Outputs> {
        let mut take = |name: &str| {
            blobs.remove(name).with_context(|| {
                format!("the guest printed no `{name}` blob (its case lines above say why)")
            })
        };
        Ok(Outputs {
            nonce: take("nonce")?,
            report: take("report")?,
            manifest: take("manifest")?,
            certs: take("certs")?,
            short_nonce: take("short-nonce")?,
            short_nonce_report: take("short-nonce-report")?,
            short_nonce_manifest: take("short-nonce-manifest")?,
            single_report: take("single-report")?,
            single_data: take("single-data")?,
            ek_create_primary: take("ek-create-primary")?,
        })
    }
}

/// ARK, ASK and VCEK (DER).
struct Certs {
    ark: Vec<u8>,
    ask: Vec<u8>,
    vcek: Vec<u8>,
}

impl Certs {
    fn from_table(table: &[u8]) -> Result<Certs> {
        let get = |guid: Guid, name: &str| -> Result<Vec<u8>> {
            match find_certificate(table, guid) {
                Ok(Some(cert)) => Ok(cert.to_vec()),
                Ok(None) => bail!("the certificate table has no {name}"),
                Err(e) => bail!("the certificate table is malformed: {e:?}"),
            }
        };
        Ok(Certs {
            ark: get(CERT_GUID_ARK, "ARK")?,
            ask: get(CERT_GUID_ASK, "ASK")?,
            vcek: get(CERT_GUID_VCEK, "VCEK")?,
        })
    }

    fn of(chain: &DevChain) -> Certs {
        Certs { ark: chain.ark.clone(), ask: chain.ask.clone(), vcek: chain.vcek.clone() }
    }
}

fn check_outputs(
    outputs: &Outputs,
    chain: &DevChain,
    measurement: [u8; 48],
    out_dir: &Path,
    tally: &mut Tally,
) -> Result<()> {
    let certs = match Certs::from_table(&outputs.certs) {
        Ok(certs) => certs,
        Err(why) => {
            tally.check("certificate-table", false, &format!("{why:#}"));
            return Ok(());
        }
    };
    let same_chain = (&certs.ark, &certs.ask, &certs.vcek) == (&chain.ark, &chain.ask, &chain.vcek);
    tally.check(
        "certificate-table",
        same_chain,
        "ARK, ASK and VCEK returned by the SVSM are this build folder's development chain",
    );
    let inputs = Inputs {
        report: outputs.report.clone(),
        ark: certs.ark.clone(),
        ask: certs.ask.clone(),
        vcek: certs.vcek.clone(),
        dev_ark: Some(chain.ark.clone()),
        measurement: Some(measurement),
        nonce: Some(outputs.nonce.clone()),
        manifest: Some(outputs.manifest.clone()),
        single_service: false,
        not_checked: NotChecked::default(),
        time: SystemTime::now(),
    };
    let command = write_files(outputs, &certs, measurement, out_dir)?;
    println!("attest-e2e: the verifier on the guest's report, as `{command}` runs it:");
    attest_verify::print(&attest_verify::verify(&inputs));
    expect_failures(tally, "verify/report", &inputs, &[], "");
    let other = Inputs {
        report: outputs.short_nonce_report.clone(),
        nonce: Some(outputs.short_nonce.clone()),
        manifest: Some(outputs.short_nonce_manifest.clone()),
        ..inputs.clone()
    };
    expect_failures(tally, "verify/report-32-byte-nonce", &other, &[], "");
    let single = Inputs {
        report: outputs.single_report.clone(),
        manifest: Some(outputs.single_data.clone()),
        single_service: true,
        ..inputs.clone()
    };
    expect_failures(tally, "verify/single-service-report", &single, &[], "");
    let genuine = independent_verifier(&outputs.report, &certs);
    let mut tampered_report = outputs.report.clone();
    tampered_report[REPORT_ID_OFFSET] ^= 0x01;
    let tampered = independent_verifier(&tampered_report, &certs);
    tally.check(
        "verify/independent-verifier",
        genuine.is_ok() && tampered.is_err(),
        &format!(
            "virtee sev: the report {}; with one bit flipped {}",
            genuine.unwrap_or_else(|why| why),
            tampered.map_or_else(|why| why, |_| "accepted (wrong)".to_string())
        ),
    );
    tamper_cases(&inputs, out_dir, tally)?;
    endorsement_key(outputs, tally);
    Ok(())
}

/// virtee's `sev` crate, an SNP verifier written independently of ours, on
/// `report` and `certs`: it must read AMD's layout from the bytes, write the
/// same bytes back, and accept the chain and the signature.
fn independent_verifier(report: &[u8], certs: &Certs) -> Result<String, String> {
    use sev::certs::snp::{Certificate, Chain, Verifiable, ca};
    use sev::firmware::guest::AttestationReport;
    use sev::parser::ByteParser;
    let cert = |der: &[u8], name: &str| {
        Certificate::from_der(der).map_err(|e| format!("cannot read the {name}: {e}"))
    };
    let chain = Chain {
        ca: ca::Chain { ark: cert(&certs.ark, "ARK")?, ask: cert(&certs.ask, "ASK")? },
        vek: cert(&certs.vcek, "VCEK")?,
    };
    let parsed =
        AttestationReport::from_bytes(report).map_err(|e| format!("cannot read it: {e}"))?;
    let bytes = parsed.to_bytes().map_err(|e| format!("cannot write it back: {e}"))?;
    if bytes.as_slice() != report {
        return Err("reads it differently from AMD's layout (its bytes change)".to_string());
    }
    (&chain, &parsed).verify().map_err(|e| format!("is refused: {e}"))?;
    Ok(format!("is accepted (version {}, byte for byte)", parsed.version))
}

/// Writes what the guest received to `out_dir`; returns the `cargo xtask
/// verify` command that checks it.
fn write_files(
    outputs: &Outputs,
    certs: &Certs,
    measurement: [u8; 48],
    out_dir: &Path,
) -> Result<String> {
    let cert_dir = out_dir.join("certs");
    fs::create_dir_all(&cert_dir).with_context(|| format!("creating {}", cert_dir.display()))?;
    let write = |path: PathBuf, bytes: &[u8]| {
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    for (name, der) in [("ark", &certs.ark), ("ask", &certs.ask), ("vcek", &certs.vcek)] {
        let pem = der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, der)
            .map_err(|e| anyhow::anyhow!("PEM-encoding the {name}: {e}"))?;
        write(cert_dir.join(format!("{name}.pem")), pem.as_bytes())?;
    }
    write(out_dir.join("report.bin"), &outputs.report)?;
    write(out_dir.join("manifest.bin"), &outputs.manifest)?;
    write(out_dir.join("nonce.hex"), format!("{}\n", hex(&outputs.nonce)).as_bytes())?;
    write(out_dir.join("certs.bin"), &outputs.certs)?;
    write(out_dir.join("single-report.bin"), &outputs.single_report)?;
    write(out_dir.join("single-data.bin"), &outputs.single_data)?;
    write(out_dir.join("ek-create-primary.bin"), &outputs.ek_create_primary)?;
    let dir = out_dir.display();
    Ok(format!(
        "cargo xtask verify {dir}/report.bin --certs {dir}/certs --measurement {} --nonce {} --manifest {dir}/manifest.bin",
        hex(&measurement),
        hex(&outputs.nonce)
    ))
}

/// Verifies `inputs` and records whether exactly the checks `expected`
/// failed (none skipped), the first of them for a reason containing
/// `reason`.
fn expect_failures(
    tally: &mut Tally,
    name: &str,
    inputs: &Inputs,
    expected: &[&str],
    reason: &str,
) {
    let checks = attest_verify::verify(inputs);
    let failed: Vec<&Check> =
        checks.iter().filter(|c| matches!(c.outcome, Outcome::Fail(_))).collect();
    let skipped: Vec<&str> =
        checks.iter().filter(|c| matches!(c.outcome, Outcome::Skip(_))).map(|c| c.name).collect();
    let names: Vec<&str> = failed.iter().map(|c| c.name).collect();
    let first_reason = failed.first().map_or(String::new(), |c| match &c.outcome {
        Outcome::Fail(why) => why.clone(),
        _ => String::new(),
    });
    let ok = names == expected && skipped.is_empty() && first_reason.contains(reason);
    let detail = if expected.is_empty() {
        format!("{} checks, failed {names:?}, skipped {skipped:?} (expected none)", checks.len())
    } else {
        format!("refused by {names:?} (expected {expected:?}): {first_reason}")
    };
    tally.check(name, ok, &detail);
}

fn tamper_cases(genuine: &Inputs, out_dir: &Path, tally: &mut Tally) -> Result<()> {
    let mut report = genuine.clone();
    report.report[REPORT_ID_OFFSET] ^= 0x01;
    expect_failures(
        tally,
        "tamper/report-bit-flipped",
        &report,
        &["report signature"],
        "does not verify with the VCEK",
    );
    let mut manifest = genuine.clone();
    if let Some(bytes) = manifest.manifest.as_mut().and_then(|m| m.last_mut()) {
        *bytes ^= 0x01;
    }
    expect_failures(
        tally,
        "tamper/manifest-bit-flipped",
        &manifest,
        &["report data"],
        "SHA-512(nonce || manifest)",
    );
    let mut nonce = genuine.clone();
    if let Some(byte) = nonce.nonce.as_mut().and_then(|n| n.first_mut()) {
        *byte ^= 0x80;
    }
    expect_failures(
        tally,
        "tamper/nonce-bit-flipped",
        &nonce,
        &["report data"],
        "SHA-512(nonce || manifest)",
    );
    let mut measurement = genuine.clone();
    if let Some(digest) = measurement.measurement.as_mut() {
        digest[47] ^= 0x01;
    }
    expect_failures(
        tally,
        "tamper/wrong-expected-measurement",
        &measurement,
        &["measurement"],
        "is not the expected",
    );

    // A second development chain, made for this run: its ARK is not the
    // build folder's, and its VCEK did not sign the report.
    let other_dir = out_dir.join("other-chain");
    if other_dir.exists() {
        fs::remove_dir_all(&other_dir)
            .with_context(|| format!("removing {}", other_dir.display()))?;
    }
    let other = Certs::of(&attest_certs::create(&other_dir, 2048, "other")?);
    let whole = Inputs {
        ark: other.ark.clone(),
        ask: other.ask.clone(),
        vcek: other.vcek.clone(),
        ..genuine.clone()
    };
    expect_failures(
        tally,
        "tamper/certificates-of-another-chain",
        &whole,
        &["trusted root", "VCEK matches report", "report signature"],
        "neither AMD's nor this build folder's",
    );
    let vcek = Inputs { vcek: other.vcek, ..genuine.clone() };
    expect_failures(
        tally,
        "tamper/vcek-of-another-chain",
        &vcek,
        &["certificate chain", "VCEK matches report", "report signature"],
        "VCEK's signature does not verify",
    );
    Ok(())
}

/// The EK public area the guest's CreatePrimary returned, against the
/// manifest's vTPM entry and the single-service data.
fn endorsement_key(outputs: &Outputs, tally: &mut Tally) {
    let created = kernel::vtpm::ek::parse_create_primary(&outputs.ek_create_primary);
    let public = match created {
        Ok(created) => created.public,
        Err(why) => {
            tally.check("ek/create-primary-response", false, &format!("{why:?}"));
            return;
        }
    };
    let shape = ek_shape(&public);
    tally.check("ek/template-l1", shape.is_ok(), &shape.unwrap_or_else(|why| why));
    let entry = manifest_entries(&outputs.manifest).ok().and_then(|mut entries| {
        entries.find(|(guid, _)| *guid == VTPM_SERVICE_GUID).map(|(_, data)| data.to_vec())
    });
    tally.check(
        "ek/manifest-entry-is-the-ek",
        entry.as_deref() == Some(public.as_slice()),
        &format!(
            "the manifest's vTPM entry ({:?} bytes) equals the TPMT_PUBLIC of CreatePrimary(TPM_RH_ENDORSEMENT, L-1) ({} bytes)",
            entry.as_ref().map(Vec::len),
            public.len()
        ),
    );
    tally.check(
        "ek/single-service-data-is-the-ek",
        outputs.single_data == public,
        &format!(
            "ATTEST_SINGLE_SERVICE(vTPM) data ({} bytes) equals the EK's TPMT_PUBLIC",
            outputs.single_data.len()
        ),
    );
}

/// Whether `public` is a key of template L-1: the template's fields, then
/// a 2048-bit modulus.
fn ek_shape(public: &[u8]) -> Result<String, String> {
    if public.len() != EK_TEMPLATE_SIZE {
        return Err(format!("{} bytes, template L-1 gives {EK_TEMPLATE_SIZE}", public.len()));
    }
    if public[..EK_TEMPLATE_FIELDS] != EK_TEMPLATE[..EK_TEMPLATE_FIELDS] {
        return Err(format!(
            "fields {} differ from template L-1's {}",
            hex(&public[..EK_TEMPLATE_FIELDS]),
            hex(&EK_TEMPLATE[..EK_TEMPLATE_FIELDS])
        ));
    }
    let modulus = &public[EK_TEMPLATE_FIELDS..];
    if modulus.len() != EK_MODULUS_SIZE || modulus[0] & 0x80 == 0 || modulus[255] & 1 == 0 {
        return Err("the unique field is not a 2048-bit odd modulus".to_string());
    }
    Ok(format!(
        "RSA-2048, SHA-256, attributes 0x000300b2, EK policy, AES-128-CFB; modulus {}...",
        hex(&modulus[..8])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guests_ek_command_is_the_kernels() {
        assert_eq!(test_guest::ek::CREATE_EK.to_vec(), kernel::vtpm::ek::create_primary_command());
        assert_eq!(EK_TEMPLATE.to_vec(), kernel::vtpm::ek::template());
    }

    #[test]
    fn the_ek_shape_check_can_fail() {
        let mut public = EK_TEMPLATE.to_vec();
        public[EK_TEMPLATE_FIELDS] = 0xC5;
        public[EK_TEMPLATE_SIZE - 1] = 0x01;
        assert!(ek_shape(&public).is_ok());
        let mut attributes = public.clone();
        attributes[7] ^= 0x40;
        assert!(ek_shape(&attributes).unwrap_err().contains("differ"));
        assert!(ek_shape(&EK_TEMPLATE).unwrap_err().contains("modulus"), "zero modulus");
        assert!(ek_shape(&public[..300]).is_err());
    }

    #[test]
    fn outputs_name_the_missing_blob() {
        let mut blobs = BTreeMap::new();
        blobs.insert("nonce".to_string(), vec![1]);
        let error = Outputs::new(blobs).err().unwrap().to_string();
        assert!(error.contains("`report`"), "{error}");
    }
}
