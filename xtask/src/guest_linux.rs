//! The Linux guest: a stock Debian kernel booted by OVMF with measured boot
//! into the SVSM's vTPM, and the checks that the measurements are real.
//!
//! - The payload ([`ensure_payload`]): Debian trixie's distro kernel
//!   (`linux-image-6.12.*-amd64`, the newest the archive has) and
//!   `busybox-static`, fetched with `apt-get download` through a private
//!   apt directory and cached in `build/guest-linux/`; an initramfs written
//!   here ([`cpio`]) around `tests/linux/init.sh`, which prints the TPM's
//!   PCRs and the firmware event log and powers off.
//! - The boot: the SVSM image with OVMF under QEMU TCG on the dev platform,
//!   the kernel and initramfs through QEMU's `-kernel`/`-initrd` (OVMF loads
//!   them from fw_cfg and measures them). Every serial line is time-stamped
//!   for the figures.
//! - The checks: the event log replayed ([`eventlog`]) must reproduce PCR
//!   0-7 of every bank the guest read from its TPM, and those must equal the
//!   PCRs the SVSM's vTPM itself reports at shutdown; a kernel image that
//!   differs in one header byte must change PCR 4; a read of the vTPM's
//!   memory from the guest must be stopped and reported by the SVSM.

pub mod cpio;
pub mod eventlog;
mod run_log;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use abi::layout::{EXIT_FAILURE, EXIT_SUCCESS, exit_status};
use anyhow::{Context, Result, bail, ensure};

use crate::builder::{self, BuildOptions, FirmwareChoice, KERNEL_FEATURES};
use crate::env::Env;
use crate::qemu::{self, Accel, QemuOptions};
use crate::setup;
use eventlog::{Banks, bank_algorithm, bank_name};
pub use run_log::{RunLog, TimedLine};

/// The guest's kernel command line (the probe is appended when asked for).
pub const KERNEL_COMMAND_LINE: &str = "console=ttyS0 panic=-1 quiet";

/// The init script of the initramfs.
const INIT_SCRIPT: &str = include_str!("../../tests/linux/init.sh");

/// The PCRs the event-log replay must reproduce (the firmware's).
pub const FIRMWARE_PCRS: std::ops::RangeInclusive<usize> = 0..=7;

/// The Debian packages the payload is made of.
const KERNEL_PACKAGE_PREFIX: &str = "linux-image-6.12.";
const KERNEL_PACKAGE_SUFFIX: &str = "+deb13-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";

/// The guest payload on disk.
#[derive(Clone, Debug)]
pub struct Payload {
    /// The kernel (bzImage with the EFI stub).
    pub kernel: PathBuf,
    /// Its Debian version, e.g. `6.12.117+deb13-amd64`.
    pub kernel_version: String,
    /// The initramfs (an uncompressed newc cpio archive).
    pub initrd: PathBuf,
}

/// Makes sure the kernel, busybox and the initramfs are in
/// `build/guest-linux/`, downloading what is missing.
pub fn ensure_payload(env: &Env) -> Result<Payload> {
    let dir = env.build.join("guest-linux");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let version_file = dir.join("KERNEL_VERSION");
    let busybox = dir.join("busybox");
    let cached_version = std::fs::read_to_string(&version_file).ok().map(|v| v.trim().to_string());
    let kernel_version = match cached_version {
        Some(version) if dir.join(kernel_file_name(&version)).is_file() && busybox.is_file() => {
            version
        }
        _ => {
            let version = download_payload_packages(env, &dir)?;
            std::fs::write(&version_file, format!("{version}\n"))?;
            version
        }
    };
    let initrd = dir.join("initrd.cpio");
    let busybox_binary =
        std::fs::read(&busybox).with_context(|| format!("reading {}", busybox.display()))?;
    std::fs::write(&initrd, initramfs(&busybox_binary))
        .with_context(|| format!("writing {}", initrd.display()))?;
    Ok(Payload { kernel: dir.join(kernel_file_name(&kernel_version)), kernel_version, initrd })
}

fn kernel_file_name(version: &str) -> String {
    format!("vmlinuz-{version}")
}

/// The initramfs: busybox, `/init`, the directories init mounts on, and the
/// device nodes it needs (console for its output, null, mem for the probe).
pub fn initramfs(busybox: &[u8]) -> Vec<u8> {
    use cpio::Entry::{CharDevice, Directory, File, Symlink};
    let directory = |path: &str| Directory { path: path.into(), mode: 0o755 };
    cpio::archive(&[
        directory("."),
        directory("bin"),
        File { path: "bin/busybox".into(), mode: 0o755, data: busybox.to_vec() },
        Symlink { path: "bin/sh".into(), target: "busybox".into() },
        directory("dev"),
        CharDevice { path: "dev/console".into(), mode: 0o600, major: 5, minor: 1 },
        CharDevice { path: "dev/mem".into(), mode: 0o600, major: 1, minor: 1 },
        CharDevice { path: "dev/null".into(), mode: 0o666, major: 1, minor: 3 },
        File { path: "init".into(), mode: 0o755, data: INIT_SCRIPT.as_bytes().to_vec() },
        directory("proc"),
        directory("sys"),
        directory("tmp"),
    ])
}

/// `apt-get` options for a private configuration under
/// `build/apt-guest-linux` (Debian trixie; the system's apt sources are not
/// touched; apt runs as the user, it only downloads).
fn private_apt(env: &Env) -> Result<Vec<String>> {
    let sources = setup::deb822("trixie trixie-updates", "trixie-security");
    Ok(setup::PrivateApt::new(env.build.join("apt-guest-linux"), &sources)?.options())
}

fn checked_output(command: &mut Command) -> Result<String> {
    let output = command.output().with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Downloads the newest trixie 6.12 kernel and busybox-static into `dir`
/// and unpacks the two files needed; returns the kernel version.
fn download_payload_packages(env: &Env, dir: &Path) -> Result<String> {
    println!(
        "guest: downloading Debian trixie's 6.12 kernel and busybox-static into {} \
         (apt-get download; nothing is installed)",
        dir.display()
    );
    let options = private_apt(env)?;
    checked_output(Command::new("apt-get").args(&options).args(["update", "-q"]))
        .context("apt-get update of the private trixie package lists")?;
    let search = checked_output(Command::new("apt-cache").args(&options).args([
        "search",
        "--names-only",
        r"^linux-image-6\.12\.[0-9]+\+deb13-amd64$",
    ]))?;
    let package = newest_kernel_package(&search)
        .context("Debian trixie lists no linux-image-6.12.*+deb13-amd64 package")?;
    let download = dir.join("download");
    if download.exists() {
        std::fs::remove_dir_all(&download)?;
    }
    std::fs::create_dir_all(&download)?;
    checked_output(
        Command::new("apt-get")
            .args(&options)
            .args(["download", "-q", &package, BUSYBOX_PACKAGE])
            .current_dir(&download),
    )
    .with_context(|| format!("apt-get download {package} {BUSYBOX_PACKAGE}"))?;
    let version = package.trim_start_matches("linux-image-").to_string();
    let deb_starting = |prefix: &str| -> Result<PathBuf> {
        std::fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .with_context(|| format!("apt-get download left no {prefix}*.deb"))
    };
    extract_member(
        &deb_starting(&package)?,
        &format!("./boot/vmlinuz-{version}"),
        &dir.join(kernel_file_name(&version)),
    )?;
    extract_member(&deb_starting(BUSYBOX_PACKAGE)?, "./usr/bin/busybox", &dir.join("busybox"))?;
    std::fs::remove_dir_all(&download)?;
    Ok(version)
}

/// The newest `linux-image-6.12.N+deb13-amd64` in `apt-cache search` output.
fn newest_kernel_package(search: &str) -> Option<String> {
    search
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let patch =
                name.strip_prefix(KERNEL_PACKAGE_PREFIX)?.strip_suffix(KERNEL_PACKAGE_SUFFIX)?;
            Some((patch.parse::<u32>().ok()?, name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
}

/// Copies one file out of a .deb (dpkg-deb's data tar) to `to`.
fn extract_member(deb: &Path, member: &str, to: &Path) -> Result<()> {
    let tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .output()
        .with_context(|| format!("dpkg-deb --fsys-tarfile {}", deb.display()))?;
    ensure!(tar.status.success(), "dpkg-deb --fsys-tarfile {} failed", deb.display());
    let mut extract = Command::new("tar")
        .args(["-xO", member])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting tar")?;
    let mut stdin = extract.stdin.take().context("tar's stdin")?;
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&tar.stdout)
    });
    let output = extract.wait_with_output().context("running tar")?;
    writer.join().map_err(|_| anyhow::anyhow!("tar writer thread panicked"))??;
    ensure!(
        output.status.success() && !output.stdout.is_empty(),
        "{} has no {member}",
        deb.display()
    );
    std::fs::write(to, &output.stdout).with_context(|| format!("writing {}", to.display()))
}

/// A copy of the kernel image that differs in one byte of its PE header
/// (the COFF TimeDateStamp): the same kernel to run, another image to
/// measure.
pub fn altered_kernel(kernel: &Path, out: &Path) -> Result<()> {
    let mut image =
        std::fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    let pe = image
        .get(0x3C..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .context("the kernel image is too short for a PE header")?;
    ensure!(
        image.get(pe..pe + 4) == Some(b"PE\0\0"),
        "{} is not a PE image (no EFI stub)",
        kernel.display()
    );
    let stamp = image.get_mut(pe + 8).context("truncated PE header")?;
    *stamp = stamp.wrapping_add(1);
    std::fs::write(out, image).with_context(|| format!("writing {}", out.display()))
}

/// How a guest boot runs.
#[derive(Clone, Debug)]
pub struct BootOptions {
    /// Kill the VM after this long.
    pub timeout: Duration,
    /// Copy the serial output to the terminal as it arrives.
    pub echo: bool,
    /// A guest-physical address the guest's init reads (`svsm_probe=`).
    pub probe: Option<u64>,
    /// QEMU's accelerator.
    pub accel: Accel,
    /// QEMU's CPU model: the dev platform needs SVM with nested paging.
    pub cpu: String,
    /// The OVMF to package (`None`: the one `cargo xtask setup` unpacks).
    pub ovmf: Option<PathBuf>,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            timeout: Duration::from_secs(300),
            echo: true,
            probe: None,
            accel: Accel::Tcg,
            cpu: qemu::DEV_PLATFORM_CPU.to_string(),
            ovmf: None,
        }
    }
}

fn command_line(options: &BootOptions) -> String {
    match options.probe {
        Some(address) => format!("{KERNEL_COMMAND_LINE} svsm_probe={address:#x}"),
        None => KERNEL_COMMAND_LINE.to_string(),
    }
}

fn direct_kernel_boot(
    command: &mut Command,
    payload: &Payload,
    kernel: &Path,
    options: &BootOptions,
) {
    command.arg("-kernel").arg(kernel).arg("-initrd").arg(&payload.initrd);
    command.arg("-append").arg(command_line(options));
}

/// Boots OVMF and the guest under the SVSM on the dev platform (QEMU TCG
/// with SVM and nested paging): the SVSM image with OVMF from `cargo xtask
/// build`, the kernel and initramfs through fw_cfg.
pub fn boot_under_svsm(
    env: &Env,
    payload: &Payload,
    kernel: &Path,
    options: &BootOptions,
) -> Result<RunLog> {
    let image = builder::build(
        env,
        &BuildOptions {
            kernel_features: KERNEL_FEATURES.to_string(),
            firmware: FirmwareChoice::Ovmf(options.ovmf.clone()),
            out_dir: env.build.join("image"),
            id_key: None,
        },
    )?;
    let qemu_options = QemuOptions {
        accel: options.accel,
        cpu: options.cpu.clone(),
        timeout: options.timeout,
        echo: options.echo,
        ..QemuOptions::default()
    };
    let mut command = qemu::command(&image.rom, &qemu_options);
    direct_kernel_boot(&mut command, payload, kernel, options);
    run_log::run(command, options.timeout, options.echo)
}

/// Boots OVMF and the guest without the SVSM, on QEMU's own `tpm-crb`
/// backed by swtpm: the reference the tests' event-log fixture comes from.
pub fn boot_with_swtpm(
    env: &Env,
    payload: &Payload,
    kernel: &Path,
    options: &BootOptions,
) -> Result<RunLog> {
    let ovmf = setup::ensure_ovmf(env)?;
    crate::vtpm_procs::ensure_packages(&["swtpm"])?;
    let state = env.build.join("guest-linux/swtpm");
    if state.exists() {
        std::fs::remove_dir_all(&state)?;
    }
    std::fs::create_dir_all(&state)?;
    let socket = state.join("swtpm.sock");
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--terminate"])
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", socket.display()))
        .spawn()
        .context("starting swtpm (install Debian's swtpm package)")?;
    let waited = std::time::Instant::now();
    while !socket.exists() && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-machine", "q35", "-accel", "tcg", "-cpu", "EPYC-v4", "-m", "512M", "-smp", "1"])
        .arg("-bios")
        .arg(&ovmf)
        .arg("-chardev")
        .arg(format!("socket,id=chrtpm,path={}", socket.display()))
        .args(["-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-crb,tpmdev=tpm0"])
        .args(["-serial", "stdio", "-display", "none", "-monitor", "none", "-nodefaults"])
        .arg("-no-reboot");
    direct_kernel_boot(&mut command, payload, kernel, options);
    let log = run_log::run(command, options.timeout, options.echo);
    // swtpm ends with QEMU's connection (--terminate); make sure.
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    log
}

/// What the guest and the SVSM printed.
#[derive(Clone, Debug, Default)]
pub struct GuestOutput {
    /// PCRs the guest read through its TPM driver (`GUEST-PCR`).
    pub guest_pcrs: Banks,
    /// PCRs the vTPM reported at shutdown (`vTPM PCR`).
    pub svsm_pcrs: Banks,
    /// The event log the guest dumped.
    pub event_log: Option<Vec<u8>>,
    /// When init ran.
    pub init_at: Option<Duration>,
    /// When init asked to power off.
    pub poweroff_at: Option<Duration>,
    /// `GUEST-TPM-READS`: (count, seconds) of PCR reads.
    pub tpm_reads: Option<(u32, f64)>,
    /// The value the probe read, if the guest got one.
    pub probe_value: Option<String>,
}

/// Parses the tagged lines of a boot.
pub fn parse_output(lines: &[TimedLine]) -> Result<GuestOutput> {
    let mut out = GuestOutput::default();
    let mut hex: Option<String> = None;
    for line in lines {
        // Firmware console escapes may precede a tag on its line.
        let text = line.text.find("GUEST-").map_or(line.text.trim(), |at| line.text[at..].trim());
        if let Some(collecting) = &mut hex {
            if text == "GUEST-EVENTLOG-END" {
                out.event_log = Some(decode_hex(collecting).context("the event log dump")?);
                hex = None;
            } else if text.bytes().all(|b| b.is_ascii_hexdigit()) {
                collecting.push_str(text);
            }
            continue;
        }
        if text == "GUEST-EVENTLOG-BEGIN" {
            hex = Some(String::new());
        } else if text.starts_with("GUEST-INIT") {
            out.init_at = Some(line.at);
        } else if text.starts_with("GUEST-POWEROFF") {
            out.poweroff_at = Some(line.at);
        } else if let Some(rest) = text.strip_prefix("GUEST-PCR ") {
            add_pcr(&mut out.guest_pcrs, rest)?;
        } else if let Some(rest) = text.split_once("vTPM PCR ").map(|(_, rest)| rest) {
            add_pcr(&mut out.svsm_pcrs, rest)?;
        } else if let Some(rest) = text.strip_prefix("GUEST-TPM-READS ") {
            out.tpm_reads = parse_reads(rest);
        } else if let Some(rest) = text.strip_prefix("GUEST-PROBE-VALUE") {
            out.probe_value = Some(rest.trim().to_string());
        }
    }
    Ok(out)
}

/// `<bank> <index> <hex>` into `banks`.
fn add_pcr(banks: &mut Banks, line: &str) -> Result<()> {
    let mut words = line.split_whitespace();
    let (Some(bank), Some(index), Some(value)) = (words.next(), words.next(), words.next()) else {
        bail!("malformed PCR line: {line}");
    };
    let algorithm = bank_algorithm(bank).with_context(|| format!("unknown PCR bank {bank}"))?;
    let index: usize = index.parse().with_context(|| format!("PCR index in {line}"))?;
    ensure!(index < eventlog::PCR_COUNT, "PCR index {index} out of range");
    let value = decode_hex(value).with_context(|| format!("PCR value in {line}"))?;
    let pcrs = banks.entry(algorithm).or_insert_with(|| vec![Vec::new(); eventlog::PCR_COUNT]);
    pcrs[index] = value;
    Ok(())
}

/// `count=N start=S end=E` (seconds of uptime).
fn parse_reads(rest: &str) -> Option<(u32, f64)> {
    let field = |key: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
    };
    let count = field("count")?.parse().ok()?;
    let start: f64 = field("start")?.parse().ok()?;
    let end: f64 = field("end")?.parse().ok()?;
    Some((count, end - start))
}

fn decode_hex(text: &str) -> Result<Vec<u8>> {
    ensure!(text.len().is_multiple_of(2), "odd number of hex digits");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).context("not hex"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The replay checked against the PCRs the guest read.
#[derive(Clone, Debug)]
pub struct ReplayCheck {
    /// Events in the log.
    pub events: usize,
    /// Banks compared.
    pub banks: Vec<&'static str>,
}

/// Replays `log` and compares PCR 0-7 of every bank the guest read with
/// it; a bank the log has but the guest did not read (or the reverse) is
/// an error too.
pub fn check_replay(log: &[u8], guest_pcrs: &Banks) -> Result<ReplayCheck> {
    let parsed = eventlog::parse(log).context("parsing the event log")?;
    let replayed = eventlog::replay(&parsed);
    ensure!(!guest_pcrs.is_empty(), "the guest printed no PCRs (no TPM?)");
    let mut banks = Vec::new();
    let mut mismatches = Vec::new();
    for (algorithm, pcrs) in guest_pcrs {
        let name = bank_name(*algorithm).unwrap_or("?");
        let Some(expected) = replayed.get(algorithm) else {
            bail!("the guest reads a {name} bank the event log has no digests for");
        };
        for index in FIRMWARE_PCRS {
            if pcrs[index] != expected[index] {
                mismatches.push(format!(
                    "{name} PCR {index}: TPM {} log {}",
                    hex(&pcrs[index]),
                    hex(&expected[index])
                ));
            }
        }
        banks.push(name);
    }
    if !mismatches.is_empty() {
        bail!("the event log does not reproduce the PCRs:\n  {}", mismatches.join("\n  "));
    }
    Ok(ReplayCheck { events: parsed.events.len(), banks })
}

/// Markers in the SVSM's and the guest's output, for the figures.
pub mod marker {
    /// The kernel's first log line.
    pub const SVSM_STARTED: &str = "SVSM kernel:";
    /// The vTPM is manufactured (its line says where its state lives).
    pub const VTPM_MANUFACTURED: &str = "vTPM: manufactured";
    /// The SVSM enters the guest firmware for the first time.
    pub const SVSM_READY: &str = "starting the guest firmware";
    /// The firmware's first measurement reached the vTPM.
    pub const FIRST_MEASUREMENT: &str = "CRB: first PCR_Extend";
    /// The CRB's statistics at shutdown (commands, accesses, TPM time).
    pub const CRB_STATISTICS: &str = "emulated accesses";
    /// The SVSM ran no guest (e.g. the native platform: no SVM).
    pub const NO_GUEST: &str = "no guest to run";
    /// The SVSM stopped the guest for touching memory it may not.
    pub const GUEST_STOPPED: &str = "guest stopped:";
}

/// A boot under the SVSM, analysed.
#[derive(Debug)]
pub struct SvsmBoot {
    /// The serial log.
    pub log: RunLog,
    /// The tagged output.
    pub output: GuestOutput,
    /// The replay check (Err: why it failed).
    pub replay: Result<ReplayCheck, String>,
    /// Where the vTPM's state lives (the arena's physical address).
    pub vtpm_state_address: Option<u64>,
}

impl SvsmBoot {
    /// Parses and checks a boot's log.
    pub fn analyse(log: RunLog) -> Result<SvsmBoot> {
        let output = parse_output(&log.lines)?;
        let replay = match &output.event_log {
            Some(event_log) => {
                check_replay(event_log, &output.guest_pcrs).map_err(|e| format!("{e:#}"))
            }
            None => Err("the guest printed no event log".to_string()),
        };
        let vtpm_state_address = log.find(marker::VTPM_MANUFACTURED).and_then(|line| {
            let hex = line.text.split("SVSM memory at 0x").nth(1)?;
            let digits: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
            u64::from_str_radix(&digits, 16).ok()
        });
        Ok(SvsmBoot { log, output, replay, vtpm_state_address })
    }

    fn at(&self, needle: &str) -> Option<Duration> {
        self.log.find(needle).map(|line| line.at)
    }

    /// The PCRs the guest read that differ from the vTPM's own report (an
    /// empty list if they agree; an error if either side printed none).
    pub fn pcr_disagreements(&self) -> Result<Vec<String>> {
        ensure!(!self.output.svsm_pcrs.is_empty(), "the SVSM reported no vTPM PCRs at shutdown");
        ensure!(!self.output.guest_pcrs.is_empty(), "the guest printed no PCRs");
        let mut differences = Vec::new();
        for (algorithm, guest) in &self.output.guest_pcrs {
            let name = bank_name(*algorithm).unwrap_or("?");
            let Some(svsm) = self.output.svsm_pcrs.get(algorithm) else {
                differences.push(format!("{name}: the vTPM reported no such bank"));
                continue;
            };
            for index in 0..eventlog::PCR_COUNT {
                if guest[index] != svsm[index] {
                    differences.push(format!("{name} PCR {index}"));
                }
            }
        }
        Ok(differences)
    }

    /// The figures: seconds from QEMU's start to each milestone.
    pub fn figures(&self) -> String {
        let seconds = |at: Option<Duration>| {
            at.map_or("not reached".to_string(), |at| format!("{:.1} s", at.as_secs_f64()))
        };
        let mut text = format!(
            "  SVSM started {}, vTPM manufactured {}, SVSM ready (enters OVMF) {}, first \
             measurement {}, Linux init {}, power-off requested {}, QEMU ended {:.1} s",
            seconds(self.at(marker::SVSM_STARTED)),
            seconds(self.at(marker::VTPM_MANUFACTURED)),
            seconds(self.at(marker::SVSM_READY)),
            seconds(self.at(marker::FIRST_MEASUREMENT)),
            seconds(self.output.init_at),
            seconds(self.output.poweroff_at),
            self.log.elapsed.as_secs_f64(),
        );
        if let Some((count, seconds)) = self.output.tpm_reads {
            text.push_str(&format!(
                "\n  TPM round trip seen by Linux: {count} PCR reads in {seconds:.2} s = {:.1} ms each",
                seconds * 1000.0 / f64::from(count)
            ));
        }
        for needle in [
            marker::VTPM_MANUFACTURED,
            "SVSM private memory",
            "vTPM: arena",
            marker::CRB_STATISTICS,
        ] {
            if let Some(line) = self.log.find(needle) {
                text.push_str(&format!("\n  {}", line.text.trim()));
            }
        }
        text
    }

    /// The summary `cargo xtask run` ends with.
    pub fn summary(&self) -> String {
        let yes_no = |ok: bool| if ok { "yes" } else { "NO" };
        let mut text = String::from("\n=== Linux guest under the SVSM\n");
        text.push_str(&format!(
            "SVSM booted:  {}\n",
            yes_no(self.at(marker::SVSM_READY).is_some())
        ));
        text.push_str(&format!("guest booted: {}\n", yes_no(self.output.init_at.is_some())));
        if let Some(pcrs) = self.output.guest_pcrs.get(&eventlog::TPM_ALG_SHA256) {
            text.push_str("vTPM PCRs (SHA-256, read by the guest):\n");
            for index in FIRMWARE_PCRS {
                text.push_str(&format!("  PCR {index}: {}\n", hex(&pcrs[index])));
            }
        }
        match &self.replay {
            Ok(check) => text.push_str(&format!(
                "event log replay: matches PCR 0-7 ({} events; banks {})\n",
                check.events,
                check.banks.join(", ")
            )),
            Err(why) => text.push_str(&format!("event log replay: FAILED: {why}\n")),
        }
        match self.pcr_disagreements() {
            Ok(differences) if differences.is_empty() => {
                text.push_str("vTPM's own PCRs at shutdown: equal to the guest's\n");
            }
            Ok(differences) => text.push_str(&format!(
                "vTPM's own PCRs at shutdown: DIFFER: {}\n",
                differences.join(", ")
            )),
            Err(why) => text.push_str(&format!("vTPM's own PCRs at shutdown: {why}\n")),
        }
        text.push_str(&format!("VM ended: {}\n", self.ending()));
        text.push_str("figures (QEMU TCG):\n");
        text.push_str(&self.figures());
        text
    }

    /// Whether the SVSM ended the VM with success (after the guest's
    /// power-off, once the vTPM was shut down).
    pub fn svsm_ended_successfully(&self) -> bool {
        self.log.status.and_then(|status| status.code()) == Some(exit_status(EXIT_SUCCESS))
    }

    /// How the VM ended, for the summary.
    fn ending(&self) -> String {
        match self.log.status.map(|status| status.code()) {
            _ if self.svsm_ended_successfully() => {
                "the guest powered off; the SVSM shut the vTPM down and ended the VM (success)"
                    .to_string()
            }
            Some(Some(code)) if code == exit_status(EXIT_FAILURE) => {
                "the SVSM ended the VM with FAILURE".to_string()
            }
            Some(Some(code)) => format!("QEMU exited with status {code} without the SVSM"),
            Some(None) => "QEMU was killed by a signal".to_string(),
            None => format!("TIMEOUT: killed after {:.0} s", self.log.elapsed.as_secs_f64()),
        }
    }

    /// Whether the boot showed what it should: the guest booted, the replay
    /// matches, the vTPM agrees with the guest, and the guest's power-off
    /// ended the VM through the SVSM.
    pub fn verdict(&self) -> Result<()> {
        if let Some(line) = self.log.find(marker::NO_GUEST) {
            bail!(
                "the SVSM started no guest: {}\nThe dev platform runs the guest with SVM and \
                 nested paging: give QEMU a CPU model that has both (--cpu {}).",
                line.text.trim(),
                qemu::DEV_PLATFORM_CPU
            );
        }
        ensure!(
            self.output.init_at.is_some(),
            "the guest never ran its init; the last lines were:\n{}\nQEMU said: {}",
            tail(&self.log, 40),
            qemu_messages(&self.log.stderr)
        );
        if let Err(why) = &self.replay {
            bail!("{why}");
        }
        let differences = self.pcr_disagreements()?;
        ensure!(
            differences.is_empty(),
            "the PCRs the guest read differ from the vTPM's own: {}",
            differences.join(", ")
        );
        ensure!(
            self.svsm_ended_successfully(),
            "the VM did not end through the SVSM after the guest's power-off: {}; the last \
             lines were:\n{}",
            self.ending(),
            tail(&self.log, 20)
        );
        Ok(())
    }
}

/// `cargo xtask run`'s Linux boot: OVMF and the guest kernel (`guest`, or
/// the Debian one) under the SVSM, then the summary.
pub fn run(env: &Env, guest: Option<&Path>, options: &BootOptions) -> Result<()> {
    if let Some(guest) = guest {
        ensure!(guest.is_file(), "--guest {}: no such file", guest.display());
    }
    setup::ensure_boot_tools(env)?;
    let payload = ensure_payload(env)?;
    let kernel = guest.map_or_else(|| payload.kernel.clone(), Path::to_path_buf);
    let boot = SvsmBoot::analyse(boot_under_svsm(env, &payload, &kernel, options)?)?;
    println!("{}", boot.summary());
    boot.verdict()
}

/// The Linux guest tier of `cargo xtask test`: the reference boot on
/// swtpm, then two boots under the SVSM: the Debian kernel (replay and
/// vTPM agree with the guest), and the same kernel with one header byte
/// changed (PCR 4 changes) whose init reads the vTPM's memory (the SVSM
/// stops it and names the address).
pub fn run_tests(env: &Env) -> Result<String> {
    setup::ensure_boot_tools(env)?;
    let payload = ensure_payload(env)?;
    let reference = reference_check(env, &payload)?;
    println!("guest: {reference}");

    let quiet = BootOptions { echo: false, ..BootOptions::default() };
    let first = SvsmBoot::analyse(boot_under_svsm(env, &payload, &payload.kernel, &quiet)?)?;
    println!("{}", first.summary());
    first.verdict().context("the Linux guest under the SVSM")?;

    let altered = env.build.join("guest-linux/vmlinuz-altered");
    altered_kernel(&payload.kernel, &altered)?;
    let probe =
        first.vtpm_state_address.context("the SVSM did not log where the vTPM's state lives")?;
    let options = BootOptions { probe: Some(probe), ..quiet };
    let second = SvsmBoot::analyse(boot_under_svsm(env, &payload, &altered, &options)?)?;
    println!("{}", second.summary());
    let sha256 = |boot: &SvsmBoot| boot.output.guest_pcrs.get(&eventlog::TPM_ALG_SHA256).cloned();
    let (Some(before), Some(after)) = (sha256(&first), sha256(&second)) else {
        bail!(
            "the guest with the altered kernel printed no SHA-256 PCRs:\n{}",
            tail(&second.log, 40)
        );
    };
    ensure!(before[4] != after[4], "PCR 4 is the same for two different kernel images");
    if let Err(why) = &second.replay {
        bail!("altered kernel: {why}");
    }
    let changed: Vec<usize> = FIRMWARE_PCRS.filter(|&i| before[i] != after[i]).collect();

    let stopped = second.log.find(marker::GUEST_STOPPED).with_context(|| {
        format!("the guest read {probe:#x} (the vTPM's state) and was not stopped")
    })?;
    ensure!(
        second.output.probe_value.is_none(),
        "the guest read the vTPM's state at {probe:#x}: {}",
        second.output.probe_value.as_deref().unwrap_or_default()
    );
    let named = stopped.text.contains(&format!("gpa={probe:#x}")) && stopped.text.contains("svsm");
    ensure!(named, "the stop report does not name {probe:#x} and the SVSM: {}", stopped.text);

    let replay = first.replay.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(format!(
        "replay of {} events matches PCR 0-7 ({}) and the vTPM's own PCRs; altered kernel changes \
         PCR {changed:?}; guest read of the vTPM state at {probe:#x} stopped; power-off at {:.1} s",
        replay.events,
        replay.banks.join("/"),
        first.log.elapsed.as_secs_f64()
    ))
}

/// Where the reference boot leaves its event log and PCRs (the material of
/// `tests/linux/fixtures/swtpm-ovmf/`).
pub fn reference_dir(env: &Env) -> PathBuf {
    env.build.join("guest-linux/reference")
}

/// The reference boot (swtpm, no SVSM): checks the payload and the replay
/// against an independent TPM, and keeps its log and PCRs.
pub fn reference_check(env: &Env, payload: &Payload) -> Result<String> {
    let options = BootOptions { echo: false, ..BootOptions::default() };
    let log = boot_with_swtpm(env, payload, &payload.kernel, &options)?;
    let out = parse_output(&log.lines)?;
    let event_log = out.event_log.as_deref().with_context(|| {
        format!("the reference guest printed no event log; its output:\n{}", tail(&log, 30))
    })?;
    let replay = check_replay(event_log, &out.guest_pcrs)?;
    let dir = reference_dir(env);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("serial.log"), timed_text(&log))?;
    std::fs::write(dir.join("binary_bios_measurements"), event_log)?;
    std::fs::write(dir.join("pcrs.txt"), pcr_lines(&out.guest_pcrs))?;
    std::fs::write(dir.join("KERNEL_VERSION"), format!("{}\n", payload.kernel_version))?;
    Ok(format!(
        "swtpm reference: {} events replay to PCR 0-7 of {}; init at {:.1} s, {:.1} s in all",
        replay.events,
        replay.banks.join("/"),
        out.init_at.unwrap_or_default().as_secs_f64(),
        log.elapsed.as_secs_f64()
    ))
}

/// `GUEST-PCR` lines for `banks` (the fixture format).
pub fn pcr_lines(banks: &Banks) -> String {
    let mut text = String::new();
    for (algorithm, pcrs) in banks {
        let name = bank_name(*algorithm).unwrap_or("?");
        for (index, value) in pcrs.iter().enumerate() {
            text.push_str(&format!("GUEST-PCR {name} {index} {}\n", hex(value)));
        }
    }
    text
}

/// The serial output with arrival times.
pub fn timed_text(log: &RunLog) -> String {
    log.lines.iter().map(|l| format!("{:8.3} {}\n", l.at.as_secs_f64(), l.text)).collect()
}

/// QEMU's stderr without its warnings about CPU features TCG does not
/// emulate (every boot with an EPYC model prints them).
fn qemu_messages(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|line| !line.contains("TCG doesn't support requested feature"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` serial lines, for error messages.
fn tail(log: &RunLog, n: usize) -> String {
    let start = log.lines.len().saturating_sub(n);
    log.lines[start..].iter().map(|l| format!("  {}", l.text)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests;
