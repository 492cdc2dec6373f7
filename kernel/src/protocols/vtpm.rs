//! The vTPM protocol (SVSM protocol 2, spec §8): how an SNP-aware guest
//! (Linux's `tpm_svsm`, OVMF) talks to the SVSM's vTPM.
//!
//! - VTPM_QUERY: RCX = bitmap of the supported platform commands (bit 8,
//!   TPM_SEND_COMMAND, the only one; Linux requires it), RDX = features (0).
//! - VTPM_CMD: RCX = GPA of one buffer (at most a page, any alignment) that
//!   carries the request `{u32 command, u8 locality, u32 size, command
//!   bytes}` (packed, little-endian) and receives the response `{u32 size,
//!   response bytes}` in place.
//!
//! The buffer is hostile: it is read once through the checked guest memory
//! into SVSM memory (the guest cannot change the command while the TPM runs)
//! and the response is written back in one checked write. Both copies are
//! zeroed when dropped (commands and responses may carry secrets). A command larger
//! than the buffer can hold is answered by the TPM's own error,
//! TPM_RC_COMMAND_SIZE, as a real TPM answers an oversize command; a malformed
//! header is the SVSM's SVSM_ERR_INVALID_PARAMETER, an unusable GPA
//! SVSM_ERR_INVALID_ADDRESS.

use alloc::vec::Vec;

use abi::svsm::{
    SVSM_ERR_BUSY, SVSM_ERR_INVALID_ADDRESS, SVSM_ERR_INVALID_PARAMETER, SVSM_ERR_UNSUPPORTED_CALL,
    SVSM_SUCCESS, TPM_SEND_COMMAND, VTPM_BUFFER_SIZE, VTPM_CMD, VTPM_QUERY, VtpmCommandHeader,
    VtpmResponseHeader,
};
use zerocopy::IntoBytes;
use zeroize::Zeroizing;

use crate::guest_mem::{GuestMemory, read_obj};
use crate::vtpm::{self, TPM_RC_COMMAND_SIZE, TPM_RC_FAILURE, TPM_RC_MEMORY, TpmBackend};

/// VTPM_QUERY's bitmap: bit n set = platform command n supported.
pub const SUPPORTED_PLATFORM_COMMANDS: u64 = 1 << TPM_SEND_COMMAND;
/// VTPM_QUERY's feature word (none defined).
pub const SUPPORTED_FEATURES: u64 = 0;

/// Largest TPM command the buffer holds.
pub const MAX_TPM_COMMAND: usize = VTPM_BUFFER_SIZE - size_of::<VtpmCommandHeader>();
/// Largest TPM response the buffer holds.
pub const MAX_TPM_RESPONSE: usize = VTPM_BUFFER_SIZE - size_of::<VtpmResponseHeader>();

/// The call's registers: RCX in (VTPM_CMD: the buffer's GPA), RCX and RDX
/// out (VTPM_QUERY).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VtpmRegisters {
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
}

/// Handles call `call` of protocol 2; returns the result code for RAX.
pub fn handle(
    call: u32,
    regs: &mut VtpmRegisters,
    memory: &dyn GuestMemory,
    tpm: &mut dyn TpmBackend,
) -> u32 {
    let result = match call {
        VTPM_QUERY => {
            regs.rcx = SUPPORTED_PLATFORM_COMMANDS;
            regs.rdx = SUPPORTED_FEATURES;
            Ok(())
        }
        VTPM_CMD => send_command(regs.rcx, memory, tpm),
        _ => Err(SVSM_ERR_UNSUPPORTED_CALL),
    };
    result.err().unwrap_or(SVSM_SUCCESS)
}

fn send_command(gpa: u64, memory: &dyn GuestMemory, tpm: &mut dyn TpmBackend) -> Result<(), u32> {
    let request: VtpmCommandHeader = read_obj(memory, gpa).map_err(|_| SVSM_ERR_INVALID_ADDRESS)?;
    let (command, locality, size) = (request.command, request.locality, request.size);
    if command != TPM_SEND_COMMAND || locality != 0 {
        return Err(SVSM_ERR_INVALID_PARAMETER);
    }
    let size = size as usize;
    let response = if size > MAX_TPM_COMMAND {
        vtpm::error_response(TPM_RC_COMMAND_SIZE)
    } else {
        match read_command(memory, gpa, size)? {
            Some(command) => tpm.execute(locality, &command),
            None => vtpm::error_response(TPM_RC_MEMORY),
        }
    };
    write_response(memory, gpa, &response)
}

/// Copies the TPM command into SVSM memory; `None` if there is no memory
/// for the copy (the SVSM answers TPM_RC_MEMORY instead of aborting).
fn read_command(
    memory: &dyn GuestMemory,
    gpa: u64,
    size: usize,
) -> Result<Option<Zeroizing<Vec<u8>>>, u32> {
    let mut command = Zeroizing::new(Vec::new());
    if command.try_reserve_exact(size).is_err() {
        return Ok(None);
    }
    command.resize(size, 0);
    let at = gpa.checked_add(size_of::<VtpmCommandHeader>() as u64);
    let at = at.ok_or(SVSM_ERR_INVALID_ADDRESS)?;
    memory.read(at, &mut command).map_err(|_| SVSM_ERR_INVALID_ADDRESS)?;
    Ok(Some(command))
}

/// Writes `{size, response}` in one checked write (SVSM_ERR_BUSY if the
/// SVSM has no memory to assemble it).
fn write_response(memory: &dyn GuestMemory, gpa: u64, response: &[u8]) -> Result<(), u32> {
    let failure;
    let response = if response.len() > MAX_TPM_RESPONSE {
        log::error!("vTPM: a {} byte response does not fit the buffer", response.len());
        failure = vtpm::error_response(TPM_RC_FAILURE);
        &failure
    } else {
        response
    };
    let header = VtpmResponseHeader { size: response.len() as u32 };
    let mut out = Zeroizing::new(Vec::new());
    out.try_reserve_exact(size_of::<VtpmResponseHeader>() + response.len())
        .map_err(|_| SVSM_ERR_BUSY)?;
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(response);
    memory.write(gpa, &out).map_err(|_| SVSM_ERR_INVALID_ADDRESS)
}

#[cfg(test)]
mod tests;
