//! Command handlers, one module per Part 3 chapter group. Each handler parses its parameters
//! (tagging errors with the parameter number), checks that nothing is left over, then acts.

pub mod asym;
pub mod attest;
pub mod audit;
pub mod clock;
pub mod duplication;
pub mod ecdaa;
pub mod hash;
pub mod hierarchy;
pub mod nv;
pub mod object;
pub mod pcr;
pub mod policy;
pub mod random;
pub mod session;
pub mod sign;
pub mod startup;
pub mod sym;

use crate::constants::*;
use crate::marshal::Reader;
use crate::rc::*;
use crate::state::Tpm;

/// Ends parameter parsing: left-over octets are TPM_RC_SIZE.
pub fn end(r: &Reader) -> TpmResult<()> {
    if r.is_empty() { Ok(()) } else { Err(TPM_RC_SIZE) }
}

pub const TPM_CC_STARTUP: u32 = 0x144;
pub const TPM_CC_GET_CAPABILITY: u32 = 0x17A;
pub const TPM_CC_GET_TEST_RESULT: u32 = 0x17C;

/// TPMI_RH_HIERARCHY(+): owner, endorsement, platform (or NULL); disabled hierarchies are
/// TPM_RC_HIERARCHY.
pub fn parse_hierarchy(tpm: &Tpm, r: &mut Reader, allow_null: bool) -> TpmResult<u32> {
    let h = r.u32()?;
    match h {
        TPM_RH_NULL if allow_null => Ok(h),
        TPM_RH_OWNER | TPM_RH_ENDORSEMENT | TPM_RH_PLATFORM => {
            if tpm.hierarchy_enabled(h) {
                Ok(h)
            } else {
                Err(TPM_RC_HIERARCHY)
            }
        }
        _ => Err(TPM_RC_VALUE),
    }
}
