//! The dev platform's emulated RMP: for every guest page, whether it is
//! validated, whether it is a VMSA, and the permissions of VMPL1-3, with
//! PVALIDATE and RMPADJUST answering as the hardware does.
//!
//! On SNP the reverse-map table is the hardware's; the dev platform keeps
//! its own so the same protocol code runs on both and the guest's nested
//! page tables can follow the guest VMPL's permissions (a page the guest's
//! VMPL may not touch is absent from them).
//!
//! Page size: every 2 MiB-aligned region starts as one 2 MiB entry (its 512
//! pages share one state). A 4 KiB PVALIDATE or RMPADJUST inside it splits
//! it for good, as KVM PSMASHes a 2 MiB entry when the hardware reports a
//! size-mismatch #NPF; a 2 MiB operation on a split region fails with
//! FAIL_SIZEMISMATCH, as the hardware does on 4 KiB entries. Regions that
//! are not wholly inside one range start split.
//!
//! [`VmplMemory`] is guest memory as the guest's VMPL may access it under
//! this RMP, for the SVSM and devices acting on the guest's behalf (fw_cfg
//! DMA). [`LockedVmplMemory`] is the same for callers that must not hold
//! the RMP's lock between accesses (the CRB's MOVS emulation): each access
//! takes the lock for its check and copy only.
//!
//! Rules where the references are silent, chosen to match what SVSMs rely
//! on: RMPADJUST of a page that is not validated fails with FAIL_INPUT;
//! PVALIDATE does not change permissions; the caller is always VMPL0, so
//! RMPADJUST of VMPL0 itself fails with FAIL_PERMISSION.

use alloc::vec;
use alloc::vec::Vec;

use abi::boot::MemoryRange;
use abi::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::snp_instr::{
    PvalidateError, RmpAdjustAttributes, RmpAdjustError, RmpPageSize, VmplPermissions,
};

use spin::Mutex;

use crate::guest_mem::{GuestMemory, InvalidGpa};

/// The state of one page, packed: validated, VMSA, and 4 permission bits
/// for each of VMPL1, VMPL2, VMPL3.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageState(u16);

const VALIDATED: u16 = 1 << 0;
const VMSA: u16 = 1 << 1;
const PERMISSION_SHIFT: u16 = 4;

impl PageState {
    /// A page with the given validated bit and the same permissions for
    /// VMPL1-3.
    pub const fn new(validated: bool, lower_vmpls: VmplPermissions) -> PageState {
        let p = lower_vmpls.bits() as u16;
        let bits =
            (p << PERMISSION_SHIFT) | (p << (PERMISSION_SHIFT + 4)) | (p << (PERMISSION_SHIFT + 8));
        PageState(bits | if validated { VALIDATED } else { 0 })
    }

    /// Whether the page is validated.
    pub const fn validated(self) -> bool {
        self.0 & VALIDATED != 0
    }

    /// Whether the page is a VMSA.
    pub const fn vmsa(self) -> bool {
        self.0 & VMSA != 0
    }

    /// The permissions of `vmpl` (VMPL0 always has every permission).
    pub fn permissions(self, vmpl: u8) -> VmplPermissions {
        match vmpl {
            0 => VmplPermissions::ALL,
            1..=3 => {
                let shift = PERMISSION_SHIFT + 4 * (u16::from(vmpl) - 1);
                VmplPermissions::from_bits(((self.0 >> shift) & 0xF) as u8)
                    .expect("four bits are a valid permission byte")
            }
            _ => VmplPermissions::NONE,
        }
    }

    fn with_validated(self, validated: bool) -> PageState {
        PageState(if validated { self.0 | VALIDATED } else { self.0 & !VALIDATED })
    }

    fn adjusted(self, attributes: RmpAdjustAttributes) -> PageState {
        let shift = PERMISSION_SHIFT + 4 * (u16::from(attributes.target_vmpl) - 1);
        let mut bits = self.0 & !(0xF << shift);
        bits |= u16::from(attributes.permissions.bits()) << shift;
        bits = if attributes.vmsa { bits | VMSA } else { bits & !VMSA };
        PageState(bits)
    }
}

/// The RMP entries of one contiguous range of guest-physical memory.
struct RmpRange {
    range: MemoryRange,
    pages: Vec<PageState>,
    /// Per 2 MiB region overlapping the range (index from the range's first
    /// 2 MiB boundary at or below `range.base`): split into 4 KiB entries.
    split: Vec<bool>,
}

impl RmpRange {
    fn new(range: MemoryRange, initial: PageState) -> RmpRange {
        let first_region = range.base / LARGE_PAGE_SIZE;
        let end = range.base + range.size;
        let last_region = end.div_ceil(LARGE_PAGE_SIZE);
        let split = (first_region..last_region)
            .map(|region| {
                let start = region * LARGE_PAGE_SIZE;
                start < range.base || start + LARGE_PAGE_SIZE > end
            })
            .collect();
        RmpRange { range, pages: vec![initial; (range.size / PAGE_SIZE) as usize], split }
    }

    fn page_index(&self, gpa: u64) -> usize {
        ((gpa - self.range.base) / PAGE_SIZE) as usize
    }

    fn region_index(&self, gpa: u64) -> usize {
        (gpa / LARGE_PAGE_SIZE - self.range.base / LARGE_PAGE_SIZE) as usize
    }
}

/// The emulated RMP over the guest's memory.
pub struct Rmp {
    ranges: Vec<RmpRange>,
}

impl Rmp {
    /// An RMP over `ranges` (page aligned, not overlapping), each page of a
    /// range starting in the state given with it.
    pub fn new(ranges: &[(MemoryRange, PageState)]) -> Rmp {
        Rmp {
            ranges: ranges
                .iter()
                .filter(|(range, _)| range.size > 0)
                .map(|&(range, initial)| RmpRange::new(range, initial))
                .collect(),
        }
    }

    /// The state of the page at `gpa`, or `None` if the RMP does not cover
    /// it.
    pub fn page(&self, gpa: u64) -> Option<PageState> {
        let range = self.range_of(gpa, PAGE_SIZE)?;
        Some(range.pages[range.page_index(gpa & !(PAGE_SIZE - 1))])
    }

    /// Whether the 2 MiB region holding `gpa` is one 2 MiB entry.
    pub fn is_large(&self, gpa: u64) -> bool {
        self.range_of(gpa, PAGE_SIZE).is_some_and(|range| !range.split[range.region_index(gpa)])
    }

    fn range_of(&self, gpa: u64, size: u64) -> Option<&RmpRange> {
        let wanted = MemoryRange { base: gpa, size };
        self.ranges.iter().find(|r| r.range.contains_range(&wanted))
    }

    fn range_of_mut(&mut self, gpa: u64, size: u64) -> Option<&mut RmpRange> {
        let wanted = MemoryRange { base: gpa, size };
        self.ranges.iter_mut().find(|r| r.range.contains_range(&wanted))
    }

    /// Finds the entries an instruction on (`gpa`, `size`) acts on: checks
    /// alignment and coverage, splits a 2 MiB entry for a 4 KiB operation,
    /// and refuses a 2 MiB operation on split entries. Returns the range and
    /// the page indices.
    fn entries(
        &mut self,
        gpa: u64,
        size: RmpPageSize,
    ) -> Result<(&mut RmpRange, core::ops::Range<usize>), EntryError> {
        if !gpa.is_multiple_of(size.bytes()) {
            return Err(EntryError::Input);
        }
        let range = self.range_of_mut(gpa, size.bytes()).ok_or(EntryError::Input)?;
        let region = range.region_index(gpa);
        match size {
            RmpPageSize::Size4K => range.split[region] = true,
            RmpPageSize::Size2M if range.split[region] => return Err(EntryError::SizeMismatch),
            RmpPageSize::Size2M => {}
        }
        let first = range.page_index(gpa);
        let count = (size.bytes() / PAGE_SIZE) as usize;
        Ok((range, first..first + count))
    }

    /// PVALIDATE of the page of `size` at `gpa`.
    pub fn pvalidate(
        &mut self,
        gpa: u64,
        size: RmpPageSize,
        validate: bool,
    ) -> Result<(), PvalidateError> {
        let (range, pages) = self.entries(gpa, size).map_err(|e| match e {
            EntryError::Input => PvalidateError::Input,
            EntryError::SizeMismatch => PvalidateError::SizeMismatch,
        })?;
        // A 2 MiB entry is uniform, so its first page speaks for all.
        if range.pages[pages.start].validated() == validate {
            return Err(PvalidateError::Unchanged);
        }
        for page in &mut range.pages[pages] {
            *page = page.with_validated(validate);
        }
        Ok(())
    }

    /// RMPADJUST of the page of `size` at `gpa`, by VMPL0.
    pub fn rmpadjust(
        &mut self,
        gpa: u64,
        size: RmpPageSize,
        attributes: RmpAdjustAttributes,
    ) -> Result<(), RmpAdjustError> {
        if attributes.target_vmpl == 0 {
            return Err(RmpAdjustError::Permission);
        }
        if attributes.target_vmpl > abi::snp_instr::MAX_VMPL {
            return Err(RmpAdjustError::Input);
        }
        // Check before splitting: a failed instruction changes nothing.
        let covered = self.range_of(gpa, size.bytes()).is_some();
        if !covered || !gpa.is_multiple_of(size.bytes()) {
            return Err(RmpAdjustError::Input);
        }
        if !self.page(gpa).is_some_and(PageState::validated) {
            return Err(RmpAdjustError::Input);
        }
        let (range, pages) = self.entries(gpa, size).map_err(|e| match e {
            EntryError::Input => RmpAdjustError::Input,
            EntryError::SizeMismatch => RmpAdjustError::SizeMismatch,
        })?;
        for page in &mut range.pages[pages] {
            *page = page.adjusted(attributes);
        }
        Ok(())
    }

    /// Every range the RMP covers.
    pub fn ranges(&self) -> impl Iterator<Item = MemoryRange> + '_ {
        self.ranges.iter().map(|r| r.range)
    }

    /// Whether `vmpl` has every permission of `wanted` on each page that
    /// `[gpa, gpa + len)` touches (none for `len` 0); false if the range
    /// wraps or a page is not covered. One pass over the pages' entries:
    /// a 4 GiB range is a million of them.
    pub fn allows(&self, gpa: u64, len: u64, vmpl: u8, wanted: VmplPermissions) -> bool {
        let Some(end) = gpa.checked_add(len) else { return false };
        let mut at = gpa & !(PAGE_SIZE - 1);
        while at < end {
            let Some(range) = self.range_of(at, PAGE_SIZE) else { return false };
            let stop = end.min(range.range.base + range.range.size);
            let pages = range.page_index(at)..=range.page_index(stop - 1);
            let next = range.range.base + (*pages.end() as u64 + 1) * PAGE_SIZE;
            if !range.pages[pages].iter().all(|page| page.permissions(vmpl).contains(wanted)) {
                return false;
            }
            at = next;
        }
        true
    }
}

/// Guest memory as one VMPL may access it: the checked guest memory's
/// rules (guest RAM, not the SVSM's, no page the SVSM holds) and, page by
/// page, that VMPL's permissions in the RMP: READ to read, WRITE to write.
///
/// It is how the SVSM (and a device it lets DMA) touches memory on behalf
/// of the guest's VMPL when that VMPL may have lost the page meanwhile:
/// it borrows the RMP, so whoever holds it keeps the permissions fixed (on
/// the dev platform, the guest-memory lock is held) until the access ends.
pub struct VmplMemory<'a> {
    memory: &'a dyn GuestMemory,
    rmp: &'a Rmp,
    vmpl: u8,
}

impl<'a> VmplMemory<'a> {
    /// `memory` as `vmpl` may access it under `rmp`.
    pub fn new(memory: &'a dyn GuestMemory, rmp: &'a Rmp, vmpl: u8) -> VmplMemory<'a> {
        VmplMemory { memory, rmp, vmpl }
    }

    /// Whether `[gpa, gpa + len)` passes the checked memory's checks and
    /// the VMPL has `wanted` on each of its pages (for `len` 0, the page of
    /// `gpa`, as the checked memory checks the byte there).
    pub fn check_for(&self, gpa: u64, len: u64, wanted: VmplPermissions) -> Result<(), InvalidGpa> {
        self.memory.check(gpa, len)?;
        if !self.rmp.allows(gpa, len.max(1), self.vmpl, wanted) {
            return Err(InvalidGpa);
        }
        Ok(())
    }
}

impl GuestMemory for VmplMemory<'_> {
    fn check(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        self.check_for(gpa, len, VmplPermissions::READ | VmplPermissions::WRITE)
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), InvalidGpa> {
        self.check_for(gpa, buf.len() as u64, VmplPermissions::READ)?;
        self.memory.read(gpa, buf)
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), InvalidGpa> {
        self.check_for(gpa, data.len() as u64, VmplPermissions::WRITE)?;
        self.memory.write(gpa, data)
    }

    fn zero(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        self.check_for(gpa, len, VmplPermissions::WRITE)?;
        self.memory.zero(gpa, len)
    }
}

/// [`VmplMemory`] under the lock of the state `S` that holds the RMP, taken
/// by each access for its check and copy only and released before it
/// returns: no RMPADJUST under that lock changes the guest's permissions
/// between an access's check and its copy, and nothing the caller does
/// between accesses (a vTPM command run by a CRB write) holds it.
pub struct LockedVmplMemory<'a, S> {
    memory: &'a dyn GuestMemory,
    state: &'a Mutex<S>,
    rmp: fn(&S) -> &Rmp,
    vmpl: u8,
}

impl<'a, S> LockedVmplMemory<'a, S> {
    /// `memory` as `vmpl` may access it under the RMP that `rmp` finds in
    /// the state behind `state`.
    pub fn new(
        memory: &'a dyn GuestMemory,
        state: &'a Mutex<S>,
        rmp: fn(&S) -> &Rmp,
        vmpl: u8,
    ) -> LockedVmplMemory<'a, S> {
        LockedVmplMemory { memory, state, rmp, vmpl }
    }

    /// Runs `access` on the [`VmplMemory`] view, under the lock.
    fn locked<T>(&self, access: impl FnOnce(&VmplMemory<'_>) -> T) -> T {
        let state = self.state.lock();
        access(&VmplMemory::new(self.memory, (self.rmp)(&state), self.vmpl))
    }
}

impl<S> GuestMemory for LockedVmplMemory<'_, S> {
    fn check(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        self.locked(|memory| memory.check(gpa, len))
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), InvalidGpa> {
        self.locked(|memory| memory.read(gpa, buf))
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), InvalidGpa> {
        self.locked(|memory| memory.write(gpa, data))
    }

    fn zero(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        self.locked(|memory| memory.zero(gpa, len))
    }
}

enum EntryError {
    Input,
    SizeMismatch,
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAM: MemoryRange = MemoryRange { base: 0, size: 0x80_0000 };
    const FULL: VmplPermissions = VmplPermissions::ALL;

    fn rmp() -> Rmp {
        Rmp::new(&[(RAM, PageState::new(false, FULL))])
    }

    fn grant(vmpl: u8, permissions: VmplPermissions) -> RmpAdjustAttributes {
        RmpAdjustAttributes { target_vmpl: vmpl, permissions, vmsa: false }
    }

    #[test]
    fn double_validation_reports_unchanged_and_changes_nothing() {
        let mut rmp = rmp();
        assert_eq!(rmp.pvalidate(0x1000, RmpPageSize::Size4K, true), Ok(()));
        assert!(rmp.page(0x1000).unwrap().validated());
        assert_eq!(
            rmp.pvalidate(0x1000, RmpPageSize::Size4K, true),
            Err(PvalidateError::Unchanged)
        );
        assert_eq!(rmp.pvalidate(0x1000, RmpPageSize::Size4K, false), Ok(()));
        assert_eq!(
            rmp.pvalidate(0x1000, RmpPageSize::Size4K, false),
            Err(PvalidateError::Unchanged)
        );
        assert!(!rmp.page(0x2000).unwrap().validated(), "neighbours untouched");
    }

    #[test]
    fn large_pages_split_on_4k_operations_and_then_mismatch() {
        let mut rmp = rmp();
        assert!(rmp.is_large(0x20_0000));
        assert_eq!(rmp.pvalidate(0x20_0000, RmpPageSize::Size2M, true), Ok(()));
        assert!(rmp.page(0x3F_F000).unwrap().validated());
        assert_eq!(
            rmp.pvalidate(0x20_0000, RmpPageSize::Size2M, true),
            Err(PvalidateError::Unchanged)
        );
        // A 4K operation inside the 2M entry splits it (KVM's PSMASH) and
        // acts on that page only.
        assert_eq!(
            rmp.pvalidate(0x21_0000, RmpPageSize::Size4K, true),
            Err(PvalidateError::Unchanged)
        );
        assert!(!rmp.is_large(0x20_0000));
        assert_eq!(rmp.pvalidate(0x21_0000, RmpPageSize::Size4K, false), Ok(()));
        assert!(rmp.page(0x21_1000).unwrap().validated());
        assert_eq!(
            rmp.pvalidate(0x20_0000, RmpPageSize::Size2M, false),
            Err(PvalidateError::SizeMismatch)
        );
        assert_eq!(
            rmp.rmpadjust(0x20_0000, RmpPageSize::Size2M, grant(1, FULL)),
            Err(RmpAdjustError::SizeMismatch)
        );
    }

    #[test]
    fn hostile_addresses_fail_with_input() {
        let mut rmp = rmp();
        assert_eq!(rmp.pvalidate(0x1001, RmpPageSize::Size4K, true), Err(PvalidateError::Input));
        assert_eq!(rmp.pvalidate(0x1000, RmpPageSize::Size2M, true), Err(PvalidateError::Input));
        assert_eq!(rmp.pvalidate(0x80_0000, RmpPageSize::Size4K, true), Err(PvalidateError::Input));
        assert_eq!(rmp.pvalidate(!0xFFF, RmpPageSize::Size4K, true), Err(PvalidateError::Input));
        assert_eq!(
            rmp.pvalidate(0x7F_F000 & !0x1F_FFFF, RmpPageSize::Size2M, true),
            Ok(()),
            "the last whole region"
        );
        assert_eq!(rmp.page(0x80_0000), None);
    }

    #[test]
    fn rmpadjust_checks_vmpl_validation_and_sets_vmsa() {
        let mut rmp = rmp();
        assert_eq!(
            rmp.rmpadjust(0x3000, RmpPageSize::Size4K, grant(2, FULL)),
            Err(RmpAdjustError::Input),
            "not validated"
        );
        rmp.pvalidate(0x3000, RmpPageSize::Size4K, true).unwrap();
        assert_eq!(
            rmp.rmpadjust(0x3000, RmpPageSize::Size4K, grant(0, FULL)),
            Err(RmpAdjustError::Permission)
        );
        assert_eq!(
            rmp.rmpadjust(0x3000, RmpPageSize::Size4K, grant(2, VmplPermissions::NONE)),
            Ok(())
        );
        let page = rmp.page(0x3000).unwrap();
        assert_eq!(page.permissions(2), VmplPermissions::NONE);
        assert_eq!(page.permissions(1), FULL, "other VMPLs keep theirs");
        assert_eq!(page.permissions(0), FULL);
        let vmsa =
            RmpAdjustAttributes { target_vmpl: 1, permissions: VmplPermissions::NONE, vmsa: true };
        rmp.rmpadjust(0x3000, RmpPageSize::Size4K, vmsa).unwrap();
        assert!(rmp.page(0x3000).unwrap().vmsa());
        rmp.rmpadjust(0x3000, RmpPageSize::Size4K, grant(1, FULL)).unwrap();
        assert!(!rmp.page(0x3000).unwrap().vmsa(), "RMPADJUST without the bit clears it");
    }

    #[test]
    fn ranges_with_unaligned_ends_start_split() {
        let range = MemoryRange { base: 0x10_0000, size: 0x38_0000 };
        let mut rmp = Rmp::new(&[(range, PageState::new(true, VmplPermissions::NONE))]);
        assert!(!rmp.is_large(0x10_0000));
        assert!(rmp.is_large(0x20_0000));
        assert!(rmp.is_large(0x3F_F000));
        assert!(!rmp.is_large(0x40_0000));
        assert_eq!(
            rmp.pvalidate(0x20_0000, RmpPageSize::Size2M, false),
            Ok(()),
            "the whole region inside the range"
        );
        assert_eq!(rmp.pvalidate(0x0, RmpPageSize::Size2M, false), Err(PvalidateError::Input));
        let page = rmp.page(0x10_0000).unwrap();
        assert!(page.validated());
        assert_eq!(page.permissions(3), VmplPermissions::NONE);
    }

    #[test]
    fn allows_checks_every_page_a_range_touches_across_ranges() {
        const READ: VmplPermissions = VmplPermissions::READ;
        let second = MemoryRange { base: RAM.size, size: 0x4000 };
        let mut rmp =
            Rmp::new(&[(RAM, PageState::new(true, FULL)), (second, PageState::new(true, FULL))]);
        assert!(rmp.allows(0x7F_F800, 0x1000, 2, FULL), "across two ranges");
        assert!(rmp.allows(0, RAM.size + 0x4000, 2, FULL), "all of it");
        assert!(!rmp.allows(0, RAM.size + 0x4001, 2, FULL), "one byte past the end");
        assert!(!rmp.allows(u64::MAX, 2, 2, READ), "wraps");
        assert!(rmp.allows(0x9000_0000, 0, 2, READ), "nothing touched");
        rmp.rmpadjust(0x5000, RmpPageSize::Size4K, grant(2, READ)).unwrap();
        assert!(rmp.allows(0x4FFF, 2, 2, READ));
        assert!(!rmp.allows(0x4FFF, 2, 2, VmplPermissions::WRITE), "its last byte's page");
        assert!(rmp.allows(0x4FFF, 2, 1, FULL), "another VMPL");
        assert!(rmp.allows(0x6000, 0x1000, 2, FULL), "the next page");
    }
}
