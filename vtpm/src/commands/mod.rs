//! Command handlers, one module per Part 3 chapter group. Each handler parses its parameters
//! (tagging errors with the parameter number), checks that nothing is left over, then acts.

pub mod clock;
pub mod pcr;
pub mod random;
pub mod startup;

use crate::marshal::Reader;
use crate::rc::*;

/// Ends parameter parsing: left-over octets are TPM_RC_SIZE.
pub fn end(r: &Reader) -> TpmResult<()> {
    if r.is_empty() { Ok(()) } else { Err(TPM_RC_SIZE) }
}

pub const TPM_CC_STARTUP: u32 = 0x144;
pub const TPM_CC_GET_CAPABILITY: u32 = 0x17A;
pub const TPM_CC_GET_TEST_RESULT: u32 = 0x17C;
