//! The dev platform: a CPU with AMD SVM and nested paging but no SNP (QEMU
//! TCG with an EPYC model, nested SVM on AMD hosts). The SVSM plays the
//! part SNP hardware and the hypervisor play on a real host: it runs the
//! guest under VMRUN from the guest's VMSA page and stores the state back
//! on every return, keeps an emulated RMP behind PVALIDATE and RMPADJUST,
//! and keeps the guest out of its memory with nested page tables.
//!
//! Each CPU runs with GIF = 0 outside the guest (VMRUN sets it for the
//! guest, #VMEXIT clears it): no interrupt, NMI or INIT reaches the SVSM,
//! which owns no device once the guest runs; they are the guest's.
//!
//! Intercepts: VMMCALL (VMGEXIT is `rep vmmcall`), the GHCB MSR and
//! SEV_STATUS, writes of the SVM MSRs, nested page faults, shutdown, INIT,
//! and the SVM instructions (answered with #UD). TCG reports no next RIP,
//! so intercepted instructions are decoded from guest memory.
//!
//! One benchmark hook, this platform only: a plain VMMCALL with RAX =
//! [`DEV_NULL_EXIT_RAX`] (the null exit) is answered in the exit handler by
//! moving RIP past it and re-entering the guest: one exit, its decode and
//! one VMRUN, no GHCB state, no request loop, no guest memory beyond the
//! instruction fetch every intercept does. `cargo xtask bench call` times
//! it as the bare exit-and-return an SVSM call is compared with. It changes
//! no state but RIP (and the interrupt shadow, as every emulated
//! instruction), so it gives a guest nothing it could not do with any other
//! intercepted instruction; any other plain VMMCALL still gets #UD.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use abi::boot::{KernelBootInfo, MemoryRange};
use abi::ghcb::{IoDirection, IoioInfo, MSR_GHCB};
use abi::layout::{FIRMWARE_MAX_SIZE, FIRMWARE_STAGING_BASE, LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::sev_status::MSR_SEV_STATUS;
use abi::snp_instr::{
    PvalidateError, RmpAdjustAttributes, RmpAdjustError, RmpPageSize, VmplPermissions,
};
use abi::vmcb::{
    DEV_NULL_EXIT_RAX, GuestGprs, NP_ENABLE, TLB_FLUSH_ALL, Vmcb, event, exit, misc1, misc2, npf,
};
use abi::vmsa::{EFER_SVME, EXIT_CODE_VMGEXIT, Vmsa, vintr};
use spin::{Mutex, Once};
use zerocopy::FromZeros;

use super::{
    CpuStart, GuestExit, GuestStop, GuestVcpu, MemoryAccess, Platform, PlatformError, PlatformKind,
    halt_forever,
};
use crate::cpu::io::{DirectIo, IoPort};
use crate::cpu::registers::{EFER_SVME as HOST_EFER_SVME, MSR_EFER, cpuid, rdmsr, wrmsr};
use crate::crb::device::{CRB_BASE, CRB_SIZE};
use crate::guest_mem::{self, GuestLayout, GuestMemory};
use crate::mm::paging::{phys_to_virt, virt_to_phys};
use crate::mm::{FRAMES, with_kernel_tables};
use crate::svm::acpi_power;
use crate::svm::decode::{self, AccessKind, GuestPaging, GuestPhysRead, Intercepted, PageAccess};
use crate::svm::fpu::{XSTATE_MANAGED, XsaveArea};
use crate::svm::fw_cfg::{self, FwCfgDevice, FwCfgFilter};
use crate::svm::ghcb::{GhcbState, VmgexitAction};
use crate::svm::npt::{Access, NestedTables};
use crate::svm::rmp::{LockedVmplMemory, PageState, Rmp, VmplMemory};
use crate::svm::vmrun;

/// VM_CR: SVM configuration (bit 4: SVM disabled by firmware).
const MSR_VM_CR: u32 = 0xC001_0114;
const VM_CR_SVMDIS: u64 = 1 << 4;
/// VM_HSAVE_PA: where VMRUN saves the host's state.
pub const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
/// The VMPL the dev platform runs guests at.
pub const GUEST_VMPL: u8 = 2;
/// The guest-physical space the nested tables cover.
const GUEST_PHYSICAL_LIMIT: u64 = 1 << 39;
/// Most CPUs the dev platform keeps state for.
const MAX_CPUS: usize = 64;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_LMA: u64 = 1 << 10;
const CS_LONG: u16 = 1 << 9;
const CS_DEFAULT_BIG: u16 = 1 << 10;
const RFLAGS_DF: u64 = 1 << 10;
/// IOIO EXITINFO1 address-size bits: 16, 32, 64-bit.
const IOIO_ADDRESS_16: u64 = 1 << 7;
const IOIO_ADDRESS_32: u64 = 1 << 8;
const IOIO_ADDRESS_64: u64 = 1 << 9;
const IOIO_ADDRESS_SIZE_MASK: u64 = IOIO_ADDRESS_16 | IOIO_ADDRESS_32 | IOIO_ADDRESS_64;

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

/// The guest firmware's window below 4 GiB and where its image is staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FirmwareWindow {
    /// First guest-physical address of the window (its end is 4 GiB).
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    /// Where the image lies in memory (SVSM region).
    pub staging: u64,
}

impl FirmwareWindow {
    fn contains(&self, gpa: u64, len: u64) -> bool {
        MemoryRange { base: self.base, size: self.size }
            .contains_range(&MemoryRange { base: gpa, size: len })
    }
}

/// The guest's memory state: the emulated RMP and the nested tables that
/// follow it, changed together.
struct GuestMemoryState {
    rmp: Rmp,
    npt: NestedTables,
}

/// The dev platform's state.
pub struct Dev {
    /// SVM capabilities of the CPU.
    pub capabilities: SvmCapabilities,
    /// The guest firmware's window, if the boot image has firmware.
    pub firmware: Option<FirmwareWindow>,
    memory: Mutex<GuestMemoryState>,
    /// Bumped whenever the nested tables lose rights: each CPU flushes
    /// its guest TLB before it enters the guest with a newer value.
    npt_generation: AtomicU64,
    n_cr3: u64,
    msrpm_pa: u64,
    iopm_pa: u64,
    /// XCR0 bits the CPU supports (0 without XSAVE).
    supported_xcr0: u64,
    mxcsr_mask: u32,
    /// The guest's view of fw_cfg, if the VM has the device.
    fw_cfg: Option<Mutex<FwCfgFilter>>,
    /// The SVSM frame fw_cfg DMA descriptors are handed to the device from.
    fw_cfg_bounce: u64,
}

/// One CPU's dev-platform state.
struct DevCpu {
    host_save_area: u64,
    vmcb: Box<Vmcb>,
    host_vmcb: Box<Vmcb>,
    gprs: GuestGprs,
    fpu: Box<XsaveArea>,
    /// The vCPU whose x87/SSE state and GHCB MSR this CPU holds.
    current: Option<u64>,
    ghcb: GhcbState,
    /// SEV_STATUS as the current vCPU reads it.
    sev_status: u64,
    npt_generation: u64,
}

static DEV: Once<Dev> = Once::new();
static DIRECT_IO: DirectIo = DirectIo;
static CPUS: [AtomicPtr<DevCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];

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

    fn runs_guests(&self) -> bool {
        true
    }

    fn pvalidate(&self, gpa: u64, size: RmpPageSize, validate: bool) -> Result<(), PvalidateError> {
        self.memory.lock().rmp.pvalidate(gpa, size, validate)
    }

    fn rmpadjust(
        &self,
        gpa: u64,
        size: RmpPageSize,
        attributes: RmpAdjustAttributes,
    ) -> Result<(), RmpAdjustError> {
        let mut memory = self.memory.lock();
        memory.rmp.rmpadjust(gpa, size, attributes)?;
        if attributes.target_vmpl == GUEST_VMPL {
            self.sync_npt(&mut memory, gpa, size.bytes());
        }
        Ok(())
    }

    fn start_cpu(&self, apic_id: u32, start: &CpuStart) -> Result<(), PlatformError> {
        crate::svm::ap::start(apic_id, start)
    }

    fn init_cpu(&self) -> Result<(), PlatformError> {
        let index = crate::cpu::percpu::current().index as usize;
        init_this_cpu(self, index).map_err(PlatformError)
    }

    fn run_guest(&self, vcpu: &GuestVcpu) -> GuestExit {
        let Some(cpu) = this_cpu() else {
            return GuestExit::Stopped(GuestStop::InvalidState);
        };
        // SAFETY: the trait's contract: the VMSA is SVSM-held and the
        // caller runs this vCPU on this CPU alone.
        let vmsa = unsafe { &mut *(phys_to_virt(vcpu.vmsa_pa) as *mut Vmsa) };
        if vmsa.efer & EFER_SVME == 0 || vmsa.vmpl != GUEST_VMPL {
            return GuestExit::Stopped(GuestStop::InvalidState);
        }
        if cpu.current != Some(vcpu.id) {
            cpu.ghcb = GhcbState::default();
            if !self.load_fpu(cpu, vmsa) {
                cpu.current = None;
                return GuestExit::Stopped(GuestStop::InvalidState);
            }
            cpu.current = Some(vcpu.id);
        }
        cpu.sev_status = 0b111 | (vmsa.sev_features << 2);
        cpu.vmcb.load_vmsa(vmsa);
        cpu.gprs = GuestGprs::from_vmsa(vmsa);
        vmsa.vintr_ctrl |= vintr::BUSY;
        let result = self.run(cpu);
        cpu.vmcb.store_vmsa(vmsa);
        cpu.gprs.store(vmsa);
        self.store_fpu(cpu, vmsa);
        vmsa.vintr_ctrl &= !vintr::BUSY;
        if result == GuestExit::Request {
            vmsa.guest_exit_code = EXIT_CODE_VMGEXIT;
        }
        result
    }
}

/// This CPU's state, if the dev platform set it up here.
fn this_cpu() -> Option<&'static mut DevCpu> {
    let index = crate::cpu::percpu::current().index as usize;
    let cpu = CPUS.get(index)?.load(Ordering::Acquire);
    // SAFETY: the pointer comes from a leaked Box made for this CPU index
    // by `init_this_cpu`; only this CPU uses it, and `run_guest` is not
    // reentrant (nothing interrupts the host: GIF = 0).
    unsafe { cpu.as_mut() }
}

/// A successful exit decision inside the run loop.
enum Next {
    /// Enter the guest again.
    Resume,
    /// Return to the SVSM.
    Leave(GuestExit),
}

impl Dev {
    /// Runs the loaded guest state until an exit the SVSM must see.
    fn run(&self, cpu: &mut DevCpu) -> GuestExit {
        loop {
            let generation = self.npt_generation.load(Ordering::Acquire);
            cpu.vmcb.control.tlb_control =
                if generation != cpu.npt_generation { TLB_FLUSH_ALL } else { 0 };
            cpu.npt_generation = generation;
            let vmcb_pa = virt_to_phys(&*cpu.vmcb as *const Vmcb as u64)
                .expect("VMCBs live in the direct-mapped heap");
            let host_pa = virt_to_phys(&*cpu.host_vmcb as *const Vmcb as u64)
                .expect("VMCBs live in the direct-mapped heap");
            // SAFETY: the VMCB was set up by `init_this_cpu` (intercepts,
            // nested tables without SVSM memory, ASID 1) and loaded from a
            // VMSA; SVM is on and GIF is 0 on this CPU.
            unsafe { vmrun::vmrun(vmcb_pa, &mut cpu.gprs, host_pa) };
            let exit_int_info = cpu.vmcb.control.exit_int_info;
            cpu.vmcb.control.event_inj =
                if exit_int_info & event::VALID != 0 { exit_int_info } else { 0 };
            match self.handle_exit(cpu) {
                Next::Resume => {}
                Next::Leave(result) => return result,
            }
        }
    }

    fn handle_exit(&self, cpu: &mut DevCpu) -> Next {
        let control = &cpu.vmcb.control;
        let (code, info1, info2) = (control.exit_code, control.exit_info1, control.exit_info2);
        match code {
            exit::VMMCALL => self.vmmcall(cpu),
            exit::MSR => self.msr(cpu, info1 == abi::ghcb::MSR_EXIT_WRITE),
            exit::NPF if crate::crb::contains(info2) => self.mmio(cpu, info2),
            exit::NPF => Next::Leave(GuestExit::Stopped(self.forbidden(cpu, info1, info2))),
            exit::IOIO => self.ioio(cpu),
            exit::SHUTDOWN => Next::Leave(GuestExit::Stopped(GuestStop::Shutdown)),
            exit::VMRUN
            | exit::VMLOAD
            | exit::VMSAVE
            | exit::STGI
            | exit::CLGI
            | exit::SKINIT
            | exit::INVLPGA => {
                inject(cpu, event::exception(6, None));
                Next::Resume
            }
            _ if code & 0xFFFF_FFFF == exit::INVALID => {
                Next::Leave(GuestExit::Stopped(GuestStop::InvalidState))
            }
            _ => Next::Leave(unhandled(cpu)),
        }
    }

    /// Decodes the intercepted instruction at the guest's RIP.
    fn decode(&self, cpu: &DevCpu) -> Option<(Intercepted, usize)> {
        let save = &cpu.vmcb.save;
        let paging = GuestPaging { cr0: save.cr0, cr3: save.cr3, cr4: save.cr4, efer: save.efer };
        let long_mode = save.efer & EFER_LMA != 0 && save.cs.attrib & CS_LONG != 0;
        let linear = if long_mode { save.rip } else { save.cs.base.wrapping_add(save.rip) };
        let mut bytes = [0u8; decode::MAX_INSTRUCTION_LENGTH];
        let reader = GuestCode { dev: self };
        let count = decode::fetch(&paging, linear, save.cpl == 3, &reader, &mut bytes).ok()?;
        decode::decode_intercepted(&bytes[..count], long_mode)
    }

    fn vmmcall(&self, cpu: &mut DevCpu) -> Next {
        let Some((Intercepted::Vmmcall { rep }, length)) = self.decode(cpu) else {
            return Next::Leave(unhandled(cpu));
        };
        if !rep {
            if cpu.vmcb.save.rax == DEV_NULL_EXIT_RAX {
                // The benchmark's null exit (module doc): return at once.
                advance(cpu, length);
            } else {
                // A plain VMMCALL: no hypervisor call on this platform.
                inject(cpu, event::exception(6, None));
            }
            return Next::Resume;
        }
        // The GHCB is read, then written back whole: under the guest-memory
        // lock and the guest VMPL's RMP permissions, so the write-back
        // cannot land on a page another CPU's CREATE_VCPU revoked and
        // checked after the read (the same ordering as fw_cfg DMA).
        let checked = guest_mem::guest();
        let action = {
            let state = self.memory.lock();
            let memory = VmplMemory::new(&checked, &state.rmp, GUEST_VMPL);
            cpu.ghcb.vmgexit(&memory, &|leaf| cpuid(leaf, 0))
        };
        let stop = match action {
            VmgexitAction::Resume => None,
            VmgexitAction::RunVmpl0 => Some(GuestExit::Request),
            VmgexitAction::Park => Some(GuestExit::Stopped(GuestStop::Parked)),
            VmgexitAction::Terminate(reason) => Some(GuestExit::Stopped(GuestStop::Terminated {
                set: reason.set,
                code: reason.code,
            })),
            VmgexitAction::Refused(what) => {
                log::warn!("guest VMGEXIT with {what} (GHCB MSR {:#x})", cpu.ghcb.msr);
                return Next::Leave(unhandled(cpu));
            }
        };
        advance(cpu, length);
        match stop {
            None => Next::Resume,
            Some(result) => Next::Leave(result),
        }
    }

    fn msr(&self, cpu: &mut DevCpu, write: bool) -> Next {
        let Some((Intercepted::Rdmsr | Intercepted::Wrmsr, length)) = self.decode(cpu) else {
            return Next::Leave(unhandled(cpu));
        };
        let msr = cpu.gprs.rcx as u32;
        let value = (cpu.gprs.rdx << 32) | (cpu.vmcb.save.rax & 0xFFFF_FFFF);
        let read = match (msr, write) {
            (MSR_GHCB, true) => {
                cpu.ghcb.msr = value;
                None
            }
            (MSR_GHCB, false) => Some(cpu.ghcb.msr),
            (MSR_SEV_STATUS, false) => Some(cpu.sev_status),
            // VM_HSAVE_PA belongs to the SVSM: the guest reads 0.
            (MSR_VM_HSAVE_PA, false) => Some(0),
            // SAFETY: VM_CR exists where SVM does; reading it has no
            // side effects.
            (MSR_VM_CR, false) => Some(unsafe { rdmsr(MSR_VM_CR) }),
            _ => {
                inject(cpu, event::exception(13, Some(0)));
                return Next::Resume;
            }
        };
        if let Some(value) = read {
            cpu.vmcb.save.rax = value & 0xFFFF_FFFF;
            cpu.gprs.rdx = value >> 32;
        }
        advance(cpu, length);
        Next::Resume
    }

    /// An access to an emulated device page (the CRB of the vTPM).
    fn mmio(&self, cpu: &mut DevCpu, gpa: u64) -> Next {
        let checked = guest_mem::guest();
        // MOVS elements in guest RAM are checked against the guest VMPL's
        // RMP permissions and copied under the guest-memory lock, one
        // element at a time, so none lands on a page another CPU's
        // CREATE_VCPU revoked and checked (as fw_cfg DMA and the GHCB). The
        // lock is not held across CRB register accesses (a vTPM command):
        // lock order CRB, then guest memory; nothing under the guest-memory
        // lock takes the CRB's.
        let ram = LockedVmplMemory::new(&checked, &self.memory, |state| &state.rmp, GUEST_VMPL);
        match crate::crb::handle_npf(&mut GuestCpuView { cpu }, &checked, &ram, gpa) {
            Ok(()) => {
                cpu.vmcb.control.interrupt_shadow = 0;
                Next::Resume
            }
            Err(error) => {
                log::warn!("guest access to the CRB at {gpa:#x} not emulated: {error:?}");
                Next::Leave(unhandled(cpu))
            }
        }
    }

    /// An intercepted port access: the ACPI PM1a control register or the
    /// fw_cfg ports.
    fn ioio(&self, cpu: &mut DevCpu) -> Next {
        if let Some(info) = ioio_info(cpu)
            && !info.string
            && acpi_power::PORTS.contains(&info.port)
        {
            return pm1a_control(cpu, &info);
        }
        let (Some(info), Some(filter)) = (ioio_info(cpu), self.fw_cfg.as_ref()) else {
            return Next::Leave(unhandled(cpu));
        };
        let next_rip = cpu.vmcb.control.exit_info2;
        let mut device = PortFwCfg { bounce: self.fw_cfg_bounce };
        let checked = guest_mem::guest();
        // The filter lock, then the guest-memory lock (nothing takes them
        // the other way round; nothing under them takes either again):
        // held until the access is done, so no RMPADJUST changes the
        // guest's permissions between the filter's checks of a DMA buffer
        // and the device's transfer into it (see `fw_cfg`). A transfer is
        // at most 4 GiB inside one guest RAM range (a u32 length, checked),
        // done by QEMU within the OUT: a revoke on another CPU waits for
        // it, bounded.
        let mut filter = filter.lock();
        let state = self.memory.lock();
        let memory = VmplMemory::new(&checked, &state.rmp, GUEST_VMPL);
        let value_mask = u64::MAX >> (64 - 8 * u32::from(info.size));
        if !info.string {
            match info.direction {
                IoDirection::In => {
                    let value = u64::from(filter.port_in(info.port, info.size, &mut device));
                    let rax = &mut cpu.vmcb.save.rax;
                    // A 32-bit IN clears RAX's upper half; smaller ones merge.
                    *rax = if info.size == 4 { value } else { (*rax & !value_mask) | value };
                }
                IoDirection::Out => {
                    let value = (cpu.vmcb.save.rax & value_mask) as u32;
                    filter.port_out(info.port, info.size, value, &mut device, &memory);
                }
            }
            cpu.vmcb.save.rip = next_rip;
            cpu.vmcb.control.interrupt_shadow = 0;
            return Next::Resume;
        }
        match string_io(cpu, &info, &mut filter, &mut device, &memory) {
            Ok(done) => {
                if done {
                    cpu.vmcb.save.rip = next_rip;
                    cpu.vmcb.control.interrupt_shadow = 0;
                }
                Next::Resume
            }
            Err(stop) => Next::Leave(GuestExit::Stopped(stop)),
        }
    }

    /// The report of a nested page fault: what the guest touched and whose
    /// it is.
    fn forbidden(&self, cpu: &DevCpu, info1: u64, gpa: u64) -> GuestStop {
        let access = if info1 & npf::FETCH != 0 {
            MemoryAccess::Fetch
        } else if info1 & npf::WRITE != 0 {
            MemoryAccess::Write
        } else {
            MemoryAccess::Read
        };
        GuestStop::ForbiddenAccess { gpa, rip: cpu.vmcb.save.rip, access, owner: self.owner(gpa) }
    }

    /// Who a guest-physical page belongs to, for reports.
    pub fn owner(&self, gpa: u64) -> &'static str {
        if guest_mem::layout().is_some_and(|layout| layout.is_svsm(gpa)) {
            return "svsm";
        }
        if let Some(owner) = guest_mem::OWNED.owner(gpa) {
            return owner.name();
        }
        match self.memory.lock().rmp.page(gpa) {
            Some(page) if page.permissions(GUEST_VMPL) == VmplPermissions::NONE => {
                "guest, without access (not granted or rescinded)"
            }
            Some(_) => "guest",
            None => "nobody (not memory)",
        }
    }

    /// Makes the nested tables of `[gpa, gpa + size)` follow the RMP.
    fn sync_npt(&self, memory: &mut GuestMemoryState, gpa: u64, size: u64) {
        let mut at = gpa;
        while at < gpa + size {
            let large = at.is_multiple_of(LARGE_PAGE_SIZE)
                && gpa + size - at >= LARGE_PAGE_SIZE
                && memory.rmp.is_large(at);
            let step = if large { LARGE_PAGE_SIZE } else { PAGE_SIZE };
            // The SVSM's region never enters the guest's tables, whatever
            // its RMP entries say.
            let svsm = guest_mem::layout().is_none_or(|layout| layout.is_svsm(at));
            let access = memory
                .rmp
                .page(at)
                .filter(|_| !svsm)
                .and_then(|page| Access::from_permissions(page.permissions(GUEST_VMPL)));
            let npt = memory.npt;
            let pa = self.host_address(at);
            let mapped = with_kernel_tables(|_, tables| npt.map(tables, at, pa, step, access));
            if let Err(error) = mapped {
                // Out of frames for a split: the page would keep rights the
                // RMP took away. Fail closed: end the VM.
                log::error!(
                    "nested tables: cannot map {at:#x} ({error:?}); ending the VM rather than \
                     leave the guest rights the RMP took away"
                );
                super::exit_failure();
            }
            at += step;
        }
        self.npt_generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The host-physical address behind guest-physical `gpa`.
    fn host_address(&self, gpa: u64) -> u64 {
        match self.firmware {
            Some(window) if window.contains(gpa, 1) => window.staging + (gpa - window.base),
            _ => gpa,
        }
    }

    fn load_fpu(&self, cpu: &mut DevCpu, vmsa: &Vmsa) -> bool {
        if self.supported_xcr0 == 0 {
            return true;
        }
        let xcr0 = vmsa.xcr0;
        if xcr0 & !self.supported_xcr0 != 0 {
            return false;
        }
        *cpu.fpu = XsaveArea::from_vmsa(vmsa, xcr0 & XSTATE_MANAGED, self.mxcsr_mask);
        // SAFETY: CR4.OSXSAVE is set on every CPU the dev platform runs
        // on; the SVSM uses no x87/SSE state; faults are recovered.
        unsafe { vmrun::xsetbv(xcr0) && vmrun::xrstor(&cpu.fpu, xcr0 & XSTATE_MANAGED) }
    }

    fn store_fpu(&self, cpu: &mut DevCpu, vmsa: &mut Vmsa) {
        if self.supported_xcr0 == 0 {
            return;
        }
        let xcr0 = vmrun::xgetbv();
        // SAFETY: CR4.OSXSAVE is set; the components are a subset of the
        // current XCR0; the area is 64-byte aligned and large enough.
        unsafe { vmrun::xsave(&mut cpu.fpu, xcr0 & XSTATE_MANAGED) };
        cpu.fpu.store(vmsa);
        vmsa.xcr0 = xcr0;
    }
}

fn inject(cpu: &mut DevCpu, event: u64) {
    cpu.vmcb.control.event_inj = event;
}

fn advance(cpu: &mut DevCpu, length: usize) {
    cpu.vmcb.save.rip = cpu.vmcb.save.rip.wrapping_add(length as u64);
    cpu.vmcb.control.interrupt_shadow = 0;
}

/// An access to the ACPI PM1a control register: a soft-off stops the guest
/// (the SVSM ends the VM), anything else goes to the device.
fn pm1a_control(cpu: &mut DevCpu, info: &IoioInfo) -> Next {
    let value_mask = u64::MAX >> (64 - 8 * u32::from(info.size));
    match info.direction {
        IoDirection::Out => {
            let value = (cpu.vmcb.save.rax & value_mask) as u32;
            if acpi_power::is_soft_off(info.port, info.size, value) {
                return Next::Leave(GuestExit::Stopped(GuestStop::PoweredOff));
            }
            port_out(info.port, info.size, value);
        }
        IoDirection::In => {
            let value = u64::from(port_in(info.port, info.size));
            let rax = &mut cpu.vmcb.save.rax;
            *rax = if info.size == 4 { value } else { (*rax & !value_mask) | value };
        }
    }
    cpu.vmcb.save.rip = cpu.vmcb.control.exit_info2;
    cpu.vmcb.control.interrupt_shadow = 0;
    Next::Resume
}

fn unhandled(cpu: &DevCpu) -> GuestExit {
    let control = &cpu.vmcb.control;
    GuestExit::Stopped(GuestStop::Unhandled {
        exit_code: control.exit_code,
        info1: control.exit_info1,
        info2: control.exit_info2,
        rip: cpu.vmcb.save.rip,
    })
}

/// The IOIO exit information. QEMU leaves its address-size field clear;
/// the guest's code size is the address size then.
fn ioio_info(cpu: &DevCpu) -> Option<IoioInfo> {
    let mut info = cpu.vmcb.control.exit_info1;
    if info & IOIO_ADDRESS_SIZE_MASK == 0 {
        let save = &cpu.vmcb.save;
        info |= if save.efer & EFER_LMA != 0 && save.cs.attrib & CS_LONG != 0 {
            IOIO_ADDRESS_64
        } else if save.cs.attrib & CS_DEFAULT_BIG != 0 {
            IOIO_ADDRESS_32
        } else {
            IOIO_ADDRESS_16
        };
    }
    IoioInfo::decode(info)
}

/// Elements a REP INS/OUTS moves per exit; the guest re-executes the
/// instruction for the rest, as after an interrupt.
const STRING_ELEMENTS_PER_EXIT: u64 = 4096;

/// Emulates INS/OUTS on the fw_cfg ports; returns whether the instruction
/// is complete (else the guest re-executes it with the updated registers).
fn string_io(
    cpu: &mut DevCpu,
    info: &IoioInfo,
    filter: &mut FwCfgFilter,
    device: &mut PortFwCfg,
    memory: &VmplMemory<'_>,
) -> Result<bool, GuestStop> {
    let save = &cpu.vmcb.save;
    let paging = GuestPaging { cr0: save.cr0, cr3: save.cr3, cr4: save.cr4, efer: save.efer };
    let user = save.cpl == 3;
    let long_mode = save.efer & EFER_LMA != 0 && save.cs.attrib & CS_LONG != 0;
    let address_mask = match info.address_size {
        16 => 0xFFFF,
        32 => 0xFFFF_FFFF,
        _ => u64::MAX,
    };
    let input = info.direction == IoDirection::In;
    // INS writes to ES:rDI, OUTS reads from (segment):rSI; in 64-bit mode
    // only FS and GS have a base.
    let segment = if input { 0 } else { info.segment };
    let base =
        if long_mode && !matches!(segment, 4 | 5) { 0 } else { segment_of(save, segment).base };
    let step = u64::from(info.size);
    let down = save.rflags & RFLAGS_DF != 0;
    let width = usize::from(info.size);
    let mut count = if info.rep { cpu.gprs.rcx & address_mask } else { 1 };
    let mut index = if input { cpu.gprs.rdi } else { cpu.gprs.rsi };
    let mut moved = 0;
    while count > 0 && moved < STRING_ELEMENTS_PER_EXIT {
        let linear = base.wrapping_add(index & address_mask);
        if input {
            let mut value = filter.port_in(info.port, info.size, device).to_le_bytes();
            copy_linear(memory, &paging, user, linear, &mut value[..width], true)
                .ok_or_else(|| string_stop(cpu))?;
        } else {
            let mut value = [0u8; 4];
            copy_linear(memory, &paging, user, linear, &mut value[..width], false)
                .ok_or_else(|| string_stop(cpu))?;
            filter.port_out(info.port, info.size, u32::from_le_bytes(value), device, memory);
        }
        index = if down { index.wrapping_sub(step) } else { index.wrapping_add(step) };
        count -= 1;
        moved += 1;
    }
    let update = |register: &mut u64, value: u64| {
        *register = (*register & !address_mask) | (value & address_mask);
    };
    if input {
        update(&mut cpu.gprs.rdi, index);
    } else {
        update(&mut cpu.gprs.rsi, index);
    }
    if info.rep {
        update(&mut cpu.gprs.rcx, count);
    }
    Ok(count == 0)
}

/// Copies between `bytes` and guest linear address `linear` (`to_guest`:
/// into guest memory), byte by byte through the guest's page tables (with
/// their permission checks for the guest's CPL) and the checked guest
/// memory.
fn copy_linear(
    memory: &dyn GuestMemory,
    paging: &GuestPaging,
    user: bool,
    linear: u64,
    bytes: &mut [u8],
    to_guest: bool,
) -> Option<()> {
    let kind = if to_guest { AccessKind::Write } else { AccessKind::Read };
    let access = PageAccess { kind, user };
    for (i, byte) in bytes.iter_mut().enumerate() {
        let gpa =
            paging.translate_for(linear.wrapping_add(i as u64), access, &GuestCodeRam).ok()?;
        let done = if to_guest {
            memory.write(gpa, core::slice::from_ref(byte))
        } else {
            memory.read(gpa, core::slice::from_mut(byte))
        };
        done.ok()?;
    }
    Some(())
}

/// A string I/O the platform cannot complete (a buffer the guest's tables
/// do not map, or memory it may not touch): the vCPU stops.
fn string_stop(cpu: &DevCpu) -> GuestStop {
    match unhandled(cpu) {
        GuestExit::Stopped(stop) => stop,
        GuestExit::Request => GuestStop::InvalidState,
    }
}

/// The segment register an IOIO exit names (0 = ES ... 5 = GS).
fn segment_of(save: &abi::vmcb::VmcbSave, number: u8) -> &abi::vmsa::Segment {
    match number {
        0 => &save.es,
        1 => &save.cs,
        2 => &save.ss,
        4 => &save.fs,
        5 => &save.gs,
        _ => &save.ds,
    }
}

/// Guest page tables as the string I/O walk reads them: RAM only.
struct GuestCodeRam;

impl GuestPhysRead for GuestCodeRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        guest_mem::guest().read(gpa, buf).ok()
    }
}

/// QEMU's fw_cfg device, through its ports; DMA descriptors are handed to it
/// from an SVSM frame, and it moves the data straight to or from the guest's
/// buffer (the filter checked it; the caller holds the guest-memory lock).
struct PortFwCfg {
    bounce: u64,
}

impl FwCfgDevice for PortFwCfg {
    fn select(&mut self, key: u16) {
        DIRECT_IO.outw(fw_cfg::SELECTOR_PORT, key);
    }

    fn read_data(&mut self) -> u8 {
        DIRECT_IO.inb(fw_cfg::DATA_PORT)
    }

    fn dma(&mut self, control: u32, length: u32, address: u64) -> u32 {
        let descriptor = phys_to_virt(self.bounce) as *mut [u8; 16];
        let mut raw = [0u8; 16];
        raw[0..4].copy_from_slice(&control.to_be_bytes());
        raw[4..8].copy_from_slice(&length.to_be_bytes());
        raw[8..16].copy_from_slice(&address.to_be_bytes());
        // SAFETY: the bounce frame belongs to the fw_cfg filter alone (used
        // under its lock); the device reads and writes it during the OUT.
        unsafe { core::ptr::write_volatile(descriptor, raw) };
        DIRECT_IO.outl(fw_cfg::DMA_HIGH_PORT, ((self.bounce >> 32) as u32).to_be());
        DIRECT_IO.outl(fw_cfg::DMA_LOW_PORT, (self.bounce as u32).to_be());
        // SAFETY: as above; the transfer completed within the OUT.
        let done = unsafe { core::ptr::read_volatile(descriptor) };
        u32::from_be_bytes(done[0..4].try_into().expect("4 bytes"))
    }

    fn port_in(&mut self, port: u16, size: u8) -> u32 {
        port_in(port, size)
    }

    fn port_out(&mut self, port: u16, size: u8, value: u32) {
        port_out(port, size, value)
    }
}

/// A guest's IN passed to the device.
fn port_in(port: u16, size: u8) -> u32 {
    match size {
        1 => u32::from(DIRECT_IO.inb(port)),
        2 => u32::from(DIRECT_IO.inw(port)),
        _ => DIRECT_IO.inl(port),
    }
}

/// A guest's OUT passed to the device.
fn port_out(port: u16, size: u8, value: u32) {
    match size {
        1 => DIRECT_IO.outb(port, value as u8),
        2 => DIRECT_IO.outw(port, value as u16),
        _ => DIRECT_IO.outl(port, value),
    }
}

/// The stopped vCPU as the MMIO emulator sees it.
struct GuestCpuView<'a> {
    cpu: &'a mut DevCpu,
}

impl GuestCpuView<'_> {
    fn gpr(&mut self, number: u8) -> Option<&mut u64> {
        let (g, save) = (&mut self.cpu.gprs, &mut self.cpu.vmcb.save);
        Some(match number {
            0 => &mut save.rax,
            1 => &mut g.rcx,
            2 => &mut g.rdx,
            3 => &mut g.rbx,
            4 => &mut save.rsp,
            5 => &mut g.rbp,
            6 => &mut g.rsi,
            7 => &mut g.rdi,
            8 => &mut g.r8,
            9 => &mut g.r9,
            10 => &mut g.r10,
            11 => &mut g.r11,
            12 => &mut g.r12,
            13 => &mut g.r13,
            14 => &mut g.r14,
            15 => &mut g.r15,
            _ => return None,
        })
    }
}

impl crate::crb::mmio::GuestCpu for GuestCpuView<'_> {
    fn register(&self, number: u8) -> u64 {
        let (g, save) = (&self.cpu.gprs, &self.cpu.vmcb.save);
        match number {
            0 => save.rax,
            1 => g.rcx,
            2 => g.rdx,
            3 => g.rbx,
            4 => save.rsp,
            5 => g.rbp,
            6 => g.rsi,
            7 => g.rdi,
            8 => g.r8,
            9 => g.r9,
            10 => g.r10,
            11 => g.r11,
            12 => g.r12,
            13 => g.r13,
            14 => g.r14,
            15 => g.r15,
            _ => 0,
        }
    }

    fn set_register(&mut self, number: u8, value: u64) {
        if let Some(register) = self.gpr(number) {
            *register = value;
        }
    }

    fn rip(&self) -> u64 {
        self.cpu.vmcb.save.rip
    }

    fn set_rip(&mut self, rip: u64) {
        self.cpu.vmcb.save.rip = rip;
    }

    fn rflags(&self) -> u64 {
        self.cpu.vmcb.save.rflags
    }

    fn mode(&self) -> crate::crb::decode::CpuMode {
        use crate::crb::decode::CpuMode;
        let save = &self.cpu.vmcb.save;
        if save.efer & EFER_LMA != 0 && save.cs.attrib & CS_LONG != 0 {
            CpuMode::Long64
        } else if save.cr0 & 1 != 0 && save.cs.attrib & CS_DEFAULT_BIG != 0 {
            CpuMode::Protected32
        } else {
            CpuMode::Legacy16
        }
    }

    fn cpl(&self) -> u8 {
        self.cpu.vmcb.save.cpl
    }

    fn paging(&self) -> GuestPaging {
        let save = &self.cpu.vmcb.save;
        GuestPaging { cr0: save.cr0, cr3: save.cr3, cr4: save.cr4, efer: save.efer }
    }

    fn segment_base(&self, segment: crate::crb::decode::Segment) -> u64 {
        use crate::crb::decode::Segment;
        let save = &self.cpu.vmcb.save;
        match segment {
            Segment::Es => save.es.base,
            Segment::Cs => save.cs.base,
            Segment::Ss => save.ss.base,
            Segment::Ds => save.ds.base,
            Segment::Fs => save.fs.base,
            Segment::Gs => save.gs.base,
        }
    }
}

/// Guest memory as the instruction fetch sees it: RAM through the checked
/// accessor, and the firmware window (read from the staged image).
struct GuestCode<'a> {
    dev: &'a Dev,
}

impl GuestPhysRead for GuestCode<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        if let Some(window) = self.dev.firmware
            && window.contains(gpa, buf.len() as u64)
        {
            let pa = window.staging + (gpa - window.base);
            // SAFETY: the staged image lies in the direct-mapped SVSM
            // region and is only read.
            let src =
                unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, buf.len()) };
            buf.copy_from_slice(src);
            return Some(());
        }
        guest_mem::guest().read(gpa, buf).ok()
    }
}

/// The dev platform's state, if this boot runs on it.
pub fn state() -> Option<&'static Dev> {
    DEV.get()
}

impl Dev {
    /// This CPU's host save area (VM_HSAVE_PA), if SVM is set up here.
    pub fn host_save_area(&self) -> Option<u64> {
        this_cpu().map(|cpu| cpu.host_save_area)
    }
}

/// Allocates `pages` zeroed contiguous frames; returns their address.
fn zeroed_frames(pages: usize) -> Result<u64, &'static str> {
    let pa = FRAMES.lock().allocate_contiguous(pages, 1).map_err(|_| "out of frames")?;
    // SAFETY: fresh frames of the kernel region, direct mapped, used by
    // nothing else.
    unsafe { core::ptr::write_bytes(phys_to_virt(pa) as *mut u8, 0, pages * PAGE_SIZE as usize) };
    Ok(pa)
}

/// Sets the bit of `port` in the I/O permission map.
fn intercept_port(iopm_pa: u64, port: u16) {
    let byte = phys_to_virt(iopm_pa) + u64::from(port / 8);
    // SAFETY: the byte lies in the 12 KiB permission map, a kernel frame.
    unsafe { *(byte as *mut u8) |= 1 << (port % 8) };
}

/// The guest's fw_cfg view, hiding `svsm`, with the CRB device's ACPI
/// tables added; `None` if the VM has no usable fw_cfg.
fn fw_cfg_filter(svsm: &[MemoryRange]) -> Option<FwCfgFilter> {
    let mut device = PortFwCfg { bounce: 0 };
    // "QEMU" at key 0 says the device is there.
    device.select(0);
    let signature: [u8; 4] = core::array::from_fn(|_| device.read_data());
    if &signature != b"QEMU" {
        log::warn!("no fw_cfg device: the guest's memory map is not filtered");
        return None;
    }
    let mut filter = match FwCfgFilter::new(&mut device, svsm) {
        Ok(filter) => filter,
        Err(error) => {
            log::warn!("fw_cfg not filtered ({error:?}): the guest may see the SVSM's RAM");
            return None;
        }
    };
    let (tables, _) = crate::crb::acpi::tables_file();
    let added = filter
        .add_file(crate::crb::acpi::TABLES_FILE.as_bytes(), tables)
        .and_then(|()| {
            filter.add_file(
                crate::crb::acpi::POINTERS_FILE.as_bytes(),
                crate::crb::acpi::pointers_file(),
            )
        })
        .and_then(|()| {
            filter.append_file(b"etc/table-loader", &crate::crb::acpi::loader_commands())
        });
    if let Err(error) = added {
        log::warn!("the vTPM's ACPI tables are not offered to the guest ({error:?})");
    }
    Some(filter)
}

/// Sets the bits of `msr` (0 = read, 1 = write) in the MSR permission map.
fn intercept_msr(msrpm_pa: u64, msr: u32, read: bool, write: bool) {
    let (base, offset) = match msr {
        0..=0x1FFF => (0, msr),
        0xC000_0000..=0xC000_1FFF => (0x800, msr - 0xC000_0000),
        0xC001_0000..=0xC001_1FFF => (0x1000, msr - 0xC001_0000),
        _ => return,
    };
    let bit = offset * 2;
    let byte = phys_to_virt(msrpm_pa) + u64::from(base + bit / 8);
    let mask = (u8::from(read) | (u8::from(write) << 1)) << (bit % 8);
    // SAFETY: the byte lies in the 8 KiB permission map, a kernel frame.
    unsafe { *(byte as *mut u8) |= mask };
}

/// The guest's layout on this boot: its RAM from the memory map, minus the
/// SVSM's region (kernel region and firmware staging area).
fn guest_layout(info: &KernelBootInfo) -> GuestLayout {
    let staging = MemoryRange { base: FIRMWARE_STAGING_BASE, size: FIRMWARE_MAX_SIZE };
    GuestLayout::new(info.memory_ranges(), &[info.kernel_region, staging])
}

/// The bytes two ranges share, if any.
fn intersection(a: MemoryRange, b: MemoryRange) -> Option<MemoryRange> {
    let base = a.base.max(b.base);
    let end = a.end()?.min(b.end()?);
    (base < end).then_some(MemoryRange { base, size: end - base })
}

/// RAM ranges with the SVSM's ranges cut out.
fn carve(ram: &[MemoryRange], svsm: &[MemoryRange]) -> Vec<MemoryRange> {
    let mut pieces: Vec<MemoryRange> = ram.to_vec();
    for hole in svsm {
        let Some(hole_end) = hole.end() else { continue };
        pieces = pieces
            .into_iter()
            .flat_map(|r| {
                let end = r.end().unwrap_or(r.base);
                let below =
                    MemoryRange { base: r.base, size: hole.base.clamp(r.base, end) - r.base };
                let above_base = hole_end.clamp(r.base, end);
                let above = MemoryRange { base: above_base, size: end - above_base };
                [below, above]
            })
            .filter(|r| r.size > 0)
            .collect();
    }
    pieces
}

/// Turns SVM on for the boot CPU and builds the guest's memory state:
/// the RMP over guest RAM (not validated, VMPL1-3 full access: memory a
/// non-SNP guest owns outright) and over the firmware window (validated,
/// no lower-VMPL access, as launched), and the nested tables.
pub fn init(info: &KernelBootInfo) -> Result<&'static dyn Platform, &'static str> {
    // SAFETY: VM_CR exists on every CPU that reports SVM (checked by the
    // caller); reading it has no side effects.
    if unsafe { rdmsr(MSR_VM_CR) } & VM_CR_SVMDIS != 0 {
        return Err("SVM is disabled by firmware (VM_CR.SVMDIS)");
    }
    let [revision, asids, _, features] = cpuid(0x8000_000A, 0);
    let capabilities = SvmCapabilities { revision: revision & 0xFF, asids, features };
    let params = crate::boot::boot_params(info);
    let firmware =
        (params.firmware.base != 0 && params.firmware.size != 0).then(|| FirmwareWindow {
            base: params.firmware.base,
            size: params.firmware.size.next_multiple_of(PAGE_SIZE),
            staging: params.firmware.staging_base,
        });
    let layout = guest_mem::init_layout(guest_layout(info));

    // As after an SNP launch, the SVSM's own memory is validated and VMPL0
    // only; guest RAM is not validated but, unlike on SNP, fully accessible
    // to VMPL1-3: a guest that does not know SNP (stock OVMF) never asks
    // for validation.
    let guest_ram = PageState::new(false, VmplPermissions::ALL);
    let svsm_ram = PageState::new(true, VmplPermissions::NONE);
    let mut rmp_ranges: Vec<_> =
        carve(layout.ram(), layout.svsm()).into_iter().map(|r| (r, guest_ram)).collect();
    for hole in layout.svsm() {
        let inside_ram = layout.ram().iter().filter_map(|ram| intersection(*ram, *hole));
        rmp_ranges.extend(inside_ram.map(|r| (r, svsm_ram)));
    }
    rmp_ranges.sort_by_key(|(range, _)| range.base);
    if let Some(window) = firmware {
        let range = MemoryRange { base: window.base, size: window.size };
        rmp_ranges.push((range, PageState::new(true, VmplPermissions::NONE)));
    }
    let rmp = Rmp::new(&rmp_ranges);

    let gigabyte_pages = cpuid(0x8000_0001, 0)[3] & (1 << 26) != 0;
    let npt = with_kernel_tables(|_, tables| -> Result<NestedTables, &'static str> {
        let npt = NestedTables::new(tables, gigabyte_pages).map_err(|_| "out of frames")?;
        let map = |tables: &mut _, gpa, pa, size, access| {
            npt.map(tables, gpa, pa, size, access).map_err(|_| "cannot build the nested tables")
        };
        map(tables, 0, 0, GUEST_PHYSICAL_LIMIT, Some(Access::ALL))?;
        for hole in layout.svsm() {
            map(tables, hole.base, hole.base, hole.size, None)?;
        }
        if let Some(window) = firmware {
            map(tables, window.base, window.staging, window.size, None)?;
        }
        // The vTPM's CRB page is emulated: every access faults to the SVSM.
        map(tables, CRB_BASE, CRB_BASE, CRB_SIZE, None)?;
        Ok(npt)
    })?;

    let msrpm_pa = zeroed_frames(2)?;
    for msr in [MSR_GHCB, MSR_SEV_STATUS, MSR_VM_HSAVE_PA, MSR_VM_CR] {
        intercept_msr(msrpm_pa, msr, true, true);
    }
    let iopm_pa = zeroed_frames(3)?;
    let fw_cfg_bounce = zeroed_frames(1)?;
    for port in acpi_power::PORTS {
        intercept_port(iopm_pa, port);
    }
    let fw_cfg = fw_cfg_filter(layout.svsm()).map(|filter| {
        for port in fw_cfg::PORTS {
            intercept_port(iopm_pa, port);
        }
        Mutex::new(filter)
    });

    let xsave = cpuid(1, 0)[2] & (1 << 26) != 0;
    let supported_xcr0 = if xsave {
        let [low, _, _, high] = cpuid(0xD, 0);
        (u64::from(high) << 32 | u64::from(low)) & XSTATE_MANAGED
    } else {
        0
    };
    let dev = DEV.call_once(|| Dev {
        capabilities,
        firmware,
        memory: Mutex::new(GuestMemoryState { rmp, npt }),
        npt_generation: AtomicU64::new(1),
        n_cr3: npt.root(),
        msrpm_pa,
        iopm_pa,
        supported_xcr0,
        mxcsr_mask: 0xFFFF,
        fw_cfg,
        fw_cfg_bounce,
    });
    // The boot CPU is CPU 0; its per-CPU data does not exist yet.
    init_this_cpu(dev, 0)?;
    Ok(dev)
}

/// Turns SVM on for this CPU (index `index`) and makes its VMCB: EFER.SVME, a host save
/// area, the OS x87/SSE/XSAVE enables, GIF = 0.
fn init_this_cpu(dev: &Dev, index: usize) -> Result<(), &'static str> {
    let slot = CPUS.get(index).ok_or("more CPUs than the dev platform supports")?;
    let host_save_area = zeroed_frames(1)?;
    // SAFETY: EFER.SVME only enables the SVM instructions; the host save
    // area is a frame the kernel owns for ever; the CR4 bits only enable
    // FXSAVE/XSAVE for the guest's state; CLGI blocks interrupts, NMI and
    // INIT for the SVSM, which handles none of them.
    unsafe {
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | HOST_EFER_SVME);
        wrmsr(MSR_VM_HSAVE_PA, host_save_area);
        let mut cr4 = crate::cpu::registers::read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT;
        if dev.supported_xcr0 != 0 {
            cr4 |= CR4_OSXSAVE;
        }
        core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack));
        core::arch::asm!("clgi", options(nomem, nostack));
    }
    let mut vmcb = Box::new(Vmcb::new_zeroed());
    let control = &mut vmcb.control;
    control.intercept_misc1 =
        misc1::SHUTDOWN | misc1::MSR_PROT | misc1::IOIO_PROT | misc1::INIT | misc1::INVLPGA;
    control.intercept_misc2 = misc2::VMRUN
        | misc2::VMMCALL
        | misc2::VMLOAD
        | misc2::VMSAVE
        | misc2::STGI
        | misc2::CLGI
        | misc2::SKINIT;
    control.iopm_base_pa = dev.iopm_pa;
    control.msrpm_base_pa = dev.msrpm_pa;
    control.guest_asid = 1;
    control.np_control = NP_ENABLE;
    control.n_cr3 = dev.n_cr3;
    let cpu = Box::new(DevCpu {
        host_save_area,
        vmcb,
        host_vmcb: Box::new(Vmcb::new_zeroed()),
        gprs: GuestGprs::default(),
        fpu: Box::new(XsaveArea::new_zeroed()),
        current: None,
        ghcb: GhcbState::default(),
        sev_status: 0,
        npt_generation: 0,
    });
    slot.store(Box::leak(cpu), Ordering::Release);
    Ok(())
}
