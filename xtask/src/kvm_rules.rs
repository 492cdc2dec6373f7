//! The rules KVM and QEMU impose on an IGVM file, checked on the file the
//! build wrote (parsed back), so a layout change that would fail on an SNP
//! host fails here first (igvm-and-launch.md §4.1, §7, §8.4 step 4).

use igvm::snp_defs::SevVmsa;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader};
use igvm_defs::IgvmPageDataType;
use thiserror::Error;
use zerocopy::{FromZeros, IntoBytes};

use crate::start_context::snp_sev_features;

/// The GPA KVM gives the boot VMSA.
pub const KVM_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// A broken rule.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuleError {
    #[error("the SNP platform has {0} VMSAs; KVM measures exactly one (vCPU 0's)")]
    VmsaCount(usize),
    #[error("the VMSA is at {0:#x}; KVM places and measures it at 0xFFFFFFFFF000")]
    VmsaGpa(u64),
    #[error(
        "the VMSA is not the last directive; KVM measures it at LAUNCH_FINISH, after every page"
    )]
    VmsaNotLast,
    #[error("the VMSA's CR0 is {0:#x}; KVM forces 0x30/0x31 into the measured VMSA")]
    VmsaCr0(u64),
    #[error("the VMSA's {0} is not what KVM would rebuild: {1}")]
    VmsaField(&'static str, String),
    #[error("the VMSA's SEV features {0:#x} are not within what the launcher passes ({1:#x})")]
    SevFeatures(u64, u64),
    #[error(
        "the VMSA sets fields KVM does not synchronize (first differing byte at offset {0:#x}); QEMU rejects such a VMSA"
    )]
    VmsaUnsyncedField(usize),
    #[error("page at {0:#x} uses the shared or 2 MiB flag, which loaders disagree on")]
    PageFlags(u64),
    #[error("page at {0:#x} has data type {1:?}, which the native platform cannot load")]
    NativePageType(u64, IgvmPageDataType),
    #[error("directive {0} is a type QEMU's IGVM loader rejects")]
    DirectiveType(String),
    #[error("initialization header {0} is a type QEMU's IGVM loader rejects")]
    InitType(String),
    #[error(
        "platform {mask:#x}: page at {gpa:#x} comes after {previous:#x}; pages must be in ascending GPA order without overlap"
    )]
    PageOrder { mask: u32, gpa: u64, previous: u64 },
    #[error("the native platform has {0} VP contexts; QEMU accepts exactly one, for vCPU 0")]
    NativeContexts(usize),
    #[error("no SNP guest policy, or one without the must-be-one bit 17")]
    Policy,
}

/// The SEV features the launcher passes: it gives KVM_SEV_INIT2
/// `sev_features & !SNPActive` as vmsa_features, and today that is nothing.
pub fn launcher_sev_features() -> u64 {
    snp_sev_features().into_bits()
}

/// Checks every rule; `snp` and `native` are the platforms' masks.
pub fn check(file: &IgvmFile, snp: u32, native: u32) -> Result<(), RuleError> {
    check_directive_types(file)?;
    check_vmsa(file, snp)?;
    check_policy(file, snp)?;
    for mask in [snp, native] {
        check_page_order(file, mask)?;
    }
    check_native(file, native)
}

fn check_directive_types(file: &IgvmFile) -> Result<(), RuleError> {
    for d in file.directives() {
        let accepted = matches!(
            d,
            IgvmDirectiveHeader::PageData { .. }
                | IgvmDirectiveHeader::ParameterArea { .. }
                | IgvmDirectiveHeader::ParameterInsert(_)
                | IgvmDirectiveHeader::VpCount(_)
                | IgvmDirectiveHeader::EnvironmentInfo(_)
                | IgvmDirectiveHeader::MemoryMap(_)
                | IgvmDirectiveHeader::Madt(_)
                | IgvmDirectiveHeader::RequiredMemory { .. }
                | IgvmDirectiveHeader::SnpVpContext { .. }
                | IgvmDirectiveHeader::X64NativeVpContext { .. }
                | IgvmDirectiveHeader::SnpIdBlock { .. }
        );
        if !accepted {
            return Err(RuleError::DirectiveType(directive_name(d)));
        }
        if let IgvmDirectiveHeader::PageData { gpa, flags, .. } = d
            && (flags.shared() || flags.is_2mb_page())
        {
            return Err(RuleError::PageFlags(*gpa));
        }
    }
    for init in file.initializations() {
        if !matches!(init, IgvmInitializationHeader::GuestPolicy { .. }) {
            return Err(RuleError::InitType(format!("{init:?}").chars().take(40).collect()));
        }
    }
    Ok(())
}

/// The variant name of a directive, for messages.
pub fn directive_name(d: &IgvmDirectiveHeader) -> String {
    let text = format!("{d:?}");
    text.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("?").to_string()
}

fn check_vmsa(file: &IgvmFile, snp: u32) -> Result<(), RuleError> {
    let directives = file.directives();
    let vmsas: Vec<(usize, u64, &SevVmsa)> = directives
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            IgvmDirectiveHeader::SnpVpContext { gpa, compatibility_mask, vmsa, .. }
                if compatibility_mask & snp != 0 =>
            {
                Some((i, *gpa, vmsa.as_ref()))
            }
            _ => None,
        })
        .collect();
    let [(index, gpa, vmsa)] = vmsas[..] else {
        return Err(RuleError::VmsaCount(vmsas.len()));
    };
    if gpa != KVM_VMSA_GPA {
        return Err(RuleError::VmsaGpa(gpa));
    }
    if index + 1 != directives.len() {
        return Err(RuleError::VmsaNotLast);
    }
    if vmsa.cr0 != 0x30 && vmsa.cr0 != 0x31 {
        return Err(RuleError::VmsaCr0(vmsa.cr0));
    }
    if vmsa.vmpl != 0 {
        return Err(RuleError::VmsaField(
            "VMPL",
            format!("{} (upstream KVM boots VMPL0)", vmsa.vmpl),
        ));
    }
    if vmsa.efer & 0x1000 == 0 {
        return Err(RuleError::VmsaField("EFER", format!("{:#x} lacks SVME", vmsa.efer)));
    }
    if vmsa.cr4 & 0x40 == 0 {
        return Err(RuleError::VmsaField("CR4", format!("{:#x} lacks MCE", vmsa.cr4)));
    }
    if vmsa.xcr0 & 1 == 0 {
        return Err(RuleError::VmsaField("XCR0", format!("{:#x} lacks x87", vmsa.xcr0)));
    }
    let features = vmsa.sev_features.into_bits();
    let allowed = launcher_sev_features();
    if features & 1 == 0 || features & !allowed != 0 {
        return Err(RuleError::SevFeatures(features, allowed));
    }
    check_synced_fields_only(vmsa)
}

/// QEMU copies only the fields KVM synchronizes into the vCPU and refuses
/// a VMSA with anything else set: compare with a copy holding just those.
fn check_synced_fields_only(vmsa: &SevVmsa) -> Result<(), RuleError> {
    let mut synced = SevVmsa::new_zeroed();
    synced.es = vmsa.es;
    synced.cs = vmsa.cs;
    synced.ss = vmsa.ss;
    synced.ds = vmsa.ds;
    synced.fs = vmsa.fs;
    synced.gs = vmsa.gs;
    synced.gdtr = vmsa.gdtr;
    synced.ldtr = vmsa.ldtr;
    synced.idtr = vmsa.idtr;
    synced.tr = vmsa.tr;
    synced.efer = vmsa.efer;
    synced.cr0 = vmsa.cr0;
    synced.cr3 = vmsa.cr3;
    synced.cr4 = vmsa.cr4;
    synced.xcr0 = vmsa.xcr0;
    synced.dr6 = vmsa.dr6;
    synced.dr7 = vmsa.dr7;
    synced.rax = vmsa.rax;
    synced.rbx = vmsa.rbx;
    synced.rcx = vmsa.rcx;
    synced.rdx = vmsa.rdx;
    synced.rsi = vmsa.rsi;
    synced.rdi = vmsa.rdi;
    synced.rbp = vmsa.rbp;
    synced.rsp = vmsa.rsp;
    synced.r8 = vmsa.r8;
    synced.r9 = vmsa.r9;
    synced.r10 = vmsa.r10;
    synced.r11 = vmsa.r11;
    synced.r12 = vmsa.r12;
    synced.r13 = vmsa.r13;
    synced.r14 = vmsa.r14;
    synced.r15 = vmsa.r15;
    synced.rip = vmsa.rip;
    synced.rflags = vmsa.rflags;
    synced.pat = vmsa.pat;
    synced.x87_fcw = vmsa.x87_fcw;
    synced.mxcsr = vmsa.mxcsr;
    synced.sev_features = vmsa.sev_features;
    match vmsa.as_bytes().iter().zip(synced.as_bytes()).position(|(a, b)| a != b) {
        Some(offset) => Err(RuleError::VmsaUnsyncedField(offset)),
        None => Ok(()),
    }
}

fn check_policy(file: &IgvmFile, snp: u32) -> Result<(), RuleError> {
    let ok = file.initializations().iter().any(|i| {
        matches!(i, IgvmInitializationHeader::GuestPolicy { policy, compatibility_mask }
            if compatibility_mask & snp != 0 && policy & (1 << 17) != 0)
    });
    if ok { Ok(()) } else { Err(RuleError::Policy) }
}

/// Pages (and inserted parameter areas) of one platform come in strictly
/// ascending GPA order, so none overlaps another.
fn check_page_order(file: &IgvmFile, mask: u32) -> Result<(), RuleError> {
    let mut areas = std::collections::HashMap::new();
    let mut next_free: Option<u64> = None;
    let mut previous = 0;
    for d in file.directives() {
        let (gpa, size) = match d {
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes, parameter_area_index, ..
            } => {
                areas.insert(*parameter_area_index, *number_of_bytes);
                continue;
            }
            IgvmDirectiveHeader::PageData { gpa, compatibility_mask, .. }
                if compatibility_mask & mask != 0 =>
            {
                (*gpa, 4096)
            }
            IgvmDirectiveHeader::ParameterInsert(insert)
                if insert.compatibility_mask & mask != 0 =>
            {
                (insert.gpa, areas.get(&insert.parameter_area_index).copied().unwrap_or(4096))
            }
            _ => continue,
        };
        if next_free.is_some_and(|free| gpa < free) {
            return Err(RuleError::PageOrder { mask, gpa, previous });
        }
        previous = gpa;
        next_free = Some(gpa.saturating_add(size));
    }
    Ok(())
}

fn check_native(file: &IgvmFile, native: u32) -> Result<(), RuleError> {
    let mut contexts = 0;
    for d in file.directives() {
        match d {
            IgvmDirectiveHeader::X64NativeVpContext { compatibility_mask, vp_index, .. }
                if compatibility_mask & native != 0 =>
            {
                contexts += if *vp_index == 0 { 1 } else { 2 };
            }
            IgvmDirectiveHeader::PageData { gpa, compatibility_mask, data_type, .. }
                if compatibility_mask & native != 0 && *data_type != IgvmPageDataType::NORMAL =>
            {
                return Err(RuleError::NativePageType(*gpa, *data_type));
            }
            _ => {}
        }
    }
    if contexts != 1 {
        return Err(RuleError::NativeContexts(contexts));
    }
    Ok(())
}
