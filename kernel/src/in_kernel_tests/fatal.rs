//! Deliberate fatal ends, so the xtask can check what the kernel prints and
//! how it stops when something goes irrecoverably wrong: a panic, and a
//! page fault no handler recovers. A QEMU fw_cfg file chooses one
//! (`-fw_cfg name=opt/svsm/kernel-test-fatal,string=panic|page-fault`);
//! without it the test build runs its tests. Only the native and dev
//! platforms look (QEMU's fw_cfg ports; on SNP port I/O is the host's).
//!
//! fw_cfg (QEMU docs/specs/fw_cfg.rst): selector port 0x510 (16-bit), data
//! port 0x511; selector 0 reads "QEMU", selector 0x19 the file directory: a
//! big-endian u32 count, then 64-byte entries {size be32, select be16,
//! reserved u16, name[56] NUL-terminated}.

use alloc::vec::Vec;

use kernel::cpu::io::IoPort;
use kernel::platform::{self, PlatformKind};

/// The fw_cfg file that asks for a fatal end.
const REQUEST_FILE: &[u8] = b"opt/svsm/kernel-test-fatal";
/// A canonical lower-half address the kernel never maps.
const UNMAPPED: u64 = 0x0000_7ff0_0000_0000;

const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = 0x511;
const SIGNATURE: u16 = 0x0000;
const FILE_DIR: u16 = 0x0019;
const DIR_ENTRY_SIZE: usize = 64;
/// Directory entries read at most (QEMU has a few dozen).
const MAX_FILES: u32 = 256;

/// Ends the kernel the way the fw_cfg request names, if there is one.
pub fn run_if_requested() {
    let Some(platform) = platform::current() else { return };
    if platform.kind() == PlatformKind::Snp {
        return;
    }
    let Some(request) = read_file(platform.io(), REQUEST_FILE) else { return };
    let end = request.iter().position(|&b| b == 0 || b == b'\n').unwrap_or(request.len());
    match &request[..end] {
        b"panic" => panic!("deliberate panic (kernel-test-fatal)"),
        b"page-fault" => {
            log::info!("kernel-test-fatal: reading unmapped address {UNMAPPED:#x}");
            // SAFETY: deliberately faults: nothing is mapped at UNMAPPED and
            // no exception-table entry covers this read, so the #PF handler
            // reports it and stops the VM; the read never returns.
            let value = unsafe { core::ptr::read_volatile(UNMAPPED as *const u64) };
            log::error!("kernel-test-fatal: the read of {UNMAPPED:#x} returned {value:#x}");
        }
        other => log::error!("kernel-test-fatal: unknown request {other:?}"),
    }
}

fn read_bytes(io: &dyn IoPort, selector: u16, out: &mut [u8]) {
    io.outw(SELECTOR_PORT, selector);
    for byte in out {
        *byte = io.inb(DATA_PORT);
    }
}

/// The contents of the fw_cfg file `name`, if QEMU has one.
fn read_file(io: &dyn IoPort, name: &[u8]) -> Option<Vec<u8>> {
    let mut signature = [0u8; 4];
    read_bytes(io, SIGNATURE, &mut signature);
    if &signature != b"QEMU" {
        return None;
    }
    let mut count = [0u8; 4];
    read_bytes(io, FILE_DIR, &mut count);
    let mut entry = [0u8; DIR_ENTRY_SIZE];
    for _ in 0..u32::from_be_bytes(count).min(MAX_FILES) {
        entry.iter_mut().for_each(|b| *b = io.inb(DATA_PORT));
        let entry_name = &entry[8..];
        let len = entry_name.iter().position(|&b| b == 0).unwrap_or(entry_name.len());
        if &entry_name[..len] == name {
            let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let mut contents = alloc::vec![0u8; size.min(64) as usize];
            read_bytes(io, u16::from_be_bytes([entry[4], entry[5]]), &mut contents);
            return Some(contents);
        }
    }
    None
}
