//! The `attest` mode: the attestation protocol (protocol 1) from a guest's
//! side, and the vTPM's endorsement key through protocol 2.
//!
//! 1. QUERY_PROTOCOL offers attestation v1 and the vTPM v1.
//! 2. Hostile ATTEST_SERVICES calls (buffers in SVSM memory, at MMIO,
//!    beyond RAM, wrapping, misaligned, reserved fields, a nonce over a
//!    page, unknown calls) and too-small buffers, each with its exact result
//!    code; a too-small buffer also returns the sizes (RCX manifest, RDX
//!    certificates, R8 report).
//! 3. ATTEST_SERVICES with a fresh 64-byte nonce from RDRAND and a 16 KiB
//!    certificate buffer; without certificates; with a 32-byte nonce.
//! 4. ATTEST_SINGLE_SERVICE for the vTPM (manifest version 0), and with an
//!    unknown GUID, version 1, reserved bits.
//! 5. TPM2_Startup, then TPM2_CreatePrimary of the EK (template L-1) through
//!    VTPM_CMD; the EK handle is flushed.
//!
//! Every report, manifest, nonce, certificate table and the CreatePrimary
//! response go out on the console as [`crate::blob`]s; the xtask verifies
//! them (`xtask/src/attest_e2e.rs`): signatures, chain, measurement,
//! REPORT_DATA, tampering, and the EK against the manifest.

use abi::attestation::{
    ATTEST_SERVICES, ATTEST_SINGLE_SERVICE, AttestServicesOp, AttestSingleServiceOp, CERT_GUID_ARK,
    CERT_GUID_ASK, CERT_GUID_VCEK, Guid, REPORT_SIZE, SERVICE_MANIFEST_VERSION, VTPM_SERVICE_GUID,
    find_certificate, manifest_entries,
};
use abi::layout::PAGE_SIZE;
use abi::svsm::{
    CoreCall, PROTOCOL_ATTEST, PROTOCOL_VTPM, PageSize, ProtocolVersions, PvalidateEntry,
    SVSM_ERR_INVALID_ADDRESS, SVSM_ERR_INVALID_PARAMETER, SVSM_ERR_UNSUPPORTED_CALL,
    SVSM_ERR_UNSUPPORTED_PROTOCOL, SVSM_SUCCESS, TPM_SEND_COMMAND, VTPM_BUFFER_SIZE, VTPM_CMD,
    VTPM_QUERY, VtpmCommandHeader, VtpmResponseHeader, query_protocol_request, request_rax,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::blob::write_blob;
use crate::ek::{CREATE_EK, EK_TEMPLATE_SIZE};
use crate::env::Env;
use crate::layout::scratch_page;
use crate::runner::{Code, expect_code, record};
use crate::snp::{CallOutcome, CallRegs, svsm_call};
use crate::vtpm_commands::{STARTUP, created_handle, flush_context, response_code};
use crate::{arch, console};

/// The local APIC, an MMIO page.
const MMIO_LAPIC: u64 = 0xFEE0_0000;
/// Far beyond the guest's RAM (the tests run with 512 MiB).
const BEYOND_RAM: u64 = 0x10_0000_0000;

/// The guest's pages, validated through PVALIDATE first (scratch pages
/// 16.. by role; the `calls` mode uses 0..16 in another boot).
const NONCE_PAGE: u64 = scratch_page(16);
const REPORT_PAGE: u64 = scratch_page(17);
const MANIFEST_PAGE: u64 = scratch_page(18);
/// Four pages: the 16 KiB certificate buffer Linux uses.
const CERTS_PAGES: u64 = scratch_page(19);
const CERTS_SIZE: u32 = 0x4000;
const VTPM_PAGE: u64 = scratch_page(23);
const PAGES: [u64; 8] = [
    NONCE_PAGE,
    REPORT_PAGE,
    MANIFEST_PAGE,
    CERTS_PAGES,
    CERTS_PAGES + PAGE_SIZE,
    CERTS_PAGES + 2 * PAGE_SIZE,
    CERTS_PAGES + 3 * PAGE_SIZE,
    VTPM_PAGE,
];

/// A services manifest with the vTPM alone: header, one entry, the EK's
/// TPMT_PUBLIC.
const MANIFEST_LEN: u64 = 24 + 24 + EK_TEMPLATE_SIZE as u64;
/// The nonce of the main report (RDRAND).
const NONCE_SIZE: usize = 64;
/// A nonce shorter than SHA-512: the SVSM hashes whatever the guest gives.
const SHORT_NONCE_SIZE: usize = 32;
/// Where the short nonce lies in the nonce page.
const SHORT_NONCE_OFFSET: u64 = 0x800;

/// Runs the mode's cases (the caller counts them and exits).
pub fn run(env: &Env) {
    let t = Attest { env };
    t.validate_pages();
    t.query_protocols();
    if !t.fresh_nonces() {
        return;
    }
    t.hostile_operations();
    t.small_buffers();
    t.attest_services();
    t.single_service();
    t.endorsement_key();
}

/// The attestation cases of one boot.
struct Attest<'a> {
    env: &'a Env,
}

/// Output registers of an attestation call.
#[derive(Clone, Copy)]
struct Sizes {
    manifest: u64,
    certs: u64,
    report: u64,
}

impl Attest<'_> {
    fn call(&self, regs: CallRegs) -> CallOutcome {
        svsm_call(self.env.calling_area, regs)
    }

    /// The operation structure's place: the calling area's buffer, where
    /// Linux puts it.
    fn op_gpa(&self) -> u64 {
        self.env.calling_area + 8
    }

    /// Calls protocol 1 with `op` written at the operation GPA, RCX
    /// pointing at `rcx` (normally the operation); RDX and R8 preset to
    /// all ones, as Linux does, so unchanged outputs show.
    fn attest_call(&self, call: u32, op: &[u8], rcx: u64) -> CallOutcome {
        // SAFETY: the calling area is the guest's own page; the operation
        // (at most 0x58 bytes) fits in its buffer after the 8-byte header.
        unsafe { guest_bytes(self.op_gpa(), op.len()) }.copy_from_slice(op);
        let regs = CallRegs {
            rax: request_rax(PROTOCOL_ATTEST, call),
            rcx,
            rdx: u64::MAX,
            r8: u64::MAX,
            r9: 0,
        };
        self.call(regs)
    }

    fn services(&self, op: &AttestServicesOp) -> CallOutcome {
        self.attest_call(ATTEST_SERVICES, op.as_bytes(), self.op_gpa())
    }

    fn single(&self, op: &AttestSingleServiceOp) -> CallOutcome {
        self.attest_call(ATTEST_SINGLE_SERVICE, op.as_bytes(), self.op_gpa())
    }

    /// The valid operation: 64-byte nonce, page-sized report and manifest
    /// buffers, `certs_size` bytes of certificate buffer.
    fn op(&self, certs_size: u32) -> AttestServicesOp {
        AttestServicesOp {
            report_gpa: REPORT_PAGE,
            report_size: PAGE_SIZE as u32,
            nonce_gpa: NONCE_PAGE,
            nonce_size: NONCE_SIZE as u16,
            manifest_gpa: MANIFEST_PAGE,
            manifest_size: PAGE_SIZE as u32,
            certs_gpa: CERTS_PAGES,
            certs_size,
            ..AttestServicesOp::default()
        }
    }

    fn single_op(&self, guid: Guid) -> AttestSingleServiceOp {
        AttestSingleServiceOp {
            services: self.op(0),
            service_guid: guid.to_uefi_bytes(),
            manifest_version: SERVICE_MANIFEST_VERSION,
            reserved: 0,
        }
    }

    fn sizes(outcome: &CallOutcome) -> Sizes {
        Sizes { manifest: outcome.regs.rcx, certs: outcome.regs.rdx, report: outcome.regs.r8 }
    }

    // ------------------------------------------------------------------

    fn validate_pages(&self) {
        let list = self.env.calling_area + 8;
        let entries = PAGES.map(|gpa| PvalidateEntry::new(gpa, PageSize::Size4K, true, false).0);
        // SAFETY: the list (header + 8 entries) lies in the calling area's
        // buffer, the guest's own page.
        unsafe {
            arch::write_u64(list, PAGES.len() as u64);
            for (i, entry) in entries.iter().enumerate() {
                arch::write_u64(list + 8 + 8 * i as u64, *entry);
            }
        }
        let outcome = self.call(CallRegs::core(CoreCall::Pvalidate, list, 0, 0));
        expect_code("setup/validate-buffer-pages", &outcome, SVSM_SUCCESS);
    }

    fn query_protocols(&self) {
        let v1 = ProtocolVersions { min: 1, max: 1 }.encode();
        for (name, protocol, version, expected) in [
            ("query-protocol/attest-v1", PROTOCOL_ATTEST, 1, v1),
            ("query-protocol/attest-v2-unsupported", PROTOCOL_ATTEST, 2, 0),
            ("query-protocol/vtpm-v1", PROTOCOL_VTPM, 1, v1),
        ] {
            let request = query_protocol_request(protocol, version);
            let outcome = self.call(CallRegs::core(CoreCall::QueryProtocol, request, 0, 0));
            let ok = outcome.delivered() && outcome.code() == SVSM_SUCCESS;
            record(
                name,
                ok && outcome.regs.rcx == expected,
                format_args!(
                    "expected {} with RCX {expected:#x}, got {} with RCX {:#x}",
                    Code(SVSM_SUCCESS),
                    Code(outcome.code()),
                    outcome.regs.rcx
                ),
            );
        }
    }

    /// Fills the nonces from RDRAND; false if there is no randomness (the
    /// rest of the mode would attest a guessable nonce).
    fn fresh_nonces(&self) -> bool {
        // SAFETY: the nonce page was validated above and is the guest's.
        let page = unsafe { guest_bytes(NONCE_PAGE, PAGE_SIZE as usize) };
        let filled = fill_random(&mut page[..NONCE_SIZE]);
        let at = SHORT_NONCE_OFFSET as usize;
        let filled = filled && fill_random(&mut page[at..at + SHORT_NONCE_SIZE]);
        let distinct = page[..SHORT_NONCE_SIZE] != page[at..at + SHORT_NONCE_SIZE];
        let nonzero = page[..NONCE_SIZE].iter().any(|&b| b != 0);
        record(
            "setup/nonces-from-rdrand",
            filled && distinct && nonzero,
            format_args!(
                "RDRAND delivered: {filled}, the two nonces differ: {distinct}, not zero: {nonzero}"
            ),
        );
        filled
    }

    fn hostile_operations(&self) {
        let svsm = self.env.svsm_base;
        let op = self.op(CERTS_SIZE);
        let rcx_cases = [
            ("services/op-in-svsm-memory", svsm + 0x100, SVSM_ERR_INVALID_ADDRESS),
            ("services/op-at-mmio", MMIO_LAPIC, SVSM_ERR_INVALID_ADDRESS),
            ("services/op-beyond-ram", BEYOND_RAM, SVSM_ERR_INVALID_ADDRESS),
            ("services/op-address-wraps", u64::MAX - 8, SVSM_ERR_INVALID_ADDRESS),
        ];
        for (name, rcx, expected) in rcx_cases {
            expect_code(name, &self.attest_call(ATTEST_SERVICES, op.as_bytes(), rcx), expected);
        }
        let cases: [(&str, AttestServicesOp, u32); 18] = [
            (
                "services/report-misaligned",
                AttestServicesOp { report_gpa: REPORT_PAGE + 8, ..op },
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "services/manifest-misaligned",
                AttestServicesOp { manifest_gpa: MANIFEST_PAGE + 1, ..op },
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "services/certs-misaligned",
                AttestServicesOp { certs_gpa: CERTS_PAGES + 0x10, ..op },
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "services/reserved-after-report-size",
                AttestServicesOp { reserved0: 1, ..op },
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "services/reserved-after-nonce-size",
                AttestServicesOp { reserved1: [0, 0, 0, 0, 0, 0x80], ..op },
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "services/nonce-over-a-page",
                AttestServicesOp { nonce_size: PAGE_SIZE as u16 + 1, ..op },
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "services/nonce-in-svsm-memory",
                AttestServicesOp { nonce_gpa: svsm + 0x40, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/nonce-runs-into-svsm-memory",
                AttestServicesOp { nonce_gpa: svsm - 32, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/nonce-address-wraps",
                AttestServicesOp { nonce_gpa: u64::MAX - 31, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/report-in-svsm-memory",
                AttestServicesOp { report_gpa: svsm, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/report-at-mmio",
                AttestServicesOp { report_gpa: MMIO_LAPIC, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/report-address-wraps",
                AttestServicesOp { report_gpa: !(PAGE_SIZE - 1), ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/manifest-in-svsm-memory",
                AttestServicesOp { manifest_gpa: svsm + PAGE_SIZE, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/manifest-beyond-ram",
                AttestServicesOp { manifest_gpa: BEYOND_RAM, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/certs-in-svsm-memory",
                AttestServicesOp { certs_gpa: svsm + 2 * PAGE_SIZE, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/certs-run-into-svsm-memory",
                AttestServicesOp { certs_gpa: svsm - PAGE_SIZE, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/certs-beyond-ram",
                AttestServicesOp { certs_gpa: BEYOND_RAM, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
            (
                "services/certs-address-wraps",
                AttestServicesOp { certs_gpa: !(PAGE_SIZE - 1), certs_size: u32::MAX, ..op },
                SVSM_ERR_INVALID_ADDRESS,
            ),
        ];
        for (name, bad, expected) in cases {
            expect_code(name, &self.services(&bad), expected);
        }
        for (name, call) in
            [("services/unknown-call-2", 2), ("services/unknown-call-0xffffffff", u32::MAX)]
        {
            let outcome = self.attest_call(call, op.as_bytes(), self.op_gpa());
            expect_code(name, &outcome, SVSM_ERR_UNSUPPORTED_CALL);
        }
        // None of these may have written the report page.
        // SAFETY: the report page was validated above and is the guest's.
        let untouched = unsafe { arch::page_is(REPORT_PAGE, 0) };
        record(
            "services/refused-calls-wrote-no-report",
            untouched,
            format_args!("the report page is still zero: {untouched}"),
        );
    }

    /// A too-small buffer: INVALID_PARAMETER with the sizes needed.
    fn expect_sizes(&self, name: &str, outcome: &CallOutcome, manifest: u64, certs: u64) {
        let got = Self::sizes(outcome);
        let ok = outcome.delivered()
            && outcome.code() == SVSM_ERR_INVALID_PARAMETER
            && (got.manifest, got.certs, got.report) == (manifest, certs, REPORT_SIZE as u64);
        record(
            name,
            ok,
            format_args!(
                "expected {} with RCX {manifest:#x} RDX {certs:#x} R8 {REPORT_SIZE:#x}, got {} with RCX {:#x} RDX {:#x} R8 {:#x}",
                Code(SVSM_ERR_INVALID_PARAMETER),
                Code(outcome.code()),
                got.manifest,
                got.certs,
                got.report
            ),
        );
    }

    fn small_buffers(&self) {
        let report = AttestServicesOp { report_size: REPORT_SIZE as u32 - 1, ..self.op(0) };
        let outcome = self.services(&report);
        self.expect_sizes("services/report-buffer-too-small", &outcome, MANIFEST_LEN, 0);
        let manifest = AttestServicesOp { manifest_size: MANIFEST_LEN as u32 - 1, ..self.op(0) };
        let outcome = self.services(&manifest);
        self.expect_sizes("services/manifest-buffer-too-small", &outcome, MANIFEST_LEN, 0);
        let single = AttestSingleServiceOp {
            services: AttestServicesOp { manifest_size: 100, ..self.op(0) },
            ..self.single_op(VTPM_SERVICE_GUID)
        };
        let outcome = self.single(&single);
        let ek_len = EK_TEMPLATE_SIZE as u64;
        self.expect_sizes("single/manifest-too-small", &outcome, ek_len, 0);
    }

    fn attest_services(&self) {
        // Too small for the certificate table: the size it needs, in pages.
        let small = self.services(&self.op(0x100));
        let needed = small.regs.rdx;
        record(
            "services/certs-buffer-too-small",
            small.delivered()
                && small.code() == SVSM_ERR_INVALID_PARAMETER
                && needed > 0x100
                && needed <= u64::from(CERTS_SIZE)
                && needed.is_multiple_of(PAGE_SIZE),
            format_args!(
                "expected {} with RDX = the pages the table needs (<= {CERTS_SIZE:#x}), got {} with RDX {needed:#x}",
                Code(SVSM_ERR_INVALID_PARAMETER),
                Code(small.code())
            ),
        );

        let outcome = self.services(&self.op(CERTS_SIZE));
        let got = Self::sizes(&outcome);
        let ok = outcome.delivered()
            && outcome.code() == SVSM_SUCCESS
            && got.manifest == MANIFEST_LEN
            && got.report == REPORT_SIZE as u64
            && got.certs > 0
            && got.certs <= needed;
        record(
            "services/with-certificates",
            ok,
            format_args!(
                "expected {} with RCX {MANIFEST_LEN:#x}, 0 < RDX <= {needed:#x}, R8 {REPORT_SIZE:#x}; got {} with RCX {:#x} RDX {:#x} R8 {:#x}",
                Code(SVSM_SUCCESS),
                Code(outcome.code()),
                got.manifest,
                got.certs,
                got.report
            ),
        );
        if !ok {
            return;
        }
        let certs = (got.certs as usize).min(CERTS_SIZE as usize);
        // SAFETY: validated guest pages; the lengths are the SVSM's answers,
        // bounded by the buffers (checked above).
        let (manifest, table) = unsafe {
            (guest_bytes(MANIFEST_PAGE, MANIFEST_LEN as usize), guest_bytes(CERTS_PAGES, certs))
        };
        let vtpm = manifest_entries(manifest)
            .ok()
            .and_then(|mut entries| entries.find(|(guid, _)| *guid == VTPM_SERVICE_GUID));
        record(
            "services/manifest-lists-the-vtpm-ek",
            vtpm.is_some_and(|(_, data)| data.len() == EK_TEMPLATE_SIZE),
            format_args!(
                "the manifest lists the vTPM with {:?} bytes of data ({EK_TEMPLATE_SIZE} expected)",
                vtpm.map(|(_, data)| data.len())
            ),
        );
        let has =
            |guid| matches!(find_certificate(table, guid), Ok(Some(cert)) if !cert.is_empty());
        let chain = [has(CERT_GUID_ARK), has(CERT_GUID_ASK), has(CERT_GUID_VCEK)];
        record(
            "services/certificate-table-has-ark-ask-vcek",
            chain == [true; 3],
            format_args!("ARK, ASK, VCEK present: {chain:?}"),
        );
        // SAFETY: as above.
        let (nonce, report) =
            unsafe { (guest_bytes(NONCE_PAGE, NONCE_SIZE), guest_bytes(REPORT_PAGE, REPORT_SIZE)) };
        print_blobs(&[
            ("nonce", nonce),
            ("report", report),
            ("manifest", manifest),
            ("certs", table),
        ]);

        self.without_certificates();
        self.short_nonce();
    }

    fn without_certificates(&self) {
        // SAFETY: validated guest pages, the guest's own.
        unsafe {
            arch::fill_page(CERTS_PAGES, 0);
            arch::fill_page(REPORT_PAGE, 0);
        }
        let outcome = self.services(&self.op(0));
        let got = Self::sizes(&outcome);
        // SAFETY: as above.
        let (certs_untouched, report_written) =
            unsafe { (arch::page_is(CERTS_PAGES, 0), !arch::page_is(REPORT_PAGE, 0)) };
        record(
            "services/without-certificates",
            outcome.delivered()
                && outcome.code() == SVSM_SUCCESS
                && got.certs == 0
                && certs_untouched
                && report_written,
            format_args!(
                "expected {} with RDX 0, the certificate buffer untouched, a report; got {} with RDX {:#x}, untouched: {certs_untouched}, report: {report_written}",
                Code(SVSM_SUCCESS),
                Code(outcome.code()),
                got.certs
            ),
        );
    }

    fn short_nonce(&self) {
        let op = AttestServicesOp {
            nonce_gpa: NONCE_PAGE + SHORT_NONCE_OFFSET,
            nonce_size: SHORT_NONCE_SIZE as u16,
            ..self.op(0)
        };
        let outcome = self.services(&op);
        expect_code("services/32-byte-nonce", &outcome, SVSM_SUCCESS);
        if outcome.code() == SVSM_SUCCESS {
            // SAFETY: validated guest pages, the guest's own.
            let (nonce, report, manifest) = unsafe {
                (
                    guest_bytes(NONCE_PAGE + SHORT_NONCE_OFFSET, SHORT_NONCE_SIZE),
                    guest_bytes(REPORT_PAGE, REPORT_SIZE),
                    guest_bytes(MANIFEST_PAGE, MANIFEST_LEN as usize),
                )
            };
            print_blobs(&[
                ("short-nonce", nonce),
                ("short-nonce-report", report),
                ("short-nonce-manifest", manifest),
            ]);
        }
    }

    fn single_service(&self) {
        let outcome = self.single(&self.single_op(VTPM_SERVICE_GUID));
        let got = Self::sizes(&outcome);
        let ok = outcome.delivered()
            && outcome.code() == SVSM_SUCCESS
            && (got.manifest, got.certs, got.report)
                == (EK_TEMPLATE_SIZE as u64, 0, REPORT_SIZE as u64);
        record(
            "single/vtpm",
            ok,
            format_args!(
                "expected {} with RCX {EK_TEMPLATE_SIZE:#x} RDX 0 R8 {REPORT_SIZE:#x}, got {} with RCX {:#x} RDX {:#x} R8 {:#x}",
                Code(SVSM_SUCCESS),
                Code(outcome.code()),
                got.manifest,
                got.certs,
                got.report
            ),
        );
        if ok {
            // SAFETY: validated guest pages, the guest's own.
            let (report, data) = unsafe {
                (
                    guest_bytes(REPORT_PAGE, REPORT_SIZE),
                    guest_bytes(MANIFEST_PAGE, EK_TEMPLATE_SIZE),
                )
            };
            print_blobs(&[("single-report", report), ("single-data", data)]);
        }
        let unknown = Guid::new(0x12345678, 0x9abc, 0xdef0, 0x1234, 0x5678_9abc_def0);
        let cases = [
            ("single/unknown-guid", self.single_op(unknown), SVSM_ERR_UNSUPPORTED_PROTOCOL),
            ("single/nil-guid", self.single_op(Guid::NIL), SVSM_ERR_UNSUPPORTED_PROTOCOL),
            (
                "single/vtpm-guid-in-rfc4122-order",
                AttestSingleServiceOp {
                    service_guid: VTPM_SERVICE_GUID.to_rfc4122_bytes(),
                    ..self.single_op(VTPM_SERVICE_GUID)
                },
                SVSM_ERR_UNSUPPORTED_PROTOCOL,
            ),
            (
                "single/manifest-version-1",
                AttestSingleServiceOp { manifest_version: 1, ..self.single_op(VTPM_SERVICE_GUID) },
                SVSM_ERR_INVALID_PARAMETER,
            ),
            (
                "single/reserved-set",
                AttestSingleServiceOp { reserved: 1, ..self.single_op(VTPM_SERVICE_GUID) },
                SVSM_ERR_INVALID_PARAMETER,
            ),
        ];
        for (name, op, expected) in cases {
            expect_code(name, &self.single(&op), expected);
        }
    }

    // ------------------------------------------------------------------
    // The vTPM's endorsement key
    // ------------------------------------------------------------------

    /// VTPM_CMD with `command`; returns the outcome and the TPM response
    /// (empty if the call failed or the response size is implausible).
    fn tpm(&self, command: &[u8]) -> (CallOutcome, &'static [u8]) {
        let header = VtpmCommandHeader {
            command: TPM_SEND_COMMAND,
            locality: 0,
            size: command.len() as u32,
        };
        let head = header.as_bytes().len();
        // SAFETY: the vTPM page was validated above and is the guest's;
        // every command here fits in it (checked by the slice bounds).
        let page = unsafe { guest_bytes(VTPM_PAGE, VTPM_BUFFER_SIZE) };
        page.fill(0);
        page[..head].copy_from_slice(header.as_bytes());
        page[head..head + command.len()].copy_from_slice(command);
        let regs = CallRegs {
            rax: request_rax(PROTOCOL_VTPM, VTPM_CMD),
            rcx: VTPM_PAGE,
            ..CallRegs::default()
        };
        let outcome = self.call(regs);
        let page: &'static [u8] = page;
        let (response, rest) =
            VtpmResponseHeader::read_from_prefix(page).expect("the page holds the header");
        let size = response.size as usize;
        let body: &'static [u8] =
            if outcome.code() == SVSM_SUCCESS && size <= rest.len() { &rest[..size] } else { &[] };
        (outcome, body)
    }

    /// A VTPM_CMD case: SUCCESS and TPM response code `rc`.
    fn expect_tpm(&self, name: &str, command: &[u8], rc: u32) -> &'static [u8] {
        let (outcome, response) = self.tpm(command);
        let got = response_code(response);
        record(
            name,
            outcome.delivered() && outcome.code() == SVSM_SUCCESS && got == Some(rc),
            format_args!(
                "expected {} with TPM rc {rc:#x}, got {} with TPM rc {got:x?}",
                Code(SVSM_SUCCESS),
                Code(outcome.code())
            ),
        );
        response
    }

    fn endorsement_key(&self) {
        let regs = CallRegs { rax: request_rax(PROTOCOL_VTPM, VTPM_QUERY), ..CallRegs::default() };
        let query = self.call(regs);
        let commands = 1u64 << TPM_SEND_COMMAND;
        record(
            "vtpm/query",
            query.delivered()
                && query.code() == SVSM_SUCCESS
                && (query.regs.rcx, query.regs.rdx) == (commands, 0),
            format_args!(
                "expected {} with RCX {commands:#x} RDX 0, got {} with RCX {:#x} RDX {:#x}",
                Code(SVSM_SUCCESS),
                Code(query.code()),
                query.regs.rcx,
                query.regs.rdx
            ),
        );
        self.expect_tpm("vtpm/startup-clear", &STARTUP, 0);
        let created = self.expect_tpm("vtpm/create-primary-ek-template-l1", &CREATE_EK, 0);
        if response_code(created) != Some(0) {
            return;
        }
        print_blobs(&[("ek-create-primary", created)]);
        let handle = created_handle(created).unwrap_or(0);
        self.expect_tpm("vtpm/flush-ek", &flush_context(handle), 0);
    }
}

/// The guest bytes at `gpa`.
///
/// # Safety
/// `gpa..gpa + len` must be validated guest memory that nothing else uses
/// while the slice is in use: the attestation buffers belong to one vCPU,
/// and each slice is last used before the next SVSM call writes the page.
unsafe fn guest_bytes(gpa: u64, len: usize) -> &'static mut [u8] {
    // SAFETY: per the function's contract; the guest identity-maps its RAM.
    unsafe { core::slice::from_raw_parts_mut(gpa as *mut u8, len) }
}

/// Fills `out` from RDRAND; false if RDRAND keeps failing.
fn fill_random(out: &mut [u8]) -> bool {
    for chunk in out.chunks_mut(8) {
        let Some(value) = arch::rdrand() else { return false };
        chunk.copy_from_slice(&value.to_le_bytes()[..chunk.len()]);
    }
    true
}

fn print_blobs(blobs: &[(&str, &[u8])]) {
    console::with_console(|out| {
        for (name, data) in blobs {
            let _ = write_blob(out, name, data);
        }
    });
}
