//! The platform the SVSM runs on, behind one trait: everything above it
//! (protocols, vTPM, memory management) is the same code on all of them.
//!
//! - `snp`: AMD SEV-SNP. Primitives are PVALIDATE, RMPADJUST and the GHCB.
//! - `dev`: a CPU with AMD SVM and nested paging but no SNP (QEMU TCG with
//!   an EPYC model, nested SVM): the SVSM plays the hypervisor's and the
//!   hardware's part and runs the guest under VMRUN.
//! - `native`: neither; the SVSM boots, runs its own tests and reports.

pub mod dev;
pub mod native;
pub mod snp;

use core::sync::atomic::{AtomicU32, Ordering};

use abi::boot::{KernelBootInfo, PlatformType};
use abi::layout::{DEBUG_EXIT_PORT, EXIT_FAILURE, EXIT_SUCCESS};
use spin::Once;

use crate::cpu::io::{DirectIo, IoPort};

/// Which platform the SVSM runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformKind {
    /// AMD SEV-SNP.
    Snp,
    /// AMD SVM with nested paging, no SNP: the SVSM hosts the guest itself.
    Dev,
    /// No SNP, no SVM.
    Native,
}

/// What the rest of the kernel needs from the platform.
pub trait Platform: Sync {
    /// Which platform this is.
    fn kind(&self) -> PlatformKind;
    /// Port I/O for the console and the exit device.
    fn io(&self) -> &'static dyn IoPort;
    /// CPUID as the platform answers it (SNP: from the measured CPUID page).
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Ends the VM with the given exit-device value.
    fn exit(&self, code: u8) -> !;
}

static PLATFORM: Once<&'static dyn Platform> = Once::new();
static BOOT_PLATFORM: AtomicU32 = AtomicU32::new(PlatformType::Native as u32);

/// Whether the CPU has AMD SVM with nested paging (what the dev platform
/// needs).
pub fn cpu_has_svm_with_npt() -> bool {
    let max_extended = crate::cpu::registers::cpuid(0x8000_0000, 0)[0];
    if max_extended < 0x8000_000A {
        return false;
    }
    let svm = crate::cpu::registers::cpuid(0x8000_0001, 0)[2] & (1 << 2) != 0;
    let npt = crate::cpu::registers::cpuid(0x8000_000A, 0)[3] & 1 != 0;
    svm && npt
}

/// Picks and initialises the platform for this boot.
pub fn init(info: &KernelBootInfo) -> &'static dyn Platform {
    BOOT_PLATFORM.store(info.platform, Ordering::Relaxed);
    *PLATFORM.call_once(|| match PlatformType::from_u32(info.platform) {
        Some(PlatformType::Snp) => snp::init(info),
        _ if cpu_has_svm_with_npt() => match dev::init() {
            Ok(platform) => platform,
            Err(reason) => {
                log::warn!("dev platform unavailable ({reason}); running as native");
                native::init()
            }
        },
        _ => native::init(),
    })
}

/// The platform, once [`init`] ran.
pub fn current() -> Option<&'static dyn Platform> {
    PLATFORM.get().copied()
}

fn exit_with(code: u8) -> ! {
    if let Some(platform) = current() {
        platform.exit(code);
    }
    // Before the platform exists: SNP cannot do port I/O yet, so it asks
    // the hypervisor to terminate; elsewhere the exit port works.
    if BOOT_PLATFORM.load(Ordering::Relaxed) == PlatformType::Snp as u32 {
        snp::terminate(code)
    }
    DirectIo.outb(DEBUG_EXIT_PORT, code);
    halt_forever()
}

/// Ends the VM reporting success.
pub fn exit_success() -> ! {
    exit_with(EXIT_SUCCESS)
}

/// Ends the VM reporting failure.
pub fn exit_failure() -> ! {
    exit_with(EXIT_FAILURE)
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts disabled only stops this CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
