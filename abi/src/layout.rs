//! Where things live: guest-physical addresses of the boot image the xtask
//! writes into the IGVM file, the SVSM's virtual address layout, and the
//! fixed I/O ports of the console and the exit device.
//!
//! The boot image (both IGVM platforms unless noted):
//!
//! | GPA                       | what                                             |
//! |---------------------------|--------------------------------------------------|
//! | 0x0010_0000               | boot parameters ([`crate::boot::BootParams`]), one page per platform, measured |
//! | 0x0010_1000               | SNP secrets page (SNP only)                      |
//! | 0x0010_2000               | SNP CPUID page (SNP only)                        |
//! | 0x0010_3000               | IGVM parameter page: VP count at 0, environment info at 4 |
//! | 0x0010_4000               | IGVM parameter page: memory map                  |
//! | 0x0010_5000..0x0011_0000  | stage2 stack (zero pages)                        |
//! | 0x0011_0000..0x0020_0000  | stage2 image                                     |
//! | 0x0020_0000..0x0080_0000  | the kernel ELF file, as is                       |
//! | 0x0800_0000..0x0C00_0000  | kernel region: required memory, not in the file  |
//! | 0x0C00_0000..0x0D00_0000  | guest firmware, staged (native platform only)    |
//! | 4 GiB - firmware size     | guest firmware in place (SNP only)               |
//! | 0xFFFF_FFFF_F000          | the SNP boot VMSA, last (SNP only)               |
//!
//! Everything below the kernel region is released to the guest once the
//! kernel runs. On the native platform the firmware is staged in RAM because
//! QEMU's `-bios` ROM occupies the top of the 4 GiB; the dev platform maps it
//! at its architectural address through the guest's nested page tables.

/// Size of a small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Size of a large (2 MiB) page.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// The measured boot-parameter page ([`crate::boot::BootParams`]).
pub const BOOT_PARAMS_GPA: u64 = 0x0010_0000;
/// The SNP secrets page.
pub const SECRETS_GPA: u64 = 0x0010_1000;
/// The SNP CPUID page.
pub const CPUID_GPA: u64 = 0x0010_2000;
/// IGVM parameter area 0: VP count (u32) at 0, environment info (u32) at 4.
pub const GENERAL_PARAMS_GPA: u64 = 0x0010_3000;
/// Offset of the VP count in the general parameter page.
pub const VP_COUNT_OFFSET: u32 = 0;
/// Offset of the environment-info word in the general parameter page.
pub const ENVIRONMENT_INFO_OFFSET: u32 = 4;
/// IGVM parameter area 1: the memory map.
pub const MEMORY_MAP_GPA: u64 = 0x0010_4000;
/// Size of the memory-map parameter area.
pub const MEMORY_MAP_SIZE: u64 = PAGE_SIZE;
/// Lowest address of stage2's stack.
pub const STAGE2_STACK_BASE: u64 = 0x0010_5000;
/// Initial stack pointer of stage2 (the stack grows down from here).
pub const STAGE2_STACK_TOP: u64 = 0x0011_0000;
/// Where stage2 is linked and loaded.
pub const STAGE2_BASE: u64 = 0x0011_0000;
/// First address above the space reserved for stage2.
pub const STAGE2_LIMIT: u64 = 0x0020_0000;
/// Where the kernel ELF file is placed, unmodified.
pub const KERNEL_ELF_GPA: u64 = 0x0020_0000;
/// First address above the space reserved for the kernel ELF file.
pub const KERNEL_ELF_LIMIT: u64 = 0x0080_0000;
/// Start of the part of the image released to the guest after boot.
pub const BOOT_AREA_BASE: u64 = BOOT_PARAMS_GPA;
/// End of the part of the image released to the guest after boot.
pub const BOOT_AREA_END: u64 = KERNEL_ELF_LIMIT;

/// Base of the kernel region: the SVSM's own memory for its whole life.
pub const KERNEL_REGION_BASE: u64 = 0x0800_0000;
/// Size of the kernel region.
pub const KERNEL_REGION_SIZE: u64 = 0x0400_0000;
/// Where the native platform stages the guest firmware image.
pub const FIRMWARE_STAGING_BASE: u64 = 0x0C00_0000;
/// Largest guest firmware image the layout has room for.
pub const FIRMWARE_MAX_SIZE: u64 = 0x0100_0000;
/// The address KVM measures the SNP boot VMSA at; it must be the last page.
pub const SNP_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// Virtual address the kernel ELF is linked at (the top 2 GiB, for the
/// kernel code model).
pub const KERNEL_VIRT_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// Virtual address of physical address 0 in the kernel's direct map.
pub const DIRECT_MAP_BASE: u64 = 0xFFFF_8000_0000_0000;
/// Size of the direct map (physical addresses it covers).
pub const DIRECT_MAP_SIZE: u64 = 1 << 39;

/// COM1, the console of every platform.
pub const SERIAL_PORT: u16 = 0x3F8;
/// The debug-exit device (QEMU `isa-debug-exit,iobase=0x501,iosize=2`, and
/// the launcher): writing `v` ends the VM with exit status `(v << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0x501;
/// Value written to [`DEBUG_EXIT_PORT`] when the SVSM ends successfully.
pub const EXIT_SUCCESS: u8 = 0x10;
/// Value written to [`DEBUG_EXIT_PORT`] when the SVSM ends with a failure.
pub const EXIT_FAILURE: u8 = 0x11;

/// The process exit status a VMM reports for a value written to the exit port.
pub const fn exit_status(value: u8) -> i32 {
    ((value as i32) << 1) | 1
}

/// IGVM compatibility-mask bit of the SNP platform.
pub const SNP_PLATFORM_MASK: u32 = 1 << 0;
/// IGVM compatibility-mask bit of the native platform.
pub const NATIVE_PLATFORM_MASK: u32 = 1 << 1;

const _: () = {
    assert!(STAGE2_STACK_TOP == STAGE2_BASE);
    assert!(MEMORY_MAP_GPA + MEMORY_MAP_SIZE <= STAGE2_STACK_BASE);
    assert!(KERNEL_ELF_LIMIT <= KERNEL_REGION_BASE);
    assert!(KERNEL_REGION_BASE + KERNEL_REGION_SIZE <= FIRMWARE_STAGING_BASE);
    assert!(KERNEL_REGION_BASE.is_multiple_of(LARGE_PAGE_SIZE));
    assert!(KERNEL_REGION_SIZE.is_multiple_of(LARGE_PAGE_SIZE));
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_matches_qemu_debug_exit() {
        assert_eq!(exit_status(EXIT_SUCCESS), 33);
        assert_eq!(exit_status(EXIT_FAILURE), 35);
    }
}
