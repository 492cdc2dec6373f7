//! The CRB registers as EDK2 and Linux drive them, with the real engine.

use super::*;
use crate::vtpm::tests::{service, startup};
use crate::vtpm::{TPM_RC_COMMAND_SIZE, response_code};

/// Records commands, answers `answer`.
#[derive(Default)]
struct Recorder {
    commands: Vec<Vec<u8>>,
    answer: Vec<u8>,
}

impl TpmBackend for Recorder {
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        assert_eq!(locality, 0);
        self.commands.push(command.to_vec());
        self.answer.clone()
    }
}

fn read32(crb: &mut CrbDevice<impl TpmBackend>, offset: u64) -> u32 {
    crb.read(offset, 4) as u32
}

/// EDK2's PtpCrbTpmCommand: byte writes of the command, the address and
/// size registers, START, polling, byte reads of the response, goIdle.
fn edk2_command(crb: &mut CrbDevice<impl TpmBackend>, command: &[u8]) -> Vec<u8> {
    if read32(crb, CTRL_STS) & CTRL_STS_IDLE != 0 {
        crb.write(CTRL_REQ, 4, u64::from(CTRL_REQ_CMD_READY));
        assert_eq!(read32(crb, CTRL_REQ) & CTRL_REQ_CMD_READY, 0, "cmdReady completes");
    }
    assert_eq!(read32(crb, CTRL_STS) & CTRL_STS_IDLE, 0, "ready");
    for (i, byte) in command.iter().enumerate() {
        crb.write(DATA_BUFFER + i as u64, 1, u64::from(*byte));
    }
    let buffer = CRB_BASE + DATA_BUFFER;
    crb.write(CTRL_CMD_HADDR, 4, buffer >> 32);
    crb.write(CTRL_CMD_LADDR, 4, buffer & 0xFFFF_FFFF);
    crb.write(CTRL_CMD_SIZE, 4, BUFFER_SIZE as u64);
    crb.write(CTRL_RSP_ADDR, 8, buffer);
    crb.write(CTRL_RSP_SIZE, 4, BUFFER_SIZE as u64);
    crb.write(CTRL_START, 4, u64::from(START_INVOKE));
    assert_eq!(read32(crb, CTRL_START) & START_INVOKE, 0, "the command completed");
    let header: Vec<u8> = (0..10).map(|i| crb.read(DATA_BUFFER + i, 1) as u8).collect();
    let size = u32::from_be_bytes(header[2..6].try_into().unwrap()) as u64;
    let mut response = header;
    response.extend((10..size).map(|i| crb.read(DATA_BUFFER + i, 1) as u8));
    crb.write(CTRL_REQ, 4, u64::from(CTRL_REQ_GO_IDLE));
    response
}

#[test]
fn registers_after_reset_are_what_edk2_and_linux_probe() {
    let mut crb = CrbDevice::new(Recorder::default());
    // EDK2 Tpm2IsPtpPresence: the first byte is not 0xFF.
    assert_ne!(crb.read(LOC_STATE, 1), 0xFF);
    assert_eq!(read32(&mut crb, LOC_STATE), 0x81, "regValid, not established, nothing assigned");
    // Tpm2GetPtpInterface: CRB type, CRB version, CapCRB.
    let id = crb.read(INTF_ID, 8);
    assert_eq!(id & 0xF, 1);
    assert_eq!((id >> 4) & 0xF, 1);
    assert_eq!((id >> 14) & 1, 1);
    assert_eq!((id >> 8) & 1, 0, "locality 0 only");
    // The FIFO InterfaceCapability register (0x14) reads 0 here.
    assert_eq!(read32(&mut crb, 0x14), 0);
    assert_eq!(read32(&mut crb, CTRL_STS), CTRL_STS_IDLE);
    assert_eq!(read32(&mut crb, CTRL_CMD_SIZE), 0xF80);
    assert_eq!(read32(&mut crb, CTRL_CMD_LADDR), 0xFED4_0080);
    assert_eq!(read32(&mut crb, CTRL_CMD_HADDR), 0);
    assert_eq!(read32(&mut crb, CTRL_RSP_SIZE), 0xF80);
    assert_eq!(crb.read(CTRL_RSP_ADDR, 8), 0xFED4_0080);
    // Reads past the page (an 8-byte read at the last byte) see zeroes.
    assert_eq!(crb.read(CRB_SIZE - 1, 8), 0);
}

#[test]
fn locality_requests_and_relinquish() {
    let mut crb = CrbDevice::new(Recorder::default());
    crb.write(LOC_CTRL, 4, u64::from(LOC_CTRL_REQUEST_ACCESS));
    assert_eq!(read32(&mut crb, LOC_STS) & LOC_STS_GRANTED, 1);
    assert_eq!(read32(&mut crb, LOC_STATE), 0x83);
    crb.write(LOC_CTRL, 4, u64::from(LOC_CTRL_RELINQUISH));
    assert_eq!(read32(&mut crb, LOC_STS), 0);
    assert_eq!(read32(&mut crb, LOC_STATE), 0x81);
}

#[test]
fn start_without_the_locality_runs_nothing() {
    let mut crb = CrbDevice::new(Recorder::default());
    crb.write(DATA_BUFFER, 8, 0x0C00_0000_0180);
    crb.write(CTRL_START, 4, 1);
    assert!(crb.tpm.commands.is_empty());
    assert_eq!(crb.stats().commands, 0);
}

#[test]
fn edk2_sequence_runs_startup_and_a_pcr_read_on_the_vtpm() {
    let mut crb = CrbDevice::new(service());
    crb.write(LOC_CTRL, 4, u64::from(LOC_CTRL_REQUEST_ACCESS));
    assert_eq!(edk2_command(&mut crb, &startup()), [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);
    let pcr_read = [0x80, 0x01, 0, 0, 0, 20, 0, 0, 1, 0x7E, 0, 0, 0, 1, 0, 0x0B, 3, 1, 0, 0];
    let response = edk2_command(&mut crb, &pcr_read);
    assert_eq!(response_code(&response), Some(0));
    assert!(response.ends_with(&[0u8; 32]));
    assert_eq!(read32(&mut crb, CTRL_STS), CTRL_STS_IDLE, "goIdle");
    let mut extend = vec![0x80, 0x02, 0, 0, 0, 65, 0, 0, 1, 0x82, 0, 0, 0, 16];
    extend.extend_from_slice(&[0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x0B]);
    extend.extend_from_slice(&[0xAB; 32]);
    assert_eq!(response_code(&edk2_command(&mut crb, &extend)), Some(0));
    let stats = crb.stats();
    assert_eq!((stats.commands, stats.pcr_extends), (3, 1));
    assert!(stats.accesses > 3 * 20, "EDK2 moves the bytes one access each");
}

#[test]
fn linux_sequence_with_wide_accesses() {
    let answer = vec![0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xAB, 0xCD];
    let mut crb = CrbDevice::new(Recorder { answer: answer.clone(), ..Recorder::default() });
    crb.write(LOC_CTRL, 4, u64::from(LOC_CTRL_REQUEST_ACCESS));
    crb.write(CTRL_REQ, 4, u64::from(CTRL_REQ_CMD_READY));
    // memcpy_toio: rep movsl, 4 bytes at a time.
    let command = startup();
    for (i, chunk) in command.chunks(4).enumerate() {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        crb.write(
            DATA_BUFFER + 4 * i as u64,
            chunk.len() as u8,
            u64::from(u32::from_le_bytes(word)),
        );
    }
    crb.write(CTRL_START, 4, 1);
    assert_eq!(crb.tpm.commands, [command]);
    // memcpy_fromio of the header, then the rest, 8 bytes at a time.
    let first = crb.read(DATA_BUFFER, 8).to_le_bytes();
    assert_eq!(&first, &answer[..8]);
    let second = crb.read(DATA_BUFFER + 8, 4).to_le_bytes();
    assert_eq!(&second[..4], &answer[8..]);
    // The rest of the buffer was cleared.
    assert_eq!(crb.read(DATA_BUFFER + 12, 8), 0);
}

#[test]
fn cancel_reads_back_and_changes_nothing_else() {
    let mut crb = CrbDevice::new(Recorder::default());
    crb.write(CTRL_CANCEL, 4, 1);
    assert_eq!(read32(&mut crb, CTRL_CANCEL), 1);
    crb.write(CTRL_CANCEL, 4, 0);
    assert_eq!(read32(&mut crb, CTRL_CANCEL), 0);
    assert!(crb.tpm.commands.is_empty());
}

#[test]
fn a_64_bit_write_across_cancel_and_start_reaches_both() {
    let mut crb = CrbDevice::new(Recorder {
        answer: vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0],
        ..Recorder::default()
    });
    crb.write(LOC_CTRL, 4, 1);
    crb.write(DATA_BUFFER, 8, u64::from_le_bytes([0x80, 1, 0, 0, 0, 12, 0, 0]));
    crb.write(CTRL_CANCEL, 8, 1 << 32);
    assert_eq!(crb.tpm.commands.len(), 1, "START in the upper half ran the command");
    assert_eq!(read32(&mut crb, CTRL_CANCEL), 0);
    // A write that misses a register's low byte does nothing.
    crb.write(CTRL_START + 1, 1, 0xFF);
    assert_eq!(crb.tpm.commands.len(), 1);
}

#[test]
fn bogus_size_fields_reach_the_tpm_which_rejects_them() {
    let mut crb = CrbDevice::new(service());
    crb.write(LOC_CTRL, 4, 1);
    for declared in [0u32, 5, 9, 0xF81, 0xFFFF_FFFF] {
        let mut command = startup();
        command[2..6].copy_from_slice(&declared.to_be_bytes());
        let response = edk2_command(&mut crb, &command);
        assert_eq!(response_code(&response), Some(TPM_RC_COMMAND_SIZE), "size {declared}");
    }
    // The TPM is fine afterwards.
    assert_eq!(edk2_command(&mut crb, &startup()), [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);
}

#[test]
fn oversize_responses_become_a_failure_response() {
    let mut crb =
        CrbDevice::new(Recorder { answer: vec![0x11; BUFFER_SIZE + 1], ..Recorder::default() });
    crb.write(LOC_CTRL, 4, 1);
    crb.write(CTRL_START, 4, 1);
    let head: Vec<u8> = (0..10).map(|i| crb.read(DATA_BUFFER + i, 1) as u8).collect();
    assert_eq!(head, error_response(TPM_RC_FAILURE));
}

#[test]
fn a_full_buffer_command_reaches_the_tpm_whole() {
    let mut crb = CrbDevice::new(Recorder { answer: startup(), ..Recorder::default() });
    crb.write(LOC_CTRL, 4, 1);
    let mut command = vec![0x5Au8; BUFFER_SIZE];
    command[2..6].copy_from_slice(&(BUFFER_SIZE as u32).to_be_bytes());
    for (i, byte) in command.iter().enumerate() {
        crb.write(DATA_BUFFER + i as u64, 1, u64::from(*byte));
    }
    crb.write(CTRL_START, 4, 1);
    assert_eq!(crb.tpm.commands, [command]);
}
