//! A decoder for the x86 instructions guests use on MMIO pages.
//!
//! On the dev platform an access to an emulated device page is a nested page
//! fault, and QEMU's SVM (TCG) gives neither the instruction bytes (decode
//! assists) nor the next RIP: the SVSM reads the instruction from guest
//! memory and decodes it here. Only the forms compilers and the kernels'
//! I/O helpers emit for MMIO are accepted:
//!
//! - `MOV r/m, reg` (88, 89), `MOV reg, r/m` (8A, 8B), `MOV r/m, imm` (C6 /0,
//!   C7 /0), `MOV` with an absolute offset (A0-A3);
//! - `MOVZX` / `MOVSX` from 8 or 16 bits (0F B6, B7, BE, BF);
//! - `MOVS` (A4, A5) with or without `REP` (Linux's `memcpy_toio` and
//!   `memcpy_fromio` are `rep movsl`).
//!
//! Prefixes: operand size (66), address size (67), segment overrides,
//! REP/REPNE (F3/F2, meaningful for MOVS only), and REX in 64-bit mode
//! (only when it immediately precedes the opcode, as the CPU treats it).
//! LOCK is refused (it makes MOV #UD). Addressing: ModRM with SIB,
//! disp8/disp32, RIP-relative in 64-bit mode; 16-bit addressing and 16-bit
//! code are refused. Every result carries the instruction length, which the
//! SVSM needs to advance RIP.

use crate::svm::decode::MAX_INSTRUCTION_LENGTH;

/// The guest's code size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// 64-bit mode (EFER.LMA and CS.L).
    Long64,
    /// 32-bit protected or compatibility mode (CS.D).
    Protected32,
    /// 16-bit code (real mode, or CS.D clear): not decoded.
    Legacy16,
}

/// A segment register named by an override prefix (or implied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// ES.
    Es,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
}

/// A general register operand: register number 0-15 (RAX..R15) and width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Register {
    /// 0 = RAX ... 15 = R15.
    pub number: u8,
    /// Width in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// AH, CH, DH or BH: bits 8-15 of register `number` (0-3).
    pub high_byte: bool,
}

/// A memory operand: `segment:[base + index * scale + displacement]`,
/// with addresses of `address_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryOperand {
    /// The segment (the last override, or implied: SS for RSP/RBP bases,
    /// else DS).
    pub segment: Segment,
    /// Base register number.
    pub base: Option<u8>,
    /// Index register number and scale (1, 2, 4, 8).
    pub index: Option<(u8, u8)>,
    /// Sign-extended displacement (or the absolute offset of A0-A3).
    pub displacement: i64,
    /// RIP-relative: the displacement counts from the next instruction.
    pub rip_relative: bool,
    /// 4 or 8.
    pub address_size: u8,
}

/// How a loaded value fills the destination register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// Same width (MOV).
    None,
    /// MOVZX.
    Zero,
    /// MOVSX.
    Sign,
}

/// What a store writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A register.
    Register(Register),
    /// An immediate, already sign-extended to the operand size.
    Immediate(u64),
}

/// The decoded memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `destination = [memory]` (`size` bytes), extended as `extend` says.
    Load {
        /// The memory operand.
        memory: MemoryOperand,
        /// Bytes read.
        size: u8,
        /// The destination register (its own width).
        destination: Register,
        /// Zero or sign extension.
        extend: Extend,
    },
    /// `[memory] = source` (`size` bytes).
    Store {
        /// The memory operand.
        memory: MemoryOperand,
        /// Bytes written.
        size: u8,
        /// What is written.
        source: Source,
    },
    /// `[ES:rDI] = [segment:rSI]`, `size` bytes per element.
    Movs {
        /// Bytes per element.
        size: u8,
        /// The source segment (DS or an override; the destination is ES).
        segment: Segment,
        /// REP (F3 or F2): repeat rCX times.
        repeat: bool,
        /// 4 or 8: whether RSI/RDI/RCX or ESI/EDI/ECX count.
        address_size: u8,
    },
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// Its length in bytes.
    pub length: u8,
    /// What it does to memory.
    pub access: Access,
}

/// Why bytes were not decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// More than 15 bytes.
    TooLong,
    /// An opcode this decoder does not emulate (the first opcode byte).
    Unsupported(u8),
    /// A register-only form (mod = 11): it touches no memory.
    NoMemoryOperand,
    /// LOCK on an instruction that does not allow it.
    Lock,
    /// 16-bit code or 16-bit addressing.
    Addressing16,
}

/// Prefix state collected before the opcode.
#[derive(Clone, Copy, Default)]
struct Prefixes {
    operand_size: bool,
    address_size: bool,
    repeat: bool,
    lock: bool,
    segment: Option<Segment>,
    /// The REX byte's low nibble, if a REX prefix counts.
    rex: Option<u8>,
}

impl Prefixes {
    fn rex_bit(&self, bit: u8) -> u8 {
        self.rex.map_or(0, |rex| (rex >> bit) & 1)
    }
    fn rex_w(&self) -> bool {
        self.rex_bit(3) == 1
    }
    fn rex_r(&self) -> u8 {
        self.rex_bit(2)
    }
    fn rex_x(&self) -> u8 {
        self.rex_bit(1)
    }
    fn rex_b(&self) -> u8 {
        self.rex_bit(0)
    }
}

/// A cursor over the instruction bytes that enforces the 15-byte limit.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        if self.at >= MAX_INSTRUCTION_LENGTH {
            return Err(DecodeError::TooLong);
        }
        let byte = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(byte)
    }

    fn peek(&self) -> Result<u8, DecodeError> {
        if self.at >= MAX_INSTRUCTION_LENGTH {
            return Err(DecodeError::TooLong);
        }
        self.bytes.get(self.at).copied().ok_or(DecodeError::Truncated)
    }

    /// A little-endian value of `size` bytes, zero-extended.
    fn value(&mut self, size: u8) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..size {
            value |= u64::from(self.next()?) << (8 * i);
        }
        Ok(value)
    }
}

/// Sign-extends the low `size` bytes of `value`.
pub fn sign_extend(value: u64, size: u8) -> u64 {
    match size {
        1 => value as u8 as i8 as i64 as u64,
        2 => value as u16 as i16 as i64 as u64,
        4 => value as u32 as i32 as i64 as u64,
        _ => value,
    }
}

/// Decodes the instruction at the start of `bytes`.
pub fn decode(bytes: &[u8], mode: CpuMode) -> Result<Instruction, DecodeError> {
    if mode == CpuMode::Legacy16 {
        return Err(DecodeError::Addressing16);
    }
    let mut cursor = Cursor { bytes, at: 0 };
    let prefixes = read_prefixes(&mut cursor, mode)?;
    if prefixes.address_size && mode == CpuMode::Protected32 {
        return Err(DecodeError::Addressing16);
    }
    let address_size = if mode == CpuMode::Long64 && !prefixes.address_size { 8 } else { 4 };
    let operand_size = if prefixes.rex_w() {
        8
    } else if prefixes.operand_size {
        2
    } else {
        4
    };
    let opcode = cursor.next()?;
    let access = match opcode {
        0x88 | 0x89 | 0x8A | 0x8B | 0xC6 | 0xC7 => {
            let size = if opcode & 1 == 0 { 1 } else { operand_size };
            let modrm = ModRm::read(&mut cursor, &prefixes, address_size, mode)?;
            let register = modrm.register(&prefixes, size);
            match opcode {
                0x88 | 0x89 => {
                    Access::Store { memory: modrm.memory, size, source: Source::Register(register) }
                }
                0x8A | 0x8B => Access::Load {
                    memory: modrm.memory,
                    size,
                    destination: register,
                    extend: Extend::None,
                },
                _ => {
                    if modrm.reg != 0 {
                        return Err(DecodeError::Unsupported(opcode));
                    }
                    let immediate_size = size.min(4);
                    let immediate = sign_extend(cursor.value(immediate_size)?, immediate_size);
                    Access::Store {
                        memory: modrm.memory,
                        size,
                        source: Source::Immediate(immediate),
                    }
                }
            }
        }
        0xA0..=0xA3 => {
            let size = if opcode & 1 == 0 { 1 } else { operand_size };
            let offset = cursor.value(address_size)?;
            let memory = MemoryOperand {
                segment: prefixes.segment.unwrap_or(Segment::Ds),
                base: None,
                index: None,
                displacement: offset as i64,
                rip_relative: false,
                address_size,
            };
            let accumulator = Register { number: 0, size, high_byte: false };
            if opcode < 0xA2 {
                Access::Load { memory, size, destination: accumulator, extend: Extend::None }
            } else {
                Access::Store { memory, size, source: Source::Register(accumulator) }
            }
        }
        0xA4 | 0xA5 => Access::Movs {
            size: if opcode == 0xA4 { 1 } else { operand_size },
            segment: prefixes.segment.unwrap_or(Segment::Ds),
            repeat: prefixes.repeat,
            address_size,
        },
        0x0F => {
            let second = cursor.next()?;
            let (size, extend) = match second {
                0xB6 => (1, Extend::Zero),
                0xB7 => (2, Extend::Zero),
                0xBE => (1, Extend::Sign),
                0xBF => (2, Extend::Sign),
                _ => return Err(DecodeError::Unsupported(opcode)),
            };
            let modrm = ModRm::read(&mut cursor, &prefixes, address_size, mode)?;
            let destination = modrm.register(&prefixes, operand_size);
            Access::Load { memory: modrm.memory, size, destination, extend }
        }
        _ => return Err(DecodeError::Unsupported(opcode)),
    };
    if prefixes.lock {
        return Err(DecodeError::Lock);
    }
    Ok(Instruction { length: cursor.at as u8, access })
}

/// Legacy prefixes, then (64-bit mode) a REX byte. A REX that is not the
/// last prefix is ignored, as the CPU does.
fn read_prefixes(cursor: &mut Cursor<'_>, mode: CpuMode) -> Result<Prefixes, DecodeError> {
    let mut prefixes = Prefixes::default();
    loop {
        let byte = cursor.peek()?;
        let segment = match byte {
            0x26 => Some(Segment::Es),
            0x2E => Some(Segment::Cs),
            0x36 => Some(Segment::Ss),
            0x3E => Some(Segment::Ds),
            0x64 => Some(Segment::Fs),
            0x65 => Some(Segment::Gs),
            _ => None,
        };
        match byte {
            // In 64-bit mode ES, CS, SS and DS overrides do not displace an
            // FS or GS one (and the emulation gives them a zero base).
            _ if segment.is_some() => {
                let fs_or_gs = |s: Option<Segment>| matches!(s, Some(Segment::Fs | Segment::Gs));
                if mode != CpuMode::Long64 || fs_or_gs(segment) || !fs_or_gs(prefixes.segment) {
                    prefixes.segment = segment;
                }
            }
            0x66 => prefixes.operand_size = true,
            0x67 => prefixes.address_size = true,
            0xF2 | 0xF3 => prefixes.repeat = true,
            0xF0 => prefixes.lock = true,
            0x40..=0x4F if mode == CpuMode::Long64 => {
                cursor.next()?;
                if is_legacy_prefix(cursor.peek()?) || (0x40..=0x4F).contains(&cursor.peek()?) {
                    // Not the last prefix: this REX does not count.
                    continue;
                }
                prefixes.rex = Some(byte & 0xF);
                return Ok(prefixes);
            }
            _ => return Ok(prefixes),
        }
        cursor.next()?;
    }
}

fn is_legacy_prefix(byte: u8) -> bool {
    matches!(byte, 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3)
}

/// A ModRM byte with its memory operand decoded.
struct ModRm {
    reg: u8,
    memory: MemoryOperand,
}

impl ModRm {
    fn read(
        cursor: &mut Cursor<'_>,
        prefixes: &Prefixes,
        address_size: u8,
        mode: CpuMode,
    ) -> Result<ModRm, DecodeError> {
        let modrm = cursor.next()?;
        let (mode_bits, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
        if mode_bits == 3 {
            return Err(DecodeError::NoMemoryOperand);
        }
        let mut base = None;
        let mut index = None;
        let mut rip_relative = false;
        let mut displacement_size = match mode_bits {
            1 => 1,
            2 => 4,
            _ => 0,
        };
        if rm == 4 {
            let sib = cursor.next()?;
            let (scale, sib_index, sib_base) = (1u8 << (sib >> 6), (sib >> 3) & 7, sib & 7);
            let index_number = sib_index | (prefixes.rex_x() << 3);
            if index_number != 4 {
                index = Some((index_number, scale));
            }
            if sib_base == 5 && mode_bits == 0 {
                displacement_size = 4;
            } else {
                base = Some(sib_base | (prefixes.rex_b() << 3));
            }
        } else if rm == 5 && mode_bits == 0 {
            displacement_size = 4;
            rip_relative = mode == CpuMode::Long64;
        } else {
            base = Some(rm | (prefixes.rex_b() << 3));
        }
        let displacement = sign_extend(cursor.value(displacement_size)?, displacement_size) as i64;
        let implied = if matches!(base, Some(4 | 5)) { Segment::Ss } else { Segment::Ds };
        let memory = MemoryOperand {
            segment: prefixes.segment.unwrap_or(implied),
            base,
            index,
            displacement,
            rip_relative,
            address_size,
        };
        Ok(ModRm { reg, memory })
    }

    /// The register named by ModRM.reg, `size` bytes wide.
    fn register(&self, prefixes: &Prefixes, size: u8) -> Register {
        let number = self.reg | (prefixes.rex_r() << 3);
        // Without REX, byte registers 4-7 are AH, CH, DH, BH.
        if size == 1 && prefixes.rex.is_none() && (4..8).contains(&number) {
            return Register { number: number - 4, size, high_byte: true };
        }
        Register { number, size, high_byte: false }
    }
}

#[cfg(test)]
mod tests;
