//! TPM2_ContextSave / TPM2_ContextLoad. A saved context (TPMS_CONTEXT) carries the object,
//! sequence or session state encrypted with AES-256-CFB and authenticated with HMAC-SHA-256
//! under keys derived (KDFa) from a proof value: the object's hierarchy proof for objects (so
//! they survive until the hierarchy changes; NULL-hierarchy objects die at TPM Reset), and the
//! per-reset context proof for sequences and sessions. A session context can be loaded once.

use alloc::boxed::Box;
use alloc::vec::Vec;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::commands::end;
use crate::constants::*;
use crate::crypto::hash::{HashAlg, Hasher, HmacState, hmac};
use crate::crypto::kdf::kdfa;
use crate::crypto::sym::aes_cfb;
use crate::dispatch::Cmd;
use crate::marshal::{Reader, Writer, to_vec};
use crate::object::{Object, Sensitive};
use crate::rc::*;
use crate::session::{PolicyState, Session, SessionKind, SessionSlot};
use crate::state::{Loaded, MAX_LOADED_SESSIONS, Sequence, SequenceKind, Tpm};
use crate::types::{Public, SymDef, parse_hash, parse_hash_required};

/// Largest context blob accepted.
const MAX_CONTEXT_BLOB: usize = 4096;

const SAVED_OBJECT: u32 = 0x8000_0000;
const SAVED_SEQUENCE: u32 = 0x8000_0001;
const SAVED_STCLEAR: u32 = 0x8000_0002;

fn keys(proof: &[u8], sequence: u64, handle: u32) -> Zeroizing<Vec<u8>> {
    let mut ctx = sequence.to_be_bytes().to_vec();
    ctx.extend_from_slice(&handle.to_be_bytes());
    kdfa(HashAlg::Sha256, proof, b"CONTEXT", &ctx, &[], (32 + 16 + 32) * 8)
}

fn seal(proof: &[u8], sequence: u64, handle: u32, hierarchy: u32, plain: &[u8]) -> Vec<u8> {
    let k = keys(proof, sequence, handle);
    let mut enc = plain.to_vec();
    let iv: [u8; 16] = k[32..48].try_into().expect("16 octets");
    aes_cfb(&k[..32], &iv, &mut enc, true);
    let mac = hmac(
        HashAlg::Sha256,
        &k[48..],
        &[&enc, &sequence.to_be_bytes(), &handle.to_be_bytes(), &hierarchy.to_be_bytes()],
    );
    to_vec(|w| {
        w.tpm2b(&mac).bytes(&enc);
    })
}

fn open(
    proof: &[u8],
    sequence: u64,
    handle: u32,
    hierarchy: u32,
    blob: &[u8],
) -> TpmResult<Zeroizing<Vec<u8>>> {
    let mut r = Reader::new(blob);
    let mac = r.tpm2b(32).map_err(|_| TPM_RC_SIZE)?;
    let enc = r.rest();
    let k = keys(proof, sequence, handle);
    let expect = hmac(
        HashAlg::Sha256,
        &k[48..],
        &[enc, &sequence.to_be_bytes(), &handle.to_be_bytes(), &hierarchy.to_be_bytes()],
    );
    if !bool::from(expect.ct_eq(mac)) {
        return Err(TPM_RC_INTEGRITY);
    }
    let mut plain = Zeroizing::new(enc.to_vec());
    let iv: [u8; 16] = k[32..48].try_into().expect("16 octets");
    aes_cfb(&k[..32], &iv, &mut plain, false);
    Ok(plain)
}

fn write_object(w: &mut Writer, o: &Object) {
    w.sized(|w| o.public.write(w));
    match &o.sensitive {
        Some(s) => {
            w.u8(1);
            s.write(w, o.public.kind);
        }
        None => {
            w.u8(0);
        }
    }
    w.tpm2b(&o.qualified_name).u8(u8::from(o.external) | u8::from(o.primary) << 1);
}

fn read_object(r: &mut Reader, hierarchy: u32) -> TpmResult<Object> {
    let (public, _) = Public::parse_2b(r)?;
    let sensitive = match r.u8()? {
        1 => Some(Sensitive::parse(r, public.kind)?),
        _ => None,
    };
    let qualified = r.tpm2b_vec(128)?;
    let flags = r.u8()?;
    let mut o = Object::new(public, sensitive, hierarchy, &[])?;
    o.qualified_name = qualified;
    o.external = flags & 1 != 0;
    o.primary = flags & 2 != 0;
    Ok(o)
}

fn write_sequence(w: &mut Writer, s: &Sequence) {
    match &s.kind {
        SequenceKind::Hash(h) => {
            w.u8(0).u16(h.alg().alg()).tpm2b(&h.serialize());
        }
        SequenceKind::Hmac(h) => {
            let (state, key) = h.parts();
            w.u8(1).u16(h.alg().alg()).tpm2b(&state).tpm2b(key);
        }
        SequenceKind::Event(hs) => {
            w.u8(2).u8(hs.len() as u8);
            for h in hs {
                w.u16(h.alg().alg()).tpm2b(&h.serialize());
            }
        }
    }
    w.tpm2b(&s.auth).tpm2b(&s.first);
}

fn read_hasher(r: &mut Reader) -> TpmResult<Hasher> {
    let alg = parse_hash_required(r)?;
    Hasher::deserialize(alg, r.tpm2b(512)?).ok_or(TPM_RC_BAD_CONTEXT)
}

fn read_sequence(r: &mut Reader) -> TpmResult<Sequence> {
    let kind = match r.u8()? {
        0 => SequenceKind::Hash(read_hasher(r)?),
        1 => {
            let alg = parse_hash_required(r)?;
            let state = r.tpm2b(512)?;
            let key = r.tpm2b(128)?;
            SequenceKind::Hmac(HmacState::from_parts(alg, state, key).ok_or(TPM_RC_BAD_CONTEXT)?)
        }
        2 => {
            let n = r.u8()?;
            SequenceKind::Event((0..n).map(|_| read_hasher(r)).collect::<TpmResult<_>>()?)
        }
        _ => return Err(TPM_RC_BAD_CONTEXT),
    };
    Ok(Sequence { kind, auth: Zeroizing::new(r.tpm2b_vec(64)?), first: r.tpm2b_vec(4)? })
}

fn write_opt(w: &mut Writer, v: &Option<Vec<u8>>) {
    match v {
        Some(v) => {
            w.u8(1).tpm2b(v);
        }
        None => {
            w.u8(0);
        }
    }
}

fn read_opt(r: &mut Reader) -> TpmResult<Option<Vec<u8>>> {
    Ok(match r.u8()? {
        1 => Some(r.tpm2b_vec(64)?),
        _ => None,
    })
}

fn write_session(w: &mut Writer, s: &Session) {
    let kind = match s.kind {
        SessionKind::Hmac => 0,
        SessionKind::Policy => 1,
        SessionKind::Trial => 3,
    };
    w.u8(kind).u16(s.hash.alg()).tpm2b(&s.session_key).tpm2b(&s.nonce_tpm);
    s.symmetric.write(w);
    match &s.bind {
        Some((name, auth)) => {
            w.u8(1).tpm2b(name).tpm2b(auth);
        }
        None => {
            w.u8(0);
        }
    }
    let p = &s.policy;
    w.tpm2b(&p.digest);
    write_opt(w, &p.command_code.map(|c| c.to_be_bytes().to_vec()));
    write_opt(w, &p.cp_hash);
    write_opt(w, &p.name_hash);
    write_opt(w, &p.template_hash);
    write_opt(w, &p.locality.map(|l| alloc::vec![l]));
    write_opt(w, &p.pcr_counter.map(|c| c.to_be_bytes().to_vec()));
    write_opt(w, &p.nv_written.map(|b| alloc::vec![u8::from(b)]));
    write_opt(w, &p.timeout.map(|t| t.to_be_bytes().to_vec()));
    w.u8(u8::from(p.auth_value_needed)
        | u8::from(p.password_needed) << 1
        | u8::from(p.pp_required) << 2);
    w.tpm2b(&s.audit_digest).u64(s.start_time);
}

fn read_session(r: &mut Reader) -> TpmResult<Session> {
    let kind = match r.u8()? {
        0 => SessionKind::Hmac,
        1 => SessionKind::Policy,
        _ => SessionKind::Trial,
    };
    let hash = parse_hash_required(r)?;
    let mut s = Session::new(kind, hash);
    s.session_key = Zeroizing::new(r.tpm2b_vec(64)?);
    s.nonce_tpm = r.tpm2b_vec(64)?;
    s.symmetric = SymDef::parse(r, false, true)?;
    if r.u8()? == 1 {
        s.bind = Some((r.tpm2b_vec(128)?, Zeroizing::new(r.tpm2b_vec(64)?)));
    }
    let bytes = |v: Option<Vec<u8>>, n: usize| v.filter(|v| v.len() == n);
    let digest = r.tpm2b_vec(64)?;
    let command_code = bytes(read_opt(r)?, 4).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
    let cp_hash = read_opt(r)?;
    let name_hash = read_opt(r)?;
    let template_hash = read_opt(r)?;
    let locality = bytes(read_opt(r)?, 1).map(|v| v[0]);
    let pcr_counter = bytes(read_opt(r)?, 4).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
    let nv_written = bytes(read_opt(r)?, 1).map(|v| v[0] != 0);
    let timeout =
        bytes(read_opt(r)?, 8).map(|v| u64::from_be_bytes(v.try_into().expect("8 octets")));
    let flags = r.u8()?;
    s.policy = PolicyState {
        digest,
        command_code,
        cp_hash,
        name_hash,
        template_hash,
        locality,
        pcr_counter,
        auth_value_needed: flags & 1 != 0,
        password_needed: flags & 2 != 0,
        pp_required: flags & 4 != 0,
        nv_written,
        timeout,
    };
    s.audit_digest = r.tpm2b_vec(64)?;
    s.start_time = r.u64()?;
    Ok(s)
}

/// TPM2_ContextSave.
pub fn context_save(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let h = c.handles[0];
    let sequence = tpm.context_counter;
    let (saved_handle, hierarchy, blob) = if handle_type(h) == TPM_HT_TRANSIENT {
        let t = tpm.objects.get(&h).ok_or(at_handle(TPM_RC_HANDLE, 1))?;
        match &t.item {
            Loaded::Object(o) => {
                let saved = if o.public.has(OA_ST_CLEAR) { SAVED_STCLEAR } else { SAVED_OBJECT };
                let plain = Zeroizing::new(to_vec(|w| write_object(w, o)));
                let proof = tpm.proof(o.hierarchy).to_vec();
                (saved, o.hierarchy, seal(&proof, sequence, saved, o.hierarchy, &plain))
            }
            Loaded::Sequence(s) => {
                let plain = Zeroizing::new(to_vec(|w| write_sequence(w, s)));
                let blob =
                    seal(&tpm.context_proof[..], sequence, SAVED_SEQUENCE, TPM_RH_NULL, &plain);
                (SAVED_SEQUENCE, TPM_RH_NULL, blob)
            }
        }
    } else {
        let s = tpm.session(c.client, h).handle(1)?;
        let plain = Zeroizing::new(to_vec(|w| write_session(w, s)));
        let blob = seal(&tpm.context_proof[..], sequence, h, TPM_RH_NULL, &plain);
        tpm.sessions.insert(h, SessionSlot::Saved { seq: sequence });
        (h, TPM_RH_NULL, blob)
    };
    tpm.context_counter += 1;
    c.out.u64(sequence).u32(saved_handle).u32(hierarchy).tpm2b(&blob);
    Ok(())
}

/// TPM2_ContextLoad.
pub fn context_load(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let sequence = r.u64().param(1)?;
    let saved_handle = r.u32().param(1)?;
    let hierarchy = r.u32().param(1)?;
    let blob = r.tpm2b(MAX_CONTEXT_BLOB).param(1)?.to_vec();
    end(r)?;
    let bad = |rc| at_param(rc, 1);
    match handle_type(saved_handle) {
        TPM_HT_HMAC_SESSION | TPM_HT_POLICY_SESSION => {
            match tpm.sessions.get(&saved_handle) {
                Some(SessionSlot::Saved { seq }) if *seq == sequence => {}
                _ => return Err(bad(TPM_RC_HANDLE)),
            }
            if hierarchy != TPM_RH_NULL {
                return Err(bad(TPM_RC_INTEGRITY));
            }
            if tpm.loaded_sessions_of(c.client) >= MAX_LOADED_SESSIONS {
                return Err(TPM_RC_SESSION_MEMORY);
            }
            let plain = open(&tpm.context_proof[..], sequence, saved_handle, hierarchy, &blob)
                .map_err(bad)?;
            let session =
                read_session(&mut Reader::new(&plain)).map_err(|_| bad(TPM_RC_BAD_CONTEXT))?;
            tpm.sessions.insert(
                saved_handle,
                SessionSlot::Loaded { owner: c.client, session: Box::new(session) },
            );
            c.out_handle = Some(saved_handle);
        }
        TPM_HT_TRANSIENT => {
            let item = match saved_handle {
                SAVED_SEQUENCE => {
                    let plain =
                        open(&tpm.context_proof[..], sequence, saved_handle, hierarchy, &blob)
                            .map_err(bad)?;
                    let s = read_sequence(&mut Reader::new(&plain))
                        .map_err(|_| bad(TPM_RC_BAD_CONTEXT))?;
                    Loaded::Sequence(Box::new(s))
                }
                SAVED_OBJECT | SAVED_STCLEAR => {
                    if !matches!(
                        hierarchy,
                        TPM_RH_OWNER | TPM_RH_ENDORSEMENT | TPM_RH_PLATFORM | TPM_RH_NULL
                    ) {
                        return Err(bad(TPM_RC_HIERARCHY));
                    }
                    if !tpm.hierarchy_enabled(hierarchy) {
                        return Err(bad(TPM_RC_HIERARCHY));
                    }
                    let proof = tpm.proof(hierarchy).to_vec();
                    let plain =
                        open(&proof, sequence, saved_handle, hierarchy, &blob).map_err(bad)?;
                    let o = read_object(&mut Reader::new(&plain), hierarchy)
                        .map_err(|_| bad(TPM_RC_BAD_CONTEXT))?;
                    Loaded::Object(Box::new(o))
                }
                _ => return Err(bad(TPM_RC_HANDLE)),
            };
            let h = tpm.add_transient(c.client, item)?;
            c.out_handle = Some(h);
        }
        _ => return Err(bad(TPM_RC_HANDLE)),
    }
    let _ = parse_hash;
    Ok(())
}
