//! The dev platform: a CPU with AMD SVM and nested paging but no SNP (QEMU
//! TCG with an EPYC model, nested SVM on AMD hosts). The SVSM turns SVM on
//! and will run the guest under VMRUN, playing the part SNP hardware and the
//! hypervisor play on a real host.

use spin::Once;

use super::{Platform, PlatformKind, halt_forever};
use crate::cpu::io::{DirectIo, IoPort};
use crate::cpu::registers::{EFER_SVME, MSR_EFER, cpuid, rdmsr, wrmsr};
use crate::mm::FRAMES;

/// VM_CR: SVM configuration (bit 4: SVM disabled by firmware).
const MSR_VM_CR: u32 = 0xC001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
/// VM_HSAVE_PA: where VMRUN saves the host's state.
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;

/// What CPUID leaf 0x8000000A says about SVM.
#[derive(Clone, Copy, Debug)]
pub struct SvmCapabilities {
    /// SVM revision.
    pub revision: u32,
    /// Number of ASIDs.
    pub asids: u32,
    /// Feature bits (EDX): bit 0 nested paging, bit 3 NRIP save, ...
    pub features: u32,
}

impl SvmCapabilities {
    /// Whether the CPU stores the next RIP on #VMEXIT (QEMU TCG does not).
    pub fn has_nrip_save(&self) -> bool {
        self.features & (1 << 3) != 0
    }
}

/// The dev platform's state.
pub struct Dev {
    /// SVM capabilities of the CPU.
    pub capabilities: SvmCapabilities,
    /// Physical address of the host save area.
    pub host_save_area: u64,
}

static DEV: Once<Dev> = Once::new();
static DIRECT_IO: DirectIo = DirectIo;

impl Platform for Dev {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Dev
    }

    fn io(&self) -> &'static dyn IoPort {
        &DIRECT_IO
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpuid(leaf, subleaf)
    }

    fn exit(&self, code: u8) -> ! {
        DIRECT_IO.outb(abi::layout::DEBUG_EXIT_PORT, code);
        halt_forever()
    }
}

/// The dev platform's state, if this boot runs on it.
pub fn state() -> Option<&'static Dev> {
    DEV.get()
}

/// Turns SVM on: checks firmware did not disable it, sets EFER.SVME and
/// gives the CPU a host save area.
pub fn init() -> Result<&'static dyn Platform, &'static str> {
    // SAFETY: VM_CR exists on every CPU that reports SVM (checked by the
    // caller); reading it has no side effects.
    let vm_cr = unsafe { rdmsr(MSR_VM_CR) };
    if vm_cr & VM_CR_SVMDIS != 0 {
        return Err("SVM is disabled by firmware (VM_CR.SVMDIS)");
    }
    let host_save_area = FRAMES.lock().allocate().map_err(|_| "no frame for the host save area")?;
    // SAFETY: setting EFER.SVME only enables the SVM instructions; the host
    // save area is a frame owned by the kernel for ever.
    unsafe {
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME);
        wrmsr(MSR_VM_HSAVE_PA, host_save_area);
    }
    let [revision, asids, _, features] = cpuid(0x8000_000A, 0);
    let capabilities = SvmCapabilities { revision: revision & 0xFF, asids, features };
    Ok(DEV.call_once(|| Dev { capabilities, host_save_area }))
}
