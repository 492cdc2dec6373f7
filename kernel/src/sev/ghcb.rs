//! The GHCB page protocol from the guest's side: port I/O, MSR access, page
//! state changes, AP creation and guest requests through a registered,
//! shared GHCB page.
//!
//! Every call builds its request in a private (encrypted) copy of the page,
//! starting from zeros so nothing of an earlier call leaks to the host,
//! marks exactly the fields it supplies in the valid bitmap, and hands the
//! copy to a [`GhcbTransport`], which copies it into the shared page, points
//! the GHCB MSR at it, executes VMGEXIT and copies the answer back. The
//! answer is then read only from the private copy, so the host cannot
//! change a value between the check and the use, and it is checked: the
//! result in SW_EXITINFO1, and that every output the call reads is marked
//! valid.

use alloc::boxed::Box;

use abi::ghcb::{
    ApCreation, Ghcb, GhcbField, GhcbResult, IoDirection, IoioInfo, MSR_EXIT_READ, MSR_EXIT_WRITE,
    PSC_MAX_ENTRIES, PscDescriptor, PscEntry, PscHeader, SHARED_BUFFER_OFFSET, exit_code,
};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// The hardware operation behind one GHCB call.
pub trait GhcbTransport {
    /// Guest-physical address of the shared GHCB page.
    fn gpa(&self) -> u64;
    /// Copies `ghcb` into the shared page, writes the page's GPA to the GHCB
    /// MSR, executes VMGEXIT and copies the shared page back into `ghcb`.
    fn exchange(&mut self, ghcb: &mut Ghcb);
}

/// Why a GHCB call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GhcbError {
    /// The hypervisor reported something other than success.
    Failed {
        /// The call's exit code.
        exit_code: u64,
        /// What it reported.
        result: GhcbResult,
    },
    /// The hypervisor did not mark an output of the call valid.
    MissingOutput {
        /// The call's exit code.
        exit_code: u64,
        /// The output.
        field: GhcbField,
    },
    /// A page state change failed (the hypervisor's SW_EXITINFO2).
    PageStateChange {
        /// The error the hypervisor reported.
        error: u64,
    },
    /// The hypervisor changed a page-state-change request, or moved its
    /// progress backwards.
    PageStateChangeTampered,
    /// The hypervisor stopped making progress on a page state change.
    PageStateChangeStalled,
    /// An operand the caller passed is out of range (port I/O size not 1, 2
    /// or 4).
    InvalidArgument,
    /// No GHCB to call with: not set up yet, or in use by the code this
    /// CPU interrupted.
    Unavailable,
}

/// How a guest request (NAE 0x8000_0011/12) ended without a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestRequestError {
    /// The GHCB call itself failed.
    Ghcb(GhcbError),
    /// The host is busy (VMM error 2); the request was not forwarded.
    Busy,
    /// The host rejected the length (VMM error 1). For an extended request
    /// `pages` is the certificate buffer size it needs (in RBX); for a plain
    /// request it is 0.
    InvalidLength {
        /// Certificate pages needed.
        pages: u64,
    },
    /// The firmware or the host reported another error (SW_EXITINFO2).
    Failed(u64),
}

/// Most times a page state change is re-issued without the hypervisor
/// advancing, before the client gives up.
const PSC_STALL_LIMIT: usize = 8;

/// A GHCB protocol client over a transport.
pub struct GhcbClient<T> {
    transport: T,
    page: Box<Ghcb>,
}

impl<T: GhcbTransport> GhcbClient<T> {
    /// A client for a GHCB page that is shared and registered.
    pub fn new(transport: T) -> GhcbClient<T> {
        GhcbClient { transport, page: Box::new(Ghcb::new_zeroed()) }
    }

    /// The transport (tests inspect their fakes through it).
    #[cfg(test)]
    pub fn transport(&mut self) -> &mut T {
        &mut self.transport
    }

    /// One call: a fresh page with `inputs`, the exit code and information,
    /// the exchange, and the result check.
    fn call(
        &mut self,
        exit_code: u64,
        info1: u64,
        info2: u64,
        inputs: &[(GhcbField, u64)],
    ) -> Result<&Ghcb, GhcbError> {
        self.call_with_buffer(exit_code, info1, info2, inputs, &[])
    }

    /// Like [`Self::call`], with `buffer` copied to the start of the shared
    /// buffer (at most its 2032 bytes).
    fn call_with_buffer(
        &mut self,
        exit_code: u64,
        info1: u64,
        info2: u64,
        inputs: &[(GhcbField, u64)],
        buffer: &[u8],
    ) -> Result<&Ghcb, GhcbError> {
        self.page.zero();
        let shared = self.page.shared_buffer_mut();
        let length = buffer.len().min(shared.len());
        shared[..length].copy_from_slice(&buffer[..length]);
        for (field, value) in inputs {
            self.page.set(*field, *value);
        }
        self.page.set_exit(exit_code, info1, info2);
        self.transport.exchange(&mut self.page);
        match self.page.result() {
            GhcbResult::Ok => Ok(&self.page),
            result => Err(GhcbError::Failed { exit_code, result }),
        }
    }

    fn output(ghcb: &Ghcb, exit_code: u64, field: GhcbField) -> Result<u64, GhcbError> {
        ghcb.get_valid(field).ok_or(GhcbError::MissingOutput { exit_code, field })
    }

    /// OUT of `size` (1, 2 or 4) bytes of `value` to `port`.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) -> Result<(), GhcbError> {
        let mask = operand_mask(size)?;
        let info = IoioInfo::simple(port, IoDirection::Out, size).encode();
        self.call(exit_code::IOIO, info, 0, &[(GhcbField::Rax, u64::from(value) & mask)])?;
        Ok(())
    }

    /// IN of `size` (1, 2 or 4) bytes from `port`.
    pub fn io_read(&mut self, port: u16, size: u8) -> Result<u32, GhcbError> {
        let mask = operand_mask(size)?;
        let info = IoioInfo::simple(port, IoDirection::In, size).encode();
        let ghcb = self.call(exit_code::IOIO, info, 0, &[(GhcbField::Rax, 0)])?;
        let value = Self::output(ghcb, exit_code::IOIO, GhcbField::Rax)? & mask;
        Ok(value as u32)
    }

    /// RDMSR through the hypervisor.
    pub fn read_msr(&mut self, msr: u32) -> Result<u64, GhcbError> {
        let ghcb =
            self.call(exit_code::MSR, MSR_EXIT_READ, 0, &[(GhcbField::Rcx, u64::from(msr))])?;
        let low = Self::output(ghcb, exit_code::MSR, GhcbField::Rax)? & 0xFFFF_FFFF;
        let high = Self::output(ghcb, exit_code::MSR, GhcbField::Rdx)? & 0xFFFF_FFFF;
        Ok(high << 32 | low)
    }

    /// WRMSR through the hypervisor.
    pub fn write_msr(&mut self, msr: u32, value: u64) -> Result<(), GhcbError> {
        self.call(
            exit_code::MSR,
            MSR_EXIT_WRITE,
            0,
            &[
                (GhcbField::Rcx, u64::from(msr)),
                (GhcbField::Rax, value & 0xFFFF_FFFF),
                (GhcbField::Rdx, value >> 32),
            ],
        )?;
        Ok(())
    }

    /// Changes the state of every page in `entries` (any number; sent in
    /// descriptors of at most 253 entries). The hypervisor's progress is
    /// checked after every exchange: it may only move forward, and it may
    /// change nothing but the progress fields.
    pub fn page_state_change(&mut self, entries: &[PscEntry]) -> Result<(), GhcbError> {
        for chunk in entries.chunks(PSC_MAX_ENTRIES) {
            self.page_state_change_chunk(chunk)?;
        }
        Ok(())
    }

    fn page_state_change_chunk(&mut self, entries: &[PscEntry]) -> Result<(), GhcbError> {
        let end_entry = (entries.len() - 1) as u16;
        let mut descriptor = PscDescriptor::new_zeroed();
        descriptor.header = PscHeader { cur_entry: 0, end_entry, reserved: 0 };
        descriptor.entries[..entries.len()].copy_from_slice(entries);
        let scratch = self.transport.gpa() + SHARED_BUFFER_OFFSET as u64;
        let mut stalled = 0;
        while descriptor.header.cur_entry <= end_entry {
            let before = descriptor.header.cur_entry;
            let ghcb = self.call_with_buffer(
                exit_code::PAGE_STATE_CHANGE,
                0,
                0,
                &[(GhcbField::SwScratch, scratch)],
                descriptor.as_bytes(),
            )?;
            let error = ghcb.get(GhcbField::SwExitInfo2);
            if error != 0 {
                return Err(GhcbError::PageStateChange { error });
            }
            let answer = PscDescriptor::read_from_bytes(ghcb.shared_buffer().as_slice())
                .expect("the descriptor fills the shared buffer exactly");
            check_psc_answer(&descriptor, &answer)?;
            descriptor = answer;
            if descriptor.header.cur_entry == before {
                stalled += 1;
                if stalled == PSC_STALL_LIMIT {
                    return Err(GhcbError::PageStateChangeStalled);
                }
            } else {
                stalled = 0;
            }
        }
        Ok(())
    }

    /// Tells the hypervisor about a VMSA (SNP AP creation): `vmsa_gpa` for
    /// the vCPU and VMPL in `creation`, with the VMSA's SEV_FEATURES.
    pub fn create_ap(
        &mut self,
        creation: ApCreation,
        vmsa_gpa: u64,
        sev_features: u64,
    ) -> Result<(), GhcbError> {
        self.call(
            exit_code::AP_CREATION,
            creation.encode(),
            vmsa_gpa,
            &[(GhcbField::Rax, sev_features)],
        )?;
        Ok(())
    }

    /// An SNP guest request: the sealed message in the shared page at
    /// `request_gpa`, the answer into the shared page at `response_gpa`.
    /// With `certs` (GPA and page count of a shared buffer), an extended
    /// request that also fetches the host's certificate table.
    pub fn guest_request(
        &mut self,
        request_gpa: u64,
        response_gpa: u64,
        certs: Option<(u64, u64)>,
    ) -> Result<(), GuestRequestError> {
        let (code, result) = match certs {
            None => (
                exit_code::GUEST_REQUEST,
                self.call(exit_code::GUEST_REQUEST, request_gpa, response_gpa, &[]),
            ),
            Some((gpa, pages)) => (
                exit_code::EXT_GUEST_REQUEST,
                self.call(
                    exit_code::EXT_GUEST_REQUEST,
                    request_gpa,
                    response_gpa,
                    &[(GhcbField::Rax, gpa), (GhcbField::Rbx, pages)],
                ),
            ),
        };
        let ghcb = result.map_err(GuestRequestError::Ghcb)?;
        let info2 = ghcb.get(GhcbField::SwExitInfo2);
        match ((info2 >> 32) as u32, info2 as u32) {
            (0, 0) => Ok(()),
            (abi::ghcb::GUEST_REQUEST_VMM_BUSY, _) => Err(GuestRequestError::Busy),
            (abi::ghcb::GUEST_REQUEST_VMM_INVALID_LEN, _) => {
                let pages = if certs.is_some() {
                    Self::output(ghcb, code, GhcbField::Rbx).map_err(GuestRequestError::Ghcb)?
                } else {
                    0
                };
                Err(GuestRequestError::InvalidLength { pages })
            }
            _ => Err(GuestRequestError::Failed(info2)),
        }
    }
}

fn operand_mask(size: u8) -> Result<u64, GhcbError> {
    match size {
        1 => Ok(0xFF),
        2 => Ok(0xFFFF),
        4 => Ok(0xFFFF_FFFF),
        _ => Err(GhcbError::InvalidArgument),
    }
}

/// The hypervisor may advance `cur_entry` (never backwards, never past
/// `end_entry + 1`) and the entries' `cur_page`; anything else it changed is
/// tampering.
fn check_psc_answer(sent: &PscDescriptor, answer: &PscDescriptor) -> Result<(), GhcbError> {
    let header = answer.header;
    if header.reserved != 0
        || header.end_entry != sent.header.end_entry
        || header.cur_entry < sent.header.cur_entry
        || header.cur_entry > sent.header.end_entry + 1
    {
        return Err(GhcbError::PageStateChangeTampered);
    }
    let count = usize::from(sent.header.end_entry) + 1;
    for (ours, theirs) in sent.entries[..count].iter().zip(&answer.entries[..count]) {
        let limit = if ours.is_large() { 512 } else { 1 };
        if ours.0 & !0xFFF != theirs.0 & !0xFFF || theirs.cur_page() > limit {
            return Err(GhcbError::PageStateChangeTampered);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use abi::ghcb::{ApCreateRequest, GhcbInputError, PageOperation};

    use super::*;
    use crate::sev::fake::{FakeHypervisor, Hostility};

    fn client() -> GhcbClient<FakeHypervisor> {
        let mut hv = FakeHypervisor::new();
        hv.registered_ghcb = Some(hv.ghcb_gpa);
        GhcbClient::new(hv)
    }

    #[test]
    fn port_output_goes_out_as_linux_encodes_it() {
        let mut ghcb = client();
        ghcb.io_write(0x3F8, 1, 0x141).unwrap();
        ghcb.io_write(0x501, 2, 0x10).unwrap();
        let hv = ghcb.transport();
        assert_eq!(hv.port_writes, [(0x3F8, 1, 0x41), (0x501, 2, 0x10)]);
        // The bytes the hypervisor saw for the last call: exit code 0x7B,
        // EXITINFO1 = 0x501 << 16 | DATA_16 | ADDR_64, RAX, and exactly the
        // valid bits of RAX, SW_EXITCODE, SW_EXITINFO1/2.
        let seen = hv.last_request.expect("a request was made");
        assert_eq!(&seen[0x390..0x398], &0x7Bu64.to_le_bytes());
        assert_eq!(&seen[0x398..0x3A0], &0x0501_0220u64.to_le_bytes());
        assert_eq!(&seen[0x1F8..0x200], &0x10u64.to_le_bytes());
        assert_eq!(&seen[0x3F0..0x400], &[0, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 0x1C, 0]);
        assert_eq!(&seen[0xFFA..0x1000], &[2, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn port_input_requires_a_valid_rax() {
        let mut ghcb = client();
        ghcb.transport().port_values.insert(0x3FD, 0xFFFF_FF60);
        assert_eq!(ghcb.io_read(0x3FD, 1), Ok(0x60));
        ghcb.transport().hostility = Hostility::NoOutputs;
        assert_eq!(
            ghcb.io_read(0x3FD, 1),
            Err(GhcbError::MissingOutput { exit_code: 0x7B, field: GhcbField::Rax })
        );
        assert_eq!(ghcb.io_write(0x3F8, 3, 0), Err(GhcbError::InvalidArgument));
    }

    #[test]
    fn nothing_of_an_earlier_call_reaches_the_host() {
        let mut ghcb = client();
        ghcb.write_msr(0x1B, 0xDEAD_BEEF_0000_0900).unwrap();
        ghcb.io_write(0x3F8, 1, 0x41).unwrap();
        let seen = ghcb.transport().last_request.unwrap();
        assert_eq!(&seen[0x308..0x318], &[0; 16], "RCX/RDX of the MSR write are gone");
    }

    #[test]
    fn msr_access_round_trips() {
        let mut ghcb = client();
        ghcb.write_msr(0x1B, 0xFEE0_0900).unwrap();
        assert_eq!(ghcb.transport().msrs.get(&0x1B), Some(&0xFEE0_0900));
        assert_eq!(ghcb.read_msr(0x1B), Ok(0xFEE0_0900));
        ghcb.transport().msrs.insert(0x10, 0x1234_5678_9ABC_DEF0);
        assert_eq!(ghcb.read_msr(0x10), Ok(0x1234_5678_9ABC_DEF0));
    }

    #[test]
    fn hypervisor_errors_are_reported() {
        let mut ghcb = client();
        ghcb.transport().registered_ghcb = None;
        assert_eq!(
            ghcb.io_write(0x3F8, 1, 0),
            Err(GhcbError::Failed {
                exit_code: 0x7B,
                result: GhcbResult::MalformedInput(GhcbInputError::NotRegistered)
            })
        );
        let mut ghcb = client();
        ghcb.transport().hostility = Hostility::Result(1, 0x8000_0B0D);
        assert_eq!(
            ghcb.read_msr(0x10),
            Err(GhcbError::Failed {
                exit_code: 0x7C,
                result: GhcbResult::Exception { vector: 13, error_code: Some(0), valid: true }
            })
        );
        ghcb.transport().hostility = Hostility::Result(7, 0);
        assert!(matches!(ghcb.read_msr(0x10), Err(GhcbError::Failed { .. })));
    }

    fn entries(count: u64) -> alloc::vec::Vec<PscEntry> {
        (0..count).map(|i| PscEntry::new(0x9000 + i, PageOperation::Shared, false)).collect()
    }

    #[test]
    fn page_state_change_follows_partial_progress() {
        let mut ghcb = client();
        ghcb.transport().psc_per_call = 3;
        let list = entries(300);
        ghcb.page_state_change(&list).unwrap();
        let hv = ghcb.transport();
        assert!((0x9000..0x9000 + 300).all(|gfn| hv.shared_pages.contains(&gfn)));
        // 253 entries in 85 calls, then 47 in 16.
        assert_eq!(hv.psc_calls, 85 + 16);
        let large = [PscEntry::new(0x200, PageOperation::Private, true)];
        hv.shared_pages.insert(0x3FF);
        ghcb.page_state_change(&large).unwrap();
        assert!(!ghcb.transport().shared_pages.contains(&0x3FF));
    }

    #[test]
    fn page_state_change_refuses_tampering_and_stalls() {
        for (hostility, expected) in [
            (Hostility::PscBackwards, GhcbError::PageStateChangeTampered),
            (Hostility::PscRewriteEntry, GhcbError::PageStateChangeTampered),
            (Hostility::PscPastEnd, GhcbError::PageStateChangeTampered),
            (Hostility::PscNoProgress, GhcbError::PageStateChangeStalled),
            (Hostility::PscError, GhcbError::PageStateChange { error: 0x1_0000_0002 }),
        ] {
            let mut ghcb = client();
            ghcb.transport().psc_per_call = 1;
            ghcb.transport().hostility = hostility;
            assert_eq!(ghcb.page_state_change(&entries(4)), Err(expected), "{hostility:?}");
        }
    }

    /// A hypervisor that answers with random pages gets errors or values,
    /// never a panic or a hang of the client.
    #[test]
    fn garbage_answers_never_panic_the_client() {
        for seed in 1..400u64 {
            let mut ghcb = client();
            ghcb.transport().hostility =
                Hostility::Garbage(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let _ = ghcb.io_read(0x3F8, 1);
            let _ = ghcb.io_write(0x3F8, 4, 1);
            let _ = ghcb.read_msr(0x1B);
            let _ = ghcb.write_msr(0x1B, 1);
            let _ = ghcb.page_state_change(&entries(300));
            let _ = ghcb.guest_request(0x1000, 0x2000, Some((0x3000, 4)));
            let _ = ghcb.guest_request(0x1000, 0x2000, None);
        }
    }

    #[test]
    fn ap_creation_request() {
        let mut ghcb = client();
        let creation = ApCreation { request: ApCreateRequest::Create, vmpl: 2, apic_id: 1 };
        ghcb.create_ap(creation, 0x0900_1000, 0x29).unwrap();
        assert_eq!(ghcb.transport().ap_creations, [(0x1_0002_0001, 0x0900_1000, 0x29)]);
    }

    #[test]
    fn guest_requests_and_their_errors() {
        let mut ghcb = client();
        assert_eq!(ghcb.guest_request(0x1000, 0x2000, None), Ok(()));
        assert_eq!(ghcb.transport().guest_requests, [(0x8000_0011, 0x1000, 0x2000, None)]);
        ghcb.transport().guest_request_answer = 2 << 32;
        assert_eq!(ghcb.guest_request(0x1000, 0x2000, None), Err(GuestRequestError::Busy));
        ghcb.transport().guest_request_answer = 1 << 32;
        ghcb.transport().certificate_pages_needed = 4;
        assert_eq!(
            ghcb.guest_request(0x1000, 0x2000, Some((0x3000, 1))),
            Err(GuestRequestError::InvalidLength { pages: 4 })
        );
        assert_eq!(
            ghcb.transport().guest_requests.last(),
            Some(&(0x8000_0012, 0x1000, 0x2000, Some((0x3000, 1))))
        );
        ghcb.transport().guest_request_answer = 0x16;
        assert_eq!(ghcb.guest_request(0x1000, 0x2000, None), Err(GuestRequestError::Failed(0x16)));
    }
}
