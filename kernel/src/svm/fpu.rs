//! A guest's x87, SSE and AVX state between its VMSA and the CPU.
//!
//! VMRUN does not switch this state, so the dev platform loads it from the
//! VMSA with XRSTOR (through an XSAVE image built here) when a vCPU starts
//! on a CPU, and writes it back into the VMSA with XSAVE whenever the vCPU
//! returns to the SVSM. The SVSM itself never touches x87/SSE registers
//! (the kernel is built soft-float), so while one vCPU keeps running on a
//! CPU its registers simply stay in the CPU.
//!
//! The XSAVE image is the standard (non-compacted) format: the 512-byte
//! FXSAVE legacy area (64-bit layout), the XSAVE header at 512, the upper
//! halves of YMM0-15 at 576 (CPUID 0xD.2 EBX on every AMD CPU with AVX).

use abi::vmsa::Vmsa;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// XCR0 / XSTATE_BV bit of the x87 state.
pub const XSTATE_X87: u64 = 1 << 0;
/// XCR0 / XSTATE_BV bit of the SSE state (XMM, MXCSR).
pub const XSTATE_SSE: u64 = 1 << 1;
/// XCR0 / XSTATE_BV bit of the AVX state (upper halves of YMM).
pub const XSTATE_AVX: u64 = 1 << 2;
/// The state components the dev platform moves.
pub const XSTATE_MANAGED: u64 = XSTATE_X87 | XSTATE_SSE | XSTATE_AVX;

/// An XSAVE image holding the legacy area, the header and the AVX state.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XsaveArea {
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word.
    pub fsw: u16,
    /// Abridged tag word: one bit per register, 1 = not empty.
    pub ftw: u8,
    reserved_5: u8,
    /// Last x87 opcode.
    pub fop: u16,
    /// Last x87 instruction pointer (64-bit form).
    pub fip: u64,
    /// Last x87 data pointer (64-bit form).
    pub fdp: u64,
    /// MXCSR.
    pub mxcsr: u32,
    /// Bits of MXCSR the CPU supports.
    pub mxcsr_mask: u32,
    /// ST0..ST7, 10 bytes used of each 16.
    pub st: [[u8; 16]; 8],
    /// XMM0..XMM15.
    pub xmm: [[u8; 16]; 16],
    reserved_416: [u8; 96],
    /// Components the image holds.
    pub xstate_bv: u64,
    /// Compaction (0: standard form).
    pub xcomp_bv: u64,
    reserved_528: [u8; 48],
    /// Upper halves of YMM0..YMM15.
    pub ymm_high: [[u8; 16]; 16],
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(XsaveArea, mxcsr) == 24);
    assert!(offset_of!(XsaveArea, st) == 32);
    assert!(offset_of!(XsaveArea, xmm) == 160);
    assert!(offset_of!(XsaveArea, xstate_bv) == 512);
    assert!(offset_of!(XsaveArea, ymm_high) == 576);
    assert!(size_of::<XsaveArea>() == 832);
};

/// Full (2 bits per register, 3 = empty) to abridged tag word.
fn abridged_tags(full: u16) -> u8 {
    (0..8).fold(0u8, |tags, i| if (full >> (2 * i)) & 3 != 3 { tags | (1 << i) } else { tags })
}

/// The full tag of a non-empty register: 0 valid, 1 zero, 2 special.
fn full_tag(register: &[u8]) -> u16 {
    let significand = u64::from_le_bytes(register[..8].try_into().expect("8 bytes"));
    let exponent = u16::from_le_bytes([register[8], register[9]]) & 0x7FFF;
    match exponent {
        0x7FFF => 2,
        0 if significand == 0 => 1,
        0 => 2,
        _ if significand >> 63 == 0 => 2,
        _ => 0,
    }
}

impl XsaveArea {
    /// The image of the state `vmsa` holds, for components `components`.
    pub fn from_vmsa(vmsa: &Vmsa, components: u64, mxcsr_mask: u32) -> XsaveArea {
        let mut area = XsaveArea::new_zeroed();
        area.fcw = vmsa.x87_fcw;
        area.fsw = vmsa.x87_fsw;
        area.ftw = abridged_tags(vmsa.x87_ftw);
        area.fop = vmsa.x87_fop;
        area.fip = vmsa.x87_rip;
        area.fdp = vmsa.x87_dp;
        area.mxcsr = vmsa.mxcsr;
        area.mxcsr_mask = mxcsr_mask;
        for (st, register) in area.st.iter_mut().zip(vmsa.x87_registers.iter()) {
            st[..10].copy_from_slice(register);
        }
        for (xmm, register) in area.xmm.iter_mut().zip(vmsa.xmm.iter()) {
            xmm.copy_from_slice(register.as_bytes());
        }
        for (ymm, register) in area.ymm_high.iter_mut().zip(vmsa.ymm_high.iter()) {
            ymm.copy_from_slice(register.as_bytes());
        }
        area.xstate_bv = components & XSTATE_MANAGED;
        area
    }

    /// Writes the state of this image into `vmsa`. Components the image
    /// does not hold (XSTATE_BV clear) are in their initial state.
    pub fn store(&self, vmsa: &mut Vmsa) {
        let init = XsaveArea::initial();
        let x87 = if self.xstate_bv & XSTATE_X87 != 0 { self } else { &init };
        vmsa.x87_fcw = x87.fcw;
        vmsa.x87_fsw = x87.fsw;
        vmsa.x87_fop = x87.fop;
        vmsa.x87_rip = x87.fip;
        vmsa.x87_dp = x87.fdp;
        let mut full = 0u16;
        for (i, (register, st)) in vmsa.x87_registers.iter_mut().zip(x87.st.iter()).enumerate() {
            register.copy_from_slice(&st[..10]);
            let tag = if x87.ftw & (1 << i) == 0 { 3 } else { full_tag(&st[..10]) };
            full |= tag << (2 * i);
        }
        vmsa.x87_ftw = full;
        // MXCSR is always in the image when SSE or AVX is.
        vmsa.mxcsr = self.mxcsr;
        let sse = if self.xstate_bv & XSTATE_SSE != 0 { self } else { &init };
        for (register, xmm) in vmsa.xmm.iter_mut().zip(sse.xmm.iter()) {
            register.as_mut_bytes().copy_from_slice(xmm);
        }
        let avx = if self.xstate_bv & XSTATE_AVX != 0 { self } else { &init };
        for (register, ymm) in vmsa.ymm_high.iter_mut().zip(avx.ymm_high.iter()) {
            register.as_mut_bytes().copy_from_slice(ymm);
        }
    }

    /// The initial state (what XRSTOR loads for a component whose XSTATE_BV
    /// bit is clear): FCW 0x37F, all registers empty and zero.
    fn initial() -> XsaveArea {
        let mut area = XsaveArea::new_zeroed();
        area.fcw = 0x37F;
        area.mxcsr = 0x1F80;
        area
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::vmsa::{Xmm, reset};
    use zerocopy::FromZeros;

    #[test]
    fn reset_state_tags_convert_both_ways() {
        // The reset VMSA says "all registers zero" (0x5555): abridged 0xFF.
        let vmsa = Vmsa::reset_state(2, 1);
        let area = XsaveArea::from_vmsa(&vmsa, XSTATE_MANAGED, 0xFFFF);
        assert_eq!((area.fcw, area.ftw, area.mxcsr), (reset::X87_FCW, 0xFF, reset::MXCSR));
        assert_eq!(area.xstate_bv, 7);
        let mut back = Vmsa::new_zeroed();
        area.store(&mut back);
        assert_eq!((back.x87_fcw, back.x87_ftw, back.mxcsr), (0x40, 0x5555, 0x1F80));
    }

    #[test]
    fn registers_survive_a_round_trip_and_tags_follow_contents() {
        let mut vmsa = Vmsa::new_zeroed();
        vmsa.x87_fcw = 0x37F;
        vmsa.x87_ftw = !0b1111; // ST0, ST1 in use
        // ST0 = 1.0 (valid), ST1 = 0 (zero).
        vmsa.x87_registers[0] = [0, 0, 0, 0, 0, 0, 0, 0x80, 0xFF, 0x3F];
        vmsa.xmm[3] = Xmm { low: 0x1111, high: 0x2222 };
        vmsa.ymm_high[15] = Xmm { low: 0x3333, high: 0x4444 };
        vmsa.mxcsr = 0x1FA0;
        vmsa.x87_rip = 0xABCD;
        let area = XsaveArea::from_vmsa(&vmsa, XSTATE_MANAGED, 0xFFFF);
        assert_eq!(area.ftw, 0b11);
        let mut back = Vmsa::new_zeroed();
        area.store(&mut back);
        assert_eq!(back.x87_ftw, 0xFFF0 | 0b0100, "ST0 valid (00), ST1 zero (01)");
        assert_eq!(back.xmm[3], vmsa.xmm[3]);
        assert_eq!(back.ymm_high[15], vmsa.ymm_high[15]);
        assert_eq!((back.mxcsr, back.x87_rip), (0x1FA0, 0xABCD));
    }

    #[test]
    fn components_not_in_the_image_read_as_initial() {
        let mut vmsa = Vmsa::new_zeroed();
        vmsa.ymm_high[0] = Xmm { low: 5, high: 6 };
        vmsa.xmm[0] = Xmm { low: 7, high: 8 };
        let mut area = XsaveArea::from_vmsa(&vmsa, XSTATE_X87 | XSTATE_SSE, 0xFFFF);
        area.xstate_bv = XSTATE_SSE;
        let mut back = vmsa;
        area.store(&mut back);
        assert_eq!(back.ymm_high[0], Xmm::default());
        assert_eq!(back.xmm[0], Xmm { low: 7, high: 8 });
        assert_eq!((back.x87_fcw, back.x87_ftw), (0x37F, 0xFFFF));
    }
}
