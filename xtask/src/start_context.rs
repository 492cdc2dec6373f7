//! The one start context of stage2 and its two encodings: the IGVM native
//! VP context (QEMU >= 10.1 and our ROM loader apply it) and the SNP VMSA
//! (KVM rebuilds it from vCPU state and measures it, so every byte counts:
//! snp-svsm.md §4, igvm-and-launch.md §3.4 and §7).
//!
//! Stage2 starts in 32-bit protected mode with paging off on both
//! platforms: CS 0x08 flat 32-bit code, DS/ES/FS/GS/SS 0x10 flat data,
//! RFLAGS 2, RIP = stage2's ELF entry, RSP = the top of its stack.

use abi::layout::STAGE2_STACK_TOP;
use igvm::snp_defs::{SevFeatures, SevSelector, SevVmsa};
use igvm_defs::IgvmNativeVpContextX64;
use zerocopy::FromZeros;

/// Code selector of the start context.
pub const CODE_SELECTOR: u16 = 0x08;
/// Data selector of the start context.
pub const DATA_SELECTOR: u16 = 0x10;
/// Flat 32-bit code, descriptor form (P, S, code, readable, accessed; D, G).
pub const CODE_ATTRIBUTES: u16 = 0xc09b;
/// Flat data, descriptor form (P, S, writable, accessed; B, G).
pub const DATA_ATTRIBUTES: u16 = 0xc093;
/// CR0 at the start: PE | ET | NE, paging off. KVM forces 0x31 into the
/// measured VMSA, so the IGVM must carry exactly this.
pub const START_CR0: u64 = 0x31;
/// RFLAGS at the start (only the fixed bit).
pub const START_RFLAGS: u64 = 0x2;
/// CR4 of the VMSA: MCE, which KVM ORs in from the host.
pub const SNP_CR4: u64 = 0x40;
/// EFER of the VMSA: SVME, which KVM requires and ORs in.
pub const SNP_EFER: u64 = 0x1000;
/// XCR0 of the VMSA (x87 only).
pub const SNP_XCR0: u64 = 0x1;
/// PAT of the VMSA: the architectural reset value.
pub const SNP_PAT: u64 = 0x0007_0406_0007_0406;
/// The VMSA's SEV features: SNPActive only. The launcher passes the rest
/// (none) to KVM_SEV_INIT2 as vmsa_features.
pub fn snp_sev_features() -> SevFeatures {
    SevFeatures::new().with_snp(true)
}

/// Converts descriptor-form attributes (flags in bits 12-15) to the VMSA's
/// packed 12-bit form (flags in bits 8-11).
pub fn vmsa_attributes(descriptor_form: u16) -> u16 {
    (descriptor_form & 0xff) | ((descriptor_form >> 4) & 0xf00)
}

/// The native VP context for stage2's entry.
pub fn native_context(entry: u64) -> Box<IgvmNativeVpContextX64> {
    let mut context = IgvmNativeVpContextX64::new_box_zeroed().expect("allocating a VP context");
    context.rip = entry;
    context.rsp = STAGE2_STACK_TOP;
    context.rflags = START_RFLAGS;
    context.code_selector = CODE_SELECTOR;
    context.code_attributes = CODE_ATTRIBUTES;
    context.code_base = 0;
    context.code_limit = 0xffff_ffff;
    context.data_selector = DATA_SELECTOR;
    context.data_attributes = DATA_ATTRIBUTES;
    context.data_base = 0;
    context.data_limit = 0xffff_ffff;
    context.cr0 = START_CR0;
    context.cr3 = 0;
    context.cr4 = 0;
    context.efer = 0;
    context
}

/// The SNP VMSA for stage2's entry: the native context's registers in VMSA
/// form plus what SNP requires (EFER.SVME, CR4.MCE, XCR0, PAT, SEV features).
pub fn snp_vmsa(entry: u64) -> Box<SevVmsa> {
    let native = native_context(entry);
    let mut vmsa = SevVmsa::new_box_zeroed().expect("allocating a VMSA");
    let segment = |selector, attributes, base: u32, limit| SevSelector {
        selector,
        attrib: vmsa_attributes(attributes),
        limit,
        base: u64::from(base),
    };
    vmsa.cs =
        segment(native.code_selector, native.code_attributes, native.code_base, native.code_limit);
    let data =
        segment(native.data_selector, native.data_attributes, native.data_base, native.data_limit);
    vmsa.ds = data;
    vmsa.es = data;
    vmsa.fs = data;
    vmsa.gs = data;
    vmsa.ss = data;
    vmsa.rip = native.rip;
    vmsa.rsp = native.rsp;
    vmsa.rflags = native.rflags;
    vmsa.cr0 = native.cr0;
    vmsa.cr4 = SNP_CR4;
    vmsa.efer = SNP_EFER;
    vmsa.xcr0 = SNP_XCR0;
    vmsa.pat = SNP_PAT;
    vmsa.sev_features = snp_sev_features();
    vmsa
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn attributes_convert_to_the_vmsa_form() {
        assert_eq!(vmsa_attributes(0xc09b), 0xc9b);
        assert_eq!(vmsa_attributes(0xa09b), 0xa9b);
        assert_eq!(vmsa_attributes(0xc093), 0xc93);
        assert_eq!(vmsa_attributes(0xa093), 0xa93);
    }

    /// The VMSA bytes at the offsets of snp-svsm.md §4.2.
    #[test]
    fn vmsa_bytes_sit_at_the_spec_offsets() {
        let vmsa = snp_vmsa(0x11_0040);
        let bytes = vmsa.as_bytes();
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
        assert_eq!(bytes.len(), 4096);
        // CS: selector, attrib, limit, base.
        assert_eq!(
            (u16_at(0x10), u16_at(0x12), u32_at(0x14), u64_at(0x18)),
            (0x08, 0xc9b, 0xffff_ffff, 0)
        );
        for segment in [0x00, 0x20, 0x30, 0x40, 0x50] {
            assert_eq!(
                (u16_at(segment), u16_at(segment + 2)),
                (0x10, 0xc93),
                "segment at {segment:#x}"
            );
        }
        assert_eq!(u64_at(0xd0), 0x1000, "EFER");
        assert_eq!(u64_at(0x148), 0x40, "CR4");
        assert_eq!(u64_at(0x158), 0x31, "CR0");
        assert_eq!(u64_at(0x170), 2, "RFLAGS");
        assert_eq!(u64_at(0x178), 0x11_0040, "RIP");
        assert_eq!(u64_at(0x1d8), STAGE2_STACK_TOP, "RSP");
        assert_eq!(u64_at(0x268), 0x0007_0406_0007_0406, "PAT");
        assert_eq!(u64_at(0x3b0), 1, "SEV_FEATURES");
        assert_eq!(u64_at(0x3e8), 1, "XCR0");
        assert_eq!(bytes[0xca], 0, "VMPL");
    }

    #[test]
    fn native_context_is_32_bit_protected_mode_without_paging() {
        let context = native_context(0x11_0040);
        assert_eq!((context.cr0, context.cr4, context.efer), (0x31, 0, 0));
        assert_eq!((context.code_selector, context.code_attributes), (0x08, 0xc09b));
        assert_eq!((context.data_selector, context.data_attributes), (0x10, 0xc093));
        assert_eq!((context.rip, context.rsp, context.rflags), (0x11_0040, STAGE2_STACK_TOP, 2));
    }
}
