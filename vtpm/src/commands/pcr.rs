//! PCR_Extend, PCR_Event, PCR_Read, PCR_Reset, PCR_Allocate.

use alloc::vec::Vec;

use crate::constants::*;
use crate::crypto::hash::{ALL_HASHES, hash};
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::pcr::{ALLOCATABLE, extend_localities, locality_bit, reset_localities};
use crate::rc::*;
use crate::state::Tpm;
use crate::types::*;

use super::end;

fn check_extend(c: &Cmd, pcr: usize) -> TpmResult<()> {
    if extend_localities(pcr) & locality_bit(c.locality) == 0 {
        return Err(TPM_RC_LOCALITY);
    }
    Ok(())
}

/// TPM2_PCR_Extend.
pub fn extend(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let digests = parse_digest_values(r).param(1)?;
    end(r)?;
    let handle = c.handles[0];
    if handle == TPM_RH_NULL {
        return Ok(());
    }
    let pcr = handle as usize;
    check_extend(c, pcr)?;
    for (alg, d) in &digests {
        tpm.pcrs.extend(pcr, *alg, d);
    }
    Ok(())
}

/// TPM2_PCR_Event: hashes the event with every bank's algorithm and extends.
pub fn event(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_BUFFER).param(1)?;
    end(r)?;
    let handle = c.handles[0];
    if handle != TPM_RH_NULL {
        check_extend(c, handle as usize)?;
    }
    // One digest per implemented hash; only the allocated banks are extended.
    c.out.u32(ALL_HASHES.len() as u32);
    for alg in &ALL_HASHES {
        let d = hash(*alg, &[data]);
        c.out.u16(alg.alg()).bytes(&d);
        if handle != TPM_RH_NULL {
            tpm.pcrs.extend(handle as usize, *alg, &d);
        }
    }
    Ok(())
}

/// TPM2_PCR_Read: at most 8 digests; the returned selection shows what was read.
pub fn read(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let sel = PcrSelection::parse(r).param(1)?;
    end(r)?;
    let (out_sel, values) = tpm.read_pcrs(&sel, 8);
    c.out.u32(tpm.pcrs.update_counter);
    out_sel.write(&mut c.out);
    c.out.u32(values.len() as u32);
    for v in &values {
        c.out.tpm2b(v);
    }
    Ok(())
}

impl Tpm {
    /// Reads the selected PCRs (up to `max` values) in selection order.
    pub(crate) fn read_pcrs(&self, sel: &PcrSelection, max: usize) -> (PcrSelection, Vec<Vec<u8>>) {
        let mut out = PcrSelection::default();
        let mut values = Vec::new();
        for (alg, bits) in &sel.0 {
            let mut got = [0u8; PCR_SELECT_SIZE];
            if let Some(bank) = self.pcrs.bank(*alg) {
                for i in PcrSelection::indices(bits) {
                    if values.len() == max {
                        break;
                    }
                    values.push(bank.values[i].clone());
                    got[i / 8] |= 1 << (i % 8);
                }
            }
            out.0.push((*alg, got));
        }
        (out, values)
    }

    /// Digest of the selected PCR values (for PolicyPCR, Quote and creation data).
    pub(crate) fn pcr_digest(
        &self,
        alg: crate::crypto::hash::HashAlg,
        sel: &PcrSelection,
    ) -> Vec<u8> {
        let (_, values) = self.read_pcrs(sel, usize::MAX);
        let parts: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
        hash(alg, &parts)
    }
}

/// TPM2_PCR_Reset.
pub fn reset(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let pcr = c.handles[0] as usize;
    if reset_localities(pcr) & locality_bit(c.locality) == 0 {
        return Err(TPM_RC_LOCALITY);
    }
    tpm.pcrs.reset(pcr);
    tpm.pcrs.changed(pcr);
    Ok(())
}

/// TPM2_PCR_Allocate: takes effect at the next _TPM_Init.
pub fn allocate(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let sel = PcrSelection::parse(r).param(1)?;
    end(r)?;
    let mut new = tpm.pcr_allocation.clone();
    for (alg, bits) in &sel.0 {
        if !ALLOCATABLE.contains(alg) {
            return Err(at_param(TPM_RC_HASH, 1));
        }
        let on = bits.iter().any(|&b| b != 0);
        new.retain(|a| a != alg);
        if on {
            new.push(*alg);
        }
    }
    new.sort_by_key(|a| a.alg());
    let success = !new.is_empty();
    if success {
        tpm.pcr_allocation = new;
    }
    let per_bank: u32 = 24 * 64;
    c.out
        .u8(u8::from(success))
        .u32(PCR_COUNT as u32)
        .u32(per_bank * tpm.pcr_allocation.len() as u32)
        .u32(per_bank * ALLOCATABLE.len() as u32);
    Ok(())
}
