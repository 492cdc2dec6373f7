//! NV indices (in memory): their public area (TPMS_NV_PUBLIC), data and name.

use alloc::vec::Vec;
use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::hash::{HashAlg, MAX_DIGEST_SIZE, hash};
use crate::marshal::{Reader, Writer};
use crate::rc::*;
use crate::types::parse_hash_required;

/// Largest NV index data area.
pub const NV_INDEX_MAX: usize = 2048;
/// Total NV budget for index data plus persistent objects (octets).
pub const NV_MEMORY: usize = 128 * 1024;
/// Maximum number of NV indices.
pub const NV_INDICES_MAX: usize = 64;
/// Maximum number of persistent objects.
pub const PERSISTENT_MAX: usize = 16;
/// NV counter indices allowed.
pub const NV_COUNTERS_MAX: usize = 32;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NvPublic {
    pub index: u32,
    pub name_alg: HashAlg,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub data_size: u16,
}

impl NvPublic {
    pub fn parse(r: &mut Reader) -> TpmResult<NvPublic> {
        let index = r.u32()?;
        if handle_type(index) != TPM_HT_NV_INDEX {
            return Err(TPM_RC_HANDLE);
        }
        let name_alg = parse_hash_required(r)?;
        let attributes = r.u32()?;
        if attributes & NV_RESERVED != 0 {
            return Err(TPM_RC_RESERVED_BITS);
        }
        let auth_policy = r.tpm2b_vec(MAX_DIGEST_SIZE)?;
        let data_size = r.u16()?;
        Ok(NvPublic { index, name_alg, attributes, auth_policy, data_size })
    }

    /// TPM2B_NV_PUBLIC.
    pub fn parse_2b(r: &mut Reader) -> TpmResult<NvPublic> {
        let bytes = r.tpm2b(u16::MAX as usize)?;
        if bytes.is_empty() {
            return Err(TPM_RC_SIZE);
        }
        let mut inner = Reader::new(bytes);
        let p = NvPublic::parse(&mut inner)?;
        if !inner.is_empty() {
            return Err(TPM_RC_SIZE);
        }
        Ok(p)
    }

    pub fn write(&self, w: &mut Writer) {
        w.u32(self.index)
            .u16(self.name_alg.alg())
            .u32(self.attributes)
            .tpm2b(&self.auth_policy)
            .u16(self.data_size);
    }

    pub fn nv_type(&self) -> u32 {
        (self.attributes & NV_TYPE_MASK) >> NV_TYPE_SHIFT
    }

    pub fn has(&self, attr: u32) -> bool {
        self.attributes & attr != 0
    }

    pub fn name(&self) -> Vec<u8> {
        let mut name = self.name_alg.alg().to_be_bytes().to_vec();
        let bytes = crate::marshal::to_vec(|w| self.write(w));
        name.extend_from_slice(&hash(self.name_alg, &[&bytes]));
        name
    }
}

/// An NV index.
#[derive(Clone)]
pub struct NvIndex {
    pub public: NvPublic,
    pub auth: Zeroizing<Vec<u8>>,
    pub data: Zeroizing<Vec<u8>>,
}

impl NvIndex {
    /// The index was defined by the platform (TPMA_NV_PLATFORMCREATE).
    pub fn platform(&self) -> bool {
        self.public.has(NV_PLATFORMCREATE)
    }

    pub fn memory(&self) -> usize {
        core::mem::size_of::<NvIndex>()
            + self.data.len()
            + self.auth.len()
            + self.public.auth_policy.len()
    }
}
