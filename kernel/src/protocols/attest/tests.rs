//! Protocol 1 against the development PSP through a fake guest memory:
//! every output register, the "buffer too small" answers, and hostile
//! operation structures.

use abi::attestation::{
    AttestSingleServiceOp, CERT_GUID_VCEK, DEV_PSP_PARAMS_MAGIC, DEV_PSP_PARAMS_VERSION,
    DevPspParams, VTPM_SERVICE_GUID, find_certificate, manifest_entries, write_cert_table,
};
use zerocopy::FromZeros;

use super::*;
use crate::attest::dev_psp::DevPsp;
use crate::attest::guest_msg::Vmpck;
use crate::guest_mem::InvalidGpa;

/// Guest memory 0..GUEST_END; the SVSM's own range is off limits.
const GUEST_END: u64 = 0x40000;
const SVSM_MEMORY: core::ops::Range<u64> = 0x20000..0x30000;
const OP: u64 = 0x1008;
const NONCE: u64 = 0x1100;
const REPORT: u64 = 0x2000;
const MANIFEST: u64 = 0x4000;
const CERTS: u64 = 0x8000;
/// A stand-in for the vTPM's EK public area until the vTPM registers it.
const EK_PUBLIC: &[u8] = b"\x00\x01\x00\x0b fixed TPMT_PUBLIC stand-in";

struct FakeMemory(core::cell::RefCell<Vec<u8>>);

impl FakeMemory {
    fn range(gpa: u64, len: u64) -> Result<core::ops::Range<usize>, InvalidGpa> {
        let end = gpa.checked_add(len).ok_or(InvalidGpa)?;
        let hits_svsm = gpa < SVSM_MEMORY.end && end > SVSM_MEMORY.start;
        if end > GUEST_END || hits_svsm {
            return Err(InvalidGpa);
        }
        Ok(gpa as usize..end as usize)
    }

    fn bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
        self.0.borrow()[gpa as usize..][..len].to_vec()
    }
}

impl GuestMemory for FakeMemory {
    fn check(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        Self::range(gpa, len).map(|_| ())
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), InvalidGpa> {
        buf.copy_from_slice(&self.0.borrow()[Self::range(gpa, buf.len() as u64)?]);
        Ok(())
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), InvalidGpa> {
        let range = Self::range(gpa, data.len() as u64)?;
        self.0.borrow_mut()[range].copy_from_slice(data);
        Ok(())
    }
    fn zero(&self, gpa: u64, len: u64) -> Result<(), InvalidGpa> {
        let range = Self::range(gpa, len)?;
        self.0.borrow_mut()[range].fill(0);
        Ok(())
    }
}

fn client() -> GuestRequestClient<DevPsp> {
    let mut params = DevPspParams::new_zeroed();
    params.magic = DEV_PSP_PARAMS_MAGIC;
    params.version = DEV_PSP_PARAMS_VERSION;
    params.vmpck0 = [7; 32];
    params.vcek_private = [0x33; 48];
    params.measurement = [0x4E; 48];
    params.cpuid_family = 0x19;
    params.cpuid_model = 0x11;
    let mut certs = vec![0u8; 64];
    let len = write_cert_table(&[(CERT_GUID_VCEK, b"vcek-der")], &mut certs).unwrap();
    certs.truncate(len);
    let psp = DevPsp::new(&params, &certs, [1; 32]).unwrap();
    GuestRequestClient::new(psp, Vmpck::new([7; 32], 0))
}

fn services() -> ServiceRegistry {
    let mut registry = ServiceRegistry::new();
    registry.register(VTPM_SERVICE_GUID, EK_PUBLIC.to_vec());
    registry
}

fn op(certs_size: u32) -> AttestServicesOp {
    AttestServicesOp {
        report_gpa: REPORT,
        report_size: 0x1000,
        nonce_gpa: NONCE,
        nonce_size: 64,
        manifest_gpa: MANIFEST,
        manifest_size: 0x1000,
        certs_gpa: CERTS,
        certs_size,
        ..Default::default()
    }
}

struct Setup {
    memory: FakeMemory,
    client: GuestRequestClient<DevPsp>,
    services: ServiceRegistry,
}

impl Setup {
    fn new() -> Setup {
        let memory = FakeMemory(core::cell::RefCell::new(vec![0; GUEST_END as usize]));
        memory.write(NONCE, &[0x6E; 64]).unwrap();
        Setup { memory, client: client(), services: services() }
    }

    fn call(&mut self, call: u32, op_bytes: &[u8]) -> (u32, CallRegisters) {
        self.memory.write(OP, op_bytes).unwrap();
        self.call_at(call, OP)
    }

    fn call_at(&mut self, call: u32, gpa: u64) -> (u32, CallRegisters) {
        let mut regs =
            CallRegisters { rcx: gpa, rdx: u64::MAX, r8: u64::MAX, ..Default::default() };
        let mut context = AttestContext { services: &self.services, reports: &mut self.client };
        let code = handle(call, &mut regs, &self.memory, &mut context);
        (code, regs)
    }

    fn report(&self) -> AttestationReport {
        AttestationReport::read_from_bytes(&self.memory.bytes(REPORT, REPORT_SIZE)).unwrap()
    }
}

fn sha512(parts: &[&[u8]]) -> [u8; 64] {
    let mut hash = Sha512::new();
    for part in parts {
        hash.update(part);
    }
    hash.finalize().into()
}

#[test]
fn attest_services_returns_report_manifest_and_certificates() {
    let mut s = Setup::new();
    let (code, regs) = s.call(ATTEST_SERVICES, op(0x4000).as_bytes());
    assert_eq!(code, SVSM_SUCCESS);
    let manifest_len = 24 + 24 + EK_PUBLIC.len();
    assert_eq!(regs.rcx, manifest_len as u64);
    assert_eq!(regs.r8, REPORT_SIZE as u64);
    assert!(regs.rdx > 0);
    let manifest = s.memory.bytes(MANIFEST, manifest_len);
    let entries: Vec<_> = manifest_entries(&manifest).unwrap().collect();
    assert_eq!(entries, [(VTPM_SERVICE_GUID, EK_PUBLIC)]);
    let report = s.report();
    assert_eq!(report.report_data, sha512(&[&[0x6E; 64], &manifest]));
    assert_eq!(report.measurement, [0x4E; 48]);
    assert_eq!(report.vmpl, 0);
    let certs = &s.memory.bytes(CERTS, regs.rdx as usize);
    assert_eq!(find_certificate(certs, CERT_GUID_VCEK), Ok(Some(&b"vcek-der"[..])));
}

#[test]
fn without_a_certificate_buffer_rdx_is_zero() {
    let mut s = Setup::new();
    let (code, regs) = s.call(ATTEST_SERVICES, op(0).as_bytes());
    assert_eq!((code, regs.rdx), (SVSM_SUCCESS, 0));
    assert!(s.memory.bytes(CERTS, 0x100).iter().all(|&b| b == 0));
}

#[test]
fn small_buffers_return_the_sizes_without_spending_a_report() {
    let mut s = Setup::new();
    let mut small = op(0);
    small.manifest_size = 10;
    let (code, regs) = s.call(ATTEST_SERVICES, small.as_bytes());
    assert_eq!(code, SVSM_ERR_INVALID_PARAMETER);
    assert_eq!(
        (regs.rcx, regs.rdx, regs.r8),
        ((48 + EK_PUBLIC.len()) as u64, 0, REPORT_SIZE as u64)
    );
    let mut small = op(0);
    small.report_size = REPORT_SIZE as u32 - 1;
    let (code, regs) = s.call(ATTEST_SERVICES, small.as_bytes());
    assert_eq!((code, regs.r8), (SVSM_ERR_INVALID_PARAMETER, REPORT_SIZE as u64));
    assert_eq!(s.client.last_seqno(), 0, "no guest request was made");
    assert!(s.report().as_bytes().iter().all(|&b| b == 0));
}

#[test]
fn a_small_certificate_buffer_returns_the_size_needed() {
    let mut s = Setup::new();
    let (code, regs) = s.call(ATTEST_SERVICES, op(16).as_bytes());
    assert_eq!(code, SVSM_ERR_INVALID_PARAMETER);
    assert_eq!(regs.rdx, 0x1000);
    let (code, _) = s.call(ATTEST_SERVICES, op(regs.rdx as u32).as_bytes());
    assert_eq!(code, SVSM_SUCCESS);
}

#[test]
fn single_service_attests_the_vtpm_data_alone() {
    let mut s = Setup::new();
    let single = AttestSingleServiceOp {
        services: op(0),
        service_guid: VTPM_SERVICE_GUID.to_uefi_bytes(),
        manifest_version: 0,
        reserved: 0,
    };
    let (code, regs) = s.call(ATTEST_SINGLE_SERVICE, single.as_bytes());
    assert_eq!(code, SVSM_SUCCESS);
    assert_eq!(regs.rcx, EK_PUBLIC.len() as u64);
    assert_eq!(s.memory.bytes(MANIFEST, EK_PUBLIC.len()), EK_PUBLIC);
    assert_eq!(s.report().report_data, sha512(&[&[0x6E; 64], EK_PUBLIC]));

    let unknown = AttestSingleServiceOp { service_guid: [9; 16], ..single };
    assert_eq!(s.call(ATTEST_SINGLE_SERVICE, unknown.as_bytes()).0, SVSM_ERR_UNSUPPORTED_PROTOCOL);
    let version = AttestSingleServiceOp { manifest_version: 1, ..single };
    assert_eq!(s.call(ATTEST_SINGLE_SERVICE, version.as_bytes()).0, SVSM_ERR_INVALID_PARAMETER);
    let reserved = AttestSingleServiceOp { reserved: 1, ..single };
    assert_eq!(s.call(ATTEST_SINGLE_SERVICE, reserved.as_bytes()).0, SVSM_ERR_INVALID_PARAMETER);
}

#[test]
fn hostile_operations_get_the_spec_error_codes() {
    let mut s = Setup::new();
    let cases: [(AttestServicesOp, u32); 9] = [
        (AttestServicesOp { report_gpa: REPORT + 8, ..op(0) }, SVSM_ERR_INVALID_PARAMETER),
        (AttestServicesOp { manifest_gpa: MANIFEST + 1, ..op(0) }, SVSM_ERR_INVALID_PARAMETER),
        (AttestServicesOp { certs_gpa: CERTS + 0x10, ..op(0x1000) }, SVSM_ERR_INVALID_PARAMETER),
        (AttestServicesOp { reserved1: [0, 0, 0, 0, 0, 1], ..op(0) }, SVSM_ERR_INVALID_PARAMETER),
        (AttestServicesOp { nonce_size: 0x1001, ..op(0) }, SVSM_ERR_INVALID_PARAMETER),
        (AttestServicesOp { nonce_gpa: SVSM_MEMORY.start, ..op(0) }, SVSM_ERR_INVALID_ADDRESS),
        (AttestServicesOp { report_gpa: SVSM_MEMORY.start, ..op(0) }, SVSM_ERR_INVALID_ADDRESS),
        (AttestServicesOp { manifest_gpa: !0xFFF, ..op(0) }, SVSM_ERR_INVALID_ADDRESS),
        (AttestServicesOp { certs_gpa: SVSM_MEMORY.start, ..op(0x1000) }, SVSM_ERR_INVALID_ADDRESS),
    ];
    for (bad, expected) in cases {
        assert_eq!(s.call(ATTEST_SERVICES, bad.as_bytes()).0, expected, "{bad:x?}");
    }
    assert_eq!(s.client.last_seqno(), 0, "no bad call cost a report");
    assert_eq!(s.call_at(ATTEST_SERVICES, SVSM_MEMORY.start).0, SVSM_ERR_INVALID_ADDRESS);
    assert_eq!(s.call_at(ATTEST_SERVICES, u64::MAX - 8).0, SVSM_ERR_INVALID_ADDRESS);
    assert_eq!(s.call_at(2, OP).0, SVSM_ERR_UNSUPPORTED_CALL);
}

/// A report source whose key is gone.
struct Disabled;

impl ReportSource for Disabled {
    fn report(
        &mut self,
        _: &[u8; 64],
        _: Option<&mut [u8]>,
    ) -> Result<(AttestationReport, CertsOutcome), RequestError> {
        Err(RequestError::KeyDisabled)
    }
}

#[test]
fn a_failed_guest_request_is_an_invalid_request() {
    let s = Setup::new();
    s.memory.write(OP, op(0).as_bytes()).unwrap();
    let mut regs = CallRegisters { rcx: OP, ..Default::default() };
    let mut context = AttestContext { services: &s.services, reports: &mut Disabled };
    assert_eq!(
        handle(ATTEST_SERVICES, &mut regs, &s.memory, &mut context),
        SVSM_ERR_INVALID_REQUEST
    );
}
