//! Loading the kernel: copy its ELF segments into the kernel region at
//! `region base + (vaddr - KERNEL_VIRT_BASE)`, and build page tables that map
//! each segment at its link address with the segment's rights (W^X), plus an
//! identity map of the low 4 GiB so stage2 keeps running across the switch.
//!
//! Page tables, the boot-info page and everything else stage2 allocates come
//! from the kernel region right after the image; the kernel learns where free
//! memory starts from [`LoadedKernel::free_base`].

use abi::boot::MemoryRange;
use abi::elf::{Elf, ElfError, LoadSegment};
use abi::layout::{KERNEL_VIRT_BASE, LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::paging::{ENTRIES, MapError, Mapper, PageFlags, PageSize, TableMemory};
use zerocopy::FromBytes;

/// Byte access to physical memory.
pub trait RawMemory {
    /// The `len` bytes at physical address `pa`.
    fn bytes(&mut self, pa: u64, len: usize) -> &mut [u8];
}

/// Why the kernel could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The ELF file is malformed.
    Elf(ElfError),
    /// A segment lies below the kernel's link base or is not page aligned.
    BadAddress { vaddr: u64 },
    /// The image does not fit into the kernel region with room to spare.
    TooLarge { image_size: u64, region_size: u64 },
    /// A segment asks to be writable and executable.
    WritableAndExecutable { vaddr: u64 },
    /// Building the page tables failed.
    Map { vaddr: u64, error: MapError },
    /// The region has no frame left for a table or the boot info.
    OutOfMemory,
}

impl From<ElfError> for LoadError {
    fn from(error: ElfError) -> LoadError {
        LoadError::Elf(error)
    }
}

/// What [`load_kernel`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    /// The kernel's entry point (virtual).
    pub entry: u64,
    /// Physical range holding the image.
    pub image: MemoryRange,
    /// Value for CR3 to switch to the new tables.
    pub cr3: u64,
    /// Physical address of a zeroed page reserved for the boot info.
    pub boot_info_pa: u64,
    /// First physical address stage2 did not use.
    pub free_base: u64,
}

/// Hands out zeroed frames from the part of the region after the image.
struct RegionFrames<'m, M: RawMemory> {
    mem: &'m mut M,
    next: u64,
    end: u64,
}

impl<M: RawMemory> RegionFrames<'_, M> {
    fn allocate(&mut self) -> Option<u64> {
        if self.next >= self.end {
            return None;
        }
        let frame = self.next;
        self.next += PAGE_SIZE;
        self.mem.bytes(frame, PAGE_SIZE as usize).fill(0);
        Some(frame)
    }
}

impl<M: RawMemory> TableMemory for RegionFrames<'_, M> {
    fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES] {
        let bytes = self.mem.bytes(pa, PAGE_SIZE as usize);
        <[u64; ENTRIES]>::mut_from_bytes(bytes).expect("page-table frames are page aligned")
    }

    fn allocate_table(&mut self) -> Option<u64> {
        self.allocate()
    }
}

fn segment_flags(segment: &LoadSegment<'_>) -> Result<PageFlags, LoadError> {
    match (segment.flags.write, segment.flags.execute) {
        (true, true) => Err(LoadError::WritableAndExecutable { vaddr: segment.vaddr }),
        (false, true) => Ok(PageFlags::code()),
        (true, false) => Ok(PageFlags::data()),
        (false, false) => Ok(PageFlags::rodata()),
    }
}

/// Loads the kernel ELF `elf` into `region` and builds its page tables.
/// `c_bit` is the SNP encryption mask (0 elsewhere).
pub fn load_kernel<M: RawMemory>(
    mem: &mut M,
    elf: &[u8],
    region: MemoryRange,
    c_bit: u64,
) -> Result<LoadedKernel, LoadError> {
    let elf = Elf::parse(elf)?;
    let (low, high) = elf.vaddr_bounds();
    if low < KERNEL_VIRT_BASE {
        return Err(LoadError::BadAddress { vaddr: low });
    }
    let image_size = (high - KERNEL_VIRT_BASE).next_multiple_of(PAGE_SIZE);
    // Keep at least half of the region for the kernel's own use.
    if image_size > region.size / 2 {
        return Err(LoadError::TooLarge { image_size, region_size: region.size });
    }
    for segment in elf.segments() {
        if segment.vaddr % PAGE_SIZE != 0 {
            return Err(LoadError::BadAddress { vaddr: segment.vaddr });
        }
        segment_flags(&segment)?;
        let pa = region.base + (segment.vaddr - KERNEL_VIRT_BASE);
        mem.bytes(pa, segment.file_data.len()).copy_from_slice(segment.file_data);
        let bss = (segment.mem_size - segment.file_data.len() as u64) as usize;
        mem.bytes(pa + segment.file_data.len() as u64, bss).fill(0);
    }

    let end = region.end().expect("region checked by BootParams::validate");
    let mut frames = RegionFrames { mem, next: region.base + image_size, end };
    let mapper = Mapper::create(&mut frames, c_bit).map_err(|_| LoadError::OutOfMemory)?;
    for segment in elf.segments() {
        let pa = region.base + (segment.vaddr - KERNEL_VIRT_BASE);
        mapper
            .map_range(&mut frames, segment.vaddr, pa, segment.mem_size, segment_flags(&segment)?)
            .map_err(|error| LoadError::Map { vaddr: segment.vaddr, error })?;
    }
    // Identity map of the low 4 GiB: stage2 runs from there while it
    // switches to these tables. Executable, because stage2's code is in it.
    let identity = PageFlags::PRESENT | PageFlags::WRITABLE;
    for addr in (0..(4u64 << 30)).step_by(LARGE_PAGE_SIZE as usize) {
        mapper
            .map(&mut frames, addr, addr, PageSize::Size2M, identity)
            .map_err(|error| LoadError::Map { vaddr: addr, error })?;
    }
    let boot_info_pa = frames.allocate().ok_or(LoadError::OutOfMemory)?;
    Ok(LoadedKernel {
        entry: elf.entry(),
        image: MemoryRange { base: region.base, size: image_size },
        cr3: mapper.cr3(),
        boot_info_pa,
        free_base: frames.next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::paging::Translation;

    const REGION: MemoryRange = MemoryRange { base: 0x0800_0000, size: 0x80_0000 };

    /// The kernel region as a vector of u64 (so frames are 8-byte aligned).
    struct FakeRegion {
        words: Vec<u64>,
    }

    impl FakeRegion {
        fn new() -> FakeRegion {
            FakeRegion { words: vec![0xAAAA_AAAA_AAAA_AAAA; (REGION.size / 8) as usize] }
        }
    }

    impl RawMemory for FakeRegion {
        fn bytes(&mut self, pa: u64, len: usize) -> &mut [u8] {
            let offset = (pa - REGION.base) as usize;
            let all: &mut [u8] = zerocopy::IntoBytes::as_mut_bytes(&mut self.words[..]);
            &mut all[offset..offset + len]
        }
    }

    impl TableMemory for FakeRegion {
        fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES] {
            let index = ((pa - REGION.base) / 8) as usize;
            (&mut self.words[index..index + ENTRIES]).try_into().unwrap()
        }
        fn allocate_table(&mut self) -> Option<u64> {
            unreachable!("tests only walk tables")
        }
    }

    fn elf_with(segments: &[(u64, u64, &[u8], u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&62u16.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&KERNEL_VIRT_BASE.to_le_bytes());
        out.extend_from_slice(&64u64.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for v in [64u16, 56, segments.len() as u16, 64, 0, 0] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut offset = 64 + 56 * segments.len() as u64;
        for &(vaddr, memsz, data, flags) in segments {
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&flags.to_le_bytes());
            for v in [offset, vaddr, vaddr, data.len() as u64, memsz, 0x1000] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            offset += data.len() as u64;
        }
        for &(_, _, data, _) in segments {
            out.extend_from_slice(data);
        }
        out
    }

    fn translate(mem: &mut FakeRegion, loaded: &LoadedKernel, va: u64) -> Option<Translation> {
        Mapper::new(loaded.cr3 & !(1 << 51), 0).translate(mem, va)
    }

    #[test]
    fn loads_segments_and_maps_them_with_their_rights() {
        let text = KERNEL_VIRT_BASE;
        let data = KERNEL_VIRT_BASE + 0x2000;
        let elf = elf_with(&[(text, 0x1000, b"\x90\x90", 5), (data, 0x3000, b"data", 6)]);
        let mut mem = FakeRegion::new();
        let loaded = load_kernel(&mut mem, &elf, REGION, 0).unwrap();
        assert_eq!(loaded.entry, KERNEL_VIRT_BASE);
        assert_eq!(loaded.image, MemoryRange { base: REGION.base, size: 0x5000 });
        assert_eq!(mem.bytes(REGION.base, 2), b"\x90\x90");
        assert_eq!(mem.bytes(REGION.base + 0x2000, 4), b"data");
        // The bss part of the data segment is zeroed; the rest of the region is not touched.
        assert!(mem.bytes(REGION.base + 0x2004, 0x2FFC).iter().all(|&b| b == 0));

        let code = translate(&mut mem, &loaded, text).unwrap();
        assert_eq!(code.pa, REGION.base);
        assert!(!code.flags.contains(PageFlags::WRITABLE));
        assert!(!code.flags.contains(PageFlags::NO_EXECUTE));
        let bss = translate(&mut mem, &loaded, data + 0x2000).unwrap();
        assert_eq!(bss.pa, REGION.base + 0x4000);
        assert!(bss.flags.contains(PageFlags::WRITABLE | PageFlags::NO_EXECUTE));
        assert!(translate(&mut mem, &loaded, KERNEL_VIRT_BASE + 0x1000).is_none());
        // Identity map of the low 4 GiB, so stage2 survives the CR3 switch.
        assert_eq!(translate(&mut mem, &loaded, 0x11_0000).unwrap().pa, 0x11_0000);
        assert_eq!(translate(&mut mem, &loaded, 0xFFFF_F000).unwrap().pa, 0xFFFF_F000);
        assert!(
            loaded.boot_info_pa >= REGION.base + 0x5000 && loaded.boot_info_pa < loaded.free_base
        );
    }

    #[test]
    fn c_bit_reaches_cr3() {
        let elf = elf_with(&[(KERNEL_VIRT_BASE, 0x1000, b"x", 5)]);
        let mut mem = FakeRegion::new();
        let loaded = load_kernel(&mut mem, &elf, REGION, 1 << 51).unwrap();
        assert_eq!(loaded.cr3 & (1 << 51), 1 << 51);
    }

    #[test]
    fn refuses_writable_executable_and_misplaced_segments() {
        let mut mem = FakeRegion::new();
        let wx = elf_with(&[(KERNEL_VIRT_BASE, 0x1000, b"x", 7)]);
        assert_eq!(
            load_kernel(&mut mem, &wx, REGION, 0),
            Err(LoadError::WritableAndExecutable { vaddr: KERNEL_VIRT_BASE })
        );
        let low = elf_with(&[(0x10_0000, 0x1000, b"x", 5)]);
        assert_eq!(
            load_kernel(&mut mem, &low, REGION, 0),
            Err(LoadError::BadAddress { vaddr: 0x10_0000 })
        );
        let unaligned = elf_with(&[(KERNEL_VIRT_BASE + 0x10, 0x1000, b"x", 5)]);
        assert!(matches!(
            load_kernel(&mut mem, &unaligned, REGION, 0),
            Err(LoadError::BadAddress { .. })
        ));
        let huge = elf_with(&[(KERNEL_VIRT_BASE, REGION.size, b"x", 6)]);
        assert!(matches!(load_kernel(&mut mem, &huge, REGION, 0), Err(LoadError::TooLarge { .. })));
        assert_eq!(
            load_kernel(&mut mem, b"not an elf", REGION, 0),
            Err(LoadError::Elf(ElfError::TooShort))
        );
    }
}
