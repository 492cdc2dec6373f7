//! The SEV-SNP platform: the SVSM at VMPL0 of an SNP guest.
//!
//! Start-up, in order (each failure ends the VM with a termination reason,
//! since there is no console until the GHCB works):
//! 1. SEV_STATUS is checked ([`sev::status`]);
//! 2. the measured CPUID page is copied and checked, and its C-bit must be
//!    the one stage2 used; CPUID is answered from it from now on, also for
//!    the CPUID instruction (#VC handler);
//! 3. the hypervisor's GHCB protocol version, C-bit and features are checked
//!    ([`sev::setup::negotiate`]) and the SVSM proves it runs at VMPL0;
//! 4. the secrets page is taken private ([`sev::secrets`]);
//! 5. a frame is made shared, mapped without the C-bit and registered as the
//!    GHCB; from then on the console and the exit device go through GHCB
//!    port I/O, so a host sees writes to COM1 and to port 0x501.
//!
//! Secondary CPUs start from a VMPL0 VMSA the SVSM writes ([`sev::ap`])
//! and each registers a GHCB of its own ([`Platform::init_cpu`]).
//!
//! The guest runs at VMPL2 through Run-VMPL, which needs a host whose KVM
//! runs several VMPLs (hypervisor feature bit 5, the "planes" work); without
//! it the SVSM still boots and runs its own tests.

use alloc::collections::BTreeSet;
use core::sync::atomic::{AtomicBool, Ordering};

use abi::boot::KernelBootInfo;
use abi::cpuid_page::CpuidPage;
use abi::ghcb::{ApCreateRequest, ApCreation, HvFeatures, TerminationReason};
use abi::layout::{DEBUG_EXIT_PORT, DIRECT_MAP_SIZE, EXIT_SUCCESS, LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::secrets::{GuestCopyError, SecretsPage, VMPCK_LEN};
use abi::snp_instr::{
    PvalidateError, PvalidateInput, RmpAdjustAttributes, RmpAdjustError, RmpAdjustInput,
    RmpPageSize, VmplPermissions,
};
use abi::vmsa::Vmsa;
use spin::{Mutex, Once};

use super::{
    CpuStart, GuestExit, GuestStop, GuestVcpu, Platform, PlatformError, PlatformKind, halt_forever,
};
use crate::cpu::idt::{self, TrapFrame};
use crate::cpu::io::IoPort;
use crate::cpu::percpu;
use crate::cpu::registers::{MSR_EFER, rdmsr, read_cr0, read_cr3, read_cr4};
use crate::mm::FRAMES;
use crate::mm::paging::phys_to_virt;
use crate::sev::ap::{self, ApState, TableRegister};
use crate::sev::cpuid::SnpCpuid;
use crate::sev::ghcb::{GhcbClient, GhcbError, GuestRequestError};
use crate::sev::guest::{self, GuestStart};
use crate::sev::hardware::{self, DirectMapPages, GhcbMsr, SharedGhcbPage};
use crate::sev::msr_protocol;
use crate::sev::secrets::SvsmSecrets;
use crate::sev::setup::{self, Negotiated};
use crate::sev::shared::{self, SharedPageError};
use crate::sev::status::{self, AcceptedStatus};
use crate::sev::vc::{self, VcError, VcRegisters, VcServices};

struct Snp;

static SNP: Snp = Snp;
static CPUID: Once<SnpCpuid> = Once::new();
static STATUS: Once<AcceptedStatus> = Once::new();
static HYPERVISOR: Once<Negotiated> = Once::new();
static SECRETS: Once<Mutex<SvsmSecrets>> = Once::new();
/// Most CPUs the SVSM runs on (each needs its own GHCB).
pub const MAX_CPUS: usize = 256;
/// Each CPU's GHCB, by CPU index: the GHCB MSR and the registration are per
/// vCPU.
static GHCBS: [Once<Mutex<GhcbClient<SharedGhcbPage>>>; MAX_CPUS] =
    [const { Once::new() }; MAX_CPUS];
/// Set once a secondary CPU was started: until then only the boot CPU runs,
/// possibly before its per-CPU data exists.
static SECONDARY_CPUS: AtomicBool = AtomicBool::new(false);
static GUEST_REQUEST_PAGES: Once<Mutex<GuestRequestPages>> = Once::new();
/// Guest vCPUs whose VMSA the hypervisor knows (by [`GuestVcpu::id`]).
static REGISTERED_VCPUS: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
static GHCB_IO: GhcbIo = GhcbIo;

/// This CPU's index.
fn cpu_index() -> usize {
    if SECONDARY_CPUS.load(Ordering::Acquire) { percpu::current().index as usize } else { 0 }
}

/// Runs `f` with this CPU's GHCB, unless it is not set up yet or in use on
/// this CPU (a fault while a GHCB call was being built): then `None`, never
/// a deadlock.
fn with_ghcb<R>(f: impl FnOnce(&mut GhcbClient<SharedGhcbPage>) -> R) -> Option<R> {
    let mut ghcb = GHCBS.get(cpu_index())?.get()?.try_lock()?;
    Some(f(&mut ghcb))
}

/// Port I/O through the GHCB. Failures of console output are dropped (a
/// hypervisor that refuses them only silences the SVSM); reads that fail
/// read as all ones, like a port nothing answers.
struct GhcbIo;

impl GhcbIo {
    fn write(&self, port: u16, size: u8, value: u32) {
        let _ = with_ghcb(|ghcb| ghcb.io_write(port, size, value));
    }

    fn read(&self, port: u16, size: u8) -> u32 {
        with_ghcb(|ghcb| ghcb.io_read(port, size)).and_then(Result::ok).unwrap_or(u32::MAX)
    }
}

impl IoPort for GhcbIo {
    fn outb(&self, port: u16, value: u8) {
        self.write(port, 1, value.into());
    }
    fn inb(&self, port: u16) -> u8 {
        self.read(port, 1) as u8
    }
    fn outw(&self, port: u16, value: u16) {
        self.write(port, 2, value.into());
    }
    fn inw(&self, port: u16) -> u16 {
        self.read(port, 2) as u16
    }
    fn outl(&self, port: u16, value: u32) {
        self.write(port, 4, value);
    }
    fn inl(&self, port: u16) -> u32 {
        self.read(port, 4)
    }
}

/// Port I/O before the GHCB exists: dropped (a direct `out` would raise #VC
/// with nothing to forward it).
struct NoIo;

static NO_IO: NoIo = NoIo;

impl IoPort for NoIo {
    fn outb(&self, _port: u16, _value: u8) {}
    fn inb(&self, _port: u16) -> u8 {
        0xFF
    }
    fn outw(&self, _port: u16, _value: u16) {}
    fn inw(&self, _port: u16) -> u16 {
        0xFFFF
    }
    fn outl(&self, _port: u16, _value: u32) {}
    fn inl(&self, _port: u16) -> u32 {
        0xFFFF_FFFF
    }
}

/// Checks a guest page operand and returns its direct-map address.
fn guest_page_va(gpa: u64, size: RmpPageSize) -> Option<u64> {
    let end = gpa.checked_add(size.bytes())?;
    (gpa.is_multiple_of(size.bytes()) && end <= DIRECT_MAP_SIZE).then(|| phys_to_virt(gpa))
}

impl Platform for Snp {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Snp
    }

    fn io(&self) -> &'static dyn IoPort {
        if GHCBS[0].get().is_some() { &GHCB_IO } else { &NO_IO }
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        CPUID.get().map_or([0; 4], |cpuid| cpuid.query(leaf, subleaf, read_cr4()))
    }

    fn exit(&self, code: u8) -> ! {
        // The exit device first: the launcher and QEMU end the VM with the
        // status it implies. If the write comes back, terminate.
        GHCB_IO.outb(DEBUG_EXIT_PORT, code);
        terminate(code)
    }

    fn runs_guests(&self) -> bool {
        HYPERVISOR.get().is_some_and(|hv| hv.features.has(HvFeatures::MULTI_VMPL))
    }

    fn pvalidate(&self, gpa: u64, size: RmpPageSize, validate: bool) -> Result<(), PvalidateError> {
        let va = guest_page_va(gpa, size).ok_or(PvalidateError::Input)?;
        // SAFETY: the caller (the core protocol) decided this guest page's
        // state; the direct map maps `gpa` at `va`, and a fault of the
        // instruction is caught.
        unsafe { hardware::pvalidate(PvalidateInput { va, size, validate }) }
    }

    fn rmpadjust(
        &self,
        gpa: u64,
        size: RmpPageSize,
        attributes: RmpAdjustAttributes,
    ) -> Result<(), RmpAdjustError> {
        let va = guest_page_va(gpa, size).ok_or(RmpAdjustError::Input)?;
        // SAFETY: as for `pvalidate`: the caller owns the decision to expose
        // the page; the hardware enforces that VMPL0 grants no more than it
        // has.
        unsafe { hardware::rmpadjust(RmpAdjustInput { va, size, attributes }) }
    }

    fn start_cpu(&self, apic_id: u32, start: &CpuStart) -> Result<(), PlatformError> {
        let status = STATUS.get().ok_or(PlatformError("the SNP platform is not started"))?;
        if start.index as usize >= MAX_CPUS {
            return Err(PlatformError("more CPUs than the SVSM has GHCB slots"));
        }
        // SAFETY: EFER exists; reading it has no side effects.
        let efer = unsafe { rdmsr(MSR_EFER) };
        let vmsa = ap::vmpl0_vmsa(&ApState {
            cr0: read_cr0(),
            cr3: read_cr3(),
            cr4: read_cr4(),
            efer,
            gdtr: descriptor_table(DescriptorTable::Gdt),
            idtr: descriptor_table(DescriptorTable::Idt),
            entry: start.entry as usize as u64,
            stack_top: start.stack_top,
            index: start.index,
            sev_features: status.status.features().0,
        });
        let vmsa_pa = allocate_vmsa_page(&vmsa)?;
        // From now on the other CPU may run: GHCB lookups need the per-CPU
        // index (this CPU's per-CPU data exists by now).
        SECONDARY_CPUS.store(true, Ordering::Release);
        let creation = ApCreation { request: ApCreateRequest::Create, vmpl: 0, apic_id };
        match with_ghcb(|ghcb| ghcb.create_ap(creation, vmsa_pa, status.status.features().0)) {
            Some(Ok(())) => Ok(()),
            failure => {
                log::error!("AP creation for APIC ID {apic_id} failed: {failure:?}");
                Err(PlatformError("the hypervisor refused to start the CPU"))
            }
        }
    }

    fn init_cpu(&self) -> Result<(), PlatformError> {
        setup_ghcb(percpu::current().index as usize)
    }

    fn run_guest(&self, vcpu: &GuestVcpu) -> GuestExit {
        let Some(va) = guest_page_va(vcpu.vmsa_pa, RmpPageSize::Size4K) else {
            return GuestExit::Stopped(GuestStop::InvalidState);
        };
        let vmsa = va as *const Vmsa;
        // SAFETY: the VMSA is an SVSM-owned page in the direct map; the
        // vCPU it describes does not run while this CPU runs the SVSM.
        let (vmpl, sev_features) = unsafe {
            (
                core::ptr::addr_of!((*vmsa).vmpl).read_volatile(),
                core::ptr::addr_of!((*vmsa).sev_features).read_volatile(),
            )
        };
        let mut registered = REGISTERED_VCPUS.lock();
        if !registered.contains(&vcpu.id) {
            // Tell the hypervisor about the VMSA of this vCPU at `vmpl`: the
            // AP-creation event's "create on INIT" form with the VMPL field,
            // as COCONUT-SVSM registers its guest VMSAs.
            let creation =
                ApCreation { request: ApCreateRequest::CreateOnInit, vmpl, apic_id: vcpu.apic_id };
            match with_ghcb(|ghcb| ghcb.create_ap(creation, vcpu.vmsa_pa, sev_features)) {
                Some(Ok(())) => {
                    registered.insert(vcpu.id);
                }
                failure => {
                    log::error!("the hypervisor refused the guest VMSA: {failure:?}");
                    return GuestExit::Stopped(GuestStop::InvalidState);
                }
            }
        }
        drop(registered);
        match msr_protocol::run_vmpl(&mut GhcbMsr, vmpl) {
            Ok(()) => GuestExit::Request,
            Err(error) => {
                log::error!("Run-VMPL {vmpl} failed: {error:?}");
                GuestExit::Stopped(GuestStop::InvalidState)
            }
        }
    }
}

enum DescriptorTable {
    Gdt,
    Idt,
}

/// This CPU's GDTR or IDTR.
fn descriptor_table(table: DescriptorTable) -> TableRegister {
    let mut pointer = [0u8; 10];
    // SAFETY: SGDT/SIDT store 10 bytes (limit, base) into the buffer and
    // change nothing else.
    unsafe {
        match table {
            DescriptorTable::Gdt => {
                core::arch::asm!("sgdt [{}]", in(reg) pointer.as_mut_ptr(), options(nostack))
            }
            DescriptorTable::Idt => {
                core::arch::asm!("sidt [{}]", in(reg) pointer.as_mut_ptr(), options(nostack))
            }
        }
    }
    TableRegister {
        limit: u16::from_le_bytes([pointer[0], pointer[1]]),
        base: u64::from_le_bytes(pointer[2..10].try_into().expect("8 bytes")),
    }
}

/// Puts `vmsa` into a frame of its own and makes it a VMSA page. The frame
/// is not 2 MiB aligned (a VMSA there hits a hardware erratum; Linux and
/// COCONUT-SVSM avoid it the same way): of two consecutive frames, the
/// aligned one, if any, is given back.
fn allocate_vmsa_page(vmsa: &Vmsa) -> Result<u64, PlatformError> {
    let mut frames = FRAMES.lock();
    let pair = frames.allocate_contiguous(2, 1).map_err(|_| PlatformError("out of memory"))?;
    let (pa, spare) = if pair.is_multiple_of(LARGE_PAGE_SIZE) {
        (pair + PAGE_SIZE, pair)
    } else {
        (pair, pair + PAGE_SIZE)
    };
    let _ = frames.free(spare);
    drop(frames);
    let va = phys_to_virt(pa);
    // SAFETY: the frame was just allocated, is mapped private in the direct
    // map and used by nothing else.
    unsafe { core::ptr::write(va as *mut Vmsa, *vmsa) };
    let attributes =
        RmpAdjustAttributes { target_vmpl: 1, permissions: VmplPermissions::NONE, vmsa: true };
    // SAFETY: the page holds the VMSA just written; marking it a VMSA (as
    // Linux does for its VMPL0 APs: target VMPL1, no permissions) exposes
    // nothing to a lower VMPL.
    unsafe { hardware::rmpadjust(RmpAdjustInput { va, size: RmpPageSize::Size4K, attributes }) }
        .map_err(|_| PlatformError("RMPADJUST refused to make the VMSA page"))?;
    Ok(pa)
}

/// Termination reason for an exit-device value.
fn exit_reason(code: u8) -> TerminationReason {
    if code == EXIT_SUCCESS {
        TerminationReason::SVSM_EXIT_SUCCESS
    } else {
        TerminationReason::SVSM_EXIT_FAILURE
    }
}

/// Asks the hypervisor to end the VM (GHCB MSR protocol 0x100) with the
/// reason that matches the exit-device value `code`.
pub fn terminate(code: u8) -> ! {
    terminate_with(exit_reason(code))
}

/// Asks the hypervisor to end the VM with `reason`; halts if it does not.
pub fn terminate_with(reason: TerminationReason) -> ! {
    msr_protocol::request_termination(&mut GhcbMsr, reason);
    halt_forever()
}

/// A private copy of the measured CPUID page.
fn read_cpuid_page(gpa: u64) -> CpuidPage {
    // SAFETY: the CPUID page is a measured page of the boot image at a GPA
    // from the measured boot parameters; it lies in RAM (direct mapped) and
    // nothing writes to it before the kernel releases the boot area, which
    // happens after this copy.
    unsafe { core::ptr::read_unaligned(phys_to_virt(gpa) as *const CpuidPage) }
}

/// Whether this code runs at VMPL0, probed on a frame of its own.
fn check_vmpl0() -> bool {
    let Ok(frame) = FRAMES.lock().allocate() else { return false };
    let va = phys_to_virt(frame);
    let large = va & !(LARGE_PAGE_SIZE - 1);
    let at_vmpl0 = setup::runs_at_vmpl0(
        // SAFETY: setting VMPL1's permissions to none on the SVSM's own
        // frame exposes nothing (VMPL1 has no access to SVSM memory).
        |input| unsafe { hardware::rmpadjust(input) },
        va,
        large,
    );
    let _ = FRAMES.lock().free(frame);
    at_vmpl0
}

/// Takes a frame out of the frame allocator for good and makes it shared.
/// Returns its (shared) direct-map address and GPA.
fn allocate_shared_page() -> Result<(u64, u64), SharedPageError> {
    let gpa = FRAMES
        .lock()
        .allocate()
        .map_err(|_| SharedPageError::Map(abi::paging::MapError::OutOfMemory))?;
    let va = phys_to_virt(gpa);
    shared::make_shared(&mut GhcbMsr, &mut DirectMapPages, va, gpa)?;
    // SAFETY: the page is now mapped shared at `va` and belongs to nobody
    // else; zero it so nothing that was there reaches the host.
    unsafe { core::ptr::write_bytes(va as *mut u8, 0, PAGE_SIZE as usize) };
    Ok((va, gpa))
}

/// Gives CPU `index` (the one running this) its GHCB: a page made shared
/// and registered with the hypervisor through this CPU's GHCB MSR.
fn setup_ghcb(index: usize) -> Result<(), PlatformError> {
    let slot = GHCBS.get(index).ok_or(PlatformError("more CPUs than the SVSM has GHCB slots"))?;
    let (va, gpa) =
        allocate_shared_page().map_err(|_| PlatformError("could not make a GHCB page shared"))?;
    msr_protocol::register_ghcb(&mut GhcbMsr, gpa)
        .map_err(|_| PlatformError("the hypervisor refused the GHCB registration"))?;
    // SAFETY: the page was just made shared, mapped at `va` and registered;
    // only this CPU's GHCB client uses it.
    let transport = unsafe { SharedGhcbPage::new(va, gpa) };
    slot.call_once(|| Mutex::new(GhcbClient::new(transport)));
    Ok(())
}

/// The #VC handler (installed with [`idt::set_vc_handler`]).
fn vc_handler(frame: &mut TrapFrame) -> bool {
    let Some(code) = kernel_code_at(frame.rip) else { return false };
    let mut regs = VcRegisters {
        rax: frame.rax,
        rbx: frame.rbx,
        rcx: frame.rcx,
        rdx: frame.rdx,
        rip: frame.rip,
    };
    match vc::handle(frame.error_code, &mut regs, code, &mut SnpVcServices) {
        Ok(()) => {
            (frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rip) =
                (regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rip);
            true
        }
        // Not for this handler (e.g. a guest-memory probe): the exception
        // table or the fatal report takes it.
        Err(VcError::UnexpectedExitCode(_)) => false,
        Err(error) => {
            crate::console::print_emergency(format_args!("\n#VC not handled: {error:?}\n"));
            false
        }
    }
}

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
}

/// The bytes of kernel code at `rip` (at most 15), or `None` if `rip` is not
/// in the kernel's text.
fn kernel_code_at(rip: u64) -> Option<&'static [u8]> {
    let start = &raw const __text_start as u64;
    let end = &raw const __text_end as u64;
    if !(start..end).contains(&rip) {
        return None;
    }
    let len = (end - rip).min(vc::MAX_INSTRUCTION_LENGTH as u64) as usize;
    // SAFETY: the kernel's text is mapped readable for the kernel's life and
    // never written; the range lies inside it.
    Some(unsafe { core::slice::from_raw_parts(rip as *const u8, len) })
}

struct SnpVcServices;

impl VcServices for SnpVcServices {
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        SNP.cpuid(leaf, subleaf)
    }

    fn io_read(&mut self, port: u16, size: u8) -> Result<u32, GhcbError> {
        with_ghcb(|ghcb| ghcb.io_read(port, size)).unwrap_or(Err(GhcbError::Unavailable))
    }

    fn io_write(&mut self, port: u16, size: u8, value: u32) -> Result<(), GhcbError> {
        with_ghcb(|ghcb| ghcb.io_write(port, size, value)).unwrap_or(Err(GhcbError::Unavailable))
    }

    fn read_msr(&mut self, msr: u32) -> Result<u64, GhcbError> {
        with_ghcb(|ghcb| ghcb.read_msr(msr)).unwrap_or(Err(GhcbError::Unavailable))
    }

    fn write_msr(&mut self, msr: u32, value: u64) -> Result<(), GhcbError> {
        with_ghcb(|ghcb| ghcb.write_msr(msr, value)).unwrap_or(Err(GhcbError::Unavailable))
    }
}

/// Starts the SNP platform (see the module documentation for the order).
pub fn init(info: &KernelBootInfo) -> &'static dyn Platform {
    let status = status::check(hardware::read_sev_status())
        .unwrap_or_else(|_| terminate_with(TerminationReason::SVSM_UNSUPPORTED_FEATURES));
    let params = crate::boot::boot_params(info);
    let cpuid = SnpCpuid::new(read_cpuid_page(params.cpuid_gpa))
        .unwrap_or_else(|_| terminate_with(TerminationReason::SVSM_HYPERVISOR_ERROR));
    if 1u64 << cpuid.c_bit() != info.c_bit_mask {
        terminate_with(TerminationReason::SVSM_HYPERVISOR_ERROR);
    }
    let cpuid = CPUID.call_once(|| cpuid);
    STATUS.call_once(|| status);
    idt::set_vc_handler(vc_handler);

    let negotiated = setup::negotiate(&mut GhcbMsr, cpuid.c_bit())
        .unwrap_or_else(|error| terminate_with(error.termination_reason()));
    HYPERVISOR.call_once(|| negotiated);
    if !check_vmpl0() {
        terminate_with(TerminationReason::SVSM_NOT_VMPL0);
    }
    // SAFETY: the secrets page is a page of the boot image at a GPA from the
    // measured boot parameters, in the direct map; nothing else uses it now,
    // and it is zeroed here before the boot area goes to the guest.
    let launch_secrets = unsafe { &mut *(phys_to_virt(params.secrets_gpa) as *mut SecretsPage) };
    SECRETS.call_once(|| Mutex::new(SvsmSecrets::take(launch_secrets)));
    if setup_ghcb(0).is_err() {
        terminate_with(TerminationReason::SVSM_GHCB_SETUP);
    }
    crate::console::init(&GHCB_IO);
    report();
    &SNP
}

/// Logs what the platform found.
fn report() {
    let (Some(status), Some(hv)) = (STATUS.get(), HYPERVISOR.get()) else { return };
    let names: alloc::vec::Vec<&str> = status.status.bits().map(|bit| bit.name()).collect();
    let secrets_version = SECRETS.get().map_or(0, |secrets| secrets.lock().version());
    log::info!(
        "SNP: SEV_STATUS {:#x} ({}), GHCB protocol {}..{}, C-bit {}, hypervisor features {:#x}, \
         secrets page version {}",
        status.status.0,
        names.join(" "),
        hv.info.min_version,
        hv.info.max_version,
        hv.info.c_bit,
        hv.features.0,
        secrets_version
    );
    if status.host_may_inject {
        log::warn!("SNP: no restricted injection: the host can inject events into VMPL0");
    }
    if let Some(gfn) = hv.preferred_ghcb_gfn {
        log::warn!("SNP: the hypervisor prefers the GHCB at GFN {gfn:#x}; the SVSM uses its own");
    }
    if !hv.features.has(HvFeatures::MULTI_VMPL) {
        log::warn!(
            "SNP: the host cannot run more than one VMPL (hypervisor feature bit 5 missing): \
             a guest at VMPL2 needs a KVM with multi-VMPL (planes) support; the SVSM runs alone"
        );
    }
}

/// The guest firmware's start pages (VMSA at VMPL2, secrets page copy with
/// the SVSM fields, CPUID page copy), `calling_area` being the boot vCPU's
/// calling-area GPA.
pub fn guest_start(calling_area: u64) -> Result<GuestStart, GuestCopyError> {
    let (Some(secrets), Some(cpuid), Some(status)) = (SECRETS.get(), CPUID.get(), STATUS.get())
    else {
        return Err(GuestCopyError::EmptySvsm);
    };
    let region = crate::boot::info().kernel_region;
    guest::guest_start(&secrets.lock(), cpuid, status.status, region, calling_area)
}

/// Moves VMPCK0 out of the SVSM's secrets to its one user (the attestation
/// client). `None` before the platform started, or once taken.
pub fn take_vmpck0() -> Option<[u8; VMPCK_LEN]> {
    SECRETS.get()?.lock().take_vmpck(0)
}

/// Largest certificate table a host may return (Linux
/// `SEV_FW_BLOB_MAX_SIZE`, COCONUT-SVSM's cap): 4 pages.
pub const CERTIFICATE_PAGES: usize = 4;

/// The shared pages guest requests travel in.
struct GuestRequestPages {
    request: (u64, u64),
    response: (u64, u64),
    certificates: [(u64, u64); CERTIFICATE_PAGES],
}

impl GuestRequestPages {
    fn allocate() -> Result<GuestRequestPages, SharedPageError> {
        let request = allocate_shared_page()?;
        let response = allocate_shared_page()?;
        // The certificate buffer must be contiguous: four frames in a row,
        // each made shared.
        let base = FRAMES
            .lock()
            .allocate_contiguous(CERTIFICATE_PAGES, 1)
            .map_err(|_| SharedPageError::Map(abi::paging::MapError::OutOfMemory))?;
        let mut certificates = [(0, 0); CERTIFICATE_PAGES];
        for (i, slot) in certificates.iter_mut().enumerate() {
            let gpa = base + i as u64 * PAGE_SIZE;
            let va = phys_to_virt(gpa);
            shared::make_shared(&mut GhcbMsr, &mut DirectMapPages, va, gpa)?;
            *slot = (va, gpa);
        }
        Ok(GuestRequestPages { request, response, certificates })
    }
}

/// Copies `bytes` to the shared page at `va` (volatile: the host reads it).
fn copy_to_shared(va: u64, bytes: &[u8]) {
    for (i, byte) in bytes.iter().enumerate() {
        // SAFETY: `va` is one of the SVSM's shared pages, `bytes` is at most
        // a page long.
        unsafe { (va as *mut u8).add(i).write_volatile(*byte) };
    }
}

/// Copies the shared page at `va` into `bytes` (volatile: the host wrote
/// it).
fn copy_from_shared(va: u64, bytes: &mut [u8]) {
    for (i, byte) in bytes.iter_mut().enumerate() {
        // SAFETY: as for `copy_to_shared`.
        *byte = unsafe { (va as *const u8).add(i).read_volatile() };
    }
}

/// Sends an SNP guest request: `request` (a sealed message page) goes out
/// through a shared page, the host's answer comes back into `response`.
/// With `certificates`, an extended request whose certificate table (at most
/// [`CERTIFICATE_PAGES`] pages) is copied there. The messages are copied,
/// never used in place, so the host cannot change them after they were
/// checked.
pub fn guest_request(
    request: &[u8; PAGE_SIZE as usize],
    response: &mut [u8; PAGE_SIZE as usize],
    certificates: Option<&mut [u8]>,
) -> Result<(), GuestRequestError> {
    let pages = GUEST_REQUEST_PAGES.try_call_once(|| {
        GuestRequestPages::allocate().map(Mutex::new).map_err(|error| {
            log::error!("no shared pages for guest requests: {error:?}");
            GuestRequestError::Ghcb(GhcbError::Unavailable)
        })
    })?;
    let pages = pages.lock();
    copy_to_shared(pages.request.0, request);
    let certificate_buffer = certificates.as_ref().map(|buffer| {
        let count = (buffer.len() / PAGE_SIZE as usize).min(CERTIFICATE_PAGES);
        (pages.certificates[0].1, count as u64)
    });
    let result =
        with_ghcb(|ghcb| ghcb.guest_request(pages.request.1, pages.response.1, certificate_buffer))
            .unwrap_or(Err(GuestRequestError::Ghcb(GhcbError::Unavailable)));
    copy_from_shared(pages.response.0, response);
    if let (Some(buffer), Ok(())) = (certificates, result) {
        for (chunk, (va, _)) in buffer.chunks_mut(PAGE_SIZE as usize).zip(pages.certificates) {
            copy_from_shared(va, chunk);
        }
    }
    result
}
