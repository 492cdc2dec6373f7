//! The kernel heap behind `alloc`: a first-fit free list over one region of
//! kernel memory, kept sorted by address so freed blocks merge with their
//! neighbours.
//!
//! Blocks carry no header: `dealloc` gets the layout back from Rust, so the
//! heap rounds every request the same way on both sides (16-byte granules,
//! 16-byte minimum alignment).

use core::alloc::Layout;
use core::ptr::NonNull;

const GRANULE: usize = 16;

struct FreeBlock {
    size: usize,
    next: Option<NonNull<FreeBlock>>,
}

/// A heap over `[start, start + size)`.
pub struct Heap {
    head: Option<NonNull<FreeBlock>>,
    start: usize,
    end: usize,
    used: usize,
}

// SAFETY: the heap owns its region exclusively; the raw pointers in the free
// list point into that region and are only followed under `&mut self`.
unsafe impl Send for Heap {}

fn block_size(layout: Layout) -> usize {
    layout.size().max(1).next_multiple_of(GRANULE)
}

impl Heap {
    /// A heap with no memory: every allocation fails.
    pub const fn empty() -> Heap {
        Heap { head: None, start: 0, end: 0, used: 0 }
    }

    /// Hands the heap the memory `[start, start + size)`.
    ///
    /// # Safety
    /// The range must be writable memory that nothing else uses for as long
    /// as the heap lives, and `start` must be 16-byte aligned.
    pub unsafe fn init(&mut self, start: usize, size: usize) {
        let size = size & !(GRANULE - 1);
        self.start = start;
        self.end = start + size;
        self.used = 0;
        self.head = None;
        if size >= GRANULE {
            // SAFETY: the caller gives us the range; a block header fits.
            unsafe { self.insert_free(start, size) };
        }
    }

    /// Bytes handed out and not yet returned.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Size of the heap's region.
    pub fn size(&self) -> usize {
        self.end - self.start
    }

    /// Allocates a block for `layout`, or returns `None` when no free block
    /// is large enough.
    pub fn allocate(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        let size = block_size(layout);
        let align = layout.align().max(GRANULE);
        let mut previous: Option<NonNull<FreeBlock>> = None;
        let mut current = self.head;
        while let Some(block) = current {
            // SAFETY: every block on the list lies in the heap's region and
            // was written by `insert_free`.
            let (block_start, block_size, next) = unsafe {
                let b = block.as_ref();
                (block.as_ptr() as usize, b.size, b.next)
            };
            let block_end = block_start + block_size;
            let mut start = block_start.next_multiple_of(align);
            if start != block_start && start - block_start < GRANULE {
                start = (block_start + GRANULE).next_multiple_of(align);
            }
            if start.checked_add(size).is_some_and(|end| end <= block_end) {
                // Unlink the block, then give back what is left on each side.
                // SAFETY: `previous` and `block` are list members.
                unsafe {
                    match previous {
                        Some(mut p) => p.as_mut().next = next,
                        None => self.head = next,
                    }
                    if start > block_start {
                        self.insert_free(block_start, start - block_start);
                    }
                    if start + size < block_end {
                        self.insert_free(start + size, block_end - (start + size));
                    }
                }
                self.used += size;
                return NonNull::new(start as *mut u8);
            }
            previous = current;
            current = next;
        }
        None
    }

    /// Returns a block.
    ///
    /// # Safety
    /// `ptr` must come from [`Heap::allocate`] on this heap with the same
    /// `layout`, and must not be used afterwards.
    pub unsafe fn deallocate(&mut self, ptr: NonNull<u8>, layout: Layout) {
        let size = block_size(layout);
        self.used -= size;
        // SAFETY: per the contract the block is ours and free again.
        unsafe { self.insert_free(ptr.as_ptr() as usize, size) };
    }

    /// Puts `[start, start + size)` on the free list in address order and
    /// merges it with adjacent free blocks.
    ///
    /// # Safety
    /// The range must be inside the heap, 16-byte aligned, at least one
    /// granule long, and not on the list already.
    unsafe fn insert_free(&mut self, start: usize, size: usize) {
        debug_assert!(start >= self.start && start + size <= self.end);
        let mut previous: Option<NonNull<FreeBlock>> = None;
        let mut current = self.head;
        while let Some(block) = current {
            if block.as_ptr() as usize > start {
                break;
            }
            previous = current;
            // SAFETY: list member.
            current = unsafe { block.as_ref().next };
        }
        let new = start as *mut FreeBlock;
        // SAFETY: the range is free heap memory large enough for a header.
        unsafe { new.write(FreeBlock { size, next: current }) };
        let mut new = NonNull::new(new).expect("heap addresses are not null");
        match previous {
            // SAFETY: list member.
            Some(mut p) => unsafe { p.as_mut().next = Some(new) },
            None => self.head = Some(new),
        }
        // SAFETY: `new`, its successor and its predecessor are list members;
        // merging only joins blocks that touch.
        unsafe {
            if let Some(next) = new.as_ref().next
                && start + new.as_ref().size == next.as_ptr() as usize
            {
                let merged = new.as_ref().size + next.as_ref().size;
                new.as_mut().size = merged;
                new.as_mut().next = next.as_ref().next;
            }
            if let Some(mut p) = previous
                && p.as_ptr() as usize + p.as_ref().size == start
            {
                p.as_mut().size += new.as_ref().size;
                p.as_mut().next = new.as_ref().next;
            }
        }
    }

    /// Number of blocks on the free list (for tests and diagnostics).
    pub fn free_blocks(&self) -> usize {
        let mut count = 0;
        let mut current = self.head;
        while let Some(block) = current {
            count += 1;
            // SAFETY: list member.
            current = unsafe { block.as_ref().next };
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap(words: &mut Vec<u128>) -> Heap {
        let mut heap = Heap::empty();
        // SAFETY: the vector outlives the heap in each test and is 16-byte aligned.
        unsafe { heap.init(words.as_mut_ptr() as usize, words.len() * 16) };
        heap
    }

    #[test]
    fn allocations_are_aligned_disjoint_and_returned() {
        let mut arena = vec![0u128; 4096];
        let mut h = heap(&mut arena);
        let layouts = [
            Layout::from_size_align(1, 1).unwrap(),
            Layout::from_size_align(100, 8).unwrap(),
            Layout::from_size_align(64, 64).unwrap(),
            Layout::from_size_align(4096, 4096).unwrap(),
        ];
        let mut blocks = Vec::new();
        for layout in layouts {
            let p = h.allocate(layout).unwrap();
            assert_eq!(p.as_ptr() as usize % layout.align(), 0);
            blocks.push((p.as_ptr() as usize, block_size(layout), layout, p));
        }
        for (i, a) in blocks.iter().enumerate() {
            for b in &blocks[i + 1..] {
                assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "blocks overlap");
            }
        }
        assert!(h.used() > 0);
        for (_, _, layout, p) in blocks {
            // SAFETY: allocated above with the same layout.
            unsafe { h.deallocate(p, layout) };
        }
        assert_eq!(h.used(), 0);
        assert_eq!(h.free_blocks(), 1, "freed blocks merge back into one");
    }

    #[test]
    fn exhaustion_returns_none_and_recovers() {
        let mut arena = vec![0u128; 64];
        let mut h = heap(&mut arena);
        let big = Layout::from_size_align(1024, 16).unwrap();
        let p = h.allocate(big).unwrap();
        assert!(h.allocate(Layout::from_size_align(16, 16).unwrap()).is_none());
        // SAFETY: allocated above with the same layout.
        unsafe { h.deallocate(p, big) };
        assert!(h.allocate(big).is_some());
    }

    #[test]
    fn empty_heap_allocates_nothing() {
        let mut h = Heap::empty();
        assert!(h.allocate(Layout::from_size_align(8, 8).unwrap()).is_none());
    }

    #[test]
    fn randomised_churn_keeps_the_heap_consistent() {
        let mut arena = vec![0u128; 1 << 14];
        let mut h = heap(&mut arena);
        let mut live: Vec<(NonNull<u8>, Layout)> = Vec::new();
        let mut seed = 0x1234_5678u64;
        for _ in 0..5000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if live.len() > 50 || (seed >> 60) < 6 && !live.is_empty() {
                let (p, layout) = live.swap_remove((seed >> 8) as usize % live.len());
                // SAFETY: allocated below with the same layout.
                unsafe { h.deallocate(p, layout) };
            } else {
                let layout = Layout::from_size_align(
                    1 + (seed >> 40) as usize % 2000,
                    1 << ((seed >> 20) % 8),
                )
                .unwrap();
                if let Some(p) = h.allocate(layout) {
                    // SAFETY: the block is ours and `layout.size()` long.
                    unsafe { core::ptr::write_bytes(p.as_ptr(), 0x5A, layout.size()) };
                    live.push((p, layout));
                }
            }
        }
        for (p, layout) in live {
            // SAFETY: allocated above with the same layout.
            unsafe { h.deallocate(p, layout) };
        }
        assert_eq!(h.used(), 0);
        assert_eq!(h.free_blocks(), 1);
    }
}
