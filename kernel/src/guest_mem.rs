//! The one way the SVSM touches guest memory on behalf of the guest.
//!
//! Every guest-physical address a guest hands the SVSM (calling areas,
//! request lists, VMSAs, buffers) is hostile. [`CheckedGuestMemory`]
//! refuses, before touching anything: ranges that wrap, anything outside
//! the guest's RAM (MMIO, holes, addresses past the end), anything that
//! overlaps the SVSM's own region, and guest pages the SVSM has taken
//! ([`OwnedPages`]: VMSAs, deposited memory). The access itself goes through
//! a [`RawGuestMemory`] that recovers from faults (on SNP a page the guest
//! made shared or rescinded faults), so a bad page yields an error, never a
//! crash. Protocol handlers only ever see the [`GuestMemory`] trait, which
//! host tests and the fuzz target implement with a buffer.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use abi::boot::MemoryRange;
use abi::layout::PAGE_SIZE;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A guest-physical range the SVSM may not access for the guest, or an
/// access to it that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidGpa;

/// Checked access to guest memory.
pub trait GuestMemory {
    /// Whether `[gpa, gpa + len)` may be accessed, without accessing it.
    fn check(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa>;
    /// Copies `buf.len()` bytes from guest memory at `gpa`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), InvalidGpa>;
    /// Copies `data` into guest memory at `gpa`.
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), InvalidGpa>;
    /// Fills `len` bytes of guest memory at `gpa` with zeros.
    fn zero(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa>;
}

/// Reads a `T` from guest memory at `gpa` (any alignment).
pub fn read_obj<T: FromBytes + IntoBytes>(
    memory: &(impl GuestMemory + ?Sized),
    gpa: u64,
) -> Result<T, InvalidGpa> {
    let mut value = T::new_zeroed();
    memory.read(gpa, value.as_mut_bytes())?;
    Ok(value)
}

/// Writes `value` into guest memory at `gpa` (any alignment).
pub fn write_obj<T: IntoBytes + Immutable>(
    memory: &(impl GuestMemory + ?Sized),
    gpa: u64,
    value: &T,
) -> Result<(), InvalidGpa> {
    memory.write(gpa, value.as_bytes())
}

/// Why the SVSM holds a guest page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageOwner {
    /// A guest vCPU's VMSA (CREATE_VCPU).
    Vmsa,
    /// Memory the guest deposited (DEPOSIT_MEM).
    Deposited,
}

impl PageOwner {
    /// The word reports use.
    pub fn name(self) -> &'static str {
        match self {
            PageOwner::Vmsa => "vmsa",
            PageOwner::Deposited => "deposited",
        }
    }
}

/// Guest pages the SVSM has taken from the guest, by GPA. Shared by every
/// CPU: protocol handlers add and remove pages, the memory checks read it.
pub struct OwnedPages {
    pages: spin::Mutex<BTreeMap<u64, PageOwner>>,
}

impl Default for OwnedPages {
    fn default() -> OwnedPages {
        OwnedPages::new()
    }
}

impl OwnedPages {
    /// No pages.
    pub const fn new() -> OwnedPages {
        OwnedPages { pages: spin::Mutex::new(BTreeMap::new()) }
    }

    /// Records that the SVSM took the page at `gpa`; false if it already
    /// held it.
    pub fn insert(&self, gpa: u64, owner: PageOwner) -> bool {
        let mut pages = self.pages.lock();
        if pages.contains_key(&gpa) {
            return false;
        }
        pages.insert(gpa, owner);
        true
    }

    /// Gives the page at `gpa` back; returns who held it.
    pub fn remove(&self, gpa: u64) -> Option<PageOwner> {
        self.pages.lock().remove(&gpa)
    }

    /// Who holds the page containing `gpa`, if the SVSM does.
    pub fn owner(&self, gpa: u64) -> Option<PageOwner> {
        self.pages.lock().get(&(gpa & !(PAGE_SIZE - 1))).copied()
    }

    /// Whether the SVSM holds any page of `[gpa, end)`.
    pub fn any_in(&self, gpa: u64, end: u64) -> bool {
        self.pages.lock().range(gpa & !(PAGE_SIZE - 1)..end).next().is_some()
    }

    /// Pages held for `owner`.
    pub fn count(&self, owner: PageOwner) -> usize {
        self.pages.lock().values().filter(|o| **o == owner).count()
    }
}

/// Where the guest's RAM is and which ranges belong to the SVSM.
#[derive(Clone, Debug, Default)]
pub struct GuestLayout {
    ram: Vec<MemoryRange>,
    svsm: Vec<MemoryRange>,
}

impl GuestLayout {
    /// A layout with the guest RAM ranges `ram` and the SVSM's ranges
    /// `svsm` (which may lie inside `ram`: they are carved out).
    pub fn new(ram: &[MemoryRange], svsm: &[MemoryRange]) -> GuestLayout {
        GuestLayout { ram: ram.to_vec(), svsm: svsm.to_vec() }
    }

    /// The guest RAM ranges (SVSM ranges included).
    pub fn ram(&self) -> &[MemoryRange] {
        &self.ram
    }

    /// The SVSM's ranges.
    pub fn svsm(&self) -> &[MemoryRange] {
        &self.svsm
    }

    /// Whether `gpa` lies in the SVSM's memory.
    pub fn is_svsm(&self, gpa: u64) -> bool {
        let byte = MemoryRange { base: gpa, size: 1 };
        self.svsm.iter().any(|r| r.overlaps(&byte))
    }

    /// Checks that `[gpa, gpa + len)` does not wrap, lies inside one guest
    /// RAM range and overlaps no SVSM range. Returns the end.
    pub fn check(&self, gpa: u64, len: u64) -> Result<u64, InvalidGpa> {
        let wanted = MemoryRange { base: gpa, size: len };
        let end = wanted.end().ok_or(InvalidGpa)?;
        if !self.ram.iter().any(|r| r.contains_range(&wanted)) {
            return Err(InvalidGpa);
        }
        let touches_svsm = MemoryRange { base: gpa, size: len.max(1) };
        if self.svsm.iter().any(|r| r.overlaps(&touches_svsm)) {
            return Err(InvalidGpa);
        }
        Ok(end)
    }
}

/// A memory access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault;

/// Unchecked access to guest-physical memory, recovering from faults. Only
/// [`CheckedGuestMemory`] calls it, after its checks.
pub trait RawGuestMemory {
    /// Copies from guest memory.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Fault>;
    /// Copies into guest memory.
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Fault>;
    /// Zeroes guest memory.
    fn zero(&self, gpa: u64, len: u64) -> Result<(), Fault>;
}

/// Guest memory behind every check this module promises.
pub struct CheckedGuestMemory<'a> {
    layout: &'a GuestLayout,
    owned: &'a OwnedPages,
    raw: &'a dyn RawGuestMemory,
}

impl<'a> CheckedGuestMemory<'a> {
    /// Checked access to `raw` under `layout`, excluding `owned` pages.
    pub fn new(
        layout: &'a GuestLayout,
        owned: &'a OwnedPages,
        raw: &'a dyn RawGuestMemory,
    ) -> CheckedGuestMemory<'a> {
        CheckedGuestMemory { layout, owned, raw }
    }
}

impl GuestMemory for CheckedGuestMemory<'_> {
    fn check(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        let end = self.layout.check(gpa, len)?;
        if self.owned.any_in(gpa, end.max(gpa.saturating_add(1))) {
            return Err(InvalidGpa);
        }
        Ok(())
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), InvalidGpa> {
        self.check(gpa, buf.len() as u64)?;
        self.raw.read(gpa, buf).map_err(|Fault| InvalidGpa)
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), InvalidGpa> {
        self.check(gpa, data.len() as u64)?;
        self.raw.write(gpa, data).map_err(|Fault| InvalidGpa)
    }

    fn zero(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        self.check(gpa, len)?;
        self.raw.zero(gpa, len).map_err(|Fault| InvalidGpa)
    }
}

/// Guest memory reached through the kernel's direct map, which covers all
/// of RAM; each copy recovers from faults through the exception table.
#[cfg(target_os = "none")]
pub struct DirectMap;

#[cfg(target_os = "none")]
unsafe extern "sysv64" {
    /// Copies `len` bytes from `src` to `dst`; returns 0, or 1 if it faulted.
    fn guest_copy_bytes(dst: *mut u8, src: *const u8, len: usize) -> u64;
    /// Zeroes `len` bytes at `dst`; returns 0, or 1 if it faulted.
    fn guest_zero_bytes(dst: *mut u8, len: usize) -> u64;
}

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .text.guest_mem, "ax"
    .global guest_copy_bytes
    guest_copy_bytes:
        mov rcx, rdx
    1:  rep movsb
        xor eax, eax
        ret
    2:  mov eax, 1
        ret
    .global guest_zero_bytes
    guest_zero_bytes:
        mov rcx, rsi
        xor eax, eax
    3:  rep stosb
        ret
    4:  mov eax, 1
        ret
    .section .exception_table, "a"
    .balign 8
    .quad 1b, 2b
    .quad 3b, 4b
    "#
);

/// The guest's layout, once the platform knows it (bare metal).
#[cfg(target_os = "none")]
static LAYOUT: spin::Once<GuestLayout> = spin::Once::new();
/// Guest pages the SVSM holds (bare metal: one set for the whole SVSM).
#[cfg(target_os = "none")]
pub static OWNED: OwnedPages = OwnedPages::new();

/// Records the guest's layout (once, at boot, by the platform).
#[cfg(target_os = "none")]
pub fn init_layout(layout: GuestLayout) -> &'static GuestLayout {
    LAYOUT.call_once(|| layout)
}

/// The guest's layout, if a platform that runs guests set it.
#[cfg(target_os = "none")]
pub fn layout() -> Option<&'static GuestLayout> {
    LAYOUT.get()
}

/// The guest's memory as the SVSM may touch it for the guest: checked
/// against the layout and [`OWNED`]. Without a layout (no guest), nothing
/// is guest memory.
#[cfg(target_os = "none")]
pub fn guest() -> CheckedGuestMemory<'static> {
    static EMPTY: GuestLayout = GuestLayout { ram: Vec::new(), svsm: Vec::new() };
    CheckedGuestMemory::new(layout().unwrap_or(&EMPTY), &OWNED, &DirectMap)
}

#[cfg(target_os = "none")]
impl DirectMap {
    fn address(gpa: u64, len: u64) -> Result<u64, Fault> {
        let end = gpa.checked_add(len).ok_or(Fault)?;
        if end > abi::layout::DIRECT_MAP_SIZE {
            return Err(Fault);
        }
        Ok(crate::mm::paging::phys_to_virt(gpa))
    }
}

#[cfg(target_os = "none")]
impl RawGuestMemory for DirectMap {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let src = DirectMap::address(gpa, buf.len() as u64)?;
        // SAFETY: `src` is in the direct map; a fault on it resumes at the
        // fixup (exception table) and is reported. The destination is a
        // live Rust buffer of `buf.len()` bytes. Guest memory is never
        // referenced by Rust, so the copy aliases nothing.
        let faulted = unsafe { guest_copy_bytes(buf.as_mut_ptr(), src as *const u8, buf.len()) };
        if faulted == 0 { Ok(()) } else { Err(Fault) }
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Fault> {
        let dst = DirectMap::address(gpa, data.len() as u64)?;
        // SAFETY: as for `read`; the caller checked that the range is guest
        // memory, so the write corrupts nothing the SVSM relies on.
        let faulted = unsafe { guest_copy_bytes(dst as *mut u8, data.as_ptr(), data.len()) };
        if faulted == 0 { Ok(()) } else { Err(Fault) }
    }

    fn zero(&self, gpa: u64, len: u64) -> Result<(), Fault> {
        let dst = DirectMap::address(gpa, len)?;
        // SAFETY: as for `write`.
        let faulted = unsafe { guest_zero_bytes(dst as *mut u8, len as usize) };
        if faulted == 0 { Ok(()) } else { Err(Fault) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_doubles::FakeGuestRam;

    fn layout() -> GuestLayout {
        GuestLayout::new(
            &[
                MemoryRange { base: 0, size: 0xA_0000 },
                MemoryRange { base: 0x10_0000, size: 0x1F0_0000 },
            ],
            &[MemoryRange { base: 0x80_0000, size: 0x40_0000 }],
        )
    }

    #[test]
    fn reads_and_writes_guest_ram() {
        let layout = layout();
        let owned = OwnedPages::new();
        let ram = FakeGuestRam::new(0, 0x200_0000);
        let memory = CheckedGuestMemory::new(&layout, &owned, &ram);
        write_obj(&memory, 0x10_0FFC, &0x1122_3344_5566_7788u64).unwrap();
        assert_eq!(read_obj::<u64>(&memory, 0x10_0FFC), Ok(0x1122_3344_5566_7788));
        memory.zero(0x10_1000, 8).unwrap();
        assert_eq!(read_obj::<u32>(&memory, 0x10_0FFC), Ok(0x5566_7788));
        assert_eq!(read_obj::<u32>(&memory, 0x10_1000), Ok(0));
    }

    #[test]
    fn refuses_svsm_memory_mmio_holes_wraps_and_owned_pages() {
        let layout = layout();
        let owned = OwnedPages::new();
        let ram = FakeGuestRam::new(0, 0x200_0000);
        let memory = CheckedGuestMemory::new(&layout, &owned, &ram);
        let mut buf = [0u8; 16];
        for gpa in [
            0x80_0000,    // SVSM
            0xBF_FFF8,    // last bytes of the SVSM region
            0x7F_FFF8,    // runs into the SVSM region
            0xA_0000,     // hole below 1 MiB
            0x9_FFF8,     // runs into the hole
            0x200_0000,   // past the end of RAM
            0xFEE0_0000,  // MMIO
            u64::MAX - 7, // wraps
        ] {
            assert_eq!(memory.read(gpa, &mut buf), Err(InvalidGpa), "{gpa:#x}");
            assert_eq!(memory.write(gpa, &buf), Err(InvalidGpa), "{gpa:#x}");
        }
        assert_eq!(memory.zero(0x10_0000, u64::MAX), Err(InvalidGpa));
        assert!(owned.insert(0x30_0000, PageOwner::Deposited));
        assert!(!owned.insert(0x30_0000, PageOwner::Vmsa));
        assert_eq!(memory.read(0x30_0800, &mut buf), Err(InvalidGpa));
        assert_eq!(memory.read(0x2F_FFF8, &mut buf), Err(InvalidGpa), "straddles into it");
        assert_eq!(memory.read(0x2F_FFF0, &mut buf), Ok(()));
        assert_eq!(owned.owner(0x30_0FFF), Some(PageOwner::Deposited));
        assert_eq!(owned.remove(0x30_0000), Some(PageOwner::Deposited));
        assert_eq!(memory.read(0x30_0800, &mut buf), Ok(()));
        assert!(layout.is_svsm(0x80_0000) && !layout.is_svsm(0x7F_FFFF));
    }
}
