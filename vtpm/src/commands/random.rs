//! GetRandom and StirRandom.

use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::rc::*;
use crate::state::Tpm;
use crate::types::MAX_SYM_DATA;

use super::end;

/// TPM2_GetRandom: at most 64 octets (the largest digest) per call.
pub fn get_random(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let n = usize::from(r.u16().param(1)?).min(crate::crypto::hash::MAX_DIGEST_SIZE);
    end(r)?;
    let bytes = tpm.random_vec(n);
    c.out.tpm2b(&bytes);
    Ok(())
}

/// TPM2_StirRandom.
pub fn stir_random(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_SYM_DATA).param(1)?;
    end(r)?;
    tpm.drbg.reseed(data);
    Ok(())
}
