//! Numeric constants of TPM 2.0 Library Part 2 (algorithm IDs, structure tags, handles,
//! attributes, capabilities and properties) used by the engine.

// TPM_ALG_ID
pub const TPM_ALG_RSA: u16 = 0x0001;
pub const TPM_ALG_SHA1: u16 = 0x0004;
pub const TPM_ALG_HMAC: u16 = 0x0005;
pub const TPM_ALG_AES: u16 = 0x0006;
pub const TPM_ALG_MGF1: u16 = 0x0007;
pub const TPM_ALG_KEYEDHASH: u16 = 0x0008;
pub const TPM_ALG_XOR: u16 = 0x000A;
pub const TPM_ALG_SHA256: u16 = 0x000B;
pub const TPM_ALG_SHA384: u16 = 0x000C;
pub const TPM_ALG_SHA512: u16 = 0x000D;
pub const TPM_ALG_NULL: u16 = 0x0010;
pub const TPM_ALG_RSASSA: u16 = 0x0014;
pub const TPM_ALG_RSAES: u16 = 0x0015;
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
pub const TPM_ALG_OAEP: u16 = 0x0017;
pub const TPM_ALG_ECDSA: u16 = 0x0018;
pub const TPM_ALG_ECDH: u16 = 0x0019;
pub const TPM_ALG_ECDAA: u16 = 0x001A;
pub const TPM_ALG_KDF1_SP800_56A: u16 = 0x0020;
pub const TPM_ALG_KDF1_SP800_108: u16 = 0x0022;
pub const TPM_ALG_ECC: u16 = 0x0023;
pub const TPM_ALG_SYMCIPHER: u16 = 0x0025;
pub const TPM_ALG_CFB: u16 = 0x0043;

// TPM_ECC_CURVE
pub const TPM_ECC_NIST_P256: u16 = 0x0003;
pub const TPM_ECC_NIST_P384: u16 = 0x0004;
pub const TPM_ECC_BN_P256: u16 = 0x0010;

// TPM_ST
pub const TPM_ST_RSP_COMMAND: u16 = 0x00C4;
pub const TPM_ST_NULL: u16 = 0x8000;
pub const TPM_ST_NO_SESSIONS: u16 = 0x8001;
pub const TPM_ST_SESSIONS: u16 = 0x8002;
pub const TPM_ST_ATTEST_NV: u16 = 0x8014;
pub const TPM_ST_ATTEST_COMMAND_AUDIT: u16 = 0x8015;
pub const TPM_ST_ATTEST_SESSION_AUDIT: u16 = 0x8016;
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
pub const TPM_ST_ATTEST_TIME: u16 = 0x8019;
pub const TPM_ST_ATTEST_CREATION: u16 = 0x801A;
pub const TPM_ST_CREATION: u16 = 0x8021;
pub const TPM_ST_VERIFIED: u16 = 0x8022;
pub const TPM_ST_AUTH_SECRET: u16 = 0x8023;
pub const TPM_ST_HASHCHECK: u16 = 0x8024;
pub const TPM_ST_AUTH_SIGNED: u16 = 0x8025;

// TPM_SU
pub const TPM_SU_CLEAR: u16 = 0x0000;
pub const TPM_SU_STATE: u16 = 0x0001;

// TPM_SE
pub const TPM_SE_HMAC: u8 = 0x00;
pub const TPM_SE_POLICY: u8 = 0x01;
pub const TPM_SE_TRIAL: u8 = 0x03;

// Handle types (TPM_HT) and permanent handles (TPM_RH)
pub const TPM_HT_PCR: u8 = 0x00;
pub const TPM_HT_NV_INDEX: u8 = 0x01;
pub const TPM_HT_HMAC_SESSION: u8 = 0x02;
pub const TPM_HT_POLICY_SESSION: u8 = 0x03;
pub const TPM_HT_PERMANENT: u8 = 0x40;
pub const TPM_HT_TRANSIENT: u8 = 0x80;
pub const TPM_HT_PERSISTENT: u8 = 0x81;

pub const TPM_RH_OWNER: u32 = 0x4000_0001;
pub const TPM_RH_NULL: u32 = 0x4000_0007;
pub const TPM_RS_PW: u32 = 0x4000_0009;
pub const TPM_RH_LOCKOUT: u32 = 0x4000_000A;
pub const TPM_RH_ENDORSEMENT: u32 = 0x4000_000B;
pub const TPM_RH_PLATFORM: u32 = 0x4000_000C;
pub const TPM_RH_PLATFORM_NV: u32 = 0x4000_000D;

/// Handle type of a handle (its most significant octet).
pub fn handle_type(handle: u32) -> u8 {
    (handle >> 24) as u8
}

// TPMA_OBJECT
pub const OA_FIXED_TPM: u32 = 1 << 1;
pub const OA_ST_CLEAR: u32 = 1 << 2;
pub const OA_FIXED_PARENT: u32 = 1 << 4;
pub const OA_SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
pub const OA_USER_WITH_AUTH: u32 = 1 << 6;
pub const OA_ADMIN_WITH_POLICY: u32 = 1 << 7;
pub const OA_FIRMWARE_LIMITED: u32 = 1 << 8;
pub const OA_SVN_LIMITED: u32 = 1 << 9;
pub const OA_NO_DA: u32 = 1 << 10;
pub const OA_ENCRYPTED_DUPLICATION: u32 = 1 << 11;
pub const OA_RESTRICTED: u32 = 1 << 16;
pub const OA_DECRYPT: u32 = 1 << 17;
pub const OA_SIGN: u32 = 1 << 18;
pub const OA_X509SIGN: u32 = 1 << 19;
/// Bits of TPMA_OBJECT that are reserved (must be clear).
pub const OA_RESERVED: u32 = 0x0000_0001 | 0x0000_0008 | 0x0000_F000 | 0xFFF0_0000;

// TPMA_SESSION
pub const SA_CONTINUE_SESSION: u8 = 0x01;
pub const SA_AUDIT_EXCLUSIVE: u8 = 0x02;
pub const SA_AUDIT_RESET: u8 = 0x04;
pub const SA_DECRYPT: u8 = 0x20;
pub const SA_ENCRYPT: u8 = 0x40;
pub const SA_AUDIT: u8 = 0x80;
pub const SA_RESERVED: u8 = 0x18;

// TPMA_NV
pub const NV_PPWRITE: u32 = 1 << 0;
pub const NV_OWNERWRITE: u32 = 1 << 1;
pub const NV_AUTHWRITE: u32 = 1 << 2;
pub const NV_POLICYWRITE: u32 = 1 << 3;
pub const NV_TYPE_SHIFT: u32 = 4;
pub const NV_TYPE_MASK: u32 = 0xF << NV_TYPE_SHIFT;
pub const NV_POLICY_DELETE: u32 = 1 << 10;
pub const NV_WRITELOCKED: u32 = 1 << 11;
pub const NV_WRITEALL: u32 = 1 << 12;
pub const NV_WRITEDEFINE: u32 = 1 << 13;
pub const NV_WRITE_STCLEAR: u32 = 1 << 14;
pub const NV_GLOBALLOCK: u32 = 1 << 15;
pub const NV_PPREAD: u32 = 1 << 16;
pub const NV_OWNERREAD: u32 = 1 << 17;
pub const NV_AUTHREAD: u32 = 1 << 18;
pub const NV_POLICYREAD: u32 = 1 << 19;
pub const NV_NO_DA: u32 = 1 << 25;
pub const NV_ORDERLY: u32 = 1 << 26;
pub const NV_CLEAR_STCLEAR: u32 = 1 << 27;
pub const NV_READLOCKED: u32 = 1 << 28;
pub const NV_WRITTEN: u32 = 1 << 29;
pub const NV_PLATFORMCREATE: u32 = 1 << 30;
pub const NV_READ_STCLEAR: u32 = 1 << 31;
pub const NV_RESERVED: u32 = 0x0000_0300 | 0x01F0_0000;

// TPM_NT (NV index types)
pub const TPM_NT_ORDINARY: u32 = 0x0;
pub const TPM_NT_COUNTER: u32 = 0x1;
pub const TPM_NT_BITS: u32 = 0x2;
pub const TPM_NT_EXTEND: u32 = 0x4;
pub const TPM_NT_PIN_FAIL: u32 = 0x8;
pub const TPM_NT_PIN_PASS: u32 = 0x9;

// TPM_CAP
pub const TPM_CAP_ALGS: u32 = 0;
pub const TPM_CAP_HANDLES: u32 = 1;
pub const TPM_CAP_COMMANDS: u32 = 2;
pub const TPM_CAP_PP_COMMANDS: u32 = 3;
pub const TPM_CAP_AUDIT_COMMANDS: u32 = 4;
pub const TPM_CAP_PCRS: u32 = 5;
pub const TPM_CAP_TPM_PROPERTIES: u32 = 6;
pub const TPM_CAP_PCR_PROPERTIES: u32 = 7;
pub const TPM_CAP_ECC_CURVES: u32 = 8;
pub const TPM_CAP_AUTH_POLICIES: u32 = 9;
pub const TPM_CAP_ACT: u32 = 10;

/// TPM_GENERATED_VALUE, the magic number at the start of every TPMS_ATTEST.
pub const TPM_GENERATED_VALUE: u32 = 0xFF54_4347;
