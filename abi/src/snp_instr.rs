//! The SEV-SNP page-validation instructions, PVALIDATE and RMPADJUST: their
//! register inputs, the RMP permission byte, and every return code.
//!
//! The SVSM executes them on SNP hardware; the dev platform emulates them
//! against its own RMP and must answer with the same codes; the SVSM core
//! protocol reports a failing instruction to the guest as
//! `0x8000_1000 + code`. Writing the encodings once here keeps the three in
//! agreement.
//!
//! Sources: Linux `arch/x86/include/asm/sev.h` (`pvalidate`, `rmpadjust`,
//! `PVALIDATE_FAIL_*`, `RMPADJUST_VMSA_PAGE_BIT`), COCONUT-SVSM
//! `kernel/src/sev/utils.rs` (FAIL_PERMISSION = 2, the permission bits),
//! project reference `snp-svsm.md` §3.

/// PVALIDATE: `F2 0F 01 FF`.
pub const PVALIDATE_OPCODE: [u8; 4] = [0xF2, 0x0F, 0x01, 0xFF];
/// RMPADJUST: `F3 0F 01 FE`.
pub const RMPADJUST_OPCODE: [u8; 4] = [0xF3, 0x0F, 0x01, 0xFE];
/// VMGEXIT (`rep vmmcall`): `F3 0F 01 D9`.
pub const VMGEXIT_OPCODE: [u8; 4] = [0xF3, 0x0F, 0x01, 0xD9];

/// Return code: success.
pub const RMP_SUCCESS: u32 = 0;
/// Return code: bad address, size, alignment or attribute.
pub const RMP_FAIL_INPUT: u32 = 1;
/// Return code (RMPADJUST): the permissions asked for exceed the caller's,
/// or the target VMPL is not less privileged than the caller's.
pub const RMP_FAIL_PERMISSION: u32 = 2;
/// Return code: a 2 MiB request over an RMP made of 4 KiB entries.
pub const RMP_FAIL_SIZEMISMATCH: u32 = 6;
/// Not a hardware code: PVALIDATE set RFLAGS.CF (the page already was in the
/// requested state, the RMP did not change). The SVSM core protocol reports
/// it as `0x8000_1000 + 0x10`, as COCONUT-SVSM does.
pub const RMP_FAIL_UNCHANGED: u32 = 0x10;

/// Page size operand of PVALIDATE and RMPADJUST (RCX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmpPageSize {
    /// 4 KiB.
    Size4K = 0,
    /// 2 MiB (the address must be 2 MiB aligned).
    Size2M = 1,
}

impl RmpPageSize {
    /// The RCX operand.
    pub const fn operand(self) -> u64 {
        self as u64
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            RmpPageSize::Size4K => crate::layout::PAGE_SIZE,
            RmpPageSize::Size2M => crate::layout::LARGE_PAGE_SIZE,
        }
    }

    /// Decodes an RCX operand (only bit 0 is defined).
    pub const fn from_operand(rcx: u64) -> Option<RmpPageSize> {
        match rcx {
            0 => Some(RmpPageSize::Size4K),
            1 => Some(RmpPageSize::Size2M),
            _ => None,
        }
    }
}

/// PVALIDATE's register inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvalidateInput {
    /// Guest *virtual* address of the page (RAX).
    pub va: u64,
    /// Page size (RCX).
    pub size: RmpPageSize,
    /// Validate (true, EDX = 1) or rescind (false, EDX = 0).
    pub validate: bool,
}

impl PvalidateInput {
    /// RAX, RCX, RDX for the instruction.
    pub const fn registers(&self) -> [u64; 3] {
        [self.va, self.size.operand(), self.validate as u64]
    }
}

/// Why PVALIDATE did not change the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvalidateError {
    /// FAIL_INPUT (1).
    Input,
    /// FAIL_SIZEMISMATCH (6): retry the 2 MiB range as 4 KiB pages.
    SizeMismatch,
    /// EAX = 0 with RFLAGS.CF = 1: the page already was in the requested
    /// state.
    Unchanged,
    /// Any other EAX (not defined by the architecture).
    Other(u32),
}

impl PvalidateError {
    /// The code the SVSM reports (added to `0x8000_1000`).
    pub const fn code(self) -> u32 {
        match self {
            PvalidateError::Input => RMP_FAIL_INPUT,
            PvalidateError::SizeMismatch => RMP_FAIL_SIZEMISMATCH,
            PvalidateError::Unchanged => RMP_FAIL_UNCHANGED,
            PvalidateError::Other(code) => code,
        }
    }

    /// EAX and RFLAGS.CF as the instruction leaves them (for emulators).
    pub const fn to_registers(self) -> (u32, bool) {
        match self {
            PvalidateError::Unchanged => (RMP_SUCCESS, true),
            other => (other.code(), false),
        }
    }
}

/// Decodes PVALIDATE's EAX and RFLAGS.CF.
pub const fn pvalidate_result(eax: u32, carry: bool) -> Result<(), PvalidateError> {
    match (eax, carry) {
        (RMP_SUCCESS, false) => Ok(()),
        (RMP_SUCCESS, true) => Err(PvalidateError::Unchanged),
        (RMP_FAIL_INPUT, _) => Err(PvalidateError::Input),
        (RMP_FAIL_SIZEMISMATCH, _) => Err(PvalidateError::SizeMismatch),
        (code, _) => Err(PvalidateError::Other(code)),
    }
}

/// The RMP permission byte of one VMPL (RMPADJUST RDX[15:8], and the
/// VMPL1-3 permission bytes of SNP_LAUNCH_UPDATE and the measured
/// PAGE_INFO).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmplPermissions(u8);

impl VmplPermissions {
    /// No access.
    pub const NONE: VmplPermissions = VmplPermissions(0);
    /// Read.
    pub const READ: VmplPermissions = VmplPermissions(1 << 0);
    /// Write.
    pub const WRITE: VmplPermissions = VmplPermissions(1 << 1);
    /// Execute at CPL3.
    pub const EXECUTE_USER: VmplPermissions = VmplPermissions(1 << 2);
    /// Execute at CPL0-2.
    pub const EXECUTE_SUPERVISOR: VmplPermissions = VmplPermissions(1 << 3);
    /// Everything (what a validated page gives the VMPL that owns it).
    pub const ALL: VmplPermissions = VmplPermissions(0xF);

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// From a raw byte; `None` if bits 7:4 (reserved) are set.
    pub const fn from_bits(bits: u8) -> Option<VmplPermissions> {
        if bits & !Self::ALL.0 == 0 { Some(VmplPermissions(bits)) } else { None }
    }

    /// Both sets.
    pub const fn union(self, other: VmplPermissions) -> VmplPermissions {
        VmplPermissions(self.0 | other.0)
    }

    /// Whether every permission of `other` is here too.
    pub const fn contains(self, other: VmplPermissions) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for VmplPermissions {
    type Output = VmplPermissions;
    fn bitor(self, rhs: VmplPermissions) -> VmplPermissions {
        self.union(rhs)
    }
}

/// RMPADJUST's attribute operand (RDX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpAdjustAttributes {
    /// The VMPL whose permissions change (must be numerically greater than
    /// the caller's).
    pub target_vmpl: u8,
    /// Its new permissions (at most the caller's own).
    pub permissions: VmplPermissions,
    /// Mark the page as a VMSA.
    pub vmsa: bool,
}

/// RDX bit 16 of RMPADJUST: the page becomes a VMSA.
pub const RMPADJUST_VMSA_PAGE_BIT: u64 = 1 << 16;
/// Bits of RMPADJUST's RDX that have a meaning.
const RMPADJUST_DEFINED_BITS: u64 = 0xFF | (0xF << 8) | RMPADJUST_VMSA_PAGE_BIT;
/// Highest VMPL.
pub const MAX_VMPL: u8 = 3;

impl RmpAdjustAttributes {
    /// RDX for the instruction.
    pub const fn encode(self) -> u64 {
        self.target_vmpl as u64
            | (self.permissions.bits() as u64) << 8
            | if self.vmsa { RMPADJUST_VMSA_PAGE_BIT } else { 0 }
    }

    /// Decodes RDX; `None` if a reserved bit is set or the VMPL is above 3
    /// (the instruction then fails with FAIL_INPUT).
    pub const fn decode(rdx: u64) -> Option<RmpAdjustAttributes> {
        if rdx & !RMPADJUST_DEFINED_BITS != 0 || (rdx & 0xFF) as u8 > MAX_VMPL {
            return None;
        }
        let Some(permissions) = VmplPermissions::from_bits(((rdx >> 8) & 0xFF) as u8) else {
            return None;
        };
        Some(RmpAdjustAttributes {
            target_vmpl: (rdx & 0xFF) as u8,
            permissions,
            vmsa: rdx & RMPADJUST_VMSA_PAGE_BIT != 0,
        })
    }
}

/// RMPADJUST's register inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpAdjustInput {
    /// Guest virtual address of the page (RAX).
    pub va: u64,
    /// Page size (RCX).
    pub size: RmpPageSize,
    /// Attributes (RDX).
    pub attributes: RmpAdjustAttributes,
}

impl RmpAdjustInput {
    /// RAX, RCX, RDX for the instruction.
    pub const fn registers(&self) -> [u64; 3] {
        [self.va, self.size.operand(), self.attributes.encode()]
    }
}

/// Why RMPADJUST failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmpAdjustError {
    /// FAIL_INPUT (1). The SVSM also reports a fault of the instruction
    /// (e.g. an unmapped address) this way.
    Input,
    /// FAIL_PERMISSION (2).
    Permission,
    /// FAIL_SIZEMISMATCH (6).
    SizeMismatch,
    /// Any other EAX.
    Other(u32),
}

impl RmpAdjustError {
    /// The architectural return code (added to `0x8000_1000` by the SVSM).
    pub const fn code(self) -> u32 {
        match self {
            RmpAdjustError::Input => RMP_FAIL_INPUT,
            RmpAdjustError::Permission => RMP_FAIL_PERMISSION,
            RmpAdjustError::SizeMismatch => RMP_FAIL_SIZEMISMATCH,
            RmpAdjustError::Other(code) => code,
        }
    }
}

/// Decodes RMPADJUST's EAX.
pub const fn rmpadjust_result(eax: u32) -> Result<(), RmpAdjustError> {
    match eax {
        RMP_SUCCESS => Ok(()),
        RMP_FAIL_INPUT => Err(RmpAdjustError::Input),
        RMP_FAIL_PERMISSION => Err(RmpAdjustError::Permission),
        RMP_FAIL_SIZEMISMATCH => Err(RmpAdjustError::SizeMismatch),
        code => Err(RmpAdjustError::Other(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvalidate_registers_follow_linux_inline_asm() {
        // Linux pvalidate(): "a"(vaddr), "c"(rmp_psize), "d"(validate).
        let input =
            PvalidateInput { va: 0xFFFF_8000_0820_0000, size: RmpPageSize::Size2M, validate: true };
        assert_eq!(input.registers(), [0xFFFF_8000_0820_0000, 1, 1]);
        let rescind = PvalidateInput { va: 0x1000, size: RmpPageSize::Size4K, validate: false };
        assert_eq!(rescind.registers(), [0x1000, 0, 0]);
    }

    #[test]
    fn pvalidate_return_codes() {
        assert_eq!(pvalidate_result(0, false), Ok(()));
        assert_eq!(pvalidate_result(0, true), Err(PvalidateError::Unchanged));
        assert_eq!(pvalidate_result(1, false), Err(PvalidateError::Input));
        assert_eq!(pvalidate_result(6, false), Err(PvalidateError::SizeMismatch));
        assert_eq!(pvalidate_result(6, true), Err(PvalidateError::SizeMismatch));
        assert_eq!(pvalidate_result(3, false), Err(PvalidateError::Other(3)));
        // What the SVSM reports in 0x8000_1000 + code (Linux:
        // SVSM_PVALIDATE_FAIL_SIZEMISMATCH = 0x80001006).
        assert_eq!(0x8000_1000 + PvalidateError::SizeMismatch.code(), 0x8000_1006);
        assert_eq!(0x8000_1000 + PvalidateError::Unchanged.code(), 0x8000_1010);
        for error in [
            PvalidateError::Input,
            PvalidateError::SizeMismatch,
            PvalidateError::Unchanged,
            PvalidateError::Other(9),
        ] {
            let (eax, cf) = error.to_registers();
            assert_eq!(pvalidate_result(eax, cf), Err(error), "round trip of {error:?}");
        }
    }

    #[test]
    fn rmpadjust_attributes_golden_values() {
        // Guest VMPL2 full access: VMPL 2 in [7:0], RWX (0xF) in [15:8].
        let grant =
            RmpAdjustAttributes { target_vmpl: 2, permissions: VmplPermissions::ALL, vmsa: false };
        assert_eq!(grant.encode(), 0x0F02);
        // Linux snp_set_vmsa(): RMPADJUST_VMSA_PAGE_BIT | 1 (VMPL1, no perms).
        let linux_vmsa =
            RmpAdjustAttributes { target_vmpl: 1, permissions: VmplPermissions::NONE, vmsa: true };
        assert_eq!(linux_vmsa.encode(), 0x1_0001);
        // COCONUT rmp_set_guest_vmsa(): GUEST_VMPL(2) | READ | BIT_VMSA.
        let guest_vmsa =
            RmpAdjustAttributes { target_vmpl: 2, permissions: VmplPermissions::READ, vmsa: true };
        assert_eq!(guest_vmsa.encode(), 0x1_0102);
        for attributes in [grant, linux_vmsa, guest_vmsa] {
            assert_eq!(RmpAdjustAttributes::decode(attributes.encode()), Some(attributes));
        }
        let input = RmpAdjustInput { va: 0x20_0000, size: RmpPageSize::Size2M, attributes: grant };
        assert_eq!(input.registers(), [0x20_0000, 1, 0x0F02]);
    }

    #[test]
    fn rmpadjust_attribute_decoding_rejects_reserved_bits() {
        assert_eq!(RmpAdjustAttributes::decode(0x0F04), None, "VMPL 4 does not exist");
        assert_eq!(RmpAdjustAttributes::decode(0x1F02), None, "permission bit 12");
        assert_eq!(RmpAdjustAttributes::decode(0x2_0F02), None, "bit 17");
        assert_eq!(RmpAdjustAttributes::decode(1 << 63), None);
        let perms = VmplPermissions::READ | VmplPermissions::EXECUTE_SUPERVISOR;
        assert_eq!(perms.bits(), 0x9);
        assert!(VmplPermissions::ALL.contains(perms));
        assert!(!perms.contains(VmplPermissions::WRITE));
        assert_eq!(VmplPermissions::from_bits(0x10), None);
    }

    #[test]
    fn rmpadjust_return_codes() {
        assert_eq!(rmpadjust_result(0), Ok(()));
        assert_eq!(rmpadjust_result(1), Err(RmpAdjustError::Input));
        assert_eq!(rmpadjust_result(2), Err(RmpAdjustError::Permission));
        assert_eq!(rmpadjust_result(6), Err(RmpAdjustError::SizeMismatch));
        assert_eq!(rmpadjust_result(7), Err(RmpAdjustError::Other(7)));
        assert_eq!(RmpAdjustError::Permission.code(), 2);
    }

    #[test]
    fn page_size_operands() {
        assert_eq!(RmpPageSize::from_operand(0), Some(RmpPageSize::Size4K));
        assert_eq!(RmpPageSize::from_operand(1), Some(RmpPageSize::Size2M));
        assert_eq!(RmpPageSize::from_operand(2), None);
        assert_eq!(RmpPageSize::Size2M.bytes(), 0x20_0000);
    }
}
