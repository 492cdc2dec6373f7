//! Running Debian's tpm2-tools against a TPM server from the conformance
//! flows, plus the independent computations the flows check results with
//! (hashes, PCR extends, policy digests) and readers for the tools' output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::vtpm_cmd::{alg, unhex};

/// tpm2-tools pointed at one TPM, working in one scratch folder.
pub struct Tools {
    tcti: String,
    pub dir: PathBuf,
}

impl Tools {
    /// Tools for the TPM at `tcti`, with a fresh scratch folder `dir`.
    pub fn new(tcti: String, dir: &Path) -> Result<Tools> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        Ok(Tools { tcti, dir: dir.to_path_buf() })
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&self.dir)
            .env("TPM2TOOLS_TCTI", &self.tcti)
            // Keep tpm2-tss quiet except for errors, which the checks read.
            .env("TSS2_LOG", "all+error");
        command
    }

    /// Runs a tpm2 tool (or openssl) and returns its stdout; fails with the
    /// command line and its stderr if it fails. Then flushes the transient
    /// objects and loaded sessions the tool left behind: without a resource
    /// manager every tool leaves them in the TPM (tpm.md §6.1).
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out =
            self.command(program, args).output().with_context(|| format!("running {program}"))?;
        self.flush(program)?;
        if !out.status.success() {
            bail!(
                "`{program} {}` failed ({}):\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`Tools::run`] for a command line whose words contain no spaces.
    pub fn cmd(&self, line: &str) -> Result<String> {
        let mut words = line.split_whitespace();
        let program = words.next().context("empty command line")?;
        self.run(program, &words.collect::<Vec<_>>())
    }

    /// [`Tools::fails_with`] for a command line whose words contain no spaces.
    pub fn cmd_fails(&self, rc: u32, line: &str) -> Result<()> {
        let mut words = line.split_whitespace();
        let program = words.next().context("empty command line")?;
        self.fails_with(rc, program, &words.collect::<Vec<_>>())
    }

    /// Runs a tool that must fail with TPM response code `rc`.
    pub fn fails_with(&self, rc: u32, program: &str, args: &[&str]) -> Result<()> {
        let out =
            self.command(program, args).output().with_context(|| format!("running {program}"))?;
        self.flush(program)?;
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        ensure!(
            !out.status.success(),
            "`{program} {}` succeeded but must fail with TPM error {rc:#x}",
            args.join(" ")
        );
        ensure!(
            stderr.contains(&format!("(0x{rc:08x})")) || stderr.contains(&format!("(0x{rc:x})")),
            "`{program} {}` failed, but not with TPM error {rc:#x}:\n{}",
            args.join(" "),
            stderr.trim_end()
        );
        Ok(())
    }

    /// Runs a command line (e.g. openssl verifying a tampered message) that
    /// must fail.
    pub fn fails(&self, line: &str) -> Result<()> {
        self.fails_stderr(line).map(|_| ())
    }

    /// [`Tools::fails`], returning what the tool wrote to stderr.
    pub fn fails_stderr(&self, line: &str) -> Result<String> {
        let mut words = line.split_whitespace();
        let program = words.next().context("empty command line")?;
        let out = self.command(program, &words.collect::<Vec<_>>()).output()?;
        self.flush(program)?;
        ensure!(!out.status.success(), "`{line}` succeeded but must fail");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn flush(&self, program: &str) -> Result<()> {
        if !program.starts_with("tpm2_") {
            return Ok(());
        }
        for kind in ["-t", "-l"] {
            let out = self.command("tpm2_flushcontext", &[kind]).output()?;
            ensure!(
                out.status.success(),
                "tpm2_flushcontext {kind} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        std::fs::read(self.path(name)).with_context(|| format!("reading {name}"))
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        std::fs::write(self.path(name), bytes).with_context(|| format!("writing {name}"))
    }
}

/// A PCR bank: its algorithm's tpm2-tools name and TPM_ALG_ID.
#[derive(Clone, Copy)]
pub struct Bank {
    pub name: &'static str,
    pub alg: u16,
}

pub const SHA1: Bank = Bank { name: "sha1", alg: alg::SHA1 };
pub const SHA256: Bank = Bank { name: "sha256", alg: alg::SHA256 };
pub const SHA384: Bank = Bank { name: "sha384", alg: alg::SHA384 };
pub const SHA512: Bank = Bank { name: "sha512", alg: alg::SHA512 };
/// The banks our engine and swtpm (as set up by the harness) allocate.
pub const BANKS: [Bank; 3] = [SHA1, SHA256, SHA384];

/// Hash of `data` with `alg`, computed here (RustCrypto), not by the TPM.
pub fn digest(alg: u16, data: &[u8]) -> Vec<u8> {
    match alg {
        alg::SHA1 => Sha1::digest(data).to_vec(),
        alg::SHA256 => Sha256::digest(data).to_vec(),
        alg::SHA384 => Sha384::digest(data).to_vec(),
        alg::SHA512 => Sha512::digest(data).to_vec(),
        _ => panic!("harness asked for unknown hash {alg:#x}"),
    }
}

/// The value of a PCR after extending `old` with `measurement`.
pub fn extend(alg: u16, old: &[u8], measurement: &[u8]) -> Vec<u8> {
    digest(alg, &[old, measurement].concat())
}

/// Reads `tpm2_pcrread` output: (bank name, index) → value.
pub fn parse_pcrread(yaml: &str) -> Result<BTreeMap<(String, u32), Vec<u8>>> {
    let mut bank = String::new();
    let mut values = BTreeMap::new();
    for line in yaml.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_suffix(':')
            && !name.contains(' ')
        {
            bank = name.to_string();
        } else if let Some((index, value)) = trimmed.split_once(':') {
            let index: u32 = index.trim().parse().with_context(|| format!("PCR line {line:?}"))?;
            let value = value.trim().trim_start_matches("0x");
            values.insert((bank.clone(), index), unhex(value)?);
        }
    }
    Ok(values)
}

/// The value of `key: value` in a tool's YAML output (first occurrence).
pub fn yaml_value<'a>(yaml: &'a str, key: &str) -> Result<&'a str> {
    yaml.lines()
        .find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then_some(v.trim())
        })
        .with_context(|| format!("no `{key}` in tool output:\n{yaml}"))
}

/// Policy digest after `command code || extra` extends `old` (Part 3 §23).
pub fn policy_extend(old: &[u8], command_code: u32, extra: &[u8]) -> Vec<u8> {
    digest(alg::SHA256, &[old, &command_code.to_be_bytes()[..], extra].concat())
}

/// The part of a tool's YAML output after the line `section:`.
pub fn yaml_section<'a>(yaml: &'a str, section: &str) -> Result<&'a str> {
    let header = format!("{section}:");
    let start = yaml
        .lines()
        .find(|line| line.trim_start().starts_with(&header))
        .with_context(|| format!("no `{section}` in tool output:\n{yaml}"))?;
    // `start` is a slice of `yaml`: continue right after it.
    let offset = start.as_ptr() as usize - yaml.as_ptr() as usize + header.len();
    Ok(&yaml[offset..])
}

/// The fixed test inputs in `tests/vtpm/fixtures` (see make-fixtures.sh):
/// PEM keys, and `values.txt` with the same keys and inputs as hex.
pub struct Fixtures {
    dir: PathBuf,
    values: BTreeMap<String, Vec<u8>>,
}

impl Fixtures {
    pub fn load(root: &Path) -> Result<Fixtures> {
        let dir = root.join("tests/vtpm/fixtures");
        let text = std::fs::read_to_string(dir.join("values.txt"))
            .with_context(|| format!("reading {}/values.txt", dir.display()))?;
        let mut values = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let (name, value) =
                line.split_once('=').with_context(|| format!("fixture line {line:?}"))?;
            values.insert(name.trim().to_string(), unhex(value)?);
        }
        Ok(Fixtures { dir, values })
    }

    /// A value from values.txt.
    pub fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.values.get(name).cloned().with_context(|| format!("fixture value {name} missing"))
    }

    /// Copies a fixture file (PEM key) into the tools' scratch folder.
    pub fn copy_to(&self, tools: &Tools, file: &str) -> Result<()> {
        std::fs::copy(self.dir.join(file), tools.path(file))
            .with_context(|| format!("copying fixture {file}"))?;
        Ok(())
    }
}
