//! Hash, HMAC and the hash/HMAC/event sequence commands.

use alloc::boxed::Box;
use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::hash::{ALL_HASHES, HashAlg, Hasher, HmacState, hmac};
use crate::dispatch::Cmd;
use crate::marshal::{Reader, Writer};
use crate::object::{Object, trim_auth};
use crate::rc::*;
use crate::state::{Loaded, MAX_LOADED_OBJECTS, Sequence, SequenceKind, Tpm, Transient};
use crate::types::*;

use super::{end, parse_hierarchy};

impl Tpm {
    /// TPMT_TK_HASHCHECK for `digest` (a NULL ticket for the NULL hierarchy or data that
    /// starts with TPM_GENERATED_VALUE).
    pub(crate) fn hash_ticket(
        &self,
        hierarchy: u32,
        alg: HashAlg,
        digest: &[u8],
        safe: bool,
    ) -> Ticket {
        if hierarchy == TPM_RH_NULL || !safe {
            return Ticket::null(TPM_ST_HASHCHECK);
        }
        let d = hmac(alg, self.proof(hierarchy), &[&TPM_ST_HASHCHECK.to_be_bytes(), digest]);
        Ticket { tag: TPM_ST_HASHCHECK, hierarchy, digest: d }
    }

    /// Adds a transient object for `client`, enforcing the per-client slot limit.
    pub(crate) fn add_transient(
        &mut self,
        client: crate::ClientId,
        item: Loaded,
    ) -> TpmResult<u32> {
        if self.loaded_objects_of(client) >= MAX_LOADED_OBJECTS {
            return Err(TPM_RC_OBJECT_MEMORY);
        }
        let h = self.new_object_handle();
        self.objects.insert(h, Transient { owner: client, item });
        Ok(h)
    }
}

fn generated(data: &[u8]) -> bool {
    data.len() >= 4 && data[..4] == TPM_GENERATED_VALUE.to_be_bytes()
}

/// TPM2_Hash.
pub fn hash(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_BUFFER).param(1)?;
    let alg = parse_hash_required(r).param(2)?;
    let hierarchy = parse_hierarchy(tpm, r, true).param(3)?;
    end(r)?;
    let digest = crate::crypto::hash::hash(alg, &[data]);
    let ticket = tpm.hash_ticket(hierarchy, alg, &digest, !generated(data));
    c.out.tpm2b(&digest);
    ticket.write(&mut c.out);
    Ok(())
}

/// The HMAC algorithm for a keyed-hash signing key and a requested hash (NULL = the key's).
fn hmac_alg(key: &Object, requested: Option<HashAlg>) -> TpmResult<HashAlg> {
    if key.public.kind != TPM_ALG_KEYEDHASH || key.sensitive.is_none() {
        return Err(at_handle(TPM_RC_TYPE, 1));
    }
    if !key.public.has(OA_SIGN) {
        return Err(at_handle(TPM_RC_KEY, 1));
    }
    if key.public.has(OA_RESTRICTED) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    let scheme = key.public.scheme();
    match (scheme.hash, requested) {
        (Some(k), Some(req)) if k != req => Err(TPM_RC_VALUE),
        (Some(k), _) => Ok(k),
        (None, Some(req)) => Ok(req),
        (None, None) => Err(TPM_RC_VALUE),
    }
}

/// TPM2_HMAC.
pub fn hmac_cmd(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_BUFFER).param(1)?;
    let requested = parse_hash(r, true).param(2)?;
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?;
    let alg = hmac_alg(key, requested).map_err(|rc| at_param(rc, 2))?;
    let secret = &key.sensitive.as_ref().expect("checked").secret;
    let mac = hmac(alg, secret, &[data]);
    c.out.tpm2b(&mac);
    Ok(())
}

fn start_sequence(tpm: &mut Tpm, c: &Cmd, kind: SequenceKind, auth: &[u8]) -> TpmResult<u32> {
    let seq = Sequence { kind, auth: Zeroizing::new(trim_auth(auth).to_vec()), first: Vec::new() };
    tpm.add_transient(c.client, Loaded::Sequence(Box::new(seq)))
}

/// TPM2_HashSequenceStart (TPM_ALG_NULL starts an event sequence).
pub fn hash_sequence_start(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let auth = r.tpm2b(64).param(1)?;
    let alg = parse_hash(r, true).param(2)?;
    end(r)?;
    let kind = match alg {
        Some(a) => SequenceKind::Hash(Hasher::new(a)),
        None => SequenceKind::Event(ALL_HASHES.iter().map(|a| Hasher::new(*a)).collect()),
    };
    let h = start_sequence(tpm, c, kind, auth)?;
    c.out_handle = Some(h);
    Ok(())
}

/// TPM2_HMAC_Start.
pub fn hmac_start(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let auth = r.tpm2b(64).param(1)?;
    let requested = parse_hash(r, true).param(2)?;
    end(r)?;
    let key = tpm.object(c.client, c.handles[0])?;
    let alg = hmac_alg(key, requested).map_err(|rc| at_param(rc, 2))?;
    let state = HmacState::new(alg, &key.sensitive.as_ref().expect("checked").secret);
    let h = start_sequence(tpm, c, SequenceKind::Hmac(state), auth)?;
    c.out_handle = Some(h);
    Ok(())
}

fn update(seq: &mut Sequence, data: &[u8]) {
    if seq.first.len() < 4 {
        let take = (4 - seq.first.len()).min(data.len());
        seq.first.extend_from_slice(&data[..take]);
    }
    match &mut seq.kind {
        SequenceKind::Hash(h) => {
            h.update(data);
        }
        SequenceKind::Hmac(h) => h.update(data),
        SequenceKind::Event(hs) => {
            for h in hs {
                h.update(data);
            }
        }
    }
}

/// TPM2_SequenceUpdate.
pub fn sequence_update(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_BUFFER).param(1)?;
    end(r)?;
    let seq = tpm.sequence_mut(c.client, c.handles[0]).handle(1)?;
    update(seq, data);
    Ok(())
}

fn take_sequence(tpm: &mut Tpm, handle: u32) -> TpmResult<Box<Sequence>> {
    match tpm.objects.remove(&handle).map(|t| t.item) {
        Some(Loaded::Sequence(s)) => Ok(s),
        _ => Err(TPM_RC_HANDLE),
    }
}

/// TPM2_SequenceComplete.
pub fn sequence_complete(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_BUFFER).param(1)?;
    let hierarchy = parse_hierarchy(tpm, r, true).param(2)?;
    end(r)?;
    let handle = c.handles[0];
    if matches!(tpm.sequence_mut(c.client, handle)?.kind, SequenceKind::Event(_)) {
        return Err(at_handle(TPM_RC_MODE, 1));
    }
    let mut seq = take_sequence(tpm, handle)?;
    update(&mut seq, data);
    let safe = !generated(&seq.first);
    let (digest, ticket) = match seq.kind {
        SequenceKind::Hash(h) => {
            let alg = h.alg();
            let d = h.finish();
            let t = tpm.hash_ticket(hierarchy, alg, &d, safe);
            (d, t)
        }
        SequenceKind::Hmac(h) => (h.finish(), Ticket::null(TPM_ST_HASHCHECK)),
        SequenceKind::Event(_) => return Err(at_handle(TPM_RC_MODE, 1)),
    };
    c.out.tpm2b(&digest);
    ticket.write(&mut c.out);
    Ok(())
}

/// TPM2_EventSequenceComplete: digests of every implemented hash; extends the PCR.
pub fn event_sequence_complete(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_BUFFER).param(1)?;
    end(r)?;
    let (pcr, handle) = (c.handles[0], c.handles[1]);
    if !matches!(tpm.sequence_mut(c.client, handle)?.kind, SequenceKind::Event(_)) {
        return Err(at_handle(TPM_RC_MODE, 2));
    }
    if pcr != TPM_RH_NULL
        && crate::pcr::extend_localities(pcr as usize) & crate::pcr::locality_bit(c.locality) == 0
    {
        return Err(TPM_RC_LOCALITY);
    }
    let mut seq = take_sequence(tpm, handle)?;
    update(&mut seq, data);
    let SequenceKind::Event(hashers) = seq.kind else {
        return Err(at_handle(TPM_RC_MODE, 2));
    };
    let mut w = Writer::new();
    w.u32(hashers.len() as u32);
    for h in hashers {
        let alg = h.alg();
        let d = h.finish();
        w.u16(alg.alg()).bytes(&d);
        if pcr != TPM_RH_NULL {
            tpm.pcrs.extend(pcr as usize, alg, &d);
        }
    }
    c.out.bytes(&w.into_vec());
    Ok(())
}
