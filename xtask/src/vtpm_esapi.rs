//! The tss-esapi 7.7.0 integration suite (126 test files, a third-party TPM
//! test suite) run against a TPM server (tpm.md §10): the crate is fetched
//! with cargo into the build folder, built once against Debian's libtss2, and
//! its tests are run with `TEST_TCTI` pointing at the server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::env::Env;

const CRATE: &str = "tss-esapi";
const VERSION: &str = "7.7.0";

/// What the suite gives against swtpm 0.7.1 / libtpms 0.9.2 (tpm.md §10).
pub const BASELINE_PASSED: usize = 401;
/// The tests the crate itself marks `#[ignore]`.
pub const BASELINE_IGNORED: &[&str] = &[
    "attributes_tests::session_attributes_tests::test_invalid_session_attributes_conversions",
    "attributes_tests::session_attributes_tests::test_invalid_session_attributes_mask_conversions",
    "context_tests::general_esys_tr_tests::test_tr_from_tpm_public::test_tr_from_tpm_public_owner_auth",
];

/// A whole suite run must not take longer than this (it takes ~20 s).
const SUITE_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The outcome of one suite run.
pub struct SuiteResult {
    pub passed: Vec<String>,
    /// Failed tests with the reason (the test's panic message).
    pub failed: Vec<(String, String)>,
    pub ignored: Vec<String>,
    pub seconds: f64,
}

/// Makes sure the tss-esapi sources are in `build/tss-esapi-7.7.0` and its
/// integration tests are built; returns the crate folder. The crate ships
/// its Cargo.lock; `--locked` keeps the dependency versions reproducible.
pub fn prepare(env: &Env) -> Result<PathBuf> {
    let dir = env.build.join(format!("{CRATE}-{VERSION}"));
    if !dir.join("Cargo.toml").exists() {
        fetch(env, &dir)?;
    }
    println!(
        "vtpm: building the {CRATE} {VERSION} integration tests (cached in {})",
        dir.display()
    );
    let status = cargo_in(&dir)
        .args(["test", "--locked", "--test", "integration_tests", "--no-run"])
        .status()
        .context("running cargo")?;
    ensure!(
        status.success(),
        "building the {CRATE} integration tests failed ({status}); needs libtss2-dev and pkg-config"
    );
    Ok(dir)
}

fn cargo_in(dir: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(dir).env("CARGO_TARGET_DIR", dir.join("target")).env_remove("RUSTFLAGS");
    command
}

/// Downloads the crate through cargo (a throw-away crate that depends on it,
/// then `cargo fetch`) and unpacks it from cargo's registry cache.
fn fetch(env: &Env, dir: &Path) -> Result<()> {
    println!("vtpm: fetching {CRATE} {VERSION} from crates.io with cargo");
    let fetcher = env.build.join("tss-esapi-fetch");
    std::fs::create_dir_all(fetcher.join("src"))?;
    std::fs::write(
        fetcher.join("Cargo.toml"),
        format!(
            "[package]\nname = \"fetch-tss-esapi\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\n{CRATE} = \"={VERSION}\"\n\n[workspace]\n"
        ),
    )?;
    std::fs::write(fetcher.join("src/lib.rs"), "")?;
    let status = cargo_in(&fetcher).arg("fetch").status().context("running cargo fetch")?;
    ensure!(status.success(), "cargo fetch of {CRATE} {VERSION} failed ({status})");
    let home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cargo"),
    };
    let cache = home.join("registry/cache");
    let archive = std::fs::read_dir(&cache)
        .with_context(|| format!("reading {}", cache.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(format!("{CRATE}-{VERSION}.crate")))
        .find(|p| p.exists())
        .with_context(|| format!("{CRATE}-{VERSION}.crate not in {}", cache.display()))?;
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&env.build)
        .status()
        .context("running tar")?;
    ensure!(status.success(), "unpacking {} failed", archive.display());
    // The build folder lies inside our workspace: make the crate its own.
    let manifest = dir.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest)?;
    text.push_str("\n[workspace]\n");
    std::fs::write(&manifest, text)?;
    Ok(())
}

/// Runs the integration tests against `tcti`, one test at a time; libtest's
/// report goes to `log`, the tests' own logging to `log` + `.err`.
pub fn run_suite(dir: &Path, tcti: &str, log: &Path) -> Result<SuiteResult> {
    let started = Instant::now();
    let mut child = cargo_in(dir)
        .args(["test", "--locked", "--test", "integration_tests", "--", "--test-threads=1"])
        .env("TEST_TCTI", tcti)
        .env("TSS2_LOG", "all+none")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(std::fs::File::create(log.with_extension("err"))?)
        .spawn()
        .context("running the tss-esapi tests")?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > SUITE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the tss-esapi suite hung for {} s; output in {}",
                SUITE_TIMEOUT.as_secs(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = std::fs::read_to_string(log)?;
    let mut result = parse(&output);
    result.seconds = started.elapsed().as_secs_f64();
    // libtest's own totals must agree with the lines we read.
    let totals = format!(
        "{} passed; {} failed; {} ignored;",
        result.passed.len(),
        result.failed.len(),
        result.ignored.len()
    );
    ensure!(
        output.lines().any(|l| l.starts_with("test result:") && l.contains(&totals)),
        "the tss-esapi suite did not finish with `{totals}`; output in {}",
        log.display()
    );
    Ok(result)
}

/// Reads libtest's output: `test NAME ... ok|FAILED|ignored` lines, and each
/// failure's panic message from its `---- NAME stdout ----` section.
fn parse(output: &str) -> SuiteResult {
    let mut result =
        SuiteResult { passed: Vec::new(), failed: Vec::new(), ignored: Vec::new(), seconds: 0.0 };
    for line in output.lines() {
        let Some(rest) = line.strip_prefix("test ") else {
            continue;
        };
        let Some((name, outcome)) = rest.rsplit_once(" ... ") else {
            continue;
        };
        match outcome.trim() {
            "ok" => result.passed.push(name.to_string()),
            "FAILED" => result.failed.push((name.to_string(), reason(output, name))),
            o if o.starts_with("ignored") => result.ignored.push(name.to_string()),
            _ => {}
        }
    }
    result
}

/// The panic message of a failed test (first lines that say why).
fn reason(output: &str, name: &str) -> String {
    let header = format!("---- {name} stdout ----");
    let Some(start) = output.find(&header) else {
        return "no output captured".to_string();
    };
    let section = &output[start + header.len()..];
    let end =
        section.find("\n---- ").or_else(|| section.find("\nfailures:")).unwrap_or(section.len());
    let lines: Vec<&str> = section[..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note:") && !l.starts_with("stack backtrace"))
        .collect();
    // Prefer the panic line and the message after it.
    let from = lines.iter().position(|l| l.contains("panicked at")).unwrap_or(0);
    lines[from..].iter().take(3).copied().collect::<Vec<_>>().join(" | ")
}
