//! Fuzzes the MMIO emulation of the dev platform (`kernel::crb::mmio`) and
//! its instruction decoder (`kernel::crb::decode`): arbitrary instruction
//! bytes, registers, flags, CPU mode and privilege run against fake guest
//! RAM whose 4-level page tables map code, data, SVSM memory and the device
//! page, plus pages the input may point anywhere.
//!
//! The guest executes the instruction again and again (an unfinished REP
//! MOVS resumes where it stopped) while its VMPL (2) loses and regains
//! permissions on pages in the emulated RMP, as CREATE_VCPU and DEPOSIT_MEM
//! revoke pages and WITHDRAW_MEM or a failed call gives them back: between
//! instructions, and while the device handles a MOVS element (another CPU's
//! RMPADJUST, which the emulator must not hold off across the device's side).
//! The RAM side of MOVS goes through `svm::rmp::LockedVmplMemory`, as on the
//! dev platform; page walks and instruction bytes through the checked guest
//! memory (read only, not ordered against revokes by design).
//!
//! Properties checked:
//! - nothing panics;
//! - every instruction the decoder accepts has the length iced-x86 gives it
//!   (an independent decoder) and is at most 15 bytes;
//! - every guest-physical access the emulation makes for the guest (page
//!   tables, instruction bytes, the RAM side of MOVS) lies in guest RAM and
//!   outside SVSM memory;
//! - page walks and instruction fetches never write guest memory;
//! - a MOVS element writes guest RAM only on pages where VMPL2 has WRITE at
//!   that moment, and reads it (to give the device) only where it has READ;
//! - the RMP lock is free whenever the device runs;
//! - every device access lies inside the device window and is 1, 2, 4 or 8
//!   bytes;
//! - on success RIP moved by exactly the instruction's length (or, for an
//!   unfinished REP MOVS, not at all), and only the registers the
//!   instruction names changed; on failure RIP did not move and only the
//!   MOVS registers (of completed elements) changed.

#![no_main]

use std::cell::RefCell;
use std::collections::BTreeMap;

use abi::boot::MemoryRange;
use abi::snp_instr::{RmpAdjustAttributes, RmpPageSize, VmplPermissions};
use arbitrary::Arbitrary;
use iced_x86::{Decoder, DecoderOptions};
use kernel::crb::decode::{Access, CpuMode, decode};
use kernel::crb::mmio::{DeviceWindow, GuestPaging, MmioDevice, emulate};
use kernel::guest_mem::{CheckedGuestMemory, Fault, GuestLayout, OwnedPages, RawGuestMemory};
use kernel::host_doubles::{FakeGuestCpu, FakeGuestRam};
use kernel::svm::rmp::{LockedVmplMemory, PageState, Rmp};
use libfuzzer_sys::fuzz_target;
use spin::Mutex;

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
const PAGE: u64 = 0x1000;
/// The guest's VMPL on the dev platform.
const GUEST_VMPL: u8 = 2;
/// At most this many actions per run.
const MAX_ACTIONS: usize = 32;

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
    /// What happens, in order (none: the instruction runs once).
    actions: Vec<Action>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Action {
    /// The guest executes the instruction (again: from its first byte, with
    /// the registers as the runs before left them).
    Emulate,
    /// RMPADJUST between instructions.
    Rmpadjust(Adjust),
    /// RMPADJUST by another CPU while the device handles an access of a
    /// later instruction (queued: one per device access; the page is the
    /// one chosen now).
    RmpadjustDuringDevice(Adjust),
}

/// An RMPADJUST of one page: the guest VMPL's permissions set to
/// `permissions` (low 4 bits; 0 revokes the page, 0xF gives it back).
#[derive(Arbitrary, Debug, Clone, Copy)]
struct Adjust {
    page: Page,
    permissions: u8,
}

/// Which page an [`Adjust`] changes.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Page {
    /// Low 7 bits: one of the pages MOVS or the walker may touch; bit 7:
    /// the page after it (an element may run over the page's end).
    Listed(u8),
    /// Low 4 bits: the page a register points at now, if it points into the
    /// mapped window (as a MOVS's RSI and RDI do); bit 7: the page after it.
    OfRegister(u8),
}

impl Adjust {
    /// The page's guest-physical address, given the guest's registers.
    fn gpa(self, registers: &[u64; 16]) -> u64 {
        let (base, next) = match self.page {
            Page::Listed(index) => {
                let pages = [TARGETS.as_slice(), &[PML4, PDPT, PD]].concat();
                (pages[usize::from(index & 0x7F) % pages.len()], index & 0x80 != 0)
            }
            Page::OfRegister(number) => {
                let linear = registers[usize::from(number & 0xF)].wrapping_sub(LINEAR_BASE);
                let index = usize::try_from(linear / PAGE).unwrap_or(usize::MAX);
                (TARGETS.get(index).copied().unwrap_or(CODE_GPA), number & 0x80 != 0)
            }
        };
        base + if next { PAGE } else { 0 }
    }

    fn permissions(self) -> VmplPermissions {
        VmplPermissions::from_bits(self.permissions & 0xF).expect("four bits")
    }
}

/// The guest VMPL's permissions as the RMP holds them, kept beside it:
/// pages not listed have all (the SVSM's are audited apart).
#[derive(Default)]
struct Shadow(RefCell<BTreeMap<u64, VmplPermissions>>);

impl Shadow {
    /// Gives the guest's VMPL `permissions` on the page at `gpa` in the RMP
    /// (the SVSM never adjusts its own pages) and, if the RMP took it, in
    /// the shadow.
    fn rmpadjust(&self, rmp: &mut Rmp, gpa: u64, permissions: VmplPermissions) {
        let attributes = RmpAdjustAttributes { target_vmpl: GUEST_VMPL, permissions, vmsa: false };
        let in_svsm = MemoryRange { base: gpa, size: PAGE }.overlaps(&SVSM);
        if !in_svsm && rmp.rmpadjust(gpa, RmpPageSize::Size4K, attributes).is_ok() {
            self.0.borrow_mut().insert(gpa, permissions);
        }
    }

    /// Fails the run unless the guest's VMPL has `wanted` on every page of
    /// `[gpa, gpa + len)`.
    fn audit(&self, gpa: u64, len: u64, wanted: VmplPermissions) {
        let pages = self.0.borrow();
        let first = gpa & !(PAGE - 1);
        for (page, permissions) in pages.range(first..gpa + len.max(1)) {
            assert!(
                permissions.contains(wanted),
                "access {gpa:#x}+{len} needs {wanted:?} on page {page:#x}, VMPL2 has {permissions:?}"
            );
        }
    }
}

/// Fails the run on any access inside SVSM memory or outside RAM.
fn audit(gpa: u64, len: u64) {
    let end = gpa.checked_add(len).expect("access wraps");
    assert!(end <= RAM_SIZE, "guest-physical access {gpa:#x}+{len} beyond RAM");
    let touched = MemoryRange { base: gpa, size: len.max(1) };
    assert!(!touched.overlaps(&SVSM), "access {gpa:#x}+{len} touches SVSM memory");
}

/// The RAM the page walks and instruction fetches see: read only.
struct TablesRam<'a>(&'a FakeGuestRam);

impl RawGuestMemory for TablesRam<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Fault> {
        audit(gpa, buf.len() as u64);
        self.0.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Fault> {
        panic!("a page walk or fetch writes {gpa:#x}+{}", data.len());
    }
    fn zero(&self, gpa: u64, len: u64) -> Result<(), Fault> {
        panic!("a page walk or fetch zeroes {gpa:#x}+{len}");
    }
}

/// The RAM MOVS elements see: READ needed to read, WRITE to write.
struct MovsRam<'a> {
    ram: &'a FakeGuestRam,
    shadow: &'a Shadow,
}

impl RawGuestMemory for MovsRam<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Fault> {
        audit(gpa, buf.len() as u64);
        self.shadow.audit(gpa, buf.len() as u64, VmplPermissions::READ);
        self.ram.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Fault> {
        audit(gpa, data.len() as u64);
        self.shadow.audit(gpa, data.len() as u64, VmplPermissions::WRITE);
        self.ram.write(gpa, data)
    }
    fn zero(&self, gpa: u64, len: u64) -> Result<(), Fault> {
        audit(gpa, len);
        self.shadow.audit(gpa, len, VmplPermissions::WRITE);
        self.ram.zero(gpa, len)
    }
}

/// A device that checks its accesses, returns a fixed pattern and, on each
/// access, lets another CPU run one queued RMPADJUST (page, permissions).
struct Device<'a> {
    rmp: &'a Mutex<Rmp>,
    shadow: &'a Shadow,
    queued: Vec<(u64, VmplPermissions)>,
}

impl Device<'_> {
    fn access(&mut self, what: &str, offset: u64, size: u8) {
        assert!(matches!(size, 1 | 2 | 4 | 8), "device {what} of {size} bytes");
        assert!(offset + u64::from(size) <= DEVICE_SIZE, "device {what} at {offset:#x}+{size}");
        let mut rmp = self.rmp.try_lock().expect("the RMP lock is free while the device runs");
        if let Some((gpa, permissions)) = self.queued.pop() {
            self.shadow.rmpadjust(&mut rmp, gpa, permissions);
        }
    }
}

impl MmioDevice for Device<'_> {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.access("read", offset, size);
        0x0123_4567_89AB_CDEF
    }
    fn write(&mut self, offset: u64, size: u8, _value: u64) {
        self.access("write", offset, size);
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

/// The emulated RMP: guest RAM validated with every permission for the
/// guest's VMPL, the SVSM's region with none.
fn rmp() -> Rmp {
    let guest = PageState::new(true, VmplPermissions::ALL);
    let svsm_end = SVSM.base + SVSM.size;
    Rmp::new(&[
        (MemoryRange { base: 0, size: SVSM.base }, guest),
        (SVSM, PageState::new(true, VmplPermissions::NONE)),
        (MemoryRange { base: svsm_end, size: RAM_SIZE - svsm_end }, guest),
    ])
}

fn check_decoder(code: &[u8; 16], mode: CpuMode) {
    if let Ok(instruction) = decode(code, mode) {
        assert!(instruction.length <= 15);
        let bitness = if mode == CpuMode::Long64 { 64 } else { 32 };
        let iced = Decoder::with_ip(bitness, code, 0, DecoderOptions::NONE).decode();
        assert!(!iced.is_invalid(), "we decode {code:02x?}, iced does not");
        assert_eq!(usize::from(instruction.length), iced.len(), "length of {code:02x?}");
    }
}

fuzz_target!(|input: Input| {
    let mode = match input.mode % 4 {
        0 => CpuMode::Protected32,
        1 => CpuMode::Legacy16,
        _ => CpuMode::Long64,
    };
    check_decoder(&input.code, mode);

    // The emulation.
    let fake = guest(&input);
    let shadow = Shadow::default();
    let tables_ram = TablesRam(&fake);
    let movs_raw = MovsRam { ram: &fake, shadow: &shadow };
    let layout = GuestLayout::new(&[MemoryRange { base: 0, size: RAM_SIZE }], &[SVSM]);
    let owned = OwnedPages::new();
    let tables = CheckedGuestMemory::new(&layout, &owned, &tables_ram);
    let movs_checked = CheckedGuestMemory::new(&layout, &owned, &movs_raw);
    let rmp = Mutex::new(rmp());
    // MOVS elements as the dev platform moves them: under the RMP's lock.
    let movs_ram = LockedVmplMemory::new(&movs_checked, &rmp, |rmp| rmp, GUEST_VMPL);
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
    let mut device = Device { rmp: &rmp, shadow: &shadow, queued: Vec::new() };
    let fault_gpa = DEVICE_BASE + u64::from(input.fault_page) * 0x10;
    let actions = if input.actions.is_empty() { vec![Action::Emulate] } else { input.actions };
    for action in actions.into_iter().take(MAX_ACTIONS) {
        match action {
            Action::Rmpadjust(adjust) => {
                let gpa = adjust.gpa(&cpu.registers);
                shadow.rmpadjust(&mut rmp.lock(), gpa, adjust.permissions());
            }
            Action::RmpadjustDuringDevice(adjust) => {
                device.queued.push((adjust.gpa(&cpu.registers), adjust.permissions()));
            }
            Action::Emulate => {
                cpu.rip = rip;
                let before = cpu.registers;
                let mut window =
                    DeviceWindow { base: DEVICE_BASE, size: DEVICE_SIZE, device: &mut device };
                let result = emulate(&mut cpu, &tables, &movs_ram, fault_gpa, &mut window);
                let outcome = result.as_ref().ok().map(|i| (&i.access, i.length));
                check_registers(&cpu, rip, &before, outcome);
            }
        }
    }
});

/// RIP and the registers after one emulation that started at `rip` with
/// `before`: `outcome` is the instruction's access and length on success.
fn check_registers(
    cpu: &FakeGuestCpu,
    rip: u64,
    before: &[u64; 16],
    outcome: Option<(&Access, u8)>,
) {
    let (access, length) = (outcome.map(|(access, _)| access), outcome.map_or(0, |(_, l)| l));
    let moved = cpu.rip.wrapping_sub(rip);
    let allowed: Vec<usize> = match access {
        Some(Access::Load { destination, .. }) => vec![usize::from(destination.number)],
        Some(Access::Store { .. }) => vec![],
        // A failed MOVS keeps its completed elements.
        Some(Access::Movs { .. }) | None => vec![1, 6, 7],
    };
    match access {
        Some(Access::Movs { repeat: true, .. }) => {
            assert!(moved == 0 || moved == u64::from(length), "RIP moved {moved}");
        }
        _ => assert_eq!(moved, u64::from(length), "RIP moved {moved}"),
    }
    for (i, (after, before)) in cpu.registers.iter().zip(before).enumerate() {
        if !allowed.contains(&i) {
            assert_eq!(after, before, "register {i} changed by {access:?}");
        }
    }
}
