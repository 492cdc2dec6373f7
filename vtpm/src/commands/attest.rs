//! Attestation: Quote, Certify, CertifyCreation, GetTime, GetSessionAuditDigest, NV_Certify.
//! Each builds a TPMS_ATTEST and signs it with the signing key (or returns it unsigned for a
//! TPM_RH_NULL signer).

use alloc::vec::Vec;
use subtle::ConstantTimeEq;

use crate::constants::*;
use crate::crypto::hash::HashAlg;
use crate::crypto::kdf::kdfa;
use crate::dispatch::Cmd;
use crate::marshal::{Reader, Writer};
use crate::object::Object;
use crate::rc::*;
use crate::state::Tpm;
use crate::types::*;

use super::end;
use super::sign::{check_signing_key, resolve_scheme};

/// Firmware version reported in attestations (crate major.minor).
fn firmware_version() -> u64 {
    let major: u64 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
    let minor: u64 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
    major << 48 | minor << 32
}

/// The signer (None for TPM_RH_NULL) and the resolved scheme.
fn signer(
    tpm: &Tpm,
    c: &Cmd,
    handle: u32,
    n: u32,
    requested: Scheme,
    scheme_param: u32,
) -> TpmResult<Option<(Object, Scheme)>> {
    if handle == TPM_RH_NULL {
        return Ok(None);
    }
    let key = tpm.object(c.client, handle)?.shallow_with_keys();
    check_signing_key(&key).handle(n)?;
    let scheme = resolve_scheme(&key, requested).param(scheme_param)?;
    Ok(Some((key, scheme)))
}

impl Tpm {
    /// Writes the TPMS_ATTEST header and `attested`, signs it, and writes both to the response.
    fn attest(
        &mut self,
        c: &mut Cmd,
        signer: Option<(Object, Scheme)>,
        tag: u16,
        extra: &[u8],
        attested: &[u8],
    ) -> TpmResult<()> {
        let mut w = Writer::new();
        w.u32(TPM_GENERATED_VALUE).u16(tag);
        let mut fw = firmware_version();
        match &signer {
            Some((key, _)) => {
                w.tpm2b(&key.qualified_name).tpm2b(extra);
                if matches!(key.hierarchy, TPM_RH_ENDORSEMENT | TPM_RH_PLATFORM) {
                    self.write_clock_info(&mut w, None);
                } else {
                    // Privacy: counts are obfuscated for keys outside EH/PH (Part 3 §18.1).
                    let o = kdfa(
                        HashAlg::Sha256,
                        &self.hier.sh_proof[..],
                        b"OBFUSCATE",
                        &key.name,
                        &[],
                        128,
                    );
                    fw = fw.wrapping_add(u64::from_be_bytes(o[..8].try_into().expect("8 octets")));
                    let reset = u32::from_be_bytes(o[8..12].try_into().expect("4 octets"));
                    let restart = u32::from_be_bytes(o[12..16].try_into().expect("4 octets"));
                    self.write_clock_info(&mut w, Some((reset, restart)));
                }
            }
            None => {
                w.tpm2b(&[]).tpm2b(extra);
                self.write_clock_info(&mut w, None);
            }
        }
        w.u64(fw).bytes(attested);
        let attest = w.into_vec();
        let sig = match &signer {
            Some((key, scheme)) => self.sign_message(key, *scheme, &attest)?,
            None => Signature::Null,
        };
        c.out.tpm2b(&attest);
        sig.write(&mut c.out);
        Ok(())
    }
}

/// Resolves the signer `handle` and produces the signed attestation (shared with the audit
/// commands).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attest_with(
    tpm: &mut Tpm,
    c: &mut Cmd,
    handle: u32,
    n: u32,
    requested: Scheme,
    scheme_param: u32,
    tag: u16,
    extra: &[u8],
    attested: &[u8],
) -> TpmResult<()> {
    let s = signer(tpm, c, handle, n, requested, scheme_param)?;
    tpm.attest(c, s, tag, extra, attested)
}

/// TPM2_Quote.
pub fn quote(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let extra = r.tpm2b(64).param(1)?.to_vec();
    let requested = Scheme::parse_sig(r).param(2)?;
    let sel = PcrSelection::parse(r).param(3)?;
    end(r)?;
    let s = signer(tpm, c, c.handles[0], 1, requested, 2)?;
    let alg = s.as_ref().and_then(|(_, sc)| sc.hash).unwrap_or(HashAlg::Sha256);
    let (out_sel, _) = tpm.read_pcrs(&sel, usize::MAX);
    let digest = tpm.pcr_digest(alg, &sel);
    let mut w = Writer::new();
    out_sel.write(&mut w);
    w.tpm2b(&digest);
    tpm.attest(c, s, TPM_ST_ATTEST_QUOTE, &extra, &w.into_vec())
}

/// TPM2_Certify.
pub fn certify(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let extra = r.tpm2b(64).param(1)?.to_vec();
    let requested = Scheme::parse_sig(r).param(2)?;
    end(r)?;
    let obj = tpm.object(c.client, c.handles[0])?;
    let mut w = Writer::new();
    w.tpm2b(&obj.name).tpm2b(&obj.qualified_name);
    let s = signer(tpm, c, c.handles[1], 2, requested, 2)?;
    tpm.attest(c, s, TPM_ST_ATTEST_CERTIFY, &extra, &w.into_vec())
}

/// TPM2_CertifyCreation.
pub fn certify_creation(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let extra = r.tpm2b(64).param(1)?.to_vec();
    let creation_hash = r.tpm2b(64).param(2)?.to_vec();
    let requested = Scheme::parse_sig(r).param(3)?;
    let ticket = Ticket::parse(r, &[TPM_ST_CREATION]).param(4)?;
    end(r)?;
    let obj = tpm.object(c.client, c.handles[1])?;
    let alg = obj.name_alg()?;
    let expect = tpm.creation_ticket(ticket.hierarchy, alg, &obj.name, &creation_hash);
    if ticket.hierarchy == TPM_RH_NULL && ticket.digest.is_empty()
        || !bool::from(expect.digest.ct_eq(&ticket.digest))
    {
        return Err(at_param(TPM_RC_TICKET, 4));
    }
    let mut w = Writer::new();
    w.tpm2b(&obj.name).tpm2b(&creation_hash);
    let s = signer(tpm, c, c.handles[0], 1, requested, 3)?;
    tpm.attest(c, s, TPM_ST_ATTEST_CREATION, &extra, &w.into_vec())
}

/// TPM2_GetTime.
pub fn get_time(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let extra = r.tpm2b(64).param(1)?.to_vec();
    let requested = Scheme::parse_sig(r).param(2)?;
    end(r)?;
    let mut w = Writer::new();
    w.u64(tpm.clock.time);
    tpm.write_clock_info(&mut w, None);
    w.u64(firmware_version());
    let s = signer(tpm, c, c.handles[1], 2, requested, 2)?;
    tpm.attest(c, s, TPM_ST_ATTEST_TIME, &extra, &w.into_vec())
}

/// TPM2_GetSessionAuditDigest.
pub fn get_session_audit_digest(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let extra = r.tpm2b(64).param(1)?.to_vec();
    let requested = Scheme::parse_sig(r).param(2)?;
    end(r)?;
    let session = tpm.session(c.client, c.handles[2]).handle(3)?;
    let digest: Vec<u8> = if session.audit_digest.is_empty() {
        alloc::vec![0; session.hash.size()]
    } else {
        session.audit_digest.clone()
    };
    let mut w = Writer::new();
    w.u8(0).tpm2b(&digest);
    let s = signer(tpm, c, c.handles[1], 2, requested, 2)?;
    tpm.attest(c, s, TPM_ST_ATTEST_SESSION_AUDIT, &extra, &w.into_vec())
}

/// TPM2_NV_Certify.
pub fn nv_certify(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let extra = r.tpm2b(64).param(1)?.to_vec();
    let requested = Scheme::parse_sig(r).param(2)?;
    let size = r.u16().param(3)?;
    let offset = r.u16().param(4)?;
    end(r)?;
    let index = c.handles[2];
    let nv = tpm.nv.get(&index).ok_or(at_handle(TPM_RC_HANDLE, 3))?;
    tpm.check_nv_read(c, nv, c.handles[1])?;
    let end_at = usize::from(offset) + usize::from(size);
    if end_at > nv.data.len() || usize::from(size) > MAX_NV_BUFFER {
        return Err(TPM_RC_NV_RANGE);
    }
    let mut w = Writer::new();
    w.tpm2b(&nv.public.name()).u16(offset).tpm2b(&nv.data[usize::from(offset)..end_at]);
    let s = signer(tpm, c, c.handles[0], 1, requested, 2)?;
    tpm.attest(c, s, TPM_ST_ATTEST_NV, &extra, &w.into_vec())
}
