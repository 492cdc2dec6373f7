//! The verifier on development reports produced by the SVSM's own
//! attestation code (every tamper case failing with its reason), on a real
//! AMD Milan report and chain, and cross-checked by an independent verifier
//! (virtee `sev`); the command's exit status for passing, failing and
//! opted-out checks. Certificates are checked at a fixed time
//! ([`VERIFY_TIME`]), never the wall clock, so the tests do not start
//! failing when a certificate expires (the Milan VCEK in April 2030).

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use abi::attestation::{REPORT_SIZE, platform_info};

use super::*;
use crate::attest_certs::tests::{other_chain, test_chain, test_chain_valid_from};
use crate::attest_certs::{DEV_TCB, LaunchIdentity};
use crate::attest_sample::{self, Sample};

const MEASUREMENT: [u8; 48] = [0x4D; 48];
const NONCE: [u8; 64] = [0x4E; 64];
/// 2026-06-01T00:00:00Z: inside the test chains' and AMD's certificates'
/// validity.
pub const VERIFY_TIME: &str = "2026-06-01T00:00:00Z";

fn verify_time() -> SystemTime {
    parse_time(VERIFY_TIME).unwrap()
}

fn sample() -> &'static Sample {
    static SAMPLE: OnceLock<Sample> = OnceLock::new();
    SAMPLE
        .get_or_init(|| attest_sample::attest_services(test_chain(), MEASUREMENT, &NONCE).unwrap())
}

fn dev_inputs() -> Inputs {
    let chain = test_chain();
    let sample = sample();
    Inputs {
        report: sample.report.clone(),
        ark: chain.ark.clone(),
        ask: chain.ask.clone(),
        vcek: chain.vcek.clone(),
        dev_ark: Some(chain.ark.clone()),
        measurement: Some(MEASUREMENT),
        nonce: Some(NONCE.to_vec()),
        manifest: Some(sample.manifest.clone()),
        single_service: false,
        not_checked: NotChecked::default(),
        time: verify_time(),
    }
}

/// A development report (of the test chain's PSP) whose REPORT_DATA is
/// SHA-512(NONCE || `attested`).
fn report_over(attested: &[u8]) -> Vec<u8> {
    let launch = LaunchIdentity { measurement: MEASUREMENT, policy: 0x30000, ..Default::default() };
    report_of(&launch, attested)
}

/// A development report of a guest launched as `launch`, whose REPORT_DATA
/// is SHA-512(NONCE || `attested`).
fn report_of(launch: &LaunchIdentity, attested: &[u8]) -> Vec<u8> {
    use kernel::attest::dev_psp::DevPsp;
    let handover = crate::attest_certs::dev_psp_params(test_chain(), launch).unwrap();
    let (params, table) = abi::attestation::DevPspParams::parse(&handover).unwrap();
    let psp = DevPsp::new(&params, table, [0x1D; 32]).unwrap();
    let report_data = Sha512::new().chain_update(NONCE).chain_update(attested).finalize().into();
    let request = abi::attestation::ReportRequest {
        report_data,
        vmpl: 0,
        key_sel: abi::attestation::KEY_SEL_VCEK,
        reserved: [0; 24],
    };
    zerocopy::IntoBytes::as_bytes(&psp.signed_report(&request)).to_vec()
}

/// The names of the failed checks, each with its reason.
fn failures(inputs: &Inputs) -> Vec<(&'static str, String)> {
    failures_with(inputs, &Expectations::default())
}

/// The failed checks, expecting `expected` too.
fn failures_with(inputs: &Inputs, expected: &Expectations) -> Vec<(&'static str, String)> {
    verify_with(inputs, expected)
        .into_iter()
        .filter_map(|c| match c.outcome {
            Outcome::Fail(reason) => Some((c.name, reason)),
            _ => None,
        })
        .collect()
}

fn failed_names(inputs: &Inputs) -> Vec<&'static str> {
    failures(inputs).into_iter().map(|(name, _)| name).collect()
}

#[test]
fn a_development_report_passes_every_check() {
    let checks = verify(&dev_inputs());
    assert_eq!(checks.len(), 9);
    for check in &checks {
        assert!(matches!(check.outcome, Outcome::Pass(_)), "{check:?}");
    }
    assert!(print(&checks));
    assert_eq!(sample().report.len(), REPORT_SIZE);
}

#[test]
fn one_flipped_bit_anywhere_in_the_signed_report_breaks_the_signature() {
    for (offset, also) in
        [(0x50, "report data"), (0x90, "measurement"), (0x1A0, "VCEK matches report"), (0x0C0, "")]
    {
        let mut inputs = dev_inputs();
        inputs.report[offset] ^= 0x01;
        let failed = failed_names(&inputs);
        assert!(failed.contains(&"report signature"), "flip at {offset:#x}: {failed:?}");
        if !also.is_empty() {
            assert!(failed.contains(&also), "flip at {offset:#x}: {failed:?}");
        }
    }
    let mut inputs = dev_inputs();
    inputs.report[0x2A0] ^= 0x01; // in R
    assert_eq!(failed_names(&inputs), ["report signature"]);
    let reason = &failures(&inputs)[0].1;
    assert!(reason.contains("does not verify with the VCEK"), "{reason}");
}

#[test]
fn a_flipped_bit_in_the_manifest_or_the_nonce_fails_report_data() {
    let mut inputs = dev_inputs();
    inputs.manifest.as_mut().unwrap()[30] ^= 0x04;
    assert_eq!(failed_names(&inputs), ["report data"]);
    assert!(failures(&inputs)[0].1.contains("SHA-512(nonce || manifest)"));
    let mut inputs = dev_inputs();
    inputs.nonce.as_mut().unwrap()[0] ^= 0x80;
    assert_eq!(failed_names(&inputs), ["report data"]);
}

#[test]
fn a_wrong_expected_measurement_fails_measurement_only() {
    let mut inputs = dev_inputs();
    inputs.measurement = Some([0x4C; 48]);
    let failures = failures(&inputs);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, "measurement");
    assert!(failures[0].1.contains("is not the expected"), "{}", failures[0].1);
}

#[test]
fn a_vcek_from_another_chain_is_rejected() {
    let mut inputs = dev_inputs();
    inputs.vcek = other_chain().vcek.clone();
    let failures = failures(&inputs);
    let names: Vec<_> = failures.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["certificate chain", "VCEK matches report", "report signature"]);
    assert!(failures[0].1.contains("VCEK's signature does not verify"), "{}", failures[0].1);
    assert!(failures[1].1.contains("another chip"), "{}", failures[1].1);
}

#[test]
fn an_ask_from_another_chain_is_rejected() {
    let mut inputs = dev_inputs();
    inputs.ask = other_chain().ask.clone();
    let failures = failures(&inputs);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].1.contains("ASK's signature does not verify"), "{}", failures[0].1);
}

#[test]
fn a_whole_other_chain_is_not_a_trusted_root() {
    let mut inputs = dev_inputs();
    let other = other_chain();
    (inputs.ark, inputs.ask, inputs.vcek) =
        (other.ark.clone(), other.ask.clone(), other.vcek.clone());
    let failures = failures(&inputs);
    assert_eq!(failures[0].0, "trusted root");
    assert!(failures[0].1.contains("neither AMD's nor this build folder's"), "{}", failures[0].1);
    assert!(failures.iter().any(|(n, _)| *n == "report signature"));
}

#[test]
fn policy_and_vmpl_rules() {
    assert!(guest_policy(0x30000).is_ok());
    assert!(guest_policy(0x30000 | policy::DEBUG).unwrap_err().contains("debugging allowed"));
    assert!(guest_policy(0x30000 | policy::MIGRATE_MA).unwrap_err().contains("migration agent"));
    assert!(guest_policy(0x10000).unwrap_err().contains("bit 17"));
    assert!(guest_policy(0x30000 | 1 << 40).unwrap_err().contains("undefined"));
    assert!(vmpl(0).is_ok());
    assert!(vmpl(2).unwrap_err().contains("VMPL 2"));
}

#[test]
fn missing_expected_values_fail_unless_opted_out() {
    let mut inputs = dev_inputs();
    inputs.measurement = None;
    inputs.manifest = None;
    let failures = failures(&inputs);
    let names: Vec<_> = failures.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["measurement", "report data"]);
    assert!(failures[0].1.contains("--no-measurement-check"), "{}", failures[0].1);
    assert!(failures[1].1.contains("--no-report-data-check"), "{}", failures[1].1);
    let (passed, text) = verdict(&verify(&inputs));
    assert!(!passed);
    assert_eq!(text, "NOT VERIFIED: measurement, report data failed");

    inputs.not_checked = NotChecked { measurement: true, report_data: true };
    let checks = verify(&inputs);
    let skipped: Vec<_> =
        checks.iter().filter(|c| matches!(c.outcome, Outcome::Skip(_))).map(|c| c.name).collect();
    assert_eq!(skipped, ["measurement", "report data"]);
    let (passed, text) = verdict(&checks);
    assert!(passed, "opted out by name: the command succeeds");
    assert_eq!(
        text,
        "SIGNATURE VALID (development chain, not AMD); NOT VERIFIED: measurement, report data \
         not checked (opted out)"
    );
    // An opt-out does not hide a failure elsewhere.
    inputs.report[0x140] ^= 1;
    assert!(!verdict_of(&inputs).0);
    let truncated = Inputs { report: vec![0; 100], ..dev_inputs() };
    assert_eq!(failed_names(&truncated), ["report format"]);
}

fn verdict_of(inputs: &Inputs) -> (bool, String) {
    verdict(&verify(inputs))
}

#[test]
fn a_malformed_manifest_fails_even_with_matching_report_data() {
    let not_a_manifest = b"not a services manifest".to_vec();
    let inputs = Inputs {
        report: report_over(&not_a_manifest),
        manifest: Some(not_a_manifest.clone()),
        ..dev_inputs()
    };
    let failed = failures(&inputs);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "report data");
    assert!(failed[0].1.contains("not a well-formed services manifest"), "{}", failed[0].1);
    // The same bytes given as one service's data (ATTEST_SINGLE_SERVICE).
    let single = Inputs { single_service: true, ..inputs };
    assert!(failed_names(&single).is_empty(), "{:?}", failures(&single));
    let mut other = single.clone();
    other.manifest.as_mut().unwrap()[0] ^= 1;
    assert_eq!(failed_names(&other), ["report data"]);
}

#[test]
fn certificates_are_checked_at_the_verification_time() {
    let too_late = UNIX_EPOCH + Duration::from_secs(2_240_000_000); // 2040-12
    let inputs = Inputs { time: too_late, ..dev_inputs() };
    let failures = failures(&inputs);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].1.contains("outside its validity"), "{}", failures[0].1);
    let too_early =
        Inputs { time: test_chain_valid_from() - Duration::from_secs(1), ..dev_inputs() };
    assert_eq!(failed_names(&too_early), ["certificate chain"]);
}

/// A temporary build folder holding the test chain, a report and its
/// manifest.
struct CommandFixture {
    dir: PathBuf,
}

impl CommandFixture {
    fn new(name: &str) -> CommandFixture {
        let dir = std::env::temp_dir().join(format!("attest-verify-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        crate::attest_certs::store(test_chain(), &crate::attest_certs::chain_dir(&dir)).unwrap();
        fs::write(dir.join("report.bin"), &sample().report).unwrap();
        fs::write(dir.join("manifest.bin"), &sample().manifest).unwrap();
        CommandFixture { dir }
    }

    /// `cargo xtask verify report.bin ARGS --at VERIFY_TIME`: its exit status.
    fn exit_status(&self, args: &[&str]) -> i32 {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            cli: Cli,
        }
        let report = self.dir.join("report.bin");
        let mut argv = vec!["verify", report.to_str().unwrap(), "--at", VERIFY_TIME];
        argv.extend_from_slice(args);
        let command = <Command as clap::Parser>::try_parse_from(argv).unwrap();
        exit_status(run(&command.cli, &self.dir).unwrap())
    }
}

impl Drop for CommandFixture {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_command_exits_0_only_when_no_check_failed() {
    let fixture = CommandFixture::new("exit");
    let manifest = fixture.dir.join("manifest.bin");
    let manifest = manifest.to_str().unwrap();
    let nonce = hex(&NONCE);
    let measurement = hex(&MEASUREMENT);
    let all = ["--measurement", &measurement, "--nonce", &nonce, "--manifest", manifest];
    assert_eq!(fixture.exit_status(&all), 0, "every check passes");
    let wrong = hex(&[0x4C; 48]);
    let wrong_measurement = ["--measurement", &wrong, "--nonce", &nonce, "--manifest", manifest];
    assert_eq!(fixture.exit_status(&wrong_measurement), 1, "a check fails");
    assert_eq!(fixture.exit_status(&all[2..]), 1, "no --measurement: not a pass");
    let opted_out = ["--no-measurement-check", "--nonce", &nonce, "--manifest", manifest];
    assert_eq!(fixture.exit_status(&opted_out), 0, "skipped by name");
    assert_eq!(fixture.exit_status(&all[..2]), 1, "no nonce or manifest");
    assert_eq!(fixture.exit_status(&[&all[..2], &["--no-report-data-check"]].concat()), 0);
    let as_service_data = ["--measurement", &measurement, "--nonce", &nonce];
    let as_service_data = [&as_service_data[..], &["--service-data", manifest]].concat();
    assert_eq!(fixture.exit_status(&as_service_data), 0, "any bytes as service data");
}

#[test]
fn the_command_line_refuses_contradictions() {
    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        cli: Cli,
    }
    let parse = |args: &[&str]| {
        <Command as clap::Parser>::try_parse_from([&["verify", "r.bin"], args].concat()).is_ok()
    };
    assert!(parse(&["--no-measurement-check", "--no-report-data-check"]));
    assert!(!parse(&["--measurement", "00", "--no-measurement-check"]));
    assert!(!parse(&["--nonce", "00", "--no-report-data-check"]));
    assert!(!parse(&["--manifest", "m", "--service-data", "m"]));
    assert!(!parse(&["--at", "2026-06-01"]));
}

/// A real report of a Milan part with its VCEK, and AMD's Milan ARK/ASK
/// (the `sev` crate's fixtures): our layout reads it field by field as
/// AMD's firmware wrote it, and the verifier accepts it.
#[test]
fn a_real_amd_milan_report_and_chain() {
    let hex_text =
        String::from_utf8(test_fixtures::read("tests/certs_data/report_milan.hex")).unwrap();
    let report_bytes = unhex(&hex_text).unwrap();
    assert_eq!(report_bytes.len(), REPORT_SIZE);
    let report = AttestationReport::read_from_bytes(&report_bytes).unwrap();
    assert_eq!(report.version, 2);
    assert_eq!(report.policy, 0x30000);
    assert_eq!(report.vmpl, 0);
    assert_eq!(report.signature_algo, 1);
    assert_eq!(report.platform_info, platform_info::SMT_EN);
    assert_eq!(report.generation(), Some(Generation::Milan));
    let tcb = TcbVersion::decode(report.reported_tcb, Generation::Milan);
    assert_eq!(tcb, TcbVersion { fmc: 0, bootloader: 3, tee: 0, snp: 8, microcode: 0x73 });
    assert_eq!(
        (report.current_version.major, report.current_version.minor, report.current_version.build),
        (1, 52, 4)
    );
    assert_eq!(report.report_id_ma, [0xFF; 32]);

    let inputs = Inputs {
        report: report_bytes,
        ark: test_fixtures::pem_cert("src/certs/snp/builtin/milan/ark.pem"),
        ask: test_fixtures::pem_cert("src/certs/snp/builtin/milan/ask.pem"),
        vcek: test_fixtures::read("tests/certs_data/vcek_milan.der"),
        dev_ark: Some(test_chain().ark.clone()),
        measurement: Some(report.measurement),
        nonce: None,
        manifest: None,
        single_service: false,
        not_checked: NotChecked { measurement: false, report_data: true },
        time: verify_time(),
    };
    let checks = verify(&inputs);
    let root = checks.iter().find(|c| c.name == "trusted root").unwrap();
    assert_eq!(root.outcome, Outcome::Pass("AMD ARK-Milan".to_string()));
    assert!(failed_names(&inputs).is_empty(), "{:?}", failures(&inputs));
    assert!(print(&checks));
    // After the VCEK's notAfter (2030-04-03) the same chain is refused.
    let expired = Inputs { time: parse_time("2030-04-04T00:00:00Z").unwrap(), ..inputs.clone() };
    let reason = &failures(&expired)[0];
    assert!(reason.1.contains("the VCEK is outside its validity"), "{reason:?}");
    let mut tampered = inputs;
    tampered.report[0x50] ^= 1;
    assert!(failed_names(&tampered).contains(&"report signature"));
}

#[test]
fn amds_arks_are_the_pinned_roots() {
    for (product, name) in
        [("milan", "AMD ARK-Milan"), ("genoa", "AMD ARK-Genoa"), ("turin", "AMD ARK-Turin")]
    {
        let ark = test_fixtures::pem_cert(&format!("src/certs/snp/builtin/{product}/ark.pem"));
        let ask = test_fixtures::pem_cert(&format!("src/certs/snp/builtin/{product}/ask.pem"));
        assert_eq!(trusted_root(&ark, None), Ok(name.to_string()));
        assert_eq!(signed_by("ARK", &ark, &spki_der(&ark).unwrap()), Ok(()));
        assert_eq!(signed_by("ASK", &ask, &spki_der(&ark).unwrap()), Ok(()));
    }
}

/// A launch with an ID block (signed with an ID key and an author key) and
/// host data: what the expectation flags compare against.
fn identified_launch() -> LaunchIdentity {
    LaunchIdentity {
        measurement: MEASUREMENT,
        policy: 0x30000,
        host_data: [0x4A; 32],
        family_id: [0xF1; 16],
        image_id: [0x1D; 16],
        guest_svn: 7,
        id_key_digest: [0x1C; 48],
        author_key_digest: [0xA7; 48],
    }
}

/// The development report of [`identified_launch`], over the sample's nonce
/// and manifest (so every other check passes).
fn identified_report() -> &'static [u8] {
    static REPORT: OnceLock<Vec<u8>> = OnceLock::new();
    REPORT.get_or_init(|| report_of(&identified_launch(), &sample().manifest))
}

fn identified_inputs() -> Inputs {
    Inputs { report: identified_report().to_vec(), ..dev_inputs() }
}

/// Every expectation, each met exactly by [`identified_launch`] (the
/// minimums equal the reported values).
fn matching_expectations() -> Expectations {
    let launch = identified_launch();
    Expectations {
        host_data: Some(launch.host_data),
        id_key_digest: Some(launch.id_key_digest),
        author_key_digest: Some(launch.author_key_digest),
        family_id: Some(launch.family_id),
        image_id: Some(launch.image_id),
        min_guest_svn: Some(launch.guest_svn),
        min_tcb: Some(DEV_TCB),
    }
}

fn failed_names_with(inputs: &Inputs, expected: &Expectations) -> Vec<&'static str> {
    failures_with(inputs, expected).into_iter().map(|(name, _)| name).collect()
}

#[test]
fn each_expectation_given_is_a_check_that_passes_on_a_matching_report() {
    let inputs = identified_inputs();
    assert_eq!(verify(&inputs).len(), 9, "expectations not given are not checks");
    let checks = verify_with(&inputs, &matching_expectations());
    let names: Vec<_> = checks[9..].iter().map(|c| c.name).collect();
    let expected_names = [
        "host data",
        "ID key digest",
        "author key digest",
        "family ID",
        "image ID",
        "guest SVN",
        "minimum TCB",
    ];
    assert_eq!(names, expected_names);
    for check in &checks {
        assert!(matches!(check.outcome, Outcome::Pass(_)), "{check:?}");
    }
    assert_eq!(verdict(&checks), (true, "VERIFIED (development chain, not AMD)".to_string()));
    let author = &checks[11].outcome;
    assert_eq!(author, &Outcome::Pass(format!("{} (AUTHOR_KEY_EN set)", hex(&[0xA7; 48]))));
    let tcb = &checks[15].outcome;
    assert_eq!(
        tcb,
        &Outcome::Pass(
            "REPORTED_TCB bootloader 9 >= 9, TEE 0 >= 0, SNP 23 >= 23, microcode 72 >= 72"
                .to_string()
        )
    );
    // Each alone is one extra check; lower minimums pass too.
    let lower = Expectations {
        min_guest_svn: Some(0),
        min_tcb: Some(TcbVersion { snp: 22, ..TcbVersion::default() }),
        ..Expectations::default()
    };
    let checks = verify_with(&inputs, &lower);
    assert_eq!(checks.len(), 11);
    assert!(checks.iter().all(|c| matches!(c.outcome, Outcome::Pass(_))), "{checks:?}");
}

#[test]
fn each_mismatching_expectation_fails_its_own_check() {
    let matching = matching_expectations();
    let tcb = |change: fn(&mut TcbVersion)| {
        let mut minimum = DEV_TCB;
        change(&mut minimum);
        Expectations { min_tcb: Some(minimum), ..matching }
    };
    let differs = |field: &str, actual: &[u8], expected: &[u8]| {
        format!("{field} {} is not the expected {}", hex(actual), hex(expected))
    };
    let cases = [
        (
            Expectations { host_data: Some([0x4B; 32]), ..matching },
            "host data",
            differs("HOST_DATA", &[0x4A; 32], &[0x4B; 32]),
        ),
        (
            Expectations { id_key_digest: Some([0x1D; 48]), ..matching },
            "ID key digest",
            differs("ID_KEY_DIGEST", &[0x1C; 48], &[0x1D; 48]),
        ),
        (
            Expectations { author_key_digest: Some([0x1C; 48]), ..matching },
            "author key digest",
            differs("AUTHOR_KEY_DIGEST", &[0xA7; 48], &[0x1C; 48]),
        ),
        (
            Expectations { family_id: Some([0xF2; 16]), ..matching },
            "family ID",
            differs("FAMILY_ID", &[0xF1; 16], &[0xF2; 16]),
        ),
        (
            Expectations { image_id: Some([0xF1; 16]), ..matching },
            "image ID",
            differs("IMAGE_ID", &[0x1D; 16], &[0xF1; 16]),
        ),
        (
            Expectations { min_guest_svn: Some(8), ..matching },
            "guest SVN",
            "GUEST_SVN 7 is below the minimum 8".to_string(),
        ),
        (tcb(|t| t.bootloader += 1), "minimum TCB", "REPORTED_TCB bootloader 9 is below 10".into()),
        (tcb(|t| t.tee += 1), "minimum TCB", "REPORTED_TCB TEE 0 is below 1".into()),
        (tcb(|t| t.snp += 1), "minimum TCB", "REPORTED_TCB SNP 23 is below 24".into()),
        (tcb(|t| t.microcode += 1), "minimum TCB", "REPORTED_TCB microcode 72 is below 73".into()),
        (
            tcb(|t| (t.snp, t.microcode) = (30, 80)),
            "minimum TCB",
            "REPORTED_TCB SNP 23 is below 30, microcode 72 is below 80".into(),
        ),
    ];
    let inputs = identified_inputs();
    for (expected, name, reason) in cases {
        assert_eq!(failures_with(&inputs, &expected), [(name, reason)]);
        let (passed, text) = verdict(&verify_with(&inputs, &expected));
        assert!(!passed, "{name}");
        assert_eq!(text, format!("NOT VERIFIED: {name} failed"));
    }
}

#[test]
fn an_author_key_digest_is_expected_only_with_author_key_en() {
    // The sample's launch has no ID block: its identity fields are zero and
    // AUTHOR_KEY_EN is clear, so even a zero AUTHOR_KEY_DIGEST fails.
    let zero = Expectations {
        host_data: Some([0; 32]),
        id_key_digest: Some([0; 48]),
        author_key_digest: Some([0; 48]),
        family_id: Some([0; 16]),
        image_id: Some([0; 16]),
        min_guest_svn: Some(0),
        min_tcb: Some(TcbVersion::default()),
    };
    let failures = failures_with(&dev_inputs(), &zero);
    let reason = "AUTHOR_KEY_EN is clear: the ID block was not signed with an author key";
    assert_eq!(failures, [("author key digest", reason.to_string())]);
    let no_author = Expectations { author_key_digest: None, ..zero };
    assert!(failures_with(&dev_inputs(), &no_author).is_empty());
    // An ID block without an author key: AUTHOR_KEY_EN is clear.
    let launch = LaunchIdentity { author_key_digest: [0; 48], ..identified_launch() };
    let inputs = Inputs { report: report_of(&launch, &sample().manifest), ..dev_inputs() };
    let expected = Expectations { author_key_digest: Some([0xA7; 48]), ..Expectations::default() };
    assert_eq!(failures_with(&inputs, &expected), [("author key digest", reason.to_string())]);
}

#[test]
fn a_tampered_identity_field_fails_the_signature_and_the_expectation() {
    let mut inputs = identified_inputs();
    inputs.report[0xC0] ^= 1; // HOST_DATA
    let failed = failed_names_with(&inputs, &matching_expectations());
    assert_eq!(failed, ["report signature", "host data"]);
}

#[test]
fn the_command_checks_the_expectations_given() {
    let fixture = CommandFixture::new("expect");
    fs::write(fixture.dir.join("report.bin"), identified_report()).unwrap();
    let manifest = fixture.dir.join("manifest.bin");
    let (nonce, measurement) = (hex(&NONCE), hex(&MEASUREMENT));
    let base = [
        "--measurement",
        &measurement,
        "--nonce",
        &nonce,
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    let launch = identified_launch();
    let flags = [
        ("--host-data", hex(&launch.host_data), hex(&[0x4B; 32])),
        ("--id-key-digest", hex(&launch.id_key_digest), hex(&[0x1D; 48])),
        ("--author-key-digest", hex(&launch.author_key_digest), hex(&[0x1D; 48])),
        ("--family-id", hex(&launch.family_id), hex(&[0xF2; 16])),
        ("--image-id", hex(&launch.image_id), hex(&[0xF2; 16])),
        ("--min-guest-svn", "7".to_string(), "8".to_string()),
        ("--min-tcb", "bl=9,tee=0,snp=23,ucode=72".to_string(), "snp=24".to_string()),
    ];
    let mut all = base.to_vec();
    for (flag, good, bad) in &flags {
        let one_good = [&base[..], &[*flag, good.as_str()]].concat();
        assert_eq!(fixture.exit_status(&one_good), 0, "{flag} {good}");
        let one_bad = [&base[..], &[*flag, bad.as_str()]].concat();
        assert_eq!(fixture.exit_status(&one_bad), 1, "{flag} {bad}");
        all.extend([*flag, good.as_str()]);
    }
    assert_eq!(fixture.exit_status(&all), 0, "every expectation met");
    // Expectations met do not make up for a missing measurement.
    assert_eq!(fixture.exit_status(&all[2..]), 1);
}

#[test]
fn malformed_expectations_are_refused_naming_the_flag_and_the_length() {
    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        cli: Cli,
    }
    let parse = |args: &[&str]| {
        <Command as clap::Parser>::try_parse_from([&["verify", "r.bin"], args].concat())
    };
    let (odd, zz) = ("0".repeat(63), "zz".repeat(48));
    let (too_long, too_short) = ("00".repeat(49), "00".repeat(15));
    let cases = [
        ("--host-data", "00", "expected 32 bytes (64 hex digits), got 1 bytes"),
        ("--host-data", odd.as_str(), "not hex (odd number of hex digits)"),
        ("--id-key-digest", zz.as_str(), "expected 48 bytes as 96 hex digits"),
        ("--author-key-digest", too_long.as_str(), "expected 48 bytes (96 hex digits), got 49"),
        ("--family-id", too_short.as_str(), "expected 16 bytes (32 hex digits), got 15"),
        ("--image-id", "", "expected 16 bytes (32 hex digits), got 0"),
        ("--min-guest-svn", "x", "invalid digit"),
        ("--min-tcb", "bl=1,fmc=2", "unknown TCB component \"fmc\""),
        ("--min-tcb", "snp=256", "snp=256: N is a number 0..=255"),
        ("--min-tcb", "snp=1,snp=2", "snp is given twice"),
        ("--min-tcb", "snp", "\"snp\" is not NAME=N"),
    ];
    for (flag, value, reason) in cases {
        let Err(error) = parse(&[flag, value]) else { panic!("{flag} {value:?} accepted") };
        let text = error.to_string();
        assert!(text.contains(flag) && text.contains(reason), "{flag} {value:?}: {text}");
    }
    assert_eq!(parse_min_tcb("ucode=72, snp=23,tee=0,bl=9"), Ok(DEV_TCB));
    assert_eq!(parse_min_tcb("snp=5"), Ok(TcbVersion { snp: 5, ..TcbVersion::default() }));
    let spaced = " 4A".repeat(32);
    let Ok(parsed) = parse(&["--host-data", &spaced, "--min-guest-svn", "3"]) else {
        panic!("well-formed flags refused")
    };
    assert_eq!(parsed.cli.host_data, Some(Box::new([0x4A; 32])));
    assert_eq!(parsed.cli.min_guest_svn, Some(3));
    assert_eq!(parsed.cli.image_id, None);
}
