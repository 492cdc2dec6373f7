//! TPM2_GetCapability and TPM2_TestParms: what this TPM implements, reported truthfully.

use alloc::vec::Vec;

use crate::commands::end;
use crate::constants::*;
use crate::dispatch::{COMMANDS, Cmd, MAX_COMMAND_SIZE};
use crate::marshal::{Reader, Writer};
use crate::nv::*;
use crate::pcr::{ALLOCATABLE, extend_localities, reset_localities};
use crate::rc::*;
use crate::session::SessionSlot;
use crate::state::*;
use crate::types::{PCR_COUNT, Public};

/// Largest capability payload (TPM_PT_MAX_CAP_BUFFER).
const MAX_CAP_BUFFER: usize = 1024;
const MAX_CAP_DATA: usize = MAX_CAP_BUFFER - 8;

/// Implemented algorithms and their TPMA_ALGORITHM, in ID order.
const ALGS: &[(u16, u32)] = &[
    (TPM_ALG_RSA, 0x0009),
    (TPM_ALG_SHA1, 0x0004),
    (TPM_ALG_HMAC, 0x0104),
    (TPM_ALG_AES, 0x0002),
    (TPM_ALG_MGF1, 0x0404),
    (TPM_ALG_KEYEDHASH, 0x030C),
    (TPM_ALG_XOR, 0x0006),
    (TPM_ALG_SHA256, 0x0004),
    (TPM_ALG_SHA384, 0x0004),
    (TPM_ALG_SHA512, 0x0004),
    (TPM_ALG_NULL, 0x0000),
    (TPM_ALG_RSASSA, 0x0101),
    (TPM_ALG_RSAES, 0x0201),
    (TPM_ALG_RSAPSS, 0x0101),
    (TPM_ALG_OAEP, 0x0201),
    (TPM_ALG_ECDSA, 0x0101),
    (TPM_ALG_ECDH, 0x0401),
    (TPM_ALG_ECDAA, 0x0101),
    (TPM_ALG_KDF1_SP800_56A, 0x0404),
    (TPM_ALG_KDF1_SP800_108, 0x0404),
    (TPM_ALG_ECC, 0x0009),
    (TPM_ALG_SYMCIPHER, 0x0008),
    (TPM_ALG_CFB, 0x0202),
];

/// Whether `alg` is an implemented algorithm (listed by TPM_CAP_ALGS).
pub fn implemented(alg: u16) -> bool {
    ALGS.iter().any(|(a, _)| *a == alg)
}

const PERMANENT_HANDLES: &[u32] = &[
    TPM_RH_OWNER,
    TPM_RH_NULL,
    TPM_RS_PW,
    TPM_RH_LOCKOUT,
    TPM_RH_ENDORSEMENT,
    TPM_RH_PLATFORM,
    TPM_RH_PLATFORM_NV,
];

fn ascii(s: &[u8; 4]) -> u32 {
    u32::from_be_bytes(*s)
}

impl Tpm {
    /// (property, value) pairs of TPM_PT_FIXED and TPM_PT_VAR, in property order.
    fn properties(&self, client: crate::ClientId) -> Vec<(u32, u32)> {
        let loaded_sessions = self.loaded_sessions_of(client) as u32;
        let active = self.sessions.len() as u32;
        let counters =
            self.nv.values().filter(|n| n.public.nv_type() == TPM_NT_COUNTER).count() as u32;
        let h = &self.hier;
        let permanent = u32::from(!h.owner.auth.is_empty())
            | u32::from(!h.endorsement.auth.is_empty()) << 1
            | u32::from(!h.lockout.auth.is_empty()) << 2
            | u32::from(h.disable_clear) << 8
            | u32::from(self.in_lockout()) << 9
            | 1 << 10;
        let startup_clear = u32::from(h.ph_enable)
            | u32::from(h.sh_enable) << 1
            | u32::from(h.eh_enable) << 2
            | u32::from(h.ph_enable_nv) << 3
            | u32::from(self.prev_orderly) << 31;
        let version = env!("CARGO_PKG_VERSION_MAJOR").parse::<u32>().unwrap_or(0) << 16
            | env!("CARGO_PKG_VERSION_MINOR").parse::<u32>().unwrap_or(0);
        alloc::vec![
            (0x100, ascii(b"2.0\0")),
            (0x101, 0),
            (0x102, 159),
            (0x103, 312),
            (0x104, 2019),
            (0x105, ascii(b"SVSM")),
            (0x106, ascii(b"vTPM")),
            (0x107, ascii(b" in ")),
            (0x108, ascii(b"Rust")),
            (0x109, 0),
            (0x10A, 1),
            (0x10B, version),
            (0x10C, 0),
            (0x10D, crate::types::MAX_BUFFER as u32),
            (0x10E, MAX_LOADED_OBJECTS as u32),
            (0x10F, PERSISTENT_MAX as u32),
            (0x110, MAX_LOADED_SESSIONS as u32),
            (0x111, MAX_ACTIVE_SESSIONS as u32),
            (0x112, PCR_COUNT as u32),
            (0x113, crate::types::PCR_SELECT_SIZE as u32),
            (0x114, CONTEXT_GAP_MAX as u32),
            (0x116, NV_COUNTERS_MAX as u32),
            (0x117, NV_INDEX_MAX as u32),
            (0x118, 0x2),
            (0x119, 1),
            (0x11A, u32::from(TPM_ALG_SHA256)),
            (0x11B, u32::from(TPM_ALG_AES)),
            (0x11C, 256),
            (0x11D, 0),
            (0x11E, MAX_COMMAND_SIZE as u32),
            (0x11F, MAX_COMMAND_SIZE as u32),
            (0x120, 64),
            (0x121, 2048),
            (0x122, 1024),
            (0x123, 1),
            (0x124, 0),
            (0x125, 0x105),
            (0x126, 0),
            (0x127, 0),
            (0x128, 0),
            (0x129, COMMANDS.len() as u32),
            (0x12A, COMMANDS.len() as u32),
            (0x12B, 0),
            (0x12C, crate::types::MAX_NV_BUFFER as u32),
            (0x12D, 0),
            (0x12E, MAX_CAP_BUFFER as u32),
            (0x200, permanent),
            (0x201, startup_clear),
            (0x202, self.nv.len() as u32),
            (0x203, loaded_sessions),
            (0x204, (MAX_LOADED_SESSIONS as u32).saturating_sub(loaded_sessions)),
            (0x205, active),
            (0x206, (MAX_ACTIVE_SESSIONS as u32).saturating_sub(active)),
            (
                0x207,
                (MAX_LOADED_OBJECTS - self.loaded_objects_of(client).min(MAX_LOADED_OBJECTS))
                    as u32
            ),
            (0x208, self.persistent.len() as u32),
            (0x209, (PERSISTENT_MAX - self.persistent.len().min(PERSISTENT_MAX)) as u32),
            (0x20A, counters),
            (0x20B, (NV_COUNTERS_MAX as u32).saturating_sub(counters)),
            (0x20C, 0),
            (0x20D, 2),
            (0x20E, self.da.failed_tries),
            (0x20F, self.da.max_tries),
            (0x210, self.da.recovery_time),
            (0x211, self.da.lockout_recovery),
            (0x212, 0),
            (0x213, 0),
            (0x214, 0),
        ]
    }

    fn handles_of_type(&self, client: crate::ClientId, ty: u8) -> Option<Vec<u32>> {
        Some(match ty {
            TPM_HT_PCR => (0..PCR_COUNT as u32).collect(),
            TPM_HT_NV_INDEX => self.nv.keys().copied().collect(),
            TPM_HT_HMAC_SESSION => self
                .sessions
                .iter()
                .filter(|(_, s)| matches!(s, SessionSlot::Loaded { owner, .. } if *owner == client))
                .map(|(h, _)| *h)
                .collect(),
            TPM_HT_POLICY_SESSION => self
                .sessions
                .iter()
                .filter(|(_, s)| matches!(s, SessionSlot::Saved { .. }))
                .map(|(h, _)| *h)
                .collect(),
            TPM_HT_PERMANENT => PERMANENT_HANDLES.to_vec(),
            TPM_HT_TRANSIENT => {
                self.objects.iter().filter(|(_, t)| t.owner == client).map(|(h, _)| *h).collect()
            }
            TPM_HT_PERSISTENT => self.persistent.keys().copied().collect(),
            _ => return None,
        })
    }
}

/// Writes up to `count` items from `items` (already filtered to >= property); returns moreData.
fn write_list<T>(
    w: &mut Writer,
    items: &[T],
    count: u32,
    item_size: usize,
    mut each: impl FnMut(&mut Writer, &T),
) -> bool {
    let cap = (MAX_CAP_DATA / item_size).min(count as usize);
    let n = items.len().min(cap);
    w.u32(n as u32);
    for it in &items[..n] {
        each(w, it);
    }
    items.len() > n
}

/// TPM2_GetCapability.
pub fn get_capability(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let cap = r.u32().param(1)?;
    let property = r.u32().param(2)?;
    let count = r.u32().param(3)?;
    end(r)?;
    let mut body = Writer::new();
    body.u32(cap);
    let more = match cap {
        TPM_CAP_ALGS => {
            let items: Vec<_> = ALGS.iter().filter(|(a, _)| u32::from(*a) >= property).collect();
            write_list(&mut body, &items, count, 6, |w, (a, attr)| {
                w.u16(*a).u32(*attr);
            })
        }
        TPM_CAP_HANDLES => {
            let ty = (property >> 24) as u8;
            let mut hs = tpm.handles_of_type(c.client, ty).ok_or(at_param(TPM_RC_HANDLE, 2))?;
            if ty == TPM_HT_HMAC_SESSION || ty == TPM_HT_POLICY_SESSION {
                hs.retain(|&h| h & 0x00FF_FFFF >= property & 0x00FF_FFFF);
                hs.sort_unstable_by_key(|h| h & 0x00FF_FFFF);
            } else {
                hs.retain(|&h| h >= property);
                hs.sort_unstable();
            }
            write_list(&mut body, &hs, count, 4, |w, h| {
                w.u32(*h);
            })
        }
        TPM_CAP_COMMANDS => {
            let items: Vec<_> = COMMANDS.iter().filter(|s| s.cc >= (property & 0xFFFF)).collect();
            write_list(&mut body, &items, count, 4, |w, s| {
                w.u32(s.tpma_cc());
            })
        }
        TPM_CAP_PP_COMMANDS | TPM_CAP_AUDIT_COMMANDS => {
            let set =
                if cap == TPM_CAP_PP_COMMANDS { &tpm.pp_commands } else { &tpm.audit.commands };
            let items: Vec<u32> = set.iter().copied().filter(|cc| *cc >= property).collect();
            write_list(&mut body, &items, count, 4, |w, cc| {
                w.u32(*cc);
            })
        }
        TPM_CAP_PCRS => {
            let banks: Vec<_> = ALLOCATABLE.iter().collect();
            body.u32(banks.len() as u32);
            for alg in banks {
                let on = tpm.pcrs.bank(*alg).is_some();
                let b = if on { 0xFF } else { 0 };
                body.u16(alg.alg()).u8(3).bytes(&[b, b, b]);
            }
            false
        }
        TPM_CAP_TPM_PROPERTIES => {
            let items: Vec<_> =
                tpm.properties(c.client).into_iter().filter(|(p, _)| *p >= property).collect();
            write_list(&mut body, &items, count, 8, |w, (p, v)| {
                w.u32(*p).u32(*v);
            })
        }
        TPM_CAP_PCR_PROPERTIES => {
            let items: Vec<(u32, u32)> =
                pcr_properties().into_iter().filter(|(t, _)| *t >= property).collect();
            write_list(&mut body, &items, count, 8, |w, (t, bits)| {
                w.u32(*t).u8(3).bytes(&bits.to_le_bytes()[..3]);
            })
        }
        TPM_CAP_ECC_CURVES => {
            let items: Vec<u16> = [TPM_ECC_NIST_P256, TPM_ECC_NIST_P384, TPM_ECC_BN_P256]
                .into_iter()
                .filter(|c| u32::from(*c) >= property)
                .collect();
            write_list(&mut body, &items, count, 2, |w, c| {
                w.u16(*c);
            })
        }
        TPM_CAP_AUTH_POLICIES => {
            let h = &tpm.hier;
            let all = [
                (TPM_RH_OWNER, &h.owner),
                (TPM_RH_LOCKOUT, &h.lockout),
                (TPM_RH_ENDORSEMENT, &h.endorsement),
                (TPM_RH_PLATFORM, &h.platform),
            ];
            let items: Vec<_> = all.iter().filter(|(hd, _)| *hd >= property).collect();
            write_list(&mut body, &items, count, 4 + 2 + 64, |w, (hd, auth)| {
                w.u32(*hd);
                match auth.policy_alg {
                    Some(alg) => {
                        w.u16(alg.alg()).bytes(&auth.policy);
                    }
                    None => {
                        w.u16(TPM_ALG_NULL);
                    }
                }
            })
        }
        TPM_CAP_ACT => {
            body.u32(0);
            false
        }
        _ => return Err(at_param(TPM_RC_VALUE, 1)),
    };
    c.out.u8(u8::from(more)).bytes(&body.into_vec());
    Ok(())
}

/// TPM_PT_PCR properties as (tag, PCR bitmap).
fn pcr_properties() -> Vec<(u32, u32)> {
    let mask =
        |f: &dyn Fn(usize) -> bool| (0..PCR_COUNT).filter(|&i| f(i)).fold(0u32, |m, i| m | 1 << i);
    let mut out = alloc::vec![(0x00, mask(&crate::pcr::state_saved))];
    for loc in 0..5u8 {
        out.push((0x01 + 2 * u32::from(loc), mask(&|i| extend_localities(i) & (1 << loc) != 0)));
        out.push((0x02 + 2 * u32::from(loc), mask(&|i| reset_localities(i) & (1 << loc) != 0)));
    }
    out.push((0x11, mask(&crate::pcr::no_increment)));
    out.push((0x12, mask(&|i| (17..=22).contains(&i))));
    out.push((0x13, 0));
    out.push((0x14, 0));
    out
}

/// TPM2_TestParms: succeeds if the parameters parse as a supported set.
pub fn test_parms(_tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let kind = r.u16().param(1)?;
    match kind {
        TPM_ALG_RSA | TPM_ALG_ECC | TPM_ALG_KEYEDHASH | TPM_ALG_SYMCIPHER => {
            Public::parse_params(r, kind).param(1)?;
        }
        // TPMI_ALG_PUBLIC: #TPM_RC_TYPE.
        _ => return Err(at_param(TPM_RC_TYPE, 1)),
    }
    end(r)
}
