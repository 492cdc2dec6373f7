//! The native platform: no SNP, no SVM. Direct port I/O and CPUID; the SVSM
//! runs its own services and tests but no guest.

use super::{Platform, PlatformKind, halt_forever};
use crate::cpu::io::{DirectIo, IoPort};

struct Native;

static NATIVE: Native = Native;
static DIRECT_IO: DirectIo = DirectIo;

impl Platform for Native {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Native
    }

    fn io(&self) -> &'static dyn IoPort {
        &DIRECT_IO
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        crate::cpu::registers::cpuid(leaf, subleaf)
    }

    fn exit(&self, code: u8) -> ! {
        DIRECT_IO.outb(abi::layout::DEBUG_EXIT_PORT, code);
        halt_forever()
    }
}

/// The native platform.
pub fn init() -> &'static dyn Platform {
    &NATIVE
}
