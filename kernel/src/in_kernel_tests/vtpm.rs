//! The vTPM service on the real machine: the CPU's random-number
//! instructions, the allocator routing into the vTPM arena, and a whole
//! manufacture with a measured boot and a shutdown that wipes the arena.

use alloc::boxed::Box;
use alloc::vec;

use kernel::vtpm::arena::{Arena, VTPM_ARENA, cpu_token};
use kernel::vtpm::entropy::{CpuEntropy, CpuInstructions};
use kernel::{check, check_eq, kernel_test, platform};
use vtpm::EntropySource;

kernel_test! {
    fn cpu_entropy_fills_buffers_with_varying_bytes() {
        let platform = platform::current().expect("the platform is up before the tests");
        let instructions = CpuInstructions::detect(platform);
        check!(instructions.any(), "neither RDSEED nor RDRAND");
        let mut source = CpuEntropy::new(instructions);
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        check_eq!(source.fill(&mut a), Ok(()));
        check_eq!(source.fill(&mut b), Ok(()));
        check!(a != b, "two draws are equal");
        check!(a.iter().any(|&x| x != a[0]), "a draw is one repeated byte");
    }
}

kernel_test! {
    fn vtpm_manufactures_measures_and_wipes_its_arena() {
        let platform = platform::current().expect("the platform is up before the tests");
        kernel::vtpm::init(platform);
        check!(VTPM_ARENA.size() > 0);
        check!(VTPM_ARENA.used() > 0, "the TPM state lives in the arena");
        let ek = kernel::vtpm::ek_public();
        check!(ek.as_ref().is_some_and(|ek| ek.len() == kernel::vtpm::ek::EK_TEMPLATE_SIZE));
        // Startup, then extend PCR 16 (SHA-256) and read it back.
        let startup = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0];
        check_eq!(kernel::vtpm::execute(0, &startup), vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);
        let mut extend = vec![0x80, 0x02, 0, 0, 0, 65, 0, 0, 1, 0x82, 0, 0, 0, 16];
        extend.extend_from_slice(&[0, 0, 0, 9, 0x40, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x0B]);
        extend.extend_from_slice(&[0xAB; 32]);
        let extended = kernel::vtpm::execute(0, &extend);
        check_eq!(kernel::vtpm::response_code(&extended), Some(0));
        let read = [0x80, 0x01, 0, 0, 0, 20, 0, 0, 1, 0x7E, 0, 0, 0, 1, 0, 0x0B, 3, 0, 0, 1];
        let pcr = kernel::vtpm::execute(0, &read);
        check_eq!(kernel::vtpm::response_code(&pcr), Some(0));
        let expected: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::new().chain_update([0u8; 32]).chain_update([0xAB; 32]).finalize().into()
        };
        check!(pcr.ends_with(&expected), "PCR 16 after one extend");
        drop((extended, pcr));
        kernel::vtpm::shutdown();
        check_eq!(VTPM_ARENA.used(), 0);
        check_eq!(kernel::vtpm::execute(0, &read), kernel::vtpm::error_response(0x101));
    }
}

kernel_test! {
    fn allocations_in_a_scope_land_in_the_arena_and_are_wiped() {
        // A private arena on a heap buffer: the global allocator only routes
        // to VTPM_ARENA, so this checks the arena's own bookkeeping with
        // this CPU's token, and that the kernel heap serves others.
        let backing = vec![0u128; 1024].into_boxed_slice();
        let base = Box::into_raw(backing);
        let arena = Arena::new();
        // SAFETY: the leaked boxed slice is 16 KiB, 16-byte aligned and used by
        // nothing else; it is freed only after the arena is done with it.
        unsafe { arena.init(base as *mut u128 as usize, 16 * 1024) };
        let layout = core::alloc::Layout::from_size_align(64, 8).expect("valid layout");
        let (block, overflowed) = arena.scope(cpu_token(), || arena.allocate(cpu_token, layout));
        check!(!overflowed);
        check!(block.is_some_and(|b| arena.contains(b.as_ptr())));
        check!(arena.allocate(cpu_token, layout).is_none(), "outside the scope");
        if let Some(block) = block {
            // SAFETY: the block is 64 bytes of arena memory this test owns.
            unsafe { core::ptr::write_bytes(block.as_ptr(), 0x77, 64) };
            // SAFETY: allocated above with this layout.
            check!(unsafe { arena.release(cpu_token, block, layout) });
            // SAFETY: still inside the backing buffer.
            let tail = unsafe { core::slice::from_raw_parts(block.as_ptr().add(16), 48) };
            check!(tail.iter().all(|&b| b == 0), "freed arena memory is zeroed");
        }
        // SAFETY: the arena is not used any more; the slice came from Box::into_raw.
        drop(unsafe { Box::from_raw(base) });
    }
}
