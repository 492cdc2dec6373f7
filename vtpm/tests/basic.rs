//! Startup, GetRandom, PCR and GetCapability against known command/response bytes.

mod common;
use common::*;
use vtpm::Tpm;

#[test]
fn startup_rules() {
    let mut tpm = Tpm::manufacture(Box::new(CountingEntropy(0))).unwrap();
    tpm.power_on();
    // Anything before Startup is TPM_RC_INITIALIZE.
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17B, &[], &[0, 8]));
    assert_eq!(rsp, hex("8001 0000000a 00000100"));
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x144, &[], &[0, 0]));
    assert_eq!(rsp, hex("8001 0000000a 00000000"));
    // A second Startup is TPM_RC_INITIALIZE; a repeated power-on changes nothing.
    tpm.power_on();
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x144, &[], &[0, 0]));
    assert_eq!(rc(&rsp), 0x100);
    // Startup(STATE) without a saved state is TPM_RC_VALUE on parameter 1.
    tpm.reset();
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x144, &[], &[0, 1]))), 0x1C4);
}

#[test]
fn malformed_headers() {
    let mut tpm = started();
    // Bad tag: TPM_RC_BAD_TAG with the TPM_ST_RSP_COMMAND tag.
    assert_eq!(tpm.execute(C, 0, &cmd(0x1234, 0x17B, &[], &[0, 8])), hex("00c4 0000000a 0000001e"));
    // Size field disagrees with the buffer.
    let mut c = cmd(0x8001, 0x17B, &[], &[0, 8]);
    c[5] += 1;
    assert_eq!(rc(&tpm.execute(C, 0, &c)), 0x142);
    // Unknown command code, truncated parameters, trailing bytes.
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x1FF, &[], &[]))), 0x143);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x17B, &[], &[0]))), 0x1DA);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x17B, &[], &[0, 8, 9]))), 0x095);
    for len in 0..10 {
        let rsp = tpm.execute(C, 0, &vec![0x80; len]);
        assert!(rc(&rsp) != 0);
    }
}

#[test]
fn get_random_sizes() {
    let mut tpm = started();
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17B, &[], &[0, 16]));
    assert_eq!(rc(&rsp), 0);
    assert_eq!(&rsp[10..12], &[0, 16]);
    assert_eq!(rsp.len(), 28);
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17B, &[], &[0xFF, 0xFF]));
    assert_eq!(&rsp[10..12], &[0, 64]);
}

#[test]
fn pcr_extend_and_read_known_answer() {
    let mut tpm = started();
    // PCR_Extend(16, sha256 = 32 zero octets) with a password session.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("00000001 000b"));
    rest.extend_from_slice(&[0u8; 32]);
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x182, &[16], &rest));
    assert_eq!(rsp, hex("8002 00000013 00000000 00000000 0000 01 0000"));
    // A password session always answers continueSession, even if the command cleared it.
    let mut rest = pw_auth(b"");
    rest[10] = 0;
    rest.extend_from_slice(&hex("00000000"));
    let rsp = tpm.execute(C, 0, &cmd(0x8002, 0x182, &[16], &rest));
    assert_eq!(rsp, hex("8002 00000013 00000000 00000000 0000 01 0000"));
    // PCR_Read(sha256: PCR 16).
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17E, &[], &hex("00000001 000b 03 000001")));
    assert_eq!(
        rsp,
        // Startup(CLEAR) counts 20 PCR changes (all but the no-increment PCR 16 and 21-23);
        // the extends of PCR 16 do not count.
        hex("8001 0000003e 00000000 00000014 00000001 000b 03 000001 00000001 0020
             f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b")
    );
    // PCR 17 cannot be extended from locality 0; PCR 99 is not a PCR.
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("00000000"));
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x182, &[17], &rest))), 0x907);
    assert_eq!(rc(&tpm.execute(C, 3, &cmd(0x8002, 0x182, &[17], &rest))), 0);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x182, &[99], &rest))), 0x184);
    // PCR_Extend needs an authorization session.
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8001, 0x182, &[16], &hex("00000000")))), 0x125);
}

#[test]
fn get_capability_lists() {
    let mut tpm = started();
    // Bad capability: TPM_RC_VALUE on parameter 1.
    assert_eq!(
        rc(&tpm.execute(C, 0, &cmd(0x8001, 0x17A, &[], &hex("000000ff 00000000 00000001")))),
        0x1C4
    );
    // PCRS: every implemented hash; SHA-1/256/384 allocated, SHA-512 not.
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17A, &[], &hex("00000005 00000000 00000001")));
    assert_eq!(
        rsp,
        hex("8001 0000002b 00000000 00 00000005 00000004 0004 03 ffffff 000b 03 ffffff 000c 03 ffffff
             000d 03 000000")
    );
    // TPM_PT_FAMILY_INDICATOR.
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17A, &[], &hex("00000006 00000100 00000001")));
    assert_eq!(rsp, hex("8001 0000001b 00000000 01 00000006 00000001 00000100 322e3000"));
}

#[test]
fn dictionary_attack_lockout_and_reset() {
    let mut tpm = started();
    // A sealed object would do; an NV index without NO_DA is simpler: define with auth "pw".
    let mut rest = pw_auth(b"");
    rest.extend_from_slice(&hex("0002 7077")); // auth "pw"
    rest.extend_from_slice(&hex("000e 01500001 000b 00040004 0000 0008")); // AUTHREAD|AUTHWRITE
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x12A, &[0x4000_0001], &rest))), 0);
    let write = |pw: &[u8]| {
        let mut r = pw_auth(pw);
        r.extend_from_slice(&hex("0008 0102030405060708 0000"));
        cmd(0x8002, 0x137, &[0x0150_0001, 0x0150_0001], &r)
    };
    assert_eq!(rc(&tpm.execute(C, 0, &write(b"pw"))), 0);
    // Three failures (maxTries = 3) are TPM_RC_AUTH_FAIL on session 1, then lockout.
    for _ in 0..3 {
        assert_eq!(rc(&tpm.execute(C, 0, &write(b"xx"))), 0x98E);
    }
    assert_eq!(rc(&tpm.execute(C, 0, &write(b"pw"))), 0x921);
    // TPM_PT_LOCKOUT_COUNTER reports 3.
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x17A, &[], &hex("00000006 0000020e 00000001")));
    assert_eq!(rsp[rsp.len() - 4..], [0, 0, 0, 3]);
    // DictionaryAttackLockReset with lockoutAuth clears it.
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x139, &[0x4000_000A], &pw_auth(b"")))), 0);
    assert_eq!(rc(&tpm.execute(C, 0, &write(b"pw"))), 0);
    // A wrong lockoutAuth blocks lockoutAuth itself.
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x139, &[0x4000_000A], &pw_auth(b"no")))), 0x98E);
    assert_eq!(rc(&tpm.execute(C, 0, &cmd(0x8002, 0x139, &[0x4000_000A], &pw_auth(b"")))), 0x921);
}
