//! A fake hypervisor for host tests: it answers the GHCB MSR protocol and
//! the GHCB page protocol the way KVM does, and can be told to misbehave.
//!
//! It reads and writes the page by raw byte offsets (Linux `struct
//! ghcb_save_area`) and decodes MSR values with its own shifts, not through
//! `abi::ghcb`, so a layout mistake there shows up as a disagreement here.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use abi::ghcb::{Ghcb, TerminationReason};
use zerocopy::IntoBytes;

use super::ghcb::GhcbTransport;
use super::msr_protocol::MsrProtocol;

/// Ways the fake misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostility {
    /// Behaves like KVM.
    None,
    /// Returns outputs without marking them valid.
    NoOutputs,
    /// Reports this SW_EXITINFO1/2 instead of success.
    Result(u64, u64),
    /// Moves page-state-change progress backwards.
    PscBackwards,
    /// Changes a page-state-change entry.
    PscRewriteEntry,
    /// Reports progress past the last entry.
    PscPastEnd,
    /// Never advances a page state change.
    PscNoProgress,
    /// Fails a page state change with KVM's "invalid entry".
    PscError,
    /// Answers with a page of pseudo-random bytes (xorshift from this seed).
    Garbage(u64),
}

/// A guest request as the fake saw it: exit code, request GPA, response
/// GPA, certificate buffer (GPA, pages).
pub type GuestRequestRecord = (u64, u64, u64, Option<(u64, u64)>);

/// The fake.
pub struct FakeHypervisor {
    /// GPA of the GHCB page the transport side models.
    pub ghcb_gpa: u64,
    /// Every MSR-protocol value written.
    pub msr_log: Vec<u64>,
    /// Answer the next MSR-protocol request with this value.
    pub msr_override: Option<u64>,
    /// The registered GHCB GPA.
    pub registered_ghcb: Option<u64>,
    /// GFNs that are shared.
    pub shared_pages: BTreeSet<u64>,
    /// VMPLs asked for with Run-VMPL.
    pub vmpl_runs: Vec<u8>,
    /// The termination request, if one came.
    pub terminated: Option<TerminationReason>,
    /// Hypervisor feature bitmap.
    pub features: u64,
    /// The last GHCB page as the hypervisor received it.
    pub last_request: Option<[u8; 4096]>,
    /// (port, size, value) of every OUT.
    pub port_writes: Vec<(u16, u8, u32)>,
    /// Values IN returns (0xFFFF_FFFF for ports not listed).
    pub port_values: BTreeMap<u16, u32>,
    /// MSR values behind RDMSR/WRMSR events.
    pub msrs: BTreeMap<u32, u64>,
    /// Misbehaviour.
    pub hostility: Hostility,
    /// Page-state-change entries processed per call (0 = all).
    pub psc_per_call: usize,
    /// Page-state-change calls received.
    pub psc_calls: usize,
    /// (EXITINFO1, EXITINFO2, RAX) of AP creation events.
    pub ap_creations: Vec<(u64, u64, u64)>,
    /// (exit code, request GPA, response GPA, certificate buffer).
    pub guest_requests: Vec<GuestRequestRecord>,
    /// SW_EXITINFO2 answered to guest requests.
    pub guest_request_answer: u64,
    /// Certificate pages an extended request needs (RBX on INVALID_LEN).
    pub certificate_pages_needed: u64,
}

const RAX: usize = 0x1F8;
const RCX: usize = 0x308;
const RDX: usize = 0x310;
const RBX: usize = 0x318;
const EXIT_CODE: usize = 0x390;
const EXIT_INFO1: usize = 0x398;
const EXIT_INFO2: usize = 0x3A0;
const SCRATCH: usize = 0x3A8;
const BITMAP: usize = 0x3F0;
const BUFFER: usize = 0x800;

fn read(page: &[u8; 4096], offset: usize) -> u64 {
    u64::from_le_bytes(page[offset..offset + 8].try_into().expect("8 bytes"))
}

fn write(page: &mut [u8; 4096], offset: usize, value: u64) {
    page[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

fn is_valid(page: &[u8; 4096], offset: usize) -> bool {
    let bit = offset / 8;
    page[BITMAP + bit / 8] >> (bit % 8) & 1 == 1
}

fn mark_valid(page: &mut [u8; 4096], offset: usize) {
    let bit = offset / 8;
    page[BITMAP + bit / 8] |= 1 << (bit % 8);
}

impl FakeHypervisor {
    /// A KVM-like hypervisor: GHCB versions 1-2, C-bit 51, features SNP and
    /// AP creation, nothing registered.
    pub fn new() -> FakeHypervisor {
        FakeHypervisor {
            ghcb_gpa: 0x0812_3000,
            msr_log: Vec::new(),
            msr_override: None,
            registered_ghcb: None,
            shared_pages: BTreeSet::new(),
            vmpl_runs: Vec::new(),
            terminated: None,
            features: 0x3,
            last_request: None,
            port_writes: Vec::new(),
            port_values: BTreeMap::new(),
            msrs: BTreeMap::new(),
            hostility: Hostility::None,
            psc_per_call: 0,
            psc_calls: 0,
            ap_creations: Vec::new(),
            guest_requests: Vec::new(),
            guest_request_answer: 0,
            certificate_pages_needed: 0,
        }
    }

    fn set_page_state(&mut self, gfn: u64, operation: u64, pages: u64) {
        for page in gfn..gfn + pages {
            match operation {
                1 => {
                    self.shared_pages.remove(&page);
                }
                2 => {
                    self.shared_pages.insert(page);
                }
                _ => {}
            }
        }
    }

    /// Handles one GHCB page; returns SW_EXITINFO1/2.
    fn handle(&mut self, page: &mut [u8; 4096]) -> (u64, u64) {
        if self.registered_ghcb != Some(self.ghcb_gpa) {
            return (2, 1);
        }
        let usage = u32::from_le_bytes(page[0xFFC..0x1000].try_into().expect("4 bytes"));
        let version = u16::from_le_bytes([page[0xFFA], page[0xFFB]]);
        if usage != 0 || version != 2 {
            return (2, 2);
        }
        if ![EXIT_CODE, EXIT_INFO1, EXIT_INFO2].iter().all(|o| is_valid(page, *o)) {
            return (2, 4);
        }
        let (code, info1, info2) =
            (read(page, EXIT_CODE), read(page, EXIT_INFO1), read(page, EXIT_INFO2));
        let inputs = |offset| is_valid(page, offset).then(|| read(page, offset));
        let (rax, rbx, rcx, rdx, scratch) =
            (inputs(RAX), inputs(RBX), inputs(RCX), inputs(RDX), inputs(SCRATCH));
        // KVM clears the bitmap after reading the request.
        page[BITMAP..BITMAP + 16].fill(0);
        let outputs_valid = self.hostility != Hostility::NoOutputs;
        match code {
            0x7B => {
                let port = (info1 >> 16) as u16;
                let mask: u64 = match (info1 >> 4) & 7 {
                    1 => 0xFF,
                    2 => 0xFFFF,
                    4 => 0xFFFF_FFFF,
                    _ => return (2, 5),
                };
                if info1 & 1 == 1 {
                    let value = self.port_values.get(&port).copied().unwrap_or(u32::MAX);
                    write(page, RAX, u64::from(value));
                    if outputs_valid {
                        mark_valid(page, RAX);
                    }
                } else {
                    let Some(rax) = rax else { return (2, 4) };
                    self.port_writes.push((
                        port,
                        (mask.count_ones() / 8) as u8,
                        (rax & mask) as u32,
                    ));
                }
            }
            0x7C => {
                let Some(rcx) = rcx else { return (2, 4) };
                if info1 == 0 {
                    let value = self.msrs.get(&(rcx as u32)).copied().unwrap_or(0);
                    write(page, RAX, value & 0xFFFF_FFFF);
                    write(page, RDX, value >> 32);
                    if outputs_valid {
                        mark_valid(page, RAX);
                        mark_valid(page, RDX);
                    }
                } else {
                    let (Some(rax), Some(rdx)) = (rax, rdx) else { return (2, 4) };
                    self.msrs.insert(rcx as u32, rdx << 32 | (rax & 0xFFFF_FFFF));
                }
            }
            0x8000_0010 => {
                if scratch != Some(self.ghcb_gpa + BUFFER as u64) {
                    return (2, 3);
                }
                self.psc_calls += 1;
                return (0, self.page_state_change(page));
            }
            0x8000_0013 => self.ap_creations.push((info1, info2, rax.unwrap_or(0))),
            0x8000_0011 | 0x8000_0012 => {
                let certs = (code == 0x8000_0012).then(|| (rax.unwrap_or(0), rbx.unwrap_or(0)));
                self.guest_requests.push((code, info1, info2, certs));
                if certs.is_some() && self.guest_request_answer >> 32 == 1 {
                    write(page, RBX, self.certificate_pages_needed);
                    mark_valid(page, RBX);
                }
                return (0, self.guest_request_answer);
            }
            _ => return (2, 6),
        }
        (0, 0)
    }

    fn page_state_change(&mut self, page: &mut [u8; 4096]) -> u64 {
        if self.hostility == Hostility::PscError {
            return 0x1_0000_0002;
        }
        let header = read(page, BUFFER);
        let (mut cur, end) = (header & 0xFFFF, (header >> 16) & 0xFFFF);
        let limit = if self.psc_per_call == 0 { usize::MAX } else { self.psc_per_call };
        let mut done = 0;
        while cur <= end && done < limit && self.hostility != Hostility::PscNoProgress {
            let entry = read(page, BUFFER + 8 + 8 * cur as usize);
            let pages = if entry >> 56 & 1 == 1 { 512 } else { 1 };
            self.set_page_state((entry >> 12) & ((1 << 40) - 1), (entry >> 52) & 0xF, pages);
            cur += 1;
            done += 1;
        }
        match self.hostility {
            Hostility::PscBackwards if cur >= 2 => cur = 0,
            Hostility::PscPastEnd => cur = end + 2,
            Hostility::PscRewriteEntry => {
                let offset = BUFFER + 8 + 8 * end as usize;
                write(page, offset, read(page, offset) ^ (1 << 12));
            }
            _ => {}
        }
        write(page, BUFFER, (header & !0xFFFF) | cur);
        0
    }
}

impl MsrProtocol for FakeHypervisor {
    fn exchange(&mut self, request: u64) -> u64 {
        self.msr_log.push(request);
        if let Some(answer) = self.msr_override.take() {
            return answer;
        }
        match request & 0xFFF {
            0x002 => (2 << 48) | (1 << 32) | (51 << 24) | 0x001,
            0x010 => (0xF_FFFF_FFFF_FFFF << 12) | 0x011,
            0x012 => {
                self.registered_ghcb = Some(request & !0xFFF);
                (request & !0xFFF) | 0x013
            }
            0x014 => {
                self.set_page_state((request >> 12) & ((1 << 40) - 1), (request >> 52) & 0xF, 1);
                0x015
            }
            0x016 => {
                self.vmpl_runs.push((request >> 32) as u8);
                0x017
            }
            0x080 => (self.features << 12) | 0x081,
            0x100 => {
                self.terminated = Some(TerminationReason {
                    set: ((request >> 12) & 0xF) as u8,
                    code: ((request >> 16) & 0xFF) as u8,
                });
                request
            }
            _ => 0,
        }
    }
}

impl GhcbTransport for FakeHypervisor {
    fn gpa(&self) -> u64 {
        self.ghcb_gpa
    }

    fn exchange(&mut self, ghcb: &mut Ghcb) {
        let mut page = [0u8; 4096];
        page.copy_from_slice(ghcb.as_bytes());
        self.last_request = Some(page);
        let (mut info1, mut info2) = self.handle(&mut page);
        if let Hostility::Result(forced1, forced2) = self.hostility {
            (info1, info2) = (forced1, forced2);
        }
        write(&mut page, EXIT_INFO1, info1);
        write(&mut page, EXIT_INFO2, info2);
        mark_valid(&mut page, EXIT_INFO1);
        mark_valid(&mut page, EXIT_INFO2);
        if let Hostility::Garbage(seed) = &mut self.hostility {
            for word in page.chunks_exact_mut(8) {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                // Success half the time, so the checks after it run too.
                word.copy_from_slice(&seed.to_le_bytes());
            }
            if *seed & 1 == 0 {
                write(&mut page, EXIT_INFO1, 0);
            }
        }
        ghcb.as_mut_bytes().copy_from_slice(&page);
    }
}
