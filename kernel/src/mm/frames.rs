//! The physical frame allocator: one bit per 4 KiB frame of the kernel
//! region's free part. Frames are the SVSM's private memory; guest memory is
//! never handed out here.

use abi::boot::MemoryRange;
use abi::layout::PAGE_SIZE;

/// Most frames one allocator manages (1 GiB).
pub const MAX_FRAMES: usize = 1 << 18;
const WORDS: usize = MAX_FRAMES / 64;

/// Why a frame operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// No free run of the requested length.
    OutOfMemory,
    /// The address is not a frame of this allocator.
    NotOwned(u64),
    /// The frame is already free (a double free).
    AlreadyFree(u64),
}

/// Bitmap allocator over one contiguous physical range (bit set = in use).
pub struct FrameAllocator {
    base: u64,
    frames: usize,
    free: usize,
    hint: usize,
    used: [u64; WORDS],
}

impl FrameAllocator {
    /// An allocator with no memory.
    pub const fn empty() -> FrameAllocator {
        FrameAllocator { base: 0, frames: 0, free: 0, hint: 0, used: [0; WORDS] }
    }

    /// Manages the frames of `range` (page aligned; clipped to
    /// [`MAX_FRAMES`]); all start free.
    pub fn init(&mut self, range: MemoryRange) {
        self.base = range.base.next_multiple_of(PAGE_SIZE);
        let end = range.end().unwrap_or(u64::MAX) & !(PAGE_SIZE - 1);
        self.frames = (end.saturating_sub(self.base) / PAGE_SIZE).min(MAX_FRAMES as u64) as usize;
        self.free = self.frames;
        self.hint = 0;
        self.used = [0; WORDS];
        // Frames past the end count as used so searches never return them.
        for frame in self.frames..MAX_FRAMES {
            self.set(frame, true);
        }
    }

    /// The range this allocator manages.
    pub fn range(&self) -> MemoryRange {
        MemoryRange { base: self.base, size: self.frames as u64 * PAGE_SIZE }
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> usize {
        self.free
    }

    /// Number of frames managed.
    pub fn total_frames(&self) -> usize {
        self.frames
    }

    fn is_used(&self, frame: usize) -> bool {
        self.used[frame / 64] & (1 << (frame % 64)) != 0
    }

    fn set(&mut self, frame: usize, used: bool) {
        if used {
            self.used[frame / 64] |= 1 << (frame % 64);
        } else {
            self.used[frame / 64] &= !(1 << (frame % 64));
        }
    }

    fn frame_index(&self, pa: u64) -> Result<usize, FrameError> {
        if !pa.is_multiple_of(PAGE_SIZE) || pa < self.base {
            return Err(FrameError::NotOwned(pa));
        }
        let index = ((pa - self.base) / PAGE_SIZE) as usize;
        if index >= self.frames {
            return Err(FrameError::NotOwned(pa));
        }
        Ok(index)
    }

    /// Allocates one frame.
    pub fn allocate(&mut self) -> Result<u64, FrameError> {
        self.allocate_contiguous(1, 1)
    }

    /// Allocates `count` contiguous frames whose first frame number is a
    /// multiple of `align` frames (relative to physical address 0).
    pub fn allocate_contiguous(&mut self, count: usize, align: usize) -> Result<u64, FrameError> {
        if count == 0 || count > self.free || align == 0 {
            return Err(FrameError::OutOfMemory);
        }
        let start = self
            .search(self.hint, self.frames, count, align)
            .or_else(|| self.search(0, self.frames, count, align))
            .ok_or(FrameError::OutOfMemory)?;
        for frame in start..start + count {
            self.set(frame, true);
        }
        self.free -= count;
        self.hint = start + count;
        Ok(self.base + start as u64 * PAGE_SIZE)
    }

    fn search(&self, from: usize, to: usize, count: usize, align: usize) -> Option<usize> {
        let base_frame = (self.base / PAGE_SIZE) as usize;
        let mut frame = from;
        while frame + count <= to {
            let misalignment = (base_frame + frame) % align;
            if misalignment != 0 {
                frame += align - misalignment;
                continue;
            }
            match (frame..frame + count).find(|&f| self.is_used(f)) {
                None => return Some(frame),
                Some(used) => frame = used + 1,
            }
        }
        None
    }

    /// Marks the frames of `range` in use (e.g. memory a previous stage
    /// left in use). Frames outside the allocator are ignored.
    pub fn reserve(&mut self, range: MemoryRange) {
        let start = range.base & !(PAGE_SIZE - 1);
        let end = range.end().unwrap_or(u64::MAX).next_multiple_of(PAGE_SIZE);
        let mut pa = start;
        while pa < end {
            if let Ok(index) = self.frame_index(pa)
                && !self.is_used(index)
            {
                self.set(index, true);
                self.free -= 1;
            }
            pa += PAGE_SIZE;
        }
    }

    /// Frees `count` frames starting at `pa`. Either all are freed or,
    /// on an error, none.
    pub fn free_contiguous(&mut self, pa: u64, count: usize) -> Result<(), FrameError> {
        let first = self.frame_index(pa)?;
        let last_pa = pa + (count.max(1) as u64 - 1) * PAGE_SIZE;
        self.frame_index(last_pa)?;
        if let Some(free) = (first..first + count).find(|&f| !self.is_used(f)) {
            return Err(FrameError::AlreadyFree(self.base + free as u64 * PAGE_SIZE));
        }
        for frame in first..first + count {
            self.set(frame, false);
        }
        self.free += count;
        self.hint = self.hint.min(first);
        Ok(())
    }

    /// Frees one frame.
    pub fn free(&mut self, pa: u64) -> Result<(), FrameError> {
        self.free_contiguous(pa, 1)
    }

    /// Whether `pa` is a frame of this allocator that is in use.
    pub fn is_allocated(&self, pa: u64) -> bool {
        self.frame_index(pa).map(|index| self.is_used(index)).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocator(frames: u64) -> Box<FrameAllocator> {
        let mut a = Box::new(FrameAllocator::empty());
        a.init(MemoryRange { base: 0x0800_0000, size: frames * PAGE_SIZE });
        a
    }

    #[test]
    fn allocates_every_frame_once_then_runs_out() {
        let mut a = allocator(8);
        let mut seen = Vec::new();
        for _ in 0..8 {
            let pa = a.allocate().unwrap();
            assert!(!seen.contains(&pa));
            assert!((0x0800_0000..0x0800_8000).contains(&pa));
            seen.push(pa);
        }
        assert_eq!(a.allocate(), Err(FrameError::OutOfMemory));
        assert_eq!(a.free_frames(), 0);
        a.free(seen[3]).unwrap();
        assert_eq!(a.allocate(), Ok(seen[3]));
    }

    #[test]
    fn contiguous_runs_respect_alignment() {
        let mut a = allocator(1024);
        a.allocate().unwrap();
        let pa = a.allocate_contiguous(512, 512).unwrap();
        assert_eq!(pa % 0x20_0000, 0);
        assert_eq!(a.free_frames(), 1024 - 513);
        a.free_contiguous(pa, 512).unwrap();
        assert_eq!(a.free_frames(), 1023);
    }

    #[test]
    fn detects_double_free_and_foreign_frames() {
        let mut a = allocator(4);
        let pa = a.allocate().unwrap();
        a.free(pa).unwrap();
        assert_eq!(a.free(pa), Err(FrameError::AlreadyFree(pa)));
        assert_eq!(a.free(0x1000), Err(FrameError::NotOwned(0x1000)));
        assert_eq!(a.free(pa + 1), Err(FrameError::NotOwned(pa + 1)));
        assert_eq!(a.free(0x0800_4000), Err(FrameError::NotOwned(0x0800_4000)));
        // A partly free run is refused as a whole.
        let run = a.allocate_contiguous(2, 1).unwrap();
        a.free(run + PAGE_SIZE).unwrap();
        assert_eq!(a.free_contiguous(run, 2), Err(FrameError::AlreadyFree(run + PAGE_SIZE)));
        assert!(a.is_allocated(run));
    }

    #[test]
    fn reserve_takes_frames_out_of_circulation() {
        let mut a = allocator(8);
        a.reserve(MemoryRange { base: 0x0800_0000, size: 0x2800 });
        assert_eq!(a.free_frames(), 5);
        assert_eq!(a.allocate(), Ok(0x0800_3000));
        a.reserve(MemoryRange { base: 0x0800_0000, size: 0x1000 });
        assert_eq!(a.free_frames(), 4);
    }

    #[test]
    fn zero_and_oversized_requests_fail() {
        let mut a = allocator(4);
        assert_eq!(a.allocate_contiguous(0, 1), Err(FrameError::OutOfMemory));
        assert_eq!(a.allocate_contiguous(5, 1), Err(FrameError::OutOfMemory));
        assert_eq!(a.allocate_contiguous(1, 0), Err(FrameError::OutOfMemory));
    }
}
