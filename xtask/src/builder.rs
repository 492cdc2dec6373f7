//! `cargo xtask build`: compiles stage2, the kernel and the ROM loader for
//! x86_64-unknown-none, writes the IGVM file, checks it against KVM's and
//! QEMU's rules, and writes its launch digest, page log and `-bios` ROM.
//!
//! Outputs (in the output folder, `build/image` by default):
//! `svsm.igvm`, `svsm.igvm.digest` (SNP launch digest, hex),
//! `svsm.igvm.pagelog` (one line per PAGE_INFO step), `svsm.bios` (the
//! QEMU wrapper), `kernel.elf` (unstripped, for symbols), `stage2.elf`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use igvm::{IgvmFile, IsolationType};

use crate::env::Env;
use crate::firmware::GuestFirmware;
use crate::igvm_image::{self, ImageInputs};
use crate::{bios_image, id_block, kvm_rules, measure, setup};
use abi::layout::{NATIVE_PLATFORM_MASK, SNP_PLATFORM_MASK};

/// The kernel's features for the SVSM itself.
pub const KERNEL_FEATURES: &str = "bare-metal";
/// The kernel's features for the in-kernel test build.
pub const KERNEL_TEST_FEATURES: &str = "bare-metal,test-runner";
/// What the native platform's kernel adds: the development PSP, which the
/// dev platform uses to answer attestation requests. The SNP platform's
/// kernel never contains it.
pub const NATIVE_ONLY_FEATURES: &str = "dev-psp";

/// The guest firmware to package.
pub enum FirmwareChoice {
    /// OVMF from this path, or (None) the one `setup` unpacks.
    Ovmf(Option<PathBuf>),
    /// An image given directly (e.g. a small test guest).
    Image(GuestFirmware),
    /// No guest firmware.
    None,
}

/// What to build.
pub struct BuildOptions {
    /// Kernel cargo features (`KERNEL_FEATURES` or `KERNEL_TEST_FEATURES`).
    pub kernel_features: String,
    /// The guest firmware.
    pub firmware: FirmwareChoice,
    /// Where the outputs go.
    pub out_dir: PathBuf,
    /// A P-384 key to sign an ID block with.
    pub id_key: Option<PathBuf>,
}

/// The files a build wrote, and its figures.
#[derive(Debug)]
pub struct BuiltImage {
    pub igvm: PathBuf,
    pub rom: PathBuf,
    pub digest: String,
    pub page_log: PathBuf,
}

/// Where cargo puts build outputs: `CARGO_TARGET_DIR`, else `target/`.
pub fn target_dir(env: &Env) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| env.root.join("target"))
}

/// Builds one bare-metal binary crate in release and returns its ELF.
pub fn build_bare_metal(env: &Env, package: &str, features: &str) -> Result<PathBuf> {
    let target_dir = target_dir(env);
    let target_arg = target_dir.to_string_lossy().into_owned();
    env.cargo(&[
        "build",
        "--release",
        "--target",
        "x86_64-unknown-none",
        "--target-dir",
        &target_arg,
        "-p",
        package,
        "--features",
        features,
    ])
    .with_context(|| format!("building {package} for x86_64-unknown-none"))?;
    let elf = target_dir.join("x86_64-unknown-none/release").join(package);
    if !elf.is_file() {
        bail!("cargo built {package} but {} is missing", elf.display());
    }
    Ok(elf)
}

/// Copies `elf` without debug sections and symbols (binutils objcopy).
///
/// The symbol table goes too because it is not reproducible: rustc names
/// some internal symbols with a hash that depends on where the source tree
/// lies, so a guest owner rebuilding the same commit in another directory
/// would get another launch digest. The unstripped ELF stays next to the
/// image for debugging.
fn strip_all(elf: &Path, out: &Path) -> Result<()> {
    let status = Command::new("objcopy")
        .arg("--strip-all")
        .arg(elf)
        .arg(out)
        .status()
        .context("running objcopy (install binutils, or run `cargo xtask setup`)")?;
    if !status.success() {
        bail!("objcopy --strip-all {} failed ({status})", elf.display());
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Builds everything and writes the outputs.
pub fn build(env: &Env, options: &BuildOptions) -> Result<BuiltImage> {
    let started = Instant::now();
    let firmware = match &options.firmware {
        FirmwareChoice::Ovmf(Some(path)) => Some(GuestFirmware::ovmf(path)?),
        FirmwareChoice::Ovmf(None) => Some(GuestFirmware::ovmf(&setup::ensure_ovmf(env)?)?),
        FirmwareChoice::Image(image) => Some(image.clone()),
        FirmwareChoice::None => None,
    };
    let id_key = options.id_key.as_deref().map(id_block::load_key).transpose()?;
    let stage2 = build_bare_metal(env, "stage2", "bare-metal")?;
    let out = &options.out_dir;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // One kernel per platform: the same code, but only the native one
    // carries the development PSP. Each build's output is copied before the
    // next build replaces it.
    let native_features = format!("{},{NATIVE_ONLY_FEATURES}", options.kernel_features);
    let mut kernels = Vec::new();
    for (name, features) in
        [("snp", options.kernel_features.as_str()), ("native", &native_features)]
    {
        let elf = build_bare_metal(env, "kernel", features)?;
        let symbols = out.join(format!("kernel-{name}.elf"));
        std::fs::copy(&elf, &symbols).context("copying the kernel ELF")?;
        let stripped = out.join(format!("kernel-{name}.stripped.elf"));
        strip_all(&symbols, &stripped)?;
        kernels.push((symbols, read(&stripped)?));
    }
    let romloader = build_bare_metal(env, "romloader", "bare-metal")?;
    let compiled = started.elapsed();
    std::fs::copy(&stage2, out.join("stage2.elf")).context("copying the stage2 ELF")?;

    let stage2_elf = read(&stage2)?;
    let inputs = ImageInputs {
        stage2_elf: &stage2_elf,
        kernel_snp: &kernels[0].1,
        kernel_native: &kernels[1].1,
        firmware: firmware.as_ref(),
    };
    // Attestation (issue 5): the native kernel's development PSP gets its
    // keys in native-platform pages of the image.
    let dev_psp = crate::attest_certs::chain_dir(&env.build);
    let written = write_image(&inputs, id_key.as_ref(), &read(&romloader)?, out, Some(&dev_psp))?;

    println!(
        "build: stage2        {:>9} bytes (ELF {})",
        loaded_size(&stage2_elf),
        stage2_elf.len()
    );
    for ((symbols, stripped), name) in kernels.iter().zip(["SNP", "native"]) {
        println!(
            "build: kernel ({name:>6}) {:>9} bytes stripped ELF ({} with debug info: {})",
            stripped.len(),
            std::fs::metadata(symbols)?.len(),
            symbols.display()
        );
    }
    if let Some(fw) = &firmware {
        println!("build: firmware      {:>9} bytes ({})", fw.image.len(), fw.name);
    }
    println!(
        "build: IGVM          {:>9} bytes {}",
        std::fs::metadata(&written.igvm)?.len(),
        written.igvm.display()
    );
    println!(
        "build: -bios ROM     {:>9} bytes {}",
        std::fs::metadata(&written.rom)?.len(),
        written.rom.display()
    );
    println!("build: page log      {}", written.page_log.display());
    println!("build: SNP launch digest {}", written.digest);
    println!(
        "build: done in {:.1} s (compiling {:.1} s)",
        started.elapsed().as_secs_f64(),
        compiled.as_secs_f64()
    );
    Ok(written)
}

/// Bytes stage2 occupies in memory.
fn loaded_size(elf: &[u8]) -> u64 {
    abi::elf::Elf::parse(elf).map(|e| e.segments().map(|s| s.mem_size).sum()).unwrap_or(0)
}

/// Assembles, checks, measures and writes the IGVM file and its ROM; with
/// `dev_psp_chain`, adds the development PSP's keys from that chain
/// directory (`attest_certs::with_dev_psp`, native platform only).
pub fn write_image(
    inputs: &ImageInputs<'_>,
    id_key: Option<&p384::ecdsa::SigningKey>,
    romloader_elf: &[u8],
    out: &Path,
    dev_psp_chain: Option<&Path>,
) -> Result<BuiltImage> {
    let file = igvm_image::assemble(inputs, id_key)?;
    let file = match dev_psp_chain {
        Some(dir) => crate::attest_certs::with_dev_psp(&file, dir)?,
        None => file,
    };
    let bytes = igvm_image::serialize(&file)?;
    // Check what was written, not what was meant: parse the bytes back.
    let parsed =
        IgvmFile::new_from_binary(&bytes, None).context("the written IGVM file does not parse")?;
    for (filter, name) in [(IsolationType::Snp, "SNP"), (IsolationType::NotIsolated, "native")] {
        IgvmFile::new_from_binary(&bytes, Some(filter)).with_context(|| {
            format!("the written IGVM file does not parse for the {name} platform")
        })?;
    }
    kvm_rules::check(&parsed, SNP_PLATFORM_MASK, NATIVE_PLATFORM_MASK)
        .context("the IGVM file breaks a rule KVM or QEMU imposes")?;
    let measurement = measure::measure_snp(&parsed)?;
    let rom = bios_image::build_rom(&bytes, &bios_image::loader_image(romloader_elf)?)?;

    let igvm = out.join("svsm.igvm");
    let page_log = out.join("svsm.igvm.pagelog");
    let rom_path = out.join("svsm.bios");
    write(&igvm, &bytes)?;
    write(&out.join("svsm.igvm.digest"), format!("{}\n", measurement.digest_hex()).as_bytes())?;
    write(&page_log, measurement.page_log().as_bytes())?;
    write(&rom_path, &rom)?;
    Ok(BuiltImage { igvm, rom: rom_path, digest: measurement.digest_hex(), page_log })
}

/// `cargo xtask measure FILE`.
pub fn measure_file(path: &Path) -> Result<()> {
    let bytes = read(path)?;
    let file = IgvmFile::new_from_binary(&bytes, None)
        .with_context(|| format!("{} is not a valid IGVM file", path.display()))?;
    let measurement = measure::measure_snp(&file)?;
    println!("{}", measurement.digest_hex());
    Ok(())
}
