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
//!    reports verify too. Two verifiers written independently of ours accept
//!    it: virtee's `sev` crate reads the report in AMD's layout byte for
//!    byte, its parsed fields (measurement, report data, policy, VMPL, chip
//!    ID, reported TCB, version, signature algorithm) equal the values
//!    expected from the image, the chain and the nonce, and it accepts the
//!    chain and signature (and refuses one flipped bit); the `openssl` tool
//!    verifies the chain (ARK self-signed -> ASK -> VCEK, RSA-PSS) and the
//!    report's signature over bytes 0x000-0x29F (R and S turned into DER),
//!    and refuses a flipped bit and another chain's VCEK.
//! 4. The image's SNP kernel contains no development PSP (no symbol of
//!    `kernel::attest::dev_psp` or `dev_handover`, not its boot message),
//!    while the native kernel does (so the check can see it).
//! 5. Tampering fails, each for its own reason and only that: one flipped
//!    bit in the report (signature), the manifest and the nonce (report
//!    data); a wrong expected measurement (measurement); the certificates of
//!    a second development chain made for this run (trusted root, VCEK,
//!    signature), and that chain's VCEK alone (chain, VCEK, signature).
//! 6. The manifest's vTPM entry (and the single-service data) is the EK
//!    public area (TPMT_PUBLIC) that TPM2_CreatePrimary with the standard
//!    EK template L-1 returned in the guest, and has that template's shape.
//!
//! One line per check; the tier fails if any check fails.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use abi::attestation::{
    CERT_GUID_ARK, CERT_GUID_ASK, CERT_GUID_VCEK, Guid, REPORT_SIGNED_SIZE, REPORT_VERSION_DEV,
    SIGNATURE_ALGO_ECDSA_P384_SHA384, TcbVersion, VTPM_SERVICE_GUID, find_certificate,
    manifest_entries,
};
use anyhow::{Context, Result, bail};
use test_guest::blob;
use test_guest::ek::{EK_TEMPLATE, EK_TEMPLATE_SIZE};
use test_guest::mode::Mode;
use test_guest::report::ATTEST_CASES;

use crate::attest_certs::{self, DevChain, LaunchIdentity};
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
    // The second independent verifier (installed by `cargo xtask setup` too).
    crate::vtpm_procs::ensure_packages(&["openssl"])?;
    let image = guest_tests::build_image(env)?;
    let measurement = expected_measurement(&image)?;
    let launch = launch_identity(&image)?;
    let chain = attest_certs::load_or_create(&attest_certs::chain_dir(&env.build))?;
    let output = guest_tests::boot(&image.rom, Mode::Attest, 1)?;
    let out_dir = env.build.join("attest-e2e");
    let mut tally = Tally::new("attest-e2e");
    dev_psp_only_in_native_kernel(&image, &mut tally);
    guest_tests::check_cases(&output, Mode::Attest, ATTEST_CASES, &mut tally);
    match blob::parse_blobs(&output.serial).map_err(anyhow::Error::msg).and_then(Outputs::new) {
        Ok(outputs) => {
            tally.check("outputs", true, "every blob arrived whole");
            let expected = Expected { measurement, launch: &launch, chain: &chain };
            check_outputs(&outputs, &expected, &out_dir, &mut tally)?;
        }
        Err(why) => tally.check("outputs", false, &format!("{why:#}")),
    }
    println!("attest-e2e: {} passed, {} failed", tally.passed(), tally.failed());
    if tally.failed() > 0 || tally.passed() == 0 {
        bail!("{} of {} attestation checks failed", tally.failed(), tally.total());
    }
    Ok(format!(
        "{} checks passed (guest cases, report verified by ours, sev and openssl, no dev PSP in \
         the SNP kernel, tamper cases refused, EK matches)",
        tally.total()
    ))
}

/// What a PSP would report for the image's SNP platform (launch digest,
/// policy, ID block), read from the IGVM file the build wrote.
fn launch_identity(image: &BuiltImage) -> Result<LaunchIdentity> {
    let bytes =
        fs::read(&image.igvm).with_context(|| format!("reading {}", image.igvm.display()))?;
    let file = igvm::IgvmFile::new_from_binary(&bytes, None)
        .with_context(|| format!("{} is not a valid IGVM file", image.igvm.display()))?;
    LaunchIdentity::of_igvm(&file, attest_certs::DEV_HOST_DATA)
}

/// Demangled symbol paths and a boot message only the development PSP has.
const DEV_PSP_SYMBOLS: [&str; 2] = ["kernel::attest::dev_psp::", "kernel::attest::dev_handover::"];
const DEV_PSP_MESSAGE: &str = "development PSP installed";

/// The SNP platform's kernel must not contain the development PSP (its
/// keys would be worthless there, but its code must not be in an SNP
/// image at all); the native one must, or the markers mean nothing.
fn dev_psp_only_in_native_kernel(image: &BuiltImage, tally: &mut Tally) {
    for (name, wanted) in [("snp", false), ("native", true)] {
        let elf = image.igvm.with_file_name(format!("kernel-{name}.elf"));
        let found = dev_psp_markers(&elf);
        let ok = found.as_ref().is_ok_and(|found| found.is_empty() != wanted);
        let detail = match found {
            Ok(found) if found.is_empty() => format!("{}: no development PSP", elf.display()),
            Ok(found) => {
                format!("{}: development PSP present: {}", elf.display(), found.join("; "))
            }
            Err(why) => format!("{why:#}"),
        };
        let check = if wanted { "native-kernel-has-dev-psp" } else { "snp-kernel-has-no-dev-psp" };
        tally.check(check, ok, &detail);
    }
}

/// The development-PSP markers found in `elf`: its symbols (`nm -C`) and
/// its boot message (the bytes).
fn dev_psp_markers(elf: &Path) -> Result<Vec<String>> {
    let bytes = fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let output = Command::new("nm")
        .arg("-C")
        .arg(elf)
        .output()
        .context("running nm (binutils; `cargo xtask setup` installs it)")?;
    if !output.status.success() {
        bail!("nm -C {} failed: {}", elf.display(), String::from_utf8_lossy(&output.stderr));
    }
    let symbols = String::from_utf8_lossy(&output.stdout);
    let mut found: Vec<String> = symbols
        .lines()
        .filter(|line| DEV_PSP_SYMBOLS.iter().any(|marker| line.contains(marker)))
        .map(|line| line.split_whitespace().skip(2).collect::<Vec<_>>().join(" "))
        .take(3)
        .collect();
    if bytes.windows(DEV_PSP_MESSAGE.len()).any(|w| w == DEV_PSP_MESSAGE.as_bytes()) {
        found.push(format!("the string {DEV_PSP_MESSAGE:?}"));
    }
    Ok(found)
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

/// What the report must say, from sources other than the report: the
/// build's expected launch digest, what a PSP reports for the image, and
/// the build folder's development chain.
struct Expected<'a> {
    measurement: [u8; 48],
    launch: &'a LaunchIdentity,
    chain: &'a DevChain,
}

fn check_outputs(
    outputs: &Outputs,
    expected: &Expected<'_>,
    out_dir: &Path,
    tally: &mut Tally,
) -> Result<()> {
    let (chain, measurement) = (expected.chain, expected.measurement);
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
    let fields = ExpectedFields::new(expected, &outputs.nonce, &outputs.manifest);
    let genuine = independent_verifier(&outputs.report, &certs, &fields);
    let mut tampered_report = outputs.report.clone();
    tampered_report[REPORT_ID_OFFSET] ^= 0x01;
    let tampered = independent_verifier(&tampered_report, &certs, &fields);
    tally.check(
        "verify/independent-verifier-sev",
        genuine.is_ok() && tampered.is_err(),
        &format!(
            "virtee sev: the report {}; with one bit flipped {}",
            genuine.unwrap_or_else(|why| why),
            tampered.map_or_else(|why| why, |_| "accepted (wrong)".to_string())
        ),
    );
    let openssl_dir = out_dir.join("openssl");
    let cert_dir = out_dir.join("certs");
    let result = openssl_verifies(&outputs.report, &cert_dir, &openssl_dir);
    tally.check("verify/openssl", result.is_ok(), &result.unwrap_or_else(|why| format!("{why:#}")));
    tamper_cases(&inputs, out_dir, tally)?;
    openssl_tamper_cases(&cert_dir, &out_dir.join("other-chain"), &openssl_dir, tally)?;
    endorsement_key(outputs, tally);
    Ok(())
}

/// The report's fields an independent parser must find, each from a source
/// other than the report.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ExpectedFields {
    version: u32,
    signature_algo: u32,
    measurement: [u8; 48],
    report_data: [u8; 64],
    policy: u64,
    vmpl: u32,
    chip_id: [u8; 64],
    reported_tcb: TcbVersion,
    family_id: [u8; 16],
    image_id: [u8; 16],
    host_data: [u8; 32],
}

impl ExpectedFields {
    fn new(expected: &Expected<'_>, nonce: &[u8], manifest: &[u8]) -> ExpectedFields {
        use sha2::Digest;
        let report_data =
            sha2::Sha512::new().chain_update(nonce).chain_update(manifest).finalize().into();
        ExpectedFields {
            version: REPORT_VERSION_DEV,
            signature_algo: SIGNATURE_ALGO_ECDSA_P384_SHA384,
            measurement: expected.measurement,
            report_data,
            policy: expected.launch.policy,
            vmpl: 0,
            chip_id: expected.chain.chip_id,
            reported_tcb: attest_certs::DEV_TCB,
            family_id: expected.launch.family_id,
            image_id: expected.launch.image_id,
            host_data: expected.launch.host_data,
        }
    }
}

/// virtee's `sev` crate, an SNP verifier written independently of ours, on
/// `report` and `certs`: it must read AMD's layout from the bytes, write the
/// same bytes back, find `expected` in its parsed fields (a field our
/// layout put at the wrong offset fails here even though the bytes are
/// signed), and accept the chain and the signature.
fn independent_verifier(
    report: &[u8],
    certs: &Certs,
    expected: &ExpectedFields,
) -> Result<String, String> {
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
    let seen = ExpectedFields {
        version: parsed.version,
        signature_algo: parsed.sig_algo,
        measurement: parsed.measurement,
        report_data: parsed.report_data,
        policy: u64::from(parsed.policy),
        vmpl: parsed.vmpl,
        chip_id: parsed.chip_id,
        reported_tcb: TcbVersion {
            fmc: parsed.reported_tcb.fmc.unwrap_or(0),
            bootloader: parsed.reported_tcb.bootloader,
            tee: parsed.reported_tcb.tee,
            snp: parsed.reported_tcb.snp,
            microcode: parsed.reported_tcb.microcode,
        },
        family_id: parsed.family_id,
        image_id: parsed.image_id,
        host_data: parsed.host_data,
    };
    let differing = field_differences(&seen, expected);
    if !differing.is_empty() {
        return Err(format!("reads fields other than expected: {}", differing.join("; ")));
    }
    (&chain, &parsed).verify().map_err(|e| format!("is refused: {e}"))?;
    Ok(format!(
        "is accepted (version {}, byte for byte, measurement, report data, policy, VMPL, chip ID, \
         reported TCB, signature algorithm, family/image ID, host data as expected)",
        parsed.version
    ))
}

/// The fields of `seen` that differ from `expected`, each with both values.
fn field_differences(seen: &ExpectedFields, expected: &ExpectedFields) -> Vec<String> {
    let mut differing = Vec::new();
    let mut compare = |name: &str, seen: String, expected: String| {
        if seen != expected {
            differing.push(format!("{name} {seen} (expected {expected})"));
        }
    };
    compare("version", seen.version.to_string(), expected.version.to_string());
    compare(
        "signature algorithm",
        seen.signature_algo.to_string(),
        expected.signature_algo.to_string(),
    );
    compare("measurement", hex(&seen.measurement), hex(&expected.measurement));
    compare("report data", hex(&seen.report_data), hex(&expected.report_data));
    compare("policy", format!("{:#x}", seen.policy), format!("{:#x}", expected.policy));
    compare("VMPL", seen.vmpl.to_string(), expected.vmpl.to_string());
    compare("chip ID", hex(&seen.chip_id), hex(&expected.chip_id));
    compare(
        "reported TCB",
        format!("{:?}", seen.reported_tcb),
        format!("{:?}", expected.reported_tcb),
    );
    compare("family ID", hex(&seen.family_id), hex(&expected.family_id));
    compare("image ID", hex(&seen.image_id), hex(&expected.image_id));
    compare("host data", hex(&seen.host_data), hex(&expected.host_data));
    differing
}

/// The `openssl` command-line tool (OpenSSL's own X.509 and ECDSA code, not
/// RustCrypto's or virtee's) on the report and the certificates in
/// `cert_dir`: the chain, then the report's signature over bytes
/// 0x000-0x29F with the VCEK's public key; and the same signature over one
/// flipped bit must fail. Work files go to `work`.
fn openssl_verifies(report: &[u8], cert_dir: &Path, work: &Path) -> Result<String> {
    openssl_chain(cert_dir, &cert_dir.join("vcek.pem"))?;
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let signed = report.get(..REPORT_SIGNED_SIZE).context("the report is too short")?;
    let signature = ecdsa_signature_der(report).context("the report has no R and S")?;
    let public_key = work.join("vcek-public.pem");
    openssl(&[
        "x509".as_ref(),
        "-in".as_ref(),
        cert_dir.join("vcek.pem").as_os_str(),
        "-pubkey".as_ref(),
        "-noout".as_ref(),
        "-out".as_ref(),
        public_key.as_os_str(),
    ])?;
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
        let path = work.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let signature_file = write("report-signature.der", &signature)?;
    let dgst = |data: &Path| {
        openssl(&[
            "dgst".as_ref(),
            "-sha384".as_ref(),
            "-verify".as_ref(),
            public_key.as_os_str(),
            "-signature".as_ref(),
            signature_file.as_os_str(),
            data.as_os_str(),
        ])
    };
    let verified = dgst(&write("report-signed-bytes.bin", signed)?)
        .context("openssl dgst -sha384 -verify refused the report's signature")?;
    if !verified.contains("Verified OK") {
        bail!("openssl dgst printed {verified:?}, not \"Verified OK\"");
    }
    let mut flipped = signed.to_vec();
    flipped[REPORT_ID_OFFSET] ^= 0x01;
    if let Ok(out) = dgst(&write("report-signed-bytes-flipped.bin", &flipped)?) {
        bail!("openssl accepted the signature over a flipped bit: {out:?}");
    }
    Ok(format!(
        "openssl verify: ARK self-signed, ASK, VCEK OK; openssl dgst -sha384 -verify: {} (and \
         refuses a flipped bit)",
        verified.trim()
    ))
}

/// `openssl verify` must refuse the VCEK of the chain in `other_chain_dir`
/// and our VCEK with one bit of its signature flipped (same names, so only
/// the signature check can refuse it).
fn openssl_tamper_cases(
    cert_dir: &Path,
    other_chain_dir: &Path,
    work: &Path,
    tally: &mut Tally,
) -> Result<()> {
    let vcek = attest_verify::read_cert(cert_dir, "vcek")?;
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let bad_signature = work.join("vcek-bad-signature.pem");
    fs::write(&bad_signature, pem_with_flipped_last_bit(&vcek)?)
        .with_context(|| format!("writing {}", bad_signature.display()))?;
    for (name, vcek) in [
        ("tamper/openssl-refuses-another-chains-vcek", other_chain_dir.join("vcek.pem")),
        ("tamper/openssl-refuses-a-vcek-signature-bit-flipped", bad_signature),
    ] {
        match openssl_chain(cert_dir, &vcek) {
            Ok(()) => tally.check(name, false, "openssl verify accepted it (wrong)"),
            Err(why) => tally.check(name, true, &format!("refused: {why:#}")),
        }
    }
    Ok(())
}

/// `der` as PEM with the last bit flipped (in a certificate: its signature).
fn pem_with_flipped_last_bit(der: &[u8]) -> Result<String> {
    let mut flipped = der.to_vec();
    *flipped.last_mut().context("an empty certificate")? ^= 0x01;
    der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &flipped)
        .map_err(|e| anyhow::anyhow!("PEM-encoding a certificate: {e}"))
}

/// `openssl verify` of the chain in `cert_dir` ending in `vcek`: the ARK
/// self-signed (its own signature checked), the ASK by the ARK, the VCEK
/// through the ASK.
fn openssl_chain(cert_dir: &Path, vcek: &Path) -> Result<()> {
    let ark = cert_dir.join("ark.pem");
    let ask = cert_dir.join("ask.pem");
    for (name, cert, untrusted) in [
        ("ARK", ark.as_path(), None),
        ("ASK", ask.as_path(), None),
        ("VCEK", vcek, Some(ask.as_path())),
    ] {
        let mut args =
            vec!["verify".as_ref(), "-check_ss_sig".as_ref(), "-CAfile".as_ref(), ark.as_os_str()];
        if let Some(ask) = untrusted {
            args.extend(["-untrusted".as_ref(), ask.as_os_str()]);
        }
        args.push(cert.as_os_str());
        let out = openssl(&args).with_context(|| format!("openssl verify refused the {name}"))?;
        if !out.contains(": OK") {
            bail!("openssl verify printed {out:?} for the {name}");
        }
    }
    Ok(())
}

/// Runs `openssl ARGS`; its stdout if it succeeded, else an error with its
/// output.
fn openssl(args: &[&std::ffi::OsStr]) -> Result<String> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (Debian package openssl; `cargo xtask setup` installs it)")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let said = format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        bail!(
            "`openssl {}` failed ({}): {}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            output.status,
            said.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(stdout)
}

/// The report's signature as DER (SEQUENCE of INTEGER r, INTEGER s), read
/// straight from the bytes: R at 0x2A0 and S at 0x2E8, 72 bytes each,
/// little-endian.
fn ecdsa_signature_der(report: &[u8]) -> Option<Vec<u8>> {
    let integer = |little_endian: &[u8]| {
        let mut big_endian: Vec<u8> = little_endian.iter().rev().copied().collect();
        let leading_zeros = big_endian.iter().take_while(|&&b| b == 0).count();
        big_endian.drain(..leading_zeros.min(big_endian.len() - 1));
        if big_endian[0] & 0x80 != 0 {
            big_endian.insert(0, 0);
        }
        let mut der = vec![0x02, big_endian.len() as u8];
        der.extend(big_endian);
        der
    };
    let r = integer(report.get(0x2A0..0x2A0 + 72)?);
    let s = integer(report.get(0x2E8..0x2E8 + 72)?);
    let mut der = vec![0x30, (r.len() + s.len()) as u8];
    der.extend(r);
    der.extend(s);
    Some(der)
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
    use std::sync::OnceLock;

    use abi::attestation::ReportSignature;
    use p384::ecdsa::signature::Signer;
    use zerocopy::IntoBytes;

    use super::*;
    use crate::attest_certs::tests::{other_chain, test_chain};
    use crate::attest_sample::{self, Sample};

    /// 1, 2, ..., 48: a field moved by a byte changes.
    const MEASUREMENT: [u8; 48] = {
        let mut bytes = [0u8; 48];
        let mut i = 0;
        while i < 48 {
            bytes[i] = i as u8 + 1;
            i += 1;
        }
        bytes
    };
    const NONCE: [u8; 64] = [0x4E; 64];

    fn sample() -> &'static Sample {
        static SAMPLE: OnceLock<Sample> = OnceLock::new();
        SAMPLE.get_or_init(|| {
            attest_sample::attest_services(test_chain(), MEASUREMENT, &NONCE).unwrap()
        })
    }

    fn launch() -> LaunchIdentity {
        LaunchIdentity { measurement: MEASUREMENT, policy: 0x30000, ..Default::default() }
    }

    fn fields() -> ExpectedFields {
        let launch = launch();
        let expected = Expected { measurement: MEASUREMENT, launch: &launch, chain: test_chain() };
        ExpectedFields::new(&expected, &NONCE, &sample().manifest)
    }

    /// Signs `report` again with the test chain's VCEK, as a PSP with a
    /// wrong layout would have.
    fn resign(report: &mut [u8]) {
        let key = p384::ecdsa::SigningKey::from(&test_chain().vcek_key);
        let signature: p384::ecdsa::Signature = key.sign(&report[..REPORT_SIGNED_SIZE]);
        let (r, s) = signature.split_bytes();
        let signature = ReportSignature::from_big_endian(
            r.as_slice().try_into().unwrap(),
            s.as_slice().try_into().unwrap(),
        );
        report[REPORT_SIGNED_SIZE..].copy_from_slice(signature.as_bytes());
    }

    /// A temporary directory with the test chain as PEM files.
    fn cert_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("attest-e2e-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        attest_certs::store(test_chain(), &dir).unwrap();
        dir
    }

    #[test]
    fn sev_reads_every_expected_field_from_our_report() {
        let certs = Certs::of(test_chain());
        let accepted = independent_verifier(&sample().report, &certs, &fields());
        assert!(accepted.is_ok(), "{accepted:?}");
        let mut flipped = sample().report.clone();
        flipped[REPORT_ID_OFFSET] ^= 1;
        let refused = independent_verifier(&flipped, &certs, &fields()).unwrap_err();
        assert!(refused.contains("is refused"), "{refused}");
    }

    /// A field one byte off its place, in a report whose signature is
    /// valid: only the field comparison can notice.
    #[test]
    fn a_field_at_a_wrong_offset_fails_even_when_signed() {
        let certs = Certs::of(test_chain());
        let mut moved = sample().report.clone();
        moved.copy_within(0x90..0x90 + 47, 0x91);
        resign(&mut moved);
        let refused = independent_verifier(&moved, &certs, &fields()).unwrap_err();
        assert!(refused.starts_with("reads fields other than expected: measurement"), "{refused}");
        let mut policy = sample().report.clone();
        policy[0x08] ^= 0x01;
        resign(&mut policy);
        let refused = independent_verifier(&policy, &certs, &fields()).unwrap_err();
        assert!(refused.contains("policy 0x30001 (expected 0x30000)"), "{refused}");
        let wrong_chip = ExpectedFields { chip_id: other_chain().chip_id, ..fields() };
        let refused = independent_verifier(&sample().report, &certs, &wrong_chip).unwrap_err();
        assert!(refused.contains("chip ID"), "{refused}");
    }

    #[test]
    fn the_der_signature_is_the_standard_encoding() {
        let report = &sample().report;
        let der = ecdsa_signature_der(report).unwrap();
        let parsed = AttestationReportBytes::signature(report);
        assert_eq!(der, parsed.to_der().as_bytes());
        // Short and high-bit components.
        let mut synthetic = vec![0u8; 0x4A0];
        synthetic[0x2A0] = 0x80; // r = 0x80
        synthetic[0x2E8] = 0x01; // s = 1
        assert_eq!(
            ecdsa_signature_der(&synthetic).unwrap(),
            [0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01]
        );
    }

    /// Our reading of the report's R and S, for the comparison above.
    struct AttestationReportBytes;

    impl AttestationReportBytes {
        fn signature(report: &[u8]) -> p384::ecdsa::Signature {
            use zerocopy::FromBytes;
            let parsed = abi::attestation::AttestationReport::read_from_bytes(report).unwrap();
            let (r, s) = parsed.signature.to_big_endian().unwrap();
            p384::ecdsa::Signature::from_scalars(r, s).unwrap()
        }
    }

    #[test]
    fn openssl_accepts_our_chain_and_report_and_refuses_others() {
        let dir = cert_dir("openssl");
        let verified = openssl_verifies(&sample().report, &dir, &dir.join("work"));
        assert!(verified.as_ref().is_ok_and(|v| v.contains("Verified OK")), "{verified:?}");
        let mut tampered = sample().report.clone();
        tampered[0x90] ^= 1;
        let refused = openssl_verifies(&tampered, &dir, &dir.join("work")).unwrap_err();
        assert!(format!("{refused:#}").contains("refused the report's signature"), "{refused:#}");
        let other = cert_dir("openssl-other");
        fs::write(
            other.join("vcek.pem"),
            der::pem::encode_string("CERTIFICATE", der::pem::LineEnding::LF, &other_chain().vcek)
                .unwrap(),
        )
        .unwrap();
        let refused = openssl_chain(&dir, &other.join("vcek.pem")).unwrap_err();
        assert!(format!("{refused:#}").contains("refused the VCEK"), "{refused:#}");
        let bad_signature = other.join("vcek-bad-signature.pem");
        fs::write(&bad_signature, pem_with_flipped_last_bit(&test_chain().vcek).unwrap()).unwrap();
        let refused = format!("{:#}", openssl_chain(&dir, &bad_signature).unwrap_err());
        assert!(refused.contains("signature failure"), "{refused}");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(&other).unwrap();
    }

    /// This test binary links the kernel's development PSP (the xtask uses
    /// it for `attest-sample`): its symbols are found; a file that is not
    /// an ELF is an error, never "no development PSP".
    #[test]
    fn dev_psp_markers_are_found_by_symbol() {
        let exe = std::env::current_exe().unwrap();
        let found = dev_psp_markers(&exe).unwrap();
        assert!(found.iter().any(|s| s.contains("kernel::attest::dev_psp::")), "{found:?}");
        let not_elf = std::env::temp_dir().join(format!("attest-e2e-nm-{}", std::process::id()));
        fs::write(&not_elf, "not an ELF").unwrap();
        assert!(dev_psp_markers(&not_elf).is_err());
        fs::remove_file(&not_elf).unwrap();
    }

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
