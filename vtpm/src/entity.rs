//! Resolving handles: transient objects (per client), persistent objects, NV indices,
//! hierarchies and PCRs; their names and authorization data.

use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::ClientId;
use crate::constants::*;
use crate::crypto::hash::HashAlg;
use crate::object::Object;
use crate::rc::*;
use crate::state::{Loaded, Sequence, Tpm};

/// What kind of entity a handle refers to, with the attributes authorization needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum EntityKind {
    Object { user_with_auth: bool, admin_with_policy: bool },
    Sequence,
    Nv { attributes: u32 },
    Hierarchy,
    Lockout,
    Other,
}

/// Authorization data of an entity.
pub struct EntityAuth {
    pub kind: EntityKind,
    pub auth: Zeroizing<Vec<u8>>,
    pub policy: Vec<u8>,
    pub policy_alg: Option<HashAlg>,
    pub name: Vec<u8>,
    pub da_protected: bool,
    /// The authValue is known to the TPM (false for public-only objects).
    pub available: bool,
}

impl Tpm {
    /// A key/data object visible to `client` (its transient objects or any persistent one).
    pub(crate) fn object(&self, client: ClientId, handle: u32) -> TpmResult<&Object> {
        match handle_type(handle) {
            TPM_HT_TRANSIENT => match self.objects.get(&handle) {
                Some(t) if t.owner == client => match &t.item {
                    Loaded::Object(o) => Ok(o),
                    Loaded::Sequence(_) => Err(TPM_RC_HANDLE),
                },
                _ => Err(TPM_RC_HANDLE),
            },
            TPM_HT_PERSISTENT => self.persistent.get(&handle).map(|o| &**o).ok_or(TPM_RC_HANDLE),
            _ => Err(TPM_RC_HANDLE),
        }
    }

    pub(crate) fn sequence_mut(
        &mut self,
        client: ClientId,
        handle: u32,
    ) -> TpmResult<&mut Sequence> {
        match self.objects.get_mut(&handle) {
            Some(t) if t.owner == client => match &mut t.item {
                Loaded::Sequence(s) => Ok(s),
                Loaded::Object(_) => Err(TPM_RC_MODE),
            },
            _ => Err(TPM_RC_HANDLE),
        }
    }

    /// Whether a transient handle is loaded for `client`.
    pub(crate) fn transient_loaded(&self, client: ClientId, handle: u32) -> bool {
        self.objects.get(&handle).is_some_and(|t| t.owner == client)
    }

    /// The name of any handle (Part 1 §16: objects and NV indices have computed names, all
    /// other entities are named by their handle).
    pub(crate) fn name_of(&self, client: ClientId, handle: u32) -> TpmResult<Vec<u8>> {
        match handle_type(handle) {
            TPM_HT_TRANSIENT => match self.objects.get(&handle) {
                Some(t) if t.owner == client => match &t.item {
                    Loaded::Object(o) => Ok(o.name.clone()),
                    // A sequence object has no nameAlg: its Name is the Empty Buffer.
                    Loaded::Sequence(_) => Ok(Vec::new()),
                },
                _ => Err(TPM_RC_HANDLE),
            },
            TPM_HT_PERSISTENT => Ok(self.object(client, handle)?.name.clone()),
            TPM_HT_NV_INDEX => Ok(self.nv.get(&handle).ok_or(TPM_RC_HANDLE)?.public.name()),
            _ => Ok(handle.to_be_bytes().to_vec()),
        }
    }

    pub(crate) fn entity_auth(&self, client: ClientId, handle: u32) -> TpmResult<EntityAuth> {
        let name = self.name_of(client, handle)?;
        let simple = |kind, auth: &Zeroizing<Vec<u8>>, policy: &Vec<u8>, alg| EntityAuth {
            kind,
            auth: auth.clone(),
            policy: policy.clone(),
            policy_alg: alg,
            name: name.clone(),
            da_protected: false,
            available: true,
        };
        Ok(match handle {
            TPM_RH_OWNER => {
                let h = &self.hier.owner;
                simple(EntityKind::Hierarchy, &h.auth, &h.policy, h.policy_alg)
            }
            TPM_RH_ENDORSEMENT => {
                let h = &self.hier.endorsement;
                simple(EntityKind::Hierarchy, &h.auth, &h.policy, h.policy_alg)
            }
            TPM_RH_PLATFORM | TPM_RH_PLATFORM_NV => {
                let h = &self.hier.platform;
                simple(EntityKind::Hierarchy, &h.auth, &h.policy, h.policy_alg)
            }
            TPM_RH_LOCKOUT => {
                let h = &self.hier.lockout;
                let mut e = simple(EntityKind::Lockout, &h.auth, &h.policy, h.policy_alg);
                e.da_protected = true;
                e
            }
            _ => match handle_type(handle) {
                TPM_HT_TRANSIENT | TPM_HT_PERSISTENT => match self.objects.get(&handle) {
                    Some(t) if matches!(t.item, Loaded::Sequence(_)) => {
                        let Loaded::Sequence(s) = &t.item else { unreachable!() };
                        simple(EntityKind::Sequence, &s.auth, &Vec::new(), None)
                    }
                    _ => {
                        let o = self.object(client, handle)?;
                        let empty = Zeroizing::new(Vec::new());
                        let auth = o.sensitive.as_ref().map_or(&empty, |s| &s.auth);
                        let mut e = simple(
                            EntityKind::Object {
                                user_with_auth: o.public.has(OA_USER_WITH_AUTH),
                                admin_with_policy: o.public.has(OA_ADMIN_WITH_POLICY),
                            },
                            auth,
                            &o.public.auth_policy,
                            o.public.name_alg,
                        );
                        e.da_protected = !o.public.has(OA_NO_DA);
                        e.available = o.sensitive.is_some();
                        e
                    }
                },
                TPM_HT_NV_INDEX => {
                    let nv = self.nv.get(&handle).ok_or(TPM_RC_HANDLE)?;
                    let mut e = simple(
                        EntityKind::Nv { attributes: nv.public.attributes },
                        &nv.auth,
                        &nv.public.auth_policy,
                        Some(nv.public.name_alg),
                    );
                    e.da_protected = !nv.public.has(NV_NO_DA);
                    e
                }
                _ => simple(EntityKind::Other, &Zeroizing::new(Vec::new()), &Vec::new(), None),
            },
        })
    }
}
