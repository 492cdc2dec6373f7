//! The call cases: every core call with valid input (checking what it did),
//! and hostile input, each case checking the exact result code the SVSM
//! spec (and `abi::svsm`) prescribes. The order matters where a case uses
//! state an earlier one made (validated scratch pages, the AP, deposits).

use abi::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::sev_status::SevStatusBit;
use abi::svsm::{
    CORE_PROTOCOL_VERSION, CoreCall, DepositEntry, LIST_HEADER_SIZE, ListHeader,
    MEM_AVAILABLE_OFFSET, PROTOCOL_CORE, PageSize, ProtocolVersions, PvalidateEntry,
    SVSM_ERR_CORE_FAIL_INUSE, SVSM_ERR_CORE_FAIL_SIZEMISMATCH, SVSM_ERR_CORE_FAIL_UNCHANGED,
    SVSM_ERR_INVALID_ADDRESS, SVSM_ERR_INVALID_FORMAT, SVSM_ERR_INVALID_PARAMETER,
    SVSM_ERR_INVALID_REQUEST, SVSM_ERR_UNSUPPORTED_CALL, SVSM_ERR_UNSUPPORTED_PROTOCOL,
    SVSM_SUCCESS, WithdrawListHeader, query_protocol_request, request_rax, vtom,
};
use abi::vmsa::{EFER_SVME, Vmsa};
use zerocopy::{FromBytes, IntoBytes};

use crate::ap::{self, AP_CALL_CODE, AP_CALL_RCX, AP_PARKING, AP_REPORTED, AP_STATE};
use crate::arch::{self, read_u64, write_u64};
use crate::env::Env;
use crate::layout::{AP_APIC_ID, SCRATCH_LARGE_PAGE, SCRATCH_LARGE_PAGE_2, scratch_page};
use crate::runner::{Code, expect_code, record};
use crate::snp::{CallOutcome, CallRegs, svsm_call, svsm_call_with_pending};

/// An MMIO address every q35 guest has: the I/O APIC.
const MMIO_IOAPIC: u64 = 0xFEC0_0000;
/// The local APIC.
const MMIO_LAPIC: u64 = 0xFEE0_0000;
/// Far beyond the guest's RAM (the tests run with 512 MiB).
const BEYOND_RAM: u64 = 0x10_0000_0000;

/// Scratch pages by role (indices into `layout::scratch_page`).
const LIST_PAGE: u64 = scratch_page(0);
const ZERO_TEST_PAGE: u64 = scratch_page(1);
const AP_VMSA_PAGE: u64 = scratch_page(2);
const AP_CA_PAGE: u64 = scratch_page(3);
const DEPOSIT_PAGES: [u64; 4] =
    [scratch_page(4), scratch_page(5), scratch_page(6), scratch_page(7)];
const NEVER_VALIDATED_PAGE: u64 = scratch_page(8);
const REMAP_CA_PAGE: u64 = scratch_page(9);
const DOUBLE_VALIDATE_PAGE: u64 = scratch_page(10);
const PARTIAL_PAGE: u64 = scratch_page(11);
const HOSTILE_VMSA_PAGE: u64 = scratch_page(12);
const WITHDRAW_LIST_PAGE: u64 = scratch_page(13);
const RESUME_PAGE: u64 = scratch_page(14);
const SPARE_CA_PAGE: u64 = scratch_page(15);

/// The pages validated up front (the others are validated by the cases).
const SCRATCH_VALIDATED_UP_FRONT: [u64; 12] = [
    LIST_PAGE,
    ZERO_TEST_PAGE,
    AP_VMSA_PAGE,
    AP_CA_PAGE,
    DEPOSIT_PAGES[0],
    DEPOSIT_PAGES[1],
    DEPOSIT_PAGES[2],
    DEPOSIT_PAGES[3],
    REMAP_CA_PAGE,
    HOSTILE_VMSA_PAGE,
    WITHDRAW_LIST_PAGE,
    SPARE_CA_PAGE,
];

/// Makes a good VMSA bad in one way.
type VmsaBreaker = fn(&mut Vmsa);

/// Runs every case in order.
pub fn run_all(env: &Env) {
    let t = Cases { env };
    t.dispatch();
    t.query_protocol();
    t.configure_vtom();
    t.validate_scratch();
    t.remap_ca();
    t.pvalidate_list();
    t.pvalidate_entries();
    t.pvalidate_valid();
    t.create_vcpu_hostile();
    t.ap_lifecycle();
    t.deposit_withdraw();
}

struct Cases<'a> {
    env: &'a Env,
}

impl Cases<'_> {
    fn ca(&self) -> u64 {
        self.env.calling_area
    }

    fn call(&self, regs: CallRegs) -> CallOutcome {
        svsm_call(self.ca(), regs)
    }

    fn core(&self, call: CoreCall, rcx: u64, rdx: u64, r8: u64) -> CallOutcome {
        self.call(CallRegs::core(call, rcx, rdx, r8))
    }

    fn svsm_page(&self, index: u64) -> u64 {
        self.env.svsm_base + index * PAGE_SIZE
    }

    /// Where PVALIDATE lists go: the calling area's buffer, as Linux does.
    fn list_in_ca(&self) -> u64 {
        self.ca() + 8
    }

    // ------------------------------------------------------------------
    // Protocol and call numbers
    // ------------------------------------------------------------------

    fn dispatch(&self) {
        for (name, protocol) in [
            ("dispatch/unknown-protocol-3", 3),
            ("dispatch/unknown-protocol-0x99", 0x99),
            ("dispatch/reserved-protocol-0x80000000", 0x8000_0000),
        ] {
            let regs = CallRegs { rax: request_rax(protocol, 0), ..CallRegs::default() };
            expect_code(name, &self.call(regs), SVSM_ERR_UNSUPPORTED_PROTOCOL);
        }
        for (name, call) in [
            ("dispatch/unknown-core-call-8", 8),
            ("dispatch/unknown-core-call-0xffffffff", u32::MAX),
        ] {
            let regs = CallRegs { rax: request_rax(PROTOCOL_CORE, call), ..CallRegs::default() };
            expect_code(name, &self.call(regs), SVSM_ERR_UNSUPPORTED_CALL);
        }
        let query = CallRegs::core(
            CoreCall::QueryProtocol,
            query_protocol_request(PROTOCOL_CORE, CORE_PROTOCOL_VERSION),
            0,
            0,
        );
        let outcome = svsm_call_with_pending(self.ca(), query, 2);
        expect_code("dispatch/call-pending-reserved-value-2", &outcome, SVSM_ERR_INVALID_FORMAT);
    }

    // ------------------------------------------------------------------
    // QUERY_PROTOCOL and CONFIGURE_VTOM
    // ------------------------------------------------------------------

    fn query(&self, protocol: u32, version: u32) -> CallOutcome {
        self.core(CoreCall::QueryProtocol, query_protocol_request(protocol, version), 0, 0)
    }

    fn expect_rcx(&self, name: &str, outcome: &CallOutcome, expected_rcx: u64) {
        let ok = outcome.delivered() && outcome.code() == SVSM_SUCCESS;
        record(
            name,
            ok && outcome.regs.rcx == expected_rcx,
            format_args!(
                "expected {} with RCX {expected_rcx:#x}, got {} with RCX {:#x}",
                Code(SVSM_SUCCESS),
                Code(outcome.code()),
                outcome.regs.rcx
            ),
        );
    }

    fn query_protocol(&self) {
        let v1 = ProtocolVersions { min: 1, max: 1 }.encode();
        self.expect_rcx("query-protocol/core-v1", &self.query(PROTOCOL_CORE, 1), v1);
        self.expect_rcx("query-protocol/core-v2-unsupported", &self.query(PROTOCOL_CORE, 2), 0);
        self.expect_rcx("query-protocol/core-v0-unsupported", &self.query(PROTOCOL_CORE, 0), 0);
        self.expect_rcx("query-protocol/unknown-protocol-0x99", &self.query(0x99, 1), 0);
    }

    fn configure_vtom(&self) {
        let query = self.core(CoreCall::ConfigureVtom, vtom::QUERY, 0, 0);
        self.expect_rcx("configure-vtom/query", &query, 0);
        let reserved = self.core(CoreCall::ConfigureVtom, vtom::QUERY | (1 << 40), 0, 0);
        expect_code("configure-vtom/query-reserved-bits", &reserved, SVSM_ERR_INVALID_PARAMETER);
        let configure = self.core(CoreCall::ConfigureVtom, vtom::ENABLE | 0x1_0000_0000, 0, 0);
        expect_code("configure-vtom/configure-unsupported", &configure, SVSM_ERR_INVALID_REQUEST);
    }

    // ------------------------------------------------------------------
    // PVALIDATE
    // ------------------------------------------------------------------

    /// Writes a list (header + entries) at `gpa`.
    fn write_list(&self, gpa: u64, entries: u16, next: u16, items: &[u64]) {
        let header = ListHeader { entries, next, reserved: 0 };
        let header = u64::read_from_bytes(header.as_bytes()).expect("8 bytes");
        // SAFETY: every list lies in a validated page the guest owns (the
        // calling area or a scratch page), within the page.
        unsafe {
            write_u64(gpa, header);
            for (i, item) in items.iter().enumerate() {
                write_u64(gpa + LIST_HEADER_SIZE + 8 * i as u64, *item);
            }
        }
    }

    fn read_header(&self, gpa: u64) -> ListHeader {
        // SAFETY: as in `write_list`.
        let raw = unsafe { read_u64(gpa) };
        ListHeader::read_from_bytes(raw.as_bytes()).expect("8 bytes")
    }

    /// PVALIDATE with the list in the calling area; returns the outcome and
    /// the list header as the SVSM left it.
    fn pvalidate(&self, entries: &[PvalidateEntry]) -> (CallOutcome, ListHeader) {
        self.pvalidate_from(entries, 0)
    }

    fn pvalidate_from(&self, entries: &[PvalidateEntry], next: u16) -> (CallOutcome, ListHeader) {
        let list = self.list_in_ca();
        let raw: [u64; 16] = core::array::from_fn(|i| entries.get(i).map_or(0, |e| e.0));
        self.write_list(list, entries.len() as u16, next, &raw[..entries.len()]);
        let outcome = self.core(CoreCall::Pvalidate, list, 0, 0);
        (outcome, self.read_header(list))
    }

    /// A PVALIDATE case: the code, and `next` where the SVSM stopped.
    fn expect_pvalidate(
        &self,
        name: &str,
        entries: &[PvalidateEntry],
        expected: u32,
        expected_next: u16,
    ) {
        let (outcome, header) = self.pvalidate(entries);
        let ok = outcome.delivered() && outcome.code() == expected && header.next == expected_next;
        record(
            name,
            ok,
            format_args!(
                "expected {} with next {expected_next}, got {} with next {}{}",
                Code(expected),
                Code(outcome.code()),
                header.next,
                if outcome.delivered() { "" } else { " (call not completed)" }
            ),
        );
    }

    fn validate_scratch(&self) {
        let entries: [PvalidateEntry; SCRATCH_VALIDATED_UP_FRONT.len()] =
            core::array::from_fn(|i| {
                PvalidateEntry::new(SCRATCH_VALIDATED_UP_FRONT[i], PageSize::Size4K, true, false)
            });
        self.expect_pvalidate(
            "pvalidate/validate-12-scratch-pages",
            &entries,
            SVSM_SUCCESS,
            entries.len() as u16,
        );
    }

    fn pvalidate_list(&self) {
        let list_call = |gpa: u64| self.core(CoreCall::Pvalidate, gpa, 0, 0);
        expect_code(
            "pvalidate/list-in-svsm-memory",
            &list_call(self.svsm_page(1) + 0x100),
            SVSM_ERR_INVALID_ADDRESS,
        );
        expect_code(
            "pvalidate/list-misaligned",
            &list_call(self.list_in_ca() + 4),
            SVSM_ERR_INVALID_PARAMETER,
        );
        expect_code("pvalidate/list-at-mmio", &list_call(MMIO_LAPIC), SVSM_ERR_INVALID_ADDRESS);
        expect_code("pvalidate/list-beyond-ram", &list_call(BEYOND_RAM), SVSM_ERR_INVALID_ADDRESS);
        expect_code("pvalidate/list-address-wraps", &list_call(!7), SVSM_ERR_INVALID_ADDRESS);
        let page = PvalidateEntry::new(RESUME_PAGE, PageSize::Size4K, true, false).0;
        for (name, gpa, entries, next) in [
            ("pvalidate/zero-entries", LIST_PAGE, 0u16, 0u16),
            ("pvalidate/entries-overflow-the-page", LIST_PAGE + 0xFF0, 2, 0),
            ("pvalidate/512-entries", LIST_PAGE, 512, 0),
            ("pvalidate/0xffff-entries", LIST_PAGE, 0xFFFF, 0),
            ("pvalidate/next-equals-entries", LIST_PAGE, 1, 1),
            ("pvalidate/next-beyond-entries", LIST_PAGE, 1, 7),
        ] {
            // Only what fits in the page is written; the SVSM must refuse
            // the list before reading any entry.
            let items = [page, page];
            let fit = if gpa % PAGE_SIZE == 0xFF0 { 1 } else { 2 };
            self.write_list(gpa, entries, next, &items[..fit]);
            expect_code(name, &list_call(gpa), SVSM_ERR_INVALID_PARAMETER);
        }
    }

    fn pvalidate_entries(&self) {
        let v4k = |gpa| PvalidateEntry::new(gpa, PageSize::Size4K, true, false);
        let v2m = |gpa| PvalidateEntry::new(gpa, PageSize::Size2M, true, false);
        let cases: [(&str, PvalidateEntry, u32); 9] = [
            ("pvalidate/entry-svsm-page", v4k(self.svsm_page(2)), SVSM_ERR_INVALID_ADDRESS),
            ("pvalidate/entry-svsm-2m-page", v2m(self.env.svsm_base), SVSM_ERR_INVALID_ADDRESS),
            ("pvalidate/entry-mmio", v4k(MMIO_IOAPIC), SVSM_ERR_INVALID_ADDRESS),
            ("pvalidate/entry-beyond-ram", v4k(BEYOND_RAM), SVSM_ERR_INVALID_ADDRESS),
            ("pvalidate/entry-2m-page-wraps", v2m(0xFFFF_FFFF_FFE0_0000), SVSM_ERR_INVALID_ADDRESS),
            (
                "pvalidate/entry-2m-misaligned",
                v2m(SCRATCH_LARGE_PAGE + PAGE_SIZE),
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "pvalidate/entry-size-2-reserved",
                PvalidateEntry(RESUME_PAGE | 2 | 4),
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "pvalidate/entry-size-3-reserved",
                PvalidateEntry(RESUME_PAGE | 3 | 4),
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "pvalidate/entry-reserved-bits",
                PvalidateEntry(v4k(RESUME_PAGE).0 | 0x10),
                SVSM_ERR_INVALID_PARAMETER,
            ),
        ];
        for (name, entry, expected) in cases {
            self.expect_pvalidate(name, &[entry], expected, 0);
        }
        // Overlaps: the same page twice, and a 4 KiB page inside a 2 MiB one.
        self.expect_pvalidate(
            "pvalidate/same-page-twice",
            &[v4k(DOUBLE_VALIDATE_PAGE), v4k(DOUBLE_VALIDATE_PAGE)],
            SVSM_ERR_CORE_FAIL_UNCHANGED,
            1,
        );
        // A 4 KiB operation inside a validated 2 MiB page splits the RMP
        // entry (as the hypervisor's PSMASH does on SNP): validating the
        // 4 KiB page finds it validated already; a 2 MiB operation over the
        // split range is then a size mismatch (Linux retries as 512 x 4 KiB).
        self.expect_pvalidate(
            "pvalidate/4k-inside-validated-2m-unchanged",
            &[v2m(SCRATCH_LARGE_PAGE_2), v4k(SCRATCH_LARGE_PAGE_2 + 3 * PAGE_SIZE)],
            SVSM_ERR_CORE_FAIL_UNCHANGED,
            1,
        );
        self.expect_pvalidate(
            "pvalidate/2m-over-split-entries-size-mismatch",
            &[PvalidateEntry::new(SCRATCH_LARGE_PAGE_2, PageSize::Size2M, false, false)],
            SVSM_ERR_CORE_FAIL_SIZEMISMATCH,
            0,
        );
        self.expect_pvalidate(
            "pvalidate/rescind-never-validated",
            &[PvalidateEntry::new(NEVER_VALIDATED_PAGE, PageSize::Size4K, false, false)],
            SVSM_ERR_CORE_FAIL_UNCHANGED,
            0,
        );
        // Partial completion: the first entry is done, the second fails.
        self.expect_pvalidate(
            "pvalidate/partial-completion-stops-at-bad-entry",
            &[v4k(PARTIAL_PAGE), v4k(self.svsm_page(3)), v4k(RESUME_PAGE)],
            SVSM_ERR_INVALID_ADDRESS,
            1,
        );
        self.expect_pvalidate(
            "pvalidate/partial-completion-kept-the-first-entry",
            &[v4k(PARTIAL_PAGE)],
            SVSM_ERR_CORE_FAIL_UNCHANGED,
            0,
        );
        // Resuming at `next` skips the entries before it.
        let (outcome, header) = self.pvalidate_from(&[v4k(self.svsm_page(3)), v4k(RESUME_PAGE)], 1);
        record(
            "pvalidate/resumes-at-next",
            outcome.delivered() && outcome.code() == SVSM_SUCCESS && header.next == 2,
            format_args!(
                "expected {} with next 2, got {} with next {}",
                Code(SVSM_SUCCESS),
                Code(outcome.code()),
                header.next
            ),
        );
    }

    fn pvalidate_valid(&self) {
        let v4k = |gpa, validate, ignore_cf| {
            PvalidateEntry::new(gpa, PageSize::Size4K, validate, ignore_cf)
        };
        self.expect_pvalidate(
            "pvalidate/same-page-twice-ignore-cf",
            &[v4k(DOUBLE_VALIDATE_PAGE, true, true), v4k(DOUBLE_VALIDATE_PAGE, true, true)],
            SVSM_SUCCESS,
            2,
        );
        // A validated page reads as zero: fill it, rescind, validate again.
        // SAFETY: the page was validated up front and is the guest's.
        unsafe { arch::fill_page(ZERO_TEST_PAGE, 0xA5A5_A5A5_A5A5_A5A5) };
        let (rescind, _) = self.pvalidate(&[v4k(ZERO_TEST_PAGE, false, false)]);
        let (validate, _) = self.pvalidate(&[v4k(ZERO_TEST_PAGE, true, false)]);
        // SAFETY: validated again just above (if the calls succeeded; if not,
        // the case fails before reading).
        let zero = rescind.code() == SVSM_SUCCESS
            && validate.code() == SVSM_SUCCESS
            && unsafe { arch::page_is(ZERO_TEST_PAGE, 0) };
        record(
            "pvalidate/revalidated-page-reads-zero",
            zero,
            format_args!(
                "rescind {}, validate {}, page zero: {zero}",
                Code(rescind.code()),
                Code(validate.code())
            ),
        );
        // A 2 MiB page: validate, use, rescind.
        let (outcome, header) = self.pvalidate(&[PvalidateEntry::new(
            SCRATCH_LARGE_PAGE,
            PageSize::Size2M,
            true,
            false,
        )]);
        let last = SCRATCH_LARGE_PAGE + LARGE_PAGE_SIZE - 8;
        let usable = outcome.code() == SVSM_SUCCESS && header.next == 1 && {
            // SAFETY: the 2 MiB page was just validated for the guest.
            unsafe {
                let zero_before = read_u64(last) == 0;
                write_u64(last, 0x2_0000_0000_0001);
                zero_before && read_u64(last) == 0x2_0000_0000_0001
            }
        };
        record(
            "pvalidate/2m-page-validated-zeroed-usable",
            usable,
            format_args!(
                "validate {} with next {}, usable and zeroed: {usable}",
                Code(outcome.code()),
                header.next
            ),
        );
        self.expect_pvalidate(
            "pvalidate/2m-page-rescinded",
            &[PvalidateEntry::new(SCRATCH_LARGE_PAGE, PageSize::Size2M, false, false)],
            SVSM_SUCCESS,
            1,
        );
    }

    // ------------------------------------------------------------------
    // REMAP_CA
    // ------------------------------------------------------------------

    fn remap_ca(&self) {
        let remap = |gpa| self.core(CoreCall::RemapCa, gpa, 0, 0);
        for (name, gpa, expected) in [
            ("remap-ca/svsm-memory", self.env.svsm_base, SVSM_ERR_INVALID_ADDRESS),
            (
                "remap-ca/svsm-last-page",
                self.env.svsm_base + self.env.svsm_size - PAGE_SIZE,
                SVSM_ERR_INVALID_ADDRESS,
            ),
            ("remap-ca/misaligned", REMAP_CA_PAGE + 8, SVSM_ERR_INVALID_PARAMETER),
            ("remap-ca/mmio", MMIO_IOAPIC, SVSM_ERR_INVALID_ADDRESS),
            ("remap-ca/beyond-ram", BEYOND_RAM, SVSM_ERR_INVALID_ADDRESS),
        ] {
            expect_code(name, &remap(gpa), expected);
        }
        // Move to a new calling area, call through it, move back.
        let moved = remap(REMAP_CA_PAGE);
        let query = CallRegs::core(
            CoreCall::QueryProtocol,
            query_protocol_request(PROTOCOL_CORE, CORE_PROTOCOL_VERSION),
            0,
            0,
        );
        let through_new = svsm_call(REMAP_CA_PAGE, query);
        let back = svsm_call(REMAP_CA_PAGE, CallRegs::core(CoreCall::RemapCa, self.ca(), 0, 0));
        let through_old = self.call(query);
        let ok = [moved, through_new, back, through_old]
            .iter()
            .all(|o| o.delivered() && o.code() == SVSM_SUCCESS)
            && through_new.regs.rcx == ProtocolVersions { min: 1, max: 1 }.encode();
        record(
            "remap-ca/move-call-move-back",
            ok,
            format_args!(
                "remap {}, call via new {}, remap back {}, call via boot CA {}",
                Code(moved.code()),
                Code(through_new.code()),
                Code(back.code()),
                Code(through_old.code())
            ),
        );
    }

    // ------------------------------------------------------------------
    // CREATE_VCPU / DELETE_VCPU
    // ------------------------------------------------------------------

    fn write_vmsa(&self, gpa: u64, vmsa: &Vmsa) {
        for (i, chunk) in vmsa.as_bytes().chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            // SAFETY: the VMSA pages are validated scratch pages the guest
            // owns (not yet handed to the SVSM).
            unsafe { write_u64(gpa + 8 * i as u64, word) };
        }
    }

    fn create(&self, vmsa: u64, ca: u64, apic_id: u64) -> CallOutcome {
        self.core(CoreCall::CreateVcpu, vmsa, ca, apic_id)
    }

    fn create_vcpu_hostile(&self) {
        let good = ap::ap_vmsa(self.env);
        let apic = u64::from(AP_APIC_ID);
        self.write_vmsa(HOSTILE_VMSA_PAGE, &good);
        let svsm = self.svsm_page(4);
        for (name, vmsa, ca, apic_id, expected) in [
            ("create-vcpu/vmsa-in-svsm-memory", svsm, AP_CA_PAGE, apic, SVSM_ERR_INVALID_ADDRESS),
            (
                "create-vcpu/ca-in-svsm-memory",
                HOSTILE_VMSA_PAGE,
                svsm,
                apic,
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "create-vcpu/vmsa-misaligned",
                HOSTILE_VMSA_PAGE + 0x10,
                AP_CA_PAGE,
                apic,
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "create-vcpu/ca-misaligned",
                HOSTILE_VMSA_PAGE,
                AP_CA_PAGE + 0x10,
                apic,
                SVSM_ERR_INVALID_PARAMETER,
            ),
            ("create-vcpu/vmsa-at-mmio", MMIO_IOAPIC, AP_CA_PAGE, apic, SVSM_ERR_INVALID_ADDRESS),
            (
                "create-vcpu/vmsa-equals-ca",
                HOSTILE_VMSA_PAGE,
                HOSTILE_VMSA_PAGE,
                apic,
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "create-vcpu/vmsa-not-validated",
                NEVER_VALIDATED_PAGE,
                AP_CA_PAGE,
                apic,
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "create-vcpu/unknown-apic-id",
                HOSTILE_VMSA_PAGE,
                AP_CA_PAGE,
                0xFFFF,
                SVSM_ERR_INVALID_PARAMETER,
            ),
        ] {
            expect_code(name, &self.create(vmsa, ca, apic_id), expected);
        }
        let broken: [(&str, VmsaBreaker); 6] = [
            ("create-vcpu/vmsa-for-vmpl0", |v| v.vmpl = 0),
            ("create-vcpu/vmsa-for-vmpl1", |v| v.vmpl = 1),
            ("create-vcpu/vmsa-efer-svme-clear", |v| v.efer &= !EFER_SVME),
            ("create-vcpu/vmsa-sev-features-differ", |v| {
                v.sev_features ^= SevStatusBit::Vtom.mask() >> 2
            }),
            ("create-vcpu/vmsa-sev-features-snp-inactive", |v| v.sev_features &= !1),
            ("create-vcpu/vmsa-sev-features-reserved-bit", |v| v.sev_features |= 1 << 40),
        ];
        for (name, breaker) in broken {
            let mut vmsa = good;
            breaker(&mut vmsa);
            self.write_vmsa(HOSTILE_VMSA_PAGE, &vmsa);
            expect_code(
                name,
                &self.create(HOSTILE_VMSA_PAGE, AP_CA_PAGE, apic),
                SVSM_ERR_INVALID_PARAMETER,
            );
        }
        // The refused pages must be the guest's again.
        // SAFETY: the page is a validated scratch page; every CREATE_VCPU on
        // it failed, so the SVSM must have given it back.
        let usable = unsafe {
            write_u64(HOSTILE_VMSA_PAGE, 0x1234_5678);
            read_u64(HOSTILE_VMSA_PAGE) == 0x1234_5678
        };
        record(
            "create-vcpu/refused-vmsa-page-still-usable",
            usable,
            format_args!("write and read back: {usable}"),
        );
    }

    fn ap_lifecycle(&self) {
        let apic = u64::from(AP_APIC_ID);
        ap::set_calling_area(AP_CA_PAGE);
        self.write_vmsa(AP_VMSA_PAGE, &ap::ap_vmsa(self.env));
        let created = self.create(AP_VMSA_PAGE, AP_CA_PAGE, apic);
        expect_code("create-vcpu/ap", &created, SVSM_SUCCESS);
        let reported = created.code() == SVSM_SUCCESS && wait_for_ap(AP_REPORTED);
        let parked = created.code() == SVSM_SUCCESS && wait_for_ap(AP_PARKING);
        // The SVSM logs the parking on the same UART from its other CPU;
        // let that line out before this vCPU prints again.
        settle();
        let code = AP_CALL_CODE.load(core::sync::atomic::Ordering::SeqCst);
        let rcx = AP_CALL_RCX.load(core::sync::atomic::Ordering::SeqCst);
        record(
            "create-vcpu/ap-runs-and-calls-through-its-ca",
            reported && code == u64::from(SVSM_SUCCESS) && rcx == 0x1_0000_0001,
            format_args!(
                "AP reported: {reported}, its QUERY_PROTOCOL returned {code:#x}, RCX {rcx:#x}"
            ),
        );
        // Collisions with the now active VMSA and calling areas.
        self.write_vmsa(HOSTILE_VMSA_PAGE, &ap::ap_vmsa(self.env));
        expect_code(
            "create-vcpu/vmsa-already-active",
            &self.create(AP_VMSA_PAGE, SPARE_CA_PAGE, apic),
            SVSM_ERR_INVALID_ADDRESS,
        );
        expect_code(
            "create-vcpu/ca-is-the-boot-calling-area",
            &self.create(HOSTILE_VMSA_PAGE, self.ca(), apic),
            SVSM_ERR_INVALID_ADDRESS,
        );
        expect_code(
            "create-vcpu/vmsa-is-the-boot-calling-area",
            &self.create(self.ca(), SPARE_CA_PAGE, apic),
            SVSM_ERR_INVALID_ADDRESS,
        );
        expect_code(
            "delete-vcpu/not-a-vmsa",
            &self.core(CoreCall::DeleteVcpu, HOSTILE_VMSA_PAGE, 0, 0),
            SVSM_ERR_INVALID_PARAMETER,
        );
        expect_code(
            "delete-vcpu/misaligned",
            &self.core(CoreCall::DeleteVcpu, AP_VMSA_PAGE + 8, 0, 0),
            SVSM_ERR_INVALID_PARAMETER,
        );
        // Delete the AP, parked above (retrying while the SVSM reports it
        // still running).
        let mut deleted = self.core(CoreCall::DeleteVcpu, AP_VMSA_PAGE, 0, 0);
        let mut retries = 0;
        while deleted.code() == SVSM_ERR_CORE_FAIL_INUSE && retries < 1000 {
            retries += 1;
            deleted = self.core(CoreCall::DeleteVcpu, AP_VMSA_PAGE, 0, 0);
        }
        record(
            "delete-vcpu/ap",
            parked && deleted.delivered() && deleted.code() == SVSM_SUCCESS,
            format_args!(
                "AP parked: {parked}; expected {}, got {} after {retries} in-use retries",
                Code(SVSM_SUCCESS),
                Code(deleted.code())
            ),
        );
        expect_code(
            "delete-vcpu/already-deleted",
            &self.core(CoreCall::DeleteVcpu, AP_VMSA_PAGE, 0, 0),
            SVSM_ERR_INVALID_PARAMETER,
        );
        // SAFETY: the VMSA page was deleted, so it is a normal guest page
        // again; if the SVSM did not give it back, the SVSM stops the guest
        // here, which the xtask reports as a failure.
        let usable = deleted.code() == SVSM_SUCCESS
            && unsafe {
                write_u64(AP_VMSA_PAGE, 0xABCD);
                read_u64(AP_VMSA_PAGE) == 0xABCD
            };
        record(
            "delete-vcpu/vmsa-page-usable-again",
            usable,
            format_args!("write and read back: {usable}"),
        );
    }

    // ------------------------------------------------------------------
    // DEPOSIT_MEM / WITHDRAW_MEM
    // ------------------------------------------------------------------

    fn deposit(&self, list: u64, entries: &[u64]) -> (CallOutcome, ListHeader) {
        self.write_list(list, entries.len() as u16, 0, entries);
        (self.core(CoreCall::DepositMem, list, 0, 0), self.read_header(list))
    }

    fn mem_available(&self) -> u8 {
        // SAFETY: the byte lies in the guest's calling area.
        unsafe { core::ptr::read_volatile((self.ca() + MEM_AVAILABLE_OFFSET as u64) as *const u8) }
    }

    fn deposit_withdraw(&self) {
        let d4k = |gpa| DepositEntry::new(gpa, PageSize::Size4K).0;
        for (name, entry, expected) in [
            ("deposit/page-in-svsm-memory", d4k(self.svsm_page(5)), SVSM_ERR_INVALID_ADDRESS),
            ("deposit/the-calling-area", d4k(self.ca()), SVSM_ERR_INVALID_ADDRESS),
            ("deposit/mmio-page", d4k(MMIO_IOAPIC), SVSM_ERR_INVALID_ADDRESS),
            ("deposit/reserved-bits", d4k(DEPOSIT_PAGES[0]) | 0x4, SVSM_ERR_INVALID_PARAMETER),
            (
                "deposit/2m-misaligned",
                DepositEntry::new(SCRATCH_LARGE_PAGE + PAGE_SIZE, PageSize::Size2M).0,
                SVSM_ERR_INVALID_PARAMETER,
            ),
        ] {
            expect_code(name, &self.deposit(LIST_PAGE, &[entry]).0, expected);
        }
        self.write_list(LIST_PAGE, 1, 0, &[d4k(DEPOSIT_PAGES[0])]);
        for (name, list, expected) in [
            ("deposit/list-misaligned", LIST_PAGE + 2, SVSM_ERR_INVALID_PARAMETER),
            ("deposit/list-in-svsm-memory", self.svsm_page(6), SVSM_ERR_INVALID_ADDRESS),
        ] {
            expect_code(name, &self.core(CoreCall::DepositMem, list, 0, 0), expected);
        }
        expect_code(
            "deposit/zero-entries",
            &self.deposit(LIST_PAGE, &[]).0,
            SVSM_ERR_INVALID_PARAMETER,
        );
        // The valid round trip.
        let entries = DEPOSIT_PAGES.map(d4k);
        let (outcome, header) = self.deposit(LIST_PAGE, &entries);
        let available = self.mem_available();
        record(
            "deposit/four-pages",
            outcome.delivered()
                && outcome.code() == SVSM_SUCCESS
                && header.next == 4
                && available != 0,
            format_args!(
                "expected {} with next 4 and MEM_AVAILABLE set, got {} with next {}, MEM_AVAILABLE {available}",
                Code(SVSM_SUCCESS),
                Code(outcome.code()),
                header.next
            ),
        );
        expect_code(
            "deposit/already-deposited-page",
            &self.deposit(LIST_PAGE, &[d4k(DEPOSIT_PAGES[1])]).0,
            SVSM_ERR_INVALID_ADDRESS,
        );
        for (name, list, expected) in [
            ("withdraw/list-at-page-end", WITHDRAW_LIST_PAGE + 0xFF8, SVSM_ERR_INVALID_PARAMETER),
            ("withdraw/list-misaligned", WITHDRAW_LIST_PAGE + 4, SVSM_ERR_INVALID_PARAMETER),
            ("withdraw/list-in-svsm-memory", self.svsm_page(7), SVSM_ERR_INVALID_ADDRESS),
        ] {
            expect_code(name, &self.core(CoreCall::WithdrawMem, list, 0, 0), expected);
        }
        self.withdraw_all();
    }

    fn withdraw_all(&self) {
        let outcome = self.core(CoreCall::WithdrawMem, WITHDRAW_LIST_PAGE, 0, 0);
        // SAFETY: the withdraw list page is a validated scratch page.
        let raw = unsafe { read_u64(WITHDRAW_LIST_PAGE) };
        let header = WithdrawListHeader::read_from_bytes(raw.as_bytes()).expect("8 bytes");
        let count = usize::from(header.count);
        let mut returned = [0u64; 4];
        for (i, slot) in returned.iter_mut().enumerate().take(count.min(4)) {
            // SAFETY: as above, within the page.
            *slot = unsafe { read_u64(WITHDRAW_LIST_PAGE + 8 + 8 * i as u64) };
        }
        returned.sort_unstable();
        let same = count == 4 && returned == DEPOSIT_PAGES;
        record(
            "withdraw/returns-the-deposited-pages",
            outcome.delivered() && outcome.code() == SVSM_SUCCESS && same,
            format_args!(
                "expected {} with the 4 deposited GPAs, got {} with {count}: {:x?}",
                Code(SVSM_SUCCESS),
                Code(outcome.code()),
                &returned[..count.min(4)]
            ),
        );
        // SAFETY: the pages were withdrawn (if `same`), so they are the
        // guest's again; the SVSM must have zeroed what it may have stored.
        let clean = same
            && DEPOSIT_PAGES.iter().all(|&page| unsafe {
                let zero = arch::page_is(page, 0);
                write_u64(page, 7);
                zero && read_u64(page) == 7
            });
        record(
            "withdraw/pages-zeroed-and-usable",
            clean,
            format_args!("zeroed, writable and readable: {clean}"),
        );
        let again = self.core(CoreCall::WithdrawMem, WITHDRAW_LIST_PAGE, 0, 0);
        // SAFETY: as above.
        let raw = unsafe { read_u64(WITHDRAW_LIST_PAGE) };
        let left = WithdrawListHeader::read_from_bytes(raw.as_bytes()).expect("8 bytes").count;
        let available = self.mem_available();
        record(
            "withdraw/nothing-left",
            again.delivered() && again.code() == SVSM_SUCCESS && left == 0 && available == 0,
            format_args!(
                "expected {} with 0 pages and MEM_AVAILABLE 0, got {} with {left}, MEM_AVAILABLE {available}",
                Code(SVSM_SUCCESS),
                Code(again.code())
            ),
        );
    }
}

/// Waits about a tenth of a second (TSC at 2-3 GHz).
fn settle() {
    let until = arch::rdtsc().saturating_add(300_000_000);
    while arch::rdtsc() < until {
        arch::relax();
    }
}

/// Waits (at most about ten seconds of TSC) for the AP to reach `state`.
fn wait_for_ap(state: u32) -> bool {
    let deadline = arch::rdtsc().saturating_add(20_000_000_000);
    while arch::rdtsc() < deadline {
        if AP_STATE.load(core::sync::atomic::Ordering::SeqCst) >= state {
            return true;
        }
        arch::relax();
    }
    false
}
