//! Emulating a guest's access to an emulated MMIO page.
//!
//! The dev platform leaves device pages out of the guest's nested page
//! tables, so an access to one stops the guest with a nested page fault and
//! no hint of what it wanted (QEMU's SVM has no decode assists or next RIP).
//! [`emulate`] finds out and does it:
//! 1. fetch the instruction at CS:RIP through the guest's own page tables;
//! 2. decode it ([`super::decode`]);
//! 3. compute its memory operand's linear address, translate it, and check
//!    it is the page that faulted and lies in the device;
//! 4. perform the access on the [`MmioDevice`] (MOVS elements may also touch
//!    guest RAM), write the destination register, advance RIP.
//!
//! Every guest-physical access the emulation makes for the guest goes
//! through checked guest memory, so a guest cannot use the emulator to reach
//! SVSM memory. Two views are passed in:
//! - `tables`, for the page walks and the instruction bytes: the checked
//!   guest memory, unlocked. These accesses only read (the walker sets no
//!   accessed or dirty bits), so an RMPADJUST on another CPU cannot be
//!   undone by them: at worst they read a page the guest's VMPL was just
//!   denied and the SVSM has not yet taken (`OWNED` refuses it after), whose
//!   bytes are the guest's own, and nothing is written back.
//! - `ram`, for the RAM side of MOVS elements, which writes guest memory on
//!   the guest's behalf: on the dev platform a
//!   [`LockedVmplMemory`](crate::svm::rmp::LockedVmplMemory), so each
//!   element's check (the guest's VMPL must have WRITE to be written, READ to
//!   be read) and copy run under the guest-memory lock that RMPADJUST takes,
//!   and a page CREATE_VCPU revoked is never written after the revoke. The
//!   lock is not held across the device's side of an element (a CRB write
//!   may run a whole vTPM command).

use super::decode::{
    Access, CpuMode, DecodeError, Extend, Instruction, MemoryOperand, Register, Segment, Source,
    decode, sign_extend,
};
use crate::guest_mem::GuestMemory;
use crate::svm::decode::{self as walker, GuestPhysRead, MAX_INSTRUCTION_LENGTH, PageAccess};
pub use crate::svm::decode::{AccessKind, GuestPaging};

/// The most MOVS elements one exit performs; the rest run after the guest
/// re-executes the instruction (as after an interrupt in a REP string).
pub const MOVS_ELEMENTS_PER_EXIT: u64 = 4096;

/// The stopped guest vCPU, as the platform sees it.
pub trait GuestCpu {
    /// General register `number` (0 = RAX ... 15 = R15).
    fn register(&self, number: u8) -> u64;
    /// Sets general register `number`.
    fn set_register(&mut self, number: u8, value: u64);
    /// RIP.
    fn rip(&self) -> u64;
    /// Sets RIP.
    fn set_rip(&mut self, rip: u64);
    /// RFLAGS (DF steers MOVS).
    fn rflags(&self) -> u64;
    /// The code size.
    fn mode(&self) -> CpuMode;
    /// The current privilege level.
    fn cpl(&self) -> u8;
    /// The paging registers.
    fn paging(&self) -> GuestPaging;
    /// The base of `segment` (only FS and GS are asked in 64-bit mode).
    fn segment_base(&self, segment: Segment) -> u64;
}

/// An emulated device: accesses at an offset into its range.
pub trait MmioDevice {
    /// A read of `size` (1, 2, 4, 8) bytes at `offset`.
    fn read(&mut self, offset: u64, size: u8) -> u64;
    /// A write of the low `size` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, size: u8, value: u64);
}

const RFLAGS_DF: u64 = 1 << 10;

/// Why an access could not be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The instruction is not one the emulator handles.
    Decode(DecodeError),
    /// The guest's page tables do not allow this access (the guest would
    /// get a #PF here): linear address and access.
    PageFault {
        /// The linear address.
        linear: u64,
        /// The access.
        kind: AccessKind,
    },
    /// The instruction's memory operand is not on the page that faulted or
    /// runs out of the device.
    WrongAddress {
        /// Where the operand points (guest-physical).
        gpa: u64,
    },
    /// A guest-physical access the checked guest memory refused.
    GuestMemory {
        /// The address.
        gpa: u64,
    },
}

/// The device being emulated and where it sits.
pub struct DeviceWindow<'a> {
    /// Guest-physical base of the device's range.
    pub base: u64,
    /// Size of the range.
    pub size: u64,
    /// The device.
    pub device: &'a mut dyn MmioDevice,
}

impl DeviceWindow<'_> {
    /// The offset of `[gpa, gpa + size)` if it lies in the device.
    fn offset(&self, gpa: u64, size: u8) -> Option<u64> {
        let offset = gpa.checked_sub(self.base)?;
        (offset.checked_add(u64::from(size))? <= self.size).then_some(offset)
    }
}

/// Emulates the instruction that faulted on `fault_gpa` (inside `window`),
/// reading page tables and instruction bytes from `tables` and moving MOVS
/// elements to and from `ram` (see the module doc). On success the guest's
/// registers and RIP are updated; on error nothing visible to the guest
/// changed except completed MOVS elements.
pub fn emulate(
    cpu: &mut dyn GuestCpu,
    tables: &dyn GuestMemory,
    ram: &dyn GuestMemory,
    fault_gpa: u64,
    window: &mut DeviceWindow<'_>,
) -> Result<Instruction, MmioError> {
    let mode = cpu.mode();
    let bytes = fetch(cpu, tables)?;
    let instruction = decode(bytes.as_slice(), mode).map_err(MmioError::Decode)?;
    let next_rip = advance(cpu.rip(), instruction.length, mode);
    match instruction.access {
        Access::Load { memory: operand, size, destination, extend } => {
            let gpa = operand_gpa(cpu, tables, &operand, next_rip, AccessKind::Read)?;
            let offset = device_offset(window, gpa, size, fault_gpa)?;
            let value = window.device.read(offset, size);
            let value = match extend {
                Extend::None | Extend::Zero => value,
                Extend::Sign => sign_extend(value, size),
            };
            write_register(cpu, destination, value, mode);
        }
        Access::Store { memory: operand, size, source } => {
            let gpa = operand_gpa(cpu, tables, &operand, next_rip, AccessKind::Write)?;
            let offset = device_offset(window, gpa, size, fault_gpa)?;
            let value = match source {
                Source::Register(register) => read_register(cpu, register),
                Source::Immediate(value) => value,
            };
            window.device.write(offset, size, value);
        }
        Access::Movs { size, segment, repeat, address_size } => {
            let views = GuestViews { tables, ram };
            let done = movs(cpu, &views, window, size, segment, repeat, address_size)?;
            if !done {
                return Ok(instruction);
            }
        }
    }
    cpu.set_rip(next_rip);
    Ok(instruction)
}

/// RIP after an instruction of `length` bytes.
fn advance(rip: u64, length: u8, mode: CpuMode) -> u64 {
    let next = rip.wrapping_add(u64::from(length));
    if mode == CpuMode::Long64 { next } else { next & 0xFFFF_FFFF }
}

/// Up to 15 instruction bytes at CS:RIP (fewer if the next page is not
/// mapped: the instruction may still end before it).
fn fetch(cpu: &dyn GuestCpu, memory: &dyn GuestMemory) -> Result<InstructionBytes, MmioError> {
    let linear = linear_address(cpu, Segment::Cs, cpu.rip(), cpu.mode());
    let mut bytes = InstructionBytes { bytes: [0; MAX_INSTRUCTION_LENGTH], len: 0 };
    let reader = CheckedReader(memory);
    bytes.len = walker::fetch(&cpu.paging(), linear, cpu.cpl() == 3, &reader, &mut bytes.bytes)
        .map_err(|error| walk_error(error, linear, AccessKind::Fetch))?;
    Ok(bytes)
}

struct InstructionBytes {
    bytes: [u8; MAX_INSTRUCTION_LENGTH],
    len: usize,
}

impl InstructionBytes {
    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The linear address of `segment:offset`.
fn linear_address(cpu: &dyn GuestCpu, segment: Segment, offset: u64, mode: CpuMode) -> u64 {
    match mode {
        CpuMode::Long64 => match segment {
            Segment::Fs | Segment::Gs => cpu.segment_base(segment).wrapping_add(offset),
            _ => offset,
        },
        _ => cpu.segment_base(segment).wrapping_add(offset) & 0xFFFF_FFFF,
    }
}

/// The guest-physical address a MOV's memory operand refers to.
fn operand_gpa(
    cpu: &dyn GuestCpu,
    memory: &dyn GuestMemory,
    operand: &MemoryOperand,
    next_rip: u64,
    kind: AccessKind,
) -> Result<u64, MmioError> {
    let mut address = operand.displacement as u64;
    if operand.rip_relative {
        address = address.wrapping_add(next_rip);
    }
    if let Some(base) = operand.base {
        address = address.wrapping_add(cpu.register(base));
    }
    if let Some((index, scale)) = operand.index {
        address = address.wrapping_add(cpu.register(index).wrapping_mul(u64::from(scale)));
    }
    if operand.address_size == 4 {
        address &= 0xFFFF_FFFF;
    }
    let linear = linear_address(cpu, operand.segment, address, cpu.mode());
    translate(cpu, memory, linear, kind)
}

/// Checks that `[gpa, gpa + size)` is on the faulting page and in the
/// device, and returns its offset in the device.
fn device_offset(
    window: &DeviceWindow<'_>,
    gpa: u64,
    size: u8,
    fault_gpa: u64,
) -> Result<u64, MmioError> {
    let same_page = gpa & !0xFFF == fault_gpa & !0xFFF;
    match window.offset(gpa, size) {
        Some(offset) if same_page => Ok(offset),
        _ => Err(MmioError::WrongAddress { gpa }),
    }
}

/// Translates a linear address through the guest's page tables, with the
/// permission checks the guest's MMU would make for `kind` at its CPL.
fn translate(
    cpu: &dyn GuestCpu,
    memory: &dyn GuestMemory,
    linear: u64,
    kind: AccessKind,
) -> Result<u64, MmioError> {
    let access = PageAccess { kind, user: cpu.cpl() == 3 };
    cpu.paging()
        .translate_for(linear, access, &CheckedReader(memory))
        .map_err(|error| walk_error(error, linear, kind))
}

/// A failed walk as the emulator reports it: a page table or instruction
/// the SVSM may not read, or what the guest would take a #PF for.
fn walk_error(error: walker::WalkError, linear: u64, kind: AccessKind) -> MmioError {
    match error {
        walker::WalkError::TableNotReadable(gpa) => MmioError::GuestMemory { gpa },
        _ => MmioError::PageFault { linear, kind },
    }
}

/// The checked guest memory as the page walker reads it.
struct CheckedReader<'a>(&'a dyn GuestMemory);

impl GuestPhysRead for CheckedReader<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        self.0.read(gpa, buf).ok()
    }
}

/// A general register's value as an operand of `register.size` bytes.
fn read_register(cpu: &dyn GuestCpu, register: Register) -> u64 {
    let full = cpu.register(register.number);
    if register.high_byte { (full >> 8) & 0xFF } else { full }
}

/// Writes `value` to a register of `register.size` bytes: 32-bit writes
/// zero the upper half in 64-bit mode, 8- and 16-bit writes keep the rest.
fn write_register(cpu: &mut dyn GuestCpu, register: Register, value: u64, mode: CpuMode) {
    let old = cpu.register(register.number);
    let new = match (register.size, register.high_byte) {
        (1, true) => (old & !0xFF00) | ((value & 0xFF) << 8),
        (1, false) => (old & !0xFF) | (value & 0xFF),
        (2, _) => (old & !0xFFFF) | (value & 0xFFFF),
        (4, _) if mode == CpuMode::Long64 => value & 0xFFFF_FFFF,
        (4, _) => (old & !0xFFFF_FFFF) | (value & 0xFFFF_FFFF),
        _ => value,
    };
    cpu.set_register(register.number, new);
}

const RCX: u8 = 1;
const RSI: u8 = 6;
const RDI: u8 = 7;

/// The two views of guest memory [`emulate`] is given.
struct GuestViews<'a> {
    /// Page tables (read only, unlocked).
    tables: &'a dyn GuestMemory,
    /// The RAM side of MOVS elements.
    ram: &'a dyn GuestMemory,
}

/// MOVS: copies elements between the device and guest RAM (either side may
/// be either), translating through the page tables and moving RAM bytes
/// through the RAM view. Returns whether the instruction is complete
/// (false: the per-exit budget ran out; the guest re-executes it).
fn movs(
    cpu: &mut dyn GuestCpu,
    views: &GuestViews<'_>,
    window: &mut DeviceWindow<'_>,
    size: u8,
    segment: Segment,
    repeat: bool,
    address_size: u8,
) -> Result<bool, MmioError> {
    let mask = if address_size == 8 { u64::MAX } else { 0xFFFF_FFFF };
    let mode = cpu.mode();
    let step = if cpu.rflags() & RFLAGS_DF != 0 {
        (u64::from(size)).wrapping_neg()
    } else {
        u64::from(size)
    };
    let mut remaining = if repeat { cpu.register(RCX) & mask } else { 1 };
    let mut budget = MOVS_ELEMENTS_PER_EXIT;
    while remaining > 0 && budget > 0 {
        let source = cpu.register(RSI) & mask;
        let destination = cpu.register(RDI) & mask;
        let source_linear = linear_address(cpu, segment, source, mode);
        let destination_linear = linear_address(cpu, Segment::Es, destination, mode);
        let source_gpa = translate(cpu, views.tables, source_linear, AccessKind::Read)?;
        let destination_gpa = translate(cpu, views.tables, destination_linear, AccessKind::Write)?;
        let value = load(views.ram, window, source_gpa, size)?;
        store(views.ram, window, destination_gpa, size, value)?;
        // With 32-bit addresses the registers are written as 32-bit
        // registers: zero-extended.
        cpu.set_register(RSI, source.wrapping_add(step) & mask);
        cpu.set_register(RDI, destination.wrapping_add(step) & mask);
        remaining -= 1;
        budget -= 1;
        if repeat {
            cpu.set_register(RCX, remaining);
        }
    }
    Ok(remaining == 0)
}

/// One MOVS element read, from the device or guest RAM.
fn load(
    memory: &dyn GuestMemory,
    window: &mut DeviceWindow<'_>,
    gpa: u64,
    size: u8,
) -> Result<u64, MmioError> {
    if let Some(offset) = window.offset(gpa, size) {
        return Ok(window.device.read(offset, size));
    }
    let mut bytes = [0u8; 8];
    memory
        .read(gpa, &mut bytes[..usize::from(size)])
        .map_err(|_| MmioError::GuestMemory { gpa })?;
    Ok(u64::from_le_bytes(bytes))
}

/// One MOVS element written, to the device or guest RAM.
fn store(
    memory: &dyn GuestMemory,
    window: &mut DeviceWindow<'_>,
    gpa: u64,
    size: u8,
    value: u64,
) -> Result<(), MmioError> {
    if let Some(offset) = window.offset(gpa, size) {
        window.device.write(offset, size, value);
        return Ok(());
    }
    memory
        .write(gpa, &value.to_le_bytes()[..usize::from(size)])
        .map_err(|_| MmioError::GuestMemory { gpa })
}

#[cfg(test)]
mod tests;
