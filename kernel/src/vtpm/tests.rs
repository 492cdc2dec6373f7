//! Host tests of the vTPM service with the real engine.

use core::sync::atomic::{AtomicU32, Ordering};

use alloc::sync::Arc;

use vtpm::EntropyError;

use super::*;

/// Deterministic "entropy" (SplitMix64), so runs are repeatable.
pub(crate) struct TestEntropy(pub u64);

impl EntropySource for TestEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for b in buf {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *b = (z ^ (z >> 31)) as u8;
        }
        Ok(())
    }
}

struct NoEntropy;

impl EntropySource for NoEntropy {
    fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
        Err(EntropyError)
    }
}

/// Memory that never runs out, counting how often the engine ran.
#[derive(Clone, Default)]
pub(crate) struct Unbounded(Arc<AtomicU32>);

impl EngineMemory for Unbounded {
    fn run(&self, f: &mut dyn FnMut()) -> bool {
        self.0.fetch_add(1, Ordering::Relaxed);
        f();
        false
    }
}

/// Memory that runs out during the `n`th run (counting from 1).
struct RunsOutAt(AtomicU32, u32);

impl EngineMemory for RunsOutAt {
    fn run(&self, f: &mut dyn FnMut()) -> bool {
        f();
        self.0.fetch_add(1, Ordering::Relaxed) + 1 == self.1
    }
}

/// A running vTPM with deterministic seeds.
pub(crate) fn service() -> VtpmService {
    VtpmService::manufacture(Box::new(TestEntropy(1)), Box::new(Unbounded::default()))
}

/// A TPM command with `tag`, `code` and `body`.
pub(crate) fn command(tag: u16, code: u32, body: &[u8]) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&tag.to_be_bytes());
    c.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
    c.extend_from_slice(&code.to_be_bytes());
    c.extend_from_slice(body);
    c
}

/// TPM2_Startup(CLEAR).
pub(crate) fn startup() -> Vec<u8> {
    command(0x8001, TPM_CC_STARTUP, &[0, 0])
}

fn get_test_result() -> Vec<u8> {
    command(0x8001, TPM_CC_GET_TEST_RESULT, &[])
}

/// PCR_Read of SHA-256 PCR 0.
fn pcr_read_sha256_0() -> Vec<u8> {
    command(0x8001, 0x17E, &[0, 0, 0, 1, 0x00, 0x0B, 3, 1, 0, 0])
}

#[test]
fn manufactured_tpm_waits_for_the_guests_startup() {
    let mut vtpm = service();
    assert_eq!(vtpm.failure(), None);
    assert_eq!(response_code(&vtpm.execute(0, &pcr_read_sha256_0())), Some(0x100), "INITIALIZE");
    assert_eq!(vtpm.execute(0, &startup()), [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);
    let read = vtpm.execute(0, &pcr_read_sha256_0());
    assert_eq!(response_code(&read), Some(0));
    // PCR 0 is still all zeroes: manufacturing measured nothing.
    assert_eq!(&read[read.len() - 32..], &[0u8; 32]);
    assert_eq!(vtpm.commands(), 3);
}

#[test]
fn ek_public_is_the_one_the_guest_recreates() {
    let mut vtpm = service();
    let published = vtpm.ek_public().expect("EK created at manufacture").to_vec();
    // The published area follows template L-1, with a real modulus.
    let template = ek::template();
    assert_eq!(published.len(), ek::EK_TEMPLATE_SIZE);
    assert_eq!(&published[..58], &template[..58]);
    assert!(published[58..].iter().any(|&b| b != 0), "unique holds the modulus");
    // A guest running tpm2_createek gets the same key.
    vtpm.execute(0, &startup());
    let created = ek::parse_create_primary(&vtpm.execute(0, &ek::create_primary_command()))
        .expect("the guest's CreatePrimary succeeds");
    assert_eq!(created.public, published);
    // A TPM with other seeds has another EK.
    let other = VtpmService::manufacture(Box::new(TestEntropy(2)), Box::new(Unbounded::default()));
    assert_ne!(other.ek_public(), Some(published.as_slice()));
}

#[test]
fn no_entropy_means_failure_mode() {
    let mut vtpm = VtpmService::manufacture(Box::new(NoEntropy), Box::new(Unbounded::default()));
    assert_eq!(vtpm.failure(), Some(Failure::Entropy));
    assert_eq!(vtpm.ek_public(), None);
    assert_eq!(
        vtpm.execute(0, &get_test_result()),
        [0x80, 0x01, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x01],
        "GetTestResult succeeds and reports TPM_RC_FAILURE"
    );
    assert_eq!(vtpm.execute(0, &startup()), error_response(TPM_RC_FAILURE));
}

#[test]
fn running_out_of_memory_during_a_command_fails_the_tpm_not_the_svsm() {
    // Run 1 is manufacturing; run 2 the guest's Startup; run 3 the PCR read.
    let memory = RunsOutAt(AtomicU32::new(0), 3);
    let mut vtpm = VtpmService::manufacture(Box::new(TestEntropy(3)), Box::new(memory));
    assert_eq!(response_code(&vtpm.execute(0, &startup())), Some(0));
    assert_eq!(vtpm.execute(0, &pcr_read_sha256_0()), error_response(TPM_RC_FAILURE));
    assert_eq!(vtpm.failure(), Some(Failure::OutOfMemory));
    assert_eq!(vtpm.ek_public(), None, "the manifest no longer offers a dead TPM's EK");
    assert_eq!(vtpm.execute(0, &pcr_read_sha256_0()), error_response(TPM_RC_FAILURE));
}

#[test]
fn running_out_of_memory_while_manufacturing_fails_the_tpm() {
    let memory = RunsOutAt(AtomicU32::new(0), 1);
    let vtpm = VtpmService::manufacture(Box::new(TestEntropy(4)), Box::new(memory));
    assert_eq!(vtpm.failure(), Some(Failure::OutOfMemory));
}

#[test]
fn failure_mode_answers_garbage_with_a_well_formed_failure() {
    for garbage in [&[][..], &[0x80], &[0xFF; 9], &[0x80, 0x01, 0, 0, 0, 10, 0, 0, 1, 0x7C, 0]] {
        assert_eq!(failure_mode_response(garbage), error_response(TPM_RC_FAILURE));
    }
}

#[test]
fn hostile_commands_get_tpm_errors_from_a_running_tpm() {
    let mut vtpm = service();
    vtpm.execute(0, &startup());
    for garbage in [&[][..], &[0x80], &[0xFF; 9], &[0x80, 0x01, 0, 0, 0xFF, 0xFF, 0, 0, 1, 0x7E]] {
        let response = vtpm.execute(0, garbage);
        assert_ne!(response_code(&response), Some(0), "{garbage:02x?}");
        assert_eq!(u32::from_be_bytes(response[2..6].try_into().unwrap()) as usize, response.len());
    }
    assert_eq!(vtpm.failure(), None, "bad commands do not break the TPM");
}

#[test]
fn the_global_vtpm_executes_and_shuts_down() {
    install(service());
    assert_eq!(response_code(&execute(0, &startup())), Some(0));
    assert!(ek_public().is_some());
    shutdown();
    assert_eq!(execute(0, &pcr_read_sha256_0()), error_response(TPM_RC_FAILURE));
    assert_eq!(ek_public(), None);
    let test_result = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x7C];
    assert_eq!(execute(0, &test_result)[12..], [0, 0, 0x01, 0x01], "failure mode after shutdown");
}

#[test]
fn pcrs_read_back_per_bank_as_extended() {
    let mut vtpm = service();
    assert_eq!(vtpm.read_pcr(0x000B, 0), None, "not started yet");
    vtpm.execute(0, &startup());
    assert_eq!(vtpm.read_pcr(0x000B, 7), Some(vec![0u8; 32]));
    assert_eq!(vtpm.read_pcr(0x0004, 7), Some(vec![0u8; 20]));
    assert_eq!(vtpm.read_pcr(0x000C, 23), Some(vec![0u8; 48]));
    assert_eq!(vtpm.read_pcr(0x000B, 24), None);
    assert_eq!(vtpm.read_pcr(0x0012, 0), None, "no SM3 bank");
    // PCR_Event(7, "x") extends every bank with the data's digest.
    let event =
        command(0x8002, 0x13C, &[0, 0, 0, 7, 0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, 0, 1, b'x']);
    assert_eq!(response_code(&vtpm.execute(0, &event)), Some(0));
    let expected: [u8; 32] = {
        use sha2::Digest;
        let data: [u8; 32] = sha2::Sha256::digest(b"x").into();
        sha2::Sha256::new().chain_update([0u8; 32]).chain_update(data).finalize().into()
    };
    assert_eq!(vtpm.read_pcr(0x000B, 7), Some(expected.to_vec()));
}

#[test]
fn hex_formats_lower_case() {
    assert_eq!(alloc::format!("{}", Hex(&[0x00, 0xAB, 0x7F])), "00ab7f");
}
