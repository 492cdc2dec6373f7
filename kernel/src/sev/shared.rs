//! Turning one of the SVSM's private pages into a page shared with the
//! hypervisor (the GHCB page, guest-request pages).
//!
//! The order matters (project reference §3.4, Linux `set_pages_state`):
//! write back the page's cache lines while it is still mapped private,
//! rescind its validation (PVALIDATE 0), ask the hypervisor to make it
//! shared (MSR-protocol page state change: no GHCB is needed, so the GHCB
//! page itself can be made shared this way), and only then map it without
//! the C-bit. The page holds nothing the host may not see afterwards; the
//! caller zeroes it through the new mapping.

use abi::ghcb::PageOperation;
use abi::paging::MapError;
use abi::snp_instr::PvalidateError;

use super::msr_protocol::{self, MsrProtocol, MsrProtocolError};

/// The page-level operations behind [`make_shared`].
pub trait PageOps {
    /// Writes back and evicts the page's cache lines.
    fn flush_cache(&mut self, va: u64);
    /// PVALIDATE the 4 KiB page at `va` to not validated.
    fn rescind(&mut self, va: u64) -> Result<(), PvalidateError>;
    /// Maps the page at `va` without the C-bit and flushes its TLB entry.
    fn map_shared(&mut self, va: u64) -> Result<(), MapError>;
}

/// Why a page could not be made shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedPageError {
    /// PVALIDATE refused to rescind the page.
    Rescind(PvalidateError),
    /// The hypervisor refused the page state change.
    PageStateChange(MsrProtocolError),
    /// The page tables could not map the page shared.
    Map(MapError),
}

/// Makes the private page at `va` (guest-physical `gpa`) shared.
///
/// If the RMP covers the page with a 2 MiB entry (stage2 validated the
/// region in 2 MiB pages), the 4 KiB rescind raises a nested page fault with
/// the size-mismatch bit and the hypervisor splits the entry (KVM:
/// PSMASH in its RMP fault handler); the guest sees the rescind succeed.
pub fn make_shared(
    msr: &mut impl MsrProtocol,
    pages: &mut impl PageOps,
    va: u64,
    gpa: u64,
) -> Result<(), SharedPageError> {
    pages.flush_cache(va);
    pages.rescind(va).map_err(SharedPageError::Rescind)?;
    msr_protocol::page_state_change(msr, gpa, PageOperation::Shared)
        .map_err(SharedPageError::PageStateChange)?;
    pages.map_shared(va).map_err(SharedPageError::Map)
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::sev::fake::FakeHypervisor;

    #[derive(Default)]
    struct Pages {
        steps: Vec<&'static str>,
        rescind: Option<PvalidateError>,
    }

    impl PageOps for Pages {
        fn flush_cache(&mut self, _va: u64) {
            self.steps.push("flush");
        }
        fn rescind(&mut self, _va: u64) -> Result<(), PvalidateError> {
            self.steps.push("rescind");
            self.rescind.map_or(Ok(()), Err)
        }
        fn map_shared(&mut self, _va: u64) -> Result<(), MapError> {
            self.steps.push("map shared");
            Ok(())
        }
    }

    #[test]
    fn flush_rescind_convert_then_remap() {
        let mut hv = FakeHypervisor::new();
        let mut pages = Pages::default();
        make_shared(&mut hv, &mut pages, 0xFFFF_8000_0812_3000, 0x0812_3000).unwrap();
        assert_eq!(pages.steps, ["flush", "rescind", "map shared"]);
        assert_eq!(hv.msr_log, [0x0020_0000_0812_3014]);
        assert!(hv.shared_pages.contains(&0x8123));
    }

    #[test]
    fn failures_stop_before_the_mapping_changes() {
        let mut hv = FakeHypervisor::new();
        for error in
            [PvalidateError::Unchanged, PvalidateError::Input, PvalidateError::SizeMismatch]
        {
            let mut pages = Pages { rescind: Some(error), ..Default::default() };
            assert_eq!(
                make_shared(&mut hv, &mut pages, 0x1000, 0x1000),
                Err(SharedPageError::Rescind(error))
            );
        }
        assert!(hv.msr_log.is_empty(), "a page that was not rescinded is not converted");
        let mut pages = Pages::default();
        hv.msr_override = Some(0x1_0000_0015);
        assert!(matches!(
            make_shared(&mut hv, &mut pages, 0x1000, 0x1000),
            Err(SharedPageError::PageStateChange(MsrProtocolError::Refused { error: 1, .. }))
        ));
        assert_eq!(pages.steps, ["flush", "rescind"]);
    }
}
