//! EncryptDecrypt and EncryptDecrypt2 (AES-CFB).

use crate::constants::*;
use crate::crypto::sym::{AES_BLOCK, aes_cfb};
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::rc::*;
use crate::state::Tpm;
use crate::types::*;

use super::end;

/// TPMI_ALG_CIPHER_MODE+: only CFB (or NULL = the key's mode) is implemented; returns
/// whether CFB was named explicitly.
fn parse_mode(r: &mut Reader) -> TpmResult<bool> {
    match r.u16()? {
        TPM_ALG_CFB => Ok(true),
        TPM_ALG_NULL => Ok(false),
        _ => Err(TPM_RC_MODE),
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    tpm: &mut Tpm,
    c: &mut Cmd,
    decrypt: bool,
    cfb: bool,
    mode_param: u32,
    iv: &[u8],
    data: &[u8],
    iv_param: u32,
) -> TpmResult<()> {
    let key = tpm.object(c.client, c.handles[0])?;
    // A key without a mode needs one from the caller.
    if !cfb && matches!(key.public.sym(), SymDef::AesAnyMode(_)) {
        return Err(at_param(TPM_RC_MODE, mode_param));
    }
    if key.public.kind != TPM_ALG_SYMCIPHER {
        return Err(at_handle(TPM_RC_KEY, 1));
    }
    if key.public.has(OA_RESTRICTED) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    let allowed = if decrypt { key.public.has(OA_DECRYPT) } else { key.public.has(OA_SIGN) };
    if !allowed {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    let iv: [u8; AES_BLOCK] = iv.try_into().map_err(|_| at_param(TPM_RC_SIZE, iv_param))?;
    let secret = &key.sensitive.as_ref().ok_or(at_handle(TPM_RC_KEY, 1))?.secret;
    let mut out = data.to_vec();
    let iv_out = aes_cfb(secret, &iv, &mut out, !decrypt);
    c.out.tpm2b(&out).tpm2b(&iv_out);
    Ok(())
}

/// TPM2_EncryptDecrypt.
pub fn encrypt_decrypt(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let decrypt = r.bool().param(1)?;
    let cfb = parse_mode(r).param(2)?;
    let iv = r.tpm2b(16).param(3)?.to_vec();
    let data = r.tpm2b(MAX_BUFFER).param(4)?.to_vec();
    end(r)?;
    run(tpm, c, decrypt, cfb, 2, &iv, &data, 3)
}

/// TPM2_EncryptDecrypt2 (the data first, so it can be parameter-encrypted).
pub fn encrypt_decrypt2(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_BUFFER).param(1)?.to_vec();
    let decrypt = r.bool().param(2)?;
    let cfb = parse_mode(r).param(3)?;
    let iv = r.tpm2b(16).param(4)?.to_vec();
    end(r)?;
    run(tpm, c, decrypt, cfb, 3, &iv, &data, 4)
}
