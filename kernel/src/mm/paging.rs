//! The kernel's address space: its image at the link address with W^X
//! rights per section, a direct map of RAM (read/write, never executable),
//! and nothing else. Built once at boot, replacing stage2's tables (and with
//! them the identity map).

use abi::boot::{KernelBootInfo, MemoryRange};
use abi::layout::{DIRECT_MAP_BASE, DIRECT_MAP_SIZE, KERNEL_VIRT_BASE, LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::paging::{ENTRIES, MapError, Mapper, PageFlags, PageSize, TableMemory};

use crate::mm::frames::FrameAllocator;

/// Reaches page tables through a fixed physical-to-virtual offset (0 while
/// stage2's identity map is live, the direct-map base afterwards), and takes
/// new table frames from the frame allocator.
pub struct OffsetTables<'a> {
    offset: u64,
    frames: &'a mut FrameAllocator,
}

impl<'a> OffsetTables<'a> {
    /// Tables reached at `pa + offset`.
    ///
    /// # Safety
    /// Every frame the allocator hands out, and every table reached through
    /// this value, must be mapped at `pa + offset` and used by nothing else
    /// while this value exists.
    pub unsafe fn new(offset: u64, frames: &'a mut FrameAllocator) -> OffsetTables<'a> {
        OffsetTables { offset, frames }
    }
}

impl TableMemory for OffsetTables<'_> {
    fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES] {
        // SAFETY: per `new`'s contract the table is mapped at pa + offset
        // and not otherwise referenced; `&mut self` makes this the only
        // reference for its lifetime.
        unsafe { &mut *((pa + self.offset) as *mut [u64; ENTRIES]) }
    }

    fn allocate_table(&mut self) -> Option<u64> {
        let pa = self.frames.allocate().ok()?;
        self.table(pa).fill(0);
        Some(pa)
    }
}

/// The kernel image's sections, as the linker placed them.
#[derive(Clone, Copy, Debug)]
pub struct KernelSections {
    /// Code (read, execute).
    pub text: MemoryRange,
    /// Read-only data.
    pub rodata: MemoryRange,
    /// Data and bss (read, write).
    pub data: MemoryRange,
}

/// Virtual address of physical address `pa` in the direct map.
pub fn phys_to_virt(pa: u64) -> u64 {
    DIRECT_MAP_BASE + pa
}

/// Physical address of a direct-map address, if it is one.
pub fn virt_to_phys(va: u64) -> Option<u64> {
    va.checked_sub(DIRECT_MAP_BASE).filter(|pa| *pa < DIRECT_MAP_SIZE)
}

/// Maps `range` into the direct map, with 2 MiB pages where possible.
fn map_direct(
    mapper: &Mapper,
    tables: &mut impl TableMemory,
    range: MemoryRange,
) -> Result<(), MapError> {
    let end = range.end().ok_or(MapError::Misaligned)?.min(DIRECT_MAP_SIZE) & !(PAGE_SIZE - 1);
    let mut pa = range.base.next_multiple_of(PAGE_SIZE);
    while pa < end {
        let size = if pa.is_multiple_of(LARGE_PAGE_SIZE) && end - pa >= LARGE_PAGE_SIZE {
            PageSize::Size2M
        } else {
            PageSize::Size4K
        };
        match mapper.map(tables, phys_to_virt(pa), pa, size, PageFlags::data() | PageFlags::GLOBAL)
        {
            Ok(()) | Err(MapError::AlreadyMapped) => {}
            Err(e) => return Err(e),
        }
        pa += size.bytes();
    }
    Ok(())
}

/// Builds the kernel's page tables: the image per `sections` (physical base
/// `image_pa`), and a direct map of every RAM range and the kernel region.
pub fn build_kernel_tables(
    tables: &mut impl TableMemory,
    info: &KernelBootInfo,
    sections: &KernelSections,
) -> Result<Mapper, MapError> {
    let mapper = Mapper::create(tables, info.c_bit_mask)?;
    let image_pa = |va: u64| info.kernel_image.base + (va - KERNEL_VIRT_BASE);
    for (range, flags) in [
        (sections.text, PageFlags::code()),
        (sections.rodata, PageFlags::rodata()),
        (sections.data, PageFlags::data()),
    ] {
        if range.size > 0 {
            mapper.map_range(
                tables,
                range.base,
                image_pa(range.base),
                range.size,
                flags | PageFlags::GLOBAL,
            )?;
        }
    }
    for range in info.memory_ranges().iter().chain(core::iter::once(&info.kernel_region)) {
        map_direct(&mapper, tables, *range)?;
    }
    Ok(mapper)
}
