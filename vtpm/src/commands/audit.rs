//! Command audit (SetCommandCodeAuditStatus, GetCommandAuditDigest) and the physical-presence
//! command list (PP_Commands). TPM2_SetCommandCodeAuditStatus is always audited and
//! TPM2_PP_Commands always requires physical presence (Part 3 §21.2, §26.2).

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use crate::constants::*;
use crate::crypto::hash::{HashAlg, hash};
use crate::dispatch::{Cmd, find};
use crate::marshal::{Reader, Writer};
use crate::rc::*;
use crate::state::Tpm;
use crate::types::*;

use super::end;

pub const CC_SET_COMMAND_CODE_AUDIT_STATUS: u32 = 0x140;
pub const CC_PP_COMMANDS: u32 = 0x12D;

/// Command audit state.
pub struct CommandAudit {
    pub alg: HashAlg,
    /// Empty when reset (the next audited command increments the counter).
    pub digest: Vec<u8>,
    pub counter: u64,
    pub commands: BTreeSet<u32>,
    /// The command being executed changed the digest algorithm: it is not audited itself
    /// (the reference implementation's special case), the digest stays reset.
    pub alg_changed: bool,
}

impl Default for CommandAudit {
    fn default() -> Self {
        CommandAudit {
            alg: HashAlg::Sha256,
            digest: Vec::new(),
            counter: 0,
            commands: [CC_SET_COMMAND_CODE_AUDIT_STATUS].into_iter().collect(),
            alg_changed: false,
        }
    }
}

impl Tpm {
    /// Extends the command audit digest for an audited command that succeeded.
    pub(crate) fn audit_command(&mut self, cp_hash: &[u8], rp_hash: &[u8]) {
        let a = &mut self.audit;
        if core::mem::take(&mut a.alg_changed) {
            return;
        }
        if a.digest.is_empty() {
            a.counter += 1;
            a.digest = alloc::vec![0; a.alg.size()];
        }
        a.digest = hash(a.alg, &[&a.digest, cp_hash, rp_hash]);
    }
}

fn parse_cc_list(r: &mut Reader, n: u32) -> TpmResult<Vec<u32>> {
    let count = r.u32().param(n)?;
    if count > 256 {
        return Err(at_param(TPM_RC_SIZE, n));
    }
    (0..count).map(|_| r.u32().param(n)).collect()
}

/// TPM2_SetCommandCodeAuditStatus.
pub fn set_command_code_audit_status(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let alg = parse_hash(r, true).param(1)?;
    let set = parse_cc_list(r, 2)?;
    let clear = parse_cc_list(r, 3)?;
    end(r)?;
    if let Some(alg) = alg.filter(|a| *a != tpm.audit.alg) {
        if !set.is_empty() || !clear.is_empty() {
            return Err(at_param(TPM_RC_VALUE, 1));
        }
        tpm.audit.alg = alg;
        tpm.audit.digest.clear();
        tpm.audit.alg_changed = true;
        return Ok(());
    }
    for cc in set.into_iter().filter(|cc| find(*cc).is_some()) {
        tpm.audit.commands.insert(cc);
    }
    for cc in clear.into_iter().filter(|cc| *cc != CC_SET_COMMAND_CODE_AUDIT_STATUS) {
        tpm.audit.commands.remove(&cc);
    }
    Ok(())
}

/// TPM2_GetCommandAuditDigest: signs the audit state, then resets the digest.
pub fn get_command_audit_digest(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let extra = r.tpm2b(64).param(1)?.to_vec();
    let requested = Scheme::parse_sig(r).param(2)?;
    end(r)?;
    let a = &tpm.audit;
    let list: Vec<u8> = a.commands.iter().flat_map(|cc| cc.to_be_bytes()).collect();
    let mut w = Writer::new();
    let digest = if a.digest.is_empty() { alloc::vec![0; a.alg.size()] } else { a.digest.clone() };
    w.u64(a.counter).u16(a.alg.alg()).tpm2b(&digest).tpm2b(&hash(a.alg, &[&list]));
    super::attest::attest_with(
        tpm,
        c,
        c.handles[1],
        2,
        requested,
        2,
        TPM_ST_ATTEST_COMMAND_AUDIT,
        &extra,
        &w.into_vec(),
    )?;
    tpm.audit.digest.clear();
    Ok(())
}

/// TPM2_PP_Commands.
pub fn pp_commands(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let set = parse_cc_list(r, 1)?;
    let clear = parse_cc_list(r, 2)?;
    end(r)?;
    for cc in set.into_iter().filter(|cc| find(*cc).is_some()) {
        tpm.pp_commands.insert(cc);
    }
    for cc in clear.into_iter().filter(|cc| *cc != CC_PP_COMMANDS) {
        tpm.pp_commands.remove(&cc);
    }
    Ok(())
}
