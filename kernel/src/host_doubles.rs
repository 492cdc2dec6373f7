//! Test doubles for host builds (unit tests, the protocol fuzz target):
//! guest RAM in a buffer, and a platform whose PVALIDATE and RMPADJUST run
//! on the dev platform's real emulated RMP.

use alloc::vec;
use alloc::vec::Vec;

use abi::boot::MemoryRange;
use abi::snp_instr::{
    PvalidateError, RmpAdjustAttributes, RmpAdjustError, RmpPageSize, VmplPermissions,
};

use crate::cpu::io::IoPort;
use crate::guest_mem::{Fault, RawGuestMemory};
use crate::platform::{Platform, PlatformKind};
use crate::svm::rmp::{PageState, Rmp};

/// Guest RAM `[base, base + size)` held in a buffer.
pub struct FakeGuestRam {
    base: u64,
    bytes: spin::Mutex<Vec<u8>>,
}

impl FakeGuestRam {
    /// Zeroed RAM of `size` bytes at `base`.
    pub fn new(base: u64, size: u64) -> FakeGuestRam {
        FakeGuestRam { base, bytes: spin::Mutex::new(vec![0; size as usize]) }
    }

    fn span(&self, gpa: u64, len: u64) -> Result<core::ops::Range<usize>, Fault> {
        let start = gpa.checked_sub(self.base).ok_or(Fault)?;
        let end = start.checked_add(len).ok_or(Fault)?;
        if end > self.bytes.lock().len() as u64 {
            return Err(Fault);
        }
        Ok(start as usize..end as usize)
    }

    /// Fills `[gpa, gpa + len)` with `byte` (test setup, unchecked).
    pub fn fill(&self, gpa: u64, len: u64, byte: u8) {
        let span = self.span(gpa, len).expect("test fills inside the fake RAM");
        self.bytes.lock()[span].fill(byte);
    }
}

impl RawGuestMemory for FakeGuestRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let span = self.span(gpa, buf.len() as u64)?;
        buf.copy_from_slice(&self.bytes.lock()[span]);
        Ok(())
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Fault> {
        let span = self.span(gpa, data.len() as u64)?;
        self.bytes.lock()[span].copy_from_slice(data);
        Ok(())
    }

    fn zero(&self, gpa: u64, len: u64) -> Result<(), Fault> {
        let span = self.span(gpa, len)?;
        self.bytes.lock()[span].fill(0);
        Ok(())
    }
}

struct NoIo;

impl IoPort for NoIo {
    fn outb(&self, _port: u16, _value: u8) {}
    fn inb(&self, _port: u16) -> u8 {
        0xFF
    }
    fn outw(&self, _port: u16, _value: u16) {}
    fn inw(&self, _port: u16) -> u16 {
        0xFFFF
    }
    fn outl(&self, _port: u16, _value: u32) {}
    fn inl(&self, _port: u16) -> u32 {
        0xFFFF_FFFF
    }
}

static NO_IO: NoIo = NoIo;

/// A guest-running platform whose page-state instructions act on an
/// emulated RMP (the dev platform's), over `ram` with every page starting
/// not validated and fully accessible to VMPL1-3 (the dev platform's
/// start state for guest RAM).
pub struct FakePlatform {
    /// The RMP, for tests to inspect.
    pub rmp: spin::Mutex<Rmp>,
}

impl FakePlatform {
    /// A platform over the guest RAM ranges `ram`.
    pub fn new(ram: &[MemoryRange]) -> FakePlatform {
        let initial = PageState::new(false, VmplPermissions::ALL);
        let ranges: Vec<_> = ram.iter().map(|r| (*r, initial)).collect();
        FakePlatform { rmp: spin::Mutex::new(Rmp::new(&ranges)) }
    }
}

impl Platform for FakePlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Dev
    }

    fn io(&self) -> &'static dyn IoPort {
        &NO_IO
    }

    fn cpuid(&self, _leaf: u32, _subleaf: u32) -> [u32; 4] {
        [0; 4]
    }

    fn exit(&self, code: u8) -> ! {
        panic!("the fake platform's VM exited with {code:#x}")
    }

    fn runs_guests(&self) -> bool {
        true
    }

    fn pvalidate(&self, gpa: u64, size: RmpPageSize, validate: bool) -> Result<(), PvalidateError> {
        self.rmp.lock().pvalidate(gpa, size, validate)
    }

    fn rmpadjust(
        &self,
        gpa: u64,
        size: RmpPageSize,
        attributes: RmpAdjustAttributes,
    ) -> Result<(), RmpAdjustError> {
        self.rmp.lock().rmpadjust(gpa, size, attributes)
    }
}

/// A stopped vCPU for the MMIO emulator: plain fields, FS the only segment
/// with a base.
#[derive(Clone, Debug)]
pub struct FakeGuestCpu {
    /// RAX ... R15.
    pub registers: [u64; 16],
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// The code size.
    pub mode: crate::crb::decode::CpuMode,
    /// The privilege level.
    pub cpl: u8,
    /// CR0, CR3, CR4, EFER.
    pub paging: crate::svm::decode::GuestPaging,
    /// FS's base.
    pub fs_base: u64,
}

impl crate::crb::mmio::GuestCpu for FakeGuestCpu {
    fn register(&self, number: u8) -> u64 {
        self.registers[usize::from(number)]
    }
    fn set_register(&mut self, number: u8, value: u64) {
        self.registers[usize::from(number)] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn mode(&self) -> crate::crb::decode::CpuMode {
        self.mode
    }
    fn cpl(&self) -> u8 {
        self.cpl
    }
    fn paging(&self) -> crate::svm::decode::GuestPaging {
        self.paging
    }
    fn segment_base(&self, segment: crate::crb::decode::Segment) -> u64 {
        if segment == crate::crb::decode::Segment::Fs { self.fs_base } else { 0 }
    }
}
