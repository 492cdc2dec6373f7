//! The platform the SVSM runs on, behind one trait: everything above it
//! (protocols, vTPM, memory management) is the same code on all of them.
//!
//! - `snp`: AMD SEV-SNP. Primitives are PVALIDATE, RMPADJUST and the GHCB.
//! - `dev`: a CPU with AMD SVM and nested paging but no SNP (QEMU TCG with
//!   an EPYC model, nested SVM): the SVSM plays the hypervisor's and the
//!   hardware's part and runs the guest under VMRUN.
//! - `native`: neither; the SVSM boots, runs its own tests and reports.

#[cfg(target_os = "none")]
pub mod dev;
#[cfg(target_os = "none")]
pub mod native;
#[cfg(target_os = "none")]
pub mod snp;

#[cfg(target_os = "none")]
use core::sync::atomic::{AtomicU32, Ordering};

#[cfg(target_os = "none")]
use abi::boot::{KernelBootInfo, PlatformType};
#[cfg(target_os = "none")]
use abi::layout::{DEBUG_EXIT_PORT, EXIT_FAILURE, EXIT_SUCCESS};
use abi::snp_instr::{PvalidateError, RmpAdjustAttributes, RmpAdjustError, RmpPageSize};
use spin::Once;

#[cfg(target_os = "none")]
use crate::cpu::io::DirectIo;
use crate::cpu::io::IoPort;

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

    // Guest-facing methods: what the request loop and the protocols need to
    // run the guest and manage its memory. The defaults describe a platform
    // that runs no guest (native); dev and SNP override every one.

    /// Whether this platform runs a guest (dev and SNP do, native does not).
    fn runs_guests(&self) -> bool {
        false
    }

    /// PVALIDATE: validates (`validate`) or rescinds the guest page of
    /// `size` at guest-physical address `gpa` (no C-bit; 2 MiB aligned for
    /// 2 MiB). The platform picks the virtual address (the direct map on
    /// SNP). `Err(Unchanged)` is the instruction's CF = 1: the page already
    /// was in that state.
    fn pvalidate(
        &self,
        _gpa: u64,
        _size: RmpPageSize,
        _validate: bool,
    ) -> Result<(), PvalidateError> {
        Err(PvalidateError::Input)
    }

    /// RMPADJUST: sets the permissions of `attributes.target_vmpl` (and the
    /// VMSA bit) on the guest page of `size` at `gpa`, with the hardware's
    /// checks and failure codes.
    fn rmpadjust(
        &self,
        _gpa: u64,
        _size: RmpPageSize,
        _attributes: RmpAdjustAttributes,
    ) -> Result<(), RmpAdjustError> {
        Err(RmpAdjustError::Input)
    }

    /// Runs the guest vCPU `vcpu` on this CPU until it asks for the SVSM
    /// or stops. On return its VMSA (SVSM-owned memory at `vcpu.vmsa_pa`)
    /// holds the guest's state, as SNP hardware leaves it after an exit:
    /// the request loop reads the call from it and writes the result into
    /// it. The caller clears and sets EFER.SVME in the VMSA around its own
    /// work (the SNP "SVME lock"); a VMSA without SVME does not run.
    fn run_guest(&self, _vcpu: &GuestVcpu) -> GuestExit {
        GuestExit::Stopped(GuestStop::InvalidState)
    }

    /// Starts the SVSM on the CPU with APIC ID `apic_id`: the CPU enters
    /// `start.entry(start.index)` in 64-bit mode on the kernel's page
    /// tables, with RSP = `start.stack_top` and interrupts off. Returns
    /// once the CPU was told to start, not once it runs.
    fn start_cpu(&self, _apic_id: u32, _start: &CpuStart) -> Result<(), PlatformError> {
        Err(PlatformError("this platform does not start secondary CPUs"))
    }

    /// The platform's per-CPU setup on a secondary CPU, called from its
    /// entry after the generic per-CPU setup (GDT, IDT, per-CPU data).
    fn init_cpu(&self) -> Result<(), PlatformError> {
        Ok(())
    }
}

/// A guest vCPU as the platform runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestVcpu {
    /// Identifies this vCPU for the life of the SVSM: a VMSA page that is
    /// deleted and created again gets a new id, so platforms may cache
    /// per-vCPU state (registers kept in the CPU, host registration) by id.
    pub id: u64,
    /// Physical address of its VMSA page (SVSM-owned: the guest cannot
    /// reach it).
    pub vmsa_pa: u64,
    /// The APIC ID of the vCPU.
    pub apic_id: u32,
}

/// Why [`Platform::run_guest`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The guest asked to run VMPL0 (VMGEXIT with Run-VMPL 0, MSR or GHCB
    /// page protocol), or, on SNP, the host entered the SVSM: the request
    /// loop checks `GUEST_EXIT_CODE` and the calling area's CALL_PENDING to
    /// tell a call from a spurious entry.
    Request,
    /// The vCPU cannot go on; the platform will not run it again unless the
    /// SVSM is asked to (a new VMSA).
    Stopped(GuestStop),
}

/// Why a guest vCPU stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestStop {
    /// The guest asked to terminate (GHCB termination request).
    Terminated {
        /// Reason-code set.
        set: u8,
        /// Reason code within the set.
        code: u8,
    },
    /// The vCPU shut down (triple fault).
    Shutdown,
    /// The guest powered the VM off (ACPI soft-off): an orderly end.
    PoweredOff,
    /// The guest touched memory it may not (SVSM memory, a VMSA, deposited
    /// pages, pages it has no permission on).
    ForbiddenAccess {
        /// The guest-physical address.
        gpa: u64,
        /// The guest's RIP.
        rip: u64,
        /// What the guest tried.
        access: MemoryAccess,
        /// Who owns the page, for the report (e.g. "svsm").
        owner: &'static str,
    },
    /// The vCPU parked itself (AP reset hold) and this platform has nothing
    /// that would wake it: it is not running and can be deleted.
    Parked,
    /// The VMSA cannot run: EFER.SVME clear or a state VMRUN refuses.
    InvalidState,
    /// An exit the platform does not handle.
    Unhandled {
        /// The SVM exit code.
        exit_code: u64,
        /// EXITINFO1.
        info1: u64,
        /// EXITINFO2.
        info2: u64,
        /// The guest's RIP.
        rip: u64,
    },
}

/// A guest memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryAccess {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

impl MemoryAccess {
    /// The word reports use.
    pub fn name(self) -> &'static str {
        match self {
            MemoryAccess::Read => "read",
            MemoryAccess::Write => "write",
            MemoryAccess::Fetch => "fetch",
        }
    }
}

/// How a secondary CPU enters the kernel.
#[derive(Clone, Copy, Debug)]
pub struct CpuStart {
    /// The CPU's index in the SVSM (0 is the boot CPU); passed to `entry`.
    pub index: u32,
    /// Top of the stack the CPU starts on (16-byte aligned).
    pub stack_top: u64,
    /// The 64-bit entry; it never returns.
    pub entry: extern "sysv64" fn(u32) -> !,
}

/// A platform operation that failed, with the reason for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformError(pub &'static str);

static PLATFORM: Once<&'static dyn Platform> = Once::new();
#[cfg(target_os = "none")]
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
#[cfg(target_os = "none")]
pub fn init(info: &KernelBootInfo) -> &'static dyn Platform {
    BOOT_PLATFORM.store(info.platform, Ordering::Relaxed);
    *PLATFORM.call_once(|| match PlatformType::from_u32(info.platform) {
        Some(PlatformType::Snp) => snp::init(info),
        _ if cpu_has_svm_with_npt() => match dev::init(info) {
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

#[cfg(target_os = "none")]
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
#[cfg(target_os = "none")]
pub fn exit_success() -> ! {
    exit_with(EXIT_SUCCESS)
}

/// Ends the VM reporting failure.
#[cfg(target_os = "none")]
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
