//! The AMD SVM virtual machine control block (VMCB), and the one conversion
//! between a VMSA and what VMRUN takes: the VMCB (control area and state
//! save area) plus the general registers VMRUN leaves to software.
//!
//! The dev platform runs guests with VMRUN but keeps their state in VMSAs,
//! as SNP hardware does, so the SVSM above the platform sees the same thing
//! on both. The VMSA extends the VMCB state-save area: every field the two
//! share sits at the same offset (checked at compile time below), so the
//! conversion is a field-by-field copy listed once in
//! [`for_each_shared_field`].
//!
//! Sources: AMD64 Architecture Programmer's Manual vol. 2, appendix B
//! (layout of the VMCB), as the project reference `environment.md` §4.6 and
//! QEMU's `target/i386/svm.h` use it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::vmsa::{Segment, Vmsa, vintr};

/// Intercept bits of the `intercept_misc1` word (VMCB offset 0x00C).
pub mod misc1 {
    /// Physical INTR.
    pub const INTR: u32 = 1 << 0;
    /// Physical NMI.
    pub const NMI: u32 = 1 << 1;
    /// INIT.
    pub const INIT: u32 = 1 << 3;
    /// CPUID.
    pub const CPUID: u32 = 1 << 18;
    /// HLT.
    pub const HLT: u32 = 1 << 24;
    /// INVLPGA.
    pub const INVLPGA: u32 = 1 << 26;
    /// IN/OUT through the I/O permission map.
    pub const IOIO_PROT: u32 = 1 << 27;
    /// RDMSR/WRMSR through the MSR permission map.
    pub const MSR_PROT: u32 = 1 << 28;
    /// Task switches.
    pub const TASK_SWITCH: u32 = 1 << 29;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u32 = 1 << 31;
}

/// Intercept bits of the `intercept_misc2` word (VMCB offset 0x010).
pub mod misc2 {
    /// VMRUN (must be set, or VMRUN fails).
    pub const VMRUN: u32 = 1 << 0;
    /// VMMCALL.
    pub const VMMCALL: u32 = 1 << 1;
    /// VMLOAD.
    pub const VMLOAD: u32 = 1 << 2;
    /// VMSAVE.
    pub const VMSAVE: u32 = 1 << 3;
    /// STGI.
    pub const STGI: u32 = 1 << 4;
    /// CLGI.
    pub const CLGI: u32 = 1 << 5;
    /// SKINIT.
    pub const SKINIT: u32 = 1 << 6;
}

/// `np_control` (VMCB offset 0x090): nested paging on.
pub const NP_ENABLE: u64 = 1 << 0;
/// `tlb_control`: flush the guest's whole TLB at the next VMRUN.
pub const TLB_FLUSH_ALL: u8 = 1;
/// `interrupt_shadow` bit 0: the guest is in an interrupt shadow.
pub const INTERRUPT_SHADOW: u64 = 1 << 0;

/// RAX of the dev platform's null exit, `SVSMNOOP` in ASCII: a plain
/// (not `rep`) VMMCALL with this in RAX is answered by the dev platform's
/// exit handler with nothing but moving RIP past the instruction, before
/// and without the request loop; any other plain VMMCALL gets #UD. It
/// exists so `cargo xtask bench call` can time one bare exit-and-return.
/// SNP hardware has no such thing (a VMMCALL raises #VC there).
pub const DEV_NULL_EXIT_RAX: u64 = u64::from_be_bytes(*b"SVSMNOOP");

/// Exit codes (VMCB `exit_code`).
pub mod exit {
    /// Exception vector `n` intercepted: `EXCEPTION_BASE + n`.
    pub const EXCEPTION_BASE: u64 = 0x40;
    /// #UD.
    pub const UD: u64 = 0x46;
    /// Physical INTR.
    pub const INTR: u64 = 0x60;
    /// Physical NMI.
    pub const NMI: u64 = 0x61;
    /// INIT.
    pub const INIT: u64 = 0x63;
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// HLT.
    pub const HLT: u64 = 0x78;
    /// INVLPGA.
    pub const INVLPGA: u64 = 0x7A;
    /// IN/OUT.
    pub const IOIO: u64 = 0x7B;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7C;
    /// Task switch.
    pub const TASK_SWITCH: u64 = 0x7D;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u64 = 0x7F;
    /// VMRUN.
    pub const VMRUN: u64 = 0x80;
    /// VMMCALL (also `rep vmmcall`, i.e. VMGEXIT, outside SEV-ES).
    pub const VMMCALL: u64 = 0x81;
    /// VMLOAD.
    pub const VMLOAD: u64 = 0x82;
    /// VMSAVE.
    pub const VMSAVE: u64 = 0x83;
    /// STGI.
    pub const STGI: u64 = 0x84;
    /// CLGI.
    pub const CLGI: u64 = 0x85;
    /// SKINIT.
    pub const SKINIT: u64 = 0x86;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// VMRUN found the guest state invalid (low 32 bits all ones).
    pub const INVALID: u64 = 0xFFFF_FFFF;
}

/// EXITINFO1 bits of a nested page fault.
pub mod npf {
    /// The page was present (a permission fault).
    pub const PRESENT: u64 = 1 << 0;
    /// The access was a write.
    pub const WRITE: u64 = 1 << 1;
    /// The access was an instruction fetch.
    pub const FETCH: u64 = 1 << 4;
    /// The fault hit the final guest-physical address.
    pub const FINAL_ADDRESS: u64 = 1 << 32;
    /// The fault hit a guest page-table access.
    pub const TABLE_WALK: u64 = 1 << 33;
}

/// `event_inj` / `exit_int_info` encoding.
pub mod event {
    /// The event is valid.
    pub const VALID: u64 = 1 << 31;
    /// An error code is delivered.
    pub const ERROR_CODE_VALID: u64 = 1 << 11;
    /// Type: external interrupt.
    pub const TYPE_INTR: u64 = 0 << 8;
    /// Type: NMI.
    pub const TYPE_NMI: u64 = 2 << 8;
    /// Type: exception.
    pub const TYPE_EXCEPTION: u64 = 3 << 8;

    /// An exception with vector `vector` and, if given, an error code.
    pub const fn exception(vector: u8, error_code: Option<u32>) -> u64 {
        let base = VALID | TYPE_EXCEPTION | vector as u64;
        match error_code {
            Some(code) => base | ERROR_CODE_VALID | (code as u64) << 32,
            None => base,
        }
    }
}

/// The VMCB control area (offsets 0x000..0x400).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VmcbControl {
    /// CR reads (bits 0..16) and writes (bits 16..32) intercepted (0x000).
    pub intercept_cr: u32,
    /// DR reads and writes intercepted (0x004).
    pub intercept_dr: u32,
    /// Exception vectors intercepted (0x008).
    pub intercept_exceptions: u32,
    /// See [`misc1`] (0x00C).
    pub intercept_misc1: u32,
    /// See [`misc2`] (0x010).
    pub intercept_misc2: u32,
    /// Further intercepts (0x014).
    pub intercept_misc3: u32,
    /// Reserved (0x018).
    pub reserved_018: [u8; 0x24],
    /// PAUSE filter threshold (0x03C).
    pub pause_filter_threshold: u16,
    /// PAUSE filter count (0x03E).
    pub pause_filter_count: u16,
    /// Physical address of the I/O permission map (0x040).
    pub iopm_base_pa: u64,
    /// Physical address of the MSR permission map (0x048).
    pub msrpm_base_pa: u64,
    /// TSC offset (0x050).
    pub tsc_offset: u64,
    /// Guest ASID (0x058); must not be 0.
    pub guest_asid: u32,
    /// TLB control (0x05C).
    pub tlb_control: u8,
    /// Reserved (0x05D).
    pub reserved_05d: [u8; 3],
    /// Virtual interrupt control (0x060): V_TPR, V_IRQ, priority, vector.
    pub vintr: u64,
    /// Interrupt shadow (0x068).
    pub interrupt_shadow: u64,
    /// Exit code (0x070).
    pub exit_code: u64,
    /// EXITINFO1 (0x078).
    pub exit_info1: u64,
    /// EXITINFO2 (0x080).
    pub exit_info2: u64,
    /// EXITINTINFO (0x088).
    pub exit_int_info: u64,
    /// Nested paging and SEV enables (0x090).
    pub np_control: u64,
    /// AVIC APIC BAR (0x098).
    pub avic_apic_bar: u64,
    /// GHCB GPA (SEV-ES) (0x0A0).
    pub ghcb_gpa: u64,
    /// Event to inject (0x0A8).
    pub event_inj: u64,
    /// Nested page-table root (0x0B0).
    pub n_cr3: u64,
    /// LBR virtualization and virtual VMLOAD/VMSAVE (0x0B8).
    pub virt_ext: u64,
    /// VMCB clean bits (0x0C0).
    pub clean_bits: u32,
    /// Reserved (0x0C4).
    pub reserved_0c4: u32,
    /// Next RIP, with NRIP save (0x0C8).
    pub next_rip: u64,
    /// Number of instruction bytes fetched, with decode assists (0x0D0).
    pub insn_len: u8,
    /// The instruction bytes (0x0D1).
    pub insn_bytes: [u8; 15],
    /// Reserved to the end of the control area (0x0E0).
    pub reserved_0e0: [u8; 0x320],
}

/// The VMCB state-save area (offsets 0x400..0x1000). Every field it shares
/// with the [`Vmsa`] has the VMSA's name and offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VmcbSave {
    /// ES (0x000).
    pub es: Segment,
    /// CS (0x010).
    pub cs: Segment,
    /// SS (0x020).
    pub ss: Segment,
    /// DS (0x030).
    pub ds: Segment,
    /// FS (0x040).
    pub fs: Segment,
    /// GS (0x050).
    pub gs: Segment,
    /// GDTR (0x060).
    pub gdtr: Segment,
    /// LDTR (0x070).
    pub ldtr: Segment,
    /// IDTR (0x080).
    pub idtr: Segment,
    /// TR (0x090).
    pub tr: Segment,
    /// Reserved (0x0A0).
    pub reserved_0a0: [u8; 0x2B],
    /// CPL (0x0CB).
    pub cpl: u8,
    /// Reserved (0x0CC).
    pub reserved_0cc: u32,
    /// EFER (0x0D0).
    pub efer: u64,
    /// Reserved (0x0D8).
    pub reserved_0d8: [u8; 0x70],
    /// CR4 (0x148).
    pub cr4: u64,
    /// CR3 (0x150).
    pub cr3: u64,
    /// CR0 (0x158).
    pub cr0: u64,
    /// DR7 (0x160).
    pub dr7: u64,
    /// DR6 (0x168).
    pub dr6: u64,
    /// RFLAGS (0x170).
    pub rflags: u64,
    /// RIP (0x178).
    pub rip: u64,
    /// Reserved (0x180).
    pub reserved_180: [u8; 0x58],
    /// RSP (0x1D8).
    pub rsp: u64,
    /// S_CET (0x1E0).
    pub s_cet: u64,
    /// SSP (0x1E8).
    pub ssp: u64,
    /// Interrupt shadow-stack table address (0x1F0).
    pub isst_addr: u64,
    /// RAX (0x1F8).
    pub rax: u64,
    /// STAR (0x200).
    pub star: u64,
    /// LSTAR (0x208).
    pub lstar: u64,
    /// CSTAR (0x210).
    pub cstar: u64,
    /// SFMASK (0x218).
    pub sfmask: u64,
    /// KernelGsBase (0x220).
    pub kernel_gs_base: u64,
    /// SYSENTER_CS (0x228).
    pub sysenter_cs: u64,
    /// SYSENTER_ESP (0x230).
    pub sysenter_esp: u64,
    /// SYSENTER_EIP (0x238).
    pub sysenter_eip: u64,
    /// CR2 (0x240).
    pub cr2: u64,
    /// Reserved (0x248).
    pub reserved_248: [u8; 0x20],
    /// Guest PAT (0x268).
    pub g_pat: u64,
    /// DBGCTL (0x270).
    pub dbgctl: u64,
    /// Last branch from (0x278).
    pub br_from: u64,
    /// Last branch to (0x280).
    pub br_to: u64,
    /// Last exception from (0x288).
    pub last_excp_from: u64,
    /// Last exception to (0x290).
    pub last_excp_to: u64,
    /// Reserved (0x298).
    pub reserved_298: [u8; 0x48],
    /// SPEC_CTRL (0x2E0).
    pub spec_ctrl: u64,
    /// Reserved to the end of the page (0x2E8).
    pub reserved_2e8: [u8; 0x918],
}

/// A whole VMCB: one 4 KiB page.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Vmcb {
    /// The control area.
    pub control: VmcbControl,
    /// The state-save area.
    pub save: VmcbSave,
}

/// The general registers VMRUN neither loads nor saves: the host swaps them
/// itself around VMRUN (RAX, RSP and RIP live in the VMCB).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct GuestGprs {
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RBP.
    pub rbp: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
    /// R12.
    pub r12: u64,
    /// R13.
    pub r13: u64,
    /// R14.
    pub r14: u64,
    /// R15.
    pub r15: u64,
}

/// Calls `$m!` with the list of fields the VMSA and the VMCB state-save
/// area share (same name, same offset, same meaning): the one list both
/// conversion directions and the offset checks use.
macro_rules! for_each_shared_field {
    ($m:ident) => {
        $m!(
            es,
            cs,
            ss,
            ds,
            fs,
            gs,
            gdtr,
            ldtr,
            idtr,
            tr,
            cpl,
            efer,
            cr4,
            cr3,
            cr0,
            dr7,
            dr6,
            rflags,
            rip,
            rsp,
            s_cet,
            ssp,
            isst_addr,
            rax,
            star,
            lstar,
            cstar,
            sfmask,
            kernel_gs_base,
            sysenter_cs,
            sysenter_esp,
            sysenter_eip,
            cr2,
            g_pat,
            dbgctl,
            br_from,
            br_to,
            last_excp_from,
            last_excp_to,
            spec_ctrl
        )
    };
}

/// Calls `$m!` with the general registers [`GuestGprs`] carries.
macro_rules! for_each_gpr {
    ($m:ident) => {
        $m!(rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15)
    };
}

macro_rules! assert_same_offsets {
    ($($field:ident),*) => {
        $(assert!(
            core::mem::offset_of!(Vmsa, $field) == core::mem::offset_of!(VmcbSave, $field)
        );)*
    };
}
const _: () = {
    for_each_shared_field!(assert_same_offsets);
};

/// The VMSA `VINTR_CTRL` bits that the VMCB's `vintr` word holds at the same
/// positions.
const SHARED_VINTR_BITS: u64 =
    vintr::TPR_MASK | vintr::V_IRQ | vintr::PRIORITY_MASK | vintr::IGNORE_TPR | vintr::VECTOR_MASK;

impl GuestGprs {
    /// The registers of `vmsa`.
    pub fn from_vmsa(vmsa: &Vmsa) -> GuestGprs {
        macro_rules! load_gprs {
            ($($r:ident),*) => { GuestGprs { $($r: vmsa.$r),* } };
        }
        for_each_gpr!(load_gprs)
    }

    /// Writes the registers into `vmsa`.
    pub fn store(&self, vmsa: &mut Vmsa) {
        macro_rules! store_gprs {
            ($($r:ident),*) => { $(vmsa.$r = self.$r;)* };
        }
        for_each_gpr!(store_gprs);
    }
}

impl Vmcb {
    /// Loads the guest state of `vmsa` into this VMCB: the state-save area,
    /// the virtual-interrupt state and the event to inject. Host-owned
    /// control fields (intercepts, maps, ASID, nested paging) are left
    /// alone, and so is the guest state no VMCB holds (see [`GuestGprs`];
    /// x87/SSE state and XCR0 are the platform's business).
    pub fn load_vmsa(&mut self, vmsa: &Vmsa) {
        macro_rules! load {
            ($($f:ident),*) => { $(self.save.$f = vmsa.$f;)* };
        }
        for_each_shared_field!(load);
        let host_bits = self.control.vintr & !SHARED_VINTR_BITS;
        self.control.vintr = host_bits | (vmsa.vintr_ctrl & SHARED_VINTR_BITS);
        self.control.interrupt_shadow =
            if vmsa.vintr_ctrl & vintr::INT_SHADOW != 0 { INTERRUPT_SHADOW } else { 0 };
        self.control.event_inj = vmsa.event_inj;
    }

    /// Stores the guest state of this VMCB into `vmsa` after an exit: the
    /// state-save area, the virtual-interrupt state, the pending event and
    /// the exit information (`GUEST_EXIT_CODE` etc.).
    pub fn store_vmsa(&self, vmsa: &mut Vmsa) {
        macro_rules! store {
            ($($f:ident),*) => { $(vmsa.$f = self.save.$f;)* };
        }
        for_each_shared_field!(store);
        let shadow = if self.control.interrupt_shadow & INTERRUPT_SHADOW != 0 {
            vintr::INT_SHADOW
        } else {
            0
        };
        let kept = vmsa.vintr_ctrl & !(SHARED_VINTR_BITS | vintr::INT_SHADOW);
        vmsa.vintr_ctrl = kept | (self.control.vintr & SHARED_VINTR_BITS) | shadow;
        vmsa.event_inj = self.control.event_inj;
        vmsa.guest_exit_code = self.control.exit_code;
        vmsa.guest_exit_info1 = self.control.exit_info1;
        vmsa.guest_exit_info2 = self.control.exit_info2;
        vmsa.guest_exit_int_info = self.control.exit_int_info;
        vmsa.guest_nrip = self.control.next_rip;
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<VmcbControl>() == 0x400);
    assert!(size_of::<VmcbSave>() == 0xC00);
    assert!(size_of::<Vmcb>() == 0x1000);
    assert!(offset_of!(VmcbControl, intercept_misc1) == 0x00C);
    assert!(offset_of!(VmcbControl, intercept_misc2) == 0x010);
    assert!(offset_of!(VmcbControl, pause_filter_threshold) == 0x03C);
    assert!(offset_of!(VmcbControl, iopm_base_pa) == 0x040);
    assert!(offset_of!(VmcbControl, msrpm_base_pa) == 0x048);
    assert!(offset_of!(VmcbControl, tsc_offset) == 0x050);
    assert!(offset_of!(VmcbControl, guest_asid) == 0x058);
    assert!(offset_of!(VmcbControl, tlb_control) == 0x05C);
    assert!(offset_of!(VmcbControl, vintr) == 0x060);
    assert!(offset_of!(VmcbControl, interrupt_shadow) == 0x068);
    assert!(offset_of!(VmcbControl, exit_code) == 0x070);
    assert!(offset_of!(VmcbControl, exit_info1) == 0x078);
    assert!(offset_of!(VmcbControl, exit_info2) == 0x080);
    assert!(offset_of!(VmcbControl, exit_int_info) == 0x088);
    assert!(offset_of!(VmcbControl, np_control) == 0x090);
    assert!(offset_of!(VmcbControl, ghcb_gpa) == 0x0A0);
    assert!(offset_of!(VmcbControl, event_inj) == 0x0A8);
    assert!(offset_of!(VmcbControl, n_cr3) == 0x0B0);
    assert!(offset_of!(VmcbControl, clean_bits) == 0x0C0);
    assert!(offset_of!(VmcbControl, next_rip) == 0x0C8);
    assert!(offset_of!(VmcbControl, insn_len) == 0x0D0);
    assert!(offset_of!(Vmcb, save) == 0x400);
    assert!(offset_of!(VmcbSave, cpl) == 0x0CB);
    assert!(offset_of!(VmcbSave, efer) == 0x0D0);
    assert!(offset_of!(VmcbSave, cr4) == 0x148);
    assert!(offset_of!(VmcbSave, rip) == 0x178);
    assert!(offset_of!(VmcbSave, rsp) == 0x1D8);
    assert!(offset_of!(VmcbSave, rax) == 0x1F8);
    assert!(offset_of!(VmcbSave, cr2) == 0x240);
    assert!(offset_of!(VmcbSave, g_pat) == 0x268);
    assert!(offset_of!(VmcbSave, spec_ctrl) == 0x2E0);
};

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn u64_at(bytes: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
    }

    #[test]
    fn vmcb_bytes_match_the_apm_table() {
        // APM vol. 2 table B-1 / B-2 offsets, and the values the dev
        // platform's verified VMRUN setup writes (environment.md §4.6).
        let mut vmcb = Vmcb::new_zeroed();
        vmcb.control.intercept_misc1 = misc1::SHUTDOWN | misc1::MSR_PROT;
        vmcb.control.intercept_misc2 = misc2::VMRUN | misc2::VMMCALL;
        vmcb.control.iopm_base_pa = 0x1000;
        vmcb.control.msrpm_base_pa = 0x2000;
        vmcb.control.guest_asid = 1;
        vmcb.control.tlb_control = TLB_FLUSH_ALL;
        vmcb.control.np_control = NP_ENABLE;
        vmcb.control.n_cr3 = 0x3000;
        vmcb.save.efer = 0x1000;
        vmcb.save.rip = 0xFFF0;
        vmcb.save.rax = 0xAA;
        let b = vmcb.as_bytes();
        assert_eq!(&b[0x0C..0x10], &0x9000_0000u32.to_le_bytes());
        assert_eq!(&b[0x10..0x14], &[0x03, 0, 0, 0]);
        assert_eq!(u64_at(b, 0x40), 0x1000);
        assert_eq!(u64_at(b, 0x48), 0x2000);
        assert_eq!(&b[0x58..0x5D], &[1, 0, 0, 0, 1]);
        assert_eq!(u64_at(b, 0x90), 1);
        assert_eq!(u64_at(b, 0xB0), 0x3000);
        assert_eq!(u64_at(b, 0x4D0), 0x1000);
        assert_eq!(u64_at(b, 0x578), 0xFFF0);
        assert_eq!(u64_at(b, 0x5F8), 0xAA);
    }

    #[test]
    fn vmsa_round_trips_through_the_vmcb() {
        let mut vmsa = Vmsa::reset_state(2, 1);
        vmsa.rax = 0x1111;
        vmsa.cr3 = 0x2222;
        vmsa.lstar = 0x3333;
        vmsa.spec_ctrl = 4;
        vmsa.vintr_ctrl = 0x20 | vintr::V_IRQ | vintr::INT_SHADOW | (0x31 << 32);
        vmsa.event_inj = event::exception(6, None);
        let mut vmcb = Vmcb::new_zeroed();
        vmcb.control.vintr = 1 << 24; // a host-owned bit (V_INTR_MASKING) stays
        vmcb.load_vmsa(&vmsa);
        assert_eq!(vmcb.save.rax, 0x1111);
        assert_eq!(vmcb.save.cs, vmsa.cs);
        assert_eq!(vmcb.save.cr3, 0x2222);
        assert_eq!(vmcb.save.efer, vmsa.efer);
        assert_eq!(vmcb.control.vintr, (1 << 24) | 0x20 | vintr::V_IRQ | (0x31 << 32));
        assert_eq!(vmcb.control.interrupt_shadow, INTERRUPT_SHADOW);
        assert_eq!(vmcb.control.event_inj, 0x8000_0306);

        vmcb.save.rip = 0x1234;
        vmcb.control.interrupt_shadow = 0;
        vmcb.control.event_inj = 0;
        vmcb.control.exit_code = exit::VMMCALL;
        vmcb.control.exit_info1 = 7;
        let mut back = vmsa;
        back.vintr_ctrl |= vintr::BUSY;
        vmcb.store_vmsa(&mut back);
        assert_eq!(back.rip, 0x1234);
        assert_eq!(back.rax, 0x1111);
        assert_eq!(back.lstar, 0x3333);
        assert_eq!(back.spec_ctrl, 4);
        assert_eq!(back.vintr_ctrl, vintr::BUSY | 0x20 | vintr::V_IRQ | (0x31 << 32));
        assert_eq!(back.event_inj, 0);
        assert_eq!(back.guest_exit_code, exit::VMMCALL);
        assert_eq!(back.guest_exit_info1, 7);
        // Fields no VMCB holds are untouched.
        assert_eq!(back.vmpl, 2);
        assert_eq!(back.xcr0, 1);
        assert_eq!(back.sev_features, 1);
    }

    #[test]
    fn gprs_round_trip() {
        let mut vmsa = Vmsa::new_zeroed();
        vmsa.rbx = 1;
        vmsa.rcx = 2;
        vmsa.r9 = 9;
        vmsa.r15 = 15;
        let gprs = GuestGprs::from_vmsa(&vmsa);
        assert_eq!((gprs.rbx, gprs.rcx, gprs.r9, gprs.r15), (1, 2, 9, 15));
        let mut other = Vmsa::new_zeroed();
        gprs.store(&mut other);
        assert_eq!(other, vmsa);
    }

    #[test]
    fn exception_events_encode_like_the_apm() {
        assert_eq!(event::exception(13, Some(0)), 0x0000_0000_8000_0B0D);
        assert_eq!(event::exception(14, Some(0x6)), 0x0000_0006_8000_0B0E);
        assert_eq!(event::exception(6, None), 0x8000_0306);
    }
}
