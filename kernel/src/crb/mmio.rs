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
//! Every guest-physical access the emulation makes for the guest (page
//! tables, instruction bytes, the RAM side of MOVS) goes through the checked
//! guest memory, so a guest cannot use the emulator to reach SVSM memory.

use super::decode::{
    Access, CpuMode, DecodeError, Extend, Instruction, MAX_INSTRUCTION_LEN, MemoryOperand,
    Register, Segment, Source, decode, sign_extend,
};
use crate::guest_mem::GuestMemory;

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
    fn paging(&self) -> PagingRegisters;
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

/// CR0, CR3, CR4 and EFER: what the page walk needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingRegisters {
    /// CR0 (PG bit 31, WP bit 16).
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 (LA57 bit 12).
    pub cr4: u64,
    /// EFER (LMA bit 10, NXE bit 11).
    pub efer: u64,
}

const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const RFLAGS_DF: u64 = 1 << 10;

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_LARGE: u64 = 1 << 7;
const PTE_NX: u64 = 1 << 63;
const PTE_ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;

/// What an access through the guest's page tables is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

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
    /// Paging the walker does not implement (32-bit paging modes).
    UnsupportedPaging,
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

/// Emulates the instruction that faulted on `fault_gpa` (inside `window`).
/// On success the guest's registers and RIP are updated; on error nothing
/// visible to the guest changed except completed MOVS elements.
pub fn emulate(
    cpu: &mut dyn GuestCpu,
    memory: &dyn GuestMemory,
    fault_gpa: u64,
    window: &mut DeviceWindow<'_>,
) -> Result<Instruction, MmioError> {
    let mode = cpu.mode();
    let bytes = fetch(cpu, memory)?;
    let instruction = decode(bytes.as_slice(), mode).map_err(MmioError::Decode)?;
    let next_rip = advance(cpu.rip(), instruction.length, mode);
    match instruction.access {
        Access::Load { memory: operand, size, destination, extend } => {
            let gpa = operand_gpa(cpu, memory, &operand, next_rip, AccessKind::Read)?;
            let offset = device_offset(window, gpa, size, fault_gpa)?;
            let value = window.device.read(offset, size);
            let value = match extend {
                Extend::None | Extend::Zero => value,
                Extend::Sign => sign_extend(value, size),
            };
            write_register(cpu, destination, value, mode);
        }
        Access::Store { memory: operand, size, source } => {
            let gpa = operand_gpa(cpu, memory, &operand, next_rip, AccessKind::Write)?;
            let offset = device_offset(window, gpa, size, fault_gpa)?;
            let value = match source {
                Source::Register(register) => read_register(cpu, register),
                Source::Immediate(value) => value,
            };
            window.device.write(offset, size, value);
        }
        Access::Movs { size, segment, repeat, address_size } => {
            let done = movs(cpu, memory, window, size, segment, repeat, address_size)?;
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
    let mut bytes = InstructionBytes { bytes: [0; MAX_INSTRUCTION_LEN], len: 0 };
    while bytes.len < MAX_INSTRUCTION_LEN {
        let at = linear.wrapping_add(bytes.len as u64);
        let gpa = match translate(cpu, memory, at, AccessKind::Fetch) {
            Ok(gpa) => gpa,
            Err(error) if bytes.len == 0 => return Err(error),
            Err(_) => break,
        };
        let in_page = (0x1000 - (at & 0xFFF)) as usize;
        let take = in_page.min(MAX_INSTRUCTION_LEN - bytes.len);
        let chunk = &mut bytes.bytes[bytes.len..bytes.len + take];
        if memory.read(gpa, chunk).is_err() {
            if bytes.len == 0 {
                return Err(MmioError::GuestMemory { gpa });
            }
            break;
        }
        bytes.len += take;
    }
    Ok(bytes)
}

struct InstructionBytes {
    bytes: [u8; MAX_INSTRUCTION_LEN],
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

/// Translates a linear address through the guest's page tables (4- or
/// 5-level long-mode paging, or none).
pub fn translate(
    cpu: &dyn GuestCpu,
    memory: &dyn GuestMemory,
    linear: u64,
    kind: AccessKind,
) -> Result<u64, MmioError> {
    let paging = cpu.paging();
    if paging.cr0 & CR0_PG == 0 {
        return Ok(linear & 0xFFFF_FFFF);
    }
    if paging.efer & EFER_LMA == 0 || paging.cr4 & CR4_PAE == 0 {
        return Err(MmioError::UnsupportedPaging);
    }
    let levels: u32 = if paging.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
    let fault = MmioError::PageFault { linear, kind };
    let user = cpu.cpl() == 3;
    let mut table = paging.cr3 & PTE_ADDRESS;
    for level in (0..levels).rev() {
        let shift = 12 + 9 * level;
        let index = (linear >> shift) & 0x1FF;
        let entry_gpa = table + index * 8;
        let mut entry = [0u8; 8];
        memory
            .read(entry_gpa, &mut entry)
            .map_err(|_| MmioError::GuestMemory { gpa: entry_gpa })?;
        let entry = u64::from_le_bytes(entry);
        let denied = entry & PTE_PRESENT == 0
            || (kind == AccessKind::Write
                && entry & PTE_WRITABLE == 0
                && (user || paging.cr0 & CR0_WP != 0))
            || (user && entry & PTE_USER == 0)
            || (kind == AccessKind::Fetch && paging.efer & EFER_NXE != 0 && entry & PTE_NX != 0);
        if denied {
            return Err(fault);
        }
        // PS in a PDPTE (1 GiB) or PDE (2 MiB) ends the walk.
        if level > 0 && level < 3 && entry & PTE_LARGE != 0 {
            let page_mask = (1u64 << shift) - 1;
            return Ok((entry & PTE_ADDRESS & !page_mask) | (linear & page_mask));
        }
        table = entry & PTE_ADDRESS;
    }
    Ok(table | (linear & 0xFFF))
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

/// MOVS: copies elements between the device and guest RAM (either side may
/// be either). Returns whether the instruction is complete (false: the
/// per-exit budget ran out; the guest re-executes it).
fn movs(
    cpu: &mut dyn GuestCpu,
    memory: &dyn GuestMemory,
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
        let source_gpa = translate(cpu, memory, source_linear, AccessKind::Read)?;
        let destination_gpa = translate(cpu, memory, destination_linear, AccessKind::Write)?;
        let value = load(memory, window, source_gpa, size)?;
        store(memory, window, destination_gpa, size, value)?;
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
