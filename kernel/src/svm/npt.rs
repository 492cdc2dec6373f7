//! The guest's nested page tables on the dev platform: they translate
//! guest-physical to host-physical addresses, and what they leave out the
//! guest cannot touch.
//!
//! The dev platform maps the guest-physical space identically (RAM and
//! MMIO alike) with the largest pages that fit, leaves out the SVSM's own
//! region, maps the guest firmware's window below 4 GiB onto the staged
//! image, and gives each RAM page the rights the guest's VMPL has on it in
//! the emulated RMP (none: not present). Pages are split on demand when one
//! 4 KiB page inside a large one changes; they are not merged again.
//!
//! Entry format: the x86-64 one, with the user bit set at every level
//! (nested walks are user accesses) and NX for pages without execute.

use abi::paging::{ENTRIES, MapError, TableMemory};
use abi::snp_instr::VmplPermissions;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;
/// Rights of a link to a lower table: everything (the leaves decide).
const TABLE_LINK: u64 = PRESENT | WRITABLE | USER;

/// The rights of a leaf: readable (present), and optionally writable and
/// executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Writes allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub execute: bool,
}

impl Access {
    /// Read, write and execute.
    pub const ALL: Access = Access { write: true, execute: true };

    /// The rights a VMPL with RMP permissions `permissions` gets: `None`
    /// (not present) without read permission.
    pub fn from_permissions(permissions: VmplPermissions) -> Option<Access> {
        if !permissions.contains(VmplPermissions::READ) {
            return None;
        }
        Some(Access {
            write: permissions.contains(VmplPermissions::WRITE),
            execute: permissions.contains(VmplPermissions::EXECUTE_SUPERVISOR)
                || permissions.contains(VmplPermissions::EXECUTE_USER),
        })
    }

    fn bits(self) -> u64 {
        let mut bits = PRESENT | USER;
        if self.write {
            bits |= WRITABLE;
        }
        if !self.execute {
            bits |= NO_EXECUTE;
        }
        bits
    }
}

/// Page sizes of the nested tables: level 1 (4 KiB) to level 3 (1 GiB).
fn level_size(level: u32) -> u64 {
    1 << (12 + 9 * (level - 1))
}

fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * (level - 1))) & 0x1FF) as usize
}

/// A mapping found by [`NestedTables::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Host-physical address.
    pub pa: u64,
    /// Rights.
    pub access: Access,
    /// Size of the page (bytes).
    pub page_size: u64,
}

/// One set of nested page tables (4-level).
#[derive(Clone, Copy, Debug)]
pub struct NestedTables {
    root: u64,
    /// Largest page used: 1 GiB if the CPU has 1 GiB pages, else 2 MiB.
    max_level: u32,
}

impl NestedTables {
    /// Empty tables (nothing mapped). `gigabyte_pages`: the CPU supports
    /// 1 GiB pages.
    pub fn new(
        memory: &mut impl TableMemory,
        gigabyte_pages: bool,
    ) -> Result<NestedTables, MapError> {
        let root = memory.allocate_table().ok_or(MapError::OutOfMemory)?;
        Ok(NestedTables { root, max_level: if gigabyte_pages { 3 } else { 2 } })
    }

    /// The root (N_CR3).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Maps `[gpa, gpa + size)` to `[pa, pa + size)` with `access`, or
    /// removes it (`None`), using the largest pages alignment allows and
    /// splitting larger pages that straddle the range's ends. Page
    /// aligned.
    pub fn map(
        &self,
        memory: &mut impl TableMemory,
        gpa: u64,
        pa: u64,
        size: u64,
        access: Option<Access>,
    ) -> Result<(), MapError> {
        if (gpa | pa | size) & 0xFFF != 0 || gpa.checked_add(size).is_none_or(|end| end > 1 << 48) {
            return Err(MapError::Misaligned);
        }
        let mut offset = 0;
        while offset < size {
            let done = self.map_one(
                memory,
                self.root,
                4,
                gpa + offset,
                pa + offset,
                size - offset,
                access,
            )?;
            offset += done;
        }
        Ok(())
    }

    /// Maps as much as one entry at the largest possible level can, from
    /// `gpa`; returns how many bytes it covered.
    #[allow(clippy::too_many_arguments)]
    fn map_one(
        &self,
        memory: &mut impl TableMemory,
        table: u64,
        level: u32,
        gpa: u64,
        pa: u64,
        remaining: u64,
        access: Option<Access>,
    ) -> Result<u64, MapError> {
        let size = level_size(level);
        let slot = index(gpa, level);
        let fits = gpa.is_multiple_of(size) && pa.is_multiple_of(size) && remaining >= size;
        if level <= self.max_level && fits {
            memory.table(table)[slot] = match access {
                Some(access) => pa | access.bits() | if level > 1 { LARGE } else { 0 },
                None => 0,
            };
            return Ok(size);
        }
        let child = self.child(memory, table, level, slot)?;
        self.map_one(memory, child, level - 1, gpa, pa, remaining.min(size - gpa % size), access)
    }

    /// The table below entry `slot` of the level-`level` table `table`,
    /// created empty, or split from the large page the entry maps.
    fn child(
        &self,
        memory: &mut impl TableMemory,
        table: u64,
        level: u32,
        slot: usize,
    ) -> Result<u64, MapError> {
        let entry = memory.table(table)[slot];
        if entry & PRESENT != 0 && entry & LARGE == 0 {
            return Ok(entry & ADDRESS_MASK);
        }
        let child = memory.allocate_table().ok_or(MapError::OutOfMemory)?;
        if entry & PRESENT != 0 {
            // Split: the same mapping with pages one level smaller.
            let base = entry & ADDRESS_MASK & !(level_size(level) - 1);
            let rights = entry & (WRITABLE | USER | NO_EXECUTE | PRESENT);
            let large = if level - 1 > 1 { LARGE } else { 0 };
            let step = level_size(level - 1);
            let entries = memory.table(child);
            for (i, e) in entries.iter_mut().enumerate().take(ENTRIES) {
                *e = (base + i as u64 * step) | rights | large;
            }
        }
        memory.table(table)[slot] = child | TABLE_LINK;
        Ok(child)
    }

    /// What `gpa` maps to.
    pub fn translate(&self, memory: &mut impl TableMemory, gpa: u64) -> Option<Mapping> {
        let mut table = self.root;
        for level in (1..=4).rev() {
            let entry = memory.table(table)[index(gpa, level)];
            if entry & PRESENT == 0 {
                return None;
            }
            if level == 1 || entry & LARGE != 0 {
                let page_size = level_size(level);
                let base = entry & ADDRESS_MASK & !(page_size - 1);
                let access =
                    Access { write: entry & WRITABLE != 0, execute: entry & NO_EXECUTE == 0 };
                return Some(Mapping { pa: base + gpa % page_size, access, page_size });
            }
            table = entry & ADDRESS_MASK;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    struct Tables {
        tables: BTreeMap<u64, [u64; ENTRIES]>,
        next: u64,
    }

    impl Tables {
        fn new() -> Tables {
            Tables { tables: BTreeMap::new(), next: 0x1000_0000 }
        }
    }

    impl TableMemory for Tables {
        fn table(&mut self, pa: u64) -> &mut [u64; ENTRIES] {
            self.tables.get_mut(&pa).expect("only allocated tables are walked")
        }
        fn allocate_table(&mut self) -> Option<u64> {
            let pa = self.next;
            self.next += 0x1000;
            self.tables.insert(pa, [0; ENTRIES]);
            Some(pa)
        }
    }

    const RO: Access = Access { write: false, execute: false };

    #[test]
    fn identity_map_uses_large_pages_and_carves_holes() {
        let mut m = Tables::new();
        let npt = NestedTables::new(&mut m, true).unwrap();
        npt.map(&mut m, 0, 0, 8 << 30, Some(Access::ALL)).unwrap();
        assert_eq!(m.tables.len(), 2, "PML4 + one PDPT of 1 GiB pages");
        let at = npt.translate(&mut m, 0x1_2345_6789).unwrap();
        assert_eq!(at, Mapping { pa: 0x1_2345_6789, access: Access::ALL, page_size: 1 << 30 });
        // A hole of 80 MiB at 128 MiB: 2 MiB pages around it, no 4K tables.
        npt.map(&mut m, 0x800_0000, 0x800_0000, 0x500_0000, None).unwrap();
        assert_eq!(npt.translate(&mut m, 0x800_0000), None);
        assert_eq!(npt.translate(&mut m, 0xCFF_FFFF), None);
        assert_eq!(npt.translate(&mut m, 0xD00_0000).unwrap().page_size, 2 << 20);
        assert_eq!(npt.translate(&mut m, 0x7FF_FFFF).unwrap().pa, 0x7FF_FFFF);
        assert_eq!(m.tables.len(), 3);
        // One 4 KiB page read-only inside a 2 MiB page.
        npt.map(&mut m, 0x1234_5000, 0x1234_5000, 0x1000, Some(RO)).unwrap();
        let page = npt.translate(&mut m, 0x1234_5FFF).unwrap();
        assert_eq!((page.access, page.page_size), (RO, 0x1000));
        assert_eq!(npt.translate(&mut m, 0x1234_6000).unwrap().access, Access::ALL);
        assert_eq!(npt.translate(&mut m, 0x1234_4000).unwrap().pa, 0x1234_4000);
    }

    #[test]
    fn a_window_maps_elsewhere() {
        let mut m = Tables::new();
        let npt = NestedTables::new(&mut m, false).unwrap();
        npt.map(&mut m, 0, 0, 4 << 30, Some(Access::ALL)).unwrap();
        // Firmware of 4 MiB + 8 KiB below 4 GiB onto the staging area.
        let size = (4 << 20) + 0x2000;
        let base = (4u64 << 30) - size;
        npt.map(&mut m, base, 0xC00_0000, size, None).unwrap();
        npt.map(&mut m, base, 0xC00_0000, size, Some(Access::ALL)).unwrap();
        assert_eq!(npt.translate(&mut m, base).unwrap().pa, 0xC00_0000);
        assert_eq!(npt.translate(&mut m, 0xFFFF_FFF0).unwrap().pa, 0xC00_0000 + size - 0x10);
        assert_eq!(npt.translate(&mut m, base - 1).unwrap().pa, base - 1);
        let sizes: Vec<u64> = [base, base + 0x2000, 0xFFE0_0000]
            .iter()
            .map(|g| npt.translate(&mut m, *g).unwrap().page_size)
            .collect();
        assert_eq!(sizes, [0x1000; 3], "the window and the image are not 2 MiB aligned alike");
        // 4 MiB aligned on both sides: 2 MiB pages.
        npt.map(&mut m, 0xFFC0_0000, 0xC00_0000, 4 << 20, Some(Access::ALL)).unwrap();
        assert_eq!(npt.translate(&mut m, 0xFFE0_0000).unwrap().page_size, 2 << 20);
        assert_eq!(npt.translate(&mut m, 0xFFE0_0000).unwrap().pa, 0xC20_0000);
    }

    #[test]
    fn rights_follow_rmp_permissions() {
        assert_eq!(Access::from_permissions(VmplPermissions::NONE), None);
        assert_eq!(Access::from_permissions(VmplPermissions::WRITE), None, "write without read");
        assert_eq!(Access::from_permissions(VmplPermissions::READ), Some(RO));
        assert_eq!(Access::from_permissions(VmplPermissions::ALL), Some(Access::ALL));
        let rx = VmplPermissions::READ | VmplPermissions::EXECUTE_SUPERVISOR;
        assert_eq!(Access::from_permissions(rx), Some(Access { write: false, execute: true }));
    }

    #[test]
    fn misaligned_or_huge_ranges_are_refused() {
        let mut m = Tables::new();
        let npt = NestedTables::new(&mut m, true).unwrap();
        assert_eq!(npt.map(&mut m, 0x1001, 0, 0x1000, None), Err(MapError::Misaligned));
        assert_eq!(npt.map(&mut m, !0xFFF, 0, 0x2000, None), Err(MapError::Misaligned));
        assert_eq!(npt.map(&mut m, 1 << 48, 0, 0x1000, None), Err(MapError::Misaligned));
    }
}
