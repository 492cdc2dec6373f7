//! `cargo xtask test`: every test tier, in the order they depend on each
//! other, with one summary at the end.
//!
//! On the default (`dev`) platform everything runs here, under QEMU TCG:
//! host unit tests of every crate, the kernel's in-kernel tests booted on
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

use crate::builder::{self, BuildOptions, FirmwareChoice, KERNEL_TEST_FEATURES};
use crate::env::Env;
use crate::qemu::{self, QemuOptions};
use crate::{attest_e2e, guest_linux, guest_tests, setup, vtpm_conformance};

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
                "in-kernel tests, dev platform (QEMU TCG, SVM+NPT)",
                Box::new(|env: &Env| kernel_tests(env, qemu::DEV_PLATFORM_CPU)),
            ),
            (
                "in-kernel tests, native platform (QEMU TCG, no SVM)",
                Box::new(|env: &Env| kernel_tests(env, "EPYC-v4,-svm")),
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

/// The totals line the kernel's test runner prints: `N passed, N failed`.
fn parse_kernel_summary(serial: &str) -> Option<(usize, usize)> {
    serial.lines().rev().find_map(|line| {
        let (passed, rest) = line.trim().split_once(" passed, ")?;
        let failed = rest.strip_suffix(" failed")?;
        Some((passed.parse().ok()?, failed.parse().ok()?))
    })
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

fn kernel_tests(env: &Env, cpu: &str) -> Result<String> {
    setup::ensure_boot_tools(env)?;
    let image = build_kernel_test_image(env)?;
    let options = QemuOptions {
        cpu: cpu.into(),
        timeout: Duration::from_secs(120),
        ..QemuOptions::default()
    };
    let boot = qemu::boot(&image.rom, &options)?;
    let ending = boot.ending.describe(options.timeout);
    let Some((passed, failed)) = parse_kernel_summary(&boot.serial) else {
        bail!("the kernel printed no `N passed, N failed` line ({ending})");
    };
    let summary =
        format!("{passed} passed, {failed} failed in {:.2} s", boot.elapsed.as_secs_f64());
    if failed > 0 || !boot.ending.is_success() {
        bail!("{summary}; {ending}");
    }
    if passed < MIN_KERNEL_TESTS {
        bail!("{summary}: fewer than the {MIN_KERNEL_TESTS} in-kernel tests expected");
    }
    Ok(summary)
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
    let ending = launcher::run(&options, &mut std::io::stdout())?;
    println!("{ending}");
    if ending.exit_status() != abi::layout::exit_status(abi::layout::EXIT_SUCCESS) {
        bail!("the SVSM did not end successfully: {ending}");
    }
    Ok(ending.to_string())
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
        let serial = "running 2 kernel tests\ntest a ... ok\r\n29 passed, 0 failed\r\n";
        assert_eq!(parse_kernel_summary(serial), Some((29, 0)));
        assert_eq!(parse_kernel_summary("no summary"), None);
        assert_eq!(parse_kernel_summary("x passed, y failed"), None);
    }
}
