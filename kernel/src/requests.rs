//! The request loop, the same on every platform that runs a guest: each
//! SVSM CPU runs the guest vCPU assigned to its APIC ID until the vCPU asks
//! for the SVSM, services the call, and enters it again.
//!
//! One request follows the SVSM specification's procedure (§5, see
//! `snp-svsm.md` §7.3): clear EFER.SVME in the caller's VMSA (the lock that
//! keeps the host from running it meanwhile); unless the VMSA's exit code
//! is VMGEXIT and the calling area's CALL_PENDING is set, the entry was
//! spurious: set SVME again and resume. Otherwise read RAX/RCX/RDX/R8/R9,
//! dispatch, write the results, clear CALL_PENDING, and set SVME last.
//! A CALL_PENDING value other than 0 or 1 is answered with
//! SVSM_ERR_INVALID_FORMAT.

use abi::svsm::{CALL_NOT_PENDING, CALL_PENDING, SVSM_ERR_INVALID_FORMAT};
use abi::vmsa::{EFER_SVME, EXIT_CODE_VMGEXIT, Vmsa};

use crate::guest_mem::{GuestMemory, OwnedPages, RawGuestMemory, read_obj, write_obj};
use crate::platform::Platform;
use crate::protocols::{CallContext, CallRegisters, Caller, SvsmState, handle_call};

/// What became of the vCPU after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterRequest {
    /// Enter it again.
    Resume,
    /// It deleted itself: never enter it again.
    Deleted,
}

/// The SVSM-wide pieces a request needs, borrowed from wherever they live.
pub struct RequestEnv<'a> {
    /// The platform.
    pub platform: &'a dyn Platform,
    /// The guest's memory, checked.
    pub memory: &'a dyn GuestMemory,
    /// Guest pages the SVSM holds.
    pub owned: &'a OwnedPages,
    /// Unchecked access to those pages.
    pub svsm_pages: &'a dyn RawGuestMemory,
}

/// Services the request of vCPU `vcpu_id`, whose VMSA (held by this CPU
/// while it is not running) is `vmsa`.
pub fn service_request(
    env: &RequestEnv<'_>,
    state: &mut SvsmState,
    vcpu_id: u64,
    vmsa: &mut Vmsa,
) -> AfterRequest {
    vmsa.efer &= !EFER_SVME;
    let Some(record) = state.vcpus.get(vcpu_id).copied() else {
        return AfterRequest::Deleted;
    };
    let pending: Option<u8> = read_obj(env.memory, record.ca_gpa).ok();
    let is_call =
        vmsa.guest_exit_code == EXIT_CODE_VMGEXIT && pending.is_some_and(|p| p != CALL_NOT_PENDING);
    if !is_call {
        vmsa.efer |= EFER_SVME;
        return AfterRequest::Resume;
    }
    let mut regs =
        CallRegisters { rax: vmsa.rax, rcx: vmsa.rcx, rdx: vmsa.rdx, r8: vmsa.r8, r9: vmsa.r9 };
    let result = if pending == Some(CALL_PENDING) {
        let mut context = CallContext {
            platform: env.platform,
            memory: env.memory,
            owned: env.owned,
            svsm_pages: env.svsm_pages,
            state,
            caller: Caller { id: vcpu_id, vmpl: record.vmpl },
            regs: &mut regs,
        };
        handle_call(&mut context)
    } else {
        SVSM_ERR_INVALID_FORMAT
    };
    // The calling area the call came through, even if the call moved it.
    // A guest that broke its calling area finds CALL_PENDING unchanged.
    let _ = write_obj(env.memory, record.ca_gpa, &CALL_NOT_PENDING);
    if state.vcpus.get(vcpu_id).is_none() {
        return AfterRequest::Deleted;
    }
    vmsa.rax = u64::from(result);
    vmsa.rcx = regs.rcx;
    vmsa.rdx = regs.rdx;
    vmsa.r8 = regs.r8;
    vmsa.r9 = regs.r9;
    vmsa.efer |= EFER_SVME;
    AfterRequest::Resume
}

#[cfg(target_os = "none")]
pub use self::machine::*;

/// The loop on the machine: the SVSM-wide state and each CPU's loop.
#[cfg(target_os = "none")]
mod machine {
    use abi::layout::PAGE_SIZE;
    use abi::vmsa::Vmsa;
    use spin::{Mutex, Once};

    use super::{AfterRequest, RequestEnv, service_request};
    use crate::guest_mem::{self, DirectMap, OWNED};
    use crate::platform::{self, GuestExit, GuestStop, GuestVcpu, Platform};
    use crate::protocols::{SvsmState, VcpuRecord, VcpuState};

    /// The protocol state, shared by every CPU: held while a call runs.
    static STATE: Once<Mutex<SvsmState>> = Once::new();

    /// Sets up the protocol state (once, before any vCPU runs).
    pub fn init(state: SvsmState) -> &'static Mutex<SvsmState> {
        STATE.call_once(|| Mutex::new(state))
    }

    /// The protocol state, once [`init`] ran.
    pub fn state() -> Option<&'static Mutex<SvsmState>> {
        STATE.get()
    }

    /// The VMSA page at `pa`.
    ///
    /// # Safety
    /// `pa` must be the VMSA of a vCPU this CPU runs (state Running in the
    /// vCPU table, so no other CPU touches it), the page must be SVSM-held
    /// (the guest cannot reach it), and no other reference to it may live.
    unsafe fn vmsa_at(pa: u64) -> &'static mut Vmsa {
        debug_assert!(pa.is_multiple_of(PAGE_SIZE));
        // SAFETY: per the contract; the direct map covers all RAM and the
        // page is 4 KiB aligned, as `Vmsa` needs.
        unsafe { &mut *(crate::mm::paging::phys_to_virt(pa) as *mut Vmsa) }
    }

    /// Runs guest vCPUs on this CPU (APIC ID `apic_id`) for ever: waits for
    /// one to be assigned, runs it until it stops or is deleted, and waits
    /// again. The startup vCPU stopping ends the VM.
    pub fn run_cpu(platform: &'static dyn Platform, apic_id: u32) -> ! {
        let state = state().expect("the SVSM state is set up before any CPU runs vCPUs");
        loop {
            let record = wait_for_vcpu(state, apic_id);
            run_vcpu(platform, state, record);
        }
    }

    fn wait_for_vcpu(state: &Mutex<SvsmState>, apic_id: u32) -> VcpuRecord {
        loop {
            {
                let mut state = state.lock();
                let ready = state.vcpus.next_ready(apic_id).map(|r| r.id);
                if let Some(record) = ready.and_then(|id| state.vcpus.get_mut(id)) {
                    record.state = VcpuState::Running;
                    return *record;
                }
            }
            for _ in 0..1000 {
                core::hint::spin_loop();
            }
        }
    }

    fn run_vcpu(platform: &dyn Platform, shared: &Mutex<SvsmState>, record: VcpuRecord) {
        let vcpu = GuestVcpu { id: record.id, vmsa_pa: record.vmsa_gpa, apic_id: record.apic_id };
        let memory = guest_mem::guest();
        let env = RequestEnv { platform, memory: &memory, owned: &OWNED, svsm_pages: &DirectMap };
        loop {
            match platform.run_guest(&vcpu) {
                GuestExit::Request => {
                    let mut state = shared.lock();
                    // SAFETY: this CPU runs the vCPU (state Running, which
                    // DELETE_VCPU from other CPUs refuses); its VMSA is
                    // SVSM-held until it is deleted, checked under the lock.
                    let vmsa = unsafe { vmsa_at(record.vmsa_gpa) };
                    if service_request(&env, &mut state, record.id, vmsa) == AfterRequest::Deleted {
                        return;
                    }
                }
                GuestExit::Stopped(stop) => {
                    report_stop(&record, &stop);
                    if stop == GuestStop::PoweredOff {
                        crate::println!("the guest powered off: ending the VM");
                        crate::vtpm::shutdown();
                        platform::exit_success();
                    }
                    let mut state = shared.lock();
                    if let Some(r) = state.vcpus.get_mut(record.id) {
                        r.state = VcpuState::Stopped;
                    }
                    if record.startup {
                        drop(state);
                        crate::println!("the startup vCPU stopped: ending the VM");
                        crate::vtpm::shutdown();
                        platform::exit_failure();
                    }
                    return;
                }
            }
        }
    }

    /// Prints why a vCPU stopped, one line (tests match it).
    fn report_stop(record: &VcpuRecord, stop: &GuestStop) {
        let apic = record.apic_id;
        match *stop {
            GuestStop::ForbiddenAccess { gpa, rip, access, owner } => crate::println!(
                "guest stopped: vCPU {apic} rip={rip:#x} gpa={gpa:#x} {}, owner {owner}",
                access.name()
            ),
            GuestStop::Terminated { set, code } => {
                let reason = abi::ghcb::TerminationReason { set, code };
                crate::println!(
                    "guest stopped: vCPU {apic} asked to terminate: reason set {set} code {code} ({})",
                    reason.meaning()
                )
            }
            GuestStop::Shutdown => {
                crate::println!("guest stopped: vCPU {apic} shut down (triple fault)")
            }
            GuestStop::Parked => crate::println!("guest vCPU {apic} parked (AP reset hold)"),
            GuestStop::PoweredOff => {
                crate::println!("guest vCPU {apic} powered the VM off (ACPI soft-off)")
            }
            GuestStop::InvalidState => {
                crate::println!("guest stopped: vCPU {apic} has a VMSA that cannot run")
            }
            GuestStop::Unhandled { exit_code, info1, info2, rip } => crate::println!(
                "guest stopped: vCPU {apic} rip={rip:#x} unhandled exit {exit_code:#x} \
                 (info1 {info1:#x}, info2 {info2:#x})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use abi::boot::MemoryRange;
    use abi::svsm::{CoreCall, PROTOCOL_CORE, SVSM_SUCCESS, query_protocol_request, request_rax};
    use zerocopy::FromZeros;

    use super::*;
    use crate::guest_mem::{CheckedGuestMemory, GuestLayout};
    use crate::host_doubles::{FakeGuestRam, FakePlatform};
    use crate::protocols::VcpuTable;

    const RAM: MemoryRange = MemoryRange { base: 0, size: 0x40_0000 };
    const CA: u64 = 0x1_0000;
    const VMSA_GPA: u64 = 0x2_0000;

    struct Setup {
        layout: GuestLayout,
        owned: OwnedPages,
        ram: FakeGuestRam,
        platform: FakePlatform,
        state: SvsmState,
        id: u64,
    }

    fn setup() -> Setup {
        let mut state = SvsmState { vcpus: VcpuTable::new(&[0], 1), ..Default::default() };
        let id = state.vcpus.add(VMSA_GPA, CA, 0, 2, true).id;
        Setup {
            layout: GuestLayout::new(&[RAM], &[]),
            owned: OwnedPages::new(),
            ram: FakeGuestRam::new(0, RAM.size),
            platform: FakePlatform::new(&[RAM]),
            state,
            id,
        }
    }

    fn request(s: &mut Setup, vmsa: &mut Vmsa) -> AfterRequest {
        let memory = CheckedGuestMemory::new(&s.layout, &s.owned, &s.ram);
        let env = RequestEnv {
            platform: &s.platform,
            memory: &memory,
            owned: &s.owned,
            svsm_pages: &s.ram,
        };
        service_request(&env, &mut s.state, s.id, vmsa)
    }

    fn calling_vmsa(rax: u64, rcx: u64) -> Vmsa {
        let mut vmsa = Vmsa::new_zeroed();
        vmsa.efer = EFER_SVME;
        vmsa.guest_exit_code = EXIT_CODE_VMGEXIT;
        vmsa.rax = rax;
        vmsa.rcx = rcx;
        vmsa
    }

    fn pending(s: &Setup) -> u8 {
        let mut b = [0u8];
        s.ram.read(CA, &mut b).unwrap();
        b[0]
    }

    #[test]
    fn a_call_is_dispatched_answered_and_cleared() {
        let mut s = setup();
        s.ram.fill(CA, 1, CALL_PENDING);
        let query = request_rax(PROTOCOL_CORE, CoreCall::QueryProtocol as u32);
        let mut vmsa = calling_vmsa(query, query_protocol_request(0, 1));
        assert_eq!(request(&mut s, &mut vmsa), AfterRequest::Resume);
        assert_eq!(vmsa.rax, u64::from(SVSM_SUCCESS));
        assert_eq!(vmsa.rcx, 0x1_0000_0001);
        assert_eq!(pending(&s), CALL_NOT_PENDING);
        assert_ne!(vmsa.efer & EFER_SVME, 0, "SVME set again");
    }

    #[test]
    fn spurious_entries_resume_without_a_call() {
        let mut s = setup();
        // Exit code not VMGEXIT.
        s.ram.fill(CA, 1, CALL_PENDING);
        let mut vmsa = calling_vmsa(0, 0);
        vmsa.guest_exit_code = 0x7B;
        assert_eq!(request(&mut s, &mut vmsa), AfterRequest::Resume);
        assert_eq!((vmsa.rax, pending(&s)), (0, CALL_PENDING), "nothing answered");
        assert_ne!(vmsa.efer & EFER_SVME, 0);
        // No call pending.
        s.ram.fill(CA, 1, CALL_NOT_PENDING);
        let mut vmsa = calling_vmsa(6, 0);
        assert_eq!(request(&mut s, &mut vmsa), AfterRequest::Resume);
        assert_eq!(vmsa.rax, 6);
        assert_ne!(vmsa.efer & EFER_SVME, 0);
    }

    #[test]
    fn reserved_call_pending_values_are_invalid_format() {
        let mut s = setup();
        for value in [2u8, 0x80, 0xFF] {
            s.ram.fill(CA, 1, value);
            let mut vmsa = calling_vmsa(6, 0);
            assert_eq!(request(&mut s, &mut vmsa), AfterRequest::Resume);
            assert_eq!(vmsa.rax, u64::from(SVSM_ERR_INVALID_FORMAT), "{value}");
            assert_eq!(pending(&s), CALL_NOT_PENDING);
        }
    }

    #[test]
    fn a_calling_area_outside_guest_memory_reads_as_no_call() {
        let mut s = setup();
        s.state.vcpus.get_mut(s.id).unwrap().ca_gpa = RAM.size;
        let mut vmsa = calling_vmsa(6, 0);
        assert_eq!(request(&mut s, &mut vmsa), AfterRequest::Resume);
        assert_eq!(vmsa.rax, 6);
    }
}
