//! Platform Configuration Registers: 24 PCRs in each allocated bank (SHA-1, SHA-256, SHA-384
//! by default), with the PC Client locality rules for extending and resetting PCR 16-23.

use alloc::vec::Vec;

use crate::crypto::hash::{HashAlg, hash};
use crate::types::PCR_COUNT;

/// The banks a fresh TPM allocates.
pub const DEFAULT_BANKS: [HashAlg; 3] = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384];
/// Hashes PCR_Allocate may select (every implemented hash).
pub const ALLOCATABLE: [HashAlg; 4] = crate::crypto::hash::ALL_HASHES;

/// One bank of PCR values.
#[derive(Clone)]
pub struct Bank {
    pub alg: HashAlg,
    pub values: Vec<Vec<u8>>,
}

/// The PCR banks of the running TPM.
#[derive(Clone, Default)]
pub struct Pcrs {
    pub banks: Vec<Bank>,
    /// Incremented on every PCR change (policy sessions check it).
    pub update_counter: u32,
}

/// Localities (bit n = locality n) that may extend PCR `i` (the reference implementation's
/// PC Client attribute table).
pub fn extend_localities(i: usize) -> u8 {
    match i {
        17 | 18 => 0x1C,
        19 => 0x0C,
        20 => 0x0E,
        21 | 22 => 0x04,
        _ => 0x1F,
    }
}

/// Localities that may reset PCR `i` (none for PCR 0-15).
pub fn reset_localities(i: usize) -> u8 {
    match i {
        16 | 23 => 0x0F,
        17..=19 => 0x10,
        20..=22 => 0x14,
        _ => 0,
    }
}

/// Whether PCR `i` is saved by Shutdown(STATE) (TPM_PT_PCR_SAVE).
pub fn state_saved(i: usize) -> bool {
    i < 16
}

/// Whether a change of PCR `i` leaves pcrUpdateCounter alone (TPM_PT_PCR_NO_INCREMENT): the
/// PC Client choice libtpms makes (PCR 16 and 21-23).
pub fn no_increment(i: usize) -> bool {
    i == 16 || (21..=23).contains(&i)
}

/// The value PCR `i` holds after TPM Reset (PCR 17-22 start at all ones, the rest at zero).
fn initial_value(alg: HashAlg, i: usize) -> Vec<u8> {
    let byte = if (17..=22).contains(&i) { 0xFF } else { 0 };
    alloc::vec![byte; alg.size()]
}

/// Bit of `locality` in a locality mask (localities above 4 are treated as locality 4's
/// extended range and get no special rights).
pub fn locality_bit(locality: u8) -> u8 {
    if locality <= 4 { 1 << locality } else { 0 }
}

impl Pcrs {
    pub fn new(algs: &[HashAlg]) -> Pcrs {
        Pcrs {
            banks: algs
                .iter()
                .map(|&alg| Bank {
                    alg,
                    values: (0..PCR_COUNT).map(|i| initial_value(alg, i)).collect(),
                })
                .collect(),
            update_counter: 0,
        }
    }

    pub fn bank(&self, alg: HashAlg) -> Option<&Bank> {
        self.banks.iter().find(|b| b.alg == alg)
    }

    pub fn algs(&self) -> Vec<HashAlg> {
        self.banks.iter().map(|b| b.alg).collect()
    }

    /// Extends PCR `i` of bank `alg` (no-op for an unallocated bank). Every bank extended
    /// counts as a change, as in the reference implementation.
    pub fn extend(&mut self, i: usize, alg: HashAlg, digest: &[u8]) {
        if let Some(bank) = self.banks.iter_mut().find(|b| b.alg == alg) {
            let new = hash(alg, &[&bank.values[i], digest]);
            bank.values[i] = new;
            self.changed(i);
        }
    }

    pub fn reset(&mut self, i: usize) {
        for bank in &mut self.banks {
            bank.values[i] = alloc::vec![0; bank.alg.size()];
        }
    }

    pub fn changed(&mut self, i: usize) {
        if !no_increment(i) {
            self.update_counter = self.update_counter.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_known_answer() {
        // tpm.md §9.2: extending SHA-256 PCR 16 with 32 zero octets.
        let mut p = Pcrs::new(&DEFAULT_BANKS);
        p.extend(16, HashAlg::Sha256, &[0; 32]);
        let v = &p.bank(HashAlg::Sha256).unwrap().values[16];
        assert_eq!(
            v[..8],
            [0xF5, 0xA5, 0xFD, 0x42, 0xD1, 0x6A, 0x20, 0x30],
            "SHA-256(64 zero octets)"
        );
        assert_eq!(p.bank(HashAlg::Sha1).unwrap().values[17], [0xFF; 20]);
    }
}
