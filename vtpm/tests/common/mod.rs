//! Test helpers: a TPM with deterministic entropy, command builders and response parsing.
#![allow(dead_code)]

use vtpm::{ClientId, EntropyError, EntropySource, Tpm};

/// Deterministic entropy (a counter) so test runs are reproducible.
pub struct CountingEntropy(pub u8);

impl EntropySource for CountingEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
        Ok(())
    }
}

pub const C: ClientId = ClientId(1);

/// A powered and started TPM.
pub fn started() -> Tpm {
    let mut tpm = Tpm::manufacture(Box::new(CountingEntropy(0))).unwrap();
    tpm.power_on();
    let rsp = tpm.execute(C, 0, &cmd(0x8001, 0x144, &[], &[0, 0]));
    assert_eq!(rc(&rsp), 0);
    tpm
}

/// Builds a command: tag, cc, handles and the rest (auth area and parameters) as given.
pub fn cmd(tag: u16, cc: u32, handles: &[u32], rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tag.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&cc.to_be_bytes());
    for h in handles {
        v.extend_from_slice(&h.to_be_bytes());
    }
    v.extend_from_slice(rest);
    let len = v.len() as u32;
    v[2..6].copy_from_slice(&len.to_be_bytes());
    v
}

/// A password authorization area with one session.
pub fn pw_auth(password: &[u8]) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(&0x4000_0009u32.to_be_bytes());
    s.extend_from_slice(&0u16.to_be_bytes());
    s.push(0x01);
    s.extend_from_slice(&(password.len() as u16).to_be_bytes());
    s.extend_from_slice(password);
    let mut v = (s.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&s);
    v
}

pub fn rc(rsp: &[u8]) -> u32 {
    assert!(rsp.len() >= 10, "short response {rsp:02x?}");
    assert_eq!(u32::from_be_bytes(rsp[2..6].try_into().unwrap()) as usize, rsp.len());
    u32::from_be_bytes(rsp[6..10].try_into().unwrap())
}

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}
