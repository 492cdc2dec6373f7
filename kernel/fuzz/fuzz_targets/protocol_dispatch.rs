//! Fuzzes the SVSM's protocol dispatcher (`kernel::protocols::handle_call`)
//! with sequences of guest actions: SVSM calls with arbitrary registers
//! (often pointing at interesting addresses: the calling area, SVSM
//! memory, the ends of RAM, MMIO, wrapping values), and guest writes that
//! lay out request lists and VMSAs for them. It runs over fake guest RAM
//! and the dev platform's real emulated RMP (`kernel::host_doubles`).
//!
//! Properties checked: nothing panics; every memory access and every
//! PVALIDATE/RMPADJUST the SVSM makes on the guest's behalf lies in guest
//! RAM and outside SVSM memory; every result code is one the spec defines;
//! pages the SVSM holds stay outside SVSM memory.

#![no_main]

use abi::boot::MemoryRange;
use abi::snp_instr::{PvalidateError, RmpAdjustAttributes, RmpAdjustError, RmpPageSize};
use abi::svsm::{ListHeader, SvsmError, request_rax};
use abi::vmsa::{EFER_SVME, Vmsa};
use arbitrary::Arbitrary;
use kernel::cpu::io::IoPort;
use kernel::guest_mem::{CheckedGuestMemory, Fault, GuestLayout, OwnedPages, RawGuestMemory};
use kernel::host_doubles::{FakeGuestRam, FakePlatform};
use kernel::platform::{Platform, PlatformKind};
use kernel::protocols::{
    CallContext, CallRegisters, Caller, SvsmState, VcpuState, VcpuTable, handle_call,
};
use libfuzzer_sys::fuzz_target;
use zerocopy::{FromZeros, IntoBytes};

const PAGE: u64 = 0x1000;
const LOW_RAM: MemoryRange = MemoryRange { base: 0, size: 0xA_0000 };
const RAM: MemoryRange = MemoryRange { base: 0x10_0000, size: 0x70_0000 };
const SVSM: MemoryRange = MemoryRange { base: 0x40_0000, size: 0x20_0000 };
const STARTUP_VMSA: u64 = SVSM.base;
const STARTUP_CA: u64 = 0x1_0000;
const SEV_FEATURES: u64 = 1;
const GUEST_VMPL: u8 = 2;
const APIC_IDS: [u32; 3] = [0, 1, 2];

/// Addresses worth hitting often; an [`Addr::Pick`] adds a small offset.
const INTERESTING: [u64; 16] = [
    STARTUP_CA,
    0x2_0000,
    0x9_F000,
    0xA_0000,
    0x10_0000,
    0x10_1000,
    0x10_2000,
    0x20_0000,
    0x3F_F000,
    SVSM.base,
    SVSM.base + SVSM.size - PAGE,
    SVSM.base + SVSM.size,
    RAM.base + RAM.size - PAGE,
    RAM.base + RAM.size,
    0xFEE0_0000,
    !0xFFF,
];

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Pick(u8, u16),
    Raw(u64),
}

impl Addr {
    fn gpa(self) -> u64 {
        match self {
            Addr::Pick(index, offset) => INTERESTING[usize::from(index) % INTERESTING.len()]
                .wrapping_add(u64::from(offset & 0x1FFF)),
            Addr::Raw(raw) => raw,
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Arg {
    Addr(Addr),
    Raw(u64),
}

impl Arg {
    fn value(self) -> u64 {
        match self {
            Arg::Addr(addr) => addr.gpa(),
            Arg::Raw(raw) => raw,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Action {
    /// An SVSM call; the protocol is mostly 0 (core), sometimes anything.
    Call { protocol: Option<u32>, call: u8, rcx: Arg, rdx: Arg, r8: Arg, r9: u64 },
    /// The guest writes words (where the guest may write).
    Write { at: Addr, words: Vec<u64> },
    /// The guest writes a request list: header, then entries built from an
    /// address and low flag bits.
    WriteList { at: Addr, entries: u16, next: u16, items: Vec<(Addr, u16)> },
    /// The guest writes a plausible VMSA, so CREATE_VCPU gets past its
    /// first checks.
    WriteVmsa { at: Addr, vmpl: u8, svme: bool, sev_features_flip: u64 },
    /// The guest validates a page directly (as its firmware start would).
    Validate { at: Addr },
    /// The next calls come from another known vCPU.
    SwitchCaller { index: u8 },
}

/// Panics if an access leaves guest RAM or touches SVSM memory.
fn assert_guest_range(what: &str, gpa: u64, len: u64) {
    let range = MemoryRange { base: gpa, size: len.max(1) };
    let in_ram = [LOW_RAM, RAM].iter().any(|r| r.contains_range(&range));
    assert!(in_ram && !SVSM.overlaps(&range), "{what} outside guest memory: {gpa:#x}+{len:#x}");
}

/// Guest RAM that checks every access the SVSM makes through it.
struct AuditedRam<'a> {
    what: &'static str,
    inner: &'a FakeGuestRam,
}

impl RawGuestMemory for AuditedRam<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Fault> {
        assert_guest_range(self.what, gpa, buf.len() as u64);
        self.inner.read(gpa, buf)
    }

    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), Fault> {
        assert_guest_range(self.what, gpa, data.len() as u64);
        self.inner.write(gpa, data)
    }

    fn zero(&self, gpa: u64, len: u64) -> Result<(), Fault> {
        assert_guest_range(self.what, gpa, len);
        self.inner.zero(gpa, len)
    }
}

/// The fake platform, checking every page-state operation's target.
struct AuditedPlatform {
    inner: FakePlatform,
}

impl Platform for AuditedPlatform {
    fn kind(&self) -> PlatformKind {
        self.inner.kind()
    }

    fn io(&self) -> &'static dyn IoPort {
        self.inner.io()
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.inner.cpuid(leaf, subleaf)
    }

    fn exit(&self, code: u8) -> ! {
        panic!("a protocol call ended the VM ({code:#x})")
    }

    fn runs_guests(&self) -> bool {
        true
    }

    fn pvalidate(&self, gpa: u64, size: RmpPageSize, validate: bool) -> Result<(), PvalidateError> {
        assert_guest_range("PVALIDATE", gpa, size.bytes());
        self.inner.pvalidate(gpa, size, validate)
    }

    fn rmpadjust(
        &self,
        gpa: u64,
        size: RmpPageSize,
        attributes: RmpAdjustAttributes,
    ) -> Result<(), RmpAdjustError> {
        assert_guest_range("RMPADJUST", gpa, size.bytes());
        self.inner.rmpadjust(gpa, size, attributes)
    }
}

/// Whether a result code is one the spec defines (success, success info,
/// "memory needed", a defined error, or a protocol-defined error).
fn defined_code(code: u32) -> bool {
    code == 0 || (0x1000..0x8000_0000).contains(&code) || SvsmError::from_code(code).is_some()
}

struct World {
    layout: GuestLayout,
    owned: OwnedPages,
    ram: FakeGuestRam,
    platform: AuditedPlatform,
    state: SvsmState,
    caller: Caller,
}

impl World {
    fn new() -> World {
        let mut state = SvsmState {
            vcpus: VcpuTable::new(&APIC_IDS, SEV_FEATURES),
            deposits: Default::default(),
        };
        let startup = state.vcpus.add(STARTUP_VMSA, STARTUP_CA, 0, GUEST_VMPL, true);
        state.vcpus.get_mut(startup.id).expect("just added").state = VcpuState::Running;
        let world = World {
            layout: GuestLayout::new(&[LOW_RAM, RAM], &[SVSM]),
            owned: OwnedPages::new(),
            ram: FakeGuestRam::new(0, RAM.base + RAM.size),
            platform: AuditedPlatform { inner: FakePlatform::new(&[LOW_RAM, RAM]) },
            state,
            caller: Caller { id: startup.id, vmpl: GUEST_VMPL },
        };
        for page in [STARTUP_CA, 0x2_0000, 0x10_0000, 0x10_1000] {
            world.validate(page);
        }
        world
    }

    fn validate(&self, gpa: u64) {
        let gpa = gpa & !(PAGE - 1);
        if self.guest_may_write(gpa, PAGE) {
            let _ = self.platform.inner.rmp.lock().pvalidate(gpa, RmpPageSize::Size4K, true);
        }
    }

    /// Whether the guest itself could write there (its RAM, not SVSM
    /// memory, not a page the SVSM holds).
    fn guest_may_write(&self, gpa: u64, len: u64) -> bool {
        self.layout.check(gpa, len).is_ok() && !self.owned.any_in(gpa, gpa.saturating_add(len))
    }

    fn guest_write(&self, gpa: u64, data: &[u8]) {
        if self.guest_may_write(gpa, data.len() as u64) {
            self.ram.write(gpa, data).expect("checked above");
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Call { protocol, call, rcx, rdx, r8, r9 } => {
                let protocol = protocol.unwrap_or(0);
                let mut regs = CallRegisters {
                    rax: request_rax(protocol, u32::from(call)),
                    rcx: rcx.value(),
                    rdx: rdx.value(),
                    r8: r8.value(),
                    r9,
                };
                let checked_ram = AuditedRam { what: "checked guest access", inner: &self.ram };
                let held_ram = AuditedRam { what: "access to an SVSM-held page", inner: &self.ram };
                let memory = CheckedGuestMemory::new(&self.layout, &self.owned, &checked_ram);
                let mut context = CallContext {
                    platform: &self.platform,
                    memory: &memory,
                    owned: &self.owned,
                    svsm_pages: &held_ram,
                    state: &mut self.state,
                    caller: self.caller,
                    regs: &mut regs,
                };
                let code = handle_call(&mut context);
                assert!(defined_code(code), "undefined result code {code:#x} for {regs:x?}");
                self.check_invariants();
            }
            Action::Write { at, words } => {
                let bytes: Vec<u8> = words.iter().take(64).flat_map(|w| w.to_le_bytes()).collect();
                self.guest_write(at.gpa(), &bytes);
            }
            Action::WriteList { at, entries, next, items } => {
                let gpa = at.gpa();
                let header = ListHeader { entries, next, reserved: 0 };
                self.guest_write(gpa, header.as_bytes());
                for (i, (addr, flags)) in items.iter().take(32).enumerate() {
                    let entry = (addr.gpa() & !0xFFF) | u64::from(flags & 0xFFF);
                    self.guest_write(gpa.wrapping_add(8 + 8 * i as u64), &entry.to_le_bytes());
                }
            }
            Action::WriteVmsa { at, vmpl, svme, sev_features_flip } => {
                let mut vmsa = Vmsa::new_zeroed();
                vmsa.vmpl = vmpl % 4;
                vmsa.efer = if svme { EFER_SVME | 0x500 } else { 0x500 };
                vmsa.sev_features = SEV_FEATURES ^ (sev_features_flip & 0xF);
                self.guest_write(at.gpa() & !(PAGE - 1), vmsa.as_bytes());
            }
            Action::Validate { at } => self.validate(at.gpa()),
            Action::SwitchCaller { index } => {
                let vcpus: Vec<_> = self.state.vcpus.iter().copied().collect();
                if let Some(record) = vcpus.get(usize::from(index) % vcpus.len().max(1)) {
                    self.caller = Caller { id: record.id, vmpl: record.vmpl.max(1) };
                }
            }
        }
    }

    fn check_invariants(&self) {
        for record in self.state.vcpus.iter().filter(|r| !r.startup) {
            assert_guest_range("a VMSA the SVSM holds", record.vmsa_gpa, PAGE);
            assert!(
                self.owned.owner(record.vmsa_gpa).is_some(),
                "VMSA {:#x} not held",
                record.vmsa_gpa
            );
        }
    }
}

fuzz_target!(|actions: Vec<Action>| {
    let mut world = World::new();
    for action in actions.into_iter().take(64) {
        world.act(action);
    }
});
