//! Validating memory on SNP: PVALIDATE every page of a range, with 2 MiB
//! pages where the range allows and 4 KiB pages where the RMP holds smaller
//! entries.

use abi::boot::MemoryRange;
use abi::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::paging::PageSize;

pub use abi::snp_instr::PvalidateError;

/// The instruction, behind a trait so the algorithm is tested on the host.
pub trait PageValidator {
    /// PVALIDATE the page at `addr` (identity-mapped) to validated.
    fn validate(&mut self, addr: u64, size: PageSize) -> Result<(), PvalidateError>;
}

/// A page PVALIDATE refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidateError {
    /// The page's address.
    pub addr: u64,
    /// What PVALIDATE said.
    pub error: PvalidateError,
}

/// Validates every page of `range` (4 KiB aligned), using 2 MiB pages for
/// the aligned middle and falling back to 4 KiB pages where the RMP says
/// the 2 MiB page is split.
pub fn validate_range(
    validator: &mut impl PageValidator,
    range: MemoryRange,
) -> Result<(), ValidateError> {
    let end =
        range.end().ok_or(ValidateError { addr: range.base, error: PvalidateError::Input })?;
    if !range.base.is_multiple_of(PAGE_SIZE) || end % PAGE_SIZE != 0 {
        return Err(ValidateError { addr: range.base, error: PvalidateError::Input });
    }
    let mut addr = range.base;
    while addr < end {
        if addr.is_multiple_of(LARGE_PAGE_SIZE) && end - addr >= LARGE_PAGE_SIZE {
            match validator.validate(addr, PageSize::Size2M) {
                Ok(()) => {
                    addr += LARGE_PAGE_SIZE;
                    continue;
                }
                Err(PvalidateError::SizeMismatch) => {
                    validate_small_pages(validator, addr, addr + LARGE_PAGE_SIZE)?;
                    addr += LARGE_PAGE_SIZE;
                    continue;
                }
                Err(error) => return Err(ValidateError { addr, error }),
            }
        }
        validate_small_pages(validator, addr, addr + PAGE_SIZE)?;
        addr += PAGE_SIZE;
    }
    Ok(())
}

fn validate_small_pages(
    validator: &mut impl PageValidator,
    start: u64,
    end: u64,
) -> Result<(), ValidateError> {
    for addr in (start..end).step_by(PAGE_SIZE as usize) {
        validator
            .validate(addr, PageSize::Size4K)
            .map_err(|error| ValidateError { addr, error })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records calls; 2 MiB pages listed in `split` answer SIZEMISMATCH.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<(u64, PageSize)>,
        split: Vec<u64>,
        fail_at: Option<(u64, PvalidateError)>,
    }

    impl PageValidator for Recorder {
        fn validate(&mut self, addr: u64, size: PageSize) -> Result<(), PvalidateError> {
            self.calls.push((addr, size));
            if let Some((at, error)) = self.fail_at
                && at == addr
            {
                return Err(error);
            }
            if size == PageSize::Size2M && self.split.contains(&addr) {
                return Err(PvalidateError::SizeMismatch);
            }
            Ok(())
        }
    }

    #[test]
    fn aligned_region_uses_large_pages() {
        let mut v = Recorder::default();
        validate_range(&mut v, MemoryRange { base: 0x0800_0000, size: 0x40_0000 }).unwrap();
        assert_eq!(v.calls, vec![(0x0800_0000, PageSize::Size2M), (0x0820_0000, PageSize::Size2M)]);
    }

    #[test]
    fn unaligned_edges_use_small_pages() {
        let mut v = Recorder::default();
        validate_range(&mut v, MemoryRange { base: 0x1F_F000, size: 0x20_2000 }).unwrap();
        assert_eq!(v.calls.first(), Some(&(0x1F_F000, PageSize::Size4K)));
        assert_eq!(v.calls[1], (0x20_0000, PageSize::Size2M));
        assert_eq!(v.calls.last(), Some(&(0x40_0000, PageSize::Size4K)));
        assert_eq!(v.calls.len(), 3);
    }

    #[test]
    fn size_mismatch_falls_back_to_512_small_pages() {
        let mut v = Recorder { split: vec![0x20_0000], ..Default::default() };
        validate_range(&mut v, MemoryRange { base: 0x20_0000, size: 0x40_0000 }).unwrap();
        let small = v.calls.iter().filter(|(_, s)| *s == PageSize::Size4K).count();
        assert_eq!(small, 512);
        assert_eq!(v.calls.last(), Some(&(0x40_0000, PageSize::Size2M)));
    }

    #[test]
    fn double_validation_stops_with_the_page() {
        let mut v = Recorder {
            fail_at: Some((0x20_0000, PvalidateError::Unchanged)),
            ..Default::default()
        };
        let err = validate_range(&mut v, MemoryRange { base: 0x20_0000, size: 0x20_0000 });
        assert_eq!(err, Err(ValidateError { addr: 0x20_0000, error: PvalidateError::Unchanged }));
    }

    #[test]
    fn rejects_misaligned_or_wrapping_ranges() {
        let mut v = Recorder::default();
        assert!(validate_range(&mut v, MemoryRange { base: 0x1001, size: 0x1000 }).is_err());
        assert!(
            validate_range(&mut v, MemoryRange { base: u64::MAX - 0xFFF, size: 0x2000 }).is_err()
        );
        assert!(v.calls.is_empty());
    }
}
