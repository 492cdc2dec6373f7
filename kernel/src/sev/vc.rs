//! The #VC (VMM communication) exception at VMPL0: under SEV-ES/SNP the
//! instructions the hypervisor intercepts do not exit; they raise #VC in the
//! guest, whose handler must emulate them. What reaches the SVSM's own code
//! is CPUID (answered from the CPUID page), port I/O (forwarded through the
//! GHCB) and RDMSR/WRMSR (forwarded through the GHCB).
//!
//! The handler decodes the faulting instruction itself (the error code says
//! only which intercept fired), checks that the two agree, emulates it on a
//! copy of the registers and advances RIP. It is host-tested: the registers
//! are a plain struct, the services a trait.

use super::ghcb::GhcbError;

/// #VC error code of CPUID (the SVM exit code).
pub const EXIT_CPUID: u64 = 0x72;
/// #VC error code of port I/O.
pub const EXIT_IOIO: u64 = 0x7B;
/// #VC error code of RDMSR/WRMSR.
pub const EXIT_MSR: u64 = 0x7C;

/// Longest x86 instruction.
pub const MAX_INSTRUCTION_LENGTH: usize = 15;

/// Where a port number comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortOperand {
    /// An 8-bit immediate.
    Immediate(u8),
    /// DX.
    Dx,
}

/// An instruction the #VC handler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instruction {
    /// CPUID (0F A2).
    Cpuid,
    /// RDMSR (0F 32).
    Rdmsr,
    /// WRMSR (0F 30).
    Wrmsr,
    /// IN AL/AX/EAX (E4, E5, EC, ED).
    In {
        /// The port.
        port: PortOperand,
        /// Operand size in bytes (1, 2, 4).
        size: u8,
    },
    /// OUT AL/AX/EAX (E6, E7, EE, EF).
    Out {
        /// The port.
        port: PortOperand,
        /// Operand size in bytes (1, 2, 4).
        size: u8,
    },
    /// INS/OUTS (6C-6F), with or without REP: decoded so the handler can
    /// name it, not emulated (the SVSM never uses string I/O).
    StringIo {
        /// OUTS (true) or INS.
        out: bool,
        /// Operand size in bytes.
        size: u8,
        /// REP prefix.
        rep: bool,
    },
}

/// A decoded instruction and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The instruction.
    pub instruction: Instruction,
    /// Its length in bytes, prefixes included.
    pub length: usize,
}

/// Why the bytes at RIP are not an instruction the handler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the instruction does.
    Truncated,
    /// More than 15 bytes of prefixes and opcode.
    TooLong,
    /// A LOCK prefix (these instructions raise #UD with it).
    Lock,
    /// An opcode the handler does not emulate.
    Unsupported {
        /// The opcode byte (the second one after 0F).
        opcode: u8,
        /// Whether it followed a 0F escape.
        two_byte: bool,
    },
}

/// Decodes the instruction at the start of `code` (the bytes at RIP).
pub fn decode(code: &[u8]) -> Result<Decoded, DecodeError> {
    let code = &code[..code.len().min(MAX_INSTRUCTION_LENGTH)];
    let mut operand_16 = false;
    let mut rep = false;
    let mut at = 0;
    loop {
        let byte = *code.get(at).ok_or(if at == MAX_INSTRUCTION_LENGTH {
            DecodeError::TooLong
        } else {
            DecodeError::Truncated
        })?;
        match byte {
            0x66 => operand_16 = true,
            0xF2 | 0xF3 => rep = true,
            0xF0 => return Err(DecodeError::Lock),
            // Segment overrides and the address-size prefix change nothing
            // for these instructions; REX.W does not widen IN/OUT.
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x67 | 0x40..=0x4F => {}
            _ => break,
        }
        at += 1;
    }
    let opcode = code[at];
    let wide = if operand_16 { 2 } else { 4 };
    let immediate = |at: usize| code.get(at + 1).copied().ok_or(DecodeError::Truncated);
    let (instruction, end) = match opcode {
        0x0F => {
            let second = *code.get(at + 1).ok_or(DecodeError::Truncated)?;
            let instruction = match second {
                0xA2 => Instruction::Cpuid,
                0x32 => Instruction::Rdmsr,
                0x30 => Instruction::Wrmsr,
                other => {
                    return Err(DecodeError::Unsupported { opcode: other, two_byte: true });
                }
            };
            (instruction, at + 2)
        }
        0xE4..=0xE7 => {
            let port = PortOperand::Immediate(immediate(at)?);
            let size = if opcode & 1 == 0 { 1 } else { wide };
            let instruction = if opcode < 0xE6 {
                Instruction::In { port, size }
            } else {
                Instruction::Out { port, size }
            };
            (instruction, at + 2)
        }
        0xEC..=0xEF => {
            let size = if opcode & 1 == 0 { 1 } else { wide };
            let instruction = if opcode < 0xEE {
                Instruction::In { port: PortOperand::Dx, size }
            } else {
                Instruction::Out { port: PortOperand::Dx, size }
            };
            (instruction, at + 1)
        }
        0x6C..=0x6F => {
            let size = if opcode & 1 == 0 { 1 } else { wide };
            (Instruction::StringIo { out: opcode >= 0x6E, size, rep }, at + 1)
        }
        other => return Err(DecodeError::Unsupported { opcode: other, two_byte: false }),
    };
    if end > MAX_INSTRUCTION_LENGTH {
        return Err(DecodeError::TooLong);
    }
    Ok(Decoded { instruction, length: end })
}

/// The registers the handler reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcRegisters {
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RIP of the instruction that raised #VC.
    pub rip: u64,
}

/// What the handler needs from the platform.
pub trait VcServices {
    /// CPUID from the trusted source.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Port input through the hypervisor.
    fn io_read(&mut self, port: u16, size: u8) -> Result<u32, GhcbError>;
    /// Port output through the hypervisor.
    fn io_write(&mut self, port: u16, size: u8, value: u32) -> Result<(), GhcbError>;
    /// RDMSR through the hypervisor.
    fn read_msr(&mut self, msr: u32) -> Result<u64, GhcbError>;
    /// WRMSR through the hypervisor.
    fn write_msr(&mut self, msr: u32, value: u64) -> Result<(), GhcbError>;
}

/// Why a #VC could not be handled (the kernel then stops with a report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcError {
    /// An exit code the SVSM does not expect at VMPL0.
    UnexpectedExitCode(u64),
    /// The instruction at RIP could not be decoded.
    Decode(DecodeError),
    /// The instruction does not match the exit code (a #VC the hardware did
    /// not raise for this instruction).
    Mismatch {
        /// The #VC error code.
        exit_code: u64,
        /// The instruction found at RIP.
        instruction: Instruction,
    },
    /// String port I/O is not emulated.
    StringIo,
    /// The hypervisor failed the forwarded operation.
    Hypervisor(GhcbError),
}

/// Handles a #VC with `exit_code` for the instruction in `code` (the bytes
/// at `regs.rip`): emulates it on `regs` and advances RIP.
pub fn handle(
    exit_code: u64,
    regs: &mut VcRegisters,
    code: &[u8],
    services: &mut impl VcServices,
) -> Result<(), VcError> {
    if !matches!(exit_code, EXIT_CPUID | EXIT_IOIO | EXIT_MSR) {
        return Err(VcError::UnexpectedExitCode(exit_code));
    }
    let decoded = decode(code).map_err(VcError::Decode)?;
    let expected = match decoded.instruction {
        Instruction::Cpuid => EXIT_CPUID,
        Instruction::Rdmsr | Instruction::Wrmsr => EXIT_MSR,
        Instruction::In { .. } | Instruction::Out { .. } | Instruction::StringIo { .. } => {
            EXIT_IOIO
        }
    };
    if expected != exit_code {
        return Err(VcError::Mismatch { exit_code, instruction: decoded.instruction });
    }
    let port = |port: PortOperand, regs: &VcRegisters| match port {
        PortOperand::Immediate(port) => u16::from(port),
        PortOperand::Dx => regs.rdx as u16,
    };
    match decoded.instruction {
        Instruction::Cpuid => {
            let [eax, ebx, ecx, edx] = services.cpuid(regs.rax as u32, regs.rcx as u32);
            (regs.rax, regs.rbx, regs.rcx, regs.rdx) =
                (eax.into(), ebx.into(), ecx.into(), edx.into());
        }
        Instruction::Rdmsr => {
            let value = services.read_msr(regs.rcx as u32).map_err(VcError::Hypervisor)?;
            regs.rax = value & 0xFFFF_FFFF;
            regs.rdx = value >> 32;
        }
        Instruction::Wrmsr => {
            let value = (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF);
            services.write_msr(regs.rcx as u32, value).map_err(VcError::Hypervisor)?;
        }
        Instruction::In { port: operand, size } => {
            let value = services.io_read(port(operand, regs), size).map_err(VcError::Hypervisor)?;
            regs.rax = merge_input(regs.rax, value, size);
        }
        Instruction::Out { port: operand, size } => {
            let value = (regs.rax & size_mask(size)) as u32;
            services.io_write(port(operand, regs), size, value).map_err(VcError::Hypervisor)?;
        }
        Instruction::StringIo { .. } => return Err(VcError::StringIo),
    }
    regs.rip = regs.rip.wrapping_add(decoded.length as u64);
    Ok(())
}

fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

/// RAX after IN: AL and AX writes keep the rest of RAX; an EAX write clears
/// bits 63:32, as every 32-bit register write does in 64-bit mode.
fn merge_input(rax: u64, value: u32, size: u8) -> u64 {
    match size {
        1 | 2 => (rax & !size_mask(size)) | (u64::from(value) & size_mask(size)),
        _ => u64::from(value),
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;

    #[derive(Default)]
    struct Services {
        log: Vec<(&'static str, u64, u64)>,
        fail: bool,
    }

    impl VcServices for Services {
        fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
            self.log.push(("cpuid", leaf.into(), subleaf.into()));
            [leaf, subleaf, 0xC, 0xD]
        }
        fn io_read(&mut self, port: u16, size: u8) -> Result<u32, GhcbError> {
            self.log.push(("in", port.into(), size.into()));
            if self.fail { Err(GhcbError::InvalidArgument) } else { Ok(0xA1B2_C3D4) }
        }
        fn io_write(&mut self, port: u16, size: u8, value: u32) -> Result<(), GhcbError> {
            self.log.push(("out", u64::from(port) << 8 | u64::from(size), value.into()));
            Ok(())
        }
        fn read_msr(&mut self, msr: u32) -> Result<u64, GhcbError> {
            self.log.push(("rdmsr", msr.into(), 0));
            Ok(0x1122_3344_5566_7788)
        }
        fn write_msr(&mut self, msr: u32, value: u64) -> Result<(), GhcbError> {
            self.log.push(("wrmsr", msr.into(), value));
            Ok(())
        }
    }

    /// Encodings checked against the Intel SDM / AMD APM opcode maps (and
    /// what GNU as emits for the mnemonic in the comment).
    #[test]
    fn decodes_every_port_io_form() {
        let cases: &[(&[u8], Instruction, usize)] = &[
            (&[0xE4, 0x60], Instruction::In { port: PortOperand::Immediate(0x60), size: 1 }, 2), // in al, 0x60
            (&[0xE5, 0x40], Instruction::In { port: PortOperand::Immediate(0x40), size: 4 }, 2), // in eax, 0x40
            (
                &[0x66, 0xE5, 0x40],
                Instruction::In { port: PortOperand::Immediate(0x40), size: 2 },
                3,
            ), // in ax, 0x40
            (&[0xE6, 0x80], Instruction::Out { port: PortOperand::Immediate(0x80), size: 1 }, 2), // out 0x80, al
            (&[0xE7, 0x80], Instruction::Out { port: PortOperand::Immediate(0x80), size: 4 }, 2), // out 0x80, eax
            (&[0xEC], Instruction::In { port: PortOperand::Dx, size: 1 }, 1), // in al, dx
            (&[0xED], Instruction::In { port: PortOperand::Dx, size: 4 }, 1), // in eax, dx
            (&[0x66, 0xED], Instruction::In { port: PortOperand::Dx, size: 2 }, 2), // in ax, dx
            (&[0xEE], Instruction::Out { port: PortOperand::Dx, size: 1 }, 1), // out dx, al
            (&[0x66, 0xEF], Instruction::Out { port: PortOperand::Dx, size: 2 }, 2), // out dx, ax
            (&[0xEF], Instruction::Out { port: PortOperand::Dx, size: 4 }, 1), // out dx, eax
            (&[0x48, 0xEF], Instruction::Out { port: PortOperand::Dx, size: 4 }, 2), // REX.W ignored
            (&[0x0F, 0xA2], Instruction::Cpuid, 2),
            (&[0x0F, 0x32], Instruction::Rdmsr, 2),
            (&[0x0F, 0x30], Instruction::Wrmsr, 2),
            (&[0xF3, 0x6E], Instruction::StringIo { out: true, size: 1, rep: true }, 2), // rep outsb
            (&[0x66, 0x6D], Instruction::StringIo { out: false, size: 2, rep: false }, 2), // insw
        ];
        for (bytes, instruction, length) in cases {
            let mut padded = bytes.to_vec();
            padded.extend_from_slice(&[0x90; 4]);
            assert_eq!(
                decode(&padded),
                Ok(Decoded { instruction: *instruction, length: *length }),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x66]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xE4]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0x0F]), Err(DecodeError::Truncated));
        assert_eq!(decode(&[0xF0, 0xEE]), Err(DecodeError::Lock));
        assert_eq!(
            decode(&[0x0F, 0x01, 0xD9]),
            Err(DecodeError::Unsupported { opcode: 1, two_byte: true })
        );
        assert_eq!(
            decode(&[0x8B, 0x00]),
            Err(DecodeError::Unsupported { opcode: 0x8B, two_byte: false })
        );
        assert_eq!(decode(&[0x66; 16]), Err(DecodeError::TooLong));
        let mut long = [0x2E; 15];
        long[14] = 0xE4;
        assert_eq!(decode(&long), Err(DecodeError::Truncated), "immediate past 15 bytes");
        let mut exact = [0x2E; 15];
        exact[14] = 0xEE;
        assert_eq!(decode(&exact).map(|d| d.length), Ok(15));
    }

    /// Arbitrary bytes (a fixed xorshift sequence, so failures reproduce)
    /// never panic the decoder, and what it accepts fits the input and the
    /// 15-byte limit.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Bias towards the bytes the decoder cares about.
        let interesting = [
            0x66, 0x67, 0xF2, 0xF3, 0xF0, 0x48, 0x2E, 0x0F, 0xA2, 0x30, 0x32, 0xE4, 0xE5, 0xE6,
            0xE7, 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6E, 0x90,
        ];
        for _ in 0..200_000 {
            let len = (next() % 18) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = next();
                    if r & 1 == 0 {
                        interesting[(r >> 8) as usize % interesting.len()]
                    } else {
                        (r >> 8) as u8
                    }
                })
                .collect();
            if let Ok(decoded) = decode(&bytes) {
                assert!(decoded.length <= bytes.len().min(MAX_INSTRUCTION_LENGTH), "{bytes:x?}");
            }
            let mut regs = VcRegisters::default();
            let mut services = Services::default();
            for exit_code in [EXIT_CPUID, EXIT_IOIO, EXIT_MSR, next()] {
                let _ = handle(exit_code, &mut regs, &bytes, &mut services);
            }
        }
    }

    fn run(exit_code: u64, code: &[u8], regs: &mut VcRegisters) -> (Result<(), VcError>, Services) {
        let mut services = Services::default();
        let result = handle(exit_code, regs, code, &mut services);
        (result, services)
    }

    #[test]
    fn cpuid_fills_four_registers_and_skips_the_instruction() {
        let mut regs = VcRegisters {
            rax: 0xFFFF_FFFF_8000_001F,
            rbx: u64::MAX,
            rcx: 0xFFFF_FFFF_0000_0001,
            rdx: u64::MAX,
            rip: 0x1000,
        };
        let (result, services) = run(EXIT_CPUID, &[0x0F, 0xA2], &mut regs);
        assert_eq!(result, Ok(()));
        assert_eq!(services.log, [("cpuid", 0x8000_001F, 1)]);
        assert_eq!(regs, VcRegisters { rax: 0x8000_001F, rbx: 1, rcx: 0xC, rdx: 0xD, rip: 0x1002 });
    }

    #[test]
    fn port_io_merges_and_masks_like_the_cpu() {
        let mut regs =
            VcRegisters { rax: 0x1111_2222_3333_4444, rdx: 0x3FD, rip: 0x10, ..Default::default() };
        let (result, _) = run(EXIT_IOIO, &[0xEC], &mut regs);
        assert_eq!(result, Ok(()));
        assert_eq!(regs.rax, 0x1111_2222_3333_44D4, "in al keeps the rest of RAX");
        assert_eq!(regs.rip, 0x11);
        let (_, _) = run(EXIT_IOIO, &[0x66, 0xE5, 0x70], &mut regs);
        assert_eq!(regs.rax, 0x1111_2222_3333_C3D4, "in ax keeps bits 63:16");
        let (_, _) = run(EXIT_IOIO, &[0xED], &mut regs);
        assert_eq!(regs.rax, 0xA1B2_C3D4, "in eax zero-extends");
        let mut regs =
            VcRegisters { rax: 0xFFFF_FFFF_FFFF_FF41, rdx: 0xABCD_03F8, ..Default::default() };
        let (result, services) = run(EXIT_IOIO, &[0xEE], &mut regs);
        assert_eq!(result, Ok(()));
        assert_eq!(services.log, [("out", 0x3F8 << 8 | 1, 0x41)], "DX only, AL only");
        let (_, services) = run(EXIT_IOIO, &[0x66, 0xE7, 0x80], &mut regs);
        assert_eq!(services.log, [("out", 0x80 << 8 | 2, 0xFF41)]);
    }

    #[test]
    fn msr_access_splits_edx_eax() {
        let mut regs = VcRegisters {
            rax: 0xDEAD_0000_0000_0001,
            rcx: 0x1B,
            rdx: 0xBEEF_0000_0000_0002,
            ..Default::default()
        };
        let (result, services) = run(EXIT_MSR, &[0x0F, 0x30], &mut regs);
        assert_eq!(result, Ok(()));
        assert_eq!(services.log, [("wrmsr", 0x1B, 0x2_0000_0001)], "upper halves ignored");
        let (result, _) = run(EXIT_MSR, &[0x0F, 0x32], &mut regs);
        assert_eq!(result, Ok(()));
        assert_eq!((regs.rax, regs.rdx), (0x5566_7788, 0x1122_3344));
        assert_eq!(regs.rip, 4);
    }

    #[test]
    fn inconsistent_or_unsupported_exits_are_errors() {
        let mut regs = VcRegisters::default();
        assert_eq!(
            run(EXIT_IOIO, &[0x0F, 0xA2], &mut regs).0,
            Err(VcError::Mismatch { exit_code: EXIT_IOIO, instruction: Instruction::Cpuid })
        );
        assert_eq!(run(0x404, &[0x0F, 0xA2], &mut regs).0, Err(VcError::UnexpectedExitCode(0x404)));
        assert_eq!(run(EXIT_IOIO, &[0xF3, 0x6E], &mut regs).0, Err(VcError::StringIo));
        assert_eq!(
            run(EXIT_CPUID, &[0x90], &mut regs).0,
            Err(VcError::Decode(DecodeError::Unsupported { opcode: 0x90, two_byte: false }))
        );
        let mut services = Services { fail: true, ..Default::default() };
        assert_eq!(
            handle(EXIT_IOIO, &mut regs, &[0xEC], &mut services),
            Err(VcError::Hypervisor(GhcbError::InvalidArgument))
        );
        assert_eq!(regs, VcRegisters::default(), "nothing changes on failure");
    }
}
