//! vTPM conformance (part of `cargo xtask test`): our engine behind
//! `vtpm-sim`, driven by real TPM clients and compared with swtpm.
//!
//! 1. tpm2-tools flows (`vtpm_flows`), each checking its results;
//! 2. wire-level checks (`vtpm_diff`): byte-for-byte differential against
//!    swtpm, malformed commands, GetCapability truthfulness, HMAC sessions
//!    against an independent client, connection isolation;
//! 3. the tss-esapi 7.7.0 integration suite (`vtpm_esapi`), against swtpm
//!    (baseline) and against ours.
//!
//! Prints one line per check and a summary; fails if any check fails.
//! Servers run on free loopback ports; everything lands in
//! `build/vtpm-conformance/` (server logs, tool scratch folders, suite logs).

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail, ensure};

use crate::env::Env;
use crate::vtpm_esapi;
use crate::vtpm_flows::{FLOWS, FlowCtx};
use crate::vtpm_procs::{APT_PACKAGES, Kind, Server, build_vtpm_sim, ensure_packages};
use crate::vtpm_tools::{Fixtures, Tools};

/// Counts checks and remembers failures; prints a line per check.
pub struct Report {
    passed: usize,
    failures: Vec<(String, String)>,
}

impl Report {
    pub fn new() -> Report {
        Report { passed: 0, failures: Vec::new() }
    }

    /// Runs one check and prints `ok`/`FAIL`, its name and how long it took.
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> Result<()>) {
        let started = Instant::now();
        let result = f();
        let seconds = started.elapsed().as_secs_f64();
        match result {
            Ok(()) => {
                println!("ok    {name} ({seconds:.2} s)");
                self.passed += 1;
            }
            Err(e) => {
                let why = format!("{e:#}").replace('\n', "\n        ");
                println!("FAIL  {name} ({seconds:.2} s)\n        {why}");
                self.failures.push((name.to_string(), why));
            }
        }
    }

    /// Prints the summary; an error if anything failed.
    pub fn finish(self, what: &str, started: Instant) -> Result<()> {
        let seconds = started.elapsed().as_secs_f64();
        println!("{what}: {} passed, {} failed ({seconds:.0} s)", self.passed, self.failures.len());
        for (name, _) in &self.failures {
            println!("  failed: {name}");
        }
        ensure!(self.failures.is_empty(), "{what}: {} check(s) failed", self.failures.len());
        Ok(())
    }
}

/// Which TPM the clients are pointed at. `Swtpm` runs every check against
/// swtpm alone, which proves the checks themselves (the differential then
/// compares two swtpm instances).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Against {
    Vtpm,
    Swtpm,
}

/// `cargo xtask test`'s vTPM part.
pub fn run(env: &Env) -> Result<()> {
    run_against(env, Against::Vtpm)
}

pub fn run_against(env: &Env, against: Against) -> Result<()> {
    let started = Instant::now();
    ensure_packages(APT_PACKAGES)?;
    let work = env.build.join("vtpm-conformance");
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let fixtures = Fixtures::load(&env.root)?;
    let sim = match against {
        Against::Vtpm => Some(build_vtpm_sim(env, false)?),
        Against::Swtpm => None,
    };
    let start = |name: &str| -> Result<Server> {
        let log = work.join(format!("{name}.log"));
        let server = match &sim {
            Some(binary) => Server::vtpm(binary, &log, "-vvv")?,
            None => Server::swtpm(&work.join(format!("{name}.state")), &log)?,
        };
        Ok(server)
    };
    let mut report = Report::new();
    println!(
        "vtpm conformance against {}",
        if sim.is_some() { "vtpm-sim (our engine)" } else { "swtpm (checking the checks)" }
    );

    // 1. tpm2-tools flows, all on one TPM, in order.
    flows(&mut report, &start("flows")?, &work, &fixtures);
    // 2. Wire-level checks on fresh TPMs.
    let reference = Server::swtpm(&work.join("reference.state"), &work.join("reference.log"))?;
    wire_checks(&mut report, &start("wire")?, &reference, &fixtures);
    drop(reference);
    // 3. tss-esapi suite: baseline against swtpm, then against ours.
    esapi(env, &work, &mut report, &start)?;

    report.finish("vtpm conformance", started)
}

fn flows(report: &mut Report, server: &Server, work: &Path, fixtures: &Fixtures) {
    report.check("server: Startup(CLEAR)", || server.startup());
    for (i, (name, flow)) in FLOWS.iter().enumerate() {
        report.check(&format!("flow: {name}"), || {
            let ctx = FlowCtx {
                t: Tools::new(server.tcti(), &work.join(format!("flow-{i:02}")))?,
                fx: fixtures,
                server,
            };
            let result = flow(&ctx);
            server.check_alive()?;
            result
        });
    }
}

fn wire_checks(report: &mut Report, ours: &Server, reference: &Server, fixtures: &Fixtures) {
    match (ours.wire(), reference.wire()) {
        (Ok(a), Ok(b)) => crate::vtpm_diff::differential(report, a, b, fixtures),
        (a, b) => report.check("diff: connect to both TPMs", || {
            a?;
            b?;
            Ok(())
        }),
    }
    report.check("wire: GetCapability(COMMANDS) lists exactly what executes", || {
        crate::vtpm_checks::capability_truthful(&mut ours.wire()?)
    });
    report.check("wire: 300 malformed commands get well-formed errors", || {
        crate::vtpm_checks::malformed_framing(&mut ours.wire()?)?;
        ours.check_alive()
    });
    report.check(
        "wire: HMAC sessions (unsalted; ECC-salted with XOR) vs. independent client",
        || crate::vtpm_checks::sessions(&mut ours.wire()?),
    );
    // swtpm serves one connection at a time: this one is for ours only.
    if ours.kind == Kind::Vtpm {
        report
            .check("wire: connections are separate clients; closing one flushes its state", || {
                crate::vtpm_checks::client_isolation(ours)
            });
    }
}

fn esapi(
    env: &Env,
    work: &Path,
    report: &mut Report,
    start: &dyn Fn(&str) -> Result<Server>,
) -> Result<()> {
    let dir = match vtpm_esapi::prepare(env) {
        Ok(dir) => dir,
        Err(e) => {
            report.check("tss-esapi: fetch and build the suite", || Err(e));
            return Ok(());
        }
    };
    let mut baseline_passed = Vec::new();
    report.check("tss-esapi against swtpm: the baseline (401 passed, 3 ignored)", || {
        let server = Server::swtpm(&work.join("esapi-swtpm.state"), &work.join("esapi-swtpm.log"))?;
        server.startup()?;
        let result = vtpm_esapi::run_suite(&dir, &server.tcti(), &work.join("esapi-swtpm.out"))?;
        println!(
            "      swtpm: {} passed, {} failed, {} ignored ({:.1} s)",
            result.passed.len(),
            result.failed.len(),
            result.ignored.len(),
            result.seconds
        );
        baseline_passed = result.passed.clone();
        check_suite(&result, true)
    });
    report.check("tss-esapi against our vTPM: every test passes", || {
        let server = start("esapi")?;
        server.startup()?;
        let result = vtpm_esapi::run_suite(&dir, &server.tcti(), &work.join("esapi-vtpm.out"))?;
        println!(
            "      ours: {} passed, {} failed, {} ignored ({:.1} s)",
            result.passed.len(),
            result.failed.len(),
            result.ignored.len(),
            result.seconds
        );
        for (name, why) in &result.failed {
            let baseline = if baseline_passed.contains(name) {
                "passes on swtpm"
            } else {
                "also fails on swtpm"
            };
            println!("      failed: {name} ({baseline}): {why}");
        }
        server.check_alive()?;
        check_suite(&result, false)
    });
    Ok(())
}

/// The suite must pass completely, with exactly the crate's own ignores.
fn check_suite(result: &vtpm_esapi::SuiteResult, baseline: bool) -> Result<()> {
    let mut ignored = result.ignored.clone();
    ignored.sort();
    let mut want: Vec<String> =
        vtpm_esapi::BASELINE_IGNORED.iter().map(|s| s.to_string()).collect();
    want.sort();
    ensure!(ignored == want, "ignored tests {ignored:?}, want {want:?}");
    if !result.failed.is_empty() {
        bail!(
            "{} test(s) failed: {}",
            result.failed.len(),
            result.failed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if baseline {
        ensure!(
            result.passed.len() == vtpm_esapi::BASELINE_PASSED,
            "{} passed, the recorded baseline is {}",
            result.passed.len(),
            vtpm_esapi::BASELINE_PASSED
        );
    }
    ensure!(
        result.passed.len() >= vtpm_esapi::BASELINE_PASSED,
        "only {} passed",
        result.passed.len()
    );
    Ok(())
}
