//! The kernel's start: from stage2's hand-over to a running SVSM, in order:
//! boot GDT and IDT (so faults are reported), memory (frames, the kernel's
//! own page tables, heap), the platform, the console, per-CPU data.

use abi::boot::{BootParams, KERNEL_BOOT_INFO_MAGIC, KernelBootInfo, MemoryRange, PlatformType};
use spin::Once;
use zerocopy::FromBytes;

use crate::cpu::io::DirectIo;
use crate::mm::paging::{KernelSections, phys_to_virt};
use crate::platform::{self, Platform};
use crate::{console, cpu, mm};

static BOOT_INFO: Once<KernelBootInfo> = Once::new();

/// What the kernel knows about this boot.
pub struct Kernel {
    /// Stage2's hand-over.
    pub info: &'static KernelBootInfo,
    /// The platform.
    pub platform: &'static dyn Platform,
}

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

fn kernel_sections() -> KernelSections {
    let range = |start: *const u8, end: *const u8| MemoryRange {
        base: start as u64,
        size: end as u64 - start as u64,
    };
    // Only the symbols' addresses are used, never their contents.
    KernelSections {
        text: range(&raw const __text_start, &raw const __text_end),
        rodata: range(&raw const __rodata_start, &raw const __rodata_end),
        data: range(&raw const __data_start, &raw const __kernel_end),
    }
}

/// Stage2's hand-over, once the kernel started.
pub fn info() -> &'static KernelBootInfo {
    BOOT_INFO.get().expect("the kernel records its boot info first thing")
}

/// The measured boot parameters (read through the direct map).
pub fn boot_params(info: &KernelBootInfo) -> BootParams {
    let page = phys_to_virt(info.boot_params_gpa);
    // SAFETY: the boot-parameter page is RAM in the direct map; it is only
    // read here, before the boot area is handed to the guest.
    let bytes = unsafe {
        core::slice::from_raw_parts(page as *const u8, core::mem::size_of::<BootParams>())
    };
    BootParams::read_from_bytes(bytes).expect("slice has the structure's size")
}

/// Brings the kernel up. `boot_info_pa` is stage2's hand-over, reachable
/// through stage2's identity map.
///
/// # Safety
/// Must be called once, first thing, on the boot CPU, with stage2's tables
/// live and `boot_info_pa` pointing at a valid [`KernelBootInfo`].
pub unsafe fn start(boot_info_pa: u64) -> Kernel {
    // SAFETY: per the contract, the hand-over is identity mapped and valid.
    let info =
        *BOOT_INFO.call_once(|| unsafe { core::ptr::read(boot_info_pa as *const KernelBootInfo) });
    cpu::gdt::load_boot_gdt();
    cpu::idt::init();
    let snp = info.platform == PlatformType::Snp as u32;
    if !snp {
        // Until the platform is known, the console uses direct port I/O,
        // which every platform but SNP allows.
        static EARLY_IO: DirectIo = DirectIo;
        console::init(&EARLY_IO);
    }
    console::init_logging(log::LevelFilter::Info);
    if info.magic != KERNEL_BOOT_INFO_MAGIC {
        log::error!("boot info has a bad magic number: {:#x}", info.magic);
        platform::exit_failure();
    }
    let info: &'static KernelBootInfo = BOOT_INFO.get().expect("set above");
    // SAFETY: first and only call, stage2's identity map is live, the info
    // and the sections describe this boot.
    if let Err(e) = unsafe { mm::init(info, &kernel_sections()) } {
        log::error!("memory setup failed: {e:?}");
        platform::exit_failure();
    }
    // Make supervisor writes respect read-only pages (W^X needs it).
    // SAFETY: setting CR0.WP only adds protection.
    unsafe { cpu::registers::write_cr0(cpu::registers::read_cr0() | cpu::registers::CR0_WP) };
    let platform = platform::init(info);
    console::init(platform.io());
    cpu::percpu::init(0, 0);
    cpu::idt::init();
    let (heap_used, heap_size) = mm::heap_usage();
    log::info!(
        "SVSM kernel: platform {:?}, {} CPU(s), kernel region {:#x}+{:#x} MiB, heap {} KiB used of {} MiB",
        platform.kind(),
        info.cpu_count,
        info.kernel_region.base,
        info.kernel_region.size >> 20,
        heap_used / 1024,
        heap_size >> 20,
    );
    Kernel { info, platform }
}
