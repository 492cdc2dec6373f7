//! The `build` and `run` subcommands: their options and what they do.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};

use crate::builder::{self, BuildOptions, FirmwareChoice, KERNEL_FEATURES, KERNEL_TEST_FEATURES};
use crate::env::Env;
use crate::firmware::GuestFirmware;
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
#[derive(Args)]
pub struct RunArgs {
    /// QEMU accelerator.
    #[arg(long, value_enum, default_value = "tcg")]
    accel: Accel,
    /// OVMF image to package (default: the one `cargo xtask setup` unpacks).
    #[arg(long)]
    ovmf: Option<PathBuf>,
    /// Seconds before the VM is killed.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// The VMM to boot with.
    #[arg(long, value_enum, default_value = "qemu")]
    vmm: Vmm,
    /// QEMU CPU model (the dev platform needs SVM with nested paging,
    /// e.g. EPYC-v4,+svm,+npt).
    #[arg(long, default_value = "EPYC-v4")]
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
    if args.vmm == Vmm::Launcher {
        bail!(
            "--vmm launcher: booting through the launcher crate is not wired into the xtask yet \
             (the launcher's native boot is being written); use --vmm qemu"
        );
    }
    setup::ensure_boot_tools(env)?;
    let image = builder::build(
        env,
        &BuildOptions {
            kernel_features: KERNEL_FEATURES.to_string(),
            firmware: FirmwareChoice::Ovmf(args.ovmf.clone()),
            out_dir: env.build.join("image"),
            id_key: None,
        },
    )?;
    let options = QemuOptions {
        accel: args.accel,
        cpu: args.cpu.clone(),
        timeout: Duration::from_secs(args.timeout),
        ..QemuOptions::default()
    };
    println!("run: {}", qemu_line(&image.rom, &options));
    let result = qemu::boot(&image.rom, &options)?;
    if !result.ending.is_success() && !result.qemu_stderr.trim().is_empty() {
        eprintln!("QEMU said:\n{}", result.qemu_stderr.trim_end());
    }
    let line = result.ending.describe(options.timeout);
    println!("\n{line} ({:.2} s)", result.elapsed.as_secs_f64());
    if !result.ending.is_success() {
        bail!("{line}");
    }
    Ok(())
}

fn qemu_line(rom: &std::path::Path, options: &QemuOptions) -> String {
    let command = qemu::command(rom, options);
    let args: Vec<_> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!("qemu-system-x86_64 {}", args.join(" "))
}
