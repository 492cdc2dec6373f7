//! The SVSM protocol ABI (SVSM specification #58019 rev 1.00): what a guest
//! and the SVSM exchange through the calling area and the registers. The
//! SVSM's request loop and protocols, the test guest and the fuzz target all
//! use these definitions, so the wire format is written once.
//!
//! A call: the guest puts `RAX = protocol << 32 | call` ([`request_rax`]),
//! arguments in RCX, RDX, R8, R9 and in memory it points at, sets
//! [`CallingArea::call_pending`] to 1 and asks the host to run VMPL0 (GHCB
//! Run-VMPL). The SVSM answers in RAX (a 32-bit result code: [`SVSM_SUCCESS`]
//! or an [`SvsmError`] code) and, for some calls, in RCX/RDX/R8, then clears
//! `call_pending`.
//!
//! Everything here is a layout or a pure decoder: nothing checks addresses
//! against memory (that is the SVSM's job), and every decoder accepts any bit
//! pattern, reporting reserved bits instead of trusting them.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::{LARGE_PAGE_SIZE, PAGE_SIZE};

// ---------------------------------------------------------------------------
// Discovery (spec §4)
// ---------------------------------------------------------------------------

/// The virtual MSR a guest's #VC handler answers with the calling-area GPA
/// (spec §4.2). Never implemented by hardware; read only.
pub const MSR_SVSM_CAA: u32 = 0xC001_F000;
/// CPUID leaf whose EAX bit [`CPUID_SVSM_PRESENT`] says an SVSM is present.
pub const CPUID_SEV_LEAF: u32 = 0x8000_001F;
/// CPUID Fn8000_001F EAX bit 28: an SVSM is present (set only by a guest's
/// #VC handler or in the CPUID page the SVSM hands the guest; never by the
/// hardware).
pub const CPUID_SVSM_PRESENT: u32 = 1 << 28;

// ---------------------------------------------------------------------------
// Calling area (spec §5)
// ---------------------------------------------------------------------------

/// Size of a calling area: one 4 KiB page, 4 KiB aligned.
pub const CALLING_AREA_SIZE: usize = PAGE_SIZE as usize;
/// Offset of [`CallingArea::call_pending`].
pub const CALL_PENDING_OFFSET: usize = 0;
/// Offset of [`CallingArea::mem_available`].
pub const MEM_AVAILABLE_OFFSET: usize = 1;
/// Offset of [`CallingArea::buffer`], the free space for memory arguments.
pub const CALLING_AREA_BUFFER_OFFSET: usize = 8;
/// Size of [`CallingArea::buffer`].
pub const CALLING_AREA_BUFFER_SIZE: usize = CALLING_AREA_SIZE - CALLING_AREA_BUFFER_OFFSET;

/// `call_pending`: no call requested (or the call completed).
pub const CALL_NOT_PENDING: u8 = 0;
/// `call_pending`: the guest requests a call. Any other value is a reserved
/// value the SVSM answers with [`SvsmError::InvalidFormat`].
pub const CALL_PENDING: u8 = 1;

/// The per-vCPU calling area (spec §5.1).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct CallingArea {
    /// [`CALL_PENDING`] when the guest requests a call; the SVSM sets it to
    /// [`CALL_NOT_PENDING`] when the call is done.
    pub call_pending: u8,
    /// Non-zero when the SVSM holds deposited memory the guest could
    /// withdraw (meaningful in the startup vCPU's calling area).
    pub mem_available: u8,
    /// Reserved; the SVSM does not look at it.
    pub reserved: [u8; 6],
    /// Free for memory arguments (request lists, operation structures).
    pub buffer: [u8; CALLING_AREA_BUFFER_SIZE],
}

const _: () = {
    assert!(core::mem::size_of::<CallingArea>() == CALLING_AREA_SIZE);
    assert!(core::mem::offset_of!(CallingArea, call_pending) == CALL_PENDING_OFFSET);
    assert!(core::mem::offset_of!(CallingArea, mem_available) == MEM_AVAILABLE_OFFSET);
    assert!(core::mem::offset_of!(CallingArea, buffer) == CALLING_AREA_BUFFER_OFFSET);
};

// ---------------------------------------------------------------------------
// Protocols and calls (spec §5.2, §6)
// ---------------------------------------------------------------------------

/// Protocol 0: core services (pages, vCPUs, calling areas).
pub const PROTOCOL_CORE: u32 = 0;
/// Protocol 1: attestation.
pub const PROTOCOL_ATTEST: u32 = 1;
/// Protocol 2: virtual TPM.
pub const PROTOCOL_VTPM: u32 = 2;

/// The core protocol version this ABI describes (the only one defined).
pub const CORE_PROTOCOL_VERSION: u32 = 1;

/// The calls of the core protocol, with their numbers.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoreCall {
    /// RCX = GPA of the new calling area (4 KiB aligned).
    RemapCa = 0,
    /// RCX = GPA of a PVALIDATE request list (8-byte aligned,
    /// [`ListHeader`] + [`PvalidateEntry`]s); the list is updated in place.
    Pvalidate = 1,
    /// RCX = GPA of the new VMSA (4 KiB), RDX = GPA of its calling area
    /// (4 KiB), R8[31:0] = APIC ID.
    CreateVcpu = 2,
    /// RCX = GPA of the VMSA to delete.
    DeleteVcpu = 3,
    /// RCX = GPA of a deposit list ([`ListHeader`] + [`DepositEntry`]s).
    DepositMem = 4,
    /// RCX = GPA of a withdraw list ([`WithdrawListHeader`] + GPAs), written
    /// by the SVSM.
    WithdrawMem = 5,
    /// RCX = [`query_protocol_request`]; RCX out = [`ProtocolVersions`]
    /// encoding, 0 if unsupported. RAX is always success.
    QueryProtocol = 6,
    /// RCX = [`vtom`] flags (query or configure), RDX/R8/R9 per the flags.
    ConfigureVtom = 7,
}

impl CoreCall {
    /// Every core call, in number order.
    pub const ALL: [CoreCall; 8] = [
        CoreCall::RemapCa,
        CoreCall::Pvalidate,
        CoreCall::CreateVcpu,
        CoreCall::DeleteVcpu,
        CoreCall::DepositMem,
        CoreCall::WithdrawMem,
        CoreCall::QueryProtocol,
        CoreCall::ConfigureVtom,
    ];

    /// Decodes a call number of the core protocol.
    pub fn from_u32(call: u32) -> Option<CoreCall> {
        CoreCall::ALL.get(usize::try_from(call).ok()?).copied()
    }
}

/// RAX for a call: `protocol << 32 | call`.
pub const fn request_rax(protocol: u32, call: u32) -> u64 {
    ((protocol as u64) << 32) | call as u64
}

/// The (protocol, call) pair a guest's RAX asks for.
pub const fn split_request_rax(rax: u64) -> (u32, u32) {
    ((rax >> 32) as u32, rax as u32)
}

// ---------------------------------------------------------------------------
// Result codes (spec §5.3)
// ---------------------------------------------------------------------------

/// The call succeeded.
pub const SVSM_SUCCESS: u32 = 0x0000_0000;
/// Partly done: set `call_pending` again and repeat the call unchanged.
pub const SVSM_ERR_INCOMPLETE: u32 = 0x8000_0000;
/// The protocol number is not supported.
pub const SVSM_ERR_UNSUPPORTED_PROTOCOL: u32 = 0x8000_0001;
/// The call number is not supported by the protocol.
pub const SVSM_ERR_UNSUPPORTED_CALL: u32 = 0x8000_0002;
/// A GPA is not allowed (SVSM memory, MMIO, not guest memory).
pub const SVSM_ERR_INVALID_ADDRESS: u32 = 0x8000_0003;
/// `call_pending` held a reserved value.
pub const SVSM_ERR_INVALID_FORMAT: u32 = 0x8000_0004;
/// A parameter is invalid, including every alignment violation.
pub const SVSM_ERR_INVALID_PARAMETER: u32 = 0x8000_0005;
/// The handler cannot support the request.
pub const SVSM_ERR_INVALID_REQUEST: u32 = 0x8000_0006;
/// Try again; no intermediate state was left.
pub const SVSM_ERR_BUSY: u32 = 0x8000_0007;

/// First protocol-defined error code.
pub const SVSM_ERR_PROTOCOL_BASE: u32 = 0x8000_1000;
/// Core protocol: a PVALIDATE or RMPADJUST the SVSM issued failed with
/// instruction result `n`; the call returns `SVSM_ERR_PROTOCOL_BASE + n`.
pub const fn core_instruction_failure(instruction_result: u32) -> u32 {
    SVSM_ERR_PROTOCOL_BASE.wrapping_add(instruction_result & 0xFFF)
}
/// Core protocol: PVALIDATE/RMPADJUST FAIL_INPUT (1).
pub const SVSM_ERR_CORE_FAIL_INPUT: u32 = core_instruction_failure(1);
/// Core protocol: RMPADJUST FAIL_PERMISSION (2).
pub const SVSM_ERR_CORE_FAIL_PERMISSION: u32 = core_instruction_failure(2);
/// Core protocol: FAIL_INUSE (3), e.g. DELETE_VCPU of a running VMSA.
pub const SVSM_ERR_CORE_FAIL_INUSE: u32 = core_instruction_failure(3);
/// Core protocol: PVALIDATE FAIL_SIZEMISMATCH (6): a 2 MiB entry over 4 KiB
/// RMP entries; retry as 512 4 KiB entries.
pub const SVSM_ERR_CORE_FAIL_SIZEMISMATCH: u32 = core_instruction_failure(6);
/// Core protocol: PVALIDATE changed nothing (the page was already in the
/// requested state) on an entry without the ignore-CF flag.
pub const SVSM_ERR_CORE_FAIL_UNCHANGED: u32 = core_instruction_failure(0x10);

/// Result-code range meaning "more memory needed": bits [29:0] are the
/// number of 4 KiB pages to deposit.
pub const SVSM_MEMORY_NEEDED_BASE: u32 = 0x4000_0000;
/// Largest page count a "more memory needed" result can carry.
pub const SVSM_MEMORY_NEEDED_MAX_PAGES: u32 = 0x3FFF_FFFF;

/// The "more memory needed" result asking for `pages` 4 KiB pages, if the
/// count fits.
pub const fn memory_needed(pages: u32) -> Option<u32> {
    if pages == 0 || pages > SVSM_MEMORY_NEEDED_MAX_PAGES {
        None
    } else {
        Some(SVSM_MEMORY_NEEDED_BASE | pages)
    }
}

/// Why a call failed, as the SVSM reports it in RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SvsmError {
    /// [`SVSM_ERR_INCOMPLETE`].
    Incomplete,
    /// [`SVSM_ERR_UNSUPPORTED_PROTOCOL`].
    UnsupportedProtocol,
    /// [`SVSM_ERR_UNSUPPORTED_CALL`].
    UnsupportedCall,
    /// [`SVSM_ERR_INVALID_ADDRESS`].
    InvalidAddress,
    /// [`SVSM_ERR_INVALID_FORMAT`].
    InvalidFormat,
    /// [`SVSM_ERR_INVALID_PARAMETER`].
    InvalidParameter,
    /// [`SVSM_ERR_INVALID_REQUEST`].
    InvalidRequest,
    /// [`SVSM_ERR_BUSY`].
    Busy,
    /// A protocol-defined error (0x8000_1000 and up).
    Protocol(ProtocolError),
}

/// A protocol-defined error code: always in `0x8000_1000..=0xFFFF_FFFF`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError(u32);

impl ProtocolError {
    /// The protocol-defined error `code`, if it lies in the protocol range.
    pub const fn new(code: u32) -> Option<ProtocolError> {
        if code >= SVSM_ERR_PROTOCOL_BASE { Some(ProtocolError(code)) } else { None }
    }

    /// The result code.
    pub const fn code(self) -> u32 {
        self.0
    }
}

impl SvsmError {
    /// Core protocol: an SNP instruction the SVSM issued failed with
    /// `instruction_result` (PVALIDATE/RMPADJUST EAX, or 0x10 for "no
    /// change").
    pub const fn core_instruction(instruction_result: u32) -> SvsmError {
        SvsmError::Protocol(ProtocolError(core_instruction_failure(instruction_result)))
    }

    /// The result code the SVSM writes to RAX.
    pub const fn code(self) -> u32 {
        match self {
            SvsmError::Incomplete => SVSM_ERR_INCOMPLETE,
            SvsmError::UnsupportedProtocol => SVSM_ERR_UNSUPPORTED_PROTOCOL,
            SvsmError::UnsupportedCall => SVSM_ERR_UNSUPPORTED_CALL,
            SvsmError::InvalidAddress => SVSM_ERR_INVALID_ADDRESS,
            SvsmError::InvalidFormat => SVSM_ERR_INVALID_FORMAT,
            SvsmError::InvalidParameter => SVSM_ERR_INVALID_PARAMETER,
            SvsmError::InvalidRequest => SVSM_ERR_INVALID_REQUEST,
            SvsmError::Busy => SVSM_ERR_BUSY,
            SvsmError::Protocol(e) => e.code(),
        }
    }

    /// Decodes an error result; `None` for success, success-info and
    /// "memory needed" codes, and reserved codes.
    pub const fn from_code(code: u32) -> Option<SvsmError> {
        Some(match code {
            SVSM_ERR_INCOMPLETE => SvsmError::Incomplete,
            SVSM_ERR_UNSUPPORTED_PROTOCOL => SvsmError::UnsupportedProtocol,
            SVSM_ERR_UNSUPPORTED_CALL => SvsmError::UnsupportedCall,
            SVSM_ERR_INVALID_ADDRESS => SvsmError::InvalidAddress,
            SVSM_ERR_INVALID_FORMAT => SvsmError::InvalidFormat,
            SVSM_ERR_INVALID_PARAMETER => SvsmError::InvalidParameter,
            SVSM_ERR_INVALID_REQUEST => SvsmError::InvalidRequest,
            SVSM_ERR_BUSY => SvsmError::Busy,
            _ => match ProtocolError::new(code) {
                Some(e) => SvsmError::Protocol(e),
                None => return None,
            },
        })
    }

    /// The spec's name of the code, for logs and test output.
    pub const fn name(self) -> &'static str {
        match self {
            SvsmError::Incomplete => "SVSM_ERR_INCOMPLETE",
            SvsmError::UnsupportedProtocol => "SVSM_ERR_UNSUPPORTED_PROTOCOL",
            SvsmError::UnsupportedCall => "SVSM_ERR_UNSUPPORTED_CALL",
            SvsmError::InvalidAddress => "SVSM_ERR_INVALID_ADDRESS",
            SvsmError::InvalidFormat => "SVSM_ERR_INVALID_FORMAT",
            SvsmError::InvalidParameter => "SVSM_ERR_INVALID_PARAMETER",
            SvsmError::InvalidRequest => "SVSM_ERR_INVALID_REQUEST",
            SvsmError::Busy => "SVSM_ERR_BUSY",
            SvsmError::Protocol(_) => "protocol-defined error",
        }
    }
}

// ---------------------------------------------------------------------------
// Request lists (spec §6.2, §6.5, §6.6)
// ---------------------------------------------------------------------------

/// Header of a PVALIDATE or DEPOSIT_MEM request list. The entries (u64
/// each) follow at offset 8; the whole list must lie within one 4 KiB page.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct ListHeader {
    /// Number of entries (at least 1).
    pub entries: u16,
    /// Index of the next entry to process (less than `entries`); the SVSM
    /// advances it. On success it equals `entries`; on an error it is the
    /// failing entry.
    pub next: u16,
    /// Reserved.
    pub reserved: u32,
}

/// Size of a [`ListHeader`] (and of a [`WithdrawListHeader`]).
pub const LIST_HEADER_SIZE: u64 = 8;
/// Size of one list entry.
pub const LIST_ENTRY_SIZE: u64 = 8;
/// Most entries a list starting at the beginning of a page can hold.
pub const LIST_MAX_ENTRIES: u64 = (PAGE_SIZE - LIST_HEADER_SIZE) / LIST_ENTRY_SIZE;

const _: () = {
    assert!(core::mem::size_of::<ListHeader>() == LIST_HEADER_SIZE as usize);
    assert!(core::mem::offset_of!(ListHeader, entries) == 0);
    assert!(core::mem::offset_of!(ListHeader, next) == 2);
    assert!(core::mem::offset_of!(ListHeader, reserved) == 4);
    assert!(LIST_MAX_ENTRIES == 511);
};

/// How many entries a list whose header is at `list_gpa` can hold without
/// crossing into the next page (0 if not even the header fits). Lists are
/// 8-byte aligned; the caller checks that separately.
pub const fn list_capacity(list_gpa: u64) -> u64 {
    let room = PAGE_SIZE - list_gpa % PAGE_SIZE;
    if room < LIST_HEADER_SIZE { 0 } else { (room - LIST_HEADER_SIZE) / LIST_ENTRY_SIZE }
}

/// Page size of a PVALIDATE or DEPOSIT_MEM entry (bits [1:0]).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB.
    Size4K = 0,
    /// 2 MiB; the GPA must be 2 MiB aligned.
    Size2M = 1,
}

impl PageSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_SIZE,
            PageSize::Size2M => LARGE_PAGE_SIZE,
        }
    }

    /// Decodes the 2-bit size field; 2 and 3 are reserved.
    pub const fn from_bits(bits: u64) -> Option<PageSize> {
        match bits & 3 {
            0 => Some(PageSize::Size4K),
            1 => Some(PageSize::Size2M),
            _ => None,
        }
    }
}

const ENTRY_SIZE_MASK: u64 = 0x3;
const ENTRY_GFN_MASK: u64 = !0xFFF;
const PVALIDATE_ACTION_VALIDATE: u64 = 1 << 2;
const PVALIDATE_IGNORE_CF: u64 = 1 << 3;
const PVALIDATE_RESERVED_MASK: u64 = 0xFF0;
const DEPOSIT_RESERVED_MASK: u64 = 0xFFC;

/// One PVALIDATE list entry: [1:0] page size, [2] action (1 validate, 0
/// invalidate), [3] ignore CF ("already in that state" is not an error),
/// [11:4] reserved, [63:12] GFN.
#[repr(transparent)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PvalidateEntry(pub u64);

impl PvalidateEntry {
    /// An entry for the page at `gpa` (its low 12 bits are dropped).
    pub const fn new(gpa: u64, size: PageSize, validate: bool, ignore_cf: bool) -> PvalidateEntry {
        let mut raw = (gpa & ENTRY_GFN_MASK) | size as u64;
        if validate {
            raw |= PVALIDATE_ACTION_VALIDATE;
        }
        if ignore_cf {
            raw |= PVALIDATE_IGNORE_CF;
        }
        PvalidateEntry(raw)
    }

    /// The page size, `None` for the reserved values 2 and 3.
    pub const fn page_size(self) -> Option<PageSize> {
        PageSize::from_bits(self.0 & ENTRY_SIZE_MASK)
    }

    /// Whether the entry validates (true) or invalidates (false) the page.
    pub const fn validate(self) -> bool {
        self.0 & PVALIDATE_ACTION_VALIDATE != 0
    }

    /// Whether "the page already is in that state" counts as success.
    pub const fn ignore_cf(self) -> bool {
        self.0 & PVALIDATE_IGNORE_CF != 0
    }

    /// The reserved bits [11:4] as they are in the entry (must be 0).
    pub const fn reserved_bits(self) -> u64 {
        self.0 & PVALIDATE_RESERVED_MASK
    }

    /// GPA of the page (the GFN shifted back; alignment to the page size is
    /// for the caller to check).
    pub const fn gpa(self) -> u64 {
        self.0 & ENTRY_GFN_MASK
    }
}

/// One DEPOSIT_MEM list entry: [1:0] page size, [11:2] reserved, [63:12]
/// GFN.
#[repr(transparent)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct DepositEntry(pub u64);

impl DepositEntry {
    /// An entry for the page at `gpa` (its low 12 bits are dropped).
    pub const fn new(gpa: u64, size: PageSize) -> DepositEntry {
        DepositEntry((gpa & ENTRY_GFN_MASK) | size as u64)
    }

    /// The page size, `None` for the reserved values 2 and 3.
    pub const fn page_size(self) -> Option<PageSize> {
        PageSize::from_bits(self.0 & ENTRY_SIZE_MASK)
    }

    /// The reserved bits [11:2] as they are in the entry (must be 0).
    pub const fn reserved_bits(self) -> u64 {
        self.0 & DEPOSIT_RESERVED_MASK
    }

    /// GPA of the page.
    pub const fn gpa(self) -> u64 {
        self.0 & ENTRY_GFN_MASK
    }
}

/// Header of a WITHDRAW_MEM list, written by the SVSM: the number of 4 KiB
/// page GPAs (u64 each) that follow at offset 8. The list must not cross a
/// 4 KiB boundary; 0 entries when there is nothing to withdraw.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct WithdrawListHeader {
    /// Number of GPAs written.
    pub count: u16,
    /// Unused.
    pub reserved: [u8; 6],
}

const _: () = {
    assert!(core::mem::size_of::<WithdrawListHeader>() == LIST_HEADER_SIZE as usize);
    assert!(core::mem::offset_of!(WithdrawListHeader, count) == 0);
};

// ---------------------------------------------------------------------------
// QUERY_PROTOCOL (spec §6.7)
// ---------------------------------------------------------------------------

/// RCX for QUERY_PROTOCOL: the protocol and the version the guest wants.
pub const fn query_protocol_request(protocol: u32, version: u32) -> u64 {
    ((protocol as u64) << 32) | version as u64
}

/// The (protocol, version) a QUERY_PROTOCOL request asks about.
pub const fn split_query_protocol_request(rcx: u64) -> (u32, u32) {
    ((rcx >> 32) as u32, rcx as u32)
}

/// The version range of a supported protocol, as QUERY_PROTOCOL returns it
/// in RCX: `max << 32 | min`; RCX = 0 means "not supported".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolVersions {
    /// Lowest supported version.
    pub min: u32,
    /// Highest supported version.
    pub max: u32,
}

impl ProtocolVersions {
    /// The RCX value for this range.
    pub const fn encode(self) -> u64 {
        ((self.max as u64) << 32) | self.min as u64
    }

    /// Decodes a QUERY_PROTOCOL answer; `None` for "not supported" (0).
    pub const fn decode(rcx: u64) -> Option<ProtocolVersions> {
        if rcx == 0 {
            None
        } else {
            Some(ProtocolVersions { min: rcx as u32, max: (rcx >> 32) as u32 })
        }
    }

    /// Whether `version` lies in the range.
    pub const fn contains(self, version: u32) -> bool {
        version >= self.min && version <= self.max
    }
}

// ---------------------------------------------------------------------------
// CONFIGURE_VTOM (spec §6.8)
// ---------------------------------------------------------------------------

/// RCX bits of CONFIGURE_VTOM.
///
/// The query form is RCX = [`vtom::QUERY`] alone. Its answer in RCX:
/// [`vtom::RECONFIGURABLE`] and the required vTOM alignment as a power of
/// two in [`vtom::ALIGNMENT_SHIFT_MASK`]; 0 means vTOM cannot be configured.
/// (The spec also returns the minimum and maximum vTOM in further registers;
/// which ones is UNCONFIRMED, see snp-svsm.md §7.5. They are only meaningful
/// when RECONFIGURABLE is set, which this SVSM never sets.)
pub mod vtom {
    /// Bit 0: query (1) or configure (0).
    pub const QUERY: u64 = 1 << 0;
    /// Configure form, bit 1: enable (1) or disable (0) vTOM.
    /// Query answer, bit 1: vTOM can be reconfigured.
    pub const ENABLE: u64 = 1 << 1;
    /// Query answer: vTOM can be reconfigured (same bit as [`ENABLE`]).
    pub const RECONFIGURABLE: u64 = 1 << 1;
    /// Configure form, bit 2: also load CR3 from RDX.
    pub const LOAD_CR3: u64 = 1 << 2;
    /// Configure form, bit 3: also load RIP from R8.
    pub const LOAD_RIP: u64 = 1 << 3;
    /// Configure form, bit 4: also load RSP from R9.
    pub const LOAD_RSP: u64 = 1 << 4;
    /// Configure form, bits [11:5]: reserved, must be 0.
    pub const CONFIGURE_RESERVED_MASK: u64 = 0xFE0;
    /// Configure form, bits [63:12]: the new vTOM (0 when disabling).
    pub const CONFIGURE_VTOM_MASK: u64 = !0xFFF;
    /// Query form: every bit but [`QUERY`] is reserved.
    pub const QUERY_RESERVED_MASK: u64 = !QUERY;
    /// Query answer, bits [19:12]: required vTOM alignment, log2.
    pub const ALIGNMENT_SHIFT_MASK: u64 = 0xF_F000;
    /// Position of the alignment field.
    pub const ALIGNMENT_SHIFT_SHIFT: u32 = 12;
}

// ---------------------------------------------------------------------------
// vTPM protocol (protocol 2, spec §8)
// ---------------------------------------------------------------------------

/// SVSM_VTPM_QUERY: RCX = bitmap of the platform commands served, RDX =
/// features (0).
pub const VTPM_QUERY: u32 = 0;
/// SVSM_VTPM_CMD: RCX = GPA of a buffer holding a [`VtpmCommandHeader`] and
/// the command; the response ([`VtpmResponseHeader`] and its bytes) is
/// written over it.
pub const VTPM_CMD: u32 = 1;
/// The mssim platform command TPM_SEND_COMMAND (the only one defined for
/// the SVSM; bit 8 of VTPM_QUERY's bitmap).
pub const TPM_SEND_COMMAND: u32 = 8;
/// Size of the VTPM_CMD request/response buffer (one page).
pub const VTPM_BUFFER_SIZE: usize = PAGE_SIZE as usize;

/// The TPM_SEND_COMMAND request header (spec Tables 15 and 16, packed,
/// little-endian); the TPM command bytes (big-endian, TPM 2.0 Part 3)
/// follow.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VtpmCommandHeader {
    /// The platform command ([`TPM_SEND_COMMAND`]).
    pub command: u32,
    /// The locality the command runs at (0).
    pub locality: u8,
    /// Bytes of TPM command that follow.
    pub size: u32,
}

/// The TPM_SEND_COMMAND response header (spec Table 17); the TPM response
/// bytes follow.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VtpmResponseHeader {
    /// Bytes of TPM response that follow.
    pub size: u32,
}

const _: () = {
    assert!(core::mem::size_of::<VtpmCommandHeader>() == 9);
    assert!(core::mem::offset_of!(VtpmCommandHeader, locality) == 4);
    assert!(core::mem::offset_of!(VtpmCommandHeader, size) == 5);
    assert!(core::mem::size_of::<VtpmResponseHeader>() == 4);
};

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn vtpm_headers_are_the_spec_tables_bytes() {
        // Table 16: command 8 @0, locality @4, size @5, packed.
        let header = VtpmCommandHeader { command: TPM_SEND_COMMAND, locality: 0, size: 0x0C };
        assert_eq!(header.as_bytes(), &[8, 0, 0, 0, 0, 0x0C, 0, 0, 0]);
        let (response, rest) =
            VtpmResponseHeader::read_from_prefix(&[0x0A, 0, 0, 0, 0x80, 0x01][..]).unwrap();
        assert_eq!(({ response.size }, rest), (10, &[0x80, 0x01][..]));
        assert_eq!(request_rax(PROTOCOL_VTPM, VTPM_CMD), 0x0000_0002_0000_0001);
    }

    #[test]
    fn calling_area_bytes_match_the_spec_table() {
        // Spec §5.1: CALL_PENDING @0, MEM_AVAILABLE @1, reserved @2..8,
        // buffer from 8 to the end of the page.
        let mut ca = CallingArea::new_zeroed();
        ca.call_pending = CALL_PENDING;
        ca.mem_available = 1;
        ca.buffer[0] = 0xAA;
        ca.buffer[CALLING_AREA_BUFFER_SIZE - 1] = 0xBB;
        let b = ca.as_bytes();
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[..9], &[1, 1, 0, 0, 0, 0, 0, 0, 0xAA]);
        assert_eq!(b[4095], 0xBB);
    }

    #[test]
    fn request_rax_packs_protocol_high_call_low() {
        assert_eq!(request_rax(PROTOCOL_CORE, CoreCall::QueryProtocol as u32), 6);
        assert_eq!(request_rax(PROTOCOL_VTPM, 1), 0x0000_0002_0000_0001);
        assert_eq!(split_request_rax(0x0000_0001_0000_0000), (PROTOCOL_ATTEST, 0));
        for (n, call) in CoreCall::ALL.iter().enumerate() {
            assert_eq!(*call as usize, n);
            assert_eq!(CoreCall::from_u32(n as u32), Some(*call));
        }
        assert_eq!(CoreCall::from_u32(8), None);
        assert_eq!(CoreCall::from_u32(u32::MAX), None);
    }

    #[test]
    fn result_codes_match_the_spec_table() {
        // Spec §5.3 table, and the values Linux and OVMF use.
        let table = [
            (SvsmError::Incomplete, 0x8000_0000),
            (SvsmError::UnsupportedProtocol, 0x8000_0001),
            (SvsmError::UnsupportedCall, 0x8000_0002),
            (SvsmError::InvalidAddress, 0x8000_0003),
            (SvsmError::InvalidFormat, 0x8000_0004),
            (SvsmError::InvalidParameter, 0x8000_0005),
            (SvsmError::InvalidRequest, 0x8000_0006),
            (SvsmError::Busy, 0x8000_0007),
        ];
        for (error, code) in table {
            assert_eq!(error.code(), code);
            assert_eq!(SvsmError::from_code(code), Some(error));
        }
        assert_eq!(SVSM_ERR_CORE_FAIL_INPUT, 0x8000_1001);
        assert_eq!(SVSM_ERR_CORE_FAIL_INUSE, 0x8000_1003);
        assert_eq!(SVSM_ERR_CORE_FAIL_SIZEMISMATCH, 0x8000_1006);
        assert_eq!(SVSM_ERR_CORE_FAIL_UNCHANGED, 0x8000_1010);
        assert_eq!(SvsmError::core_instruction(6).code(), 0x8000_1006);
        assert_eq!(
            SvsmError::from_code(0xFFFF_FFFF),
            Some(SvsmError::Protocol(ProtocolError(0xFFFF_FFFF)))
        );
        for not_an_error in [SVSM_SUCCESS, 0x1000, 0x4000_0001, 0x8000_0008, 0x8000_0FFF] {
            assert_eq!(SvsmError::from_code(not_an_error), None, "{not_an_error:#x}");
        }
        assert_eq!(memory_needed(3), Some(0x4000_0003));
        assert_eq!(memory_needed(0), None);
        assert_eq!(memory_needed(0x4000_0000), None);
    }

    #[test]
    fn pvalidate_list_bytes_match_the_spec_table() {
        // Spec §6.2: u16 entries @0, u16 next @2, reserved u32 @4, entries
        // from 8: [1:0] size, [2] action, [3] ignore CF, [63:12] GFN.
        let mut list = [0u8; 24];
        let header = ListHeader { entries: 2, next: 1, reserved: 0 };
        list[..8].copy_from_slice(header.as_bytes());
        let validate_2m = PvalidateEntry::new(0x20_0000, PageSize::Size2M, true, true);
        let invalidate_4k = PvalidateEntry::new(0x1234_5000, PageSize::Size4K, false, false);
        list[8..16].copy_from_slice(validate_2m.as_bytes());
        list[16..24].copy_from_slice(invalidate_4k.as_bytes());
        assert_eq!(
            list,
            [
                0x02, 0x00, 0x01, 0x00, 0, 0, 0, 0, // header
                0x0D, 0x00, 0x20, 0x00, 0, 0, 0, 0, // 2M | validate | ignore CF @ 2 MiB
                0x00, 0x50, 0x34, 0x12, 0, 0, 0, 0, // 4K invalidate @ 0x1234_5000
            ]
        );
        assert_eq!(validate_2m.page_size(), Some(PageSize::Size2M));
        assert!(validate_2m.validate() && validate_2m.ignore_cf());
        assert_eq!(validate_2m.gpa(), 0x20_0000);
        assert!(!invalidate_4k.validate() && !invalidate_4k.ignore_cf());
        let hostile = PvalidateEntry(0xFFFF_FFFF_FFFF_FFFF);
        assert_eq!(hostile.page_size(), None);
        assert_eq!(hostile.reserved_bits(), 0xFF0);
        assert_eq!(hostile.gpa(), 0xFFFF_FFFF_FFFF_F000);
    }

    #[test]
    fn deposit_and_withdraw_lists_match_the_spec_tables() {
        // Spec §6.5: deposit entries [1:0] size, [11:2] reserved, [63:12] GFN.
        let e = DepositEntry::new(0x40_0000, PageSize::Size2M);
        assert_eq!(e.as_bytes(), &[0x01, 0x00, 0x40, 0x00, 0, 0, 0, 0]);
        assert_eq!(DepositEntry(0x0000_0000_0001_0004).reserved_bits(), 0x4);
        assert_eq!(DepositEntry(0x0000_0000_0001_0004).gpa(), 0x1_0000);
        // Spec §6.6: withdraw list u16 count @0, 6 unused bytes, GPAs from 8.
        let h = WithdrawListHeader { count: 0x0102, reserved: [0; 6] };
        assert_eq!(h.as_bytes(), &[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn list_capacity_stops_at_the_page_end() {
        assert_eq!(list_capacity(0x1000), 511);
        assert_eq!(list_capacity(0x1008), 510);
        assert_eq!(list_capacity(0x1FF0), 1);
        assert_eq!(list_capacity(0x1FF8), 0, "only the header fits");
        assert_eq!(list_capacity(0x1FFC), 0, "not even the header fits");
        assert_eq!(list_capacity(!7), 0);
    }

    #[test]
    fn query_protocol_encoding() {
        assert_eq!(query_protocol_request(PROTOCOL_VTPM, 1), 0x0000_0002_0000_0001);
        assert_eq!(split_query_protocol_request(0x0000_0001_0000_0003), (1, 3));
        let core = ProtocolVersions { min: 1, max: 1 };
        assert_eq!(core.encode(), 0x0000_0001_0000_0001);
        assert_eq!(
            ProtocolVersions::decode(0x0000_0003_0000_0001),
            Some(ProtocolVersions { min: 1, max: 3 })
        );
        assert_eq!(ProtocolVersions::decode(0), None);
        assert!(core.contains(1) && !core.contains(2) && !core.contains(0));
    }

    #[test]
    fn configure_vtom_bits() {
        assert_eq!(
            vtom::QUERY | vtom::ENABLE | vtom::LOAD_CR3 | vtom::LOAD_RIP | vtom::LOAD_RSP,
            0x1F
        );
        assert_eq!(vtom::CONFIGURE_RESERVED_MASK | 0x1F | vtom::CONFIGURE_VTOM_MASK, u64::MAX);
        assert_eq!(vtom::CONFIGURE_RESERVED_MASK & (0x1F | vtom::CONFIGURE_VTOM_MASK), 0);
        // A 1 MiB alignment answer: 20 in bits [19:12].
        assert_eq!((20u64 << vtom::ALIGNMENT_SHIFT_SHIFT) & !vtom::ALIGNMENT_SHIFT_MASK, 0);
    }
}
