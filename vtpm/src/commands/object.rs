//! Object commands: CreatePrimary, Create, CreateLoaded, Load, LoadExternal, ReadPublic,
//! ObjectChangeAuth, EvictControl, Unseal, FlushContext.

use alloc::boxed::Box;
use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::drbg::{DrbgRng, KdfaStream};
use crate::crypto::hash::{HashAlg, hash, hmac};
use crate::crypto::rsa::{self, RsaPrivateKey};
use crate::dispatch::Cmd;
use crate::marshal::{Reader, Writer, to_vec};
use crate::nv::PERSISTENT_MAX;
use crate::object::*;
use crate::rc::*;
use crate::session::SessionSlot;
use crate::state::{CachedPrimary, Loaded, Tpm, Transient};
use crate::types::*;

use super::end;

/// Entries kept in the cache of derived RSA primaries (key generation is slow).
const PRIMARY_CACHE: usize = 8;

/// Key material for a primary object: a KDFa stream over the hierarchy seed, with derived RSA
/// keys remembered by (seed, template) so re-creating a primary is fast.
struct PrimarySource<'a> {
    stream: KdfaStream,
    cache: &'a mut Vec<CachedPrimary>,
    cache_key: Vec<u8>,
}

impl KeySource for PrimarySource<'_> {
    fn draw(&mut self, out: &mut [u8]) {
        self.stream.fill(out);
    }

    fn rsa(&mut self, bits: u16, exponent: u32) -> TpmResult<RsaPrivateKey> {
        if let Some(c) = self.cache.iter().find(|c| c.key == self.cache_key) {
            return Ok((*c.private).clone());
        }
        let key = rsa::generate(&mut self.stream, bits, exponent)?;
        if self.cache.len() == PRIMARY_CACHE {
            self.cache.remove(0);
        }
        self.cache
            .push(CachedPrimary { key: self.cache_key.clone(), private: Box::new(key.clone()) });
        Ok(key)
    }
}

/// Key material for ordinary objects: the TPM's DRBG.
struct RandomSource<'a>(DrbgRng<'a>);

impl KeySource for RandomSource<'_> {
    fn draw(&mut self, out: &mut [u8]) {
        self.0.0.generate(out);
    }
    fn rsa(&mut self, bits: u16, exponent: u32) -> TpmResult<RsaPrivateKey> {
        rsa::generate(&mut self.0, bits, exponent)
    }
}

/// Parameters common to the create commands.
struct CreateParams {
    auth: Vec<u8>,
    data: Vec<u8>,
    public: Public,
}

fn parse_create(r: &mut Reader) -> TpmResult<CreateParams> {
    let (auth, data) = parse_sensitive_create(r).param(1)?;
    let (public, _) = Public::parse_2b(r).param(2)?;
    Ok(CreateParams { auth, data, public })
}

impl Tpm {
    /// Builds a primary object in `hierarchy` from a template (deterministic).
    fn derive_primary(&mut self, hierarchy: u32, p: &CreateParams) -> TpmResult<Object> {
        validate_public(&p.public, None).param(2)?;
        let name_alg = p.public.name_alg.ok_or(at_param(TPM_RC_HASH, 2))?;
        let template_name = compute_name(&p.public);
        let mut context = template_name.clone();
        context.extend_from_slice(&p.data);
        let seed = self.seed(hierarchy).to_vec();
        let cache_key = hash(HashAlg::Sha256, &[&seed, &context]);
        let mut cache = core::mem::take(&mut self.primary_cache);
        let mut src = PrimarySource {
            stream: KdfaStream::new(name_alg, &seed, b"Primary Object Creation", context),
            cache: &mut cache,
            cache_key,
        };
        let mut public = p.public.clone();
        let result = generate(&mut public, &p.auth, &p.data, &mut src);
        self.primary_cache = cache;
        let (sensitive, rsa_key) = result?;
        let mut obj = Object::with_rsa_key(
            public,
            Some(sensitive),
            hierarchy,
            &hierarchy.to_be_bytes(),
            rsa_key,
        )?;
        obj.primary = true;
        Ok(obj)
    }

    /// Creates an ordinary object under `parent` (random key material).
    fn create_child(&mut self, parent: &Object, p: &CreateParams) -> TpmResult<(Object, Vec<u8>)> {
        validate_public(&p.public, Some(&parent.public)).param(2)?;
        let mut public = p.public.clone();
        let mut src = RandomSource(self.rng());
        let (sensitive, rsa_key) = generate(&mut public, &p.auth, &p.data, &mut src)?;
        let name = compute_name(&public);
        let private = protect(parent, &name, public.kind, &sensitive)?;
        let obj = Object::with_rsa_key(
            public,
            Some(sensitive),
            parent.hierarchy,
            &parent.qualified_name,
            rsa_key,
        )?;
        Ok((obj, private))
    }

    /// TPMS_CREATION_DATA (marshalled) for a new object.
    fn creation_data(
        &self,
        c: &Cmd,
        name_alg: HashAlg,
        pcrs: &PcrSelection,
        parent: (u16, &[u8], &[u8]),
        outside: &[u8],
    ) -> Vec<u8> {
        to_vec(|w| {
            pcrs.write(w);
            w.tpm2b(&self.pcr_digest(name_alg, pcrs))
                .u8(crate::pcr::locality_bit(c.locality))
                .u16(parent.0)
                .tpm2b(parent.1)
                .tpm2b(parent.2)
                .tpm2b(outside);
        })
    }

    pub(crate) fn creation_ticket(
        &self,
        hierarchy: u32,
        alg: HashAlg,
        name: &[u8],
        creation_hash: &[u8],
    ) -> Ticket {
        Ticket {
            tag: TPM_ST_CREATION,
            hierarchy,
            digest: hmac(
                alg,
                self.proof(hierarchy),
                &[&TPM_ST_CREATION.to_be_bytes(), name, creation_hash],
            ),
        }
    }

    fn write_creation(
        &self,
        w: &mut Writer,
        c: &Cmd,
        obj: &Object,
        pcrs: &PcrSelection,
        parent: (u16, &[u8], &[u8]),
        outside: &[u8],
    ) -> TpmResult<()> {
        let alg = obj.name_alg()?;
        let data = self.creation_data(c, alg, pcrs, parent, outside);
        let creation_hash = hash(alg, &[&data]);
        w.tpm2b(&data).tpm2b(&creation_hash);
        self.creation_ticket(obj.hierarchy, alg, &obj.name, &creation_hash).write(w);
        Ok(())
    }

    fn storage_parent(&self, c: &Cmd, handle: u32, n: u32) -> TpmResult<&Object> {
        let parent = self.object(c.client, handle).handle(n)?;
        if !parent.is_storage_parent() {
            return Err(at_handle(TPM_RC_TYPE, n));
        }
        Ok(parent)
    }
}

/// TPM2_CreatePrimary.
pub fn create_primary(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let p = parse_create(r)?;
    let outside = r.tpm2b(64).param(3)?.to_vec();
    let pcrs = PcrSelection::parse(r).param(4)?;
    end(r)?;
    let hierarchy = c.handles[0];
    let obj = tpm.derive_primary(hierarchy, &p)?;
    let mut w = Writer::new();
    w.sized(|w| obj.public.write(w));
    let h = hierarchy.to_be_bytes();
    tpm.write_creation(&mut w, c, &obj, &pcrs, (TPM_ALG_NULL, &h, &h), &outside)?;
    w.tpm2b(&obj.name);
    let handle = tpm.add_transient(c.client, Loaded::Object(Box::new(obj)))?;
    c.out_handle = Some(handle);
    c.out.bytes(&w.into_vec());
    Ok(())
}

/// TPM2_Create.
pub fn create(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let p = parse_create(r)?;
    let outside = r.tpm2b(64).param(3)?.to_vec();
    let pcrs = PcrSelection::parse(r).param(4)?;
    end(r)?;
    let parent = tpm.storage_parent(c, c.handles[0], 1)?;
    let parent = ParentInfo::of(parent);
    let parent_obj = tpm.object(c.client, c.handles[0])?.shallow();
    let (obj, private) = tpm.create_child(&parent_obj, &p)?;
    let mut w = Writer::new();
    w.tpm2b(&private);
    w.sized(|w| obj.public.write(w));
    tpm.write_creation(
        &mut w,
        c,
        &obj,
        &pcrs,
        (parent.name_alg, &parent.name, &parent.qualified_name),
        &outside,
    )?;
    c.out.bytes(&w.into_vec());
    Ok(())
}

/// Name, qualified name and nameAlg of a parent (copied out to release the borrow).
struct ParentInfo {
    name_alg: u16,
    name: Vec<u8>,
    qualified_name: Vec<u8>,
}

impl ParentInfo {
    fn of(o: &Object) -> ParentInfo {
        ParentInfo {
            name_alg: o.public.name_alg.map_or(TPM_ALG_NULL, HashAlg::alg),
            name: o.name.clone(),
            qualified_name: o.qualified_name.clone(),
        }
    }
}

/// TPM2_CreateLoaded: a primary (parent is a hierarchy) or an ordinary object, loaded.
pub fn create_loaded(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let p = parse_create(r)?;
    end(r)?;
    let parent_handle = c.handles[0];
    let (obj, private) = if handle_type(parent_handle) == TPM_HT_PERMANENT {
        (tpm.derive_primary(parent_handle, &p)?, Vec::new())
    } else {
        tpm.storage_parent(c, parent_handle, 1)?;
        let parent_obj = tpm.object(c.client, parent_handle)?.shallow();
        tpm.create_child(&parent_obj, &p)?
    };
    let mut w = Writer::new();
    w.tpm2b(&private);
    w.sized(|w| obj.public.write(w));
    w.tpm2b(&obj.name);
    let handle = tpm.add_transient(c.client, Loaded::Object(Box::new(obj)))?;
    c.out_handle = Some(handle);
    c.out.bytes(&w.into_vec());
    Ok(())
}

impl Object {
    /// A copy without the cached RSA keys (enough to act as a parent).
    pub(crate) fn shallow(&self) -> Object {
        Object {
            public: self.public.clone(),
            name: self.name.clone(),
            qualified_name: self.qualified_name.clone(),
            hierarchy: self.hierarchy,
            sensitive: self.sensitive.clone(),
            rsa_private: None,
            rsa_public: None,
            external: self.external,
            primary: self.primary,
        }
    }
}

/// TPM2_Load.
pub fn load(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let private = r.tpm2b(u16::MAX as usize).param(1)?.to_vec();
    let (public, _) = Public::parse_2b(r).param(2)?;
    end(r)?;
    let parent = tpm.storage_parent(c, c.handles[0], 1)?.shallow();
    validate_public(&public, Some(&parent.public)).param(2)?;
    validate_loaded_key(&public).param(2)?;
    let name = compute_name(&public);
    let sensitive = unprotect(&parent, &name, public.kind, &private).param(1)?;
    let obj =
        Object::new(public, Some(sensitive), parent.hierarchy, &parent.qualified_name).param(1)?;
    obj.check_binding().param(1)?;
    let handle = tpm.add_transient(c.client, Loaded::Object(Box::new(obj)))?;
    c.out_handle = Some(handle);
    c.out.tpm2b(&name);
    Ok(())
}

/// TPM2_LoadExternal: a public key, or a whole key in the clear (NULL hierarchy only).
pub fn load_external(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let sensitive_bytes = r.tpm2b(u16::MAX as usize).param(1)?.to_vec();
    let (public, _) = Public::parse_2b(r).param(2)?;
    let hierarchy = super::parse_hierarchy(tpm, r, true).param(3)?;
    end(r)?;
    let sensitive = if sensitive_bytes.is_empty() {
        None
    } else {
        if hierarchy != TPM_RH_NULL {
            return Err(at_param(TPM_RC_HIERARCHY, 3));
        }
        if public.has(OA_FIXED_TPM) || public.has(OA_FIXED_PARENT) {
            return Err(at_param(TPM_RC_ATTRIBUTES, 2));
        }
        validate_public(&public, None).param(2)?;
        let mut sr = Reader::new(&sensitive_bytes);
        let s = Sensitive::parse(&mut sr, public.kind).param(1)?;
        if !sr.is_empty() {
            return Err(at_param(TPM_RC_SIZE, 1));
        }
        Some(s)
    };
    if sensitive.is_none() {
        check_public_key(&public).param(2)?;
    }
    validate_loaded_key(&public).param(2)?;
    let mut obj = Object::new(public, sensitive, hierarchy, &hierarchy.to_be_bytes()).param(2)?;
    obj.check_binding().param(1)?;
    obj.external = true;
    // An external object has no parent: its qualified name is its name.
    obj.qualified_name = obj.name.clone();
    let name = obj.name.clone();
    let handle = tpm.add_transient(c.client, Loaded::Object(Box::new(obj)))?;
    c.out_handle = Some(handle);
    c.out.tpm2b(&name);
    Ok(())
}

/// Checks a public key loaded without its private part: valid point / modulus.
fn check_public_key(public: &Public) -> TpmResult<()> {
    if !public.auth_policy.is_empty()
        && public.name_alg.is_some_and(|h| public.auth_policy.len() != h.size())
    {
        return Err(TPM_RC_SIZE);
    }
    match (&public.params, &public.unique) {
        (PublicParams::Ecc { curve, .. }, Unique::Ecc(x, y)) => {
            let p = crate::crypto::ecc::Point { x: x.clone(), y: y.clone() };
            crate::crypto::ecc::validate_point(*curve, &p)
        }
        (PublicParams::Rsa { key_bits, .. }, Unique::Rsa(n)) => {
            if n.len() != usize::from(key_bits / 8) {
                return Err(TPM_RC_KEY);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// TPM2_ReadPublic.
pub fn read_public(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let h = c.handles[0];
    if let Some(Transient { item: Loaded::Sequence(_), .. }) = tpm.objects.get(&h) {
        return Err(at_handle(TPM_RC_SEQUENCE, 1));
    }
    let o = tpm.object(c.client, h).handle(1)?;
    c.out.sized(|w| o.public.write(w));
    c.out.tpm2b(&o.name).tpm2b(&o.qualified_name);
    Ok(())
}

/// TPM2_ObjectChangeAuth: a new private area with the new authValue.
pub fn object_change_auth(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let new_auth = r.tpm2b(64).param(1)?.to_vec();
    end(r)?;
    let obj = tpm.object(c.client, c.handles[0])?;
    let parent = tpm.storage_parent(c, c.handles[1], 2)?;
    let alg = obj.name_alg()?;
    let mut expect_qn = alg.alg().to_be_bytes().to_vec();
    expect_qn.extend_from_slice(&hash(alg, &[&parent.qualified_name, &obj.name]));
    if obj.primary || expect_qn != obj.qualified_name {
        return Err(at_handle(TPM_RC_TYPE, 2));
    }
    if new_auth.len() > alg.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    let mut s = obj.sensitive.clone().ok_or(at_handle(TPM_RC_TYPE, 1))?;
    s.auth = Zeroizing::new(trim_auth(&new_auth).to_vec());
    let private = protect(parent, &obj.name, obj.public.kind, &s)?;
    c.out.tpm2b(&private);
    Ok(())
}

/// TPM2_Unseal.
pub fn unseal(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let o = tpm.object(c.client, c.handles[0]).handle(1)?;
    if o.public.kind != TPM_ALG_KEYEDHASH {
        return Err(at_handle(TPM_RC_TYPE, 1));
    }
    if o.public.has(OA_SIGN) || o.public.has(OA_DECRYPT) || o.public.has(OA_RESTRICTED) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    let s = o.sensitive.as_ref().ok_or(at_handle(TPM_RC_TYPE, 1))?;
    c.out.tpm2b(&s.secret);
    Ok(())
}

/// TPM2_EvictControl.
pub fn evict_control(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let persistent = r.u32().param(1)?;
    end(r)?;
    let (auth, handle) = (c.handles[0], c.handles[1]);
    let owner_range = (0x8100_0000..=0x817F_FFFF).contains(&persistent);
    let platform_range = (0x8180_0000..=0x81FF_FFFF).contains(&persistent);
    if !owner_range && !platform_range {
        return Err(at_param(TPM_RC_RANGE, 1));
    }
    if (auth == TPM_RH_OWNER && !owner_range) || (auth == TPM_RH_PLATFORM && !platform_range) {
        return Err(at_param(TPM_RC_RANGE, 1));
    }
    if handle_type(handle) == TPM_HT_PERSISTENT {
        if handle != persistent {
            return Err(at_handle(TPM_RC_HANDLE, 2));
        }
        tpm.persistent.remove(&handle);
        return Ok(());
    }
    let o = tpm.object(c.client, handle).handle(2)?;
    if o.external || o.sensitive.is_none() || o.public.has(OA_ST_CLEAR) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 2));
    }
    let allowed = match auth {
        TPM_RH_PLATFORM => o.hierarchy == TPM_RH_PLATFORM,
        _ => matches!(o.hierarchy, TPM_RH_OWNER | TPM_RH_ENDORSEMENT),
    };
    if !allowed {
        return Err(at_handle(TPM_RC_HIERARCHY, 2));
    }
    if tpm.persistent.contains_key(&persistent) {
        return Err(TPM_RC_NV_DEFINED);
    }
    if tpm.persistent.len() >= PERSISTENT_MAX {
        return Err(TPM_RC_NV_SPACE);
    }
    let mut copy = o.shallow();
    copy.rsa_private = o.rsa_private.clone();
    copy.rsa_public = o.rsa_public.clone();
    tpm.persistent.insert(persistent, Box::new(copy));
    Ok(())
}

/// TPM2_FlushContext: a transient object/sequence or a (loaded or saved) session.
pub fn flush_context(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let h = r.u32().param(1)?;
    end(r)?;
    match handle_type(h) {
        TPM_HT_TRANSIENT => {
            if !tpm.transient_loaded(c.client, h) {
                return Err(at_param(TPM_RC_HANDLE, 1));
            }
            tpm.objects.remove(&h);
        }
        TPM_HT_HMAC_SESSION | TPM_HT_POLICY_SESSION => match tpm.sessions.get(&h) {
            Some(SessionSlot::Loaded { owner, .. }) if *owner == c.client => {
                tpm.sessions.remove(&h);
            }
            Some(SessionSlot::Saved { .. }) => {
                tpm.sessions.remove(&h);
            }
            _ => return Err(at_param(TPM_RC_HANDLE, 1)),
        },
        _ => return Err(at_param(TPM_RC_VALUE, 1)),
    }
    Ok(())
}
