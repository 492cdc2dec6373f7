//! The vTPM's own heap: a bounded share of SVSM-private memory.
//!
//! Everything the TPM engine allocates while it runs (its state, keys,
//! sessions, scratch buffers) comes from this arena instead of the kernel
//! heap, so
//! - the vTPM cannot starve the rest of the SVSM: its share is fixed;
//! - running out of it is not an allocation failure (which would abort the
//!   SVSM): the allocation is served from the kernel heap, the overflow is
//!   recorded, and the vTPM service puts the TPM in failure mode after the
//!   command, dropping its state;
//! - its memory can be wiped: every block freed back to the arena is zeroed,
//!   and [`Arena::scrub`] zeroes the whole arena at shutdown.
//!
//! Routing works per CPU: [`Arena::scope`] marks the current CPU as the
//! arena's owner while a closure runs (the vTPM lock makes one CPU the owner
//! at a time); the kernel's global allocator asks [`Arena::allocate`] first
//! and [`Arena::release`] on every free. Blocks are returned by address, so a
//! response buffer the engine allocated may be freed outside the scope.

use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::mm::heap::Heap;

/// A bounded heap with an owner CPU.
pub struct Arena {
    heap: Mutex<Heap>,
    start: AtomicUsize,
    end: AtomicUsize,
    /// Token of the CPU whose allocations go to the arena (0: none).
    owner: AtomicU64,
    overflowed: AtomicBool,
    peak: AtomicUsize,
}

/// The vTPM's arena (set up at boot by the vTPM's `init`).
pub static VTPM_ARENA: Arena = Arena::new();

/// Identifies the calling CPU for [`Arena::scope`]: its per-CPU block's
/// address. Only valid once per-CPU data is set up; the allocator asks for
/// it only while some CPU owns the arena, which happens after that.
#[cfg(target_os = "none")]
pub fn cpu_token() -> u64 {
    crate::cpu::percpu::current().address()
}

/// Identifies the calling thread (host builds, where threads stand in for
/// CPUs).
#[cfg(not(target_os = "none"))]
pub fn cpu_token() -> u64 {
    std::thread_local!(static TOKEN: u8 = const { 0 });
    TOKEN.with(|t| t as *const u8 as u64)
}

impl Default for Arena {
    fn default() -> Self {
        Arena::new()
    }
}

impl Arena {
    /// An arena without memory: nothing is routed to it.
    pub const fn new() -> Arena {
        Arena {
            heap: Mutex::new(Heap::empty()),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
            owner: AtomicU64::new(0),
            overflowed: AtomicBool::new(false),
            peak: AtomicUsize::new(0),
        }
    }

    /// Gives the arena the memory `[start, start + size)`.
    ///
    /// # Safety
    /// The range must be writable memory, 16-byte aligned, used by nothing
    /// else for as long as the arena lives; called once.
    pub unsafe fn init(&self, start: usize, size: usize) {
        // SAFETY: per this function's contract.
        unsafe { self.heap.lock().init(start, size) };
        self.start.store(start, Ordering::Release);
        self.end.store(start + size, Ordering::Release);
    }

    /// Whether `ptr` lies in the arena.
    pub fn contains(&self, ptr: *const u8) -> bool {
        let address = ptr as usize;
        address >= self.start.load(Ordering::Acquire) && address < self.end.load(Ordering::Acquire)
    }

    /// Runs `f` with the allocations of the CPU identified by `token`
    /// (non-zero) going to the arena. Returns `f`'s result and whether the
    /// arena ran out while it ran.
    pub fn scope<R>(&self, token: u64, f: impl FnOnce() -> R) -> (R, bool) {
        debug_assert_ne!(token, 0, "0 means no owner");
        self.overflowed.store(false, Ordering::Relaxed);
        let previous = self.owner.swap(token, Ordering::AcqRel);
        let result = f();
        self.owner.store(previous, Ordering::Release);
        (result, self.overflowed.swap(false, Ordering::Relaxed))
    }

    /// Whether the calling CPU's allocations go here; `token` is only asked
    /// for when some CPU owns the arena (it may read per-CPU state).
    fn owned_by(&self, token: impl FnOnce() -> u64) -> bool {
        let owner = self.owner.load(Ordering::Acquire);
        owner != 0 && owner == token()
    }

    /// For the global allocator: a block from the arena if the calling CPU
    /// owns it. `None` means "use the kernel heap"; when the arena is full
    /// the overflow is recorded first.
    pub fn allocate(&self, token: impl FnOnce() -> u64, layout: Layout) -> Option<NonNull<u8>> {
        if !self.owned_by(token) {
            return None;
        }
        let mut heap = self.heap.lock();
        let block = heap.allocate(layout);
        match block {
            Some(_) => {
                self.peak.fetch_max(heap.used(), Ordering::Relaxed);
            }
            None => self.overflowed.store(true, Ordering::Relaxed),
        }
        block
    }

    /// For the global allocator, on every free: an arena block is zeroed and
    /// returned to the arena (`true`); a kernel-heap block freed by the
    /// owner is zeroed (it held vTPM data) and left to the kernel heap
    /// (`false`); anything else is not touched (`false`).
    ///
    /// # Safety
    /// `ptr` must be a live block of `layout` from the global allocator,
    /// not used after this call.
    pub unsafe fn release(
        &self,
        token: impl FnOnce() -> u64,
        ptr: NonNull<u8>,
        layout: Layout,
    ) -> bool {
        let in_arena = self.contains(ptr.as_ptr());
        if in_arena || self.owned_by(token) {
            // SAFETY: the block is live, `layout.size()` bytes long and ours
            // to write until it is freed.
            unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, layout.size()) };
        }
        if in_arena {
            // SAFETY: arena blocks come from this heap with this layout.
            unsafe { self.heap.lock().deallocate(ptr, layout) };
        }
        in_arena
    }

    /// Bytes in use now.
    pub fn used(&self) -> usize {
        self.heap.lock().used()
    }

    /// Most bytes ever in use at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Size of the arena.
    pub fn size(&self) -> usize {
        self.end.load(Ordering::Acquire) - self.start.load(Ordering::Acquire)
    }

    /// The arena's start address (for the isolation check's report).
    pub fn start(&self) -> usize {
        self.start.load(Ordering::Acquire)
    }

    /// Zeroes the whole arena. Only when nothing is allocated from it any
    /// more (after the vTPM was dropped); returns false (and does nothing)
    /// otherwise.
    pub fn scrub(&self) -> bool {
        let mut heap = self.heap.lock();
        if heap.used() != 0 {
            return false;
        }
        let (start, size) = (self.start(), self.size());
        if size == 0 {
            return true;
        }
        // SAFETY: the arena owns the range (see `init`) and nothing in it is
        // allocated: it holds only the free list, which `init` rebuilds.
        unsafe {
            core::ptr::write_bytes(start as *mut u8, 0, size);
            heap.init(start, size);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u64 = 1;
    const OTHER: u64 = 2;

    fn arena(backing: &mut Vec<u128>) -> Arena {
        let arena = Arena::new();
        // SAFETY: the backing vector outlives the arena in each test, is
        // 16-byte aligned and used by nothing else.
        unsafe { arena.init(backing.as_mut_ptr() as usize, backing.len() * 16) };
        arena
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn only_the_owner_in_scope_allocates_from_the_arena() {
        let mut backing = vec![0u128; 256];
        let arena = arena(&mut backing);
        assert!(arena.allocate(|| ME, layout(64)).is_none(), "no scope, no arena");
        let ((mine, theirs), overflowed) = arena.scope(ME, || {
            (arena.allocate(|| ME, layout(64)), arena.allocate(|| OTHER, layout(64)))
        });
        assert!(!overflowed);
        let mine = mine.expect("the owner gets arena memory");
        assert!(arena.contains(mine.as_ptr()));
        assert!(theirs.is_none(), "another CPU keeps using the kernel heap");
        assert_eq!(arena.used(), 64);
        // SAFETY: allocated above with this layout.
        assert!(unsafe { arena.release(|| OTHER, mine, layout(64)) }, "freed by address");
        assert_eq!(arena.used(), 0);
    }

    #[test]
    fn freed_blocks_are_zeroed() {
        let mut backing = vec![0u128; 256];
        let arena = arena(&mut backing);
        let (block, _) = arena.scope(ME, || arena.allocate(|| ME, layout(256)).unwrap());
        // SAFETY: the block is 256 bytes of arena memory we own.
        unsafe { core::ptr::write_bytes(block.as_ptr(), 0xA5, 256) };
        // SAFETY: allocated above with this layout.
        unsafe { arena.release(|| 0, block, layout(256)) };
        // The first 16 bytes now hold the free list; the rest must be zero.
        // SAFETY: reading arena memory that stays mapped (the backing vector).
        let bytes = unsafe { core::slice::from_raw_parts(block.as_ptr(), 256) };
        assert!(bytes[16..].iter().all(|&b| b == 0));
    }

    #[test]
    fn overflow_is_recorded_not_fatal() {
        let mut backing = vec![0u128; 16];
        let arena = arena(&mut backing);
        let (results, overflowed) = arena.scope(ME, || {
            let first = arena.allocate(|| ME, layout(200));
            let second = arena.allocate(|| ME, layout(200));
            (first, second)
        });
        assert!(results.0.is_some());
        assert!(results.1.is_none(), "the caller falls back to the kernel heap");
        assert!(overflowed);
        let (_, overflowed_again) = arena.scope(ME, || ());
        assert!(!overflowed_again, "each scope reports its own overflow");
    }

    #[test]
    fn kernel_heap_blocks_freed_by_the_owner_are_zeroed_but_kept() {
        let arena = Arena::new();
        let mut outside = vec![0xFFu8; 32];
        let ptr = NonNull::new(outside.as_mut_ptr()).unwrap();
        // SAFETY: a live 32-byte buffer we own.
        let kept = arena.scope(ME, || unsafe { arena.release(|| ME, ptr, layout(32)) }).0;
        assert!(!kept);
        assert!(outside.iter().all(|&b| b == 0));
        let mut untouched = vec![0xFFu8; 32];
        let ptr = NonNull::new(untouched.as_mut_ptr()).unwrap();
        // SAFETY: as above.
        assert!(!unsafe { arena.release(|| ME, ptr, layout(32)) });
        assert!(untouched.iter().all(|&b| b == 0xFF), "not the owner: left alone");
    }

    #[test]
    fn scrub_needs_an_empty_arena_and_wipes_it() {
        let mut backing = vec![0u128; 64];
        let arena = arena(&mut backing);
        let (block, _) = arena.scope(ME, || arena.allocate(|| ME, layout(64)).unwrap());
        assert!(!arena.scrub(), "a live block blocks the scrub");
        // SAFETY: allocated above with this layout.
        unsafe { arena.release(|| 0, block, layout(64)) };
        assert!(arena.scrub());
        assert!(backing.iter().skip(1).all(|&w| w == 0));
        assert_eq!(arena.peak(), 64);
    }
}
