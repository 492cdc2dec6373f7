//! MMIO emulation over a fake vCPU, fake guest RAM with real 4-level page
//! tables, the checked guest-memory accessor for the page walks, and MOVS
//! elements through it under the guest VMPL's permissions in an emulated
//! RMP behind a lock, as on the dev platform.

use abi::boot::MemoryRange;
use abi::snp_instr::{RmpAdjustAttributes, RmpPageSize, VmplPermissions};
use spin::Mutex;

use super::*;
use crate::crb::device::{CRB_BASE, CRB_SIZE, CTRL_START, CrbDevice, DATA_BUFFER, LOC_CTRL};
use crate::guest_mem::{CheckedGuestMemory, GuestLayout, OwnedPages, RawGuestMemory};
use crate::host_doubles::{FakeGuestCpu, FakeGuestRam};
use crate::svm::rmp::{LockedVmplMemory, PageState, Rmp};
use crate::vtpm::tests::{service, startup};

const RAM_SIZE: u64 = 0x100_0000;
const SVSM: MemoryRange = MemoryRange { base: 0x80_0000, size: 0x10_0000 };
const PML4: u64 = 0x1_0000;
const PDPT: u64 = 0x1_1000;
const PD: u64 = 0x1_2000;
const PT: u64 = 0x1_3000;
const PT_DEVICE: u64 = 0x1_4000;
const PD_HIGH: u64 = 0x1_5000;
/// Linear addresses and where they map.
const CODE: u64 = 0x40_0000; // -> 0x20_0000
const DATA: u64 = 0x40_1000; // -> 0x20_1000
const SVSM_ALIAS: u64 = 0x40_2000; // -> SVSM memory
const READ_ONLY: u64 = 0x40_3000; // -> 0x20_3000, not writable
const SUPERVISOR: u64 = 0x40_4000; // -> CRB, no user bit
const UNMAPPED: u64 = 0x40_5000;
const DEVICE: u64 = 0x60_0000; // -> CRB_BASE
const LARGE: u64 = 0x8000_0000; // 2 MiB page -> 0xFEC0_0000

const RW_USER: u64 = 0x7;
const RW: u64 = 0x3;

const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// The guest's VMPL on the dev platform.
const VMPL: u8 = 2;

struct Guest {
    ram: FakeGuestRam,
    layout: GuestLayout,
    owned: OwnedPages,
    /// Guest RAM validated with every permission for the guest's VMPL (as
    /// after PVALIDATE), the SVSM's region with none; behind a lock as the
    /// dev platform's guest-memory state.
    rmp: Mutex<Rmp>,
}

impl Guest {
    fn new() -> Guest {
        let guest_page = PageState::new(true, VmplPermissions::ALL);
        let svsm_end = SVSM.base + SVSM.size;
        let guest = Guest {
            ram: FakeGuestRam::new(0, RAM_SIZE),
            layout: GuestLayout::new(&[MemoryRange { base: 0, size: RAM_SIZE }], &[SVSM]),
            owned: OwnedPages::new(),
            rmp: Mutex::new(Rmp::new(&[
                (MemoryRange { base: 0, size: SVSM.base }, guest_page),
                (SVSM, PageState::new(true, VmplPermissions::NONE)),
                (MemoryRange { base: svsm_end, size: RAM_SIZE - svsm_end }, guest_page),
            ])),
        };
        let entry = |table: u64, index: u64, value: u64| {
            guest.ram.write(table + index * 8, &value.to_le_bytes()).unwrap();
        };
        entry(PML4, 0, PDPT | RW_USER);
        entry(PDPT, 0, PD | RW_USER);
        entry(PDPT, 2, PD_HIGH | RW_USER); // 2 GiB..3 GiB
        entry(PD, 2, PT | RW_USER); // 0x40_0000..0x60_0000
        entry(PD, 3, PT_DEVICE | RW_USER); // 0x60_0000..0x80_0000
        entry(PD_HIGH, 0, 0xFEC0_0000 | RW_USER | (1 << 7)); // 0x8000_0000, 2 MiB
        entry(PT, 0, 0x20_0000 | RW_USER);
        entry(PT, 1, 0x20_1000 | RW_USER);
        entry(PT, 2, SVSM.base | RW_USER);
        entry(PT, 3, 0x20_3000 | 0x5);
        entry(PT, 4, CRB_BASE | RW);
        entry(PT_DEVICE, 0, CRB_BASE | RW_USER);
        guest
    }

    fn memory(&self) -> CheckedGuestMemory<'_> {
        CheckedGuestMemory::new(&self.layout, &self.owned, &self.ram)
    }

    /// MOVS elements' view: the checked memory under the RMP's lock.
    fn ram<'a>(&'a self, checked: &'a CheckedGuestMemory<'a>) -> LockedVmplMemory<'a, Rmp> {
        LockedVmplMemory::new(checked, &self.rmp, |rmp| rmp, VMPL)
    }

    /// RMPADJUST of the 4 KiB page at `gpa`: the guest's VMPL gets
    /// `permissions`.
    fn rmpadjust(&self, gpa: u64, permissions: VmplPermissions) {
        let attributes = RmpAdjustAttributes { target_vmpl: VMPL, permissions, vmsa: false };
        self.rmp.lock().rmpadjust(gpa, RmpPageSize::Size4K, attributes).unwrap();
    }

    fn put_code(&self, bytes: &[u8]) {
        self.ram.write(0x20_0000, bytes).unwrap();
    }
}

/// A 64-bit vCPU at CPL 0 on the test's tables, with CR0.WP and EFER.NXE.
fn long_mode_cpu() -> FakeGuestCpu {
    FakeGuestCpu {
        registers: [0; 16],
        rip: CODE,
        rflags: 0x2,
        mode: CpuMode::Long64,
        cpl: 0,
        paging: GuestPaging {
            cr0: CR0_PG | CR0_WP | 1,
            cr3: PML4,
            cr4: CR4_PAE,
            efer: EFER_LMA | (1 << 8) | EFER_NXE,
        },
        fs_base: 0,
    }
}

/// Records accesses; reads return `0x8877_6655_4433_2211` shifted by the offset.
#[derive(Default)]
struct Recorder {
    reads: Vec<(u64, u8)>,
    writes: Vec<(u64, u8, u64)>,
}

impl MmioDevice for Recorder {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.reads.push((offset, size));
        let value = 0x8877_6655_4433_2211u64.wrapping_add(offset);
        if size == 8 { value } else { value & ((1 << (8 * size)) - 1) }
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.writes.push((offset, size, value));
    }
}

fn run(
    guest: &Guest,
    cpu: &mut FakeGuestCpu,
    fault: u64,
    device: &mut Recorder,
) -> Result<Instruction, MmioError> {
    let mut window = DeviceWindow { base: CRB_BASE, size: CRB_SIZE, device };
    let checked = guest.memory();
    emulate(cpu, &checked, &guest.ram(&checked), fault, &mut window)
}

#[test]
fn load_zero_extends_32_bit_destinations_and_advances_rip() {
    let guest = Guest::new();
    guest.put_code(&[0x8B, 0x02]); // mov eax, [rdx]
    let mut cpu = long_mode_cpu();
    cpu.registers[0] = u64::MAX;
    cpu.registers[2] = DEVICE + 0x44;
    let mut device = Recorder::default();
    run(&guest, &mut cpu, CRB_BASE + 0x44, &mut device).unwrap();
    assert_eq!(device.reads, [(0x44, 4)]);
    assert_eq!(cpu.registers[0], 0x4433_2255, "0x44332211 + 0x44, upper half cleared");
    assert_eq!(cpu.rip, CODE + 2);
}

#[test]
fn rip_relative_store() {
    let guest = Guest::new();
    // mov [rip + disp32], ecx with the target DEVICE + 0x4C.
    let disp = (DEVICE + 0x4C - (CODE + 6)) as u32;
    let mut code = vec![0x89, 0x0D];
    code.extend_from_slice(&disp.to_le_bytes());
    guest.put_code(&code);
    let mut cpu = long_mode_cpu();
    cpu.registers[1] = 0xFFFF_FFFF_0000_0001;
    let mut device = Recorder::default();
    run(&guest, &mut cpu, CRB_BASE + 0x4C, &mut device).unwrap();
    assert_eq!(device.writes, [(0x4C, 4, 0xFFFF_FFFF_0000_0001)]);
    assert_eq!(cpu.rip, CODE + 6);
}

#[test]
fn byte_loads_merge_and_extensions_extend() {
    let guest = Guest::new();
    let mut device = Recorder::default();
    // mov ah, [rbx]
    guest.put_code(&[0x8A, 0x23]);
    let mut cpu = long_mode_cpu();
    cpu.registers[0] = 0x1111_2222_3333_4444;
    cpu.registers[3] = DEVICE + 0x80;
    run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device).unwrap();
    assert_eq!(cpu.registers[0], 0x1111_2222_3333_9144, "0x11 + 0x80 into AH");
    // movsx rax, byte [rbx]: 0x91 sign-extends.
    guest.put_code(&[0x48, 0x0F, 0xBE, 0x03]);
    let mut cpu = long_mode_cpu();
    cpu.registers[3] = DEVICE + 0x80;
    run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device).unwrap();
    assert_eq!(cpu.registers[0], 0xFFFF_FFFF_FFFF_FF91);
    // movzx cx, byte [rbx]: 16-bit destination keeps the upper bits.
    guest.put_code(&[0x66, 0x0F, 0xB6, 0x0B]);
    let mut cpu = long_mode_cpu();
    cpu.registers[1] = 0xAAAA_AAAA_AAAA_AAAA;
    cpu.registers[3] = DEVICE + 0x80;
    run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device).unwrap();
    assert_eq!(cpu.registers[1], 0xAAAA_AAAA_AAAA_0091);
    assert_eq!(cpu.rip, CODE + 4);
}

#[test]
fn immediate_stores_and_fs_override() {
    let guest = Guest::new();
    let mut device = Recorder::default();
    // mov byte [rdi], 0x7f
    guest.put_code(&[0xC6, 0x07, 0x7F]);
    let mut cpu = long_mode_cpu();
    cpu.registers[7] = DEVICE + 0x48;
    run(&guest, &mut cpu, CRB_BASE + 0x48, &mut device).unwrap();
    // mov dword fs:[rbx], 1 (fs base = DEVICE)
    guest.put_code(&[0x64, 0xC7, 0x03, 0x01, 0, 0, 0]);
    let mut cpu = long_mode_cpu();
    cpu.fs_base = DEVICE;
    cpu.registers[3] = 0x40;
    run(&guest, &mut cpu, CRB_BASE + 0x40, &mut device).unwrap();
    assert_eq!(device.writes, [(0x48, 1, 0x7F), (0x40, 4, 1)]);
}

#[test]
fn rep_movsd_from_ram_into_the_device() {
    let guest = Guest::new();
    guest.put_code(&[0xF3, 0xA5]);
    guest.ram.write(0x20_1000, &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]).unwrap();
    let mut cpu = long_mode_cpu();
    cpu.registers[1] = 3;
    cpu.registers[6] = DATA;
    cpu.registers[7] = DEVICE + 0x80;
    let mut device = Recorder::default();
    run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device).unwrap();
    assert_eq!(device.writes, [(0x80, 4, 1), (0x84, 4, 2), (0x88, 4, 3)]);
    assert_eq!(
        (cpu.registers[1], cpu.registers[6], cpu.registers[7]),
        (0, DATA + 12, DEVICE + 0x8C)
    );
    assert_eq!(cpu.rip, CODE + 2);
}

#[test]
fn movsb_backwards_from_the_device_into_ram() {
    let guest = Guest::new();
    guest.put_code(&[0xF3, 0xA4]);
    let mut cpu = long_mode_cpu();
    cpu.rflags |= RFLAGS_DF;
    cpu.registers[1] = 2;
    cpu.registers[6] = DEVICE + 0x81;
    cpu.registers[7] = DATA + 1;
    let mut device = Recorder::default();
    run(&guest, &mut cpu, CRB_BASE + 0x81, &mut device).unwrap();
    assert_eq!(device.reads, [(0x81, 1), (0x80, 1)]);
    let mut ram = [0u8; 2];
    guest.ram.read(0x20_1000, &mut ram).unwrap();
    assert_eq!(ram, [0x91, 0x92]);
    assert_eq!((cpu.registers[6], cpu.registers[7]), (DEVICE + 0x7F, DATA - 1));
}

#[test]
fn long_rep_movs_stops_after_its_budget_without_advancing_rip() {
    let guest = Guest::new();
    guest.put_code(&[0xF3, 0xA4]); // rep movsb: the whole device page into RAM, and more
    let mut cpu = long_mode_cpu();
    cpu.registers[1] = MOVS_ELEMENTS_PER_EXIT + 10;
    cpu.registers[6] = DEVICE;
    cpu.registers[7] = DATA;
    let mut device = Recorder::default();
    run(&guest, &mut cpu, CRB_BASE, &mut device).unwrap();
    assert_eq!(device.reads.len() as u64, MOVS_ELEMENTS_PER_EXIT);
    assert_eq!(cpu.registers[1], 10, "the rest is left for the re-executed instruction");
    assert_eq!(cpu.registers[6], DEVICE + MOVS_ELEMENTS_PER_EXIT);
    assert_eq!(cpu.registers[7], DATA + MOVS_ELEMENTS_PER_EXIT);
    assert_eq!(cpu.rip, CODE, "not complete: the guest re-executes it");
}

#[test]
fn movs_with_32_bit_addresses_wraps_and_zero_extends() {
    let guest = Guest::new();
    guest.put_code(&[0x67, 0xA5]); // movsd with ESI/EDI
    let mut cpu = long_mode_cpu();
    cpu.registers[6] = 0xFFFF_FFFF_0000_0000 | DATA;
    cpu.registers[7] = 0xFFFF_FFFF_0000_0000 | (DEVICE + 0x80);
    let mut device = Recorder::default();
    run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device).unwrap();
    assert_eq!(device.writes, [(0x80, 4, 0)]);
    assert_eq!((cpu.registers[6], cpu.registers[7]), (DATA + 4, DEVICE + 0x84));
    assert_eq!(cpu.rip, CODE + 2);
}

#[test]
fn operand_elsewhere_than_the_faulting_page_is_refused() {
    let guest = Guest::new();
    guest.put_code(&[0x8B, 0x02]);
    let mut cpu = long_mode_cpu();
    cpu.registers[2] = DATA;
    let mut device = Recorder::default();
    let error = run(&guest, &mut cpu, CRB_BASE, &mut device);
    assert_eq!(error, Err(MmioError::WrongAddress { gpa: 0x20_1000 }));
    assert!(device.reads.is_empty());
    assert_eq!(cpu.rip, CODE);
    // An access that runs off the end of the device page.
    guest.put_code(&[0x48, 0x8B, 0x02]);
    cpu.registers[2] = DEVICE + 0xFFC;
    assert_eq!(
        run(&guest, &mut cpu, CRB_BASE + 0xFFC, &mut device),
        Err(MmioError::WrongAddress { gpa: CRB_BASE + 0xFFC })
    );
}

#[test]
fn movs_cannot_reach_svsm_memory() {
    let guest = Guest::new();
    guest.put_code(&[0xA5]); // movsd from the device into SVSM memory
    let mut cpu = long_mode_cpu();
    cpu.registers[6] = DEVICE + 0x80;
    cpu.registers[7] = SVSM_ALIAS;
    let mut device = Recorder::default();
    assert_eq!(
        run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device),
        Err(MmioError::GuestMemory { gpa: SVSM.base })
    );
    // Or out of it into the device.
    cpu.registers[6] = SVSM_ALIAS;
    cpu.registers[7] = DEVICE + 0x80;
    assert_eq!(
        run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device),
        Err(MmioError::GuestMemory { gpa: SVSM.base })
    );
    assert!(device.writes.is_empty());
}

#[test]
fn page_tables_in_svsm_memory_are_refused() {
    let guest = Guest::new();
    guest.put_code(&[0x8B, 0x02]);
    let mut cpu = long_mode_cpu();
    cpu.paging.cr3 = SVSM.base;
    let mut device = Recorder::default();
    assert_eq!(
        run(&guest, &mut cpu, CRB_BASE, &mut device),
        Err(MmioError::GuestMemory { gpa: SVSM.base })
    );
}

#[test]
fn page_permissions_are_checked() {
    let guest = Guest::new();
    let mut device = Recorder::default();
    // movsb into a read-only page with CR0.WP.
    guest.put_code(&[0xA4]);
    let mut cpu = long_mode_cpu();
    cpu.registers[6] = DEVICE;
    cpu.registers[7] = READ_ONLY;
    let fault = MmioError::PageFault { linear: READ_ONLY, kind: AccessKind::Write };
    assert_eq!(run(&guest, &mut cpu, CRB_BASE, &mut device), Err(fault));
    // User mode touching a supervisor page.
    guest.put_code(&[0x8B, 0x02]);
    let mut cpu = long_mode_cpu();
    cpu.cpl = 3;
    cpu.registers[2] = SUPERVISOR;
    let fault = MmioError::PageFault { linear: SUPERVISOR, kind: AccessKind::Read };
    assert_eq!(run(&guest, &mut cpu, CRB_BASE, &mut device), Err(fault));
    // Through the user mapping it works.
    cpu.registers[2] = DEVICE;
    assert!(run(&guest, &mut cpu, CRB_BASE, &mut device).is_ok());
    // Code that is not mapped.
    let mut cpu = long_mode_cpu();
    cpu.rip = UNMAPPED;
    let fault = MmioError::PageFault { linear: UNMAPPED, kind: AccessKind::Fetch };
    assert_eq!(run(&guest, &mut cpu, CRB_BASE, &mut device), Err(fault));
}

#[test]
fn large_pages_paging_off_and_pae() {
    let guest = Guest::new();
    guest.put_code(&[0x8B, 0x02]);
    let mut cpu = long_mode_cpu();
    cpu.registers[2] = LARGE + (CRB_BASE - 0xFEC0_0000) + 0x30;
    let mut device = Recorder::default();
    run(&guest, &mut cpu, CRB_BASE + 0x30, &mut device).unwrap();
    // 32-bit code without paging: mov eax, [0xFED40034]; EIP wraps.
    let mut cpu = long_mode_cpu();
    cpu.mode = CpuMode::Protected32;
    cpu.paging = GuestPaging { cr0: 1, cr3: 0, cr4: 0, efer: 0 };
    cpu.rip = 0x20_0000;
    guest.put_code(&[0x8B, 0x05, 0x34, 0x00, 0xD4, 0xFE]);
    run(&guest, &mut cpu, CRB_BASE + 0x34, &mut device).unwrap();
    assert_eq!(device.reads, [(0x30, 4), (0x34, 4)]);
    assert_eq!(cpu.rip, 0x20_0006);
    // 32-bit PAE paging: the same tables from the PDPT; mov eax, [edx].
    cpu.paging = GuestPaging { cr0: CR0_PG | 1, cr3: PDPT, cr4: CR4_PAE, efer: 0 };
    cpu.rip = CODE;
    cpu.registers[2] = DEVICE + 0x38;
    guest.put_code(&[0x8B, 0x02]);
    run(&guest, &mut cpu, CRB_BASE + 0x38, &mut device).unwrap();
    assert_eq!(device.reads, [(0x30, 4), (0x34, 4), (0x38, 4)]);
    assert_eq!(cpu.rip, CODE + 2);
}

#[test]
fn instructions_may_cross_into_the_next_page() {
    let guest = Guest::new();
    // 8B 02 split over CODE's last byte and DATA's first.
    guest.ram.write(0x20_0FFF, &[0x8B]).unwrap();
    guest.ram.write(0x20_1000, &[0x02]).unwrap();
    let mut cpu = long_mode_cpu();
    cpu.rip = CODE + 0xFFF;
    cpu.registers[2] = DEVICE;
    let mut device = Recorder::default();
    run(&guest, &mut cpu, CRB_BASE, &mut device).unwrap();
    assert_eq!(cpu.rip, CODE + 0x1001);
}

#[test]
fn unknown_instructions_are_reported() {
    let guest = Guest::new();
    guest.put_code(&[0x01, 0x02]); // add [rdx], eax
    let mut cpu = long_mode_cpu();
    let mut device = Recorder::default();
    assert_eq!(
        run(&guest, &mut cpu, CRB_BASE, &mut device),
        Err(MmioError::Decode(DecodeError::Unsupported(0x01)))
    );
}

/// Linux's tpm_crb send and receive, as instructions: rep movsd of the
/// command into the buffer, a MOV to START, rep movsd of the response out.
#[test]
fn a_tpm_command_through_emulated_instructions() {
    let guest = Guest::new();
    let mut crb = CrbDevice::new(service());
    let memory = guest.memory();
    let ram = guest.ram(&memory);
    let mut emulate_at = |cpu: &mut FakeGuestCpu, code: &[u8], fault: u64| {
        guest.put_code(code);
        cpu.rip = CODE;
        let mut window = DeviceWindow { base: CRB_BASE, size: CRB_SIZE, device: &mut crb };
        emulate(cpu, &memory, &ram, fault, &mut window).unwrap();
    };
    let mut cpu = long_mode_cpu();
    // mov dword [rdi], 1: request locality 0.
    cpu.registers[7] = DEVICE + LOC_CTRL;
    emulate_at(&mut cpu, &[0xC7, 0x07, 1, 0, 0, 0], CRB_BASE + LOC_CTRL);
    // rep movsd: Startup(CLEAR), 12 bytes, from RAM.
    guest.ram.write(0x20_1000, &startup()).unwrap();
    cpu.registers[1] = 3;
    cpu.registers[6] = DATA;
    cpu.registers[7] = DEVICE + DATA_BUFFER;
    emulate_at(&mut cpu, &[0xF3, 0xA5], CRB_BASE + DATA_BUFFER);
    // mov dword [rdi], 1: START.
    cpu.registers[7] = DEVICE + CTRL_START;
    emulate_at(&mut cpu, &[0xC7, 0x07, 1, 0, 0, 0], CRB_BASE + CTRL_START);
    // rep movsb: 10 response bytes back into RAM at DATA + 0x100.
    cpu.registers[1] = 10;
    cpu.registers[6] = DEVICE + DATA_BUFFER;
    cpu.registers[7] = DATA + 0x100;
    emulate_at(&mut cpu, &[0xF3, 0xA4], CRB_BASE + DATA_BUFFER);
    let mut response = [0u8; 10];
    guest.ram.read(0x20_1100, &mut response).unwrap();
    assert_eq!(response, [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);
    assert_eq!(crb.stats().commands, 1);
}

/// CREATE_VCPU revokes the guest's rights on the page it checks: a MOVS
/// from the device into that page must not write it. The emulator reports
/// the refused element as a guest-memory error (the platform stops the
/// guest), after the elements before the page.
#[test]
fn movs_into_a_page_whose_write_permission_was_revoked_writes_nothing() {
    let guest = Guest::new();
    guest.put_code(&[0xF3, 0xA4]); // rep movsb from the device into RAM
    guest.ram.write(0x20_1000, &[0xEE; 0x1000]).unwrap();
    guest.rmpadjust(0x20_1000, VmplPermissions::READ | VmplPermissions::EXECUTE_USER);
    let mut cpu = long_mode_cpu();
    cpu.registers[1] = 4;
    cpu.registers[6] = DEVICE + 0x80;
    cpu.registers[7] = DATA;
    let mut device = Recorder::default();
    assert_eq!(
        run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device),
        Err(MmioError::GuestMemory { gpa: 0x20_1000 })
    );
    let mut page = [0u8; 0x1000];
    guest.ram.read(0x20_1000, &mut page).unwrap();
    assert!(page.iter().all(|&byte| byte == 0xEE), "the revoked page was written");
    assert_eq!((cpu.registers[1], cpu.registers[7], cpu.rip), (4, DATA, CODE), "nothing done");

    // A REP MOVS that runs into the revoked page from the page before:
    // the elements before it land, none on it.
    guest.put_code(&[0xF3, 0xA5]); // rep movsd, 4 elements, the last two on DATA's page
    guest.rmpadjust(0x20_1000, VmplPermissions::NONE);
    cpu.registers[1] = 4;
    cpu.registers[6] = DEVICE + 0x80;
    cpu.registers[7] = DATA - 8; // the page of the code, mapped writable
    let result = run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device);
    assert_eq!(result, Err(MmioError::GuestMemory { gpa: 0x20_1000 }));
    let mut before = [0u8; 8];
    guest.ram.read(0x20_0FF8, &mut before).unwrap();
    assert_eq!(
        before,
        [0x91, 0x22, 0x33, 0x44, 0x95, 0x22, 0x33, 0x44],
        "device offsets 0x80, 0x84"
    );
    guest.ram.read(0x20_1000, &mut page).unwrap();
    assert!(page.iter().all(|&byte| byte == 0xEE), "the revoked page was written");
    assert_eq!((cpu.registers[1], cpu.registers[7]), (2, DATA), "two elements done");

    // Given back, the same MOVS completes.
    guest.rmpadjust(0x20_1000, VmplPermissions::ALL);
    run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device).unwrap();
    assert_eq!((cpu.registers[1], cpu.registers[7]), (0, DATA + 8));
    assert_eq!(cpu.rip, CODE + 2);
}

/// A MOVS from RAM into the device needs the guest VMPL's READ permission
/// on the RAM page: without it the device gets nothing.
#[test]
fn movs_from_a_page_the_guest_may_not_read_is_refused() {
    let guest = Guest::new();
    guest.put_code(&[0xA5]); // movsd from RAM into the device
    guest.rmpadjust(0x20_1000, VmplPermissions::WRITE);
    let mut cpu = long_mode_cpu();
    cpu.registers[6] = DATA;
    cpu.registers[7] = DEVICE + 0x80;
    let mut device = Recorder::default();
    assert_eq!(
        run(&guest, &mut cpu, CRB_BASE + 0x80, &mut device),
        Err(MmioError::GuestMemory { gpa: 0x20_1000 })
    );
    assert!(device.writes.is_empty());
    assert_eq!(cpu.rip, CODE);
}

/// The guest-memory lock is held for a MOVS element's RAM access only:
/// the device (where a CRB write runs a vTPM command) is called with it
/// free, so a revoke on another CPU never waits for a command.
#[test]
fn the_rmp_lock_is_free_while_the_device_runs() {
    struct LockProbe<'a> {
        rmp: &'a Mutex<Rmp>,
        calls: usize,
    }
    impl MmioDevice for LockProbe<'_> {
        fn read(&mut self, _offset: u64, _size: u8) -> u64 {
            assert!(!self.rmp.is_locked(), "device read under the RMP lock");
            self.calls += 1;
            0x5A
        }
        fn write(&mut self, _offset: u64, _size: u8, _value: u64) {
            assert!(!self.rmp.is_locked(), "device write under the RMP lock");
            self.calls += 1;
        }
    }
    let guest = Guest::new();
    let checked = guest.memory();
    let ram = guest.ram(&checked);
    let mut device = LockProbe { rmp: &guest.rmp, calls: 0 };
    let mut cpu = long_mode_cpu();
    for (code, source, destination) in [(0xA4, DATA, DEVICE), (0xA4, DEVICE, DATA)] {
        guest.put_code(&[0xF3, code]);
        cpu.rip = CODE;
        cpu.registers[1] = 3;
        cpu.registers[6] = source;
        cpu.registers[7] = destination;
        let mut window = DeviceWindow { base: CRB_BASE, size: CRB_SIZE, device: &mut device };
        emulate(&mut cpu, &checked, &ram, CRB_BASE, &mut window).unwrap();
    }
    assert_eq!(device.calls, 6);
    let mut bytes = [0u8; 3];
    guest.ram.read(0x20_1000, &mut bytes).unwrap();
    assert_eq!(bytes, [0x5A; 3]);
}
