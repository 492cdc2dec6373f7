//! Protocol 2 over a fake guest RAM with the real checked accessor and the
//! real engine.

use abi::boot::MemoryRange;
use sha2::{Digest, Sha256};

use super::*;
use crate::guest_mem::{CheckedGuestMemory, GuestLayout, OwnedPages, RawGuestMemory};
use crate::host_doubles::FakeGuestRam;
use crate::vtpm::response_code;
use crate::vtpm::tests::{command, service, startup};

const RAM_END: u64 = 0x10_0000;
const SVSM: MemoryRange = MemoryRange { base: 0x8_0000, size: 0x1_0000 };

struct Guest {
    ram: FakeGuestRam,
    layout: GuestLayout,
    owned: OwnedPages,
}

impl Guest {
    fn new() -> Guest {
        Guest {
            ram: FakeGuestRam::new(0, RAM_END),
            layout: GuestLayout::new(&[MemoryRange { base: 0, size: RAM_END }], &[SVSM]),
            owned: OwnedPages::new(),
        }
    }

    fn memory(&self) -> CheckedGuestMemory<'_> {
        CheckedGuestMemory::new(&self.layout, &self.owned, &self.ram)
    }

    /// Writes a TPM_SEND_COMMAND request at `gpa` (unchecked test setup).
    fn put_request(&self, gpa: u64, platform_command: u32, locality: u8, tpm_command: &[u8]) {
        let header = VtpmCommandHeader {
            command: platform_command,
            locality,
            size: tpm_command.len() as u32,
        };
        self.ram.write(gpa, header.as_bytes()).unwrap();
        self.ram.write(gpa + 9, tpm_command).unwrap();
    }

    /// Calls VTPM_CMD with the buffer at `gpa`.
    fn call(&self, gpa: u64, tpm: &mut dyn TpmBackend) -> u32 {
        let mut regs = VtpmRegisters { rcx: gpa, rdx: 0 };
        handle(VTPM_CMD, &mut regs, &self.memory(), tpm)
    }

    /// The response at `gpa`.
    fn response(&self, gpa: u64) -> Vec<u8> {
        let mut size = [0u8; 4];
        self.ram.read(gpa, &mut size).unwrap();
        let mut response = vec![0u8; u32::from_le_bytes(size) as usize];
        self.ram.read(gpa + 4, &mut response).unwrap();
        response
    }

    fn bytes(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        self.ram.read(gpa, &mut bytes).unwrap();
        bytes
    }
}

/// Records what reached the TPM and answers `answer`.
#[derive(Default)]
struct Recorder {
    calls: Vec<(u8, Vec<u8>)>,
    answer: Vec<u8>,
}

impl TpmBackend for Recorder {
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        self.calls.push((locality, command.to_vec()));
        self.answer.clone()
    }
}

fn pcr_extend_sha256(pcr: u32, digest: &[u8; 32]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&pcr.to_be_bytes());
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&[0x40, 0, 0, 9, 0, 0, 0, 0, 0]);
    body.extend_from_slice(&[0, 0, 0, 1, 0x00, 0x0B]);
    body.extend_from_slice(digest);
    command(0x8002, 0x182, &body)
}

fn pcr_read_sha256(pcr: u32) -> Vec<u8> {
    let mut select = [0u8; 3];
    select[(pcr / 8) as usize] = 1 << (pcr % 8);
    let body = [0, 0, 0, 1, 0x00, 0x0B, 3, select[0], select[1], select[2]];
    command(0x8001, 0x17E, &body)
}

#[test]
fn query_reports_send_command_and_no_features() {
    let guest = Guest::new();
    let mut regs = VtpmRegisters { rcx: 0xDEAD, rdx: 0xBEEF };
    let rc = handle(VTPM_QUERY, &mut regs, &guest.memory(), &mut Recorder::default());
    assert_eq!(rc, SVSM_SUCCESS);
    assert_eq!(regs, VtpmRegisters { rcx: 0x100, rdx: 0 });
}

#[test]
fn unknown_calls_are_unsupported() {
    let guest = Guest::new();
    for call in [2, 3, 0xFFFF_FFFF] {
        let mut regs = VtpmRegisters::default();
        let rc = handle(call, &mut regs, &guest.memory(), &mut Recorder::default());
        assert_eq!(rc, SVSM_ERR_UNSUPPORTED_CALL, "call {call}");
    }
}

#[test]
fn measured_boot_through_the_protocol() {
    let guest = Guest::new();
    let mut vtpm = service();
    // Unaligned buffers are allowed.
    let gpa = 0x1003;
    guest.put_request(gpa, TPM_SEND_COMMAND, 0, &startup());
    assert_eq!(guest.call(gpa, &mut vtpm), SVSM_SUCCESS);
    assert_eq!(guest.response(gpa), [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);

    let measurement: [u8; 32] = Sha256::digest(b"the kernel").into();
    guest.put_request(gpa, TPM_SEND_COMMAND, 0, &pcr_extend_sha256(4, &measurement));
    assert_eq!(guest.call(gpa, &mut vtpm), SVSM_SUCCESS);
    assert_eq!(response_code(&guest.response(gpa)), Some(0));

    guest.put_request(gpa, TPM_SEND_COMMAND, 0, &pcr_read_sha256(4));
    assert_eq!(guest.call(gpa, &mut vtpm), SVSM_SUCCESS);
    let read = guest.response(gpa);
    let expected: [u8; 32] =
        Sha256::new().chain_update([0u8; 32]).chain_update(measurement).finalize().into();
    assert_eq!(&read[read.len() - 32..], &expected);
}

#[test]
fn bad_platform_command_or_locality_is_invalid_parameter_and_reaches_no_tpm() {
    let guest = Guest::new();
    for (platform_command, locality) in
        [(7, 0), (9, 0), (0, 0), (u32::MAX, 0), (8, 1), (8, 4), (8, 0xFF)]
    {
        let mut tpm = Recorder::default();
        guest.put_request(0x2000, platform_command, locality, &startup());
        let before = guest.bytes(0x2000, 32);
        assert_eq!(guest.call(0x2000, &mut tpm), SVSM_ERR_INVALID_PARAMETER);
        assert!(tpm.calls.is_empty());
        assert_eq!(guest.bytes(0x2000, 32), before, "the buffer is untouched");
    }
}

#[test]
fn oversize_commands_get_the_tpms_command_size_error() {
    let guest = Guest::new();
    for size in [MAX_TPM_COMMAND as u32 + 1, 0x1_0000, u32::MAX] {
        let mut tpm = Recorder::default();
        let header = VtpmCommandHeader { command: 8, locality: 0, size };
        guest.ram.write(0x3000, header.as_bytes()).unwrap();
        assert_eq!(guest.call(0x3000, &mut tpm), SVSM_SUCCESS);
        assert!(tpm.calls.is_empty());
        assert_eq!(guest.response(0x3000), [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x42]);
    }
}

#[test]
fn the_largest_command_reaches_the_tpm_whole() {
    let guest = Guest::new();
    let mut tpm =
        Recorder { answer: vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0], ..Recorder::default() };
    let big: Vec<u8> = (0..MAX_TPM_COMMAND).map(|i| i as u8).collect();
    guest.put_request(0x4000, 8, 0, &big);
    assert_eq!(guest.call(0x4000, &mut tpm), SVSM_SUCCESS);
    assert_eq!(tpm.calls, [(0, big)]);
}

#[test]
fn malformed_tpm_commands_are_answered_by_the_tpm() {
    let guest = Guest::new();
    let mut vtpm = service();
    for bad in [&[][..], &[0x80, 0x01], &[0x80, 0x01, 0, 0, 0, 50, 0, 0, 1, 0x44, 0, 0]] {
        guest.put_request(0x5000, 8, 0, bad);
        assert_eq!(guest.call(0x5000, &mut vtpm), SVSM_SUCCESS);
        let response = guest.response(0x5000);
        assert_eq!(response.len(), 10);
        assert_ne!(response_code(&response), Some(0));
    }
}

#[test]
fn buffers_outside_guest_ram_or_in_svsm_memory_are_invalid_addresses() {
    let guest = Guest::new();
    let mut tpm = Recorder::default();
    for gpa in [
        SVSM.base,     // the header in SVSM memory
        SVSM.base - 4, // the header straddles into it
        RAM_END,       // past the end of RAM
        0xFED4_0000,   // MMIO
        u64::MAX - 3,  // wraps
    ] {
        assert_eq!(guest.call(gpa, &mut tpm), SVSM_ERR_INVALID_ADDRESS, "{gpa:#x}");
    }
    // The header is fine but the command runs into SVSM memory.
    let gpa = SVSM.base - 20;
    guest
        .ram
        .write(gpa, VtpmCommandHeader { command: 8, locality: 0, size: 100 }.as_bytes())
        .unwrap();
    assert_eq!(guest.call(gpa, &mut tpm), SVSM_ERR_INVALID_ADDRESS);
    // Or past the end of RAM.
    let gpa = RAM_END - 20;
    guest
        .ram
        .write(gpa, VtpmCommandHeader { command: 8, locality: 0, size: 100 }.as_bytes())
        .unwrap();
    assert_eq!(guest.call(gpa, &mut tpm), SVSM_ERR_INVALID_ADDRESS);
    assert!(tpm.calls.is_empty());
}

#[test]
fn a_response_that_does_not_fit_guest_ram_is_not_written_at_all() {
    let guest = Guest::new();
    let answer: Vec<u8> = [&[0x80, 0x01, 0, 0, 0, 44, 0, 0, 0, 0][..], &[0x5A; 34]].concat();
    let mut tpm = Recorder { answer, ..Recorder::default() };
    // 9 + 12 bytes of request fit before the end of RAM; 4 + 44 do not.
    let gpa = RAM_END - 21;
    let get_random = command(0x8001, 0x17B, &[0, 32]);
    guest.put_request(gpa, 8, 0, &get_random);
    let before = guest.bytes(gpa, 21);
    assert_eq!(guest.call(gpa, &mut tpm), SVSM_ERR_INVALID_ADDRESS);
    assert_eq!(tpm.calls.len(), 1);
    assert_eq!(guest.bytes(gpa, 21), before);
}

#[test]
fn a_response_larger_than_the_buffer_becomes_a_tpm_failure() {
    let guest = Guest::new();
    let mut tpm = Recorder { answer: vec![0; MAX_TPM_RESPONSE + 1], ..Recorder::default() };
    guest.put_request(0x6000, 8, 0, &startup());
    assert_eq!(guest.call(0x6000, &mut tpm), SVSM_SUCCESS);
    assert_eq!(guest.response(0x6000), crate::vtpm::error_response(TPM_RC_FAILURE));
}
