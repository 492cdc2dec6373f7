//! `cargo xtask setup`: installs what the other commands need on a
//! Debian/Ubuntu machine, idempotently and without questions.
//!
//! - QEMU >= 10.0 (`qemu-system-x86_64`): on Debian bookworm from
//!   bookworm-backports through a private apt directory under `build/`, so
//!   the system's apt sources stay untouched; elsewhere the distribution's
//!   package.
//! - OVMF 2025.02 or newer: Debian trixie's `ovmf` package, downloaded and
//!   unpacked into `build/ovmf/` (nothing installed system-wide).
//! - A Python venv under `build/venv` with `sev-snp-measure`, the
//!   independent launch-digest implementation the tests compare against.
//! - The `x86_64-unknown-none` Rust target and binutils (`objcopy` strips
//!   the kernel's debug info).
//!
//! Each `ensure_*` function checks first and only installs what is missing,
//! saying what it installs and why.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::env::Env;

/// The PyPI package (and exact version) the digest cross-check replays
/// the page log through.
pub const SEV_SNP_MEASURE: &str = "sev-snp-measure==0.0.13";

/// Oldest QEMU the project is tested with.
const MIN_QEMU: (u32, u32) = (10, 0);
/// Oldest OVMF (Debian upstream version) whose SEV metadata has the SVSM
/// calling-area section.
const MIN_OVMF: (u32, u32) = (2025, 2);

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Installs everything (`cargo xtask setup`).
pub fn run(env: &Env) -> Result<()> {
    ensure_bare_metal_target()?;
    ensure_binutils()?;
    ensure_cxx()?;
    ensure_qemu(env)?;
    let ovmf = ensure_ovmf(env)?;
    let python = ensure_python_venv(env)?;
    // tpm2-tools, the mssim and swtpm TCTIs, swtpm, and the TSS headers
    // tss-esapi's test suite builds against (vTPM conformance).
    crate::vtpm_procs::ensure_packages(crate::vtpm_procs::APT_PACKAGES)?;
    println!("setup: QEMU     {}", qemu_version_line()?.unwrap_or_default());
    println!("setup: OVMF     {}", ovmf.display());
    println!("setup: python   {} ({SEV_SNP_MEASURE})", python.display());
    println!("setup: done");
    Ok(())
}

/// What `run` and `test` need to boot: QEMU, OVMF, the target, binutils.
/// Returns the OVMF image.
pub fn ensure_boot_tools(env: &Env) -> Result<PathBuf> {
    ensure_bare_metal_target()?;
    ensure_binutils()?;
    ensure_qemu(env)?;
    ensure_ovmf(env)
}

/// Makes sure `rustup` has the bare-metal target.
pub fn ensure_bare_metal_target() -> Result<()> {
    let installed = output_of(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("running `rustup target list` (is rustup installed?)")?;
    if installed.lines().any(|l| l.trim() == "x86_64-unknown-none") {
        return Ok(());
    }
    println!(
        "setup: installing the Rust target x86_64-unknown-none (stage2 and the kernel are built for it)"
    );
    run_checked(Command::new("rustup").args(["target", "add", "x86_64-unknown-none"]))
}

/// Makes sure binutils' `objcopy` is there (it strips the kernel ELF).
pub fn ensure_binutils() -> Result<()> {
    if Command::new("objcopy").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    println!("setup: installing binutils (objcopy strips the kernel ELF for the image)");
    apt_install_system(&["binutils"])
}

/// Makes sure a C++ compiler is there: `cargo xtask lint` builds the fuzz
/// targets, and libfuzzer-sys compiles libFuzzer's C++ sources.
pub fn ensure_cxx() -> Result<()> {
    if Command::new("c++").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    println!("setup: installing g++ (the fuzz targets `cargo xtask lint` builds link libFuzzer)");
    apt_install_system(&["g++"])
}

/// Makes sure `qemu-system-x86_64` >= 10.0 is installed and returns its name.
pub fn ensure_qemu(env: &Env) -> Result<&'static str> {
    if let Some(version) = installed_qemu_version()?
        && version >= MIN_QEMU
    {
        return Ok("qemu-system-x86_64");
    }
    let codename = os_codename()?;
    if codename == "bookworm" {
        println!(
            "setup: installing QEMU 10.0 (qemu-system-x86) from bookworm-backports through a \
             private apt directory (the system's apt sources are not changed)"
        );
        install_qemu_from_bookworm_backports(env)?;
    } else {
        println!("setup: installing QEMU (qemu-system-x86) from the distribution ({codename})");
        apt_install_system(&["qemu-system-x86"])?;
    }
    match installed_qemu_version()? {
        Some(version) if version >= MIN_QEMU => Ok("qemu-system-x86_64"),
        Some((major, minor)) => bail!(
            "QEMU {major}.{minor} is installed, but the project needs >= {}.{}: install a newer \
             qemu-system-x86 (e.g. from your distribution's backports)",
            MIN_QEMU.0,
            MIN_QEMU.1
        ),
        None => bail!("qemu-system-x86_64 is still missing after installing qemu-system-x86"),
    }
}

fn qemu_version_line() -> Result<Option<String>> {
    match Command::new("qemu-system-x86_64").arg("--version").output() {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).lines().next().map(|l| l.trim().to_string()))
        }
        _ => Ok(None),
    }
}

fn installed_qemu_version() -> Result<Option<(u32, u32)>> {
    Ok(qemu_version_line()?.and_then(|line| parse_qemu_version(&line)))
}

/// Reads "QEMU emulator version 10.0.2 (Debian ...)" as (10, 0).
fn parse_qemu_version(line: &str) -> Option<(u32, u32)> {
    let rest = line.split("version ").nth(1)?;
    let mut numbers = rest.split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

fn os_codename() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release")
        .context("reading /etc/os-release (setup supports Debian and Ubuntu)")?;
    Ok(os_release_field(&text, "VERSION_CODENAME").unwrap_or_default())
}

fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"').to_string())
}

/// A private apt configuration: its own sources, package lists and cache
/// under `build/`, the system's dpkg database.
pub(crate) struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    pub(crate) fn new(dir: PathBuf, sources: &str) -> Result<PrivateApt> {
        for sub in ["parts", "lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        std::fs::write(dir.join("parts/project.sources"), sources)
            .context("writing the private apt source list")?;
        Ok(PrivateApt { dir })
    }

    /// The apt-get/apt-cache options that select this configuration.
    pub(crate) fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            "-oDir::Etc::SourceList=/dev/null".into(),
            format!("-oDir::Etc::SourceParts={d}/parts"),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            "-oAcquire::Check-Valid-Until=false".into(),
        ]
    }

    fn apt_get(&self, args: &[&str], cwd: &Path) -> Result<()> {
        let mut command = privileged("apt-get");
        command.args(self.options()).args(args).current_dir(cwd);
        command.env("DEBIAN_FRONTEND", "noninteractive");
        run_checked(&mut command)
    }
}

/// Debian's archive (main) for `suites` and its security archive for
/// `security_suite`, as an apt sources file.
pub(crate) fn deb822(suites: &str, security_suite: &str) -> String {
    format!(
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {suites}\nComponents: main\n\
         Signed-By: {DEBIAN_KEYRING}\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n\
         Suites: {security_suite}\nComponents: main\nSigned-By: {DEBIAN_KEYRING}\n"
    )
}

fn install_qemu_from_bookworm_backports(env: &Env) -> Result<()> {
    ensure_debian_keyring()?;
    let apt = PrivateApt::new(
        env.build.join("apt-bookworm-backports"),
        &deb822("bookworm bookworm-updates bookworm-backports", "bookworm-security"),
    )?;
    let cwd = std::env::temp_dir();
    apt.apt_get(&["update", "-q"], &cwd)?;
    apt.apt_get(
        &[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
            "qemu-system-x86",
        ],
        &cwd,
    )
}

/// Makes sure an unpacked OVMF >= 2025.02 is in `build/ovmf/` and returns
/// the path of its `OVMF.fd`.
pub fn ensure_ovmf(env: &Env) -> Result<PathBuf> {
    let root = env.build.join("ovmf");
    let image = root.join("unpacked/usr/share/ovmf/OVMF.fd");
    let version_file = root.join("VERSION");
    if image.is_file() && version_file.is_file() {
        return Ok(image);
    }
    println!(
        "setup: downloading Debian trixie's `ovmf` package into {} (OVMF with the SVSM \
         calling-area metadata; nothing is installed system-wide)",
        root.display()
    );
    ensure_debian_keyring()?;
    let apt = PrivateApt::new(
        env.build.join("apt-trixie"),
        &deb822("trixie trixie-updates", "trixie-security"),
    )?;
    let download = root.join("download");
    if download.exists() {
        std::fs::remove_dir_all(&download).context("clearing build/ovmf/download")?;
    }
    std::fs::create_dir_all(&download).context("creating build/ovmf/download")?;
    apt.apt_get(&["update", "-q"], &download)?;
    apt.apt_get(&["download", "ovmf"], &download)?;
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download ovmf produced no .deb file")?;
    let version = output_of(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg("Version"))?
        .trim()
        .to_string();
    match parse_ovmf_version(&version) {
        Some(v) if v >= MIN_OVMF => {}
        _ => bail!(
            "Debian trixie offers ovmf {version}, older than {}.{:02}: the project needs OVMF \
             with the SVSM calling-area section; give `cargo xtask build` or `run` --ovmf PATH to a \
             newer OVMF.fd",
            MIN_OVMF.0,
            MIN_OVMF.1
        ),
    }
    let unpacked = root.join("unpacked");
    if unpacked.exists() {
        std::fs::remove_dir_all(&unpacked).context("clearing build/ovmf/unpacked")?;
    }
    run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    if !image.is_file() {
        bail!("the ovmf package {version} has no usr/share/ovmf/OVMF.fd");
    }
    std::fs::write(&version_file, format!("{version}\n")).context("writing build/ovmf/VERSION")?;
    Ok(image)
}

/// Reads a Debian OVMF version such as "2025.02-8+deb13u1" as (2025, 2).
fn parse_ovmf_version(version: &str) -> Option<(u32, u32)> {
    let upstream = version.split(':').next_back()?;
    let mut parts = upstream.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn ensure_debian_keyring() -> Result<()> {
    if Path::new(DEBIAN_KEYRING).is_file() {
        return Ok(());
    }
    println!("setup: installing debian-archive-keyring (to verify Debian's package lists)");
    apt_install_system(&["debian-archive-keyring"])
}

/// Makes sure `build/venv` has `sev-snp-measure` and returns its python.
pub fn ensure_python_venv(env: &Env) -> Result<PathBuf> {
    let venv = env.build.join("venv");
    let python = venv.join("bin/python");
    let probe = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import sevsnpmeasure.gctx, importlib.metadata as m; \
                         assert m.version('sev-snp-measure') == '0.0.13'",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if probe(&python) {
        return Ok(python);
    }
    println!(
        "setup: creating the Python venv {} with {SEV_SNP_MEASURE} (the independent launch-digest \
         implementation the tests compare against)",
        venv.display()
    );
    if !python.is_file() {
        let created = Command::new("python3").arg("-m").arg("venv").arg(&venv).status();
        if !created.is_ok_and(|s| s.success()) {
            println!("setup: installing python3-venv (python3 -m venv failed)");
            apt_install_system(&["python3-venv"])?;
            if venv.exists() {
                std::fs::remove_dir_all(&venv).context("removing the broken venv")?;
            }
            run_checked(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
    }
    run_checked(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        SEV_SNP_MEASURE,
    ]))
    .context("installing sev-snp-measure from PyPI into build/venv")?;
    if !probe(&python) {
        bail!("{} cannot import sevsnpmeasure.gctx after installing it", python.display());
    }
    Ok(python)
}

/// `apt-get install` into the system (root, or sudo without a password).
fn apt_install_system(packages: &[&str]) -> Result<()> {
    let mut update = privileged("apt-get");
    update.args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive");
    run_checked(&mut update)?;
    let mut install = privileged("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_checked(&mut install)
}

/// A command run as root: directly when we are root, else through
/// `sudo -n` (never prompting).
fn privileged(program: &str) -> Command {
    let is_root = output_of(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0");
    if is_root {
        Command::new(program)
    } else {
        let mut command = Command::new("sudo");
        command.arg("-n").arg(program);
        command
    }
}

fn run_checked(command: &mut Command) -> Result<()> {
    let status = command.status().with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed ({status})");
    }
    Ok(())
}

fn output_of(command: &mut Command) -> Result<String> {
    let out = command.output().with_context(|| format!("starting {command:?}"))?;
    if !out.status.success() {
        bail!("{command:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_qemu_versions() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"
            ),
            Some((10, 0))
        );
        assert_eq!(parse_qemu_version("QEMU emulator version 7.2.19"), Some((7, 2)));
        assert_eq!(parse_qemu_version("something else"), None);
    }

    #[test]
    fn reads_ovmf_versions() {
        assert_eq!(parse_ovmf_version("2025.02-8+deb13u1"), Some((2025, 2)));
        assert_eq!(parse_ovmf_version("2026.08+ds-2"), Some((2026, 8)));
        assert_eq!(parse_ovmf_version("1:2022.11-6"), Some((2022, 11)));
        assert!(parse_ovmf_version("2022.11-6").unwrap() < MIN_OVMF);
    }

    #[test]
    fn reads_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\n";
        assert_eq!(os_release_field(text, "VERSION_CODENAME").as_deref(), Some("bookworm"));
        assert_eq!(os_release_field(text, "ID"), None);
    }
}
