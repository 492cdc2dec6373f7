//! x86-64 4-level page tables, written once for stage2 (which builds the
//! kernel's first tables) and the kernel (which builds and edits its own).
//!
//! The code is independent of how tables are reached: a [`TableMemory`]
//! turns a table's physical address into its 512 entries and supplies new
//! table frames. Stage2 implements it over identity-mapped memory, the kernel
//! over its direct map, tests over a vector. The SNP encryption bit (C-bit)
//! is part of every entry the mapper writes, except leaves marked
//! [`PageFlags::SHARED`].

use core::fmt;

/// Entries in one table.
pub const ENTRIES: usize = 512;

/// Physical-address bits of an entry (bits 12..52).
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Page-table entry bits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PageFlags(u64);

impl PageFlags {
    /// Present.
    pub const PRESENT: PageFlags = PageFlags(1 << 0);
    /// Writable.
    pub const WRITABLE: PageFlags = PageFlags(1 << 1);
    /// Reachable from user mode.
    pub const USER: PageFlags = PageFlags(1 << 2);
    /// Cache disabled (device memory).
    pub const NO_CACHE: PageFlags = PageFlags(1 << 4);
    /// Set by the CPU when the page was accessed.
    pub const ACCESSED: PageFlags = PageFlags(1 << 5);
    /// Set by the CPU when the page was written.
    pub const DIRTY: PageFlags = PageFlags(1 << 6);
    /// Large page (in a PD or PDPT entry).
    pub const HUGE: PageFlags = PageFlags(1 << 7);
    /// Global (survives CR3 writes).
    pub const GLOBAL: PageFlags = PageFlags(1 << 8);
    /// Software bit: map the page unencrypted (no C-bit), i.e. shared with
    /// the host on SNP. The mapper strips it from the entry it writes.
    pub const SHARED: PageFlags = PageFlags(1 << 9);
    /// Not executable.
    pub const NO_EXECUTE: PageFlags = PageFlags(1 << 63);

    /// No bits.
    pub const fn empty() -> PageFlags {
        PageFlags(0)
    }

    /// Kernel data: present, writable, not executable.
    pub const fn data() -> PageFlags {
        PageFlags(Self::PRESENT.0 | Self::WRITABLE.0 | Self::NO_EXECUTE.0)
    }

    /// Kernel read-only data: present, not executable.
    pub const fn rodata() -> PageFlags {
        PageFlags(Self::PRESENT.0 | Self::NO_EXECUTE.0)
    }

    /// Kernel code: present, read-only, executable.
    pub const fn code() -> PageFlags {
        Self::PRESENT
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Flags from raw entry bits (address bits dropped).
    pub const fn from_entry(entry: u64) -> PageFlags {
        PageFlags(entry & !ADDRESS_MASK)
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: PageFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Both sets of bits.
    pub const fn union(self, other: PageFlags) -> PageFlags {
        PageFlags(self.0 | other.0)
    }

    /// These bits without `other`'s.
    pub const fn without(self, other: PageFlags) -> PageFlags {
        PageFlags(self.0 & !other.0)
    }
}

impl core::ops::BitOr for PageFlags {
    type Output = PageFlags;
    fn bitor(self, rhs: PageFlags) -> PageFlags {
        self.union(rhs)
    }
}

impl fmt::Debug for PageFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageFlags({:#x})", self.0)
    }
}

/// Size of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB, mapped by a PT entry.
    Size4K,
    /// 2 MiB, mapped by a PD entry.
    Size2M,
    /// 1 GiB, mapped by a PDPT entry.
    Size1G,
}

impl PageSize {
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// The table level whose entry maps a page of this size (1 = PT).
    const fn level(self) -> usize {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
}

/// Why a mapping operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The virtual or physical address is not aligned to the page size.
    Misaligned,
    /// The virtual address is not canonical.
    NonCanonical,
    /// Something is already mapped there.
    AlreadyMapped,
    /// Nothing is mapped there (or not at the size asked for).
    NotMapped,
    /// No frame for a new table.
    OutOfMemory,
    /// A large page covers the address where a table was expected.
    LargePageInTheWay,
}

/// Access to page-table memory.
pub trait TableMemory {
    /// The entries of the table at physical address `pa` (4 KiB aligned,
    /// without the C-bit).
    fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES];
    /// A zero-filled 4 KiB frame for a new table, or `None` when out of
    /// memory.
    fn allocate_table(&mut self) -> Option<u64>;
}

/// A translation found by [`Mapper::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address the virtual address maps to.
    pub pa: u64,
    /// Size of the page that maps it.
    pub size: PageSize,
    /// Flags of the leaf entry (with [`PageFlags::SHARED`] set if the entry
    /// has no C-bit while the mapper uses one).
    pub flags: PageFlags,
}

/// Edits the page-table hierarchy rooted at one PML4.
#[derive(Clone, Copy, Debug)]
pub struct Mapper {
    root: u64,
    encrypt_mask: u64,
}

fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_FFFF
}

fn index(va: u64, level: usize) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1FF) as usize
}

impl Mapper {
    /// A mapper for the tables rooted at `root` (physical); `encrypt_mask`
    /// is the C-bit (0 off SNP).
    pub fn new(root: u64, encrypt_mask: u64) -> Mapper {
        Mapper { root, encrypt_mask }
    }

    /// Allocates an empty PML4 and returns a mapper for it.
    pub fn create(mem: &mut impl TableMemory, encrypt_mask: u64) -> Result<Mapper, MapError> {
        let root = mem.allocate_table().ok_or(MapError::OutOfMemory)?;
        Ok(Mapper::new(root, encrypt_mask))
    }

    /// The PML4's physical address (what CR3 takes, plus the C-bit).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The value to load into CR3.
    pub fn cr3(&self) -> u64 {
        self.root | self.encrypt_mask
    }

    fn entry_address(&self, entry: u64) -> u64 {
        entry & ADDRESS_MASK & !self.encrypt_mask
    }

    /// Maps the page at `va` to `pa`.
    pub fn map(
        &self,
        mem: &mut impl TableMemory,
        va: u64,
        pa: u64,
        size: PageSize,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        if !va.is_multiple_of(size.bytes())
            || !pa.is_multiple_of(size.bytes())
            || pa & !ADDRESS_MASK != 0
        {
            return Err(MapError::Misaligned);
        }
        if !is_canonical(va) {
            return Err(MapError::NonCanonical);
        }
        let table = self.walk_create(mem, va, size.level())?;
        let slot = &mut mem.table(table)[index(va, size.level())];
        if *slot & PageFlags::PRESENT.bits() != 0 {
            return Err(MapError::AlreadyMapped);
        }
        *slot = self.leaf_entry(pa, size, flags);
        Ok(())
    }

    /// Maps `[va, va + len)` to `[pa, pa + len)` with 4 KiB pages.
    pub fn map_range(
        &self,
        mem: &mut impl TableMemory,
        va: u64,
        pa: u64,
        len: u64,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        let pages = len.div_ceil(PageSize::Size4K.bytes());
        for page in 0..pages {
            let offset = page * PageSize::Size4K.bytes();
            self.map(mem, va + offset, pa + offset, PageSize::Size4K, flags)?;
        }
        Ok(())
    }

    /// Removes the mapping of the page of `size` at `va` and returns the
    /// physical address it mapped. The caller flushes the TLB.
    pub fn unmap(
        &self,
        mem: &mut impl TableMemory,
        va: u64,
        size: PageSize,
    ) -> Result<u64, MapError> {
        if !va.is_multiple_of(size.bytes()) {
            return Err(MapError::Misaligned);
        }
        let table = self.walk(mem, va, size.level())?;
        let slot = &mut mem.table(table)[index(va, size.level())];
        let entry = *slot;
        let is_huge = entry & PageFlags::HUGE.bits() != 0;
        if entry & PageFlags::PRESENT.bits() == 0 || is_huge != (size != PageSize::Size4K) {
            return Err(MapError::NotMapped);
        }
        *slot = 0;
        Ok(self.entry_address(entry))
    }

    /// Changes the flags of the page mapped at `va` (whatever its size).
    pub fn protect(
        &self,
        mem: &mut impl TableMemory,
        va: u64,
        flags: PageFlags,
    ) -> Result<(), MapError> {
        let found = self.translate(mem, va).ok_or(MapError::NotMapped)?;
        let page_va = va & !(found.size.bytes() - 1);
        let table = self.walk(mem, page_va, found.size.level())?;
        let page_pa = found.pa & !(found.size.bytes() - 1);
        mem.table(table)[index(page_va, found.size.level())] =
            self.leaf_entry(page_pa, found.size, flags);
        Ok(())
    }

    /// Replaces the large page that maps `va` with a table of 512 pages of
    /// the next smaller size covering the same physical range with the same
    /// flags and C-bit, so that one part can then be remapped (e.g. a page
    /// made shared with [`Mapper::protect`]). Nothing happens if a 4 KiB
    /// page maps `va`. The new table is complete before the one entry that
    /// links it replaces the large page, so the range stays mapped
    /// throughout; the caller flushes the TLB. (The large-page PAT bit is
    /// not carried over: this mapper never sets it.)
    pub fn split(&self, mem: &mut impl TableMemory, va: u64) -> Result<(), MapError> {
        let found = self.translate(mem, va).ok_or(MapError::NotMapped)?;
        let smaller = match found.size {
            PageSize::Size4K => return Ok(()),
            PageSize::Size2M => PageSize::Size4K,
            PageSize::Size1G => PageSize::Size2M,
        };
        let page_va = va & !(found.size.bytes() - 1);
        let base = found.pa & !(found.size.bytes() - 1);
        let parent = self.walk(mem, page_va, found.size.level())?;
        let child_flags = found.flags.without(PageFlags::HUGE);
        let table = mem.allocate_table().ok_or(MapError::OutOfMemory)?;
        for (i, slot) in mem.table(table).iter_mut().enumerate() {
            *slot = self.leaf_entry(base + i as u64 * smaller.bytes(), smaller, child_flags);
        }
        let mut link = PageFlags::PRESENT | PageFlags::WRITABLE;
        if found.flags.contains(PageFlags::USER) {
            link = link | PageFlags::USER;
        }
        mem.table(parent)[index(page_va, found.size.level())] =
            table | link.bits() | self.encrypt_mask;
        Ok(())
    }

    /// Finds what `va` maps to.
    pub fn translate(&self, mem: &mut impl TableMemory, va: u64) -> Option<Translation> {
        if !is_canonical(va) {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4).rev() {
            let entry = mem.table(table)[index(va, level)];
            if entry & PageFlags::PRESENT.bits() == 0 {
                return None;
            }
            let is_leaf = level == 1 || entry & PageFlags::HUGE.bits() != 0;
            if is_leaf {
                let size = match level {
                    1 => PageSize::Size4K,
                    2 => PageSize::Size2M,
                    3 => PageSize::Size1G,
                    _ => return None,
                };
                let base = self.entry_address(entry) & !(size.bytes() - 1);
                let mut flags = PageFlags::from_entry(entry & !self.encrypt_mask);
                if self.encrypt_mask != 0 && entry & self.encrypt_mask == 0 {
                    flags = flags | PageFlags::SHARED;
                }
                return Some(Translation { pa: base + (va & (size.bytes() - 1)), size, flags });
            }
            table = self.entry_address(entry);
        }
        None
    }

    fn leaf_entry(&self, pa: u64, size: PageSize, flags: PageFlags) -> u64 {
        let huge = if size == PageSize::Size4K { PageFlags::empty() } else { PageFlags::HUGE };
        let encryption = if flags.contains(PageFlags::SHARED) { 0 } else { self.encrypt_mask };
        pa | flags.without(PageFlags::SHARED).union(huge).union(PageFlags::PRESENT).bits()
            | encryption
    }

    /// The table at `level` covering `va`, creating missing tables.
    fn walk_create(
        &self,
        mem: &mut impl TableMemory,
        va: u64,
        level: usize,
    ) -> Result<u64, MapError> {
        let mut table = self.root;
        for current in ((level + 1)..=4).rev() {
            let slot = index(va, current);
            let entry = mem.table(table)[slot];
            if entry & PageFlags::PRESENT.bits() == 0 {
                let new_table = mem.allocate_table().ok_or(MapError::OutOfMemory)?;
                let link = PageFlags::PRESENT | PageFlags::WRITABLE;
                mem.table(table)[slot] = new_table | link.bits() | self.encrypt_mask;
                table = new_table;
            } else if entry & PageFlags::HUGE.bits() != 0 {
                return Err(MapError::LargePageInTheWay);
            } else {
                table = self.entry_address(entry);
            }
        }
        Ok(table)
    }

    /// The table at `level` covering `va`, without creating anything.
    fn walk(&self, mem: &mut impl TableMemory, va: u64, level: usize) -> Result<u64, MapError> {
        if !is_canonical(va) {
            return Err(MapError::NonCanonical);
        }
        let mut table = self.root;
        for current in ((level + 1)..=4).rev() {
            let entry = mem.table(table)[index(va, current)];
            if entry & PageFlags::PRESENT.bits() == 0 {
                return Err(MapError::NotMapped);
            }
            if entry & PageFlags::HUGE.bits() != 0 {
                return Err(MapError::LargePageInTheWay);
            }
            table = self.entry_address(entry);
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    use super::*;

    /// Tables kept in a map from physical address; frames handed out from a
    /// counter.
    struct FakeMemory {
        tables: BTreeMap<u64, [u64; ENTRIES]>,
        next: u64,
        limit: u64,
    }

    impl FakeMemory {
        fn new(frames: u64) -> FakeMemory {
            FakeMemory {
                tables: BTreeMap::new(),
                next: 0x10_0000,
                limit: 0x10_0000 + frames * 0x1000,
            }
        }
    }

    impl TableMemory for FakeMemory {
        fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES] {
            assert_eq!(pa & 0xFFF, 0, "table address {pa:#x} not aligned");
            assert!(pa < self.next, "table {pa:#x} was never allocated");
            self.tables.entry(pa).or_insert([0; ENTRIES])
        }
        fn allocate_table(&mut self) -> Option<u64> {
            if self.next >= self.limit {
                return None;
            }
            let pa = self.next;
            self.next += 0x1000;
            Some(pa)
        }
    }

    const C_BIT: u64 = 1 << 51;

    #[test]
    fn maps_translates_and_unmaps_4k_pages() {
        let mut mem = FakeMemory::new(16);
        let mapper = Mapper::create(&mut mem, 0).unwrap();
        let va = 0xFFFF_FFFF_8000_3000;
        mapper.map(&mut mem, va, 0x0800_3000, PageSize::Size4K, PageFlags::code()).unwrap();
        let t = mapper.translate(&mut mem, va + 0x123).unwrap();
        assert_eq!(t.pa, 0x0800_3123);
        assert_eq!(t.size, PageSize::Size4K);
        assert!(!t.flags.contains(PageFlags::WRITABLE));
        assert!(!t.flags.contains(PageFlags::NO_EXECUTE));
        assert_eq!(
            mapper.map(&mut mem, va, 0x0900_0000, PageSize::Size4K, PageFlags::data()),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(mapper.unmap(&mut mem, va, PageSize::Size4K), Ok(0x0800_3000));
        assert_eq!(mapper.translate(&mut mem, va), None);
        assert_eq!(mapper.unmap(&mut mem, va, PageSize::Size4K), Err(MapError::NotMapped));
    }

    #[test]
    fn large_pages_and_conflicts() {
        let mut mem = FakeMemory::new(16);
        let mapper = Mapper::create(&mut mem, 0).unwrap();
        mapper.map(&mut mem, 0x20_0000, 0x20_0000, PageSize::Size2M, PageFlags::data()).unwrap();
        let t = mapper.translate(&mut mem, 0x2F_F000).unwrap();
        assert_eq!((t.pa, t.size), (0x2F_F000, PageSize::Size2M));
        assert_eq!(
            mapper.map(&mut mem, 0x20_1000, 0x1000, PageSize::Size4K, PageFlags::data()),
            Err(MapError::LargePageInTheWay)
        );
        assert_eq!(
            mapper.unmap(&mut mem, 0x20_0000, PageSize::Size4K),
            Err(MapError::LargePageInTheWay)
        );
        assert_eq!(mapper.unmap(&mut mem, 0x20_0000, PageSize::Size2M), Ok(0x20_0000));
        mapper
            .map(&mut mem, 0x4000_0000, 0x4000_0000, PageSize::Size1G, PageFlags::data())
            .unwrap();
        assert_eq!(mapper.translate(&mut mem, 0x7FFF_FFFF).unwrap().size, PageSize::Size1G);
    }

    #[test]
    fn rejects_bad_addresses() {
        let mut mem = FakeMemory::new(8);
        let mapper = Mapper::create(&mut mem, 0).unwrap();
        assert_eq!(
            mapper.map(&mut mem, 0x1001, 0x1000, PageSize::Size4K, PageFlags::data()),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            mapper.map(&mut mem, 0x20_1000, 0, PageSize::Size2M, PageFlags::data()),
            Err(MapError::Misaligned)
        );
        assert_eq!(
            mapper.map(&mut mem, 0x0000_8000_0000_0000, 0, PageSize::Size4K, PageFlags::data()),
            Err(MapError::NonCanonical)
        );
        assert_eq!(
            mapper.map(&mut mem, 0, 1 << 52, PageSize::Size4K, PageFlags::data()),
            Err(MapError::Misaligned)
        );
        assert_eq!(mapper.translate(&mut mem, 0x0000_8000_0000_0000), None);
    }

    #[test]
    fn runs_out_of_table_frames_cleanly() {
        let mut mem = FakeMemory::new(2);
        let mapper = Mapper::create(&mut mem, 0).unwrap();
        assert_eq!(
            mapper.map(&mut mem, 0x1000, 0x1000, PageSize::Size4K, PageFlags::data()),
            Err(MapError::OutOfMemory)
        );
    }

    #[test]
    fn c_bit_is_set_on_tables_and_private_leaves_only() {
        let mut mem = FakeMemory::new(16);
        let mapper = Mapper::create(&mut mem, C_BIT).unwrap();
        mapper.map(&mut mem, 0x1000, 0x1000, PageSize::Size4K, PageFlags::data()).unwrap();
        mapper
            .map(&mut mem, 0x2000, 0x2000, PageSize::Size4K, PageFlags::data() | PageFlags::SHARED)
            .unwrap();
        let pml4 = mem.table(mapper.root())[0];
        assert_ne!(pml4 & C_BIT, 0);
        let private = mapper.translate(&mut mem, 0x1000).unwrap();
        let shared = mapper.translate(&mut mem, 0x2000).unwrap();
        assert_eq!(private.pa, 0x1000);
        assert!(!private.flags.contains(PageFlags::SHARED));
        assert_eq!(shared.pa, 0x2000);
        assert!(shared.flags.contains(PageFlags::SHARED));
        assert_eq!(mapper.cr3(), mapper.root() | C_BIT);
        // The raw leaf of the shared page carries no C-bit and no software bit.
        let entries: Vec<u64> = mem
            .tables
            .values()
            .flat_map(|t| t.iter().copied())
            .filter(|e| e & !0xFFF == 0x2000 | (1 << 63))
            .collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0] & (PageFlags::SHARED.bits() | C_BIT), 0);
    }

    #[test]
    fn protect_changes_permissions_in_place() {
        let mut mem = FakeMemory::new(16);
        let mapper = Mapper::create(&mut mem, 0).unwrap();
        mapper.map(&mut mem, 0x5000, 0x9000, PageSize::Size4K, PageFlags::data()).unwrap();
        mapper.protect(&mut mem, 0x5000, PageFlags::rodata()).unwrap();
        let t = mapper.translate(&mut mem, 0x5000).unwrap();
        assert_eq!(t.pa, 0x9000);
        assert!(!t.flags.contains(PageFlags::WRITABLE));
        assert!(t.flags.contains(PageFlags::NO_EXECUTE));
        assert_eq!(mapper.protect(&mut mem, 0x6000, PageFlags::rodata()), Err(MapError::NotMapped));
    }

    #[test]
    fn split_keeps_the_range_then_one_page_can_be_made_shared() {
        let mut mem = FakeMemory::new(16);
        let mapper = Mapper::create(&mut mem, C_BIT).unwrap();
        let va = 0xFFFF_8000_0820_0000;
        let flags = PageFlags::data() | PageFlags::GLOBAL;
        mapper.map(&mut mem, va, 0x0820_0000, PageSize::Size2M, flags).unwrap();
        mapper.split(&mut mem, va + 0x5123).unwrap();
        for offset in [0, 0x5000, 0x1F_F000] {
            let t = mapper.translate(&mut mem, va + offset).unwrap();
            assert_eq!((t.pa, t.size), (0x0820_0000 + offset, PageSize::Size4K));
            assert_eq!(t.flags.without(PageFlags::ACCESSED | PageFlags::DIRTY), flags);
        }
        // The C-bit is on every new leaf and on the link to the new table.
        let raw_leaves: Vec<u64> = mem
            .tables
            .values()
            .flat_map(|t| t.iter().copied())
            .filter(|e| e & !0xFFF & !C_BIT & !(1 << 63) >= 0x0820_0000)
            .filter(|e| e & !0xFFF & !C_BIT & !(1 << 63) < 0x0840_0000)
            .collect();
        assert_eq!(raw_leaves.len(), 512);
        assert!(raw_leaves.iter().all(|e| e & C_BIT != 0 && e & PageFlags::HUGE.bits() == 0));
        mapper.protect(&mut mem, va + 0x5000, flags | PageFlags::SHARED).unwrap();
        assert!(mapper.translate(&mut mem, va + 0x5000).unwrap().flags.contains(PageFlags::SHARED));
        assert!(
            !mapper.translate(&mut mem, va + 0x4000).unwrap().flags.contains(PageFlags::SHARED)
        );
        assert!(
            !mapper.translate(&mut mem, va + 0x6000).unwrap().flags.contains(PageFlags::SHARED)
        );
    }

    #[test]
    fn split_of_1g_small_unmapped_and_out_of_memory() {
        let mut mem = FakeMemory::new(4);
        let mapper = Mapper::create(&mut mem, 0).unwrap();
        mapper
            .map(&mut mem, 0x4000_0000, 0x4000_0000, PageSize::Size1G, PageFlags::data())
            .unwrap();
        mapper.split(&mut mem, 0x5234_5678).unwrap();
        let t = mapper.translate(&mut mem, 0x5234_5678).unwrap();
        assert_eq!((t.pa, t.size), (0x5234_5678, PageSize::Size2M));
        assert!(t.flags.contains(PageFlags::HUGE));
        mapper.split(&mut mem, 0x5234_5678).unwrap();
        assert_eq!(mapper.translate(&mut mem, 0x5234_5678).unwrap().size, PageSize::Size4K);
        mapper.split(&mut mem, 0x5234_5678).unwrap();
        assert_eq!(mapper.split(&mut mem, 0x1000), Err(MapError::NotMapped));
        // No frame left for another table: the large page stays as it was.
        mapper
            .map(&mut mem, 0x8000_0000, 0x8000_0000, PageSize::Size1G, PageFlags::data())
            .unwrap();
        assert_eq!(mapper.split(&mut mem, 0x8000_0000), Err(MapError::OutOfMemory));
        assert_eq!(mapper.translate(&mut mem, 0x8000_1000).unwrap().size, PageSize::Size1G);
    }

    #[test]
    fn map_range_covers_partial_last_page() {
        let mut mem = FakeMemory::new(16);
        let mapper = Mapper::create(&mut mem, 0).unwrap();
        mapper.map_range(&mut mem, 0x10000, 0x80000, 0x1001, PageFlags::data()).unwrap();
        assert!(mapper.translate(&mut mem, 0x11000).is_some());
        assert!(mapper.translate(&mut mem, 0x12000).is_none());
    }
}
