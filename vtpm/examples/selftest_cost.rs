//! Time of the known-answer self-tests, as a client sees it: TPM2_Startup (which tests the
//! hashes, HMAC, AES-CFB and the KDFs), then TPM2_SelfTest(fullTest = NO) (RSA and ECC, which
//! are otherwise tested before the first command that may use them), then
//! TPM2_SelfTest(fullTest = YES) (everything again); also the ECC and RSA tests alone
//! (TPM2_IncrementalSelfTest). Median of 21 fresh TPMs each.
//! Run with `cargo run --release -p vtpm --example selftest_cost`.

use std::time::{Duration, Instant};

use vtpm::{ClientId, OsEntropy, Tpm};

const C: ClientId = ClientId(1);
const STARTUP_CLEAR: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0];
const SELF_TEST_NO: [u8; 11] = [0x80, 1, 0, 0, 0, 11, 0, 0, 1, 0x43, 0];
const SELF_TEST_YES: [u8; 11] = [0x80, 1, 0, 0, 0, 11, 0, 0, 1, 0x43, 1];
/// IncrementalSelfTest of ECDSA (the ECC tests), then of RSA.
const TEST_ECC: [u8; 16] = [0x80, 1, 0, 0, 0, 16, 0, 0, 1, 0x42, 0, 0, 0, 1, 0, 0x18];
const TEST_RSA: [u8; 16] = [0x80, 1, 0, 0, 0, 16, 0, 0, 1, 0x42, 0, 0, 0, 1, 0, 0x01];

/// Runs `command`, checks TPM_RC_SUCCESS, returns how long it took.
fn timed(tpm: &mut Tpm, command: &[u8]) -> Duration {
    let start = Instant::now();
    let response = tpm.execute(C, 0, command);
    let took = start.elapsed();
    assert_eq!(response[6..10], [0, 0, 0, 0], "command {command:02x?} failed: {response:02x?}");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let [mut startup, mut ecc, mut rsa, mut rest, mut full]: [Vec<Duration>; 5] =
        Default::default();
    for _ in 0..21 {
        let mut tpm = Tpm::manufacture(Box::new(OsEntropy)).expect("OS entropy");
        tpm.power_on();
        startup.push(timed(&mut tpm, &STARTUP_CLEAR));
        ecc.push(timed(&mut tpm, &TEST_ECC));
        rsa.push(timed(&mut tpm, &TEST_RSA));
        tpm.reset();
        timed(&mut tpm, &STARTUP_CLEAR);
        rest.push(timed(&mut tpm, &SELF_TEST_NO));
        full.push(timed(&mut tpm, &SELF_TEST_YES));
    }
    println!("selftest Startup(CLEAR) incl. symmetric KATs: {:?}", median(startup));
    println!("selftest IncrementalSelfTest(ECDSA): ECC KATs: {:?}", median(ecc));
    println!("selftest IncrementalSelfTest(RSA): RSA KATs: {:?}", median(rsa));
    println!("selftest SelfTest(NO) after Startup (RSA + ECC KATs): {:?}", median(rest));
    println!("selftest SelfTest(YES) (all KATs): {:?}", median(full));
}
