//! The guest-physical memory the launcher gives a VM: RAM from address 0 (split
//! around the 32-bit PCI hole when it is large), plus a firmware window just
//! below 4 GiB when the IGVM file places pages there (OVMF on SNP).
//!
//! Everything that checks whether a guest address is backed asks this one
//! description, so the loader, the memory map handed to the guest and the KVM
//! memory slots always agree.

use std::fmt;
use std::ops::Range;

use thiserror::Error;

/// Size of a page.
pub const PAGE_SIZE: u64 = 0x1000;
/// RAM below 4 GiB stops here; the rest goes above 4 GiB (like QEMU's q35
/// machine, which keeps [3 GiB, 4 GiB) for MMIO and firmware).
pub const LOW_RAM_LIMIT: u64 = 0xC000_0000;
/// 4 GiB.
pub const FOUR_GIB: u64 = 1 << 32;
/// Largest firmware window below 4 GiB (the size of a PC flash window).
pub const FIRMWARE_WINDOW_SIZE: u64 = 16 << 20;
/// Smallest guest memory the launcher accepts.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Largest guest memory the launcher accepts (1 TiB).
pub const MAX_MEMORY: u64 = 1 << 40;

/// What a region of guest memory is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Ordinary RAM, listed in the guest's memory map.
    Ram,
    /// The firmware window below 4 GiB; backed, but not listed as RAM.
    Firmware,
}

/// One contiguous, page-aligned range of guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First guest-physical address.
    pub gpa: u64,
    /// Size in bytes (a multiple of [`PAGE_SIZE`]).
    pub size: u64,
    /// RAM or firmware.
    pub kind: RegionKind,
}

impl Region {
    /// The addresses the region covers.
    pub fn range(&self) -> Range<u64> {
        self.gpa..self.gpa + self.size
    }

    /// Whether `[gpa, gpa + size)` lies wholly inside this region.
    pub fn contains(&self, gpa: u64, size: u64) -> bool {
        gpa >= self.gpa && gpa.checked_add(size).is_some_and(|end| end <= self.gpa + self.size)
    }
}

/// Errors in the requested memory size or firmware placement.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// The memory size is not usable.
    #[error(
        "guest memory of {0:#x} bytes is not usable: give a multiple of 4 KiB between 2 MiB and 1 TiB (e.g. --memory 512M)"
    )]
    BadMemorySize(u64),
    /// The firmware pages of the IGVM file do not fit the firmware window.
    #[error(
        "the IGVM file places firmware pages at {start:#x}..{end:#x}, which is not inside the firmware window [{:#x}, 4 GiB) nor in RAM",
        FOUR_GIB - FIRMWARE_WINDOW_SIZE
    )]
    FirmwareOutsideWindow {
        /// First firmware address.
        start: u64,
        /// End of the firmware pages.
        end: u64,
    },
}

/// The guest-physical memory of one VM, regions sorted by address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestLayout {
    regions: Vec<Region>,
}

impl GuestLayout {
    /// Lays out `memory` bytes of RAM, and a firmware window covering
    /// `firmware` (page data the IGVM file puts below 4 GiB but above RAM).
    pub fn new(memory: u64, firmware: Option<Range<u64>>) -> Result<Self, LayoutError> {
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&memory) || !memory.is_multiple_of(PAGE_SIZE) {
            return Err(LayoutError::BadMemorySize(memory));
        }
        let low = memory.min(LOW_RAM_LIMIT);
        let mut regions = vec![Region { gpa: 0, size: low, kind: RegionKind::Ram }];
        if let Some(fw) = firmware {
            let window = FOUR_GIB - FIRMWARE_WINDOW_SIZE;
            if fw.start < window.max(low) || fw.end > FOUR_GIB || fw.start >= fw.end {
                return Err(LayoutError::FirmwareOutsideWindow { start: fw.start, end: fw.end });
            }
            let start = fw.start & !(PAGE_SIZE - 1);
            regions.push(Region { gpa: start, size: FOUR_GIB - start, kind: RegionKind::Firmware });
        }
        if memory > low {
            regions.push(Region { gpa: FOUR_GIB, size: memory - low, kind: RegionKind::Ram });
        }
        Ok(GuestLayout { regions })
    }

    /// All regions, ascending.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The RAM regions, ascending (what the guest's memory map lists).
    pub fn ram(&self) -> impl Iterator<Item = &Region> {
        self.regions.iter().filter(|r| r.kind == RegionKind::Ram)
    }

    /// Whether `[gpa, gpa + size)` lies wholly inside one region.
    pub fn contains(&self, gpa: u64, size: u64) -> bool {
        self.regions.iter().any(|r| r.contains(gpa, size))
    }

    /// Whether `[gpa, gpa + size)` lies wholly inside one RAM region.
    pub fn ram_contains(&self, gpa: u64, size: u64) -> bool {
        self.ram().any(|r| r.contains(gpa, size))
    }
}

impl fmt::Display for GuestLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.regions.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let kind = match r.kind {
                RegionKind::Ram => "RAM",
                RegionKind::Firmware => "firmware",
            };
            write!(f, "{kind} {:#x}..{:#x}", r.gpa, r.gpa + r.size)?;
        }
        Ok(())
    }
}

/// Parses a memory size such as `512M`, `2G`, `65536K` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 10),
        Some((i, 'M' | 'm')) => (&text[..i], 20),
        Some((i, 'G' | 'g')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size (examples: 512M, 2G, 1048576)"))?;
    value.checked_mul(1 << shift).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_is_one_low_region() {
        let layout = GuestLayout::new(512 << 20, None).unwrap();
        assert_eq!(layout.regions(), &[Region { gpa: 0, size: 512 << 20, kind: RegionKind::Ram }]);
        assert!(layout.contains(0x1000, 0x1000));
        assert!(!layout.contains((512 << 20) - 0x1000, 0x2000));
        assert!(!layout.contains(u64::MAX - 0x10, 0x1000));
    }

    #[test]
    fn large_memory_splits_around_the_hole_and_firmware_sits_below_4g() {
        let layout = GuestLayout::new(4 << 30, Some(FOUR_GIB - 0x20_0000..FOUR_GIB)).unwrap();
        let r = layout.regions();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].range(), 0..LOW_RAM_LIMIT);
        assert_eq!(r[1].range(), FOUR_GIB - 0x20_0000..FOUR_GIB);
        assert_eq!(r[1].kind, RegionKind::Firmware);
        assert_eq!(r[2].range(), FOUR_GIB..FOUR_GIB + (1 << 30));
        assert_eq!(layout.ram().count(), 2);
        assert!(!layout.ram_contains(FOUR_GIB - 0x1000, 0x1000));
    }

    #[test]
    fn bad_sizes_and_firmware_placements_are_errors() {
        assert_eq!(GuestLayout::new(1 << 20, None), Err(LayoutError::BadMemorySize(1 << 20)));
        assert!(GuestLayout::new((64 << 20) + 1, None).is_err());
        assert!(matches!(
            GuestLayout::new(64 << 20, Some(0x1000_0000..0x1000_1000)),
            Err(LayoutError::FirmwareOutsideWindow { .. })
        ));
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
