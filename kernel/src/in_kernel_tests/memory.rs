//! Frame allocator, kernel page tables and heap, on the real machine.

use alloc::boxed::Box;
use alloc::vec::Vec;

use abi::layout::{DIRECT_MAP_BASE, KERNEL_VIRT_BASE, LARGE_PAGE_SIZE, PAGE_SIZE};
use abi::paging::{PageFlags, PageSize};
use kernel::cpu::extable;
use kernel::cpu::registers::invlpg;
use kernel::mm::paging::{phys_to_virt, virt_to_phys};
use kernel::mm::{FRAMES, heap_usage, with_kernel_tables};
use kernel::{boot, check, check_eq, kernel_test};

/// A virtual address no kernel mapping uses, for tests that map pages.
const TEST_VA: u64 = 0xFFFF_E000_0000_0000;

fn translate(va: u64) -> Option<abi::paging::Translation> {
    with_kernel_tables(|mapper, tables| mapper.translate(tables, va))
}

kernel_test! {
    fn frames_come_from_the_kernel_region() {
        let frame = FRAMES.lock().allocate();
        check!(frame.is_ok());
        let frame = frame.unwrap_or_default();
        let region = boot::info().kernel_region;
        check!(frame.is_multiple_of(PAGE_SIZE), "frame {frame:#x} not page aligned");
        check!(region.contains_range(&abi::boot::MemoryRange { base: frame, size: PAGE_SIZE }));
        check!(frame >= boot::info().free_base, "frame {frame:#x} below stage2's allocations");
        check_eq!(FRAMES.lock().free(frame), Ok(()));
    }
}

kernel_test! {
    fn frames_are_writable_through_the_direct_map() {
        let frame = FRAMES.lock().allocate().unwrap_or_default();
        check!(frame != 0);
        let va = phys_to_virt(frame);
        // SAFETY: the frame was just allocated for this test and is direct mapped.
        let result = unsafe { extable::write_u64(va, 0x5EC0_DE5E_C0DE).and_then(|()| extable::read_u64(va)) };
        check_eq!(result, Ok(0x5EC0_DE5E_C0DE));
        check_eq!(virt_to_phys(va), Some(frame));
        check_eq!(FRAMES.lock().free(frame), Ok(()));
    }
}

kernel_test! {
    fn contiguous_large_page_aligned_frames() {
        let run = FRAMES.lock().allocate_contiguous(512, 512);
        check!(run.is_ok(), "no free 2 MiB run: {run:?}");
        let run = run.unwrap_or_default();
        check_eq!(run % LARGE_PAGE_SIZE, 0);
        check_eq!(FRAMES.lock().free_contiguous(run, 512), Ok(()));
    }
}

kernel_test! {
    fn frame_double_free_is_refused() {
        let frame = FRAMES.lock().allocate().unwrap_or_default();
        check_eq!(FRAMES.lock().free(frame), Ok(()));
        check_eq!(FRAMES.lock().free(frame), Err(kernel::mm::frames::FrameError::AlreadyFree(frame)));
    }
}

kernel_test! {
    fn kernel_text_is_executable_and_read_only() {
        let text = translate(KERNEL_VIRT_BASE);
        check!(text.is_some(), "kernel text not mapped");
        let flags = text.map(|t| t.flags).unwrap_or(PageFlags::empty());
        check!(!flags.contains(PageFlags::WRITABLE), "text is writable: {flags:?}");
        check!(!flags.contains(PageFlags::NO_EXECUTE), "text is not executable: {flags:?}");
    }
}

kernel_test! {
    fn kernel_data_is_writable_and_not_executable() {
        static SOME_DATA: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
        let data = translate(&SOME_DATA as *const _ as u64);
        let flags = data.map(|t| t.flags).unwrap_or(PageFlags::empty());
        check!(flags.contains(PageFlags::WRITABLE | PageFlags::NO_EXECUTE), "data flags {flags:?}");
        static SOME_CONSTANT: [u8; 3] = *b"abc";
        let rodata = translate(SOME_CONSTANT.as_ptr() as u64);
        let flags = rodata.map(|t| t.flags).unwrap_or(PageFlags::empty());
        check!(flags.contains(PageFlags::NO_EXECUTE) && !flags.contains(PageFlags::WRITABLE), "rodata flags {flags:?}");
    }
}

kernel_test! {
    fn every_kernel_page_is_writable_xor_executable() {
        let (start, end) = (KERNEL_VIRT_BASE, KERNEL_VIRT_BASE + boot::info().kernel_image.size);
        let mut va = start;
        while va < end {
            if let Some(t) = translate(va) {
                let writable = t.flags.contains(PageFlags::WRITABLE);
                let executable = !t.flags.contains(PageFlags::NO_EXECUTE);
                check!(!(writable && executable), "page {va:#x} is writable and executable");
            }
            va += PAGE_SIZE;
        }
    }
}

kernel_test! {
    fn direct_map_covers_ram_and_is_not_executable() {
        for range in boot::info().memory_ranges() {
            for pa in [range.base, range.base + range.size - 1] {
                let t = translate(DIRECT_MAP_BASE + pa);
                check!(t.is_some(), "RAM at {pa:#x} missing from the direct map");
                let t = t.unwrap_or(abi::paging::Translation { pa: 0, size: PageSize::Size4K, flags: PageFlags::empty() });
                check_eq!(t.pa, pa);
                check!(t.flags.contains(PageFlags::NO_EXECUTE));
            }
        }
    }
}

kernel_test! {
    fn stage2_identity_map_is_gone() {
        // Stage2 ran identity mapped at 1 MiB; the kernel's tables do not map it.
        check!(translate(abi::layout::STAGE2_BASE).is_none());
        // SAFETY: the address is unmapped: the read faults and is recovered.
        check_eq!(unsafe { extable::read_u64(abi::layout::STAGE2_BASE) }, Err(extable::Fault));
    }
}

kernel_test! {
    fn map_write_unmap_then_fault() {
        let frame = FRAMES.lock().allocate().unwrap_or_default();
        let mapped = with_kernel_tables(|m, t| m.map(t, TEST_VA, frame, PageSize::Size4K, PageFlags::data()));
        check_eq!(mapped, Ok(()));
        // SAFETY: TEST_VA maps a frame owned by this test.
        check_eq!(unsafe { extable::write_u64(TEST_VA, 42) }, Ok(()));
        // SAFETY: the same frame through the direct map.
        check_eq!(unsafe { extable::read_u64(phys_to_virt(frame)) }, Ok(42));
        let unmapped = with_kernel_tables(|m, t| m.unmap(t, TEST_VA, PageSize::Size4K));
        invlpg(TEST_VA);
        check_eq!(unmapped, Ok(frame));
        // SAFETY: now unmapped: the read faults and is recovered.
        check_eq!(unsafe { extable::read_u64(TEST_VA) }, Err(extable::Fault));
        check_eq!(FRAMES.lock().free(frame), Ok(()));
    }
}

kernel_test! {
    fn read_only_mapping_refuses_writes() {
        let frame = FRAMES.lock().allocate().unwrap_or_default();
        let va = TEST_VA + PAGE_SIZE;
        let mapped = with_kernel_tables(|m, t| m.map(t, va, frame, PageSize::Size4K, PageFlags::rodata()));
        check_eq!(mapped, Ok(()));
        // SAFETY: the page is mapped read-only to a frame this test owns:
        // reading works, writing faults (CR0.WP) and is recovered.
        check!(unsafe { extable::read_u64(va) }.is_ok());
        // SAFETY: as above; the write faults and is recovered.
        check_eq!(unsafe { extable::write_u64(va, 1) }, Err(extable::Fault));
        let protect = with_kernel_tables(|m, t| m.protect(t, va, PageFlags::data()));
        check_eq!(protect, Ok(()));
        invlpg(va);
        // SAFETY: now writable.
        check_eq!(unsafe { extable::write_u64(va, 7) }, Ok(()));
        let unmapped = with_kernel_tables(|m, t| m.unmap(t, va, PageSize::Size4K));
        invlpg(va);
        check_eq!(unmapped, Ok(frame));
        check_eq!(FRAMES.lock().free(frame), Ok(()));
    }
}

kernel_test! {
    fn mapping_twice_is_refused() {
        let va = TEST_VA + 2 * PAGE_SIZE;
        let first = with_kernel_tables(|m, t| m.map(t, va, 0x1000, PageSize::Size4K, PageFlags::rodata()));
        let second = with_kernel_tables(|m, t| m.map(t, va, 0x2000, PageSize::Size4K, PageFlags::rodata()));
        let unmapped = with_kernel_tables(|m, t| m.unmap(t, va, PageSize::Size4K));
        invlpg(va);
        check_eq!(first, Ok(()));
        check_eq!(second, Err(abi::paging::MapError::AlreadyMapped));
        check_eq!(unmapped, Ok(0x1000));
    }
}

kernel_test! {
    fn heap_box_and_vec() {
        let boxed = Box::new(0xABCD_u64);
        check_eq!(*boxed, 0xABCD);
        let mut v: Vec<u32> = Vec::new();
        for i in 0..100_000 {
            v.push(i);
        }
        check_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 4_999_950_000);
    }
}

kernel_test! {
    fn heap_usage_returns_to_baseline() {
        let (before, _) = heap_usage();
        {
            let blocks: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([7u8; 100])).collect();
            check!(blocks.iter().all(|b| b[99] == 7));
            check!(heap_usage().0 > before);
        }
        check_eq!(heap_usage().0, before);
    }
}

kernel_test! {
    fn heap_honours_large_alignment() {
        let layout = core::alloc::Layout::from_size_align(8192, 4096).unwrap_or(core::alloc::Layout::new::<u8>());
        // SAFETY: non-zero-size layout; freed below with the same layout.
        let p = unsafe { alloc::alloc::alloc(layout) };
        check!(!p.is_null());
        check_eq!(p as u64 % 4096, 0);
        // SAFETY: allocated above with this layout.
        unsafe { alloc::alloc::dealloc(p, layout) };
    }
}

kernel_test! {
    fn heap_lives_in_the_kernel_region() {
        let boxed = Box::new([0u8; 64]);
        let pa = virt_to_phys(boxed.as_ptr() as u64);
        check!(pa.is_some(), "heap pointer outside the direct map");
        let pa = pa.unwrap_or_default();
        check!(boot::info().kernel_region.contains_range(&abi::boot::MemoryRange { base: pa, size: 64 }));
    }
}
