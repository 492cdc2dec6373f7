//! Fuzzes the MMIO emulation of the dev platform (`kernel::crb::mmio`) and
//! its instruction decoder (`kernel::crb::decode`): arbitrary instruction
//! bytes, registers, flags, CPU mode and privilege run against fake guest
//! RAM whose 4-level page tables map code, data, SVSM memory and the device
//! page, plus pages the input may point anywhere.
//!
//! Properties checked:
//! - nothing panics;
//! - every instruction the decoder accepts has the length iced-x86 gives it
//!   (an independent decoder) and is at most 15 bytes;
//! - every guest-physical access the emulation makes for the guest (page
//!   tables, instruction bytes, the RAM side of MOVS) lies in guest RAM and
//!   outside SVSM memory;
//! - every device access lies inside the device window and is 1, 2, 4 or 8
//!   bytes;
//! - on success RIP moved by exactly the instruction's length (or, for an
//!   unfinished REP MOVS, not at all), and only the registers the
//!   instruction names changed.

#![no_main]

use std::cell::RefCell;

use abi::boot::MemoryRange;
use abi::snp_instr::VmplPermissions;
use arbitrary::Arbitrary;
use iced_x86::{Decoder, DecoderOptions};
use kernel::crb::decode::{Access, CpuMode, decode};
use kernel::crb::mmio::{DeviceWindow, GuestPaging, MmioDevice, emulate};
use kernel::guest_mem::{CheckedGuestMemory, Fault, GuestLayout, OwnedPages, RawGuestMemory};
use kernel::host_doubles::{FakeGuestCpu, FakeGuestRam};
use kernel::svm::rmp::{LockedVmplMemory, PageState, Rmp};
use libfuzzer_sys::fuzz_target;

const RAM_SIZE: u64 = 0x40_0000;
const SVSM: MemoryRange = MemoryRange { base: 0x20_0000, size: 0x10_0000 };
const DEVICE_BASE: u64 = 0xFED4_0000;
const DEVICE_SIZE: u64 = 0x1000;
const PML4: u64 = 0x1_0000;
const PDPT: u64 = 0x1_1000;
const PD: u64 = 0x1_2000;
const PT: u64 = 0x1_3000;
const CODE_GPA: u64 = 0x3_0000;
/// Linear pages 0x40_0000 + n * 0x1000 map to these (PT entries 0..8).
const TARGETS: [u64; 8] = [
    CODE_GPA,
    CODE_GPA + 0x1000,
    0x5_0000,
    SVSM.base,
    DEVICE_BASE,
    RAM_SIZE - 0x1000,
    PT,
    0x7_0000,
];
const LINEAR_BASE: u64 = 0x40_0000;

#[derive(Arbitrary, Debug)]
struct Input {
    code: [u8; 16],
    /// Where in the 2-page code window the instruction starts.
    code_offset: u16,
    registers: [u64; 16],
    /// Per register: replace its value by a linear address in the mapped window.
    point_into_window: u16,
    window_offsets: [u16; 16],
    rflags_df: bool,
    mode: u8,
    cpl3: bool,
    fs_base: u64,
    /// Per PT entry: flags to clear (writable, user) and whether present.
    entry_tweaks: [u8; 8],
    fault_page: u8,
}

/// Guest RAM that fails the run on any access inside SVSM memory or outside RAM.
struct AuditedRam(FakeGuestRam);

impl AuditedRam {
    fn audit(gpa: u64, len: u64) {
        let end = gpa.checked_add(len).expect("access wraps");
        assert!(end <= RAM_SIZE, "guest-physical access {gpa:#x}+{len} beyond RAM");
        let touched = MemoryRange { base: gpa, size: len.max(1) };
        assert!(!touched.overlaps(&SVSM), "access {gpa:#x}+{len} touches SVSM memory");
    }
}

impl RawGuestMemory for AuditedRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Fault> {
        Self::audit(gpa, buf.len() as u64);
        self.0.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Fault> {
        Self::audit(gpa, data.len() as u64);
        self.0.write(gpa, data)
    }
    fn zero(&self, gpa: u64, len: u64) -> Result<(), Fault> {
        Self::audit(gpa, len);
        self.0.zero(gpa, len)
    }
}

/// A device that checks its accesses and returns a fixed pattern.
struct Device(RefCell<u64>);

impl MmioDevice for Device {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        assert!(matches!(size, 1 | 2 | 4 | 8), "device read of {size} bytes");
        assert!(offset + u64::from(size) <= DEVICE_SIZE, "device read at {offset:#x}+{size}");
        *self.0.borrow_mut() += 1;
        0x0123_4567_89AB_CDEF
    }
    fn write(&mut self, offset: u64, size: u8, _value: u64) {
        assert!(matches!(size, 1 | 2 | 4 | 8), "device write of {size} bytes");
        assert!(offset + u64::from(size) <= DEVICE_SIZE, "device write at {offset:#x}+{size}");
        *self.0.borrow_mut() += 1;
    }
}

fn guest(input: &Input) -> FakeGuestRam {
    let ram = FakeGuestRam::new(0, RAM_SIZE);
    let entry = |table: u64, index: u64, value: u64| {
        ram.write(table + index * 8, &value.to_le_bytes()).expect("in RAM");
    };
    entry(PML4, 0, PDPT | 7);
    entry(PDPT, 0, PD | 7);
    entry(PD, 2, PT | 7);
    for (i, target) in TARGETS.iter().enumerate() {
        let tweak = input.entry_tweaks[i];
        let mut flags = 7u64 & !u64::from(tweak & 0x6);
        if tweak & 0x80 != 0 {
            flags &= !1;
        }
        entry(PT, i as u64, target | flags);
    }
    ram.write(CODE_GPA + 0x1000 - 16 + u64::from(input.code_offset % 32), &input.code)
        .expect("in RAM");
    ram
}

fuzz_target!(|input: Input| {
    let mode = match input.mode % 4 {
        0 => CpuMode::Protected32,
        1 => CpuMode::Legacy16,
        _ => CpuMode::Long64,
    };
    // The decoder alone, against iced.
    if let Ok(instruction) = decode(&input.code, mode) {
        assert!(instruction.length <= 15);
        let bitness = if mode == CpuMode::Long64 { 64 } else { 32 };
        let iced = Decoder::with_ip(bitness, &input.code, 0, DecoderOptions::NONE).decode();
        assert!(!iced.is_invalid(), "we decode {:02x?}, iced does not", input.code);
        assert_eq!(usize::from(instruction.length), iced.len(), "length of {:02x?}", input.code);
    }

    // The emulation.
    let ram = AuditedRam(guest(&input));
    let layout = GuestLayout::new(&[MemoryRange { base: 0, size: RAM_SIZE }], &[SVSM]);
    let owned = OwnedPages::new();
    let memory = CheckedGuestMemory::new(&layout, &owned, &ram);
    // MOVS elements as the dev platform moves them: under the RMP's lock,
    // with the guest's VMPL (2) allowed all guest RAM and none of the SVSM's.
    let guest_page = PageState::new(true, VmplPermissions::ALL);
    let svsm_end = SVSM.base + SVSM.size;
    let rmp = spin::Mutex::new(Rmp::new(&[
        (MemoryRange { base: 0, size: SVSM.base }, guest_page),
        (SVSM, PageState::new(true, VmplPermissions::NONE)),
        (MemoryRange { base: svsm_end, size: RAM_SIZE - svsm_end }, guest_page),
    ]));
    let movs_ram = LockedVmplMemory::new(&memory, &rmp, |rmp| rmp, 2);
    let mut registers = input.registers;
    for (i, register) in registers.iter_mut().enumerate() {
        if input.point_into_window & (1 << i) != 0 {
            *register = LINEAR_BASE + u64::from(input.window_offsets[i]) % (8 * 0x1000);
        }
    }
    let rip = LINEAR_BASE + 0x1000 - 16 + u64::from(input.code_offset % 32);
    let mut cpu = FakeGuestCpu {
        registers,
        rip,
        rflags: if input.rflags_df { 0x402 } else { 0x2 },
        mode,
        cpl: if input.cpl3 { 3 } else { 0 },
        // Long mode with CR0.WP and EFER.NXE on the target's tables.
        paging: GuestPaging {
            cr0: (1 << 31) | (1 << 16) | 1,
            cr3: PML4,
            cr4: 1 << 5,
            efer: (1 << 10) | (1 << 8) | (1 << 11),
        },
        fs_base: input.fs_base,
    };
    let before = cpu.registers;
    let mut device = Device(RefCell::new(0));
    let fault_gpa = DEVICE_BASE + u64::from(input.fault_page) * 0x10;
    let mut window = DeviceWindow { base: DEVICE_BASE, size: DEVICE_SIZE, device: &mut device };
    let Ok(instruction) = emulate(&mut cpu, &memory, &movs_ram, fault_gpa, &mut window) else {
        return;
    };
    let moved = cpu.rip.wrapping_sub(rip);
    let allowed: Vec<usize> = match instruction.access {
        Access::Load { destination, .. } => vec![usize::from(destination.number)],
        Access::Store { .. } => vec![],
        Access::Movs { .. } => vec![1, 6, 7],
    };
    match instruction.access {
        Access::Movs { repeat: true, .. } => {
            assert!(moved == 0 || moved == u64::from(instruction.length), "RIP moved {moved}");
        }
        _ => assert_eq!(moved, u64::from(instruction.length), "RIP moved {moved}"),
    }
    for (i, (after, before)) in cpu.registers.iter().zip(before).enumerate() {
        if !allowed.contains(&i) {
            assert_eq!(*after, before, "register {i} changed by {instruction:?}");
        }
    }
});
