//! The `build` and `run` subcommands: their options and what they do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use abi::layout::{EXIT_FAILURE, EXIT_SUCCESS, exit_status};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::builder::{self, BuildOptions, FirmwareChoice, KERNEL_FEATURES, KERNEL_TEST_FEATURES};
use crate::env::Env;
use crate::firmware::GuestFirmware;
use crate::guest_linux;
use crate::qemu::{self, Accel, QemuOptions};
use crate::setup;

/// Options of `cargo xtask build`.
#[derive(Args)]
pub struct BuildArgs {
    /// A release image: the SVSM kernel without in-kernel tests, with a
    /// signed ID block (requires --id-key).
    #[arg(long, conflicts_with = "kernel_tests")]
    release_mode: bool,
    /// Build the kernel with its in-kernel test runner.
    #[arg(long)]
    kernel_tests: bool,
    /// OVMF image to package (default: the one `cargo xtask setup` unpacks).
    #[arg(long, conflicts_with_all = ["firmware_image", "no_firmware"])]
    ovmf: Option<PathBuf>,
    /// A guest image without SEV metadata to package instead of OVMF (e.g.
    /// a test guest); it is placed to end at 4 GiB like OVMF.
    #[arg(long, conflicts_with = "no_firmware")]
    firmware_image: Option<PathBuf>,
    /// Package no guest firmware: the SVSM alone.
    #[arg(long)]
    no_firmware: bool,
    /// ECDSA P-384 private key (PEM) to sign an SNP ID block with.
    #[arg(long)]
    id_key: Option<PathBuf>,
    /// Output folder (default: build/image).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The VMM that boots the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Vmm {
    /// QEMU with the -bios wrapper.
    Qemu,
    /// The project's KVM launcher.
    Launcher,
}

/// Options of `cargo xtask run`.
///
/// By default it boots the whole stack on the dev platform: the SVSM, OVMF
/// measuring the boot into the SVSM's vTPM over the emulated CRB, and
/// Debian's Linux kernel with a small initramfs that prints the vTPM's
/// PCRs and the firmware event log, then powers off. It ends with a
/// summary: SVSM booted, guest booted, the PCRs, whether the event log
/// replays to them.
#[derive(Args)]
pub struct RunArgs {
    /// A Linux kernel (bzImage with the EFI stub) to boot instead of
    /// Debian's; it needs the tpm_crb driver to see the vTPM.
    #[arg(long, value_name = "PATH", conflicts_with = "no_guest")]
    guest: Option<PathBuf>,
    /// Boot the SVSM and OVMF without a Linux kernel: ends successfully
    /// once OVMF's boot manager has started its UEFI shell and the shell
    /// waits at its prompt, and fails if that does not happen by --timeout.
    #[arg(long)]
    no_guest: bool,
    /// QEMU accelerator.
    #[arg(long, value_enum, default_value = "tcg")]
    accel: Accel,
    /// OVMF image to package (default: the one `cargo xtask setup` unpacks).
    #[arg(long)]
    ovmf: Option<PathBuf>,
    /// Seconds before the VM is killed.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The VMM to boot with. The launcher boots the image's native
    /// platform, which runs no guest (the SVSM alone).
    #[arg(long, value_enum, default_value = "qemu", conflicts_with = "guest")]
    vmm: Vmm,
    /// QEMU CPU model. The dev platform, which runs the guest, needs SVM
    /// with nested paging; without them (e.g. EPYC-v4,-svm) the SVSM runs
    /// on the native platform and starts no guest.
    #[arg(long, default_value = qemu::DEV_PLATFORM_CPU)]
    cpu: String,
}

pub fn build(env: &Env, args: &BuildArgs) -> Result<()> {
    if args.release_mode && args.id_key.is_none() {
        bail!("--release-mode builds a signed image: pass --id-key KEY.pem (an ECDSA P-384 key)");
    }
    setup::ensure_bare_metal_target()?;
    setup::ensure_binutils()?;
    let features = if args.kernel_tests { KERNEL_TEST_FEATURES } else { KERNEL_FEATURES };
    let firmware = if args.no_firmware {
        FirmwareChoice::None
    } else if let Some(path) = &args.firmware_image {
        FirmwareChoice::Image(GuestFirmware::image(path)?)
    } else {
        FirmwareChoice::Ovmf(args.ovmf.clone())
    };
    builder::build(
        env,
        &BuildOptions {
            kernel_features: features.to_string(),
            firmware,
            out_dir: args.out.clone().unwrap_or_else(|| env.build.join("image")),
            id_key: args.id_key.clone(),
        },
    )?;
    Ok(())
}

pub fn run(env: &Env, args: &RunArgs) -> Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    if args.vmm == Vmm::Qemu && !args.no_guest {
        let options = guest_linux::BootOptions {
            timeout,
            accel: args.accel,
            cpu: args.cpu.clone(),
            ovmf: args.ovmf.clone(),
            ..guest_linux::BootOptions::default()
        };
        return guest_linux::run(env, args.guest.as_deref(), &options);
    }
    match args.vmm {
        Vmm::Qemu => {
            setup::ensure_boot_tools(env)?;
        }
        Vmm::Launcher => {
            setup::ensure_bare_metal_target()?;
            setup::ensure_binutils()?;
        }
    }
    let image = builder::build(
        env,
        &BuildOptions {
            kernel_features: KERNEL_FEATURES.to_string(),
            firmware: FirmwareChoice::Ovmf(args.ovmf.clone()),
            out_dir: env.build.join("image"),
            id_key: None,
        },
    )?;
    let (line, success) = match args.vmm {
        Vmm::Qemu => boot_qemu(&image.rom, args, timeout)?,
        Vmm::Launcher => boot_launcher(env, &image.igvm, timeout)?,
    };
    println!("\n{line}");
    if !success {
        bail!("{line}");
    }
    Ok(())
}

/// What OVMF's UEFI shell prints when it waits for a command.
const UEFI_SHELL_PROMPT: &str = "Shell> ";

/// Boots the -bios wrapper under QEMU; returns the closing line.
fn boot_qemu(rom: &Path, args: &RunArgs, timeout: Duration) -> Result<(String, bool)> {
    // Without a kernel to boot, OVMF's boot manager starts its UEFI shell,
    // which waits at its prompt: that is where --no-guest should end.
    let stop_when = args.no_guest.then(|| UEFI_SHELL_PROMPT.to_string());
    let options = QemuOptions {
        accel: args.accel,
        cpu: args.cpu.clone(),
        timeout,
        stop_when,
        ..QemuOptions::default()
    };
    println!("run: {}", qemu_line(rom, &options));
    let result = qemu::boot(rom, &options)?;
    let mut line =
        format!("{} ({:.2} s)", result.ending.describe(timeout), result.elapsed.as_secs_f64());
    let reached_shell = result.ending == qemu::Ending::Stopped;
    if reached_shell {
        line = format!(
            "OVMF reached its UEFI shell under the SVSM ({:.2} s); QEMU stopped",
            result.elapsed.as_secs_f64()
        );
    } else if args.no_guest {
        line.push_str(": OVMF did not reach its UEFI shell prompt");
    }
    let success = result.ending.is_success() || reached_shell;
    if !success && !result.qemu_stderr.trim().is_empty() {
        eprintln!("QEMU said:\n{}", result.qemu_stderr.trim_end());
    }
    Ok((line, success))
}

/// Boots the IGVM file's native platform with the project's KVM launcher
/// (`launcher run IGVM --platform native`); returns the closing line.
fn boot_launcher(env: &Env, igvm: &Path, timeout: Duration) -> Result<(String, bool)> {
    let target_dir = builder::target_dir(env);
    let target_arg = target_dir.to_string_lossy().into_owned();
    env.cargo(&["build", "--release", "--target-dir", &target_arg, "-p", "launcher"])?;
    let launcher = target_dir.join("release/launcher");
    let mut command = Command::new(&launcher);
    command.arg("run").arg(igvm).args([
        "--platform",
        "native",
        "--timeout",
        &timeout.as_secs().to_string(),
    ]);
    println!("run: {command:?}");
    let started = Instant::now();
    let status = command.status().with_context(|| format!("starting {}", launcher.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let ending = launcher_ending(status.code());
    Ok((format!("{ending} ({seconds:.2} s)"), status.code() == Some(exit_status(EXIT_SUCCESS))))
}

/// The closing line for a launcher exit status (see launcher/src/main.rs).
fn launcher_ending(code: Option<i32>) -> String {
    match code {
        Some(c) if c == exit_status(EXIT_SUCCESS) => {
            "SVSM ended: SUCCESS (launcher, exit port 0x10)".into()
        }
        Some(c) if c == exit_status(EXIT_FAILURE) => {
            "SVSM ended: FAILURE (launcher, exit port 0x11)".into()
        }
        Some(124) => "SVSM ended: TIMEOUT (the launcher's watchdog fired)".into(),
        Some(4) => "SVSM ended: FAILURE (the guest stopped without the exit port)".into(),
        Some(2) => "SVSM ended: FAILURE (the launcher failed; its message is above)".into(),
        Some(c) => format!("SVSM ended: FAILURE (launcher exit status {c})"),
        None => "SVSM ended: FAILURE (the launcher was killed by a signal)".into(),
    }
}

fn qemu_line(rom: &Path, options: &QemuOptions) -> String {
    let command = qemu::command(rom, options);
    let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("qemu-system-x86_64 {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_statuses_have_closing_lines() {
        assert!(launcher_ending(Some(33)).contains("SUCCESS"));
        assert!(launcher_ending(Some(35)).contains("FAILURE (launcher, exit port 0x11)"));
        assert!(launcher_ending(Some(124)).contains("TIMEOUT"));
        assert!(launcher_ending(Some(2)).contains("the launcher failed"));
        assert!(launcher_ending(Some(7)).contains("exit status 7"));
        assert!(launcher_ending(None).contains("signal"));
    }
}
