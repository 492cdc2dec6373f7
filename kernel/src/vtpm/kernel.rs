//! Boot-time set-up of the vTPM in the running SVSM: its arena from the
//! SVSM's own frames, entropy from the CPU, and the engine's memory charged
//! to the arena.

use alloc::boxed::Box;

use abi::layout::PAGE_SIZE;

use super::arena::{VTPM_ARENA, cpu_token};
use super::entropy::{CpuEntropy, CpuInstructions};
use super::{EngineMemory, Failure, VtpmService, install};
use crate::mm::FRAMES;
use crate::mm::paging::phys_to_virt;
use crate::platform::Platform;

/// Size of the vTPM's memory share.
pub const ARENA_SIZE: usize = 4 << 20;

/// The engine's allocations go to [`VTPM_ARENA`] while it runs.
struct ArenaMemory;

impl EngineMemory for ArenaMemory {
    fn run(&self, f: &mut dyn FnMut()) -> bool {
        VTPM_ARENA.scope(cpu_token(), f).1
    }
}

/// Creates the SVSM's vTPM. Never fails: without memory or entropy the vTPM
/// is installed in failure mode and the reason is logged.
pub fn init(platform: &dyn Platform) {
    let frames = ARENA_SIZE / PAGE_SIZE as usize;
    let arena_pa = match FRAMES.lock().allocate_contiguous(frames, 1) {
        Ok(pa) => pa,
        Err(e) => {
            log::error!("vTPM: no {} KiB for its arena ({e:?}); failure mode", ARENA_SIZE / 1024);
            install(VtpmService::failed(Failure::OutOfMemory, Box::new(ArenaMemory)));
            return;
        }
    };
    // SAFETY: the frames were just taken from the allocator for the arena
    // alone; the direct map covers them and is page (so 16-byte) aligned.
    unsafe { VTPM_ARENA.init(phys_to_virt(arena_pa) as usize, ARENA_SIZE) };
    let instructions = CpuInstructions::detect(platform);
    if !instructions.any() {
        log::error!("vTPM: the CPU has neither RDSEED nor RDRAND");
    }
    let started = rdtsc();
    let service =
        VtpmService::manufacture(Box::new(CpuEntropy::new(instructions)), Box::new(ArenaMemory));
    let cycles = rdtsc().wrapping_sub(started);
    match service.failure() {
        None => log::info!(
            "vTPM: manufactured in {} M TSC cycles; EK RSA-2048 ({} byte public area); state in \
             SVSM memory at {arena_pa:#x}: {} KiB used of {} KiB (peak {} KiB)",
            cycles / 1_000_000,
            service.ek_public().map_or(0, <[u8]>::len),
            VTPM_ARENA.used() / 1024,
            VTPM_ARENA.size() / 1024,
            VTPM_ARENA.peak() / 1024,
        ),
        Some(failure) => log::error!("vTPM: failure mode: {}", failure.describe()),
    }
    let (heap_used, heap_size) = crate::mm::heap_usage();
    let (frames_free, frames_total) = {
        let frames = FRAMES.lock();
        (frames.free_frames(), frames.total_frames())
    };
    log::info!(
        "SVSM private memory with the vTPM manufactured: {} KiB of {} MiB in frames used (kernel heap \
         {} KiB used of {} MiB, vTPM arena {} KiB used of {} KiB)",
        (frames_total - frames_free) * PAGE_SIZE as usize / 1024,
        (frames_total * PAGE_SIZE as usize) >> 20,
        heap_used / 1024,
        heap_size >> 20,
        VTPM_ARENA.used() / 1024,
        VTPM_ARENA.size() / 1024,
    );
    install(service);
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}
