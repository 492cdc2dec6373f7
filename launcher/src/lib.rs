//! A thin KVM launcher for the SVSM's IGVM file.
//!
//! * [`native`] boots the file's native platform under plain KVM (memory
//!   slots, pages, parameters, the native start context, serial console and
//!   the 0x501 debug-exit port, a watchdog).
//! * [`snp`] launches the SEV-SNP platform on an SNP host (guest_memfd,
//!   KVM_SEV_INIT2, SNP_LAUNCH_START/UPDATE/FINISH with the kvm-bindings
//!   structs, the VMSA applied to vCPU 0 as QEMU does), with a preflight that
//!   names what the host lacks, and every KVM call behind a trait with a
//!   recording fake. [`snp::measure::expected_launch_digest`] replays that
//!   launch against the fake and returns the launch digest it implies.
//! * [`igvm_load`] turns one platform of an IGVM file into a checked
//!   [`igvm_load::LoadPlan`]; [`layout`] and [`guest_memory`] describe and
//!   back guest memory; [`vcpu`] is the run loop; [`host`] recognises
//!   KVM-PVM.
//!
//! The xtask calls [`run`] (or the `launcher` binary, whose exit status is
//! [`vcpu::Ending::exit_status`]).

pub mod guest_memory;
pub mod host;
pub mod igvm_load;
pub mod layout;
pub mod native;
pub mod sample;
pub mod snp;
pub mod vcpu;
pub mod watchdog;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use igvm_load::Platform;
use snp::PlanesMode;
use vcpu::Ending;

/// What `launcher run` (and `cargo xtask run --vmm launcher`) asks for.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The IGVM file.
    pub igvm: PathBuf,
    /// Which platform of it to load.
    pub platform: Platform,
    /// Guest memory in bytes.
    pub memory: u64,
    /// vCPU count (1).
    pub cpus: u32,
    /// Watchdog timeout.
    pub timeout: Duration,
    /// SNP LAUNCH_FINISH host data.
    pub host_data: [u8; 32],
    /// SNP planes (multi-VMPL) use.
    pub planes: PlanesMode,
}

/// Loads and runs `options.igvm`; the guest's serial output goes to
/// `console`. The returned [`Ending`] says how the guest stopped and gives
/// the process exit status.
pub fn run(options: &RunOptions, console: &mut dyn Write) -> Result<Ending> {
    let bytes = std::fs::read(&options.igvm)
        .with_context(|| format!("reading the IGVM file {}", options.igvm.display()))?;
    let ending = match options.platform {
        Platform::Native => native::boot(
            &bytes,
            &native::NativeOptions {
                memory: options.memory,
                cpus: options.cpus,
                timeout: options.timeout,
            },
            console,
        )?,
        Platform::Snp => snp::boot(
            &bytes,
            &snp::SnpOptions {
                memory: options.memory,
                cpus: options.cpus,
                timeout: options.timeout,
                host_data: options.host_data,
                planes: options.planes,
            },
            console,
        )?,
    };
    Ok(ending)
}
