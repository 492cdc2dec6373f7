//! Entropy for the vTPM from the CPU's random-number instructions.
//!
//! RDSEED gives conditioned entropy (what seeds should come from); RDRAND
//! gives the output of the CPU's DRBG, reseeded from the same source. Both
//! may fail transiently (CF = 0) when the hardware is drained, so every
//! 64-bit word is retried a bounded number of times, RDSEED first, then
//! RDRAND. Some AMD parts return all ones with CF = 1 after a suspend bug;
//! such words are treated as failures too. When neither instruction yields
//! a word the source reports failure and the vTPM goes to failure mode.
//!
//! The instructions sit behind [`RandomInstructions`] so the retry logic is
//! tested on the host with scripted doubles.

use vtpm::{EntropyError, EntropySource};

/// Attempts per word and instruction (Intel's DRNG guide suggests 10 for
/// RDRAND; RDSEED runs dry more easily, so it gets more).
pub const RDSEED_RETRIES: u32 = 100;
/// Attempts per word for RDRAND.
pub const RDRAND_RETRIES: u32 = 10;

/// The two instructions, each one attempt: `Some(word)` when CF = 1.
pub trait RandomInstructions {
    /// One RDSEED; `None` if the CPU lacks it or it failed this time.
    fn rdseed64(&mut self) -> Option<u64>;
    /// One RDRAND; `None` if the CPU lacks it or it failed this time.
    fn rdrand64(&mut self) -> Option<u64>;
}

/// An [`EntropySource`] over the CPU's random-number instructions.
#[derive(Debug)]
pub struct CpuEntropy<R> {
    instructions: R,
}

impl<R: RandomInstructions> CpuEntropy<R> {
    /// Entropy from `instructions`.
    pub fn new(instructions: R) -> CpuEntropy<R> {
        CpuEntropy { instructions }
    }

    /// One word, with retries; `None` when both instructions keep failing.
    fn word(&mut self) -> Option<u64> {
        let usable = |word: u64| word != u64::MAX;
        (0..RDSEED_RETRIES)
            .find_map(|_| self.instructions.rdseed64().filter(|&w| usable(w)))
            .or_else(|| {
                (0..RDRAND_RETRIES)
                    .find_map(|_| self.instructions.rdrand64().filter(|&w| usable(w)))
            })
    }
}

impl<R: RandomInstructions> EntropySource for CpuEntropy<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in buf.chunks_mut(8) {
            let word = self.word().ok_or(EntropyError)?.to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        Ok(())
    }
}

/// The real instructions, each used only when CPUID says the CPU has it.
#[cfg(target_os = "none")]
#[derive(Debug, Clone, Copy)]
pub struct CpuInstructions {
    has_rdseed: bool,
    has_rdrand: bool,
}

#[cfg(target_os = "none")]
impl CpuInstructions {
    /// Reads the feature bits through the platform's CPUID (the measured
    /// CPUID page on SNP): RDRAND is leaf 1 ECX[30], RDSEED leaf 7 EBX[18].
    pub fn detect(platform: &dyn crate::platform::Platform) -> CpuInstructions {
        let max_leaf = platform.cpuid(0, 0)[0];
        let has_rdrand = platform.cpuid(1, 0)[2] & (1 << 30) != 0;
        let has_rdseed = max_leaf >= 7 && platform.cpuid(7, 0)[1] & (1 << 18) != 0;
        CpuInstructions { has_rdseed, has_rdrand }
    }

    /// Whether the CPU offers any of the two.
    pub fn any(&self) -> bool {
        self.has_rdseed || self.has_rdrand
    }
}

#[cfg(target_os = "none")]
impl RandomInstructions for CpuInstructions {
    fn rdseed64(&mut self) -> Option<u64> {
        if !self.has_rdseed {
            return None;
        }
        let word: u64;
        let ok: u8;
        // SAFETY: CPUID reports RDSEED; it only writes the named registers
        // and the flags.
        unsafe {
            core::arch::asm!("rdseed {w}", "setc {ok}", w = out(reg) word, ok = out(reg_byte) ok,
                options(nomem, nostack));
        }
        (ok == 1).then_some(word)
    }

    fn rdrand64(&mut self) -> Option<u64> {
        if !self.has_rdrand {
            return None;
        }
        let word: u64;
        let ok: u8;
        // SAFETY: CPUID reports RDRAND; it only writes the named registers
        // and the flags.
        unsafe {
            core::arch::asm!("rdrand {w}", "setc {ok}", w = out(reg) word, ok = out(reg_byte) ok,
                options(nomem, nostack));
        }
        (ok == 1).then_some(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scripted instructions: each call pops the next answer (`None` once
    /// the script is used up).
    struct Script {
        rdseed: Vec<Option<u64>>,
        rdrand: Vec<Option<u64>>,
        seed_calls: u32,
        rand_calls: u32,
    }

    impl Script {
        fn new(rdseed: Vec<Option<u64>>, rdrand: Vec<Option<u64>>) -> Script {
            Script { rdseed, rdrand, seed_calls: 0, rand_calls: 0 }
        }
    }

    impl RandomInstructions for Script {
        fn rdseed64(&mut self) -> Option<u64> {
            self.seed_calls += 1;
            if self.rdseed.is_empty() { None } else { self.rdseed.remove(0) }
        }
        fn rdrand64(&mut self) -> Option<u64> {
            self.rand_calls += 1;
            if self.rdrand.is_empty() { None } else { self.rdrand.remove(0) }
        }
    }

    #[test]
    fn words_fill_the_buffer_little_endian_and_partial_words_are_cut() {
        let mut source = CpuEntropy::new(Script::new(
            vec![Some(0x0807_0605_0403_0201), Some(0x100F_0E0D_0C0B_0A09)],
            vec![],
        ));
        let mut buf = [0u8; 11];
        source.fill(&mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn transient_rdseed_failures_are_retried() {
        let mut script = vec![None; 99];
        script.push(Some(42));
        let mut source = CpuEntropy::new(Script::new(script, vec![]));
        let mut buf = [0u8; 8];
        source.fill(&mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 42);
        assert_eq!(source.instructions.seed_calls, 100);
        assert_eq!(source.instructions.rand_calls, 0);
    }

    #[test]
    fn rdrand_steps_in_when_rdseed_stays_dry() {
        let mut source = CpuEntropy::new(Script::new(vec![], vec![None, None, Some(7)]));
        let mut buf = [0u8; 8];
        source.fill(&mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 7);
        assert_eq!(source.instructions.seed_calls, RDSEED_RETRIES);
        assert_eq!(source.instructions.rand_calls, 3);
    }

    #[test]
    fn all_ones_words_are_not_entropy() {
        let mut source =
            CpuEntropy::new(Script::new(vec![Some(u64::MAX); 100], vec![Some(u64::MAX), Some(5)]));
        let mut buf = [0u8; 8];
        source.fill(&mut buf).unwrap();
        assert_eq!(u64::from_le_bytes(buf), 5);
    }

    #[test]
    fn exhausted_instructions_report_failure_after_bounded_attempts() {
        let mut source = CpuEntropy::new(Script::new(vec![], vec![]));
        let mut buf = [0u8; 64];
        assert_eq!(source.fill(&mut buf), Err(EntropyError));
        assert_eq!(source.instructions.seed_calls, RDSEED_RETRIES);
        assert_eq!(source.instructions.rand_calls, RDRAND_RETRIES);
    }
}
