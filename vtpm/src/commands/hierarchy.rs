//! Hierarchy and dictionary-attack commands: HierarchyChangeAuth, HierarchyControl,
//! SetPrimaryPolicy, Clear, ClearControl, ChangeEPS, ChangePPS, DictionaryAttackLockReset,
//! DictionaryAttackParameters.

use zeroize::Zeroizing;

use crate::constants::*;
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::object::trim_auth;
use crate::rc::*;
use crate::state::{
    DEFAULT_LOCKOUT_RECOVERY, DEFAULT_MAX_TRIES, DEFAULT_RECOVERY_TIME, HierarchyAuth, Loaded,
    SEED_SIZE, Tpm,
};
use crate::types::parse_hash;

use super::end;

impl Tpm {
    fn fresh_secret(&mut self) -> Zeroizing<[u8; SEED_SIZE]> {
        let mut s = Zeroizing::new([0u8; SEED_SIZE]);
        self.random(&mut s[..]);
        s
    }

    /// Flushes transient and persistent objects of `hierarchy`.
    fn flush_hierarchy(&mut self, hierarchy: u32) {
        self.objects.retain(|_, t| match &t.item {
            Loaded::Object(o) => o.hierarchy != hierarchy,
            Loaded::Sequence(_) => true,
        });
        self.persistent.retain(|_, o| o.hierarchy != hierarchy);
    }

    fn auth_of(&mut self, handle: u32) -> &mut HierarchyAuth {
        match handle {
            TPM_RH_OWNER => &mut self.hier.owner,
            TPM_RH_ENDORSEMENT => &mut self.hier.endorsement,
            TPM_RH_PLATFORM => &mut self.hier.platform,
            _ => &mut self.hier.lockout,
        }
    }
}

/// TPM2_HierarchyChangeAuth.
pub fn hierarchy_change_auth(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let auth = r.tpm2b(64).param(1)?.to_vec();
    end(r)?;
    tpm.auth_of(c.handles[0]).auth = Zeroizing::new(trim_auth(&auth).to_vec());
    Ok(())
}

/// TPM2_HierarchyControl.
pub fn hierarchy_control(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let enable = r.u32().param(1)?;
    let state = r.bool().param(2)?;
    end(r)?;
    if ![TPM_RH_OWNER, TPM_RH_ENDORSEMENT, TPM_RH_PLATFORM, TPM_RH_PLATFORM_NV].contains(&enable) {
        return Err(at_param(TPM_RC_VALUE, 1));
    }
    let auth = c.handles[0];
    if auth != TPM_RH_PLATFORM && (state || enable != auth) {
        return Err(TPM_RC_AUTH_TYPE);
    }
    if state && enable != TPM_RH_PLATFORM && enable != TPM_RH_PLATFORM_NV && !tpm.hier.ph_enable {
        return Err(TPM_RC_HIERARCHY);
    }
    match enable {
        TPM_RH_OWNER => tpm.hier.sh_enable = state,
        TPM_RH_ENDORSEMENT => tpm.hier.eh_enable = state,
        TPM_RH_PLATFORM => tpm.hier.ph_enable = state,
        _ => tpm.hier.ph_enable_nv = state,
    }
    if !state && enable != TPM_RH_PLATFORM_NV {
        tpm.flush_hierarchy(enable);
    }
    Ok(())
}

/// TPM2_SetPrimaryPolicy.
pub fn set_primary_policy(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let policy = r.tpm2b(64).param(1)?.to_vec();
    let alg = parse_hash(r, true).param(2)?;
    end(r)?;
    let ok = match alg {
        None => policy.is_empty(),
        Some(a) => policy.len() == a.size(),
    };
    if !ok {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    let h = tpm.auth_of(c.handles[0]);
    h.policy = policy;
    h.policy_alg = alg;
    Ok(())
}

/// TPM2_Clear: new storage hierarchy, owner NV indices and objects removed, auths reset.
pub fn clear(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    if tpm.hier.disable_clear {
        return Err(TPM_RC_DISABLED);
    }
    tpm.hier.sps = tpm.fresh_secret();
    tpm.hier.sh_proof = tpm.fresh_secret();
    tpm.hier.eh_proof = tpm.fresh_secret();
    tpm.flush_hierarchy(TPM_RH_OWNER);
    tpm.flush_hierarchy(TPM_RH_ENDORSEMENT);
    tpm.nv.retain(|_, nv| nv.platform());
    tpm.hier.owner = HierarchyAuth::default();
    tpm.hier.endorsement = HierarchyAuth::default();
    tpm.hier.lockout = HierarchyAuth::default();
    tpm.hier.sh_enable = true;
    tpm.hier.eh_enable = true;
    tpm.da.failed_tries = 0;
    tpm.da.max_tries = DEFAULT_MAX_TRIES;
    tpm.da.recovery_time = DEFAULT_RECOVERY_TIME;
    tpm.da.lockout_recovery = DEFAULT_LOCKOUT_RECOVERY;
    tpm.primary_cache.clear();
    Ok(())
}

/// TPM2_ClearControl.
pub fn clear_control(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let disable = r.bool().param(1)?;
    end(r)?;
    if c.handles[0] == TPM_RH_LOCKOUT && !disable {
        return Err(TPM_RC_AUTH_FAIL);
    }
    tpm.hier.disable_clear = disable;
    Ok(())
}

/// TPM2_ChangeEPS.
pub fn change_eps(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    tpm.hier.eps = tpm.fresh_secret();
    tpm.hier.eh_proof = tpm.fresh_secret();
    tpm.flush_hierarchy(TPM_RH_ENDORSEMENT);
    tpm.hier.endorsement = HierarchyAuth::default();
    tpm.hier.eh_enable = true;
    tpm.primary_cache.clear();
    Ok(())
}

/// TPM2_ChangePPS.
pub fn change_pps(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    tpm.hier.pps = tpm.fresh_secret();
    tpm.hier.ph_proof = tpm.fresh_secret();
    tpm.flush_hierarchy(TPM_RH_PLATFORM);
    tpm.hier.platform.policy.clear();
    tpm.hier.platform.policy_alg = None;
    tpm.primary_cache.clear();
    Ok(())
}

/// TPM2_DictionaryAttackLockReset.
pub fn da_lock_reset(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    tpm.da.failed_tries = 0;
    Ok(())
}

/// TPM2_DictionaryAttackParameters.
pub fn da_parameters(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let max_tries = r.u32().param(1)?;
    let recovery = r.u32().param(2)?;
    let lockout_recovery = r.u32().param(3)?;
    end(r)?;
    tpm.da.max_tries = max_tries;
    tpm.da.recovery_time = recovery;
    tpm.da.lockout_recovery = lockout_recovery;
    tpm.da.failed_tries = 0;
    tpm.da.last_decrement = tpm.clock.time;
    Ok(())
}
