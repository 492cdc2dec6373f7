//! Starting the guest firmware, the same steps on every platform that runs
//! a guest: release the boot area, give the firmware its image, its
//! pre-validated ranges, its secrets page (VMPCK0 hidden, the SVSM's fields
//! filled), its CPUID page and its calling area, all validated, zeroed
//! where new, and accessible to VMPL1 and VMPL2; create the boot vCPU's
//! VMSA at VMPL2 in the x86 reset state; then serve the guest.
//!
//! What differs per platform is only where the secrets and CPUID pages come
//! from: SNP copies its launch pages (`platform::snp::guest_start`); the dev
//! platform makes them (no PSP: zero VMPCKs; CPUID from the CPU plus an SNP
//! SEV leaf).

use abi::boot::{BootParams, MemoryRange};
use abi::cpuid_page::CpuidPage;
use abi::layout::{FIRMWARE_MAX_SIZE, FIRMWARE_STAGING_BASE, LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::secrets::{SecretsPage, SvsmDescription};
use abi::snp_instr::{PvalidateError, RmpAdjustAttributes, RmpPageSize, VmplPermissions};
use abi::svsm::CORE_PROTOCOL_VERSION;
use abi::vmsa::Vmsa;
use zerocopy::{FromZeros, IntoBytes};

use core::sync::atomic::{AtomicU32, Ordering};

use crate::boot::Kernel;
use crate::cpu;
use crate::guest_mem::{self, GuestMemory};
use crate::mm::FRAMES;
use crate::mm::paging::phys_to_virt;
use crate::platform::{self, CpuStart, Platform, PlatformKind};
use crate::protocols::{SvsmState, VcpuTable};

/// The VMPL the guest runs at.
pub const GUEST_VMPL: u8 = 2;
/// SEV features of the guest's VMSAs on the dev platform: SNP active.
const DEV_SEV_FEATURES: u64 = 1;
/// The calling-area GPA of a firmware that has none: outside any RAM, so
/// no call ever reads as pending.
const NO_CALLING_AREA: u64 = !0xFFF;

/// Why the guest could not be started.
#[derive(Clone, Copy, Debug)]
pub enum StartError {
    /// A page of the firmware's could not be validated or granted.
    Page(u64, &'static str),
    /// The start pages could not be built.
    StartPages(&'static str),
    /// No frame for the boot VMSA.
    OutOfMemory,
}

/// The guest's start pages.
struct StartPages {
    vmsa: Vmsa,
    secrets: SecretsPage,
    cpuid: CpuidPage,
}

/// Starts the guest firmware and runs the boot CPU's request loop. Ends the
/// VM if there is nothing to run.
pub fn run(kernel: Kernel) -> ! {
    let platform = kernel.platform;
    let params = crate::boot::boot_params(kernel.info);
    if !platform.runs_guests() || params.firmware.base == 0 {
        log::info!(
            "SVSM ready on the {:?} platform; no guest to run ({})",
            platform.kind(),
            if platform.runs_guests() {
                "no firmware in the image"
            } else {
                "the platform runs none"
            }
        );
        platform::exit_success();
    }
    let startup = match prepare(platform, &params, kernel.info.cpu_count) {
        Ok(startup) => startup,
        Err(error) => {
            log::error!("cannot start the guest firmware: {error:?}");
            platform::exit_failure();
        }
    };
    crate::vtpm::init(platform);
    crate::attest::init_at_boot(kernel.info, platform.kind());
    log::info!(
        "starting the guest firmware at VMPL{GUEST_VMPL} ({} KiB at {:#x}, calling area {:#x})",
        params.firmware.size / 1024,
        params.firmware.base,
        params.firmware.calling_area_gpa
    );
    crate::requests::run_cpu(platform, startup)
}

/// Everything before the first entry; returns the boot vCPU's APIC ID.
fn prepare(
    platform: &dyn Platform,
    params: &BootParams,
    cpu_count: u32,
) -> Result<u32, StartError> {
    let firmware = &params.firmware;
    let calling_area =
        if firmware.calling_area_gpa != 0 { firmware.calling_area_gpa } else { NO_CALLING_AREA };
    let pages = start_pages(platform, params, calling_area)?;
    release(platform, params.boot_area);
    let image =
        MemoryRange { base: firmware.base, size: firmware.size.next_multiple_of(PAGE_SIZE) };
    grant_range(platform, image, false)?;
    for range in params.firmware_prevalidated() {
        grant_range(platform, *range, true)?;
    }
    let memory = guest_mem::guest();
    for (gpa, bytes) in [
        (firmware.secrets_gpa, pages.secrets.as_bytes()),
        (firmware.cpuid_gpa, pages.cpuid.as_bytes()),
        (firmware.calling_area_gpa, &[0u8; PAGE_SIZE as usize][..]),
    ] {
        if gpa == 0 {
            continue;
        }
        grant_range(platform, MemoryRange { base: gpa, size: PAGE_SIZE }, true)?;
        memory.write(gpa, bytes).map_err(|_| StartError::Page(gpa, "not guest memory"))?;
    }
    let vmsa_pa = boot_vmsa(platform, &pages.vmsa)?;
    let apic_ids: alloc::vec::Vec<u32> = (0..cpu_count).collect();
    let mut state = SvsmState {
        vcpus: VcpuTable::new(&apic_ids, pages.vmsa.sev_features),
        ..Default::default()
    };
    let boot_apic_id = 0;
    state.vcpus.add(vmsa_pa, calling_area, boot_apic_id, GUEST_VMPL, true);
    crate::requests::init(state);
    start_secondary_cpus(platform, cpu_count);
    Ok(boot_apic_id)
}

/// Secondary CPUs that reached their request loop.
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// Stack of each secondary CPU.
const AP_STACK_SIZE: usize = 64 * 1024;

/// Starts the SVSM on every other CPU (APIC IDs 1..cpu_count): each waits
/// in its request loop for a vCPU the guest creates with CREATE_VCPU.
fn start_secondary_cpus(platform: &dyn Platform, cpu_count: u32) {
    let mut started = 0;
    for index in 1..cpu_count {
        let frames = AP_STACK_SIZE / PAGE_SIZE as usize;
        let Ok(stack) = FRAMES.lock().allocate_contiguous(frames, 1) else {
            log::error!("no stack for CPU {index}: it stays off");
            continue;
        };
        let start = CpuStart {
            index,
            stack_top: phys_to_virt(stack) + AP_STACK_SIZE as u64,
            entry: secondary_entry,
        };
        match platform.start_cpu(index, &start) {
            Ok(()) => started += 1,
            Err(error) => log::error!("CPU {index} did not start: {}", error.0),
        }
    }
    while ONLINE.load(Ordering::Acquire) < started {
        core::hint::spin_loop();
    }
    if cpu_count > 1 {
        log::info!("{} of {} secondary CPUs wait for guest vCPUs", started, cpu_count - 1);
    }
}

/// Where a secondary CPU enters the kernel (from the platform's start).
extern "sysv64" fn secondary_entry(index: u32) -> ! {
    let apic_id = index;
    cpu::percpu::init(index, apic_id);
    cpu::idt::load();
    let platform = platform::current().expect("CPUs start after the platform");
    if let Err(error) = platform.init_cpu() {
        log::error!("CPU {index}: {}", error.0);
        platform::halt_forever();
    }
    ONLINE.fetch_add(1, Ordering::AcqRel);
    crate::requests::run_cpu(platform, apic_id)
}

/// The boot VMSA, secrets and CPUID pages for this platform.
fn start_pages(
    platform: &dyn Platform,
    params: &BootParams,
    calling_area: u64,
) -> Result<StartPages, StartError> {
    if platform.kind() == PlatformKind::Snp {
        let start = platform::snp::guest_start(calling_area)
            .map_err(|_| StartError::StartPages("the SNP start pages"))?;
        return Ok(StartPages { vmsa: start.vmsa, secrets: start.secrets, cpuid: start.cpuid });
    }
    let svsm = svsm_region(params);
    let description = SvsmDescription {
        base: svsm.base,
        size: svsm.size,
        calling_area,
        max_version: CORE_PROTOCOL_VERSION,
        guest_vmpl: GUEST_VMPL,
    };
    let secrets = SecretsPage::new_zeroed()
        .guest_copy(&description)
        .map_err(|_| StartError::StartPages("the secrets page"))?;
    let cpuid =
        crate::svm::guest_cpuid::guest_cpuid_page(&|leaf, subleaf| platform.cpuid(leaf, subleaf));
    Ok(StartPages { vmsa: Vmsa::reset_state(GUEST_VMPL, DEV_SEV_FEATURES), secrets, cpuid })
}

/// The memory the guest must leave alone: the kernel region and, after it,
/// the firmware staging area (dev).
fn svsm_region(params: &BootParams) -> MemoryRange {
    let end =
        (FIRMWARE_STAGING_BASE + FIRMWARE_MAX_SIZE).max(params.kernel_region.end().unwrap_or(0));
    MemoryRange { base: params.kernel_region.base, size: end - params.kernel_region.base }
}

/// Rescinds the validation of the boot area (the guest validates what it
/// uses). Pages that were never validated (dev) are left as they are.
fn release(platform: &dyn Platform, area: MemoryRange) {
    let end = area.base + area.size;
    let mut gpa = area.base;
    while gpa < end {
        let large = gpa.is_multiple_of(LARGE_PAGE_SIZE) && end - gpa >= LARGE_PAGE_SIZE;
        let size = if large { RmpPageSize::Size2M } else { RmpPageSize::Size4K };
        let result = match platform.pvalidate(gpa, size, false) {
            Err(PvalidateError::SizeMismatch) => release_small(platform, gpa),
            other => other,
        };
        if let Err(error) = result
            && error != PvalidateError::Unchanged
        {
            log::warn!("releasing the boot area: {gpa:#x} stays as it was ({error:?})");
        }
        gpa += size.bytes();
    }
}

fn release_small(platform: &dyn Platform, base: u64) -> Result<(), PvalidateError> {
    for gpa in (base..base + LARGE_PAGE_SIZE).step_by(PAGE_SIZE as usize) {
        match platform.pvalidate(gpa, RmpPageSize::Size4K, false) {
            Ok(()) | Err(PvalidateError::Unchanged) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Makes `range` usable by the guest: validated (`validate`; zeroed when
/// that changed the page) and accessible to VMPL1 up to the guest's VMPL.
fn grant_range(
    platform: &dyn Platform,
    range: MemoryRange,
    validate: bool,
) -> Result<(), StartError> {
    let end = range.end().ok_or(StartError::Page(range.base, "range wraps"))?;
    let mut gpa = range.base & !(PAGE_SIZE - 1);
    while gpa < end {
        if validate {
            match platform.pvalidate(gpa, RmpPageSize::Size4K, true) {
                Ok(()) => guest_mem::guest()
                    .zero(gpa, PAGE_SIZE)
                    .map_err(|_| StartError::Page(gpa, "not guest memory"))?,
                Err(PvalidateError::Unchanged) => {}
                Err(_) => return Err(StartError::Page(gpa, "PVALIDATE failed")),
            }
        }
        for target_vmpl in 1..=GUEST_VMPL {
            let attributes =
                RmpAdjustAttributes { target_vmpl, permissions: VmplPermissions::ALL, vmsa: false };
            platform
                .rmpadjust(gpa, RmpPageSize::Size4K, attributes)
                .map_err(|_| StartError::Page(gpa, "RMPADJUST failed"))?;
        }
        gpa += PAGE_SIZE;
    }
    Ok(())
}

/// Puts the boot VMSA in an SVSM frame that is not 2 MiB aligned (an SNP
/// erratum), marked a VMSA in the RMP; returns its address.
fn boot_vmsa(platform: &dyn Platform, vmsa: &Vmsa) -> Result<u64, StartError> {
    let mut frames = FRAMES.lock();
    let mut pa = frames.allocate().map_err(|_| StartError::OutOfMemory)?;
    if pa.is_multiple_of(LARGE_PAGE_SIZE) {
        let other = frames.allocate().map_err(|_| StartError::OutOfMemory)?;
        let _ = frames.free(pa);
        pa = other;
    }
    drop(frames);
    // SAFETY: a fresh kernel frame, direct mapped, 4 KiB aligned, used by
    // nothing else; the guest cannot reach SVSM frames.
    unsafe { *(phys_to_virt(pa) as *mut Vmsa) = *vmsa };
    let mark =
        RmpAdjustAttributes { target_vmpl: 1, permissions: VmplPermissions::NONE, vmsa: true };
    platform
        .rmpadjust(pa, RmpPageSize::Size4K, mark)
        .map_err(|_| StartError::Page(pa, "cannot mark the boot VMSA"))?;
    Ok(pa)
}
