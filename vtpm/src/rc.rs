//! TPM 2.0 response codes (Part 2, TPM_RC) and helpers that fold the handle, parameter or
//! session number into a format-one code, as the reference implementation does.

/// A TPM response code. `0` is success.
pub type Rc = u32;
/// Result of an engine operation: the error is the TPM_RC to return.
pub type TpmResult<T> = Result<T, Rc>;

pub const TPM_RC_SUCCESS: Rc = 0x000;
pub const TPM_RC_BAD_TAG: Rc = 0x01E;

const RC_VER1: Rc = 0x100;
pub const TPM_RC_INITIALIZE: Rc = RC_VER1;
pub const TPM_RC_FAILURE: Rc = RC_VER1 + 0x001;
pub const TPM_RC_SEQUENCE: Rc = RC_VER1 + 0x003;
pub const TPM_RC_DISABLED: Rc = RC_VER1 + 0x020;
pub const TPM_RC_EXCLUSIVE: Rc = RC_VER1 + 0x021;
pub const TPM_RC_AUTH_TYPE: Rc = RC_VER1 + 0x024;
pub const TPM_RC_AUTH_MISSING: Rc = RC_VER1 + 0x025;
pub const TPM_RC_POLICY: Rc = RC_VER1 + 0x026;
pub const TPM_RC_PCR: Rc = RC_VER1 + 0x027;
pub const TPM_RC_PCR_CHANGED: Rc = RC_VER1 + 0x028;
pub const TPM_RC_UPGRADE: Rc = RC_VER1 + 0x02D;
pub const TPM_RC_TOO_MANY_CONTEXTS: Rc = RC_VER1 + 0x02E;
pub const TPM_RC_AUTH_UNAVAILABLE: Rc = RC_VER1 + 0x02F;
pub const TPM_RC_REBOOT: Rc = RC_VER1 + 0x030;
pub const TPM_RC_UNBALANCED: Rc = RC_VER1 + 0x031;
pub const TPM_RC_COMMAND_SIZE: Rc = RC_VER1 + 0x042;
pub const TPM_RC_COMMAND_CODE: Rc = RC_VER1 + 0x043;
pub const TPM_RC_AUTHSIZE: Rc = RC_VER1 + 0x044;
pub const TPM_RC_AUTH_CONTEXT: Rc = RC_VER1 + 0x045;
pub const TPM_RC_NV_RANGE: Rc = RC_VER1 + 0x046;
pub const TPM_RC_NV_SIZE: Rc = RC_VER1 + 0x047;
pub const TPM_RC_NV_LOCKED: Rc = RC_VER1 + 0x048;
pub const TPM_RC_NV_AUTHORIZATION: Rc = RC_VER1 + 0x049;
pub const TPM_RC_NV_UNINITIALIZED: Rc = RC_VER1 + 0x04A;
pub const TPM_RC_NV_SPACE: Rc = RC_VER1 + 0x04B;
pub const TPM_RC_NV_DEFINED: Rc = RC_VER1 + 0x04C;
pub const TPM_RC_BAD_CONTEXT: Rc = RC_VER1 + 0x050;
pub const TPM_RC_CPHASH: Rc = RC_VER1 + 0x051;
pub const TPM_RC_PARENT: Rc = RC_VER1 + 0x052;
pub const TPM_RC_NEEDS_TEST: Rc = RC_VER1 + 0x053;
pub const TPM_RC_NO_RESULT: Rc = RC_VER1 + 0x054;
pub const TPM_RC_SENSITIVE: Rc = RC_VER1 + 0x055;

const RC_FMT1: Rc = 0x080;
pub const TPM_RC_ASYMMETRIC: Rc = RC_FMT1 + 0x001;
pub const TPM_RC_ATTRIBUTES: Rc = RC_FMT1 + 0x002;
pub const TPM_RC_HASH: Rc = RC_FMT1 + 0x003;
pub const TPM_RC_VALUE: Rc = RC_FMT1 + 0x004;
pub const TPM_RC_HIERARCHY: Rc = RC_FMT1 + 0x005;
pub const TPM_RC_KEY_SIZE: Rc = RC_FMT1 + 0x007;
pub const TPM_RC_MGF: Rc = RC_FMT1 + 0x008;
pub const TPM_RC_MODE: Rc = RC_FMT1 + 0x009;
pub const TPM_RC_TYPE: Rc = RC_FMT1 + 0x00A;
pub const TPM_RC_HANDLE: Rc = RC_FMT1 + 0x00B;
pub const TPM_RC_KDF: Rc = RC_FMT1 + 0x00C;
pub const TPM_RC_RANGE: Rc = RC_FMT1 + 0x00D;
pub const TPM_RC_AUTH_FAIL: Rc = RC_FMT1 + 0x00E;
pub const TPM_RC_NONCE: Rc = RC_FMT1 + 0x00F;
pub const TPM_RC_PP: Rc = RC_FMT1 + 0x010;
pub const TPM_RC_SCHEME: Rc = RC_FMT1 + 0x012;
pub const TPM_RC_SIZE: Rc = RC_FMT1 + 0x015;
pub const TPM_RC_SYMMETRIC: Rc = RC_FMT1 + 0x016;
pub const TPM_RC_TAG: Rc = RC_FMT1 + 0x017;
pub const TPM_RC_SELECTOR: Rc = RC_FMT1 + 0x018;
pub const TPM_RC_INSUFFICIENT: Rc = RC_FMT1 + 0x01A;
pub const TPM_RC_SIGNATURE: Rc = RC_FMT1 + 0x01B;
pub const TPM_RC_KEY: Rc = RC_FMT1 + 0x01C;
pub const TPM_RC_POLICY_FAIL: Rc = RC_FMT1 + 0x01D;
pub const TPM_RC_INTEGRITY: Rc = RC_FMT1 + 0x01F;
pub const TPM_RC_TICKET: Rc = RC_FMT1 + 0x020;
pub const TPM_RC_RESERVED_BITS: Rc = RC_FMT1 + 0x021;
pub const TPM_RC_BAD_AUTH: Rc = RC_FMT1 + 0x022;
pub const TPM_RC_EXPIRED: Rc = RC_FMT1 + 0x023;
pub const TPM_RC_POLICY_CC: Rc = RC_FMT1 + 0x024;
pub const TPM_RC_BINDING: Rc = RC_FMT1 + 0x025;
pub const TPM_RC_CURVE: Rc = RC_FMT1 + 0x026;
pub const TPM_RC_ECC_POINT: Rc = RC_FMT1 + 0x027;

const RC_WARN: Rc = 0x900;
pub const TPM_RC_CONTEXT_GAP: Rc = RC_WARN + 0x001;
pub const TPM_RC_OBJECT_MEMORY: Rc = RC_WARN + 0x002;
pub const TPM_RC_SESSION_MEMORY: Rc = RC_WARN + 0x003;
pub const TPM_RC_SESSION_HANDLES: Rc = RC_WARN + 0x005;
pub const TPM_RC_OBJECT_HANDLES: Rc = RC_WARN + 0x006;
pub const TPM_RC_LOCALITY: Rc = RC_WARN + 0x007;
pub const TPM_RC_REFERENCE_H0: Rc = RC_WARN + 0x010;
pub const TPM_RC_REFERENCE_S0: Rc = RC_WARN + 0x018;
pub const TPM_RC_LOCKOUT: Rc = RC_WARN + 0x021;

const RC_P: Rc = 0x040;
const RC_S: Rc = 0x800;
/// Bits that already carry a handle/parameter/session number in a format-one code.
const RC_NUMBER_MASK: Rc = 0xF40;

fn is_unnumbered_fmt1(rc: Rc) -> bool {
    rc & RC_FMT1 != 0 && rc & RC_NUMBER_MASK == 0
}

/// Folds parameter number `n` (1-based) into a format-one code; other codes pass unchanged.
pub fn at_param(rc: Rc, n: u32) -> Rc {
    if is_unnumbered_fmt1(rc) && (1..=15).contains(&n) { rc + RC_P + (n << 8) } else { rc }
}

/// Folds handle number `n` (1-based) into a format-one code.
pub fn at_handle(rc: Rc, n: u32) -> Rc {
    if is_unnumbered_fmt1(rc) && (1..=7).contains(&n) { rc + (n << 8) } else { rc }
}

/// Folds session number `n` (1-based) into a format-one code.
pub fn at_session(rc: Rc, n: u32) -> Rc {
    if is_unnumbered_fmt1(rc) && (1..=7).contains(&n) { rc + RC_S + (n << 8) } else { rc }
}

/// Extension trait: `parse(...).param(2)?` tags an unmarshalling error with its parameter.
pub trait RcContext<T> {
    fn param(self, n: u32) -> TpmResult<T>;
    fn handle(self, n: u32) -> TpmResult<T>;
}

impl<T> RcContext<T> for TpmResult<T> {
    fn param(self, n: u32) -> TpmResult<T> {
        self.map_err(|rc| at_param(rc, n))
    }
    fn handle(self, n: u32) -> TpmResult<T> {
        self.map_err(|rc| at_handle(rc, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_matches_spec_examples() {
        // Part 2: TPM_RC_VALUE for handle 1 = 0x184, parameter 2 = 0x2C4, session 1 = 0x984.
        assert_eq!(at_handle(TPM_RC_VALUE, 1), 0x184);
        assert_eq!(at_param(TPM_RC_VALUE, 1), 0x1C4);
        assert_eq!(at_param(TPM_RC_HASH, 2), 0x2C3);
        assert_eq!(at_session(TPM_RC_AUTH_FAIL, 1), 0x98E);
        // Already numbered or format-zero codes are not changed.
        assert_eq!(at_param(0x1C4, 3), 0x1C4);
        assert_eq!(at_param(TPM_RC_COMMAND_CODE, 1), TPM_RC_COMMAND_CODE);
        assert_eq!(at_param(TPM_RC_LOCKOUT, 1), TPM_RC_LOCKOUT);
    }
}
