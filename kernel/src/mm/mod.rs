//! Memory management: physical frames of the kernel region, the kernel's
//! address space, and the heap.

pub mod frames;
pub mod heap;
pub mod paging;

use core::alloc::{GlobalAlloc, Layout};

use abi::boot::{KernelBootInfo, MemoryRange};
use abi::layout::PAGE_SIZE;
use abi::paging::{MapError, Mapper};
use spin::{Mutex, Once};

use frames::{FrameAllocator, FrameError};
use heap::Heap;
use paging::{KernelSections, OffsetTables, build_kernel_tables, phys_to_virt};

/// Size of the kernel heap.
pub const HEAP_SIZE: usize = 16 << 20;

/// The frames of the kernel region stage2 left free.
pub static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::empty());
static HEAP: Mutex<Heap> = Mutex::new(Heap::empty());
static KERNEL_TABLES: Once<Mapper> = Once::new();

/// Why memory management could not start.
#[derive(Clone, Copy, Debug)]
pub enum MmError {
    /// The kernel region has no room for tables or heap.
    Frames(FrameError),
    /// Building the page tables failed.
    Map(MapError),
}

/// Sets up the frame allocator, switches to the kernel's own page tables and
/// starts the heap.
///
/// # Safety
/// Must run once, on the boot CPU, while stage2's identity map is still
/// live, with `info` describing the real memory and `sections` the real
/// kernel image.
pub unsafe fn init(info: &KernelBootInfo, sections: &KernelSections) -> Result<(), MmError> {
    let region_end = info.kernel_region.end().unwrap_or(info.kernel_region.base);
    let mut frames = FRAMES.lock();
    frames.init(MemoryRange {
        base: info.free_base,
        size: region_end.saturating_sub(info.free_base),
    });
    // SAFETY: stage2's tables identity-map the low 4 GiB, which holds the
    // kernel region and so every frame the allocator hands out.
    let mut tables = unsafe { OffsetTables::new(0, &mut frames) };
    let mapper = build_kernel_tables(&mut tables, info, sections).map_err(MmError::Map)?;
    // SAFETY: the new tables map the kernel image at its link address (this
    // code, its stack in .bss, its data) and the direct map.
    unsafe { crate::cpu::registers::write_cr3(mapper.cr3()) };
    KERNEL_TABLES.call_once(|| mapper);

    let heap_frames = HEAP_SIZE / PAGE_SIZE as usize;
    let heap_pa = frames.allocate_contiguous(heap_frames, 1).map_err(MmError::Frames)?;
    // SAFETY: the frames were just taken from the allocator, are mapped in
    // the direct map and are used by nothing else.
    unsafe { HEAP.lock().init(phys_to_virt(heap_pa) as usize, HEAP_SIZE) };
    Ok(())
}

/// Runs `f` with the kernel's page tables (reached through the direct map)
/// and the frame allocator.
pub fn with_kernel_tables<R>(f: impl FnOnce(&Mapper, &mut OffsetTables<'_>) -> R) -> R {
    let mapper = KERNEL_TABLES.get().expect("memory management is initialised at boot");
    let mut frames = FRAMES.lock();
    // SAFETY: after `init`, every frame is reachable in the direct map, and
    // holding the frame-allocator lock serialises table edits.
    let mut tables = unsafe { OffsetTables::new(abi::layout::DIRECT_MAP_BASE, &mut frames) };
    f(mapper, &mut tables)
}

/// Heap statistics: (bytes in use, heap size).
pub fn heap_usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.used(), heap.size())
}

/// The `alloc` global allocator: the kernel heap, except for the vTPM
/// engine's allocations, which go to its own arena while it runs
/// ([`crate::vtpm::arena`]).
pub struct KernelAllocator;

// SAFETY: allocation and deallocation go to one heap under a lock (or to the
// vTPM arena, which returns its own blocks by address); both return blocks
// that satisfy the layout or null.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let arena = &crate::vtpm::arena::VTPM_ARENA;
        if let Some(block) = arena.allocate(crate::vtpm::arena::cpu_token, layout) {
            return block.as_ptr();
        }
        HEAP.lock().allocate(layout).map_or(core::ptr::null_mut(), |block| block.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(block) = core::ptr::NonNull::new(ptr) {
            let arena = &crate::vtpm::arena::VTPM_ARENA;
            // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with
            // this layout and is not used again.
            if unsafe { arena.release(crate::vtpm::arena::cpu_token, block, layout) } {
                return;
            }
            // SAFETY: as above; not an arena block, so a kernel-heap one.
            unsafe { HEAP.lock().deallocate(block, layout) };
        }
    }
}
