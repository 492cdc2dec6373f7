//! Decoding the port-I/O instruction that raised a #VC (SNP with SEV-ES
//! turns every IN/OUT into #VC with exit code IOIO), so the #VC handler can
//! forward it to the hypervisor as a GHCB IOIO event. Only the forms this
//! guest's code uses are accepted: IN/OUT with an 8-bit immediate or DX
//! port, 8/16/32-bit operands; string I/O is refused.

use abi::ghcb::{IoDirection, IoioInfo};

/// A decoded IN or OUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortInstruction {
    /// What the hypervisor gets in SW_EXITINFO1.
    pub info: IoioInfo,
    /// Length of the instruction in bytes (RIP advances by it).
    pub length: u64,
}

/// Decodes the instruction starting at `bytes`; `rdx` supplies the port of
/// the DX forms. `None` for anything but the plain IN/OUT forms.
pub fn decode(bytes: &[u8], rdx: u64) -> Option<PortInstruction> {
    let (operand16, opcode_at) = match bytes.first()? {
        0x66 => (true, 1),
        _ => (false, 0),
    };
    let opcode = *bytes.get(opcode_at)?;
    let wide = opcode & 1 != 0;
    let size = match (wide, operand16) {
        (false, _) => 1,
        (true, true) => 2,
        (true, false) => 4,
    };
    let (direction, port, length) = match opcode {
        0xE4 | 0xE5 => (IoDirection::In, u16::from(*bytes.get(opcode_at + 1)?), opcode_at + 2),
        0xE6 | 0xE7 => (IoDirection::Out, u16::from(*bytes.get(opcode_at + 1)?), opcode_at + 2),
        0xEC | 0xED => (IoDirection::In, rdx as u16, opcode_at + 1),
        0xEE | 0xEF => (IoDirection::Out, rdx as u16, opcode_at + 1),
        _ => return None,
    };
    Some(PortInstruction { info: IoioInfo::simple(port, direction, size), length: length as u64 })
}

/// The RAX value after an IN of `size` bytes returned `value`: the low
/// bytes are replaced (a 32-bit IN zero-extends into RAX, as in 64-bit
/// mode any 32-bit register write does).
pub fn merge_in_result(rax: u64, size: u8, value: u64) -> u64 {
    match size {
        1 => (rax & !0xFF) | (value & 0xFF),
        2 => (rax & !0xFFFF) | (value & 0xFFFF),
        _ => value & 0xFFFF_FFFF,
    }
}

/// The bytes of RAX an OUT of `size` bytes sends.
pub fn out_value(rax: u64, size: u8) -> u64 {
    match size {
        1 => rax & 0xFF,
        2 => rax & 0xFFFF,
        _ => rax & 0xFFFF_FFFF,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_forms_and_their_lengths() {
        // out dx, al
        let i = decode(&[0xEE], 0x3F8).unwrap();
        assert_eq!(
            (i.info.port, i.info.direction, i.info.size, i.length),
            (0x3F8, IoDirection::Out, 1, 1)
        );
        // in al, 0x61
        let i = decode(&[0xE4, 0x61], 0).unwrap();
        assert_eq!(
            (i.info.port, i.info.direction, i.info.size, i.length),
            (0x61, IoDirection::In, 1, 2)
        );
        // out dx, ax
        let i = decode(&[0x66, 0xEF], 0x1_0510).unwrap();
        assert_eq!((i.info.port, i.info.size, i.length), (0x510, 2, 2));
        // in eax, dx
        let i = decode(&[0xED], 0x608).unwrap();
        assert_eq!((i.info.direction, i.info.size), (IoDirection::In, 4));
        // The SVM IOIO encoding of `out dx, al` to COM1 from 64-bit code.
        assert_eq!(decode(&[0xEE], 0x3F8).unwrap().info.encode(), 0x03F8_0210);
    }

    #[test]
    fn refuses_other_instructions() {
        assert_eq!(decode(&[], 0), None);
        assert_eq!(decode(&[0x66], 0), None);
        assert_eq!(decode(&[0xE4], 0), None, "immediate missing");
        assert_eq!(decode(&[0x6E], 0), None, "outsb");
        assert_eq!(decode(&[0xF3, 0x6C], 0), None, "rep insb");
        assert_eq!(decode(&[0x0F, 0xA2], 0), None, "cpuid");
    }

    #[test]
    fn in_results_merge_like_the_cpu() {
        assert_eq!(merge_in_result(0x1122_3344_5566_7788, 1, 0xAB), 0x1122_3344_5566_77AB);
        assert_eq!(merge_in_result(0x1122_3344_5566_7788, 2, 0xABCD), 0x1122_3344_5566_ABCD);
        assert_eq!(merge_in_result(0x1122_3344_5566_7788, 4, 0xDEAD_BEEF), 0xDEAD_BEEF);
        assert_eq!(out_value(0x1122_3344_5566_7788, 2), 0x7788);
    }
}
