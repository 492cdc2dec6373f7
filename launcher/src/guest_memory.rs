//! Host memory backing the guest: one anonymous mapping per region of the
//! [`GuestLayout`]. Native VMs use it as their RAM; SNP VMs use it as the
//! shared half of each guest_memfd slot and as the source buffer of
//! LAUNCH_UPDATE.
//!
//! Access is by guest-physical address through checked methods: an address
//! outside the layout is an error, never an out-of-bounds access. The
//! launcher runs one vCPU on the thread that owns this memory, so the guest
//! never runs while the host holds a slice of it.

use std::io;
use std::ptr::NonNull;

use thiserror::Error;

use crate::layout::{GuestLayout, Region};

/// An access outside guest memory.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("guest-physical range {gpa:#x}+{len:#x} is not inside one region of guest memory")]
pub struct OutOfRange {
    /// Start of the access.
    pub gpa: u64,
    /// Its length.
    pub len: u64,
}

/// One anonymous, private, zero-filled host mapping.
pub struct HostRegion {
    region: Region,
    ptr: NonNull<u8>,
}

impl HostRegion {
    fn map(region: Region) -> io::Result<Self> {
        let len = usize::try_from(region.size).map_err(|_| io::ErrorKind::OutOfMemory)?;
        // SAFETY: an anonymous private mapping with no address hint touches
        // no existing memory; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(io::ErrorKind::OutOfMemory)?;
        Ok(HostRegion { region, ptr })
    }

    /// The guest region this mapping backs.
    pub fn region(&self) -> Region {
        self.region
    }

    /// The host virtual address of the mapping (for KVM memory slots).
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `region.size` readable bytes for the life of
        // `self`; only the owning thread accesses them while the vCPU (run on
        // that same thread) is stopped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.region.size as usize) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only slice.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.region.size as usize) }
    }
}

impl Drop for HostRegion {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`size` are exactly the mapping created in `map`, and
        // no slice into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.region.size as usize);
        }
    }
}

/// The host memory of every region of a guest layout.
pub struct GuestMemory {
    regions: Vec<HostRegion>,
}

impl GuestMemory {
    /// Maps every region of `layout`.
    pub fn new(layout: &GuestLayout) -> io::Result<Self> {
        let regions =
            layout.regions().iter().map(|r| HostRegion::map(*r)).collect::<io::Result<_>>()?;
        Ok(GuestMemory { regions })
    }

    /// The mappings, in address order.
    pub fn regions(&self) -> &[HostRegion] {
        &self.regions
    }

    fn locate(&self, gpa: u64, len: u64) -> Result<(usize, usize), OutOfRange> {
        self.regions
            .iter()
            .position(|r| r.region.contains(gpa, len))
            .map(|i| (i, (gpa - self.regions[i].region.gpa) as usize))
            .ok_or(OutOfRange { gpa, len })
    }

    /// The bytes at `[gpa, gpa + len)`, which must lie in one region.
    pub fn slice(&self, gpa: u64, len: u64) -> Result<&[u8], OutOfRange> {
        let (i, off) = self.locate(gpa, len)?;
        Ok(&self.regions[i].bytes()[off..off + len as usize])
    }

    /// The bytes at `[gpa, gpa + len)` for writing.
    pub fn slice_mut(&mut self, gpa: u64, len: u64) -> Result<&mut [u8], OutOfRange> {
        let (i, off) = self.locate(gpa, len)?;
        Ok(&mut self.regions[i].bytes_mut()[off..off + len as usize])
    }

    /// Copies `data` to `gpa`.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        self.slice_mut(gpa, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_bounds_checked() {
        let layout = GuestLayout::new(4 << 20, None).unwrap();
        let mut mem = GuestMemory::new(&layout).unwrap();
        mem.write(0x1000, b"abc").unwrap();
        assert_eq!(mem.slice(0x1000, 3).unwrap(), b"abc");
        assert_eq!(mem.slice(0x2000, 2).unwrap(), &[0, 0]);
        assert_eq!(mem.write((4 << 20) - 1, b"xy"), Err(OutOfRange { gpa: (4 << 20) - 1, len: 2 }));
        assert!(mem.slice(u64::MAX, 2).is_err());
    }
}
