//! Startup, Shutdown and the self-test commands.

use crate::capability;
use crate::constants::*;
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::pcr::{Pcrs, state_saved};
use crate::rc::*;
use crate::selftest::{self, Test};
use crate::session::SessionSlot;
use crate::state::{SavedState, Tpm};
use crate::types::PCR_COUNT;

use super::end;

/// TPM2_Startup.
pub fn startup(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let su = r.u16().param(1)?;
    end(r)?;
    if tpm.started {
        return Err(TPM_RC_INITIALIZE);
    }
    match su {
        TPM_SU_CLEAR => {}
        TPM_SU_STATE if tpm.saved_state.is_some() => {}
        _ => return Err(at_param(TPM_RC_VALUE, 1)),
    }
    // The algorithms PCRs and sessions use are tested before the TPM starts.
    tpm.run_self_tests(&selftest::AT_STARTUP, false).map_err(|_| TPM_RC_FAILURE)?;
    let saved = tpm.saved_state.take();
    match (su, saved) {
        (TPM_SU_STATE, Some(saved)) => {
            // TPM Resume.
            tpm.pcrs = saved.pcrs;
            // Only PCR 0-15 are saved (TPM_PT_PCR_SAVE); the others restart.
            let fresh = Pcrs::new(&tpm.pcr_allocation);
            for (bank, new) in tpm.pcrs.banks.iter_mut().zip(fresh.banks) {
                bank.values[16..].clone_from_slice(&new.values[16..]);
            }
            for i in (0..PCR_COUNT).filter(|&i| !state_saved(i)) {
                tpm.pcrs.changed(i);
            }
            tpm.clock.restart_count = tpm.clock.restart_count.wrapping_add(1);
        }
        (_, saved) => {
            let counter = if saved.is_some() {
                // TPM Restart.
                tpm.clock.restart_count = tpm.clock.restart_count.wrapping_add(1);
                tpm.pcrs.update_counter
            } else {
                tpm_reset(tpm);
                0
            };
            reset_pcrs(tpm, c.locality);
            tpm.pcrs.update_counter = counter;
            for i in 0..PCR_COUNT {
                tpm.pcrs.changed(i);
            }
            tpm.hier.platform = Default::default();
            tpm.hier.ph_enable = true;
            tpm.hier.sh_enable = true;
            tpm.hier.eh_enable = true;
            tpm.hier.ph_enable_nv = true;
            for nv in tpm.nv.values_mut() {
                let a = &mut nv.public.attributes;
                if *a & NV_WRITE_STCLEAR != 0 {
                    *a &= !NV_WRITELOCKED;
                }
                if *a & NV_READ_STCLEAR != 0 {
                    *a &= !NV_READLOCKED;
                }
                if *a & NV_CLEAR_STCLEAR != 0 {
                    *a &= !NV_WRITTEN;
                }
            }
        }
    }
    tpm.global_write_lock = false;
    tpm.prev_orderly = tpm.orderly;
    tpm.orderly = false;
    tpm.started = true;
    Ok(())
}

/// TPM Reset: new null hierarchy, counters, and all saved contexts become invalid.
fn tpm_reset(tpm: &mut Tpm) {
    tpm.clock.reset_count = tpm.clock.reset_count.wrapping_add(1);
    tpm.clock.restart_count = 0;
    let mut fresh = zeroize::Zeroizing::new([0u8; crate::state::SEED_SIZE]);
    tpm.random(&mut fresh[..]);
    tpm.hier.null_seed = fresh.clone();
    tpm.random(&mut fresh[..]);
    tpm.hier.null_proof = fresh.clone();
    tpm.random(&mut fresh[..]);
    tpm.context_proof = fresh;
    tpm.sessions.clear();
    tpm.da.lockout_auth_blocked_until = None;
    tpm.reset_commits();
}

/// PCRs to their reset values; PCR 0 records a locality-3 startup or keeps an H-CRTM value.
fn reset_pcrs(tpm: &mut Tpm, locality: u8) {
    let keep0 = tpm.hcrtm_done;
    let old0: Vec<Vec<u8>> = tpm.pcrs.banks.iter().map(|b| b.values[0].clone()).collect();
    tpm.pcrs = Pcrs::new(&tpm.pcr_allocation);
    for (bank, old) in tpm.pcrs.banks.iter_mut().zip(old0) {
        if keep0 {
            bank.values[0] = old;
        } else if locality == 3 {
            let last = bank.values[0].len() - 1;
            bank.values[0][last] = 3;
        }
    }
}

use alloc::vec::Vec;

/// TPM2_Shutdown.
pub fn shutdown(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let su = r.u16().param(1)?;
    end(r)?;
    match su {
        TPM_SU_CLEAR => tpm.saved_state = None,
        TPM_SU_STATE => tpm.saved_state = Some(SavedState { pcrs: tpm.pcrs.clone() }),
        _ => return Err(at_param(TPM_RC_VALUE, 1)),
    }
    // Sessions that are still loaded do not survive the power cycle anyway.
    tpm.sessions.retain(|_, s| matches!(s, SessionSlot::Saved { .. }) || su == TPM_SU_STATE);
    tpm.orderly = true;
    Ok(())
}

/// TPM2_SelfTest: runs every known-answer test (fullTest = YES) or those not yet run.
pub fn self_test(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let full = r.bool().param(1)?;
    end(r)?;
    tpm.run_self_tests(&selftest::ALL, full).map_err(|_| TPM_RC_FAILURE)
}

/// TPM2_IncrementalSelfTest: tests the algorithms of toTest (those not yet tested) and returns
/// the algorithms still untested (toDoList).
pub fn incremental_self_test(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let count = r.u32().param(1)?;
    if count > MAX_ALG_LIST {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    let mut tests = Vec::new();
    for _ in 0..count {
        let alg = r.u16().param(1)?;
        // TPM_ALG_NULL is no algorithm to test (TPM_RC_VALUE, as the reference answers).
        if alg == TPM_ALG_NULL || !capability::implemented(alg) {
            return Err(at_param(TPM_RC_VALUE, 1));
        }
        // Implemented algorithms without a test of their own (XOR, KEYEDHASH, ...) need none.
        tests.extend(Test::for_algorithm(alg));
    }
    end(r)?;
    tpm.run_self_tests(&tests, false).map_err(|_| TPM_RC_FAILURE)?;
    let to_do = tpm.self_tests.untested_algorithms();
    c.out.u32(to_do.len() as u32);
    for alg in to_do {
        c.out.u16(alg);
    }
    Ok(())
}

/// Largest TPML_ALG (MAX_ALG_LIST_SIZE).
const MAX_ALG_LIST: u32 = 64;

/// TPM2_GetTestResult: TPM_RC_FAILURE (outData: the failed test's algorithms) in failure mode,
/// TPM_RC_NEEDS_TEST while some test has not run, else TPM_RC_SUCCESS.
pub fn get_test_result(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let tests = &tpm.self_tests;
    let (out_data, result): (&[u16], _) = match tests.failed {
        Some(test) => (test.algorithms(), TPM_RC_FAILURE),
        None if tests.all_passed() => (&[], TPM_RC_SUCCESS),
        None => (&[], TPM_RC_NEEDS_TEST),
    };
    c.out.u16(2 * out_data.len() as u16);
    for alg in out_data {
        c.out.u16(*alg);
    }
    c.out.u32(result);
    Ok(())
}
