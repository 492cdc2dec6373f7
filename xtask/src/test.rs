//! `cargo xtask test`: every test tier, in the order they depend on each
//! other, with one summary at the end.
//!
//! On the default (`dev`) platform everything runs here, under QEMU TCG:
//! host unit tests of every crate, the launch digest of the built images
//! against independent implementations, the kernel's in-kernel tests booted on
//! the dev and native platforms, the test guest exercising every protocol
//! call, attestation end to end (the test guest's reports verified, tampered
//! copies refused), OVMF and Linux with measured boot into the SVSM's vTPM
//! (event-log replay, a changed kernel changes PCR 4, the guest cannot read
//! the vTPM's state), and vTPM conformance against real TPM clients. A tier that fails
//! does not stop the others, so one run shows the whole picture; the
//! command fails if any tier failed. `--platform snp` boots the in-kernel
//! test build through the launcher on an SEV-SNP host.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::builder::{self, BuildOptions, FirmwareChoice, KERNEL_FEATURES, KERNEL_TEST_FEATURES};
use crate::env::Env;
use crate::qemu::{self, QemuOptions};
use crate::{attest_e2e, digest_check, guest_linux, guest_tests, setup, vtpm_conformance};

/// The fewest in-kernel tests a kernel test boot must report.
const MIN_KERNEL_TESTS: usize = 25;

/// Where the tests run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TestPlatform {
    /// QEMU TCG here: the dev platform (SVM + nested paging) and native.
    Dev,
    /// An AMD SEV-SNP host, through the launcher.
    Snp,
}

/// Options of `cargo xtask test`.
#[derive(Args)]
pub struct TestArgs {
    /// Where to run the boot tests.
    #[arg(long, value_enum, default_value = "dev")]
    platform: TestPlatform,
    /// Run only the tiers whose names contain this text (e.g. `in-kernel`,
    /// `digest`, `vTPM`); by default every tier runs.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

/// A tier: its name and what runs it (a one-line result or the failure).
type Tier = (&'static str, Box<dyn Fn(&Env) -> Result<String>>);

/// One tier's outcome.
struct TierResult {
    name: &'static str,
    outcome: Result<String>,
    elapsed: Duration,
}

pub fn run(env: &Env, args: &TestArgs) -> Result<()> {
    let tiers: Vec<Tier> = match args.platform {
        TestPlatform::Dev => vec![
            ("host unit tests", Box::new(host_unit_tests)),
            (
                "launch digest of the built images (igvm crate, sev-snp-measure, launcher)",
                Box::new(digests),
            ),
            (
                "in-kernel tests, dev platform (QEMU TCG, SVM+NPT)",
                Box::new(|env: &Env| kernel_tests(env, qemu::DEV_PLATFORM_CPU, Skips::Refused)),
            ),
            (
                "in-kernel tests, native platform (QEMU TCG, no SVM)",
                Box::new(|env: &Env| kernel_tests(env, "EPYC-v4,-svm", Skips::Allowed)),
            ),
            (
                "test guest: every core call, hostile inputs",
                Box::new(|env: &Env| {
                    guest_tests::run(env).map(|()| "all cases passed".to_string())
                }),
            ),
            ("attestation end to end (test guest, verifier, tampering)", Box::new(attest_e2e::run)),
            (
                "Linux guest under the SVSM: measured boot, event-log replay, isolation",
                Box::new(guest_linux::run_tests),
            ),
            (
                "vTPM conformance (tpm2-tools, swtpm, tss-esapi)",
                Box::new(|env: &Env| {
                    vtpm_conformance::run(env).map(|()| "all checks passed".to_string())
                }),
            ),
        ],
        TestPlatform::Snp => {
            vec![("in-kernel tests, SNP platform (launcher)", Box::new(snp_kernel_tests))]
        }
    };
    let tiers: Vec<Tier> = match &args.only {
        Some(text) => tiers.into_iter().filter(|(name, _)| name.contains(text.as_str())).collect(),
        None => tiers,
    };
    if tiers.is_empty() {
        bail!("no test tier's name contains {:?}", args.only.as_deref().unwrap_or_default());
    }
    let started = Instant::now();
    let mut results = Vec::new();
    for (name, tier) in tiers {
        println!("\n=== test: {name}");
        let tier_started = Instant::now();
        let outcome = tier(env);
        if let Err(e) = &outcome {
            println!("=== FAILED: {name}: {e:#}");
        }
        results.push(TierResult { name, outcome, elapsed: tier_started.elapsed() });
    }
    println!("\n=== summary ({:.0} s)", started.elapsed().as_secs_f64());
    for result in &results {
        let (status, detail) = match &result.outcome {
            Ok(detail) => ("ok    ", detail.clone()),
            Err(e) => ("FAILED", format!("{e:#}")),
        };
        println!("{status} {:<55} {:>6.1} s  {detail}", result.name, result.elapsed.as_secs_f64());
    }
    let failed = results.iter().filter(|r| r.outcome.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} test tiers failed", results.len());
    }
    println!("all {} test tiers passed", results.len());
    Ok(())
}

/// Counts from cargo's `test result:` lines.
#[derive(Default, Debug, PartialEq, Eq)]
struct CargoTotals {
    passed: usize,
    failed: usize,
    ignored: usize,
}

fn add_cargo_result_line(totals: &mut CargoTotals, line: &str) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else { return };
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(kind), Some(count)) = (words.next(), words.next()) else { continue };
        let Ok(count) = count.parse::<usize>() else { continue };
        match kind {
            "passed" => totals.passed += count,
            "failed" => totals.failed += count,
            "ignored" => totals.ignored += count,
            _ => {}
        }
    }
}

fn host_unit_tests(env: &Env) -> Result<String> {
    // The xtask's tests cross-check the launch digest with sev-snp-measure
    // and boot images under QEMU.
    setup::ensure_python_venv(env)?;
    setup::ensure_boot_tools(env)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(&env.root)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cargo} test"))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut totals = CargoTotals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        println!("{line}");
        add_cargo_result_line(&mut totals, &line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    let summary =
        format!("{} passed, {} failed, {} ignored", totals.passed, totals.failed, totals.ignored);
    if !status.success() || totals.failed > 0 {
        bail!("host unit tests: {summary}");
    }
    if totals.passed == 0 {
        bail!("host unit tests: cargo ran no test");
    }
    Ok(summary)
}

/// The totals of a kernel test boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KernelTotals {
    passed: usize,
    failed: usize,
    skipped: usize,
}

/// Whether tests may report themselves skipped on a platform.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Skips {
    /// Every test applies (the dev platform runs them all).
    Refused,
    /// Some tests do not apply (the dev platform's tests elsewhere).
    Allowed,
}

/// The totals line the kernel's test runner prints:
/// `N passed, N failed, N skipped`.
fn parse_kernel_summary(serial: &str) -> Option<KernelTotals> {
    serial.lines().rev().find_map(|line| {
        let (passed, rest) = line.trim().split_once(" passed, ")?;
        let (failed, rest) = rest.split_once(" failed, ")?;
        let skipped = rest.strip_suffix(" skipped")?;
        Some(KernelTotals {
            passed: passed.parse().ok()?,
            failed: failed.parse().ok()?,
            skipped: skipped.parse().ok()?,
        })
    })
}

/// Judges a kernel test boot from its console output and whether the SVSM
/// ended with success.
fn judge_kernel_tests(
    console: &str,
    ended_well: bool,
    ending: &str,
    skips: Skips,
) -> Result<String> {
    let Some(totals) = parse_kernel_summary(console) else {
        bail!("the kernel printed no `N passed, N failed, N skipped` line ({ending})");
    };
    let KernelTotals { passed, failed, skipped } = totals;
    let summary = format!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 || !ended_well {
        bail!("{summary}; {ending}");
    }
    if skips == Skips::Refused && skipped > 0 {
        bail!(
            "{summary}: on this platform every test must run (the skipped ones are listed above: \
             did the platform come up as expected?)"
        );
    }
    if passed < MIN_KERNEL_TESTS {
        bail!("{summary}: fewer than the {MIN_KERNEL_TESTS} in-kernel tests expected");
    }
    Ok(summary)
}

/// The images users boot (SVSM + OVMF, as `cargo xtask build` writes it)
/// and the in-kernel test image, each measured three ways.
fn digests(env: &Env) -> Result<String> {
    let release = builder::build(
        env,
        &BuildOptions {
            kernel_features: KERNEL_FEATURES.into(),
            firmware: FirmwareChoice::Ovmf(None),
            out_dir: env.build.join("image"),
            id_key: None,
        },
    )?;
    let tests = build_kernel_test_image(env)?;
    let mut lines = Vec::new();
    for image in [&release, &tests] {
        let line = digest_check::cross_check(env, &image.igvm)?;
        println!("{line}");
        lines.push(line);
    }
    Ok(format!("{} images: every digest agrees", lines.len()))
}

fn build_kernel_test_image(env: &Env) -> Result<builder::BuiltImage> {
    builder::build(
        env,
        &BuildOptions {
            kernel_features: KERNEL_TEST_FEATURES.into(),
            firmware: FirmwareChoice::None,
            out_dir: env.build.join("kernel-tests"),
            id_key: None,
        },
    )
}

fn kernel_tests(env: &Env, cpu: &str, skips: Skips) -> Result<String> {
    setup::ensure_boot_tools(env)?;
    let image = build_kernel_test_image(env)?;
    let options = QemuOptions {
        cpu: cpu.into(),
        timeout: Duration::from_secs(120),
        ..QemuOptions::default()
    };
    let boot = qemu::boot(&image.rom, &options)?;
    let ending = boot.ending.describe(options.timeout);
    let summary = judge_kernel_tests(&boot.serial, boot.ending.is_success(), &ending, skips)?;
    // `summary` starts with the kernel's totals line as printed.
    let seconds = |text: &str| {
        boot.time_to(text).map_or("-".to_string(), |at| format!("{:.2} s", at.as_secs_f64()))
    };
    let fatal = fatal_ends(&image, cpu)?;
    Ok(format!(
        "{summary}; kernel's first line at {}, summary at {}, QEMU ended at {:.2} s; {fatal}",
        seconds(KERNEL_FIRST_LINE),
        seconds(summary.as_str()),
        boot.elapsed.as_secs_f64()
    ))
}

/// The start of the kernel's first console line.
const KERNEL_FIRST_LINE: &str = "SVSM kernel: platform";

/// The kernel's irrecoverable ends, each asked for through a fw_cfg file
/// (kernel/src/in_kernel_tests/fatal.rs): what the kernel must print.
const FATAL_ENDS: [(&str, &[&str]); 2] = [
    ("panic", &["PANIC: panicked at ", "fatal.rs:", "deliberate panic (kernel-test-fatal)"]),
    (
        "page-fault",
        &[
            "FATAL: exception #PF page fault (vector 14) error code 0x0",
            "RIP 0xffff",
            "CR2 0x00007ff000000000",
            "RAX ",
            "R15 ",
        ],
    ),
];

/// Boots the test image once per fatal end: the kernel must print its
/// report and stop the VM with the failure status.
fn fatal_ends(image: &builder::BuiltImage, cpu: &str) -> Result<String> {
    for (request, expected) in FATAL_ENDS {
        let options = QemuOptions {
            cpu: cpu.into(),
            timeout: Duration::from_secs(60),
            echo: false,
            extra_args: vec![
                "-fw_cfg".into(),
                format!("name=opt/svsm/kernel-test-fatal,string={request}"),
            ],
            ..QemuOptions::default()
        };
        let boot = qemu::boot(&image.rom, &options)?;
        let ending = boot.ending.describe(options.timeout);
        if boot.ending != qemu::Ending::Failure {
            bail!("the deliberate {request} did not stop the VM with the failure status: {ending}");
        }
        if let Some(missing) = expected.iter().find(|text| !boot.serial.contains(*text)) {
            bail!(
                "the deliberate {request}'s report lacks {missing:?}; the console said:\n{}",
                boot.serial
            );
        }
        println!("deliberate {request}: reported and ended with failure ({ending})");
    }
    Ok(format!("{} fatal ends reported", FATAL_ENDS.len()))
}

fn snp_kernel_tests(env: &Env) -> Result<String> {
    let image = build_kernel_test_image(env)?;
    let bytes =
        std::fs::read(&image.igvm).with_context(|| format!("reading {}", image.igvm.display()))?;
    let features = launcher::snp::required_vmsa_features(&bytes)?;
    let report = launcher::snp::preflight::run_on_host(features, launcher::snp::PlanesMode::Off);
    println!("{report}");
    if !report.ready() {
        bail!("this host cannot launch SEV-SNP guests (see the preflight above)");
    }
    let options = launcher::RunOptions {
        igvm: image.igvm.clone(),
        platform: launcher::igvm_load::Platform::Snp,
        memory: 512 << 20,
        cpus: 1,
        timeout: Duration::from_secs(120),
        host_data: [0; 32],
        planes: launcher::snp::PlanesMode::Off,
    };
    let mut console = TeeToStdout::default();
    let ending = launcher::run(&options, &mut console)?;
    println!("{ending}");
    let console = String::from_utf8_lossy(&console.captured);
    let ended_well = ending.exit_status() == abi::layout::exit_status(abi::layout::EXIT_SUCCESS);
    // Dev-platform tests do not apply on SNP.
    judge_kernel_tests(&console, ended_well, &ending.to_string(), Skips::Allowed)
}

/// A console that shows the guest's output and keeps a copy to judge.
#[derive(Default)]
struct TeeToStdout {
    captured: Vec<u8>,
}

impl std::io::Write for TeeToStdout {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.captured.extend_from_slice(bytes);
        std::io::stdout().write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_result_lines_are_summed() {
        let mut totals = CargoTotals::default();
        add_cargo_result_line(
            &mut totals,
            "test result: ok. 16 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        );
        add_cargo_result_line(&mut totals, "test result: FAILED. 3 passed; 1 failed; 0 ignored");
        add_cargo_result_line(&mut totals, "running 3 tests");
        assert_eq!(totals, CargoTotals { passed: 19, failed: 1, ignored: 2 });
    }

    #[test]
    fn kernel_summary_is_the_last_totals_line() {
        let serial = "running 2 kernel tests\ntest a ... ok\r\n29 passed, 0 failed, 2 skipped\r\n";
        let totals = KernelTotals { passed: 29, failed: 0, skipped: 2 };
        assert_eq!(parse_kernel_summary(serial), Some(totals));
        assert_eq!(parse_kernel_summary("no summary"), None);
        assert_eq!(parse_kernel_summary("29 passed, 0 failed"), None);
        assert_eq!(parse_kernel_summary("x passed, y failed, z skipped"), None);
    }

    #[test]
    fn kernel_boots_are_judged_by_totals_skips_and_ending() {
        let judge = |console: &str, ended_well: bool, skips: Skips| {
            judge_kernel_tests(console, ended_well, "ending", skips).map_err(|e| e.to_string())
        };
        let good = "30 passed, 0 failed, 0 skipped\n";
        assert_eq!(judge(good, true, Skips::Refused), Ok("30 passed, 0 failed, 0 skipped".into()));
        let skipped = "30 passed, 0 failed, 9 skipped\n";
        assert!(judge(skipped, true, Skips::Allowed).is_ok());
        assert!(judge(skipped, true, Skips::Refused).unwrap_err().contains("every test must run"));
        assert!(judge("30 passed, 1 failed, 0 skipped", true, Skips::Allowed).is_err());
        assert!(judge(good, false, Skips::Allowed).unwrap_err().contains("ending"));
        let few = "24 passed, 0 failed, 0 skipped";
        assert!(judge(few, true, Skips::Allowed).unwrap_err().contains("fewer than"));
        assert!(judge("no totals", true, Skips::Allowed).unwrap_err().contains("printed no"));
    }
}
