//! The two boot hand-overs: the measured boot-parameter page the xtask writes
//! into the IGVM file for stage2 ([`BootParams`]), and the block stage2 hands
//! the kernel ([`KernelBootInfo`]).
//!
//! `BootParams` is measured on SNP, so its content is trusted there. The IGVM
//! parameter pages (VP count, memory map) are filled by the host's loader and
//! are not: [`parse_memory_map`] treats them as hostile.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout;

/// `BootParams::magic`.
pub const BOOT_PARAMS_MAGIC: [u8; 8] = *b"SVSMBOOT";
/// `BootParams::version` this code writes and understands.
pub const BOOT_PARAMS_VERSION: u32 = 1;

/// The IGVM platform a boot image was built for. The numbers are IGVM's
/// platform types.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformType {
    /// No isolation: plain KVM, QEMU TCG. The kernel picks `dev` or `native`
    /// at run time, depending on whether the CPU has SVM with nested paging.
    Native = 0,
    /// AMD SEV-SNP.
    Snp = 2,
}

impl PlatformType {
    /// Decodes the platform field of a boot structure.
    pub fn from_u32(value: u32) -> Option<PlatformType> {
        match value {
            0 => Some(PlatformType::Native),
            2 => Some(PlatformType::Snp),
            _ => None,
        }
    }
}

/// A range of guest-physical memory.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct MemoryRange {
    /// First address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl MemoryRange {
    /// The first address past the range, or `None` if it wraps.
    pub fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }

    /// Whether `other` lies wholly inside this range.
    pub fn contains_range(&self, other: &MemoryRange) -> bool {
        match (self.end(), other.end()) {
            (Some(end), Some(other_end)) => other.base >= self.base && other_end <= end,
            _ => false,
        }
    }

    /// Whether the two ranges share at least one byte.
    pub fn overlaps(&self, other: &MemoryRange) -> bool {
        let (Some(end), Some(other_end)) = (self.end(), other.end()) else {
            return true;
        };
        self.base < other_end && other.base < end
    }
}

/// Most pre-validated firmware ranges a boot image records.
pub const MAX_FIRMWARE_RANGES: usize = 8;

/// The guest firmware (OVMF) in the boot image, and what its SEV metadata
/// asks of the SVSM.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FirmwareInfo {
    /// Where the guest sees the image (its end is at 4 GiB); 0 = no firmware.
    pub base: u64,
    /// Size of the image in bytes.
    pub size: u64,
    /// Where the image is in memory: equal to `base` on SNP, the staging
    /// area on the native platform.
    pub staging_base: u64,
    /// GPA where the firmware expects the SNP secrets page (0 = none).
    pub secrets_gpa: u64,
    /// GPA where the firmware expects the SNP CPUID page (0 = none).
    pub cpuid_gpa: u64,
    /// GPA of the firmware's SVSM calling area (0 = the firmware has none).
    pub calling_area_gpa: u64,
    /// Number of valid entries in `prevalidated`.
    pub prevalidated_count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Ranges the firmware expects to find validated when it starts.
    pub prevalidated: [MemoryRange; MAX_FIRMWARE_RANGES],
}

/// The measured boot-parameter page at [`layout::BOOT_PARAMS_GPA`]: what
/// the xtask tells stage2 and the kernel about the image. One copy per IGVM
/// platform.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BootParams {
    /// [`BOOT_PARAMS_MAGIC`].
    pub magic: [u8; 8],
    /// [`BOOT_PARAMS_VERSION`].
    pub version: u32,
    /// The [`PlatformType`] this copy is for.
    pub platform: u32,
    /// The SVSM's own memory.
    pub kernel_region: MemoryRange,
    /// Where the kernel ELF file lies, unmodified.
    pub kernel_elf: MemoryRange,
    /// Memory used only while booting, released to the guest afterwards.
    pub boot_area: MemoryRange,
    /// The SNP secrets page (0 on other platforms).
    pub secrets_gpa: u64,
    /// The SNP CPUID page (0 on other platforms).
    pub cpuid_gpa: u64,
    /// The IGVM general parameter page (VP count, environment info).
    pub general_params_gpa: u64,
    /// The IGVM memory-map parameter area.
    pub memory_map: MemoryRange,
    /// The guest firmware.
    pub firmware: FirmwareInfo,
}

impl BootParams {
    /// Checks the fields a loader relies on before it uses them.
    pub fn validate(&self) -> Result<PlatformType, BootParamsError> {
        if self.magic != BOOT_PARAMS_MAGIC {
            return Err(BootParamsError::BadMagic);
        }
        if self.version != BOOT_PARAMS_VERSION {
            return Err(BootParamsError::UnsupportedVersion(self.version));
        }
        let platform = PlatformType::from_u32(self.platform)
            .ok_or(BootParamsError::UnknownPlatform(self.platform))?;
        for range in [self.kernel_region, self.kernel_elf, self.boot_area, self.memory_map] {
            if range.end().is_none() || range.base % layout::PAGE_SIZE != 0 {
                return Err(BootParamsError::BadRange(range));
            }
        }
        if !self.kernel_region.size.is_multiple_of(layout::LARGE_PAGE_SIZE)
            || !self.kernel_region.base.is_multiple_of(layout::LARGE_PAGE_SIZE)
        {
            return Err(BootParamsError::BadRange(self.kernel_region));
        }
        if self.kernel_region.overlaps(&self.boot_area) {
            return Err(BootParamsError::Overlap);
        }
        if self.firmware.prevalidated_count as usize > MAX_FIRMWARE_RANGES {
            return Err(BootParamsError::TooManyFirmwareRanges(self.firmware.prevalidated_count));
        }
        Ok(platform)
    }

    /// The pre-validated firmware ranges in use.
    pub fn firmware_prevalidated(&self) -> &[MemoryRange] {
        let count = (self.firmware.prevalidated_count as usize).min(MAX_FIRMWARE_RANGES);
        &self.firmware.prevalidated[..count]
    }
}

/// Why a boot-parameter page was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootParamsError {
    /// The page does not start with [`BOOT_PARAMS_MAGIC`].
    BadMagic,
    /// A version this code does not understand.
    UnsupportedVersion(u32),
    /// A platform number that is not a [`PlatformType`].
    UnknownPlatform(u32),
    /// A range that wraps or is not page aligned.
    BadRange(MemoryRange),
    /// The kernel region overlaps the boot area.
    Overlap,
    /// More firmware ranges than the structure holds.
    TooManyFirmwareRanges(u32),
}

/// `KernelBootInfo::magic`.
pub const KERNEL_BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"SVSMKERN");
/// Most RAM ranges stage2 passes to the kernel.
pub const MAX_MEMORY_RANGES: usize = 64;

/// What stage2 hands the kernel (pointer in RDI at the kernel's entry). It
/// lives in the kernel region, below [`KernelBootInfo::free_base`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct KernelBootInfo {
    /// [`KERNEL_BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// The [`PlatformType`] of the boot image.
    pub platform: u32,
    /// Number of vCPUs the host created (from the IGVM VP-count parameter).
    pub cpu_count: u32,
    /// GPA of the measured [`BootParams`] page.
    pub boot_params_gpa: u64,
    /// The SVSM's own memory.
    pub kernel_region: MemoryRange,
    /// Physical range the kernel image was loaded into.
    pub kernel_image: MemoryRange,
    /// Virtual address the kernel image is linked at.
    pub kernel_virt_base: u64,
    /// First physical address in the kernel region that stage2 left unused;
    /// everything from here to the region's end is free memory.
    pub free_base: u64,
    /// The SNP encryption bit as a page-table mask (0 elsewhere).
    pub c_bit_mask: u64,
    /// Number of valid entries in `memory`.
    pub memory_count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// RAM ranges from the host's memory map, sorted and not overlapping.
    pub memory: [MemoryRange; MAX_MEMORY_RANGES],
}

impl KernelBootInfo {
    /// The RAM ranges in use.
    pub fn memory_ranges(&self) -> &[MemoryRange] {
        let count = (self.memory_count as usize).min(MAX_MEMORY_RANGES);
        &self.memory[..count]
    }
}

/// One entry of the IGVM memory-map parameter (`IGVM_VHS_MEMORY_MAP_ENTRY`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IgvmMemoryMapEntry {
    /// First page number.
    pub starting_gpa_page_number: u64,
    /// Number of pages; 0 ends the list.
    pub number_of_pages: u64,
    /// IGVM memory type: 0 = memory.
    pub entry_type: u16,
    /// IGVM flags.
    pub flags: u16,
    /// Reserved.
    pub reserved: u32,
}

/// IGVM memory-map entry type of ordinary RAM.
pub const IGVM_MEMORY_TYPE_MEMORY: u16 = 0;

/// Why a memory-map parameter was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryMapError {
    /// An entry whose range wraps around the address space.
    Overflow { index: usize },
    /// Entries not sorted ascending, or overlapping.
    NotSorted { index: usize },
    /// More RAM ranges than the output holds.
    TooManyRanges,
}

/// Reads the host-supplied IGVM memory map in `area` (untrusted) and returns
/// its RAM ranges in `out`, merging adjacent ones. Returns how many it wrote.
pub fn parse_memory_map(area: &[u8], out: &mut [MemoryRange]) -> Result<usize, MemoryMapError> {
    let entry_size = core::mem::size_of::<IgvmMemoryMapEntry>();
    let mut count = 0;
    let mut previous_end = 0u64;
    for (index, chunk) in area.chunks_exact(entry_size).enumerate() {
        let entry = IgvmMemoryMapEntry::read_from_bytes(chunk).expect("chunk has the entry's size");
        if entry.number_of_pages == 0 {
            break;
        }
        let base = entry
            .starting_gpa_page_number
            .checked_mul(layout::PAGE_SIZE)
            .ok_or(MemoryMapError::Overflow { index })?;
        let size = entry
            .number_of_pages
            .checked_mul(layout::PAGE_SIZE)
            .ok_or(MemoryMapError::Overflow { index })?;
        let end = base.checked_add(size).ok_or(MemoryMapError::Overflow { index })?;
        if base < previous_end {
            return Err(MemoryMapError::NotSorted { index });
        }
        previous_end = end;
        if entry.entry_type != IGVM_MEMORY_TYPE_MEMORY {
            continue;
        }
        if count > 0 && out[count - 1].end() == Some(base) {
            out[count - 1].size += size;
            continue;
        }
        let slot = out.get_mut(count).ok_or(MemoryMapError::TooManyRanges)?;
        *slot = MemoryRange { base, size };
        count += 1;
    }
    Ok(count)
}

const _: () = {
    assert!(core::mem::size_of::<MemoryRange>() == 16);
    assert!(core::mem::size_of::<FirmwareInfo>() == 56 + 16 * MAX_FIRMWARE_RANGES);
    assert!(core::mem::size_of::<BootParams>() <= layout::PAGE_SIZE as usize);
    assert!(core::mem::size_of::<KernelBootInfo>() <= layout::PAGE_SIZE as usize);
    assert!(core::mem::size_of::<IgvmMemoryMapEntry>() == 24);
};

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(page: u64, pages: u64, entry_type: u16) -> IgvmMemoryMapEntry {
        IgvmMemoryMapEntry {
            starting_gpa_page_number: page,
            number_of_pages: pages,
            entry_type,
            ..Default::default()
        }
    }

    fn area(entries: &[IgvmMemoryMapEntry]) -> [u8; 4096] {
        let mut page = [0u8; 4096];
        for (i, e) in entries.iter().enumerate() {
            page[i * 24..(i + 1) * 24].copy_from_slice(e.as_bytes());
        }
        page
    }

    #[test]
    fn memory_map_entry_matches_igvm_layout() {
        // IGVM_VHS_MEMORY_MAP_ENTRY: page u64, pages u64, type u16, flags u16, reserved u32.
        let e = IgvmMemoryMapEntry {
            starting_gpa_page_number: 0x100,
            number_of_pages: 2,
            entry_type: 1,
            flags: 3,
            reserved: 0,
        };
        let mut expected = [0u8; 24];
        expected[0..8].copy_from_slice(&0x100u64.to_le_bytes());
        expected[8..16].copy_from_slice(&2u64.to_le_bytes());
        expected[16..18].copy_from_slice(&1u16.to_le_bytes());
        expected[18..20].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(e.as_bytes(), &expected);
    }

    #[test]
    fn memory_map_keeps_ram_and_merges_neighbours() {
        let page = area(&[
            entry(0, 0x9f, 0),
            entry(0x100, 0x100, 0),
            entry(0x200, 0x100, 0),
            entry(0xfee00, 1, 1),
        ]);
        let mut out = [MemoryRange::default(); 4];
        let n = parse_memory_map(&page, &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &[
                MemoryRange { base: 0, size: 0x9f000 },
                MemoryRange { base: 0x100000, size: 0x200000 }
            ]
        );
    }

    #[test]
    fn memory_map_rejects_hostile_input() {
        let mut out = [MemoryRange::default(); 2];
        let wraps = area(&[entry(u64::MAX / 0x1000, 2, 0)]);
        assert_eq!(parse_memory_map(&wraps, &mut out), Err(MemoryMapError::Overflow { index: 0 }));
        let unsorted = area(&[entry(0x200, 1, 0), entry(0x100, 1, 0)]);
        assert_eq!(
            parse_memory_map(&unsorted, &mut out),
            Err(MemoryMapError::NotSorted { index: 1 })
        );
        let overlapping = area(&[entry(0x100, 0x10, 0), entry(0x108, 1, 0)]);
        assert_eq!(
            parse_memory_map(&overlapping, &mut out),
            Err(MemoryMapError::NotSorted { index: 1 })
        );
        let many = area(&[entry(0, 1, 0), entry(2, 1, 0), entry(4, 1, 0)]);
        assert_eq!(parse_memory_map(&many, &mut out), Err(MemoryMapError::TooManyRanges));
    }

    #[test]
    fn memory_map_of_a_full_page_without_terminator_is_bounded() {
        let mut page = [0u8; 4096];
        for i in 0..170 {
            page[i * 24..(i + 1) * 24].copy_from_slice(entry(2 * i as u64, 1, 1).as_bytes());
        }
        let mut out = [MemoryRange::default(); 1];
        assert_eq!(parse_memory_map(&page, &mut out), Ok(0));
    }

    #[test]
    fn ranges_detect_overlap_and_containment() {
        let a = MemoryRange { base: 0x1000, size: 0x2000 };
        assert!(a.overlaps(&MemoryRange { base: 0x2000, size: 0x1000 }));
        assert!(!a.overlaps(&MemoryRange { base: 0x3000, size: 0x1000 }));
        assert!(a.contains_range(&MemoryRange { base: 0x1000, size: 0x1000 }));
        assert!(!a.contains_range(&MemoryRange { base: 0x2000, size: 0x2000 }));
        assert!(!a.contains_range(&MemoryRange { base: u64::MAX, size: 2 }));
    }
}
