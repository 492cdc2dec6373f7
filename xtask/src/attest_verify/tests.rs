//! The verifier on development reports produced by the SVSM's own
//! attestation code (every tamper case failing with its reason), on a real
//! AMD Milan report and chain, and cross-checked by an independent verifier
//! (virtee `sev`).

use std::sync::OnceLock;

use abi::attestation::{REPORT_SIZE, platform_info};

use super::*;
use crate::attest_certs::tests::{other_chain, test_chain};
use crate::attest_sample::{self, Sample};

const MEASUREMENT: [u8; 48] = [0x4D; 48];
const NONCE: [u8; 64] = [0x4E; 64];

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
    }
}

/// The names of the failed checks, each with its reason.
fn failures(inputs: &Inputs) -> Vec<(&'static str, String)> {
    verify(inputs)
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
fn missing_inputs_are_skipped_and_said_so() {
    let mut inputs = dev_inputs();
    inputs.measurement = None;
    inputs.manifest = None;
    let checks = verify(&inputs);
    let skipped: Vec<_> =
        checks.iter().filter(|c| matches!(c.outcome, Outcome::Skip(_))).map(|c| c.name).collect();
    assert_eq!(skipped, ["measurement", "report data"]);
    assert!(print(&checks), "skips are not failures");
    let truncated = Inputs { report: vec![0; 100], ..dev_inputs() };
    assert_eq!(failed_names(&truncated), ["report format"]);
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
    };
    let checks = verify(&inputs);
    let root = checks.iter().find(|c| c.name == "trusted root").unwrap();
    assert_eq!(root.outcome, Outcome::Pass("AMD ARK-Milan".to_string()));
    assert!(failed_names(&inputs).is_empty(), "{:?}", failures(&inputs));
    assert!(print(&checks));
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

/// virtee's `sev` crate, an independent implementation, accepts the
/// development chain and the SVSM's report byte for byte.
#[test]
fn an_independent_verifier_accepts_our_reports() {
    use sev::certs::snp::{Certificate as SevCert, Chain, Verifiable, ca};
    use sev::parser::ByteParser;
    let chain = test_chain();
    let sev_chain = Chain {
        ca: ca::Chain {
            ark: SevCert::from_der(&chain.ark).unwrap(),
            ask: SevCert::from_der(&chain.ask).unwrap(),
        },
        vek: SevCert::from_der(&chain.vcek).unwrap(),
    };
    let report = sev::firmware::guest::AttestationReport::from_bytes(&sample().report).unwrap();
    assert_eq!(report.measurement, MEASUREMENT);
    assert_eq!(
        report.to_bytes().unwrap().as_slice(),
        sample().report.as_slice(),
        "sev re-encodes our bytes exactly"
    );
    (&sev_chain, &report).verify().expect("sev accepts the development chain and report");
    let mut tampered = sample().report.clone();
    tampered[0x90] ^= 1;
    let report = sev::firmware::guest::AttestationReport::from_bytes(&tampered).unwrap();
    assert!((&sev_chain, &report).verify().is_err());
}
