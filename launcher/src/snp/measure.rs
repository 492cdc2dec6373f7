//! The launch digest this launcher's SNP launch implies, computed without
//! SNP hardware: the launcher's own prepare/launch sequence runs against the
//! recording [`FakeSnp`], and the PSP's page-hash chain is taken over what it
//! sent (every LAUNCH_UPDATE page in order: type, GPA, contents) followed by
//! the VMSA page KVM would build for vCPU 0 at LAUNCH_FINISH from the vCPU
//! state the launcher set ([`kvm_vmsa`], a model of KVM's VMSA sync).
//!
//! `cargo xtask` compares [`expected_launch_digest`] of the built IGVM with
//! its own digest and the `igvm` crate's; a difference means the launcher
//! would launch something other than what was measured.

use igvm::snp_defs::{SevSelector, SevVmsa};
use kvm_bindings::{kvm_segment, kvm_sregs};
use sha2::{Digest, Sha384};
use zerocopy::{FromZeros, IntoBytes};

use super::fake::{Call, FakeSnp};
use super::vmsa::{SEV_FEATURE_SNP, VcpuState, vcpu_state};
use super::{PlanesMode, SnpError, SnpOptions, launch, prepare, uapi};
use crate::guest_memory::GuestMemory;
use crate::igvm_load::SNP_VMSA_GPA;

/// Guest memory used for the replay (the launcher's default `--memory`).
/// The digest does not depend on it: the memory map is an unmeasured
/// parameter page.
const REPLAY_MEMORY: u64 = 512 << 20;

/// PAGE_INFO's PAGE_TYPE for the VMSA page (SNP ABI, "PAGE_INFO").
const PAGE_TYPE_VMSA: u8 = 2;

/// The launch digest (SNP ABI LAUNCH_DIGEST, 48 bytes) the PSP would compute
/// when this launcher launches `igvm`'s SNP platform.
///
/// Runs [`prepare`] and [`launch`] against [`FakeSnp`] (no KVM is opened),
/// then chains SHA-384 over PAGE_INFO for every page the launcher handed to
/// SNP_LAUNCH_UPDATE, in call order (NORMAL pages with the SHA-384 of their
/// contents, UNMEASURED/SECRETS/CPUID with zero contents, as the ABI
/// defines), and last over the VMSA KVM would build for vCPU 0 ([`kvm_vmsa`])
/// at GPA 0xFFFF_FFFF_F000 with page type VMSA.
///
/// # Errors
/// Whatever the launch itself would refuse (a file without an SNP platform,
/// a VMSA KVM cannot reproduce, more memory than 512 MiB needed), and
/// vCPU state KVM would reject at LAUNCH_FINISH (see [`kvm_vmsa`]).
pub fn expected_launch_digest(igvm: &[u8]) -> Result<[u8; 48], SnpError> {
    let options = SnpOptions {
        memory: REPLAY_MEMORY,
        cpus: 1,
        timeout: std::time::Duration::ZERO,
        host_data: [0; 32],
        planes: PlanesMode::Off,
    };
    let prepared = prepare(igvm, &options)?;
    let mut memory = GuestMemory::new(&prepared.layout).map_err(SnpError::Memory)?;
    let mut fake = FakeSnp::new();
    launch(&mut fake, &prepared, &mut memory, &options.host_data)?;
    let (vmsa_features, state) = replayed_vcpu(&fake)?;
    let vmsa = kvm_vmsa(&state, vmsa_features).map_err(SnpError::Vmsa)?;
    Ok(launch_digest(&fake.updates, vmsa.as_bytes()))
}

/// INIT2's vmsa_features and the vCPU state the replay set.
fn replayed_vcpu(fake: &FakeSnp) -> Result<(u64, VcpuState), SnpError> {
    let features = fake.calls().iter().find_map(|call| match call {
        Call::SevInit2 { vmsa_features, .. } => Some(*vmsa_features),
        _ => None,
    });
    match (features, fake.vcpu_state.clone()) {
        (Some(features), Some(state)) => Ok((features, state)),
        _ => Err(SnpError::Vmsa("the replayed launch set no vCPU state".into())),
    }
}

/// The PSP's launch digest over `updates` (GPA, page type, source bytes of
/// each LAUNCH_UPDATE, in order) followed by the VMSA page `vmsa`.
///
/// Each 4 KiB page extends the digest with SHA-384 of PAGE_INFO (SNP ABI
/// table "PAGE_INFO", 0x70 bytes): `DIGEST_CUR[48]`, `CONTENTS[48]`, LENGTH u16
/// (0x70), PAGE_TYPE u8, IMI_PAGE/VMPL3/2/1 permissions and a reserved byte
/// (all 0: KVM's LAUNCH_UPDATE sets none), GPA u64. CONTENTS is SHA-384 of
/// the page for NORMAL and VMSA pages and zero for every other type.
pub fn launch_digest(updates: &[(u64, u8, Vec<u8>)], vmsa: &[u8]) -> [u8; 48] {
    let mut digest = [0u8; 48];
    let mut extend = |contents: [u8; 48], page_type: u8, gpa: u64| {
        let mut info = Vec::with_capacity(0x70);
        info.extend_from_slice(&digest);
        info.extend_from_slice(&contents);
        info.extend_from_slice(&0x70u16.to_le_bytes());
        info.push(page_type);
        info.extend_from_slice(&[0; 5]);
        info.extend_from_slice(&gpa.to_le_bytes());
        digest = Sha384::digest(&info).into();
    };
    for (gpa, page_type, data) in updates {
        for (i, page) in data.chunks(4096).enumerate() {
            let contents = match *page_type {
                uapi::PAGE_TYPE_NORMAL => Sha384::digest(page).into(),
                _ => [0; 48],
            };
            extend(contents, *page_type, gpa + 4096 * i as u64);
        }
    }
    extend(Sha384::digest(vmsa).into(), PAGE_TYPE_VMSA, SNP_VMSA_GPA);
    digest
}

/// CR0.CD | CR0.NW: cleared by KVM_X86_QUIRK_CD_NW_CLEARED (on by default).
const CR0_CD_NW: u64 = (1 << 30) | (1 << 29);
/// CR4.MCE: KVM ORs in the host's (set on every Linux host).
const CR4_MCE: u64 = 1 << 6;
/// EFER.SVME: KVM sets it in every VMCB.
const EFER_SVME: u64 = 1 << 12;
/// RFLAGS bit 1, which KVM_SET_REGS always sets.
const RFLAGS_FIXED: u64 = 1 << 1;
/// DR7 bits that may be set at LAUNCH_FINISH (DR7_FIXED_1).
const DR7_FIXED_1: u64 = 0x400;
/// XCR0.X87, without which KVM_SET_XCRS fails.
const XCR0_X87: u64 = 1;

/// The VMSA KVM builds for vCPU 0 at SNP_LAUNCH_FINISH after the launcher
/// set `state` (regs, sregs, FPU control word and MXCSR over KVM's reset
/// FPU, XCR0, DR6/DR7, PAT) on a VM created with INIT2 `vmsa_features`.
///
/// A model of Linux arch/x86/kvm/svm/sev.c `sev_es_sync_vmsa` (v6.11+: the
/// VMCB save area copied, then GPRs, RIP, XCR0, PKRU, XSS, DR6,
/// SEV_FEATURES and, for non-default VM types, the FPU synced from vCPU
/// state) and of how svm.c fills the VMCB save area from the ioctls the
/// launcher issues: `svm_set_segment` (attributes packed from kvm_segment,
/// P cleared for unusable segments, CPL = SS.DPL), `svm_set_gdt/idt`,
/// `svm_set_cr0` (CD/NW cleared), `sev_post_set_cr3` (CR3 into the VMCB for
/// SEV-ES/SNP), `svm_set_cr4` (host CR4.MCE added), `svm_set_efer` (SVME
/// added), `kvm_set_rflags` (bit 1 added), `svm_set_dr7`, the PAT MSR into
/// `g_pat`. SEV_FEATURES is `vmsa_features | SNPActive` (`__sev_guest_init`
/// adds SNPActive for KVM_X86_SNP_VM). Everything else is KVM's reset
/// value: zero, including PKRU, XSS, the x87 status/tag words and every
/// x87/XMM/YMM register.
///
/// # Errors
/// State KVM refuses: DR7 other than 0 or DR7_FIXED_1 (`sev_es_sync_vmsa`
/// fails LAUNCH_FINISH with EINVAL), XCR0 without x87 (KVM_SET_XCRS fails),
/// a descriptor-table limit above 0xFFFF (kvm_sregs cannot carry it).
pub fn kvm_vmsa(state: &VcpuState, vmsa_features: u64) -> Result<Box<SevVmsa>, String> {
    let (regs, sregs) = (&state.regs, &state.sregs);
    if state.dr7 & !DR7_FIXED_1 != 0 {
        return Err(format!(
            "DR7 {:#x}: KVM fails LAUNCH_FINISH unless DR7 is 0 or {DR7_FIXED_1:#x}",
            state.dr7
        ));
    }
    if state.xcr0 & XCR0_X87 == 0 {
        return Err(format!(
            "XCR0 {:#x}: KVM_SET_XCRS refuses XCR0 without x87 (bit 0)",
            state.xcr0
        ));
    }
    let mut v = SevVmsa::new_box_zeroed().expect("allocating 4 KiB");
    v.es = vmcb_segment(&sregs.es);
    v.cs = vmcb_segment(&sregs.cs);
    v.ss = vmcb_segment(&sregs.ss);
    v.ds = vmcb_segment(&sregs.ds);
    v.fs = vmcb_segment(&sregs.fs);
    v.gs = vmcb_segment(&sregs.gs);
    v.ldtr = vmcb_segment(&sregs.ldt);
    v.tr = vmcb_segment(&sregs.tr);
    v.gdtr = SevSelector {
        selector: 0,
        attrib: 0,
        limit: u32::from(sregs.gdt.limit),
        base: sregs.gdt.base,
    };
    v.idtr = SevSelector {
        selector: 0,
        attrib: 0,
        limit: u32::from(sregs.idt.limit),
        base: sregs.idt.base,
    };
    v.cpl = sregs.ss.dpl & 3;
    v.efer = sregs.efer | EFER_SVME;
    v.cr0 = sregs.cr0 & !CR0_CD_NW;
    v.cr3 = sregs.cr3;
    v.cr4 = sregs.cr4 | CR4_MCE;
    v.dr7 = state.dr7;
    v.dr6 = state.dr6;
    v.rflags = regs.rflags | RFLAGS_FIXED;
    v.rip = regs.rip;
    v.rsp = regs.rsp;
    v.rax = regs.rax;
    v.rbx = regs.rbx;
    v.rcx = regs.rcx;
    v.rdx = regs.rdx;
    v.rbp = regs.rbp;
    v.rsi = regs.rsi;
    v.rdi = regs.rdi;
    v.r8 = regs.r8;
    v.r9 = regs.r9;
    v.r10 = regs.r10;
    v.r11 = regs.r11;
    v.r12 = regs.r12;
    v.r13 = regs.r13;
    v.r14 = regs.r14;
    v.r15 = regs.r15;
    v.pat = state.pat;
    v.xcr0 = state.xcr0;
    v.sev_features = igvm::snp_defs::SevFeatures::from_bits(vmsa_features | SEV_FEATURE_SNP);
    v.x87_fcw = state.fcw;
    v.mxcsr = state.mxcsr;
    Ok(v)
}

/// Checks that the VMSA KVM builds from the vCPU state the launcher derives
/// from `file` ([`vcpu_state`] then [`kvm_vmsa`]) is `file` byte for byte,
/// so the launch digest is the one the file's tools predict.
pub fn check_reproducible(file: &SevVmsa, vmsa_features: u64) -> Result<(), String> {
    let built = kvm_vmsa(&vcpu_state(file, kvm_sregs::default()), vmsa_features)
        .map_err(|e| format!("the SNP VMSA cannot be launched: {e}"))?;
    match built.as_bytes().iter().zip(file.as_bytes()).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(offset) => Err(format!(
            "the SNP VMSA differs at byte {offset:#x} from the one KVM builds from the same \
             vCPU state (KVM sets EFER.SVME, CR4.MCE and RFLAGS bit 1, clears CR0.CD/NW, and \
             leaves GDTR/IDTR selector and attributes 0); the launch digest would not match"
        )),
    }
}

/// The VMCB form of a KVM segment (`svm_set_segment`): type in bits 3:0, S
/// in 4, DPL in 6:5, P in 7 (clear when unusable), AVL in 8, L in 9, D/B in
/// 10, G in 11.
fn vmcb_segment(s: &kvm_segment) -> SevSelector {
    let present = u16::from(s.present & 1 == 1 && s.unusable == 0);
    let attrib = u16::from(s.type_ & 0xf)
        | u16::from(s.s & 1) << 4
        | u16::from(s.dpl & 3) << 5
        | present << 7
        | u16::from(s.avl & 1) << 8
        | u16::from(s.l & 1) << 9
        | u16::from(s.db & 1) << 10
        | u16::from(s.g & 1) << 11;
    SevSelector { selector: s.selector, attrib, limit: s.limit, base: s.base }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use crate::snp::vmsa::{check_vmsa, vmsa_segment};

    /// What KVM would measure for `file` after the launcher applied it.
    fn round_trip(file: &SevVmsa) -> Result<Box<SevVmsa>, String> {
        check_vmsa(file)?;
        let features = file.sev_features.into_bits() & !SEV_FEATURE_SNP;
        kvm_vmsa(&vcpu_state(file, kvm_sregs::default()), features)
    }

    fn first_difference(a: &SevVmsa, b: &SevVmsa) -> Option<usize> {
        a.as_bytes().iter().zip(b.as_bytes()).position(|(x, y)| x != y)
    }

    #[test]
    fn the_sample_vmsa_survives_kvm_s_sync_byte_for_byte() {
        let file = sample::snp_vmsa(sample::CODE_GPA, sample::STACK_GPA + 0x1000);
        let built = round_trip(&file).unwrap();
        assert_eq!(first_difference(&built, &file), None);
    }

    /// A VMSA with every field KVM syncs set to a distinct value: a field
    /// the launcher failed to pass on (or passed to the wrong register)
    /// would come back different.
    #[test]
    fn every_synced_field_makes_the_round_trip() {
        let mut f = sample::snp_vmsa(0, 0);
        let code = SevSelector { selector: 0x08, attrib: 0xa9b, limit: 0xffff_ffff, base: 0 };
        let data = |n: u16| SevSelector {
            selector: 0x10 + 8 * n,
            attrib: 0xc93,
            limit: 0x000f_ffff + u32::from(n),
            base: 0x1000 * u64::from(n),
        };
        f.cs = code;
        (f.ds, f.es, f.fs, f.gs, f.ss) = (data(0), data(1), data(2), data(3), data(4));
        f.tr = SevSelector { selector: 0x40, attrib: 0x8b, limit: 0x67, base: 0x5000 };
        f.ldtr = SevSelector { selector: 0x48, attrib: 0x82, limit: 0xff, base: 0x6000 };
        f.gdtr = SevSelector { selector: 0, attrib: 0, limit: 0x4f, base: 0x7000 };
        f.idtr = SevSelector { selector: 0, attrib: 0, limit: 0xfff, base: 0x8000 };
        (f.cr0, f.cr3, f.cr4, f.efer) = (0x8000_0031, 0x9000, 0x6e0, 0x1d00);
        (f.rflags, f.rip, f.rsp) = (0x202, 0xa000, 0xb000);
        let mut n = 0u64;
        for r in [
            &mut f.rax, &mut f.rbx, &mut f.rcx, &mut f.rdx, &mut f.rbp, &mut f.rsi, &mut f.rdi,
            &mut f.r8, &mut f.r9, &mut f.r10, &mut f.r11, &mut f.r12, &mut f.r13, &mut f.r14,
            &mut f.r15,
        ] {
            n += 1;
            *r = 0x1111_0000_0000_0000 * n + n;
        }
        (f.xcr0, f.pat, f.dr6, f.dr7) = (7, 0x0406_0007_0406_0007, 0xffff_0ff0, 0x400);
        (f.x87_fcw, f.mxcsr) = (0x37f, 0x1f80);
        f.sev_features = f.sev_features.with_debug_swap(true);
        let built = round_trip(&f).unwrap();
        assert_eq!(first_difference(&built, &f), None);

        // The comparison catches a field the launcher drops.
        let mut state = vcpu_state(&f, kvm_sregs::default());
        state.regs.r13 = 0;
        let dropped = kvm_vmsa(&state, 1 << 5).unwrap();
        assert_eq!(first_difference(&dropped, &f), Some(std::mem::offset_of!(SevVmsa, r13)));
    }

    #[test]
    fn fields_kvm_rewrites_do_not_round_trip() {
        // KVM forces these; a file with other values would be measured
        // differently than it says, and the comparison shows where.
        type Change = fn(&mut SevVmsa);
        let cases: [(Change, usize); 5] = [
            (|v| v.cr4 = 0, std::mem::offset_of!(SevVmsa, cr4)),
            (|v| v.efer = 0, std::mem::offset_of!(SevVmsa, efer)),
            (|v| v.rflags = 0, std::mem::offset_of!(SevVmsa, rflags)),
            (|v| v.cr0 |= 1 << 30, std::mem::offset_of!(SevVmsa, cr0)),
            (|v| v.gdtr.selector = 8, std::mem::offset_of!(SevVmsa, gdtr)),
        ];
        for (change, offset) in cases {
            let mut file = sample::snp_vmsa(0x1000, 0x2000);
            change(&mut file);
            let built = round_trip(&file).unwrap();
            let at = first_difference(&built, &file).expect("a difference");
            assert!(
                (offset..offset + 8).contains(&at),
                "{at:#x} is not in the field at {offset:#x}"
            );
        }
    }

    #[test]
    fn state_kvm_refuses_is_an_error() {
        let mut file = sample::snp_vmsa(0, 0);
        file.dr7 = 0x401;
        assert!(round_trip(&file).unwrap_err().contains("DR7 0x401"));
        let mut file = sample::snp_vmsa(0, 0);
        file.xcr0 = 0;
        assert!(round_trip(&file).unwrap_err().contains("XCR0 0x0"));
    }

    #[test]
    fn segments_pack_as_svm_set_segment_does() {
        for attrib in [0xc9b, 0xa9b, 0xc93, 0x8b, 0x82, 0xcf3, 0] {
            let s = SevSelector { selector: 0x18, attrib, limit: 0xffff, base: 0x1234 };
            assert_eq!(vmcb_segment(&vmsa_segment(&s)).attrib, attrib, "{attrib:#x}");
        }
        let unusable =
            kvm_segment { type_: 3, s: 1, present: 1, unusable: 1, ..Default::default() };
        assert_eq!(vmcb_segment(&unusable).attrib, 0x13, "P cleared for an unusable segment");
    }

    #[test]
    fn the_digest_of_the_sample_file_equals_the_igvm_crate_s() {
        let igvm = sample::sample_file(&sample::smoke_guest());
        let file = igvm::IgvmFile::new_from_binary(&igvm, None).unwrap();
        let expected = igvm::measurement::generate_snp_measurement(
            file.initializations(),
            file.directives(),
            sample::SNP_MASK,
        )
        .unwrap();
        assert_eq!(expected_launch_digest(&igvm).unwrap(), expected);

        // Another code page, another digest.
        let other = sample::sample_file(&sample::halt_guest());
        assert_ne!(expected_launch_digest(&other).unwrap(), expected);
    }

    #[test]
    fn a_file_the_launcher_refuses_has_no_digest() {
        let mut vmsa = sample::snp_vmsa(0, 0);
        vmsa.dr7 = 0x401;
        let mut directives = sample::sample_directives(&[0x90]);
        let last = directives.len() - 1;
        directives[last] = sample::snp_context(vmsa);
        let igvm = sample::serialize(
            sample::platforms(),
            vec![sample::policy(sample::POLICY)],
            directives,
        )
        .unwrap();
        let err = expected_launch_digest(&igvm).unwrap_err();
        assert!(err.to_string().contains("DR7 0x401"), "{err}");
        assert!(expected_launch_digest(b"not an IGVM file").is_err());
    }
}
