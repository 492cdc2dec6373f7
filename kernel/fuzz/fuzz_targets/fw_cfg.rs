//! Fuzzes the dev platform's fw_cfg filter (`kernel::svm::fw_cfg`) with
//! sequences of guest port accesses: selector writes (the filtered keys,
//! their aliases and any other), data port reads, reads and writes of every
//! intercepted port at every size, and DMA requests whose descriptor,
//! control word, length and buffer address the guest chooses, over fake
//! guest RAM with an SVSM region in the middle. Behind the filter sits a
//! fake QEMU device with a file directory, `etc/e820`, `etc/table-loader`
//! (extended by the filter, as the dev platform does) and other files, that
//! does its DMA into the same RAM.
//!
//! The guest's VMPL loses and regains pages in the emulated RMP between
//! accesses, as CREATE_VCPU and DEPOSIT_MEM revoke pages and WITHDRAW_MEM
//! or a failed call gives them back.
//!
//! Properties checked:
//! - nothing panics;
//! - every guest-memory access, by the filter or by the device's DMA it
//!   lets through, lies in guest RAM, outside SVSM memory and outside every
//!   page the RMP denies the guest's VMPL at that moment;
//! - once the filter is set up, the guest never reads the device's own
//!   (unfiltered) file directory or `etc/e820`, by port or DMA, under any
//!   alias of their keys.

#![no_main]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use abi::boot::MemoryRange;
use abi::snp_instr::{RmpAdjustAttributes, RmpPageSize, VmplPermissions};
use arbitrary::Arbitrary;
use kernel::guest_mem::{CheckedGuestMemory, Fault, GuestLayout, OwnedPages, RawGuestMemory};
use kernel::host_doubles::FakeGuestRam;
use kernel::svm::fw_cfg::{
    DATA_PORT, DMA_HIGH_PORT, DMA_LOW_PORT, FILE_DIR_KEY, FwCfgDevice, FwCfgFilter, PORTS,
    SELECTOR_PORT, dma,
};
use kernel::svm::rmp::{PageState, Rmp, VmplMemory};
use libfuzzer_sys::fuzz_target;

const RAM_SIZE: u64 = 0x40_0000;
const SVSM: MemoryRange = MemoryRange { base: 0x20_0000, size: 0x10_0000 };
const E820_KEY: u16 = 0x20;
const LOADER_KEY: u16 = 0x21;
/// The guest's VMPL on the dev platform.
const GUEST_VMPL: u8 = 2;
const PAGE: u64 = 0x1000;
/// QEMU's item number of a selector: without the write-channel bit.
const ENTRY_MASK: u16 = !0x4000;

/// Addresses worth hitting often; [`Addr::Pick`] adds a small offset.
const INTERESTING: [u64; 10] = [
    0,
    0x1000,
    0x1_0000,
    SVSM.base - 0x1000,
    SVSM.base,
    SVSM.base + SVSM.size - 0x1000,
    SVSM.base + SVSM.size,
    RAM_SIZE - 0x1000,
    RAM_SIZE,
    !0xFFF,
];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Pick(u8, i16),
    Raw(u64),
}

impl Addr {
    fn gpa(self) -> u64 {
        match self {
            Addr::Pick(index, delta) => INTERESTING[usize::from(index) % INTERESTING.len()]
                .wrapping_add_signed(i64::from(delta)),
            Addr::Raw(gpa) => gpa,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Key {
    /// The directory, `etc/e820`, the extended loader, an added file, a
    /// plain device file; with optional write-channel and arch bits.
    Known(u8, bool, bool),
    Raw(u16),
}

impl Key {
    fn value(self) -> u16 {
        match self {
            Key::Known(index, write_channel, arch) => {
                let keys = [FILE_DIR_KEY, E820_KEY, LOADER_KEY, 0x22, 0x23, 0x24, 0];
                let key = keys[usize::from(index) % keys.len()];
                key | if write_channel { 0x4000 } else { 0 } | if arch { 0x8000 } else { 0 }
            }
            Key::Raw(key) => key,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Action {
    Select(Key),
    /// Byte reads of the data (or the selector) port.
    ReadBytes {
        count: u8,
        selector_port: bool,
    },
    /// Any intercepted port, any size, either direction.
    Port {
        port: u8,
        size: u8,
        write: bool,
        value: u32,
    },
    /// A DMA request: the descriptor is written at `descriptor` if that is
    /// RAM (else whatever is there is used), then the two address halves.
    Dma {
        descriptor: Addr,
        key: Key,
        flags: u8,
        length: u32,
        buffer: Addr,
    },
    /// A DMA request with a raw control word.
    DmaRaw {
        descriptor: Addr,
        control: u32,
        length: u32,
        buffer: Addr,
    },
    /// RMPADJUST of the page holding an address: every permission of the
    /// guest's VMPL taken (`revoke`) or given back.
    Rmpadjust {
        page: Addr,
        revoke: bool,
    },
}

/// Fails the run on any access inside SVSM memory or outside RAM.
fn audit(gpa: u64, len: u64) {
    let end = gpa.checked_add(len).expect("access wraps");
    assert!(end <= RAM_SIZE, "guest-physical access {gpa:#x}+{len} beyond RAM");
    let touched = MemoryRange { base: gpa, size: len.max(1) };
    assert!(!touched.overlaps(&SVSM), "access {gpa:#x}+{len} touches SVSM memory");
}

/// Guest RAM that audits every access, with the pages the RMP currently
/// denies the guest.
struct AuditedRam {
    ram: FakeGuestRam,
    revoked: RefCell<BTreeSet<u64>>,
}

impl AuditedRam {
    fn audit(&self, gpa: u64, len: u64) {
        audit(gpa, len);
        let first = gpa & !(PAGE - 1);
        let revoked = self.revoked.borrow();
        let hit = revoked.range(first..gpa + len.max(1)).next();
        assert!(hit.is_none(), "access {gpa:#x}+{len} touches revoked page {hit:#x?}");
    }
}

impl RawGuestMemory for AuditedRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Fault> {
        self.audit(gpa, buf.len() as u64);
        self.ram.read(gpa, buf)
    }
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Fault> {
        self.audit(gpa, data.len() as u64);
        self.ram.write(gpa, data)
    }
    fn zero(&self, gpa: u64, len: u64) -> Result<(), Fault> {
        self.audit(gpa, len);
        self.ram.zero(gpa, len)
    }
}

/// The emulated RMP over the fake RAM: guest RAM validated with every
/// permission for the guest's VMPL, the SVSM's region with none.
fn rmp() -> Rmp {
    let guest = PageState::new(true, VmplPermissions::ALL);
    let svsm = PageState::new(true, VmplPermissions::NONE);
    let svsm_end = SVSM.base + SVSM.size;
    Rmp::new(&[
        (MemoryRange { base: 0, size: SVSM.base }, guest),
        (SVSM, svsm),
        (MemoryRange { base: svsm_end, size: RAM_SIZE - svsm_end }, guest),
    ])
}

/// A QEMU-like fw_cfg device doing DMA into the audited RAM.
struct Device<'a> {
    items: BTreeMap<u16, Vec<u8>>,
    selected: u16,
    offset: usize,
    ram: &'a AuditedRam,
    /// Set once the filter is built: from then on every read is the guest's.
    guest_reads: bool,
}

impl Device<'_> {
    fn file_dir(files: &[(&str, u16, usize)]) -> Vec<u8> {
        let mut dir = (files.len() as u32).to_be_bytes().to_vec();
        for (name, key, size) in files {
            let mut entry = [0u8; 64];
            entry[0..4].copy_from_slice(&(*size as u32).to_be_bytes());
            entry[4..6].copy_from_slice(&key.to_be_bytes());
            entry[8..8 + name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&entry);
        }
        dir
    }

    fn new(ram: &AuditedRam) -> Device<'_> {
        let mut e820 = Vec::new();
        for (base, size, kind) in [(0u64, RAM_SIZE, 1u32), (0xFEFF_C000, 0x4000, 2)] {
            e820.extend_from_slice(&base.to_le_bytes());
            e820.extend_from_slice(&size.to_le_bytes());
            e820.extend_from_slice(&kind.to_le_bytes());
        }
        let files: [(&str, u16, Vec<u8>); 4] = [
            ("etc/e820", E820_KEY, e820),
            ("etc/table-loader", LOADER_KEY, vec![0x11; 128]),
            ("bootorder", 0x22, b"/pci@i0cf8/x".to_vec()),
            ("opt/svsm/test-guest-mode", 0x23, b"calls".to_vec()),
        ];
        let listing: Vec<_> = files.iter().map(|(n, k, b)| (*n, *k, b.len())).collect();
        let mut items: BTreeMap<u16, Vec<u8>> =
            files.into_iter().map(|(_, key, bytes)| (key, bytes)).collect();
        items.insert(FILE_DIR_KEY, Device::file_dir(&listing));
        items.insert(0, b"QEMU".to_vec());
        Device { items, selected: 0, offset: 0, ram, guest_reads: false }
    }

    /// The guest must never see the device's own directory or memory map.
    fn audit_read(&self) {
        let entry = self.selected & ENTRY_MASK;
        assert!(
            !self.guest_reads || (entry != FILE_DIR_KEY && entry != E820_KEY),
            "the guest reads the device's unfiltered item {:#x}",
            self.selected
        );
    }

    fn item(&self) -> &[u8] {
        self.items.get(&(self.selected & ENTRY_MASK)).map_or(&[], |bytes| bytes)
    }
}

impl FwCfgDevice for Device<'_> {
    fn select(&mut self, key: u16) {
        self.selected = key;
        self.offset = 0;
    }

    fn read_data(&mut self) -> u8 {
        self.audit_read();
        let byte = self.item().get(self.offset).copied();
        self.offset += usize::from(byte.is_some());
        byte.unwrap_or(0)
    }

    fn dma(&mut self, control: u32, length: u32, address: u64) -> u32 {
        if control & dma::SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let (read, write) = (control & dma::READ != 0, control & dma::WRITE != 0);
        if !(read || write || control & dma::SKIP != 0) {
            return 0;
        }
        let rest = self.item().get(self.offset..).unwrap_or_default();
        let taken = rest.len().min(length as usize);
        if read {
            self.audit_read();
            let mut buffer = rest[..taken].to_vec();
            buffer.resize(length as usize, 0);
            if self.ram.write(address, &buffer).is_err() {
                return dma::ERROR;
            }
        } else if write {
            // The device may read the whole buffer (QEMU does for a
            // writable item); these items are read-only, as QEMU's file
            // directory and e820.
            self.ram.audit(address, u64::from(length));
            return if length == 0 { 0 } else { dma::ERROR };
        }
        self.offset += taken;
        0
    }

    fn port_in(&mut self, port: u16, size: u8) -> u32 {
        if size == 1 && (port == DATA_PORT || port == SELECTOR_PORT) {
            return u32::from(self.read_data());
        }
        0
    }

    fn port_out(&mut self, port: u16, size: u8, value: u32) {
        if port == SELECTOR_PORT && size == 2 {
            self.select(value as u16);
        }
    }
}

fn write_descriptor(ram: &AuditedRam, at: u64, control: u32, length: u32, buffer: u64) {
    let mut raw = [0u8; 16];
    raw[0..4].copy_from_slice(&control.to_be_bytes());
    raw[4..8].copy_from_slice(&length.to_be_bytes());
    raw[8..16].copy_from_slice(&buffer.to_be_bytes());
    // The guest lays descriptors out only where its RAM is (not audited:
    // this is the guest writing, not the SVSM).
    let _ = ram.ram.write(at, &raw);
}

fuzz_target!(|actions: Vec<Action>| {
    let ram = AuditedRam { ram: FakeGuestRam::new(0, RAM_SIZE), revoked: RefCell::default() };
    let layout = GuestLayout::new(&[MemoryRange { base: 0, size: RAM_SIZE }], &[SVSM]);
    let owned = OwnedPages::new();
    let checked = CheckedGuestMemory::new(&layout, &owned, &ram);
    let mut rmp = rmp();
    let mut device = Device::new(&ram);
    let mut filter = FwCfgFilter::new(&mut device, &[SVSM]).expect("the fake device is valid");
    filter.add_file(b"etc/svsm/tpm-acpi", vec![0x22; 100]).expect("a new name");
    filter.append_file(b"etc/table-loader", &[0x33; 128]).expect("the loader exists");
    device.guest_reads = true;
    for action in actions.into_iter().take(64) {
        if let Action::Rmpadjust { page, revoke } = action {
            let gpa = page.gpa() & !(PAGE - 1);
            let permissions = if revoke { VmplPermissions::NONE } else { VmplPermissions::ALL };
            let attributes =
                RmpAdjustAttributes { target_vmpl: GUEST_VMPL, permissions, vmsa: false };
            let in_svsm = MemoryRange { base: gpa, size: PAGE }.overlaps(&SVSM);
            if !in_svsm && rmp.rmpadjust(gpa, RmpPageSize::Size4K, attributes).is_ok() {
                let mut revoked = ram.revoked.borrow_mut();
                if revoke {
                    revoked.insert(gpa);
                } else {
                    revoked.remove(&gpa);
                }
            }
            continue;
        }
        // The permissions hold still while the filter runs (the dev
        // platform's guest-memory lock).
        let memory = VmplMemory::new(&checked, &rmp, GUEST_VMPL);
        let kick = |filter: &mut FwCfgFilter, device: &mut Device, at: u64| {
            filter.port_out(DMA_HIGH_PORT, 4, ((at >> 32) as u32).to_be(), device, &memory);
            filter.port_out(DMA_LOW_PORT, 4, (at as u32).to_be(), device, &memory);
        };
        match action {
            Action::Select(key) => {
                filter.port_out(SELECTOR_PORT, 2, u32::from(key.value()), &mut device, &memory)
            }
            Action::ReadBytes { count, selector_port } => {
                let port = if selector_port { SELECTOR_PORT } else { DATA_PORT };
                for _ in 0..count {
                    filter.port_in(port, 1, &mut device);
                }
            }
            Action::Port { port, size, write, value } => {
                let span = u8::try_from(PORTS.len()).expect("a dozen ports");
                let port = PORTS.start() + u16::from(port % span);
                let size = [1, 2, 4][usize::from(size % 3)];
                if write {
                    filter.port_out(port, size, value, &mut device, &memory);
                } else {
                    filter.port_in(port, size, &mut device);
                }
            }
            Action::Dma { descriptor, key, flags, length, buffer } => {
                let control = (u32::from(key.value()) << 16) | u32::from(flags & 0x1F);
                write_descriptor(&ram, descriptor.gpa(), control, length, buffer.gpa());
                kick(&mut filter, &mut device, descriptor.gpa());
            }
            Action::DmaRaw { descriptor, control, length, buffer } => {
                write_descriptor(&ram, descriptor.gpa(), control, length, buffer.gpa());
                kick(&mut filter, &mut device, descriptor.gpa());
            }
            // Done above, outside the filter.
            Action::Rmpadjust { .. } => {}
        }
    }
});
