//! The kernel uAPI the launcher uses, pinned: constants kvm-bindings lacks,
//! compile-time size and offset checks of every kvm-bindings struct the
//! launcher passes to KVM (the SNP ones and the general vCPU/VM ones the
//! native boot uses too; this is the one place for them) against the
//! kernel's layout (include/uapi/linux/kvm.h and arch/x86/include/uapi/
//! asm/kvm.h; restated in snp-svsm.md §8), the firmware's ID block and ID
//! authentication structures, and pure builders for each command struct so
//! their bytes are tested without KVM.

use std::mem::{offset_of, size_of};

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_cpuid2, kvm_create_guest_memfd, kvm_debugregs, kvm_device_attr,
    kvm_dtable, kvm_enable_cap, kvm_fpu, kvm_memory_attributes, kvm_msr_entry, kvm_msrs, kvm_regs,
    kvm_run, kvm_segment, kvm_sev_cmd, kvm_sev_init, kvm_sev_snp_launch_finish,
    kvm_sev_snp_launch_start, kvm_sev_snp_launch_update, kvm_sregs, kvm_translation,
    kvm_userspace_memory_region, kvm_userspace_memory_region2, kvm_xcr, kvm_xcrs,
};
use zerocopy::{FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::igvm_load::IdBlockDirective;

/// `KVM_X86_SNP_VM`, the VM type of an SNP guest.
pub const KVM_X86_SNP_VM: u64 = kvm_bindings::KVM_X86_SNP_VM as u64;
/// `KVM_CAP_VM_TYPES`: bitmask of supported VM types.
pub const KVM_CAP_VM_TYPES: u32 = 235;
/// `KVM_CAP_GUEST_MEMFD`.
pub const KVM_CAP_GUEST_MEMFD: u32 = 234;
/// `KVM_CAP_USER_MEMORY2`.
pub const KVM_CAP_USER_MEMORY2: u32 = 231;
/// `KVM_CAP_MEMORY_ATTRIBUTES`: bitmask of supported attributes.
pub const KVM_CAP_MEMORY_ATTRIBUTES: u32 = 233;
/// `KVM_CAP_EXIT_HYPERCALL`: bitmask of hypercalls that can exit.
pub const KVM_CAP_EXIT_HYPERCALL: u32 = 201;
/// `KVM_MEMORY_ATTRIBUTE_PRIVATE`.
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;
/// `KVM_MEM_GUEST_MEMFD` memory-slot flag.
pub const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;
/// `KVM_HC_MAP_GPA_RANGE` (kvm_para.h; not in kvm-bindings).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// `KVM_MAP_GPA_RANGE_ENCRYPTED`: the range becomes private.
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// `KVM_MEMORY_EXIT_FLAG_PRIVATE`: the faulting access wanted private memory.
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = 1 << 3;
/// `KVM_X86_GRP_SEV` device-attribute group on /dev/kvm.
pub const KVM_X86_GRP_SEV: u32 = 1;
/// `KVM_X86_SEV_VMSA_FEATURES` attribute.
pub const KVM_X86_SEV_VMSA_FEATURES: u64 = 0;
/// `-KVM_EINVAL`, returned to the guest for a rejected hypercall.
pub const KVM_EINVAL_RET: u64 = (-22i64) as u64;

/// `KVM_SEV_INIT2`.
pub const KVM_SEV_INIT2: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_INIT2;
/// `KVM_SEV_SNP_LAUNCH_START`.
pub const KVM_SEV_SNP_LAUNCH_START: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START;
/// `KVM_SEV_SNP_LAUNCH_UPDATE`.
pub const KVM_SEV_SNP_LAUNCH_UPDATE: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE;
/// `KVM_SEV_SNP_LAUNCH_FINISH`.
pub const KVM_SEV_SNP_LAUNCH_FINISH: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH;

/// LAUNCH_UPDATE page type: normal (copied and measured).
pub const PAGE_TYPE_NORMAL: u8 = kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_NORMAL as u8;
/// LAUNCH_UPDATE page type: unmeasured.
pub const PAGE_TYPE_UNMEASURED: u8 = kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_UNMEASURED as u8;
/// LAUNCH_UPDATE page type: secrets (filled by the firmware).
pub const PAGE_TYPE_SECRETS: u8 = kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_SECRETS as u8;
/// LAUNCH_UPDATE page type: CPUID (checked by the firmware).
pub const PAGE_TYPE_CPUID: u8 = kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_CPUID as u8;

/// Firmware status INVALID_PARAM (psp-sev.h `SEV_RET_INVALID_PARAM`): for a
/// CPUID page, the firmware corrected the table.
pub const SEV_RET_INVALID_PARAM: u32 = 0x16;

/// The firmware status codes of psp-sev.h, for messages.
pub fn firmware_status_name(code: u32) -> &'static str {
    match code {
        0x00 => "success",
        0x01 => "invalid platform state",
        0x02 => "invalid guest state",
        0x03 => "invalid config",
        0x04 => "invalid length",
        0x05 => "already owned",
        0x06 => "invalid certificate",
        0x07 => "policy failure (the guest policy is not allowed by the platform)",
        0x08 => "inactive",
        0x09 => "invalid address",
        0x0A => "bad signature (ID block or ID key signature does not verify)",
        0x0B => "bad measurement (the launch digest differs from the ID block's)",
        0x0C => "ASID owned",
        0x0D => "invalid ASID",
        0x0E => "WBINVD required",
        0x0F => "DF_FLUSH required",
        0x10 => "invalid guest",
        0x11 => "invalid command",
        0x12 => "active",
        0x13 => "hardware error (platform)",
        0x14 => "hardware error (unsafe)",
        0x15 => "unsupported",
        0x16 => "invalid parameter",
        0x17 => "resource limit",
        0x18 => "secure data invalid",
        0x19 => "invalid page size",
        0x1A => "invalid page state",
        0x1B => "invalid metadata entry",
        0x1C => "invalid page owner",
        0x1D => "AEAD overflow",
        0x1F => "RMP initialization required",
        0x27 => "invalid key",
        _ => "unknown status",
    }
}

// The kvm-bindings structs against the kernel's layout.
const _: () = {
    assert!(size_of::<kvm_sev_cmd>() == 24);
    assert!(offset_of!(kvm_sev_cmd, id) == 0);
    assert!(offset_of!(kvm_sev_cmd, data) == 8);
    assert!(offset_of!(kvm_sev_cmd, error) == 16);
    assert!(offset_of!(kvm_sev_cmd, sev_fd) == 20);

    assert!(size_of::<kvm_sev_init>() == 48);
    assert!(offset_of!(kvm_sev_init, vmsa_features) == 0);
    assert!(offset_of!(kvm_sev_init, flags) == 8);
    assert!(offset_of!(kvm_sev_init, ghcb_version) == 12);
    assert!(offset_of!(kvm_sev_init, pad1) == 14);
    assert!(offset_of!(kvm_sev_init, pad2) == 16);

    assert!(size_of::<kvm_sev_snp_launch_start>() == 64);
    assert!(offset_of!(kvm_sev_snp_launch_start, policy) == 0);
    assert!(offset_of!(kvm_sev_snp_launch_start, gosvw) == 8);
    assert!(offset_of!(kvm_sev_snp_launch_start, flags) == 24);
    assert!(offset_of!(kvm_sev_snp_launch_start, pad0) == 26);
    assert!(offset_of!(kvm_sev_snp_launch_start, pad1) == 32);

    assert!(size_of::<kvm_sev_snp_launch_update>() == 64);
    assert!(offset_of!(kvm_sev_snp_launch_update, gfn_start) == 0);
    assert!(offset_of!(kvm_sev_snp_launch_update, uaddr) == 8);
    assert!(offset_of!(kvm_sev_snp_launch_update, len) == 16);
    assert!(offset_of!(kvm_sev_snp_launch_update, type_) == 24);
    assert!(offset_of!(kvm_sev_snp_launch_update, pad0) == 25);
    assert!(offset_of!(kvm_sev_snp_launch_update, flags) == 26);
    assert!(offset_of!(kvm_sev_snp_launch_update, pad1) == 28);
    assert!(offset_of!(kvm_sev_snp_launch_update, pad2) == 32);

    assert!(size_of::<kvm_sev_snp_launch_finish>() == 88);
    assert!(offset_of!(kvm_sev_snp_launch_finish, id_block_uaddr) == 0);
    assert!(offset_of!(kvm_sev_snp_launch_finish, id_auth_uaddr) == 8);
    assert!(offset_of!(kvm_sev_snp_launch_finish, id_block_en) == 16);
    assert!(offset_of!(kvm_sev_snp_launch_finish, auth_key_en) == 17);
    assert!(offset_of!(kvm_sev_snp_launch_finish, vcek_disabled) == 18);
    assert!(offset_of!(kvm_sev_snp_launch_finish, host_data) == 19);
    assert!(offset_of!(kvm_sev_snp_launch_finish, pad0) == 51);
    assert!(offset_of!(kvm_sev_snp_launch_finish, flags) == 54);
    assert!(offset_of!(kvm_sev_snp_launch_finish, pad1) == 56);

    assert!(size_of::<kvm_create_guest_memfd>() == 64);
    assert!(offset_of!(kvm_create_guest_memfd, size) == 0);
    assert!(offset_of!(kvm_create_guest_memfd, flags) == 8);
    assert!(offset_of!(kvm_create_guest_memfd, reserved) == 16);

    assert!(size_of::<kvm_userspace_memory_region2>() == 160);
    assert!(offset_of!(kvm_userspace_memory_region2, slot) == 0);
    assert!(offset_of!(kvm_userspace_memory_region2, flags) == 4);
    assert!(offset_of!(kvm_userspace_memory_region2, guest_phys_addr) == 8);
    assert!(offset_of!(kvm_userspace_memory_region2, memory_size) == 16);
    assert!(offset_of!(kvm_userspace_memory_region2, userspace_addr) == 24);
    assert!(offset_of!(kvm_userspace_memory_region2, guest_memfd_offset) == 32);
    assert!(offset_of!(kvm_userspace_memory_region2, guest_memfd) == 40);
    assert!(offset_of!(kvm_userspace_memory_region2, pad1) == 44);
    assert!(offset_of!(kvm_userspace_memory_region2, pad2) == 48);

    assert!(size_of::<kvm_memory_attributes>() == 32);
    assert!(offset_of!(kvm_memory_attributes, address) == 0);
    assert!(offset_of!(kvm_memory_attributes, size) == 8);
    assert!(offset_of!(kvm_memory_attributes, attributes) == 16);
    assert!(offset_of!(kvm_memory_attributes, flags) == 24);

    assert!(size_of::<kvm_device_attr>() == 24);
    assert!(offset_of!(kvm_device_attr, flags) == 0);
    assert!(offset_of!(kvm_device_attr, group) == 4);
    assert!(offset_of!(kvm_device_attr, attr) == 8);
    assert!(offset_of!(kvm_device_attr, addr) == 16);

    assert!(size_of::<kvm_enable_cap>() == 104);
    assert!(offset_of!(kvm_enable_cap, cap) == 0);
    assert!(offset_of!(kvm_enable_cap, args) == 8);

    assert!(kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_NORMAL == 1);
    assert!(kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_ZERO == 3);
    assert!(kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_UNMEASURED == 4);
    assert!(kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_SECRETS == 5);
    assert!(kvm_bindings::KVM_SEV_SNP_PAGE_TYPE_CPUID == 6);
    assert!(kvm_bindings::sev_cmd_id_KVM_SEV_INIT2 == 22);
    assert!(kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START == 100);
    assert!(kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE == 101);
    assert!(kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH == 102);
    assert!(kvm_bindings::KVM_X86_SNP_VM == 4);
    assert!(kvm_bindings::KVM_SEV_SNP_ID_BLOCK_SIZE as usize == size_of::<IdBlock>());
    assert!(kvm_bindings::KVM_SEV_SNP_ID_AUTH_SIZE as usize == size_of::<IdAuth>());
    assert!(kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE as u64 == KVM_MEMORY_ATTRIBUTE_PRIVATE);
    assert!(kvm_bindings::KVM_MEM_GUEST_MEMFD == KVM_MEM_GUEST_MEMFD);
    assert!(kvm_bindings::KVM_X86_GRP_SEV == KVM_X86_GRP_SEV);
    assert!(kvm_bindings::KVM_X86_SEV_VMSA_FEATURES as u64 == KVM_X86_SEV_VMSA_FEATURES);
    assert!(kvm_bindings::KVM_MEMORY_EXIT_FLAG_PRIVATE as u64 == KVM_MEMORY_EXIT_FLAG_PRIVATE);
    assert!(kvm_bindings::KVM_CAP_EXIT_HYPERCALL == KVM_CAP_EXIT_HYPERCALL);
    assert!(kvm_bindings::KVM_CAP_GUEST_MEMFD == KVM_CAP_GUEST_MEMFD);
    assert!(kvm_bindings::KVM_CAP_USER_MEMORY2 == KVM_CAP_USER_MEMORY2);
    assert!(kvm_bindings::KVM_CAP_MEMORY_ATTRIBUTES == KVM_CAP_MEMORY_ATTRIBUTES);
    assert!(kvm_bindings::KVM_CAP_VM_TYPES == KVM_CAP_VM_TYPES);
    assert!(kvm_bindings::KVM_SYSTEM_EVENT_SEV_TERM == crate::vcpu::SYSTEM_EVENT_SEV_TERM);
};

// The general x86 KVM structs the launcher passes (native boot and SNP):
// vCPU registers, the VMSA's register state, CPUID, MSRs, memory slots, GVA
// translation and kvm_run's exit union. The values are the kernel's x86_64
// layout in include/uapi/linux/kvm.h and arch/x86/include/uapi/asm/kvm.h,
// as gcc's sizeof/offsetof report them for Debian 12's linux-libc-dev
// 6.1.187 headers (these structs have not changed since; KVM's uAPI is
// append-only).
const _: () = {
    assert!(size_of::<kvm_regs>() == 144);
    assert!(offset_of!(kvm_regs, rax) == 0);
    assert!(offset_of!(kvm_regs, rbx) == 8);
    assert!(offset_of!(kvm_regs, rcx) == 16);
    assert!(offset_of!(kvm_regs, rdx) == 24);
    assert!(offset_of!(kvm_regs, rsi) == 32);
    assert!(offset_of!(kvm_regs, rdi) == 40);
    assert!(offset_of!(kvm_regs, rsp) == 48);
    assert!(offset_of!(kvm_regs, rbp) == 56);
    assert!(offset_of!(kvm_regs, r8) == 64);
    assert!(offset_of!(kvm_regs, r15) == 120);
    assert!(offset_of!(kvm_regs, rip) == 128);
    assert!(offset_of!(kvm_regs, rflags) == 136);

    assert!(size_of::<kvm_segment>() == 24);
    assert!(offset_of!(kvm_segment, base) == 0);
    assert!(offset_of!(kvm_segment, limit) == 8);
    assert!(offset_of!(kvm_segment, selector) == 12);
    assert!(offset_of!(kvm_segment, type_) == 14);
    assert!(offset_of!(kvm_segment, present) == 15);
    assert!(offset_of!(kvm_segment, dpl) == 16);
    assert!(offset_of!(kvm_segment, db) == 17);
    assert!(offset_of!(kvm_segment, s) == 18);
    assert!(offset_of!(kvm_segment, l) == 19);
    assert!(offset_of!(kvm_segment, g) == 20);
    assert!(offset_of!(kvm_segment, avl) == 21);
    assert!(offset_of!(kvm_segment, unusable) == 22);

    assert!(size_of::<kvm_dtable>() == 16);
    assert!(offset_of!(kvm_dtable, base) == 0);
    assert!(offset_of!(kvm_dtable, limit) == 8);

    assert!(size_of::<kvm_sregs>() == 312);
    assert!(offset_of!(kvm_sregs, cs) == 0);
    assert!(offset_of!(kvm_sregs, ds) == 24);
    assert!(offset_of!(kvm_sregs, es) == 48);
    assert!(offset_of!(kvm_sregs, fs) == 72);
    assert!(offset_of!(kvm_sregs, gs) == 96);
    assert!(offset_of!(kvm_sregs, ss) == 120);
    assert!(offset_of!(kvm_sregs, tr) == 144);
    assert!(offset_of!(kvm_sregs, ldt) == 168);
    assert!(offset_of!(kvm_sregs, gdt) == 192);
    assert!(offset_of!(kvm_sregs, idt) == 208);
    assert!(offset_of!(kvm_sregs, cr0) == 224);
    assert!(offset_of!(kvm_sregs, cr2) == 232);
    assert!(offset_of!(kvm_sregs, cr3) == 240);
    assert!(offset_of!(kvm_sregs, cr4) == 248);
    assert!(offset_of!(kvm_sregs, cr8) == 256);
    assert!(offset_of!(kvm_sregs, efer) == 264);
    assert!(offset_of!(kvm_sregs, apic_base) == 272);
    assert!(offset_of!(kvm_sregs, interrupt_bitmap) == 280);

    assert!(size_of::<kvm_fpu>() == 416);
    assert!(offset_of!(kvm_fpu, fpr) == 0);
    assert!(offset_of!(kvm_fpu, fcw) == 128);
    assert!(offset_of!(kvm_fpu, fsw) == 130);
    assert!(offset_of!(kvm_fpu, ftwx) == 132);
    assert!(offset_of!(kvm_fpu, last_opcode) == 134);
    assert!(offset_of!(kvm_fpu, last_ip) == 136);
    assert!(offset_of!(kvm_fpu, last_dp) == 144);
    assert!(offset_of!(kvm_fpu, xmm) == 152);
    assert!(offset_of!(kvm_fpu, mxcsr) == 408);

    assert!(size_of::<kvm_xcr>() == 16);
    assert!(offset_of!(kvm_xcr, xcr) == 0);
    assert!(offset_of!(kvm_xcr, reserved) == 4);
    assert!(offset_of!(kvm_xcr, value) == 8);
    assert!(size_of::<kvm_xcrs>() == 392);
    assert!(offset_of!(kvm_xcrs, nr_xcrs) == 0);
    assert!(offset_of!(kvm_xcrs, flags) == 4);
    assert!(offset_of!(kvm_xcrs, xcrs) == 8);
    assert!(offset_of!(kvm_xcrs, padding) == 264);

    assert!(size_of::<kvm_debugregs>() == 128);
    assert!(offset_of!(kvm_debugregs, db) == 0);
    assert!(offset_of!(kvm_debugregs, dr6) == 32);
    assert!(offset_of!(kvm_debugregs, dr7) == 40);
    assert!(offset_of!(kvm_debugregs, flags) == 48);
    assert!(offset_of!(kvm_debugregs, reserved) == 56);

    assert!(size_of::<kvm_msr_entry>() == 16);
    assert!(offset_of!(kvm_msr_entry, index) == 0);
    assert!(offset_of!(kvm_msr_entry, reserved) == 4);
    assert!(offset_of!(kvm_msr_entry, data) == 8);
    assert!(size_of::<kvm_msrs>() == 8);
    assert!(offset_of!(kvm_msrs, nmsrs) == 0);
    assert!(offset_of!(kvm_msrs, entries) == 8);

    assert!(size_of::<kvm_cpuid_entry2>() == 40);
    assert!(offset_of!(kvm_cpuid_entry2, function) == 0);
    assert!(offset_of!(kvm_cpuid_entry2, index) == 4);
    assert!(offset_of!(kvm_cpuid_entry2, flags) == 8);
    assert!(offset_of!(kvm_cpuid_entry2, eax) == 12);
    assert!(offset_of!(kvm_cpuid_entry2, ebx) == 16);
    assert!(offset_of!(kvm_cpuid_entry2, ecx) == 20);
    assert!(offset_of!(kvm_cpuid_entry2, edx) == 24);
    assert!(size_of::<kvm_cpuid2>() == 8);
    assert!(offset_of!(kvm_cpuid2, nent) == 0);
    assert!(offset_of!(kvm_cpuid2, entries) == 8);

    assert!(size_of::<kvm_userspace_memory_region>() == 32);
    assert!(offset_of!(kvm_userspace_memory_region, slot) == 0);
    assert!(offset_of!(kvm_userspace_memory_region, flags) == 4);
    assert!(offset_of!(kvm_userspace_memory_region, guest_phys_addr) == 8);
    assert!(offset_of!(kvm_userspace_memory_region, memory_size) == 16);
    assert!(offset_of!(kvm_userspace_memory_region, userspace_addr) == 24);

    assert!(size_of::<kvm_translation>() == 24);
    assert!(offset_of!(kvm_translation, linear_address) == 0);
    assert!(offset_of!(kvm_translation, physical_address) == 8);
    assert!(offset_of!(kvm_translation, valid) == 16);
    assert!(offset_of!(kvm_translation, writeable) == 17);
    assert!(offset_of!(kvm_translation, usermode) == 18);

    // kvm_run: the exit union (256 bytes) at 32, read raw by
    // vcpu::KvmVcpu::exit_union; its `internal` member by internal_error.
    assert!(size_of::<kvm_run>() == 2352);
    assert!(offset_of!(kvm_run, exit_reason) == 8);
    assert!(offset_of!(kvm_run, __bindgen_anon_1) == 32);
    assert!(offset_of!(kvm_run, kvm_valid_regs) == 288);
    assert!(offset_of!(kvm_run, __bindgen_anon_1.internal.suberror) == 32);
    assert!(offset_of!(kvm_run, __bindgen_anon_1.internal.ndata) == 36);
    assert!(offset_of!(kvm_run, __bindgen_anon_1.internal.data) == 40);
};

/// The SNP ID block LAUNCH_FINISH checks (96 bytes, SNP ABI "ID Block").
#[repr(C)]
#[derive(Clone, Debug, IntoBytes, Immutable, KnownLayout, FromZeros)]
pub struct IdBlock {
    /// Expected launch digest.
    pub ld: [u8; 48],
    /// Family ID.
    pub family_id: [u8; 16],
    /// Image ID.
    pub image_id: [u8; 16],
    /// Format version (1).
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// The guest policy (must equal LAUNCH_START's).
    pub policy: u64,
}

/// An ECDSA P-384 signature in the firmware's form (0x200 bytes).
#[repr(C)]
#[derive(Clone, Debug, IntoBytes, Immutable, KnownLayout, FromZeros)]
pub struct EcdsaSignature {
    /// R, little endian, zero-extended to 72 bytes.
    pub r: [u8; 72],
    /// S, likewise.
    pub s: [u8; 72],
    /// Reserved.
    pub reserved: [u8; 0x200 - 144],
}

/// An ECDSA public key in the firmware's form (0x404 bytes).
#[repr(C)]
#[derive(Clone, Debug, IntoBytes, Immutable, KnownLayout, FromZeros)]
pub struct EcdsaPublicKey {
    /// Curve (2 = P-384).
    pub curve: u32,
    /// Qx, little endian, 72 bytes.
    pub qx: [u8; 72],
    /// Qy, likewise.
    pub qy: [u8; 72],
    /// Reserved.
    pub reserved: [u8; 0x404 - 148],
}

/// The ID authentication information structure (4096 bytes).
#[repr(C)]
#[derive(Clone, Debug, IntoBytes, Immutable, KnownLayout, FromZeros)]
pub struct IdAuth {
    /// ID key algorithm (1 = ECDSA P-384 with SHA-384).
    pub id_key_algo: u32,
    /// Author key algorithm.
    pub author_key_algo: u32,
    /// Reserved.
    pub reserved1: [u8; 0x38],
    /// Signature of the ID block with the ID key.
    pub id_block_sig: EcdsaSignature,
    /// The ID key.
    pub id_key: EcdsaPublicKey,
    /// Reserved.
    pub reserved2: [u8; 0x3C],
    /// Signature of the ID key with the author key.
    pub id_key_sig: EcdsaSignature,
    /// The author key.
    pub author_key: EcdsaPublicKey,
    /// Reserved.
    pub reserved3: [u8; 0x37C],
}

const _: () = {
    assert!(size_of::<IdBlock>() == 96);
    assert!(offset_of!(IdBlock, family_id) == 0x30);
    assert!(offset_of!(IdBlock, image_id) == 0x40);
    assert!(offset_of!(IdBlock, version) == 0x50);
    assert!(offset_of!(IdBlock, guest_svn) == 0x54);
    assert!(offset_of!(IdBlock, policy) == 0x58);
    assert!(size_of::<EcdsaSignature>() == 0x200);
    assert!(offset_of!(EcdsaSignature, s) == 0x48);
    assert!(size_of::<EcdsaPublicKey>() == 0x404);
    assert!(offset_of!(EcdsaPublicKey, qx) == 4);
    assert!(offset_of!(EcdsaPublicKey, qy) == 0x4C);
    assert!(size_of::<IdAuth>() == 4096);
    assert!(offset_of!(IdAuth, id_block_sig) == 0x40);
    assert!(offset_of!(IdAuth, id_key) == 0x240);
    assert!(offset_of!(IdAuth, id_key_sig) == 0x680);
    assert!(offset_of!(IdAuth, author_key) == 0x880);
};

/// The ID block and ID authentication LAUNCH_FINISH gets.
#[derive(Clone, Debug)]
pub struct IdMaterial {
    /// The ID block.
    pub block: IdBlock,
    /// Its authentication structure.
    pub auth: Box<IdAuth>,
    /// Whether the author key is present (auth_key_en).
    pub author_key: bool,
}

impl IdMaterial {
    /// Repacks the IGVM file's `SnpIdBlock` (whose public keys carry a
    /// reserved word after the curve) for the firmware, with `policy`.
    pub fn from_directive(d: &IdBlockDirective, policy: u64) -> Self {
        let mut auth = IdAuth::new_box_zeroed().expect("allocating 4 KiB");
        auth.id_key_algo = d.id_key_algorithm;
        auth.author_key_algo = d.author_key_algorithm;
        auth.id_block_sig.r = d.id_block_signature.0;
        auth.id_block_sig.s = d.id_block_signature.1;
        (auth.id_key.curve, auth.id_key.qx, auth.id_key.qy) = d.id_key;
        auth.id_key_sig.r = d.id_key_signature.0;
        auth.id_key_sig.s = d.id_key_signature.1;
        (auth.author_key.curve, auth.author_key.qx, auth.author_key.qy) = d.author_key;
        IdMaterial {
            block: IdBlock {
                ld: d.ld,
                family_id: d.family_id,
                image_id: d.image_id,
                version: d.version,
                guest_svn: d.guest_svn,
                policy,
            },
            auth,
            author_key: d.author_key_enabled,
        }
    }
}

/// KVM_SEV_INIT2's argument.
pub fn init2(vmsa_features: u64) -> kvm_sev_init {
    kvm_sev_init { vmsa_features, flags: 0, ghcb_version: 2, ..Default::default() }
}

/// SNP_LAUNCH_START's argument.
pub fn launch_start(policy: u64) -> kvm_sev_snp_launch_start {
    kvm_sev_snp_launch_start { policy, ..Default::default() }
}

/// SNP_LAUNCH_UPDATE's argument for `len` bytes at `uaddr` into `gfn`.
pub fn launch_update(gfn: u64, uaddr: u64, len: u64, page_type: u8) -> kvm_sev_snp_launch_update {
    kvm_sev_snp_launch_update { gfn_start: gfn, uaddr, len, type_: page_type, ..Default::default() }
}

/// SNP_LAUNCH_FINISH's argument (the merged 88-byte layout).
pub fn launch_finish(id: Option<&IdMaterial>, host_data: &[u8; 32]) -> kvm_sev_snp_launch_finish {
    let mut f = kvm_sev_snp_launch_finish { host_data: *host_data, ..Default::default() };
    if let Some(id) = id {
        f.id_block_uaddr = std::ptr::from_ref(&id.block) as u64;
        f.id_auth_uaddr = std::ptr::from_ref(&*id.auth) as u64;
        f.id_block_en = 1;
        f.auth_key_en = u8::from(id.author_key);
    }
    f
}

/// The bytes of a plain-old-data kvm-bindings struct, for golden tests.
#[cfg(test)]
fn bytes_of<T>(value: &T) -> &[u8] {
    // SAFETY: used only on the padding-free kvm-bindings structs above
    // (their sizes equal the sum of their fields, asserted above), so every
    // byte is initialised.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init2_bytes() {
        let init = init2(0x20);
        let b = bytes_of(&init);
        assert_eq!(&b[0..8], &0x20u64.to_le_bytes());
        assert_eq!(&b[8..12], &[0; 4], "flags");
        assert_eq!(&b[12..14], &2u16.to_le_bytes(), "ghcb_version");
        assert!(b[14..].iter().all(|x| *x == 0));
    }

    #[test]
    fn launch_start_and_update_bytes() {
        let start = launch_start(0x30000);
        let b = bytes_of(&start);
        assert_eq!(&b[0..8], &0x30000u64.to_le_bytes());
        assert!(b[8..].iter().all(|x| *x == 0));
        let u = launch_update(0x100, 0x7f00_0000_1000, 0x2000, PAGE_TYPE_CPUID);
        let b = bytes_of(&u);
        assert_eq!(&b[0..8], &0x100u64.to_le_bytes());
        assert_eq!(&b[8..16], &0x7f00_0000_1000u64.to_le_bytes());
        assert_eq!(&b[16..24], &0x2000u64.to_le_bytes());
        assert_eq!(b[24], 6);
        assert!(b[25..].iter().all(|x| *x == 0));
    }

    #[test]
    fn launch_finish_puts_host_data_at_19_and_flags_stay_zero() {
        let mut host_data = [0u8; 32];
        host_data.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 + 1);
        let f = launch_finish(None, &host_data);
        let b = bytes_of(&f);
        assert_eq!(b.len(), 88);
        assert!(b[..19].iter().all(|x| *x == 0), "no ID block, vcek_disabled 0");
        assert_eq!(&b[19..51], &host_data);
        assert!(b[51..].iter().all(|x| *x == 0), "pad0, flags, pad1");
    }

    #[test]
    fn id_material_repacks_the_igvm_id_block() {
        let d = IdBlockDirective {
            ld: [0x11; 48],
            family_id: [0x22; 16],
            image_id: [0x33; 16],
            version: 1,
            guest_svn: 7,
            id_key_algorithm: 1,
            author_key_algorithm: 0,
            author_key_enabled: false,
            id_block_signature: ([0x44; 72], [0x55; 72]),
            id_key: (2, [0x66; 72], [0x77; 72]),
            id_key_signature: ([0; 72], [0; 72]),
            author_key: (0, [0; 72], [0; 72]),
        };
        let id = IdMaterial::from_directive(&d, 0x30000);
        let block = id.block.as_bytes();
        assert_eq!(&block[0..48], &[0x11; 48]);
        assert_eq!(&block[0x30..0x40], &[0x22; 16]);
        assert_eq!(&block[0x40..0x50], &[0x33; 16]);
        assert_eq!(&block[0x50..0x58], &[1, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&block[0x58..0x60], &0x30000u64.to_le_bytes());
        let auth = id.auth.as_bytes();
        assert_eq!(&auth[0..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&auth[0x40..0x88], &[0x44; 72]);
        assert_eq!(&auth[0x88..0xD0], &[0x55; 72]);
        assert_eq!(&auth[0x240..0x244], &2u32.to_le_bytes());
        assert_eq!(&auth[0x244..0x28C], &[0x66; 72]);
        assert_eq!(&auth[0x28C..0x2D4], &[0x77; 72]);
        let f = launch_finish(Some(&id), &[0; 32]);
        assert_eq!(f.id_block_en, 1);
        assert_eq!(f.auth_key_en, 0);
        assert_eq!(f.id_block_uaddr, std::ptr::from_ref(&id.block) as u64);
    }

    #[test]
    fn firmware_status_names() {
        assert!(firmware_status_name(0x0B).contains("bad measurement"));
        assert_eq!(firmware_status_name(SEV_RET_INVALID_PARAM), "invalid parameter");
        assert_eq!(firmware_status_name(0x99), "unknown status");
    }
}
