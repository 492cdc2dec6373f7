//! The dev platform on the real machine: tiny guests run under VMRUN from
//! a VMSA, call the SVSM with VMGEXIT, read the GHCB MSR and SEV_STATUS,
//! and are stopped when they touch SVSM memory or a page the RMP denies.
//! On other platforms each test reports itself skipped.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::layout::PAGE_SIZE;
use abi::snp_instr::{RmpAdjustAttributes, RmpPageSize, VmplPermissions};
use abi::vmsa::{EFER_SVME, EXIT_CODE_VMGEXIT, Segment, Vmsa, reset};
use kernel::mm::FRAMES;
use kernel::mm::paging::phys_to_virt;
use kernel::platform::dev::{self, GUEST_VMPL};
use kernel::platform::{GuestExit, GuestStop, GuestVcpu, MemoryAccess, Platform};
use kernel::{boot, check, check_eq, kernel_test, skip};

/// Guest RAM the tests use for code and data (below the boot area, unused
/// before the guest firmware starts).
const CODE: u64 = 0x8000;
const DATA: u64 = 0x8800;

static NEXT_ID: AtomicU64 = AtomicU64::new(1 << 40);

/// A test guest: a VMSA in an SVSM frame, in flat 32-bit protected mode at
/// `CODE`, with `code` written there.
struct TinyGuest {
    vcpu: GuestVcpu,
}

impl TinyGuest {
    fn new(code: &[u8]) -> TinyGuest {
        let vmsa_pa = FRAMES.lock().allocate().expect("a frame for the test VMSA");
        let code_page = phys_to_virt(CODE) as *mut u8;
        // SAFETY: CODE..CODE+0x1000 is guest RAM below the boot area that
        // nothing uses before the guest starts; the tests write it alone.
        unsafe {
            core::ptr::write_bytes(code_page, 0xF4, PAGE_SIZE as usize);
            core::ptr::copy_nonoverlapping(code.as_ptr(), code_page, code.len());
        }
        let flat_code = Segment::new(0x8, 0xC9B, 0xFFFF_FFFF, 0);
        let flat_data = Segment::new(0x10, 0xC93, 0xFFFF_FFFF, 0);
        let mut vmsa = Vmsa::reset_state(GUEST_VMPL, 1);
        vmsa.cs = flat_code;
        for segment in [&mut vmsa.ds, &mut vmsa.es, &mut vmsa.ss, &mut vmsa.fs, &mut vmsa.gs] {
            *segment = flat_data;
        }
        vmsa.cr0 = 0x11;
        vmsa.rip = CODE;
        vmsa.rsp = DATA + 0x700;
        // SAFETY: a fresh kernel frame, direct mapped and 4 KiB aligned.
        unsafe { *(phys_to_virt(vmsa_pa) as *mut Vmsa) = vmsa };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        TinyGuest { vcpu: GuestVcpu { id, vmsa_pa, apic_id: 0 } }
    }

    fn vmsa(&self) -> &'static mut Vmsa {
        // SAFETY: the frame is this test's alone and not running now.
        unsafe { &mut *(phys_to_virt(self.vcpu.vmsa_pa) as *mut Vmsa) }
    }

    fn run(&self, dev: &dev::Dev) -> GuestExit {
        dev.run_guest(&self.vcpu)
    }
}

impl Drop for TinyGuest {
    fn drop(&mut self) {
        let _ = FRAMES.lock().free(self.vcpu.vmsa_pa);
    }
}

fn data_u32(offset: u64) -> u32 {
    // SAFETY: DATA is test-owned guest RAM in the direct map.
    unsafe { core::ptr::read_volatile(phys_to_virt(DATA + offset) as *const u32) }
}

/// `mov eax, imm32`.
fn mov_eax(value: u32) -> [u8; 5] {
    let v = value.to_le_bytes();
    [0xB8, v[0], v[1], v[2], v[3]]
}

/// `mov ecx, imm32`.
fn mov_ecx(value: u32) -> [u8; 5] {
    let v = value.to_le_bytes();
    [0xB9, v[0], v[1], v[2], v[3]]
}

/// `mov [addr32], eax`.
fn store_eax(address: u64) -> [u8; 5] {
    let v = (address as u32).to_le_bytes();
    [0xA3, v[0], v[1], v[2], v[3]]
}

const XOR_EDX: [u8; 2] = [0x31, 0xD2];
const WRMSR: [u8; 2] = [0x0F, 0x30];
const RDMSR: [u8; 2] = [0x0F, 0x32];
const VMGEXIT: [u8; 4] = [0xF3, 0x0F, 0x01, 0xD9];

/// Code that asks for VMPL0 through the GHCB MSR protocol (Run-VMPL 0).
fn run_vmpl0() -> alloc::vec::Vec<u8> {
    [&mov_eax(0x16)[..], &XOR_EDX, &mov_ecx(0xC001_0130), &WRMSR, &VMGEXIT].concat()
}

kernel_test! {
    fn vmgexit_run_vmpl0_is_a_request_with_the_state_in_the_vmsa() {
        let Some(dev) = dev::state() else { skip!("not the dev platform") };
        let code = [
            &run_vmpl0()[..],
            &RDMSR,                        // the Run-VMPL response
            &store_eax(DATA),
            &mov_ecx(0xC001_0131),
            &RDMSR,                        // SEV_STATUS
            &store_eax(DATA + 4),
            &mov_eax(0x1234_5678),
            &run_vmpl0()[..],
        ]
        .concat();
        let guest = TinyGuest::new(&code);
        check_eq!(guest.run(dev), GuestExit::Request);
        let vmsa = guest.vmsa();
        check_eq!(vmsa.guest_exit_code, EXIT_CODE_VMGEXIT);
        check_eq!(vmsa.rip, CODE + run_vmpl0().len() as u64);
        check_eq!(vmsa.rax, 0x16);
        check_eq!(vmsa.rcx, 0xC001_0130);
        check!(vmsa.efer & EFER_SVME != 0);
        check_eq!(vmsa.x87_fcw, reset::X87_FCW);
        // The SVSM would now service the call; resume.
        check_eq!(guest.run(dev), GuestExit::Request);
        // Run-VMPL response code 0x017 with error 0, then SEV, SEV-ES, SNP.
        check_eq!(data_u32(0), 0x17);
        check_eq!(data_u32(4), 0b111);
        check_eq!(guest.vmsa().rax, 0x16);
    }
}

kernel_test! {
    fn touching_svsm_memory_stops_the_guest_with_a_report() {
        let Some(dev) = dev::state() else { skip!("not the dev platform") };
        let target = boot::info().kernel_region.base + 0x1000;
        let address = (target as u32).to_le_bytes();
        let write = [0xC7, 0x05, address[0], address[1], address[2], address[3], 1, 0, 0, 0];
        let guest = TinyGuest::new(&write);
        match guest.run(dev) {
            GuestExit::Stopped(GuestStop::ForbiddenAccess { gpa, rip, access, owner }) => {
                check_eq!((gpa, rip, access, owner), (target, CODE, MemoryAccess::Write, "svsm"));
            }
            other => check!(false, "expected a forbidden access, got {other:?}"),
        }
        let read = [&mov_eax(0)[..], &[0x8B, 0x05], &address[..]].concat();
        let guest = TinyGuest::new(&read);
        match guest.run(dev) {
            GuestExit::Stopped(GuestStop::ForbiddenAccess { gpa, access, owner, .. }) => {
                check_eq!((gpa, access, owner), (target, MemoryAccess::Read, "svsm"));
            }
            other => check!(false, "expected a forbidden access, got {other:?}"),
        }
    }
}

kernel_test! {
    fn pages_the_rmp_denies_are_absent_from_the_nested_tables() {
        let Some(dev) = dev::state() else { skip!("not the dev platform") };
        let page = 0x7000;
        let revoke = RmpAdjustAttributes {
            target_vmpl: GUEST_VMPL,
            permissions: VmplPermissions::NONE,
            vmsa: false,
        };
        let grant = RmpAdjustAttributes { permissions: VmplPermissions::ALL, ..revoke };
        check_eq!(dev.pvalidate(page, RmpPageSize::Size4K, true), Ok(()));
        check_eq!(dev.rmpadjust(page, RmpPageSize::Size4K, revoke), Ok(()));
        let code = [&mov_eax(7)[..], &store_eax(page + 0x10), &run_vmpl0()[..]].concat();
        let guest = TinyGuest::new(&code);
        let result = guest.run(dev);
        check_eq!(dev.rmpadjust(page, RmpPageSize::Size4K, grant), Ok(()));
        check_eq!(dev.pvalidate(page, RmpPageSize::Size4K, false), Ok(()));
        match result {
            GuestExit::Stopped(GuestStop::ForbiddenAccess { gpa, owner, .. }) => {
                check_eq!(gpa, page + 0x10);
                check!(owner.starts_with("guest, without access"), "{owner}");
            }
            other => check!(false, "expected a forbidden access, got {other:?}"),
        }
        // Granted again: the same code runs through.
        let guest = TinyGuest::new(&code);
        check_eq!(guest.run(dev), GuestExit::Request);
    }
}

kernel_test! {
    fn svm_instructions_and_plain_vmmcall_raise_ud_in_the_guest() {
        let Some(dev) = dev::state() else { skip!("not the dev platform") };
        // Without an IDT, #UD escalates to a triple fault: shutdown.
        for code in [&[0x0F, 0x01, 0xDA][..], &[0x0F, 0x01, 0xD9], &[0x0F, 0x01, 0xDC]] {
            let guest = TinyGuest::new(code);
            let result = guest.run(dev);
            check!(result == GuestExit::Stopped(GuestStop::Shutdown), "{code:02x?}: {result:?}");
        }
    }
}

kernel_test! {
    fn a_vmsa_without_svme_does_not_run() {
        let Some(dev) = dev::state() else { skip!("not the dev platform") };
        let guest = TinyGuest::new(&run_vmpl0());
        guest.vmsa().efer = 0;
        check_eq!(guest.run(dev), GuestExit::Stopped(GuestStop::InvalidState));
    }
}

kernel_test! {
    fn termination_and_parking_stop_the_vcpu() {
        let Some(dev) = dev::state() else { skip!("not the dev platform") };
        let terminate = [&mov_eax(0x100 | (1 << 12) | (3 << 16))[..], &XOR_EDX,
            &mov_ecx(0xC001_0130), &WRMSR, &VMGEXIT].concat();
        let guest = TinyGuest::new(&terminate);
        check_eq!(guest.run(dev), GuestExit::Stopped(GuestStop::Terminated { set: 1, code: 3 }));
        let park = [&mov_eax(0x006)[..], &XOR_EDX, &mov_ecx(0xC001_0130), &WRMSR, &VMGEXIT].concat();
        let guest = TinyGuest::new(&park);
        check_eq!(guest.run(dev), GuestExit::Stopped(GuestStop::Parked));
    }
}

kernel_test! {
    fn acpi_soft_off_stops_the_guest_and_other_pm1a_writes_pass() {
        let Some(dev) = dev::state() else { skip!("not the dev platform") };
        // mov edx, PM1a_CNT; SCI_EN alone (passed to the device);
        // then SLP_EN with sleep type 0 (QEMU's S5): the power-off.
        const OUT_DX_AX: [u8; 2] = [0x66, 0xEF];
        let port = u32::from(kernel::svm::acpi_power::PM1A_CONTROL_PORT).to_le_bytes();
        let setup = [&[0xBA, port[0], port[1], port[2], port[3]][..], &mov_eax(0x0001), &OUT_DX_AX,
            &mov_eax(0x2001)].concat();
        let code = [&setup[..], &OUT_DX_AX].concat();
        let guest = TinyGuest::new(&code);
        check_eq!(guest.run(dev), GuestExit::Stopped(GuestStop::PoweredOff));
        // Stopped at the power-off OUT, the first one performed.
        check_eq!(guest.vmsa().rip, CODE + setup.len() as u64);
    }
}

kernel_test! {
    fn bare_vmgexit_round_trip_cost() {
        let Some(dev) = dev::state() else { skip!("not the dev platform") };
        const ROUNDS: u32 = 2000;
        // edi = ROUNDS; loop: SEV-info request by MSR protocol, VMGEXIT.
        let mut code = alloc::vec![0xBF];
        code.extend_from_slice(&ROUNDS.to_le_bytes());
        let body = [&mov_eax(0x002)[..], &XOR_EDX, &mov_ecx(0xC001_0130), &WRMSR, &VMGEXIT,
            &[0x4F]].concat();
        code.extend_from_slice(&body);
        let back = -((body.len() + 2) as i8);
        code.extend_from_slice(&[0x75, back as u8]);
        code.extend_from_slice(&run_vmpl0());
        let guest = TinyGuest::new(&code);
        let start = tsc();
        check_eq!(guest.run(dev), GuestExit::Request);
        let cycles = tsc() - start;
        let per_round = cycles / u64::from(ROUNDS);
        kernel::println!(
            "  bench: WRMSR(GHCB) + VMGEXIT answered by the dev platform: {per_round} TSC cycles \
             per round trip pair ({ROUNDS} rounds)"
        );
        check!(per_round > 0);
    }
}

kernel_test! {
    fn guest_memory_accessor_refuses_svsm_memory() {
        let Some(layout) = kernel::guest_mem::layout() else { skip!("no guest memory layout (not the dev platform)") };
        use kernel::guest_mem::GuestMemory;
        let memory = kernel::guest_mem::guest();
        let mut buf = [0u8; 8];
        check!(memory.read(boot::info().kernel_region.base, &mut buf).is_err());
        check!(memory.read(0xFEE0_0000, &mut buf).is_err());
        check!(memory.read(DATA, &mut buf).is_ok());
        check!(layout.is_svsm(boot::info().kernel_region.base));
        check_eq!(dev::state().map(|d| d.owner(boot::info().kernel_region.base)), Some("svsm"));
    }
}

/// The time-stamp counter.
fn tsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}
