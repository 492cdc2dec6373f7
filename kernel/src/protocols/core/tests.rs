//! The core protocol against fake guest RAM and the emulated RMP: every
//! call with valid input, and the hostile inputs with their exact codes.

use abi::boot::MemoryRange;
use abi::snp_instr::VmplPermissions;
use abi::svsm::*;
use abi::vmsa::{EFER_SVME, Vmsa};
use zerocopy::{FromZeros, IntoBytes};

use super::PVALIDATE_BUDGET;
use crate::guest_mem::{
    CheckedGuestMemory, GuestLayout, GuestMemory, OwnedPages, PageOwner, RawGuestMemory, read_obj,
    write_obj,
};
use crate::host_doubles::{FakeGuestRam, FakePlatform};
use crate::protocols::{
    CallContext, CallRegisters, Caller, SvsmState, VcpuState, VcpuTable, handle_call,
};

const LOW_RAM: MemoryRange = MemoryRange { base: 0, size: 0xA_0000 };
const RAM: MemoryRange = MemoryRange { base: 0x10_0000, size: 0x3F0_0000 };
const SVSM: MemoryRange = MemoryRange { base: 0x200_0000, size: 0x40_0000 };
const STARTUP_VMSA: u64 = 0x200_0000;
const STARTUP_CA: u64 = 0x1_0000;
const LIST: u64 = 0x2_0000;
const MMIO: u64 = 0xFEE0_0000;
const SEV_FEATURES: u64 = 1;

struct Harness {
    layout: GuestLayout,
    owned: OwnedPages,
    ram: FakeGuestRam,
    platform: FakePlatform,
    state: SvsmState,
    caller: Caller,
}

impl Harness {
    fn new() -> Harness {
        let mut state = SvsmState {
            vcpus: VcpuTable::new(&[0, 1, 2], SEV_FEATURES),
            deposits: Default::default(),
        };
        let startup = state.vcpus.add(STARTUP_VMSA, STARTUP_CA, 0, 2, true);
        state.vcpus.get_mut(startup.id).unwrap().state = VcpuState::Running;
        let platform = FakePlatform::new(&[LOW_RAM, RAM]);
        let harness = Harness {
            layout: GuestLayout::new(&[LOW_RAM, RAM], &[SVSM]),
            owned: OwnedPages::new(),
            ram: FakeGuestRam::new(0, RAM.base + RAM.size),
            platform,
            state,
            caller: Caller { id: startup.id, vmpl: 2 },
        };
        // The guest's usual pages: validated and accessible.
        for page in [STARTUP_CA, LIST] {
            harness.validate(page);
        }
        harness
    }

    fn call(
        &mut self,
        protocol: u32,
        call: u32,
        rcx: u64,
        rdx: u64,
        r8: u64,
    ) -> (u32, CallRegisters) {
        let mut regs = CallRegisters { rax: request_rax(protocol, call), rcx, rdx, r8, r9: 0 };
        let memory = CheckedGuestMemory::new(&self.layout, &self.owned, &self.ram);
        let mut context = CallContext {
            platform: &self.platform,
            memory: &memory,
            owned: &self.owned,
            svsm_pages: &self.ram,
            state: &mut self.state,
            caller: self.caller,
            regs: &mut regs,
        };
        let result = handle_call(&mut context);
        (result, regs)
    }

    fn core(&mut self, call: CoreCall, rcx: u64) -> u32 {
        self.call(PROTOCOL_CORE, call as u32, rcx, 0, 0).0
    }

    fn memory(&self) -> CheckedGuestMemory<'_> {
        CheckedGuestMemory::new(&self.layout, &self.owned, &self.ram)
    }

    /// Validates a page directly in the RMP (as the guest's firmware start
    /// would have).
    fn validate(&self, gpa: u64) {
        let mut rmp = self.platform.rmp.lock();
        let result = rmp.pvalidate(gpa, abi::snp_instr::RmpPageSize::Size4K, true);
        assert!(matches!(result, Ok(()) | Err(abi::snp_instr::PvalidateError::Unchanged)));
    }

    fn write_list(&self, entries: &[u64], next: u16) {
        let header = ListHeader { entries: entries.len() as u16, next, reserved: 0 };
        self.ram.write(LIST, header.as_bytes()).unwrap();
        for (i, entry) in entries.iter().enumerate() {
            self.ram.write(LIST + 8 + 8 * i as u64, &entry.to_le_bytes()).unwrap();
        }
    }

    fn list_next(&self) -> u16 {
        read_obj::<ListHeader>(&self.memory(), LIST).unwrap().next
    }

    fn pvalidate(&mut self, entries: &[u64]) -> u32 {
        self.write_list(entries, 0);
        self.core(CoreCall::Pvalidate, LIST)
    }

    fn page(&self, gpa: u64) -> crate::svm::rmp::PageState {
        self.platform.rmp.lock().page(gpa).unwrap()
    }

    /// A VMSA page for CREATE_VCPU, validated, with the given fields.
    fn new_vmsa(&self, gpa: u64, vmpl: u8, efer: u64, sev_features: u64) {
        self.validate(gpa);
        let mut vmsa = Vmsa::reset_state(vmpl, sev_features);
        vmsa.efer = efer;
        self.ram.write(gpa, vmsa.as_bytes()).unwrap();
    }
}

fn validate(gpa: u64, size: PageSize) -> u64 {
    PvalidateEntry::new(gpa, size, true, false).0
}

fn validate_ignore_cf(gpa: u64, size: PageSize) -> u64 {
    PvalidateEntry::new(gpa, size, true, true).0
}

fn invalidate(gpa: u64, size: PageSize) -> u64 {
    PvalidateEntry::new(gpa, size, false, false).0
}

#[test]
fn unknown_protocols_and_calls() {
    let mut h = Harness::new();
    for protocol in [3, 0x99, 0x8000_0000, u32::MAX] {
        assert_eq!(h.call(protocol, 0, 0, 0, 0).0, SVSM_ERR_UNSUPPORTED_PROTOCOL, "{protocol:#x}");
    }
    for call in [8, 0x100, u32::MAX] {
        assert_eq!(h.call(PROTOCOL_CORE, call, 0, 0, 0).0, SVSM_ERR_UNSUPPORTED_CALL, "{call:#x}");
    }
}

#[test]
fn query_protocol_reports_core_version_1_only() {
    let mut h = Harness::new();
    let query = CoreCall::QueryProtocol as u32;
    let (result, regs) = h.call(PROTOCOL_CORE, query, query_protocol_request(0, 1), 0, 0);
    assert_eq!((result, regs.rcx), (SVSM_SUCCESS, 0x1_0000_0001));
    for (protocol, version) in [(0, 2), (0, 0), (0x99, 1), (u32::MAX, u32::MAX)] {
        let (result, regs) =
            h.call(PROTOCOL_CORE, query, query_protocol_request(protocol, version), 0, 0);
        assert_eq!((result, regs.rcx), (SVSM_SUCCESS, 0), "{protocol:#x} v{version}");
    }
}

#[test]
fn configure_vtom_answers_the_query_and_refuses_configuration() {
    let mut h = Harness::new();
    let call = CoreCall::ConfigureVtom as u32;
    let (result, regs) = h.call(PROTOCOL_CORE, call, vtom::QUERY, 0, 0);
    assert_eq!((result, regs.rcx), (SVSM_SUCCESS, 0));
    assert_eq!(h.call(PROTOCOL_CORE, call, vtom::QUERY | 2, 0, 0).0, SVSM_ERR_INVALID_PARAMETER);
    assert_eq!(h.call(PROTOCOL_CORE, call, u64::MAX, 0, 0).0, SVSM_ERR_INVALID_PARAMETER);
    assert_eq!(h.call(PROTOCOL_CORE, call, vtom::ENABLE, 0, 0).0, SVSM_ERR_INVALID_REQUEST);
    assert_eq!(h.call(PROTOCOL_CORE, call, 0x20, 0, 0).0, SVSM_ERR_INVALID_PARAMETER);
}

#[test]
fn remap_ca_checks_the_address_and_clears_call_pending() {
    let mut h = Harness::new();
    assert_eq!(h.core(CoreCall::RemapCa, 0x3_0008), SVSM_ERR_INVALID_PARAMETER);
    for gpa in [SVSM.base, MMIO, 0xA_0000, RAM.base + RAM.size, STARTUP_VMSA, !0xFFF] {
        assert_eq!(h.core(CoreCall::RemapCa, gpa), SVSM_ERR_INVALID_ADDRESS, "{gpa:#x}");
    }
    h.ram.fill(0x3_0000, 1, 1);
    assert_eq!(h.core(CoreCall::RemapCa, 0x3_0000), SVSM_SUCCESS);
    assert_eq!(read_obj::<u8>(&h.memory(), 0x3_0000), Ok(0));
    assert_eq!(h.state.vcpus.get(h.caller.id).unwrap().ca_gpa, 0x3_0000);
}

#[test]
fn pvalidate_validates_zeroes_and_grants() {
    let mut h = Harness::new();
    h.ram.fill(0x30_0000, 0x1000, 0xAA);
    h.ram.fill(0x40_0000, 0x20_0000, 0xBB);
    let entries = [validate(0x30_0000, PageSize::Size4K), validate(0x40_0000, PageSize::Size2M)];
    assert_eq!(h.pvalidate(&entries), SVSM_SUCCESS);
    assert_eq!(h.list_next(), 2);
    for (gpa, len) in [(0x30_0000, 0x1000), (0x40_0000, 0x20_0000)] {
        let mut bytes = vec![0xFFu8; len];
        h.memory().read(gpa, &mut bytes).unwrap();
        assert!(bytes.iter().all(|b| *b == 0), "{gpa:#x} zeroed");
        let page = h.page(gpa + len as u64 - 0x1000);
        assert!(page.validated());
        assert_eq!(page.permissions(2), VmplPermissions::ALL);
        assert_eq!(page.permissions(1), VmplPermissions::ALL);
    }
}

#[test]
fn pvalidate_reports_unchanged_pages_unless_told_to_ignore() {
    let mut h = Harness::new();
    assert_eq!(h.pvalidate(&[validate(0x30_0000, PageSize::Size4K)]), SVSM_SUCCESS);
    h.ram.fill(0x30_0000, 8, 0x55);
    let entries = [validate(0x31_0000, PageSize::Size4K), validate(0x30_0000, PageSize::Size4K)];
    assert_eq!(h.pvalidate(&entries), SVSM_ERR_CORE_FAIL_UNCHANGED);
    assert_eq!(h.list_next(), 1, "next is the failing entry");
    assert!(h.page(0x31_0000).validated(), "earlier entries stay done");
    assert_eq!(h.pvalidate(&[validate_ignore_cf(0x30_0000, PageSize::Size4K)]), SVSM_SUCCESS);
    assert_eq!(read_obj::<u8>(&h.memory(), 0x30_0000), Ok(0x55), "unchanged page not zeroed");
    assert_eq!(
        h.pvalidate(&[invalidate(0x50_0000, PageSize::Size4K)]),
        SVSM_ERR_CORE_FAIL_UNCHANGED
    );
    let ignore = PvalidateEntry::new(0x50_0000, PageSize::Size4K, false, true).0;
    assert_eq!(h.pvalidate(&[ignore]), SVSM_SUCCESS);
}

#[test]
fn pvalidate_splits_2m_pages_like_the_hardware() {
    let mut h = Harness::new();
    assert_eq!(h.pvalidate(&[validate(0x40_0000, PageSize::Size2M)]), SVSM_SUCCESS);
    assert_eq!(h.pvalidate(&[validate(0x41_0000, PageSize::Size4K)]), SVSM_ERR_CORE_FAIL_UNCHANGED);
    assert_eq!(h.pvalidate(&[invalidate(0x41_0000, PageSize::Size4K)]), SVSM_SUCCESS);
    assert!(!h.page(0x41_0000).validated());
    assert_eq!(h.page(0x41_0000).permissions(2), VmplPermissions::NONE, "revoked first");
    assert!(h.page(0x41_1000).validated());
    assert_eq!(
        h.pvalidate(&[invalidate(0x40_0000, PageSize::Size2M)]),
        SVSM_ERR_CORE_FAIL_SIZEMISMATCH
    );
    assert_eq!(
        h.pvalidate(&[validate(0x40_0000, PageSize::Size2M)]),
        SVSM_ERR_CORE_FAIL_SIZEMISMATCH
    );
}

#[test]
fn pvalidate_rejects_hostile_lists_and_entries() {
    let mut h = Harness::new();
    assert_eq!(h.core(CoreCall::Pvalidate, LIST + 4), SVSM_ERR_INVALID_PARAMETER);
    for list in [SVSM.base, MMIO, 0xA_0000, !7] {
        assert_eq!(h.core(CoreCall::Pvalidate, list), SVSM_ERR_INVALID_ADDRESS, "{list:#x}");
    }
    // Header checks.
    h.write_list(&[], 0);
    assert_eq!(h.core(CoreCall::Pvalidate, LIST), SVSM_ERR_INVALID_PARAMETER, "no entries");
    h.write_list(&[validate(0x30_0000, PageSize::Size4K)], 1);
    assert_eq!(h.core(CoreCall::Pvalidate, LIST), SVSM_ERR_INVALID_PARAMETER, "next == entries");
    let header = ListHeader { entries: 2, next: 0, reserved: 0 };
    h.ram.write(LIST + 0xFF0, header.as_bytes()).unwrap();
    assert_eq!(
        h.core(CoreCall::Pvalidate, LIST + 0xFF0),
        SVSM_ERR_INVALID_PARAMETER,
        "crosses the page"
    );
    let header = ListHeader { entries: 512, next: 0, reserved: 0 };
    h.ram.write(LIST, header.as_bytes()).unwrap();
    assert_eq!(h.core(CoreCall::Pvalidate, LIST), SVSM_ERR_INVALID_PARAMETER, "512 entries");
    // Entry checks, each as the second entry of a list whose first is fine.
    let bad_entries = [
        (validate(0x30_0000, PageSize::Size4K) | 0x10, SVSM_ERR_INVALID_PARAMETER),
        (validate(0x30_0000, PageSize::Size4K) | 0x800, SVSM_ERR_INVALID_PARAMETER),
        (validate(0x30_0000, PageSize::Size4K) | 2, SVSM_ERR_INVALID_PARAMETER),
        (validate(0x30_0000, PageSize::Size4K) | 3, SVSM_ERR_INVALID_PARAMETER),
        (validate(0x30_1000, PageSize::Size2M), SVSM_ERR_INVALID_PARAMETER),
        (validate(SVSM.base, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (validate(SVSM.base + 0x20_0000, PageSize::Size2M), SVSM_ERR_INVALID_ADDRESS),
        (validate(SVSM.base - 0x20_0000, PageSize::Size2M), SVSM_SUCCESS),
        (validate(MMIO, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (validate(0xA_0000, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (validate(RAM.base + RAM.size, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (validate(!0x1F_FFFF, PageSize::Size2M), SVSM_ERR_INVALID_ADDRESS),
        (validate(STARTUP_VMSA, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
    ];
    for (i, (entry, expected)) in bad_entries.into_iter().enumerate() {
        let first = validate_ignore_cf(0x31_0000 + 0x1000 * i as u64, PageSize::Size4K);
        assert_eq!(h.pvalidate(&[first, entry]), expected, "entry {entry:#x}");
        if expected != SVSM_SUCCESS {
            assert_eq!(h.list_next(), 1, "entry {entry:#x}");
        }
    }
}

#[test]
fn pvalidate_returns_incomplete_after_its_budget_and_goes_on() {
    let mut h = Harness::new();
    let pages = PVALIDATE_BUDGET / 0x20_0000 + 2;
    let entries: Vec<u64> =
        (0..pages).map(|i| validate(0x40_0000 + i * 0x20_0000, PageSize::Size2M)).collect();
    h.write_list(&entries, 0);
    assert_eq!(h.core(CoreCall::Pvalidate, LIST), SVSM_ERR_INCOMPLETE);
    let next = h.list_next();
    assert_eq!(u64::from(next), PVALIDATE_BUDGET / 0x20_0000);
    assert!(h.page(0x40_0000 + (u64::from(next) - 1) * 0x20_0000).validated());
    assert!(!h.page(0x40_0000 + u64::from(next) * 0x20_0000).validated());
    assert_eq!(h.core(CoreCall::Pvalidate, LIST), SVSM_SUCCESS);
    assert_eq!(u64::from(h.list_next()), pages);
}

const NEW_VMSA: u64 = 0x60_0000;
const NEW_CA: u64 = 0x61_0000;

fn create(h: &mut Harness, vmsa: u64, ca: u64, apic_id: u64) -> u32 {
    h.call(PROTOCOL_CORE, CoreCall::CreateVcpu as u32, vmsa, ca, apic_id).0
}

#[test]
fn create_vcpu_takes_the_page_and_records_the_vcpu() {
    let mut h = Harness::new();
    h.new_vmsa(NEW_VMSA, 2, EFER_SVME, SEV_FEATURES);
    assert_eq!(create(&mut h, NEW_VMSA, NEW_CA, 1), SVSM_SUCCESS);
    let page = h.page(NEW_VMSA);
    assert!(page.vmsa());
    for vmpl in 1..=3 {
        assert_eq!(page.permissions(vmpl), VmplPermissions::NONE);
    }
    assert_eq!(h.owned.owner(NEW_VMSA), Some(PageOwner::Vmsa));
    let record = *h.state.vcpus.by_vmsa(NEW_VMSA).unwrap();
    assert_eq!((record.ca_gpa, record.apic_id, record.vmpl), (NEW_CA, 1, 2));
    assert_eq!(record.state, VcpuState::Ready);
    assert_eq!(h.state.vcpus.next_ready(1).map(|r| r.id), Some(record.id));
    let mut buf = [0u8; 8];
    assert!(h.memory().read(NEW_VMSA, &mut buf).is_err(), "the guest's view no longer reaches it");
    // The same pages again: now an active VMSA and CA.
    h.new_vmsa(0x62_0000, 2, EFER_SVME, SEV_FEATURES);
    assert_eq!(create(&mut h, NEW_VMSA, 0x63_0000, 2), SVSM_ERR_INVALID_ADDRESS);
    assert_eq!(create(&mut h, 0x62_0000, NEW_CA, 2), SVSM_ERR_INVALID_ADDRESS);
    assert_eq!(create(&mut h, 0x62_0000, STARTUP_CA, 2), SVSM_ERR_INVALID_ADDRESS);
    assert_eq!(create(&mut h, NEW_CA, 0x63_0000, 2), SVSM_ERR_INVALID_ADDRESS, "a CA as VMSA");
}

#[test]
fn create_vcpu_rejects_hostile_input_and_gives_the_page_back() {
    let mut h = Harness::new();
    assert_eq!(create(&mut h, NEW_VMSA + 8, NEW_CA, 1), SVSM_ERR_INVALID_PARAMETER);
    assert_eq!(create(&mut h, NEW_VMSA, NEW_CA + 0x800, 1), SVSM_ERR_INVALID_PARAMETER);
    for (vmsa, ca) in [(SVSM.base, NEW_CA), (NEW_VMSA, SVSM.base), (MMIO, NEW_CA), (NEW_VMSA, MMIO)]
    {
        h.new_vmsa(NEW_VMSA, 2, EFER_SVME, SEV_FEATURES);
        assert_eq!(create(&mut h, vmsa, ca, 1), SVSM_ERR_INVALID_ADDRESS, "{vmsa:#x} {ca:#x}");
    }
    assert_eq!(create(&mut h, NEW_VMSA, NEW_VMSA, 1), SVSM_ERR_INVALID_ADDRESS, "same page");
    // Not validated.
    assert_eq!(create(&mut h, 0x70_0000, NEW_CA, 1), SVSM_ERR_INVALID_ADDRESS);
    // Bad contents: each leaves the page a guest page again.
    for (vmpl, efer, features, apic) in [
        (0, EFER_SVME, SEV_FEATURES, 1),
        (1, EFER_SVME, SEV_FEATURES, 1),
        (4, EFER_SVME, SEV_FEATURES, 1),
        (2, 0, SEV_FEATURES, 1),
        (2, EFER_SVME, SEV_FEATURES | 0x20, 1),
        (2, EFER_SVME, SEV_FEATURES, 7),
    ] {
        let mut fresh = Harness::new();
        fresh.new_vmsa(NEW_VMSA, vmpl, efer, features);
        assert_eq!(
            create(&mut fresh, NEW_VMSA, NEW_CA, apic),
            SVSM_ERR_INVALID_PARAMETER,
            "vmpl {vmpl} efer {efer:#x} features {features:#x} apic {apic}"
        );
        let page = fresh.page(NEW_VMSA);
        assert!(!page.vmsa());
        assert_eq!(page.permissions(2), VmplPermissions::ALL, "given back");
        assert_eq!(fresh.owned.owner(NEW_VMSA), None);
        assert_eq!(fresh.state.vcpus.iter().count(), 1);
    }
}

#[test]
fn delete_vcpu_checks_and_returns_the_page() {
    let mut h = Harness::new();
    let delete = CoreCall::DeleteVcpu as u32;
    assert_eq!(h.call(PROTOCOL_CORE, delete, NEW_VMSA, 0, 0).0, SVSM_ERR_INVALID_PARAMETER);
    assert_eq!(h.call(PROTOCOL_CORE, delete, STARTUP_VMSA, 0, 0).0, SVSM_ERR_INVALID_PARAMETER);
    h.new_vmsa(NEW_VMSA, 2, EFER_SVME, SEV_FEATURES);
    assert_eq!(create(&mut h, NEW_VMSA, NEW_CA, 1), SVSM_SUCCESS);
    let id = h.state.vcpus.by_vmsa(NEW_VMSA).unwrap().id;
    h.state.vcpus.get_mut(id).unwrap().state = VcpuState::Running;
    assert_eq!(h.call(PROTOCOL_CORE, delete, NEW_VMSA, 0, 0).0, SVSM_ERR_CORE_FAIL_INUSE);
    h.state.vcpus.get_mut(id).unwrap().state = VcpuState::Stopped;
    assert_eq!(h.call(PROTOCOL_CORE, delete, NEW_VMSA, 0, 0).0, SVSM_SUCCESS);
    assert!(h.state.vcpus.by_vmsa(NEW_VMSA).is_none());
    assert_eq!(h.owned.owner(NEW_VMSA), None);
    let page = h.page(NEW_VMSA);
    assert!(!page.vmsa());
    assert_eq!(page.permissions(2), VmplPermissions::ALL);
    let vmsa: Vmsa = read_obj(&h.memory(), NEW_VMSA).unwrap();
    assert_eq!(vmsa.efer & EFER_SVME, 0, "locked before it went back");
    assert_eq!(
        h.call(PROTOCOL_CORE, delete, NEW_VMSA, 0, 0).0,
        SVSM_ERR_INVALID_PARAMETER,
        "twice"
    );
}

#[test]
fn a_vcpu_may_delete_itself_while_running() {
    let mut h = Harness::new();
    h.new_vmsa(NEW_VMSA, 2, EFER_SVME, SEV_FEATURES);
    assert_eq!(create(&mut h, NEW_VMSA, NEW_CA, 1), SVSM_SUCCESS);
    let id = h.state.vcpus.by_vmsa(NEW_VMSA).unwrap().id;
    h.state.vcpus.get_mut(id).unwrap().state = VcpuState::Running;
    h.caller = super::super::Caller { id, vmpl: 2 };
    let delete = CoreCall::DeleteVcpu as u32;
    assert_eq!(h.call(PROTOCOL_CORE, delete, NEW_VMSA, 0, 0).0, SVSM_SUCCESS);
    assert!(h.state.vcpus.get(id).is_none());
}

fn deposit_list(h: &Harness, entries: &[DepositEntry]) {
    let raw: Vec<u64> = entries.iter().map(|e| e.0).collect();
    h.write_list(&raw, 0);
}

#[test]
fn deposit_and_withdraw_lend_pages_and_give_them_back_zeroed() {
    let mut h = Harness::new();
    for page in [0x30_0000, 0x30_1000] {
        h.validate(page);
    }
    h.ram.fill(0x30_0000, 0x2000, 0x77);
    deposit_list(
        &h,
        &[
            DepositEntry::new(0x30_0000, PageSize::Size4K),
            DepositEntry::new(0x30_1000, PageSize::Size4K),
        ],
    );
    assert_eq!(h.core(CoreCall::DepositMem, LIST), SVSM_SUCCESS);
    assert_eq!(h.list_next(), 2);
    assert_eq!(h.owned.count(PageOwner::Deposited), 2);
    assert_eq!(h.page(0x30_0000).permissions(2), VmplPermissions::NONE);
    assert_eq!(read_obj::<u8>(&h.memory(), STARTUP_CA + 1), Ok(1), "MEM_AVAILABLE");
    let mut buf = [0u8; 8];
    assert!(h.memory().read(0x30_1000, &mut buf).is_err());
    // Depositing it again, or the CA, or SVSM memory.
    for (entry, expected) in [
        (DepositEntry::new(0x30_0000, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (DepositEntry::new(STARTUP_CA, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (DepositEntry::new(SVSM.base, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (DepositEntry::new(MMIO, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (DepositEntry::new(0x50_0000, PageSize::Size4K), SVSM_ERR_INVALID_ADDRESS),
        (
            DepositEntry(DepositEntry::new(0x31_0000, PageSize::Size4K).0 | 4),
            SVSM_ERR_INVALID_PARAMETER,
        ),
        (DepositEntry(0x31_0002), SVSM_ERR_INVALID_PARAMETER),
        (DepositEntry::new(0x31_0000, PageSize::Size2M), SVSM_ERR_INVALID_PARAMETER),
    ] {
        deposit_list(&h, &[entry]);
        assert_eq!(h.core(CoreCall::DepositMem, LIST), expected, "{:#x}", entry.0);
        assert_eq!(h.list_next(), 0);
    }
    // Withdraw into a list at the page end: no room.
    assert_eq!(h.core(CoreCall::WithdrawMem, LIST + 0xFF8), SVSM_ERR_INVALID_PARAMETER);
    assert_eq!(h.core(CoreCall::WithdrawMem, LIST + 4), SVSM_ERR_INVALID_PARAMETER);
    assert_eq!(h.core(CoreCall::WithdrawMem, SVSM.base), SVSM_ERR_INVALID_ADDRESS);
    // Room for one: one comes back.
    assert_eq!(h.core(CoreCall::WithdrawMem, LIST + 0xFF0), SVSM_SUCCESS);
    assert_eq!(read_obj::<u16>(&h.memory(), LIST + 0xFF0), Ok(1));
    let first: u64 = read_obj(&h.memory(), LIST + 0xFF8).unwrap();
    assert_eq!(read_obj::<u8>(&h.memory(), STARTUP_CA + 1), Ok(1));
    assert_eq!(h.core(CoreCall::WithdrawMem, LIST), SVSM_SUCCESS);
    assert_eq!(read_obj::<u16>(&h.memory(), LIST), Ok(1));
    let second: u64 = read_obj(&h.memory(), LIST + 8).unwrap();
    let mut both = [first, second];
    both.sort();
    assert_eq!(both, [0x30_0000, 0x30_1000]);
    for page in both {
        let mut bytes = [0xFFu8; 0x1000];
        h.memory().read(page, &mut bytes).unwrap();
        assert!(bytes.iter().all(|b| *b == 0));
        assert_eq!(h.page(page).permissions(2), VmplPermissions::ALL);
    }
    assert_eq!(read_obj::<u8>(&h.memory(), STARTUP_CA + 1), Ok(0));
    assert_eq!(h.core(CoreCall::WithdrawMem, LIST), SVSM_SUCCESS);
    assert_eq!(read_obj::<u16>(&h.memory(), LIST), Ok(0), "nothing left");
}

#[test]
fn a_2m_deposit_comes_back_as_512_pages() {
    let mut h = Harness::new();
    assert_eq!(h.pvalidate(&[validate(0x40_0000, PageSize::Size2M)]), SVSM_SUCCESS);
    deposit_list(&h, &[DepositEntry::new(0x40_0000, PageSize::Size2M)]);
    assert_eq!(h.core(CoreCall::DepositMem, LIST), SVSM_SUCCESS);
    assert_eq!(h.owned.count(PageOwner::Deposited), 512);
    assert!(h.page(0x5F_F000).validated());
    let mut returned = 0;
    while !h.state.deposits.is_empty() {
        assert_eq!(h.core(CoreCall::WithdrawMem, LIST), SVSM_SUCCESS);
        returned += read_obj::<u16>(&h.memory(), LIST).unwrap() as usize;
    }
    assert_eq!(returned, 512);
    assert_eq!(h.page(0x5F_F000).permissions(2), VmplPermissions::ALL);
}

#[test]
fn lists_in_deposited_pages_are_refused() {
    let mut h = Harness::new();
    h.validate(0x30_0000);
    deposit_list(&h, &[DepositEntry::new(0x30_0000, PageSize::Size4K)]);
    assert_eq!(h.core(CoreCall::DepositMem, LIST), SVSM_SUCCESS);
    for call in
        [CoreCall::Pvalidate, CoreCall::DepositMem, CoreCall::WithdrawMem, CoreCall::RemapCa]
    {
        assert_eq!(h.core(call, 0x30_0000), SVSM_ERR_INVALID_ADDRESS, "{call:?}");
    }
    write_obj(&h.memory(), LIST, &0u64).unwrap();
}

#[test]
fn vmsa_layout_of_new_vcpus_is_read_from_guest_memory() {
    // A zeroed page is not a VMSA the SVSM accepts.
    let mut h = Harness::new();
    h.validate(NEW_VMSA);
    h.ram.write(NEW_VMSA, Vmsa::new_zeroed().as_bytes()).unwrap();
    assert_eq!(create(&mut h, NEW_VMSA, NEW_CA, 1), SVSM_ERR_INVALID_PARAMETER);
}
