//! The stage2 binary: the bare-metal half of the loader (entry code, memory
//! access, PVALIDATE, console). The logic lives in the library.

#![no_std]
#![no_main]

mod console;
mod snp;

use core::fmt::Write;

use abi::boot::{BootParams, MemoryRange, PlatformType};
use abi::layout::{
    BOOT_AREA_BASE, BOOT_AREA_END, BOOT_PARAMS_GPA, MEMORY_MAP_GPA, MEMORY_MAP_SIZE, PAGE_SIZE,
};
use stage2::handover::build_boot_info;
use stage2::load::{RawMemory, load_kernel};
use stage2::validate::validate_range;
use zerocopy::{FromBytes, IntoBytes};

use console::Console;

core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

/// Reads `len` bytes of the boot area (identity mapped, below the kernel
/// region), refusing anything outside it.
fn boot_area(range: MemoryRange) -> Option<&'static [u8]> {
    let end = range.end()?;
    if range.base < BOOT_AREA_BASE || end > BOOT_AREA_END {
        return None;
    }
    // SAFETY: the boot area is identity mapped by the entry code, holds only
    // the pages the loader placed there, and nothing writes to it while
    // stage2 runs; the range was checked to lie inside it.
    Some(unsafe { core::slice::from_raw_parts(range.base as *const u8, range.size as usize) })
}

/// Physical memory of the kernel region, reached through the identity map.
struct KernelRegion {
    region: MemoryRange,
}

impl RawMemory for KernelRegion {
    fn bytes(&mut self, pa: u64, len: usize) -> &mut [u8] {
        let inside = MemoryRange { base: pa, size: len as u64 };
        assert!(
            self.region.contains_range(&inside),
            "stage2 touched memory outside the kernel region"
        );
        // SAFETY: the range lies inside the kernel region, which is identity
        // mapped, validated (on SNP) before this type exists, and used by
        // nothing but stage2 until the kernel starts; `&mut self` keeps the
        // returned slice the only reference.
        unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, len) }
    }
}

#[unsafe(no_mangle)]
extern "sysv64" fn stage2_main(c_bit_mask: u64) -> ! {
    let params_page =
        boot_area(MemoryRange { base: BOOT_PARAMS_GPA, size: PAGE_SIZE }).expect("fixed page");
    let params = match BootParams::read_from_prefix(params_page) {
        Ok((params, _)) => params,
        Err(_) => {
            fail(&mut Console::for_c_bit(c_bit_mask), format_args!("boot parameters unreadable"))
        }
    };
    let platform = match params.validate() {
        Ok(platform) => platform,
        Err(e) => {
            fail(&mut Console::for_c_bit(c_bit_mask), format_args!("bad boot parameters: {e:?}"))
        }
    };
    let mut console = match platform {
        PlatformType::Snp => Console::silent(),
        PlatformType::Native => Console::serial(),
    };
    let _ = writeln!(
        console,
        "stage2: platform {platform:?}, kernel region {:#x}+{:#x}",
        params.kernel_region.base, params.kernel_region.size
    );

    if platform == PlatformType::Snp
        && let Err(e) = validate_range(&mut snp::Pvalidate, params.kernel_region)
    {
        fail(&mut console, format_args!("validating the kernel region failed: {e:?}"));
    }

    let Some(elf) = boot_area(params.kernel_elf) else {
        fail(&mut console, format_args!("kernel ELF outside the boot area"))
    };
    let mut memory = KernelRegion { region: params.kernel_region };
    let loaded = match load_kernel(&mut memory, elf, params.kernel_region, c_bit_mask) {
        Ok(loaded) => loaded,
        Err(e) => fail(&mut console, format_args!("loading the kernel failed: {e:?}")),
    };
    let general = boot_area(MemoryRange { base: params.general_params_gpa, size: PAGE_SIZE });
    let memory_map = boot_area(MemoryRange { base: MEMORY_MAP_GPA, size: MEMORY_MAP_SIZE });
    let (Some(general), Some(memory_map)) = (general, memory_map) else {
        fail(&mut console, format_args!("parameter pages outside the boot area"))
    };
    let info = match build_boot_info(
        platform,
        BOOT_PARAMS_GPA,
        &params,
        general,
        memory_map,
        &loaded,
        c_bit_mask,
    ) {
        Ok(info) => info,
        Err(e) => fail(&mut console, format_args!("bad host parameters: {e:?}")),
    };
    let info_bytes = info.as_bytes();
    memory.bytes(loaded.boot_info_pa, info_bytes.len()).copy_from_slice(info_bytes);
    let _ =
        writeln!(console, "stage2: kernel loaded ({} KiB), entering it", loaded.image.size / 1024);

    // SAFETY: the new tables map the kernel at its link address and keep the
    // identity map of the low 4 GiB where this code and its stack run; the
    // kernel's entry takes the boot info's physical address in RDI and
    // never returns.
    unsafe {
        core::arch::asm!(
            "mov cr3, {cr3}",
            "jmp {entry}",
            cr3 = in(reg) loaded.cr3,
            entry = in(reg) loaded.entry,
            in("rdi") loaded.boot_info_pa,
            options(noreturn),
        )
    }
}

/// Reports a fatal error and stops the VM with a failure.
fn fail(console: &mut Console, message: core::fmt::Arguments<'_>) -> ! {
    let _ = writeln!(console, "stage2: error: {message}");
    console.exit_failure()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut console = Console::serial_if_safe();
    let _ = writeln!(console, "stage2: panic: {info}");
    console.exit_failure()
}
