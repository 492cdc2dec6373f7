//! The vTPM service: the `vtpm` TPM 2.0 engine running inside the SVSM.
//!
//! One TPM per boot, manufactured fresh at start-up (seeds from the CPU's
//! RDSEED/RDRAND, [`entropy`]), with the endorsement key created from the
//! standard template ([`ek`]) so its public area can go into the attestation
//! manifest. Its whole state lives in SVSM-private memory, in its own bounded
//! arena ([`arena`]); the guest reaches it only through the SVSM: protocol 2
//! (`crate::protocols::vtpm`) and, on the dev platform, the emulated CRB
//! device (`crate::crb`). Both send commands through [`execute`], one at a
//! time under one lock, as client 0 (one guest is one TPM client).
//!
//! Failures never take the SVSM down: if manufacturing fails (no entropy) or
//! the engine outgrows its arena, the vTPM enters failure mode: it answers
//! TPM2_GetTestResult with TPM_RC_FAILURE as the test result and every other
//! command with TPM_RC_FAILURE, like a TPM whose self-test failed, while the
//! SVSM keeps serving everything else. [`shutdown`] drops the TPM and zeroes
//! its memory.

pub mod arena;
pub mod ek;
pub mod entropy;

use alloc::boxed::Box;
use alloc::vec::Vec;

use spin::Mutex;
use vtpm::{ClientId, EntropySource, Tpm};

/// The guest's client identity towards the engine.
pub const GUEST_CLIENT: ClientId = ClientId(0);

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_CC_STARTUP: u32 = 0x0000_0144;
const TPM_CC_SHUTDOWN: u32 = 0x0000_0145;
const TPM_CC_GET_TEST_RESULT: u32 = 0x0000_017C;
const TPM_CC_PCR_READ: u32 = 0x0000_017E;
const TPM_SU_CLEAR: u16 = 0x0000;
/// TPM_RC_FAILURE: the TPM is in failure mode.
pub const TPM_RC_FAILURE: u32 = 0x0101;
/// TPM_RC_COMMAND_SIZE: the command's size is wrong.
pub const TPM_RC_COMMAND_SIZE: u32 = 0x0142;
/// TPM_RC_MEMORY: out of memory (a warning: the command may be retried).
pub const TPM_RC_MEMORY: u32 = 0x0904;

/// Why the vTPM is in failure mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No entropy for the seeds.
    Entropy,
    /// The engine outgrew its memory share.
    OutOfMemory,
    /// A manufacturing step was refused (its command code and response code).
    Manufacture {
        /// The command.
        command: u32,
        /// The TPM's response code (0 if the response did not parse).
        rc: u32,
    },
    /// The vTPM was shut down.
    ShutDown,
}

impl Failure {
    /// One line for the log.
    pub fn describe(&self) -> alloc::string::String {
        match self {
            Failure::Entropy => "RDSEED/RDRAND gave no entropy for the seeds".into(),
            Failure::OutOfMemory => "the TPM outgrew its memory share".into(),
            Failure::Manufacture { command, rc } => {
                alloc::format!("manufacturing command {command:#x} failed with {rc:#x}")
            }
            Failure::ShutDown => "the vTPM was shut down".into(),
        }
    }
}

/// Where the engine's memory comes from while it runs: the kernel charges
/// it to the vTPM arena; host tests use doubles.
pub trait EngineMemory: Send {
    /// Runs `f` with the engine's allocations in its share; returns whether
    /// the share ran out while `f` ran.
    fn run(&self, f: &mut dyn FnMut()) -> bool;
}

/// The vTPM: a running TPM or the reason it failed.
pub struct VtpmService {
    state: State,
    ek_public: Option<Vec<u8>>,
    memory: Box<dyn EngineMemory>,
    commands: u64,
}

enum State {
    Running(Box<Tpm>),
    Failed(Failure),
}

impl core::fmt::Debug for VtpmService {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VtpmService")
            .field("failure", &self.failure())
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

impl VtpmService {
    /// Manufactures the TPM: seeds from `entropy`, power on, Startup,
    /// CreatePrimary(EK template L-1), FlushContext, Shutdown, and a TPM
    /// reset, so the guest finds a fresh TPM that needs TPM2_Startup. Any
    /// failure leaves the service in failure mode.
    pub fn manufacture(
        entropy: Box<dyn EntropySource + Send>,
        memory: Box<dyn EngineMemory>,
    ) -> VtpmService {
        let mut service = VtpmService::failed(Failure::Entropy, memory);
        let mut entropy = Some(entropy);
        let mut outcome = Err(Failure::Entropy);
        let overflowed = service.memory.run(&mut || {
            if let Some(entropy) = entropy.take() {
                outcome = manufacture(entropy);
            }
        });
        match outcome {
            Ok(_) if overflowed => service.fail(Failure::OutOfMemory),
            Ok((tpm, ek_public)) => {
                service.state = State::Running(tpm);
                service.ek_public = Some(ek_public);
            }
            Err(failure) => service.state = State::Failed(failure),
        }
        service
    }

    /// A vTPM that is in failure mode from the start (e.g. no memory for
    /// its arena).
    pub fn failed(failure: Failure, memory: Box<dyn EngineMemory>) -> VtpmService {
        VtpmService { state: State::Failed(failure), ek_public: None, memory, commands: 0 }
    }

    /// Runs one TPM command at `locality`; always returns a well-formed TPM
    /// response.
    pub fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        self.commands += 1;
        let State::Running(tpm) = &mut self.state else {
            return failure_mode_response(command);
        };
        let mut response = Vec::new();
        let overflowed =
            self.memory.run(&mut || response = tpm.execute(GUEST_CLIENT, locality, command));
        if overflowed {
            log::error!("vTPM: out of memory; entering failure mode");
            drop(response);
            self.fail(Failure::OutOfMemory);
            return error_response(TPM_RC_FAILURE);
        }
        response
    }

    /// Drops the TPM (inside the memory scope, so its blocks are wiped) and
    /// enters failure mode.
    pub fn fail(&mut self, failure: Failure) {
        let old = core::mem::replace(&mut self.state, State::Failed(failure));
        let ek = self.ek_public.take();
        let mut old = Some((old, ek));
        self.memory.run(&mut || drop(old.take()));
    }

    /// Why the vTPM is in failure mode, if it is.
    pub fn failure(&self) -> Option<Failure> {
        match self.state {
            State::Running(_) => None,
            State::Failed(failure) => Some(failure),
        }
    }

    /// The EK public area (TPMT_PUBLIC), unless in failure mode.
    pub fn ek_public(&self) -> Option<&[u8]> {
        self.ek_public.as_deref()
    }

    /// Commands executed so far.
    pub fn commands(&self) -> u64 {
        self.commands
    }

    /// PCR `index` of the bank with hash algorithm `alg`, as TPM2_PCR_Read
    /// reports it; `None` if the TPM refuses (not started, no such bank).
    pub fn read_pcr(&mut self, alg: u16, index: u32) -> Option<Vec<u8>> {
        if index >= 24 {
            return None;
        }
        let mut select = [0u8; 3];
        select[(index / 8) as usize] = 1 << (index % 8);
        let mut command = Vec::with_capacity(20);
        command.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
        command.extend_from_slice(&20u32.to_be_bytes());
        command.extend_from_slice(&TPM_CC_PCR_READ.to_be_bytes());
        command.extend_from_slice(&1u32.to_be_bytes());
        command.extend_from_slice(&alg.to_be_bytes());
        command.push(3);
        command.extend_from_slice(&select);
        let response = self.execute(0, &command);
        if response_code(&response) != Some(0) {
            return None;
        }
        // header 10, update counter 4, the selection (4 + 2 + 1 + 3 for one
        // bank), then TPML_DIGEST: count and one TPM2B_DIGEST.
        let digests = response.get(24..)?;
        let count = u32::from_be_bytes(digests.get(..4)?.try_into().ok()?);
        let size = usize::from(u16::from_be_bytes(digests.get(4..6)?.try_into().ok()?));
        if count != 1 {
            return None;
        }
        digests.get(6..6 + size).map(<[u8]>::to_vec)
    }
}

/// The manufacturing sequence; returns the TPM and the EK public area.
fn manufacture(entropy: Box<dyn EntropySource + Send>) -> Result<(Box<Tpm>, Vec<u8>), Failure> {
    let mut tpm = Box::new(Tpm::manufacture(entropy).map_err(|_| Failure::Entropy)?);
    tpm.power_on();
    let mut run = |command: Vec<u8>| {
        let code = u32::from_be_bytes([command[6], command[7], command[8], command[9]]);
        let response = tpm.execute(GUEST_CLIENT, 0, &command);
        match response_code(&response) {
            Some(0) => Ok(response),
            rc => Err(Failure::Manufacture { command: code, rc: rc.unwrap_or(0) }),
        }
    };
    run(su_command(TPM_CC_STARTUP))?;
    let created = ek::parse_create_primary(&run(ek::create_primary_command())?).map_err(|e| {
        let rc = match e {
            ek::EkError::Tpm(rc) => rc,
            ek::EkError::Malformed => 0,
        };
        Failure::Manufacture { command: 0x131, rc }
    })?;
    run(ek::flush_context_command(created.handle))?;
    run(su_command(TPM_CC_SHUTDOWN))?;
    tpm.reset();
    Ok((tpm, created.public))
}

/// TPM2_Startup / TPM2_Shutdown with TPM_SU_CLEAR.
fn su_command(code: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(12);
    c.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    c.extend_from_slice(&12u32.to_be_bytes());
    c.extend_from_slice(&code.to_be_bytes());
    c.extend_from_slice(&TPM_SU_CLEAR.to_be_bytes());
    c
}

/// The response code of a response, if it has a header.
pub fn response_code(response: &[u8]) -> Option<u32> {
    let bytes = response.get(6..10)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

/// A header-only response with `rc`.
pub fn error_response(rc: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(10);
    r.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
    r.extend_from_slice(&10u32.to_be_bytes());
    r.extend_from_slice(&rc.to_be_bytes());
    r
}

/// What a TPM in failure mode answers: TPM2_GetTestResult succeeds with an
/// empty outData and testResult = TPM_RC_FAILURE; everything else gets
/// TPM_RC_FAILURE (TPM 2.0 Part 1 "Failure Mode").
pub fn failure_mode_response(command: &[u8]) -> Vec<u8> {
    let code = command.get(6..10).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if code == Some(TPM_CC_GET_TEST_RESULT) && command.len() == 10 {
        let mut r = Vec::with_capacity(16);
        r.extend_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
        r.extend_from_slice(&16u32.to_be_bytes());
        r.extend_from_slice(&0u32.to_be_bytes());
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&TPM_RC_FAILURE.to_be_bytes());
        return r;
    }
    error_response(TPM_RC_FAILURE)
}

/// What runs TPM commands for a transport (protocol 2, the CRB device).
pub trait TpmBackend {
    /// Runs `command` at `locality` and returns the TPM's response.
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8>;
}

/// The SVSM's own vTPM (the one [`install`] set up).
#[derive(Debug, Default, Clone, Copy)]
pub struct SvsmVtpm;

impl TpmBackend for SvsmVtpm {
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        execute(locality, command)
    }
}

impl TpmBackend for VtpmService {
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        VtpmService::execute(self, locality, command)
    }
}

/// Lower-case hex of a byte string, for logs.
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The SVSM's vTPM (`None` until [`install`]).
static VTPM: Mutex<Option<VtpmService>> = Mutex::new(None);

/// Makes `service` the SVSM's vTPM.
pub fn install(service: VtpmService) {
    *VTPM.lock() = Some(service);
}

/// Runs one command on the SVSM's vTPM (failure mode if there is none).
pub fn execute(locality: u8, command: &[u8]) -> Vec<u8> {
    match VTPM.lock().as_mut() {
        Some(service) => service.execute(locality, command),
        None => failure_mode_response(command),
    }
}

/// The EK public area of the SVSM's vTPM, unless it is in failure mode.
pub fn ek_public() -> Option<Vec<u8>> {
    VTPM.lock().as_ref().and_then(|s| s.ek_public().map(<[u8]>::to_vec))
}

/// The PCR banks [`shutdown`] reports: name and TPM_ALG_ID.
pub const REPORTED_BANKS: [(&str, u16); 3] =
    [("sha1", 0x0004), ("sha256", 0x000B), ("sha384", 0x000C)];

/// Ends the vTPM: logs its PCRs as the TPM itself holds them (`vTPM PCR
/// <bank> <index> <hex>`, for the boot checks), drops the TPM (its blocks are
/// wiped as they are freed) and, in the kernel, zeroes its whole arena.
/// Later commands get failure mode responses.
pub fn shutdown() {
    // The CRB's figures first: the CRB takes its lock and then VTPM's to run
    // a command, so taking them in the other order here could deadlock with
    // a command on another CPU.
    let crb = crate::crb::stats();
    let mut vtpm = VTPM.lock();
    if let Some(service) = vtpm.as_mut() {
        log::info!("vTPM: {} commands executed", service.commands());
        if crb.commands > 0 {
            log::info!(
                "CRB: {} commands ({} PCR_Extend), {} emulated accesses ({} per command), {} TSC \
                 cycles per command in the TPM",
                crb.commands,
                crb.pcr_extends,
                crb.accesses,
                crb.accesses / crb.commands,
                crb.tpm_cycles / crb.commands
            );
        }
        for (bank, alg) in REPORTED_BANKS {
            for index in 0..24 {
                if let Some(value) = service.read_pcr(alg, index) {
                    log::info!("vTPM PCR {bank} {index} {}", Hex(&value));
                }
            }
        }
        #[cfg(target_os = "none")]
        log::info!(
            "vTPM: arena {} KiB in use at shutdown, peak {} KiB, of {} KiB",
            arena::VTPM_ARENA.used() / 1024,
            arena::VTPM_ARENA.peak() / 1024,
            arena::VTPM_ARENA.size() / 1024
        );
        service.fail(Failure::ShutDown);
    }
    #[cfg(target_os = "none")]
    {
        if arena::VTPM_ARENA.scrub() {
            log::info!("vTPM: shut down, {} KiB of state zeroed", arena::VTPM_ARENA.size() / 1024);
        } else {
            log::error!(
                "vTPM: shut down, but {} bytes of its arena are still allocated: not scrubbed",
                arena::VTPM_ARENA.used()
            );
        }
    }
}

#[cfg(target_os = "none")]
mod kernel;
#[cfg(target_os = "none")]
pub use kernel::init;

#[cfg(test)]
pub(crate) mod tests;
