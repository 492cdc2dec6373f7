//! NV commands: DefineSpace, UndefineSpace(Special), ReadPublic, Write, Increment, Extend,
//! SetBits, WriteLock, GlobalWriteLock, Read, ReadLock, ChangeAuth.

use zeroize::Zeroizing;

use crate::constants::*;
use crate::crypto::hash::hash;
use crate::dispatch::Cmd;
use crate::marshal::Reader;
use crate::nv::*;
use crate::object::trim_auth;
use crate::rc::*;
use crate::state::Tpm;
use crate::types::MAX_NV_BUFFER;

use super::end;

fn total_nv(tpm: &Tpm) -> usize {
    tpm.nv.values().map(NvIndex::memory).sum::<usize>()
        + tpm.persistent.values().map(|o| o.memory()).sum::<usize>()
}

impl Tpm {
    /// Owner/platform authorization for reading `nv` (the index itself is checked by the
    /// authorization phase).
    pub(crate) fn check_nv_read(&self, _c: &Cmd, nv: &NvIndex, auth: u32) -> TpmResult<()> {
        let p = &nv.public;
        let ok = match auth {
            TPM_RH_OWNER => p.has(NV_OWNERREAD),
            TPM_RH_PLATFORM => p.has(NV_PPREAD),
            _ => auth == p.index,
        };
        if !ok {
            return Err(TPM_RC_NV_AUTHORIZATION);
        }
        if p.has(NV_READLOCKED) {
            return Err(TPM_RC_NV_LOCKED);
        }
        if !p.has(NV_WRITTEN) {
            return Err(TPM_RC_NV_UNINITIALIZED);
        }
        Ok(())
    }

    fn check_nv_write(&self, nv: &NvIndex, auth: u32) -> TpmResult<()> {
        let p = &nv.public;
        let ok = match auth {
            TPM_RH_OWNER => p.has(NV_OWNERWRITE),
            TPM_RH_PLATFORM => p.has(NV_PPWRITE),
            _ => auth == p.index,
        };
        if !ok {
            return Err(TPM_RC_NV_AUTHORIZATION);
        }
        if p.has(NV_WRITELOCKED) || (p.has(NV_GLOBALLOCK) && self.global_write_lock) {
            return Err(TPM_RC_NV_LOCKED);
        }
        Ok(())
    }

    fn nv_mut(&mut self, index: u32) -> TpmResult<&mut NvIndex> {
        self.nv.get_mut(&index).ok_or(at_handle(TPM_RC_HANDLE, 2))
    }
}

/// TPM2_NV_DefineSpace.
pub fn define_space(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let auth = r.tpm2b(64).param(1)?.to_vec();
    let public = NvPublic::parse_2b(r).param(2)?;
    end(r)?;
    let bad = |rc| Err(at_param(rc, 2));
    let platform = c.handles[0] == TPM_RH_PLATFORM;
    if public.has(NV_PLATFORMCREATE) != platform {
        return bad(TPM_RC_ATTRIBUTES);
    }
    if platform && !tpm.hier.ph_enable_nv {
        return Err(at_handle(TPM_RC_HIERARCHY, 1));
    }
    if auth.len() > public.name_alg.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    if !public.auth_policy.is_empty() && public.auth_policy.len() != public.name_alg.size() {
        return bad(TPM_RC_SIZE);
    }
    let a = public.attributes;
    let writes = NV_PPWRITE | NV_OWNERWRITE | NV_AUTHWRITE | NV_POLICYWRITE;
    let reads = NV_PPREAD | NV_OWNERREAD | NV_AUTHREAD | NV_POLICYREAD;
    if a & writes == 0 || a & reads == 0 || a & (NV_WRITTEN | NV_WRITELOCKED | NV_READLOCKED) != 0 {
        return bad(TPM_RC_ATTRIBUTES);
    }
    let size = usize::from(public.data_size);
    match public.nv_type() {
        TPM_NT_ORDINARY => {
            if size > NV_INDEX_MAX {
                return bad(TPM_RC_SIZE);
            }
        }
        TPM_NT_COUNTER | TPM_NT_BITS => {
            if size != 8 {
                return bad(TPM_RC_SIZE);
            }
            if public.nv_type() == TPM_NT_COUNTER && a & NV_CLEAR_STCLEAR != 0 {
                return bad(TPM_RC_ATTRIBUTES);
            }
        }
        TPM_NT_EXTEND => {
            if size != public.name_alg.size() {
                return bad(TPM_RC_SIZE);
            }
        }
        TPM_NT_PIN_FAIL | TPM_NT_PIN_PASS => {
            if size != 8 || (public.nv_type() == TPM_NT_PIN_FAIL && a & NV_NO_DA == 0) {
                return bad(TPM_RC_ATTRIBUTES);
            }
        }
        _ => return bad(TPM_RC_ATTRIBUTES),
    }
    if public.nv_type() == TPM_NT_COUNTER
        && tpm.nv.values().filter(|n| n.public.nv_type() == TPM_NT_COUNTER).count()
            >= NV_COUNTERS_MAX
    {
        return Err(TPM_RC_NV_SPACE);
    }
    if tpm.nv.contains_key(&public.index) {
        return Err(TPM_RC_NV_DEFINED);
    }
    if tpm.nv.len() >= NV_INDICES_MAX || total_nv(tpm) + size + 256 > NV_MEMORY {
        return Err(TPM_RC_NV_SPACE);
    }
    // Unwritten octets of an ordinary index read as 0xFF (erased flash), as in libtpms.
    let fill = if public.nv_type() == TPM_NT_ORDINARY { 0xFF } else { 0 };
    let index = NvIndex {
        auth: Zeroizing::new(trim_auth(&auth).to_vec()),
        data: Zeroizing::new(alloc::vec![fill; size]),
        public,
    };
    tpm.nv.insert(index.public.index, index);
    Ok(())
}

fn remove_index(tpm: &mut Tpm, index: u32) {
    if let Some(nv) = tpm.nv.remove(&index)
        && nv.public.nv_type() == TPM_NT_COUNTER
        && nv.public.has(NV_WRITTEN)
    {
        let v = u64::from_be_bytes(nv.data[..8].try_into().expect("counters hold 8 octets"));
        tpm.nv_max_counter = tpm.nv_max_counter.max(v);
    }
}

/// TPM2_NV_UndefineSpace.
pub fn undefine_space(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let index = c.handles[1];
    let nv = tpm.nv.get(&index).ok_or(at_handle(TPM_RC_HANDLE, 2))?;
    if nv.public.has(NV_POLICY_DELETE) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 2));
    }
    if nv.platform() != (c.handles[0] == TPM_RH_PLATFORM) {
        return Err(TPM_RC_NV_AUTHORIZATION);
    }
    remove_index(tpm, index);
    Ok(())
}

/// TPM2_NV_UndefineSpaceSpecial (policy-deletable platform indices).
pub fn undefine_space_special(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let index = c.handles[0];
    let nv = tpm.nv.get(&index).ok_or(at_handle(TPM_RC_HANDLE, 1))?;
    if !nv.public.has(NV_POLICY_DELETE) {
        return Err(at_handle(TPM_RC_ATTRIBUTES, 1));
    }
    remove_index(tpm, index);
    Ok(())
}

/// TPM2_NV_ReadPublic.
pub fn read_public(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let nv = tpm.nv.get(&c.handles[0]).ok_or(at_handle(TPM_RC_HANDLE, 1))?;
    c.out.sized(|w| nv.public.write(w));
    c.out.tpm2b(&nv.public.name());
    Ok(())
}

/// Common checks of the write commands; returns the index type.
fn prepare_write(tpm: &Tpm, c: &Cmd) -> TpmResult<u32> {
    let nv = tpm.nv.get(&c.handles[1]).ok_or(at_handle(TPM_RC_HANDLE, 2))?;
    tpm.check_nv_write(nv, c.handles[0])?;
    Ok(nv.public.nv_type())
}

/// TPM2_NV_Write.
pub fn write(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_NV_BUFFER).param(1)?.to_vec();
    let offset = usize::from(r.u16().param(2)?);
    end(r)?;
    let ty = prepare_write(tpm, c)?;
    if ty != TPM_NT_ORDINARY {
        return Err(TPM_RC_ATTRIBUTES);
    }
    let nv = tpm.nv_mut(c.handles[1])?;
    let size = nv.data.len();
    if offset + data.len() > size {
        return Err(TPM_RC_NV_RANGE);
    }
    if nv.public.has(NV_WRITEALL) && data.len() != size {
        return Err(TPM_RC_NV_RANGE);
    }
    nv.data[offset..offset + data.len()].copy_from_slice(&data);
    nv.public.attributes |= NV_WRITTEN;
    Ok(())
}

/// TPM2_NV_Increment.
pub fn increment(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    if prepare_write(tpm, c)? != TPM_NT_COUNTER {
        return Err(TPM_RC_ATTRIBUTES);
    }
    let max = tpm.nv_max_counter;
    let nv = tpm.nv_mut(c.handles[1])?;
    let mut v = u64::from_be_bytes(nv.data[..8].try_into().expect("counters hold 8 octets"));
    if !nv.public.has(NV_WRITTEN) {
        v = max;
    }
    nv.data.copy_from_slice(&v.wrapping_add(1).to_be_bytes());
    nv.public.attributes |= NV_WRITTEN;
    Ok(())
}

/// TPM2_NV_Extend.
pub fn extend(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let data = r.tpm2b(MAX_NV_BUFFER).param(1)?.to_vec();
    end(r)?;
    if prepare_write(tpm, c)? != TPM_NT_EXTEND {
        return Err(TPM_RC_ATTRIBUTES);
    }
    let nv = tpm.nv_mut(c.handles[1])?;
    let new = hash(nv.public.name_alg, &[&nv.data, &data]);
    nv.data.copy_from_slice(&new);
    nv.public.attributes |= NV_WRITTEN;
    Ok(())
}

/// TPM2_NV_SetBits.
pub fn set_bits(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let bits = r.u64().param(1)?;
    end(r)?;
    if prepare_write(tpm, c)? != TPM_NT_BITS {
        return Err(TPM_RC_ATTRIBUTES);
    }
    let nv = tpm.nv_mut(c.handles[1])?;
    let v = u64::from_be_bytes(nv.data[..8].try_into().expect("bit fields hold 8 octets")) | bits;
    nv.data.copy_from_slice(&v.to_be_bytes());
    nv.public.attributes |= NV_WRITTEN;
    Ok(())
}

/// TPM2_NV_WriteLock.
pub fn write_lock(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    prepare_write(tpm, c)?;
    let nv = tpm.nv_mut(c.handles[1])?;
    if !nv.public.has(NV_WRITEDEFINE) && !nv.public.has(NV_WRITE_STCLEAR) {
        return Err(TPM_RC_ATTRIBUTES);
    }
    nv.public.attributes |= NV_WRITELOCKED;
    Ok(())
}

/// TPM2_NV_GlobalWriteLock.
pub fn global_write_lock(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    tpm.global_write_lock = true;
    Ok(())
}

/// TPM2_NV_Read.
pub fn read(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let size = usize::from(r.u16().param(1)?);
    let offset = usize::from(r.u16().param(2)?);
    end(r)?;
    let nv = tpm.nv.get(&c.handles[1]).ok_or(at_handle(TPM_RC_HANDLE, 2))?;
    tpm.check_nv_read(c, nv, c.handles[0])?;
    if offset + size > nv.data.len() {
        return Err(TPM_RC_NV_RANGE);
    }
    if size > MAX_NV_BUFFER {
        return Err(at_param(TPM_RC_VALUE, 1));
    }
    c.out.tpm2b(&nv.data[offset..offset + size]);
    Ok(())
}

/// TPM2_NV_ReadLock.
pub fn read_lock(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    let nv = tpm.nv.get(&c.handles[1]).ok_or(at_handle(TPM_RC_HANDLE, 2))?;
    let p = &nv.public;
    let ok = match c.handles[0] {
        TPM_RH_OWNER => p.has(NV_OWNERREAD),
        TPM_RH_PLATFORM => p.has(NV_PPREAD),
        _ => true,
    };
    if !ok {
        return Err(TPM_RC_NV_AUTHORIZATION);
    }
    if !p.has(NV_READ_STCLEAR) {
        return Err(TPM_RC_ATTRIBUTES);
    }
    tpm.nv_mut(c.handles[1])?.public.attributes |= NV_READLOCKED;
    Ok(())
}

/// TPM2_NV_ChangeAuth (ADMIN role: a policy session with PolicyCommandCode).
pub fn change_auth(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let auth = r.tpm2b(64).param(1)?.to_vec();
    end(r)?;
    let nv = tpm.nv.get_mut(&c.handles[0]).ok_or(at_handle(TPM_RC_HANDLE, 1))?;
    if auth.len() > nv.public.name_alg.size() {
        return Err(at_param(TPM_RC_SIZE, 1));
    }
    nv.auth = Zeroizing::new(trim_auth(&auth).to_vec());
    Ok(())
}
