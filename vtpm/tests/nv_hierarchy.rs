//! NV index semantics (initial contents, WRITTEN, locks, counters, authorization choices) and
//! hierarchy control, against the values Part 3 and libtpms give.

mod common;
use common::*;

const OWNER: u32 = 0x4000_0001;
const INDEX: u32 = 0x0150_0010;

/// NV_DefineSpace(owner, auth "", index with `attributes`, `size`).
fn define(tpm: &mut vtpm::Tpm, attributes: u32, size: u16) -> u32 {
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("0000 000e"));
    rest.extend_from_slice(&INDEX.to_be_bytes());
    rest.extend_from_slice(&hex("000b"));
    rest.extend_from_slice(&attributes.to_be_bytes());
    rest.extend_from_slice(&hex("0000"));
    rest.extend_from_slice(&size.to_be_bytes());
    rc(&tpm.execute(C, 0, &cmd(0x8002, 0x12A, &[OWNER], &rest)))
}

fn write(tpm: &mut vtpm::Tpm, auth: u32, data: &[u8], offset: u16) -> u32 {
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&(data.len() as u16).to_be_bytes());
    rest.extend_from_slice(data);
    rest.extend_from_slice(&offset.to_be_bytes());
    rc(&tpm.execute(C, 0, &cmd(0x8002, 0x137, &[auth, INDEX], &rest)))
}

fn read(tpm: &mut vtpm::Tpm, auth: u32, size: u16, offset: u16) -> Vec<u8> {
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&size.to_be_bytes());
    rest.extend_from_slice(&offset.to_be_bytes());
    tpm.execute(C, 0, &cmd(0x8002, 0x14E, &[auth, INDEX], &rest))
}

const OWNERWRITE: u32 = 1 << 1;
const AUTHWRITE: u32 = 1 << 2;
const WRITEDEFINE: u32 = 1 << 13;
const OWNERREAD: u32 = 1 << 17;
const AUTHREAD: u32 = 1 << 18;

#[test]
fn ordinary_index_lifecycle() {
    let mut tpm = started();
    assert_eq!(define(&mut tpm, OWNERWRITE | OWNERREAD | WRITEDEFINE, 16), 0);
    assert_eq!(define(&mut tpm, OWNERWRITE | OWNERREAD, 16), 0x14C, "TPM_RC_NV_DEFINED");
    // Not yet written: TPM_RC_NV_UNINITIALIZED.
    assert_eq!(rc(&read(&mut tpm, OWNER, 4, 0)), 0x14A);
    assert_eq!(write(&mut tpm, OWNER, b"abcd", 2), 0);
    // Unwritten octets read as 0xFF.
    let rsp = read(&mut tpm, OWNER, 8, 0);
    assert_eq!(rc(&rsp), 0);
    assert_eq!(rsp[14..24], hex("0008 ffff 61626364 ffff")[..]);
    // Out of range, then the index itself cannot authorize (no AUTHREAD/AUTHWRITE).
    assert_eq!(rc(&read(&mut tpm, OWNER, 8, 12)), 0x146, "TPM_RC_NV_RANGE");
    assert_eq!(rc(&read(&mut tpm, INDEX, 4, 0)), 0x12F, "TPM_RC_AUTH_UNAVAILABLE");
    // WriteLock (WRITEDEFINE) makes writes fail with TPM_RC_NV_LOCKED.
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x138, &[OWNER, INDEX], &pw_auth(b"")));
    assert_eq!(rc(&rsp), 0);
    assert_eq!(write(&mut tpm, OWNER, b"x", 0), 0x148);
    // Undefine; then the handle is gone.
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x122, &[OWNER, INDEX], &pw_auth(b"")));
    assert_eq!(rc(&rsp), 0);
    assert_eq!(rc(&read(&mut tpm, OWNER, 4, 0)), 0x28B, "TPM_RC_HANDLE on handle 2");
}

#[test]
fn counter_index_starts_after_deleted_counters() {
    let mut tpm = started();
    let counter = AUTHWRITE | AUTHREAD | (1 << 4);
    let increment = |tpm: &mut vtpm::Tpm| {
        rc(&tpm.execute(C, 0, &cmd(0x8002, 0x134, &[INDEX, INDEX], &pw_auth(b""))))
    };
    assert_eq!(define(&mut tpm, counter, 8), 0);
    assert_eq!(increment(&mut tpm), 0);
    assert_eq!(increment(&mut tpm), 0);
    assert_eq!(read(&mut tpm, INDEX, 8, 0)[14..24], hex("0008 0000000000000002")[..]);
    // A counter must be 8 octets; NV_Write is not allowed on it.
    assert_eq!(write(&mut tpm, INDEX, b"12345678", 0), 0x082, "TPM_RC_ATTRIBUTES");
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x122, &[OWNER, INDEX], &pw_auth(b"")));
    assert_eq!(rc(&rsp), 0);
    assert_eq!(define(&mut tpm, counter, 4), 0x2D5, "TPM_RC_SIZE on parameter 2");
    // A new counter continues from the largest deleted one.
    assert_eq!(define(&mut tpm, counter, 8), 0);
    assert_eq!(increment(&mut tpm), 0);
    assert_eq!(read(&mut tpm, INDEX, 8, 0)[14..24], hex("0008 0000000000000003")[..]);
}

#[test]
fn disabled_owner_hierarchy_hides_its_objects_and_indices() {
    let mut tpm = started();
    assert_eq!(define(&mut tpm, OWNERWRITE | OWNERREAD, 8), 0);
    // HierarchyControl(owner, enable=owner, NO).
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("40000001 00"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x121, &[OWNER], &rest))), 0);
    // The owner handle is now TPM_RC_HIERARCHY; the index is TPM_RC_HANDLE.
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x121, &[OWNER], &rest))), 0x185);
    let nv_public = tpm.execute(C, 0, &cmd(0x8001, 0x169, &[INDEX], &[]));
    assert_eq!(rc(&nv_public), 0x18B);
    // The platform re-enables it.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("40000001 01"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x121, &[0x4000_000C], &rest))), 0);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x169, &[INDEX], &[]))), 0);
}
