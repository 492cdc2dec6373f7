//! The decoder against GNU as encodings and, for many generated and random
//! byte strings, against the iced-x86 decoder.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register as IcedRegister};

use super::*;

fn reg(number: u8, size: u8) -> Register {
    Register { number, size, high_byte: false }
}

fn mem(base: Option<u8>, index: Option<(u8, u8)>, displacement: i64) -> MemoryOperand {
    MemoryOperand {
        segment: if matches!(base, Some(4 | 5)) { Segment::Ss } else { Segment::Ds },
        base,
        index,
        displacement,
        rip_relative: false,
        address_size: 8,
    }
}

fn load(memory: MemoryOperand, size: u8, destination: Register, extend: Extend) -> Access {
    Access::Load { memory, size, destination, extend }
}

fn store(memory: MemoryOperand, size: u8, source: Source) -> Access {
    Access::Store { memory, size, source }
}

/// Encodings from GNU as 2.40 (`as --64`, Intel syntax) with what they do.
#[test]
fn gnu_as_encodings() {
    let rip = MemoryOperand { rip_relative: true, ..mem(None, None, 0x1234) };
    let fs = MemoryOperand { segment: Segment::Fs, ..mem(Some(3), None, 0) };
    let absolute = |address: i64| mem(None, None, address);
    let eax_based = MemoryOperand { address_size: 4, ..mem(Some(0), None, 0) };
    let movs = |size, repeat| Access::Movs { size, segment: Segment::Ds, repeat, address_size: 8 };
    let cases: &[(&[u8], Access)] = &[
        // mov dword ptr [rax], ecx
        (&[0x89, 0x08], store(mem(Some(0), None, 0), 4, Source::Register(reg(1, 4)))),
        // mov qword ptr [rip + 0x1234], rdx
        (&[0x48, 0x89, 0x15, 0x34, 0x12, 0, 0], store(rip, 8, Source::Register(reg(2, 8)))),
        // mov byte ptr [r12 + 8], sil
        (
            &[0x41, 0x88, 0x74, 0x24, 0x08],
            store(mem(Some(12), None, 8), 1, Source::Register(reg(6, 1))),
        ),
        // mov ah, byte ptr [rbx]
        (
            &[0x8A, 0x23],
            load(
                mem(Some(3), None, 0),
                1,
                Register { number: 0, size: 1, high_byte: true },
                Extend::None,
            ),
        ),
        // mov eax, dword ptr [rdx + rcx*4 + 0x40]
        (
            &[0x8B, 0x44, 0x8A, 0x40],
            load(mem(Some(2), Some((1, 4)), 0x40), 4, reg(0, 4), Extend::None),
        ),
        // mov r15w, word ptr [r9 - 0x80]
        (
            &[0x66, 0x45, 0x8B, 0x79, 0x80],
            load(mem(Some(9), None, -0x80), 2, reg(15, 2), Extend::None),
        ),
        // mov byte ptr [rdi], 0x7f
        (&[0xC6, 0x07, 0x7F], store(mem(Some(7), None, 0), 1, Source::Immediate(0x7F))),
        // mov dword ptr [rbp + 0x44], 0x12345678
        (
            &[0xC7, 0x45, 0x44, 0x78, 0x56, 0x34, 0x12],
            store(mem(Some(5), None, 0x44), 4, Source::Immediate(0x1234_5678)),
        ),
        // mov qword ptr [rsp + 0x10], -2
        (
            &[0x48, 0xC7, 0x44, 0x24, 0x10, 0xFE, 0xFF, 0xFF, 0xFF],
            store(mem(Some(4), None, 0x10), 8, Source::Immediate(u64::MAX - 1)),
        ),
        // mov word ptr [rax], 0xbeef
        (
            &[0x66, 0xC7, 0x00, 0xEF, 0xBE],
            store(mem(Some(0), None, 0), 2, Source::Immediate(0xFFFF_FFFF_FFFF_BEEF)),
        ),
        // movzx eax, byte ptr [rdx]
        (&[0x0F, 0xB6, 0x02], load(mem(Some(2), None, 0), 1, reg(0, 4), Extend::Zero)),
        // movzx r8d, word ptr [rsi + 0x58]
        (
            &[0x44, 0x0F, 0xB7, 0x46, 0x58],
            load(mem(Some(6), None, 0x58), 2, reg(8, 4), Extend::Zero),
        ),
        // movsx rax, byte ptr [rcx]
        (&[0x48, 0x0F, 0xBE, 0x01], load(mem(Some(1), None, 0), 1, reg(0, 8), Extend::Sign)),
        // movsx ecx, word ptr [rax + rax*8]
        (
            &[0x0F, 0xBF, 0x0C, 0xC0],
            load(mem(Some(0), Some((0, 8)), 0), 2, reg(1, 4), Extend::Sign),
        ),
        // rep movsd / movsb / rep movsq / movsw
        (&[0xF3, 0xA5], movs(4, true)),
        (&[0xA4], movs(1, false)),
        (&[0xF3, 0x48, 0xA5], movs(8, true)),
        (&[0x66, 0xA5], movs(2, false)),
        // mov eax, dword ptr fs:[rbx]
        (&[0x64, 0x8B, 0x03], load(fs, 4, reg(0, 4), Extend::None)),
        // movabs ds:0xfed40040, eax / movabs eax, ds:0xfed40044
        (
            &[0xA3, 0x40, 0x00, 0xD4, 0xFE, 0, 0, 0, 0],
            store(absolute(0xFED4_0040), 4, Source::Register(reg(0, 4))),
        ),
        (
            &[0xA1, 0x44, 0x00, 0xD4, 0xFE, 0, 0, 0, 0],
            load(absolute(0xFED4_0044), 4, reg(0, 4), Extend::None),
        ),
        // mov dword ptr [r13 + 0], eax (r13 needs a displacement, no SS)
        (&[0x41, 0x89, 0x45, 0x00], store(mem(Some(13), None, 0), 4, Source::Register(reg(0, 4)))),
        // mov ecx, dword ptr [r13 + rbp*2 + 0]
        (
            &[0x41, 0x8B, 0x4C, 0x6D, 0x00],
            load(mem(Some(13), Some((5, 2)), 0), 4, reg(1, 4), Extend::None),
        ),
        // mov edx, dword ptr [eax]
        (&[0x67, 0x8B, 0x10], load(eax_based, 4, reg(2, 4), Extend::None)),
    ];
    for (bytes, access) in cases {
        let decoded = decode(bytes, CpuMode::Long64);
        assert_eq!(
            decoded,
            Ok(Instruction { length: bytes.len() as u8, access: *access }),
            "{bytes:02x?}"
        );
        // Trailing bytes do not change the result.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&[0x90; 8]);
        assert_eq!(decode(&longer, CpuMode::Long64), decoded);
    }
}

#[test]
fn refusals() {
    let long = CpuMode::Long64;
    assert_eq!(decode(&[], long), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x8B], long), Err(DecodeError::Truncated));
    assert_eq!(decode(&[0x8B, 0x80, 0, 0], long), Err(DecodeError::Truncated), "disp32 cut");
    assert_eq!(decode(&[0x89, 0xC8], long), Err(DecodeError::NoMemoryOperand), "mov eax, ecx");
    assert_eq!(decode(&[0xF0, 0x89, 0x08], long), Err(DecodeError::Lock));
    assert_eq!(
        decode(&[0xC7, 0x48, 0x00, 0, 0, 0, 0], long),
        Err(DecodeError::Unsupported(0xC7)),
        "C7 /1"
    );
    assert_eq!(decode(&[0x0F, 0x05], long), Err(DecodeError::Unsupported(0x0F)), "syscall");
    assert_eq!(decode(&[0x01, 0x08], long), Err(DecodeError::Unsupported(0x01)), "add");
    assert_eq!(decode(&[0x89, 0x08], CpuMode::Legacy16), Err(DecodeError::Addressing16));
    assert_eq!(decode(&[0x67, 0x89, 0x08], CpuMode::Protected32), Err(DecodeError::Addressing16));
    let mut prefixes = vec![0x66; 14];
    prefixes.extend_from_slice(&[0x89, 0x08]);
    assert_eq!(decode(&prefixes, long), Err(DecodeError::TooLong));
}

#[test]
fn rex_counts_only_right_before_the_opcode() {
    // 48 66 89 08: the REX is followed by a prefix, so it is ignored: mov [rax], cx.
    let decoded = decode(&[0x48, 0x66, 0x89, 0x08], CpuMode::Long64).unwrap();
    assert_eq!(decoded.access, store(mem(Some(0), None, 0), 2, Source::Register(reg(1, 2))));
    // 40 88 20: an empty REX turns AH into SPL.
    let decoded = decode(&[0x40, 0x88, 0x20], CpuMode::Long64).unwrap();
    assert_eq!(decoded.access, store(mem(Some(0), None, 0), 1, Source::Register(reg(4, 1))));
    // In 32-bit mode 0x48 is DEC EAX, not a prefix.
    assert_eq!(
        decode(&[0x48, 0x89, 0x08], CpuMode::Protected32),
        Err(DecodeError::Unsupported(0x48))
    );
}

#[test]
fn protected_mode_addressing_has_no_rip_relative_form() {
    // mov eax, [0x12345678] (ModRM 05 is disp32, not RIP-relative, in 32-bit code).
    let decoded = decode(&[0x8B, 0x05, 0x78, 0x56, 0x34, 0x12], CpuMode::Protected32).unwrap();
    let memory = MemoryOperand { address_size: 4, ..mem(None, None, 0x1234_5678) };
    assert_eq!(
        decoded,
        Instruction { length: 6, access: load(memory, 4, reg(0, 4), Extend::None) }
    );
}

// ---- Cross-check with iced-x86 -------------------------------------------------------------

/// What iced says about a memory-accessing MOV-family instruction.
fn iced_view(bytes: &[u8], bitness: u32) -> Option<iced_x86::Instruction> {
    let mut decoder = Decoder::with_ip(bitness, bytes, 0, DecoderOptions::NONE);
    let instruction = decoder.decode();
    (!instruction.is_invalid()).then_some(instruction)
}

fn iced_register(register: Register) -> IcedRegister {
    use IcedRegister::*;
    const Q: [IcedRegister; 16] =
        [RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15];
    const D: [IcedRegister; 16] =
        [EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI, R8D, R9D, R10D, R11D, R12D, R13D, R14D, R15D];
    const W: [IcedRegister; 16] =
        [AX, CX, DX, BX, SP, BP, SI, DI, R8W, R9W, R10W, R11W, R12W, R13W, R14W, R15W];
    const B: [IcedRegister; 16] =
        [AL, CL, DL, BL, SPL, BPL, SIL, DIL, R8L, R9L, R10L, R11L, R12L, R13L, R14L, R15L];
    const H: [IcedRegister; 4] = [AH, CH, DH, BH];
    let n = usize::from(register.number);
    match (register.size, register.high_byte) {
        (1, true) => H[n],
        (1, false) => B[n],
        (2, _) => W[n],
        (4, _) => D[n],
        _ => Q[n],
    }
}

fn iced_gpr(number: u8, address_size: u8) -> IcedRegister {
    iced_register(Register { number, size: address_size, high_byte: false })
}

fn iced_segment(segment: Segment) -> IcedRegister {
    match segment {
        Segment::Es => IcedRegister::ES,
        Segment::Cs => IcedRegister::CS,
        Segment::Ss => IcedRegister::SS,
        Segment::Ds => IcedRegister::DS,
        Segment::Fs => IcedRegister::FS,
        Segment::Gs => IcedRegister::GS,
    }
}

/// Whether iced sees one of the forms we decode (and must decode).
fn is_ours(instruction: &iced_x86::Instruction) -> bool {
    let memory_operand =
        (0..instruction.op_count()).any(|i| instruction.op_kind(i) == OpKind::Memory);
    match instruction.mnemonic() {
        Mnemonic::Mov => {
            // Only general registers: MOV to or from segment, control and
            // debug registers is another instruction.
            let general = (0..instruction.op_count()).all(|i| {
                instruction.op_kind(i) != OpKind::Register || instruction.op_register(i).is_gpr()
            });
            memory_operand && general && !instruction.has_lock_prefix()
        }
        Mnemonic::Movzx | Mnemonic::Movsx => memory_operand && !instruction.has_lock_prefix(),
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => {
            !instruction.has_lock_prefix()
        }
        _ => false,
    }
}

fn check_memory(ours: &MemoryOperand, length: u8, iced: &iced_x86::Instruction, bytes: &[u8]) {
    let address_size = ours.address_size;
    let base = if ours.rip_relative {
        if address_size == 8 { IcedRegister::RIP } else { IcedRegister::EIP }
    } else {
        ours.base.map_or(IcedRegister::None, |b| iced_gpr(b, address_size))
    };
    assert_eq!(iced.memory_base(), base, "base {bytes:02x?}");
    let index = ours.index.map_or(IcedRegister::None, |(i, _)| iced_gpr(i, address_size));
    assert_eq!(iced.memory_index(), index, "index {bytes:02x?}");
    if let Some((_, scale)) = ours.index {
        assert_eq!(iced.memory_index_scale(), u32::from(scale), "scale {bytes:02x?}");
    }
    let mut displacement = ours.displacement as u64;
    if ours.rip_relative {
        displacement = displacement.wrapping_add(u64::from(length));
    }
    if address_size == 4 {
        displacement &= 0xFFFF_FFFF;
    }
    assert_eq!(iced.memory_displacement64(), displacement, "displacement {bytes:02x?}");
    assert_eq!(iced.memory_segment(), iced_segment(ours.segment), "segment {bytes:02x?}");
}

/// Checks our result against iced's for `bytes`; returns whether we
/// decoded it.
fn cross_check(bytes: &[u8], mode: CpuMode) -> bool {
    let bitness = if mode == CpuMode::Long64 { 64 } else { 32 };
    let ours = decode(bytes, mode);
    let iced = iced_view(bytes, bitness);
    match (&ours, &iced) {
        (Ok(instruction), Some(iced)) => {
            assert!(is_ours(iced), "{bytes:02x?}: we decode {instruction:?}, iced says {iced:?}");
            assert_eq!(usize::from(instruction.length), iced.len(), "length {bytes:02x?}");
            match instruction.access {
                Access::Load { memory, size, destination, .. } => {
                    check_memory(&memory, instruction.length, iced, bytes);
                    assert_eq!(iced.op_kind(0), OpKind::Register, "{bytes:02x?}");
                    assert_eq!(iced.op_register(0), iced_register(destination), "dst {bytes:02x?}");
                    assert_eq!(iced.memory_size().size(), usize::from(size), "size {bytes:02x?}");
                }
                Access::Store { memory, size, source } => {
                    check_memory(&memory, instruction.length, iced, bytes);
                    assert_eq!(iced.memory_size().size(), usize::from(size), "size {bytes:02x?}");
                    match source {
                        Source::Register(register) => {
                            assert_eq!(
                                iced.op_register(1),
                                iced_register(register),
                                "src {bytes:02x?}"
                            );
                        }
                        Source::Immediate(value) => {
                            let mask = if size == 8 { u64::MAX } else { (1u64 << (8 * size)) - 1 };
                            assert_eq!(iced.immediate(1) & mask, value & mask, "imm {bytes:02x?}");
                        }
                    }
                }
                Access::Movs { size, segment, repeat, address_size } => {
                    assert_eq!(iced.memory_size().size(), usize::from(size), "size {bytes:02x?}");
                    assert_eq!(iced.memory_segment(), iced_segment(segment), "seg {bytes:02x?}");
                    assert_eq!(
                        repeat,
                        iced.has_rep_prefix() || iced.has_repne_prefix(),
                        "rep {bytes:02x?}"
                    );
                    let source =
                        if address_size == 8 { OpKind::MemorySegRSI } else { OpKind::MemorySegESI };
                    assert_eq!(iced.op_kind(1), source, "source operand {bytes:02x?}");
                }
            }
        }
        (Ok(instruction), None) => {
            panic!("{bytes:02x?}: we decode {instruction:?}, iced says invalid")
        }
        (Err(error), Some(iced)) if is_ours(iced) => {
            // Only refusals by design: 16-bit addressing or code, or more
            // bytes than we were given are acceptable.
            let fine = matches!(error, DecodeError::Addressing16 | DecodeError::Truncated)
                || (iced.len() > bytes.len());
            assert!(fine, "{bytes:02x?}: iced decodes {iced:?} ({}), we say {error:?}", iced.len());
        }
        (Err(_), _) => {}
    }
    ours.is_ok()
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() as usize % items.len()]
    }
}

/// Instructions built from our opcodes with random prefixes, ModRM, SIB,
/// displacements and immediates.
#[test]
fn agrees_with_iced_on_generated_mov_forms() {
    let prefixes = [0x66, 0x67, 0xF2, 0xF3, 0x2E, 0x26, 0x36, 0x3E, 0x64, 0x65, 0xF0];
    let opcodes: &[&[u8]] = &[
        &[0x88],
        &[0x89],
        &[0x8A],
        &[0x8B],
        &[0xC6],
        &[0xC7],
        &[0xA0],
        &[0xA1],
        &[0xA2],
        &[0xA3],
        &[0xA4],
        &[0xA5],
        &[0x0F, 0xB6],
        &[0x0F, 0xB7],
        &[0x0F, 0xBE],
        &[0x0F, 0xBF],
    ];
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut decoded = 0;
    for _ in 0..200_000 {
        let mut bytes = Vec::new();
        for _ in 0..rng.next() % 4 {
            bytes.push(rng.pick(&prefixes));
        }
        if rng.next().is_multiple_of(2) {
            bytes.push(0x40 | (rng.byte() & 0xF));
        }
        bytes.extend_from_slice(rng.pick(opcodes));
        for _ in 0..12 {
            bytes.push(rng.byte());
        }
        let mode =
            if rng.next().is_multiple_of(4) { CpuMode::Protected32 } else { CpuMode::Long64 };
        decoded += usize::from(cross_check(&bytes, mode));
    }
    assert!(decoded > 100_000, "only {decoded} generated instructions decoded");
}

/// Completely random bytes: whatever we accept, iced must agree with.
#[test]
fn agrees_with_iced_on_random_bytes() {
    let mut rng = Rng(0xD1CE_F00D_0000_0042);
    let mut decoded = 0;
    for _ in 0..200_000 {
        let len = 1 + rng.next() as usize % 16;
        let bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        decoded += usize::from(cross_check(&bytes, CpuMode::Long64));
        decoded += usize::from(cross_check(&bytes, CpuMode::Protected32));
    }
    assert!(decoded > 1_000, "only {decoded} random byte strings decoded");
}
