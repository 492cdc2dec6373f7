//! The SVSM protocols the guest calls (SVSM specification §6-8), and the
//! one dispatch point the request loop uses: [`handle_call`] takes the
//! caller's registers and a [`CallContext`] and returns the result code for
//! RAX. Everything it needs from the machine comes through the context
//! (the platform's PVALIDATE/RMPADJUST, checked guest memory, the SVSM's
//! state), so host tests and the fuzz target run the same code over fakes.

pub mod attest;
pub mod core;
pub mod vtpm;

use alloc::vec::Vec;

use abi::svsm::{
    PROTOCOL_ATTEST, PROTOCOL_CORE, PROTOCOL_VTPM, ProtocolVersions, SVSM_ERR_UNSUPPORTED_PROTOCOL,
    split_request_rax,
};

use crate::guest_mem::{GuestMemory, OwnedPages, RawGuestMemory};
use crate::platform::Platform;

/// The registers of a call: RAX = protocol << 32 | call on entry, the
/// result code on exit; arguments and results in RCX, RDX, R8, R9.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRegisters {
    /// RAX.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
}

/// Where a vCPU is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Created, waiting for its CPU to pick it up.
    Ready,
    /// Its CPU runs it or services one of its calls.
    Running,
    /// Stopped or parked: not running and not runnable.
    Stopped,
}

/// A guest vCPU the SVSM knows: its VMSA (SVSM-owned) and calling area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuRecord {
    /// Unique for the SVSM's life (see `platform::GuestVcpu::id`).
    pub id: u64,
    /// GPA (= physical address) of the VMSA page.
    pub vmsa_gpa: u64,
    /// GPA of its calling area.
    pub ca_gpa: u64,
    /// Its APIC ID.
    pub apic_id: u32,
    /// The VMPL its VMSA runs at.
    pub vmpl: u8,
    /// The startup (boot) vCPU: cannot be deleted.
    pub startup: bool,
    /// Where it is in its life.
    pub state: VcpuState,
}

/// The guest's vCPUs and what they are checked against.
#[derive(Clone, Debug, Default)]
pub struct VcpuTable {
    records: Vec<VcpuRecord>,
    next_id: u64,
    /// SEV features of the startup vCPU: every new VMSA must have the same.
    pub startup_sev_features: u64,
    /// APIC IDs of the CPUs the SVSM can run vCPUs on.
    pub apic_ids: Vec<u32>,
}

impl VcpuTable {
    /// A table for CPUs with `apic_ids`, whose vCPUs must have
    /// `startup_sev_features`.
    pub fn new(apic_ids: &[u32], startup_sev_features: u64) -> VcpuTable {
        VcpuTable {
            records: Vec::new(),
            next_id: 1,
            startup_sev_features,
            apic_ids: apic_ids.to_vec(),
        }
    }

    /// Adds a vCPU in state [`VcpuState::Ready`]; returns its record.
    pub fn add(
        &mut self,
        vmsa_gpa: u64,
        ca_gpa: u64,
        apic_id: u32,
        vmpl: u8,
        startup: bool,
    ) -> VcpuRecord {
        let record = VcpuRecord {
            id: self.next_id,
            vmsa_gpa,
            ca_gpa,
            apic_id,
            vmpl,
            startup,
            state: VcpuState::Ready,
        };
        self.next_id += 1;
        self.records.push(record);
        record
    }

    /// The vCPU with id `id`.
    pub fn get(&self, id: u64) -> Option<&VcpuRecord> {
        self.records.iter().find(|r| r.id == id)
    }

    /// The vCPU with id `id`, to change.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut VcpuRecord> {
        self.records.iter_mut().find(|r| r.id == id)
    }

    /// The vCPU whose VMSA is at `gpa`.
    pub fn by_vmsa(&self, gpa: u64) -> Option<&VcpuRecord> {
        self.records.iter().find(|r| r.vmsa_gpa == gpa)
    }

    /// Removes the vCPU with id `id`.
    pub fn remove(&mut self, id: u64) -> Option<VcpuRecord> {
        let index = self.records.iter().position(|r| r.id == id)?;
        Some(self.records.remove(index))
    }

    /// The newest vCPU for `apic_id` that waits to run.
    pub fn next_ready(&self, apic_id: u32) -> Option<&VcpuRecord> {
        self.records.iter().rev().find(|r| r.apic_id == apic_id && r.state == VcpuState::Ready)
    }

    /// The startup vCPU.
    pub fn startup(&self) -> Option<&VcpuRecord> {
        self.records.iter().find(|r| r.startup)
    }

    /// Whether the 4 KiB page at `gpa` is some vCPU's VMSA or calling
    /// area.
    pub fn uses_page(&self, gpa: u64) -> bool {
        let page = gpa & !(abi::layout::PAGE_SIZE - 1);
        self.records.iter().any(|r| r.vmsa_gpa == page || r.ca_gpa & !0xFFF == page)
    }

    /// Whether `[gpa, end)` holds a calling area.
    pub fn has_ca_in(&self, gpa: u64, end: u64) -> bool {
        self.records.iter().any(|r| r.ca_gpa >= gpa && r.ca_gpa < end)
    }

    /// Every vCPU.
    pub fn iter(&self) -> impl Iterator<Item = &VcpuRecord> {
        self.records.iter()
    }
}

/// The pages the guest deposited, in the order they came, that the SVSM
/// holds (4 KiB each, VMPL0-only).
#[derive(Clone, Debug, Default)]
pub struct DepositPool {
    pages: Vec<u64>,
}

impl DepositPool {
    /// Adds a deposited page.
    pub fn push(&mut self, gpa: u64) {
        self.pages.push(gpa);
    }

    /// Takes the most recently deposited page back.
    pub fn pop(&mut self) -> Option<u64> {
        self.pages.pop()
    }

    /// Number of pages held.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// The SVSM's protocol state, behind one lock while a call runs.
#[derive(Clone, Debug, Default)]
pub struct SvsmState {
    /// The guest's vCPUs.
    pub vcpus: VcpuTable,
    /// Deposited memory.
    pub deposits: DepositPool,
}

/// The calling vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its id in the [`VcpuTable`].
    pub id: u64,
    /// The VMPL it runs at.
    pub vmpl: u8,
}

/// Everything a call may use.
pub struct CallContext<'a> {
    /// The platform (PVALIDATE, RMPADJUST).
    pub platform: &'a dyn Platform,
    /// The guest's memory, checked.
    pub memory: &'a dyn GuestMemory,
    /// Guest pages the SVSM holds (VMSAs, deposits).
    pub owned: &'a OwnedPages,
    /// Unchecked access to pages the SVSM holds (VMSAs it inspects).
    pub svsm_pages: &'a dyn RawGuestMemory,
    /// vCPUs and deposits.
    pub state: &'a mut SvsmState,
    /// Who calls.
    pub caller: Caller,
    /// The call's registers, updated with the results.
    pub regs: &'a mut CallRegisters,
}

/// The versions of the vTPM protocol served.
pub const VTPM_VERSIONS: ProtocolVersions = ProtocolVersions { min: 1, max: 1 };

/// The versions of each protocol this SVSM serves.
pub fn protocol_versions(protocol: u32) -> Option<ProtocolVersions> {
    match protocol {
        PROTOCOL_CORE => Some(self::core::VERSIONS),
        PROTOCOL_ATTEST => attest::versions(),
        PROTOCOL_VTPM => Some(VTPM_VERSIONS),
        _ => None,
    }
}

/// Runs the call in `context.regs` and returns the result code for RAX.
pub fn handle_call(context: &mut CallContext<'_>) -> u32 {
    let (protocol, call) = split_request_rax(context.regs.rax);
    match protocol {
        PROTOCOL_CORE => self::core::handle(call, context),
        PROTOCOL_ATTEST => attest::handle_call(call, context.regs, context.memory),
        PROTOCOL_VTPM => {
            let mut regs = vtpm::VtpmRegisters { rcx: context.regs.rcx, rdx: context.regs.rdx };
            let result = vtpm::handle(call, &mut regs, context.memory, &mut crate::vtpm::SvsmVtpm);
            (context.regs.rcx, context.regs.rdx) = (regs.rcx, regs.rdx);
            result
        }
        _ => SVSM_ERR_UNSUPPORTED_PROTOCOL,
    }
}
