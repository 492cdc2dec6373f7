//! Feeds arbitrary command streams to one TPM and checks that every
//! response is well-formed; a panic, an abort or a hang is a finding.
//!
//! Input: records `[control u8][length u16 BE][length bytes]`, each one
//! command (a truncated last record is sent as it is). Control bits:
//! 0-1 client (4 clients), 2-4 locality (0-7: 5-7 are invalid),
//! 5 "fix the size field" (so most inputs get past the header check),
//! 6 "the client disconnects before this command", 7 "power-cycle first"
//! (then Startup(CLEAR) again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtpm::{ClientId, EntropyError, EntropySource, Tpm};

/// Deterministic "entropy" (splitmix64): the same input always does the same.
struct Counter(u64);

impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

const STARTUP_CLEAR: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0];

/// The answer to a bad command tag (TPM_ST_RSP_COMMAND, TPM_RC_BAD_TAG).
const BAD_TAG: [u8; 10] = [0x00, 0xC4, 0, 0, 0, 10, 0, 0, 0, 0x1E];

/// Commands whose response has a handle area (one handle) before the
/// parameters: CreatePrimary, HMAC_Start, Load, ContextLoad, LoadExternal,
/// StartAuthSession, HashSequenceStart, CreateLoaded.
const RESPONSE_HANDLE: [u32; 8] = [0x131, 0x15B, 0x157, 0x161, 0x167, 0x176, 0x186, 0x191];

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?)))
}

fn be32(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?)).ok()
}

/// A success response to a command with sessions: [handle] parameterSize,
/// parameters, then one or more TPMS_AUTH_RESPONSE (nonce, attributes,
/// hmac) filling the rest exactly. Returns a description of what is wrong.
fn sessions_layout_error(cc: u32, response: &[u8]) -> Option<&'static str> {
    let start = if RESPONSE_HANDLE.contains(&cc) { 14 } else { 10 };
    let Some(parameter_size) = be32(response, start) else {
        return Some("no parameterSize");
    };
    let mut at = start + 4 + parameter_size;
    if at >= response.len() {
        return Some("parameterSize leaves no authorization area");
    }
    while at < response.len() {
        let Some(nonce) = be16(response, at) else { return Some("truncated nonce") };
        at += 2 + nonce + 1;
        let Some(hmac) = be16(response, at) else { return Some("truncated session") };
        at += 2 + hmac;
    }
    (at != response.len()).then_some("authorization area overruns the response")
}

/// Size field equals the length, tag is NO_SESSIONS or SESSIONS, and an
/// error response is exactly a 10-byte NO_SESSIONS header (or the bad-tag
/// answer). A success response has the command's tag; with sessions, its
/// parameterSize and authorization area add up to the response size.
fn check(command: &[u8], response: &[u8]) {
    if response == BAD_TAG {
        return;
    }
    assert!(response.len() >= 10, "short response {response:02x?} to {command:02x?}");
    let tag = u16::from_be_bytes([response[0], response[1]]);
    let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]);
    let rc = u32::from_be_bytes([response[6], response[7], response[8], response[9]]);
    assert_eq!(size as usize, response.len(), "size field of {response:02x?} to {command:02x?}");
    assert!(tag == 0x8001 || tag == 0x8002, "tag of {response:02x?} to {command:02x?}");
    if rc != 0 {
        assert!(size == 10 && tag == 0x8001, "error response {response:02x?} to {command:02x?}");
        return;
    }
    let command_tag = u16::from_be_bytes([command[0], command[1]]);
    assert_eq!(tag, command_tag, "tag of success {response:02x?} to {command:02x?}");
    if tag == 0x8002 {
        let cc = u32::from_be_bytes([command[6], command[7], command[8], command[9]]);
        if let Some(error) = sessions_layout_error(cc, response) {
            panic!("{error}: {response:02x?} to {command:02x?}");
        }
    }
}

fn startup(tpm: &mut Tpm) {
    let response = tpm.execute(ClientId(0), 0, &STARTUP_CLEAR);
    check(&STARTUP_CLEAR, &response);
    assert_eq!(&response[6..10], &[0, 0, 0, 0], "Startup(CLEAR) after power-on failed");
}

fuzz_target!(|data: &[u8]| {
    let mut tpm = Tpm::manufacture(Box::new(Counter(0))).expect("the counter entropy never fails");
    tpm.power_on();
    startup(&mut tpm);
    let mut rest = data;
    while rest.len() >= 3 {
        let control = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        let end = (3 + len).min(rest.len());
        let mut command = rest[3..end].to_vec();
        rest = &rest[end..];
        let client = ClientId(u32::from(control & 3));
        let locality = (control >> 2) & 7;
        if control & 0x20 != 0 && command.len() >= 6 {
            let size = u32::try_from(command.len()).expect("at most 64 KiB");
            command[2..6].copy_from_slice(&size.to_be_bytes());
        }
        if control & 0x40 != 0 {
            tpm.client_gone(client);
        }
        if control & 0x80 != 0 {
            tpm.power_off();
            tpm.power_on();
            startup(&mut tpm);
        }
        let response = tpm.execute(client, locality, &command);
        check(&command, &response);
    }
});
