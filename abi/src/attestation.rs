//! SEV-SNP attestation on the wire: the ATTESTATION_REPORT the PSP signs,
//! the encrypted guest-message header and the MSG_REPORT_REQ/RSP payloads
//! that carry it, the extended-report certificate table, the SVSM services
//! manifest, the attestation protocol's operation structures, and the
//! development PSP's key hand-over.
//!
//! The SVSM kernel (client side, and the development PSP of the dev
//! platform), the test guest and the host-side verifier all read and write
//! these bytes, so each layout is written once here, with compile-time
//! offset checks and tests against known bytes.
//!
//! Sources (snp-svsm.md §6, §7.6, checked against Linux
//! `arch/x86/include/asm/sev.h`/`include/uapi/linux/sev-guest.h`, virtee
//! `sev` `firmware/guest/types/snp.rs` and a real Milan report):
//! - GUID byte order differs between the two tables here. The certificate
//!   table stores GUIDs in RFC 4122 (big-endian) order, as AMD's sev-tool
//!   (`uuid_parse`), virtee `sev` (`Uuid::as_bytes`) and the hosts that
//!   fill it do; snp-svsm.md §6.7 says "UEFI mixed-endian", which is wrong.
//!   The SVSM services manifest and the service GUID of
//!   ATTEST_SINGLE_SERVICE use the UEFI mixed-endian order (Linux `guid_t`,
//!   COCONUT `to_bytes_le`).
//!
//! Nothing here trusts its input: every parser bounds-checks and returns an
//! error; nothing panics on hostile bytes.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// ---------------------------------------------------------------------------
// GUIDs
// ---------------------------------------------------------------------------

/// A GUID by its fields (`aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee`), with both
/// byte orders it is stored in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid {
    a: u32,
    b: u16,
    c: u16,
    d: u16,
    e: u64,
}

impl Guid {
    /// The GUID `a-b-c-d-e` (`e` holds 48 bits).
    pub const fn new(a: u32, b: u16, c: u16, d: u16, e: u64) -> Guid {
        Guid { a, b, c, d, e: e & 0xFFFF_FFFF_FFFF }
    }

    /// UEFI mixed-endian bytes: the first three fields little-endian.
    pub const fn to_uefi_bytes(self) -> [u8; 16] {
        let (a, b, c) = (self.a.to_le_bytes(), self.b.to_le_bytes(), self.c.to_le_bytes());
        let (d, e) = (self.d.to_be_bytes(), self.e.to_be_bytes());
        [
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], e[2], e[3], e[4], e[5],
            e[6], e[7],
        ]
    }

    /// RFC 4122 bytes: every field big-endian.
    pub const fn to_rfc4122_bytes(self) -> [u8; 16] {
        let (a, b, c) = (self.a.to_be_bytes(), self.b.to_be_bytes(), self.c.to_be_bytes());
        let (d, e) = (self.d.to_be_bytes(), self.e.to_be_bytes());
        [
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], e[2], e[3], e[4], e[5],
            e[6], e[7],
        ]
    }

    /// The GUID stored in UEFI mixed-endian order.
    pub const fn from_uefi_bytes(bytes: [u8; 16]) -> Guid {
        let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, e0, e1, e2, e3, e4, e5] = bytes;
        Guid {
            a: u32::from_le_bytes([a0, a1, a2, a3]),
            b: u16::from_le_bytes([b0, b1]),
            c: u16::from_le_bytes([c0, c1]),
            d: u16::from_be_bytes([d0, d1]),
            e: u64::from_be_bytes([0, 0, e0, e1, e2, e3, e4, e5]),
        }
    }

    /// The GUID stored in RFC 4122 order.
    pub const fn from_rfc4122_bytes(bytes: [u8; 16]) -> Guid {
        let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, e0, e1, e2, e3, e4, e5] = bytes;
        Guid {
            a: u32::from_be_bytes([a0, a1, a2, a3]),
            b: u16::from_be_bytes([b0, b1]),
            c: u16::from_be_bytes([c0, c1]),
            d: u16::from_be_bytes([d0, d1]),
            e: u64::from_be_bytes([0, 0, e0, e1, e2, e3, e4, e5]),
        }
    }

    /// The all-zero GUID.
    pub const NIL: Guid = Guid::new(0, 0, 0, 0, 0);
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", self.a, self.b, self.c, self.d, self.e)
    }
}

// ---------------------------------------------------------------------------
// ATTESTATION_REPORT (SNP firmware ABI, report version 2..5)
// ---------------------------------------------------------------------------

/// Size of an ATTESTATION_REPORT.
pub const REPORT_SIZE: usize = 0x4A0;
/// The signature covers bytes `0..REPORT_SIGNED_SIZE`.
pub const REPORT_SIGNED_SIZE: usize = 0x2A0;
/// The report version the development PSP writes (CPUID fields present,
/// mitigation vectors reserved).
pub const REPORT_VERSION_DEV: u32 = 3;
/// Oldest report version with the CPUID family/model/stepping fields.
pub const REPORT_VERSION_CPUID: u32 = 3;
/// Oldest report version with the launch/current mitigation vectors.
pub const REPORT_VERSION_MIT_VECTORS: u32 = 5;
/// `signature_algo`: ECDSA P-384 with SHA-384.
pub const SIGNATURE_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Bytes of each of R and S in the report (little-endian, zero-padded).
pub const SIGNATURE_COMPONENT_SIZE: usize = 72;

/// Guest policy bits (`policy`, and the launch policy).
pub mod policy {
    /// Bits [7:0]: minimum firmware ABI minor version.
    pub const ABI_MINOR_MASK: u64 = 0xFF;
    /// Bits [15:8]: minimum firmware ABI major version.
    pub const ABI_MAJOR_SHIFT: u32 = 8;
    /// SMT is allowed.
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be one.
    pub const RESERVED_ONE: u64 = 1 << 17;
    /// Association with a migration agent is allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging is allowed (the host can read and write guest memory).
    pub const DEBUG: u64 = 1 << 19;
    /// The guest may run on one socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// CXL may be populated with guest memory.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// AES-256-XTS memory encryption is required.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// Running average power limit must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Ciphertext hiding must be enabled.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Guest page swapping is disabled.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
    /// Bits no defined policy uses (must be zero).
    pub const UNDEFINED_MASK: u64 = !((1 << 26) - 1);
}

/// `platform_info` bits.
pub mod platform_info {
    /// SMT is enabled.
    pub const SMT_EN: u64 = 1 << 0;
    /// Transparent SME is enabled.
    pub const TSME_EN: u64 = 1 << 1;
    /// The platform uses error-correcting memory.
    pub const ECC_EN: u64 = 1 << 2;
    /// RAPL is disabled.
    pub const RAPL_DIS: u64 = 1 << 3;
    /// Ciphertext hiding is enabled.
    pub const CIPHERTEXT_HIDING_EN: u64 = 1 << 4;
    /// The RMP alias check completed.
    pub const ALIAS_CHECK_COMPLETE: u64 = 1 << 5;
}

/// `key_info` bits.
pub mod key_info {
    /// The digest of the author key is present in `author_key_digest`.
    pub const AUTHOR_KEY_EN: u32 = 1 << 0;
    /// The chip ID is masked (all zero).
    pub const MASK_CHIP_KEY: u32 = 1 << 1;
    /// Bits [4:2]: which key signed the report.
    pub const SIGNING_KEY_SHIFT: u32 = 2;
    /// Mask of the signing-key field (after shifting).
    pub const SIGNING_KEY_MASK: u32 = 0x7;
    /// Signing key: the VCEK.
    pub const SIGNING_KEY_VCEK: u32 = 0;
    /// Signing key: the VLEK.
    pub const SIGNING_KEY_VLEK: u32 = 1;
    /// Signing key: none (the report is unsigned).
    pub const SIGNING_KEY_NONE: u32 = 7;
}

/// A firmware version as the report stores it: build, minor, major.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct FirmwareVersion {
    /// Build number.
    pub build: u8,
    /// Minor version.
    pub minor: u8,
    /// Major version.
    pub major: u8,
}

/// The report's signature: R and S of ECDSA P-384, little-endian.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReportSignature {
    /// R, little-endian, zero-padded to 72 bytes.
    pub r: [u8; SIGNATURE_COMPONENT_SIZE],
    /// S, little-endian, zero-padded to 72 bytes.
    pub s: [u8; SIGNATURE_COMPONENT_SIZE],
    /// Reserved.
    pub reserved: [u8; 368],
}

impl ReportSignature {
    /// The signature from big-endian 48-byte R and S (what ECDSA libraries
    /// produce).
    pub fn from_big_endian(r: &[u8; 48], s: &[u8; 48]) -> ReportSignature {
        let mut signature = ReportSignature::new_zeroed_value();
        for (dst, src) in signature.r.iter_mut().zip(r.iter().rev()) {
            *dst = *src;
        }
        for (dst, src) in signature.s.iter_mut().zip(s.iter().rev()) {
            *dst = *src;
        }
        signature
    }

    /// R and S as big-endian 48-byte integers, or `None` if either does not
    /// fit in 48 bytes (non-zero padding).
    pub fn to_big_endian(&self) -> Option<([u8; 48], [u8; 48])> {
        Some((component_to_big_endian(&self.r)?, component_to_big_endian(&self.s)?))
    }

    fn new_zeroed_value() -> ReportSignature {
        ReportSignature {
            r: [0; SIGNATURE_COMPONENT_SIZE],
            s: [0; SIGNATURE_COMPONENT_SIZE],
            reserved: [0; 368],
        }
    }
}

fn component_to_big_endian(le: &[u8; SIGNATURE_COMPONENT_SIZE]) -> Option<[u8; 48]> {
    if le[48..].iter().any(|&b| b != 0) {
        return None;
    }
    let mut be = [0u8; 48];
    for (dst, src) in be.iter_mut().zip(le[..48].iter().rev()) {
        *dst = *src;
    }
    Some(be)
}

/// The ATTESTATION_REPORT (1184 bytes), in the layout of report version 5;
/// fields newer than a report's version read as reserved (zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct AttestationReport {
    /// Report version (2..5 known).
    pub version: u32,
    /// Guest SVN from the ID block.
    pub guest_svn: u32,
    /// The guest policy ([`policy`]).
    pub policy: u64,
    /// Family ID from the ID block.
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    pub image_id: [u8; 16],
    /// The VMPL the report was requested for.
    pub vmpl: u32,
    /// [`SIGNATURE_ALGO_ECDSA_P384_SHA384`].
    pub signature_algo: u32,
    /// The platform's current TCB ([`TcbVersion`]).
    pub current_tcb: u64,
    /// [`platform_info`] bits.
    pub platform_info: u64,
    /// [`key_info`] bits.
    pub key_info: u32,
    /// Reserved.
    pub reserved0: u32,
    /// Data the requester chose.
    pub report_data: [u8; 64],
    /// The launch digest.
    pub measurement: [u8; 48],
    /// Data the host gave at launch.
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key that signed the ID block (zero without one).
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key (zero unless AUTHOR_KEY_EN).
    pub author_key_digest: [u8; 48],
    /// The guest's report ID.
    pub report_id: [u8; 32],
    /// The report ID of the guest's migration agent (all ones without one).
    pub report_id_ma: [u8; 32],
    /// The TCB the signing VCEK was derived from.
    pub reported_tcb: u64,
    /// CPUID family (extended + base), version 3 and later.
    pub cpuid_family: u8,
    /// CPUID model (extended << 4 | base), version 3 and later.
    pub cpuid_model: u8,
    /// CPUID stepping, version 3 and later.
    pub cpuid_stepping: u8,
    /// Reserved.
    pub reserved1: [u8; 21],
    /// The chip's unique ID (zero if masked; Turin and later: 8 bytes).
    pub chip_id: [u8; 64],
    /// The committed TCB.
    pub committed_tcb: u64,
    /// The current firmware version.
    pub current_version: FirmwareVersion,
    /// Reserved.
    pub reserved2: u8,
    /// The committed firmware version.
    pub committed_version: FirmwareVersion,
    /// Reserved.
    pub reserved3: u8,
    /// The current TCB when the guest was launched.
    pub launch_tcb: u64,
    /// Mitigation vector at launch, version 5 and later.
    pub launch_mit_vector: u64,
    /// Current mitigation vector, version 5 and later.
    pub current_mit_vector: u64,
    /// Reserved.
    pub reserved4: [u8; 152],
    /// ECDSA P-384 signature over bytes `0..0x2A0`.
    pub signature: ReportSignature,
}

impl AttestationReport {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.as_bytes()[..REPORT_SIGNED_SIZE]
    }

    /// Which key signed the report ([`key_info`] `SIGNING_KEY_*`).
    pub fn signing_key(&self) -> u32 {
        (self.key_info >> key_info::SIGNING_KEY_SHIFT) & key_info::SIGNING_KEY_MASK
    }

    /// The processor generation the report names, if it is known: from the
    /// CPUID fields (version 3 and later), else guessed from the chip ID
    /// (Turin and later use only its first 8 bytes).
    pub fn generation(&self) -> Option<Generation> {
        if self.version >= REPORT_VERSION_CPUID {
            Generation::from_cpuid(self.cpuid_family, self.cpuid_model)
        } else if self.chip_id[8..].iter().all(|&b| b == 0)
            && self.chip_id[..8].iter().any(|&b| b != 0)
        {
            Some(Generation::Turin)
        } else {
            Some(Generation::Milan)
        }
    }
}

/// EPYC processor generations with SEV-SNP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// 3rd generation (family 0x19, models 0x00-0x0F).
    Milan,
    /// 4th generation (family 0x19, models 0x10-0x1F, 0xA0-0xAF).
    Genoa,
    /// 5th generation (family 0x1A, models 0x00-0x11).
    Turin,
}

impl Generation {
    /// The generation of a CPUID family and model.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Generation> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Generation::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Generation::Genoa),
            (0x1A, 0x00..=0x11) => Some(Generation::Turin),
            _ => None,
        }
    }

    /// The name AMD's key distribution service uses ("Milan", ...).
    pub fn name(self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
        }
    }

    /// How many bytes of CHIP_ID identify the chip.
    pub fn chip_id_len(self) -> usize {
        match self {
            Generation::Milan | Generation::Genoa => 64,
            Generation::Turin => 8,
        }
    }
}

/// A TCB version, decoded. Its byte layout depends on the generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcbVersion {
    /// SVN of the FMC firmware (Turin and later; 0 before).
    pub fmc: u8,
    /// SVN of the PSP bootloader.
    pub bootloader: u8,
    /// SVN of the PSP operating system.
    pub tee: u8,
    /// SVN of the SNP firmware.
    pub snp: u8,
    /// Lowest microcode patch level of all cores.
    pub microcode: u8,
}

impl TcbVersion {
    /// Decodes a TCB_VERSION of `generation`.
    pub fn decode(raw: u64, generation: Generation) -> TcbVersion {
        let b = raw.to_le_bytes();
        match generation {
            Generation::Milan | Generation::Genoa => {
                TcbVersion { fmc: 0, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }
            }
            Generation::Turin => {
                TcbVersion { fmc: b[0], bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] }
            }
        }
    }

    /// Encodes the TCB_VERSION of `generation`.
    pub fn encode(self, generation: Generation) -> u64 {
        let b = match generation {
            Generation::Milan | Generation::Genoa => {
                [self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode]
            }
            Generation::Turin => {
                [self.fmc, self.bootloader, self.tee, self.snp, 0, 0, 0, self.microcode]
            }
        };
        u64::from_le_bytes(b)
    }
}

// ---------------------------------------------------------------------------
// SNP guest messages (SNP_GUEST_REQUEST)
// ---------------------------------------------------------------------------

/// Size of the guest-message header.
pub const GUEST_MSG_HEADER_SIZE: usize = 0x60;
/// A request or response occupies one 4 KiB page.
pub const GUEST_MSG_PAGE_SIZE: usize = 0x1000;
/// Largest payload a message carries.
pub const GUEST_MSG_MAX_PAYLOAD: usize = GUEST_MSG_PAGE_SIZE - GUEST_MSG_HEADER_SIZE;
/// The additional authenticated data is the header from `algo` to its end.
pub const GUEST_MSG_AAD_OFFSET: usize = 0x30;
/// `algo`: AES-256-GCM.
pub const GUEST_MSG_ALGO_AES_256_GCM: u8 = 1;
/// `hdr_version` this layout describes.
pub const GUEST_MSG_HEADER_VERSION: u8 = 1;
/// Bytes of the AES-GCM tag (the rest of `authtag` is zero).
pub const GUEST_MSG_TAG_SIZE: usize = 16;
/// Bytes of the AES-256-GCM key (a VMPCK).
pub const VMPCK_SIZE: usize = 32;

/// Guest-message types.
pub mod msg_type {
    /// Key derivation request.
    pub const KEY_REQ: u8 = 3;
    /// Key derivation response.
    pub const KEY_RSP: u8 = 4;
    /// Attestation report request.
    pub const REPORT_REQ: u8 = 5;
    /// Attestation report response.
    pub const REPORT_RSP: u8 = 6;
}

/// The header of an SNP guest message (request or response).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct GuestMessageHeader {
    /// AES-GCM tag in the first 16 bytes; the rest zero.
    pub authtag: [u8; 32],
    /// Sequence number; also the IV.
    pub msg_seqno: u64,
    /// Reserved.
    pub reserved0: [u8; 8],
    /// [`GUEST_MSG_ALGO_AES_256_GCM`].
    pub algo: u8,
    /// [`GUEST_MSG_HEADER_VERSION`].
    pub hdr_version: u8,
    /// [`GUEST_MSG_HEADER_SIZE`].
    pub hdr_size: u16,
    /// [`msg_type`].
    pub msg_type: u8,
    /// Version of the payload format.
    pub msg_version: u8,
    /// Payload length in bytes.
    pub msg_size: u16,
    /// Reserved.
    pub reserved1: u32,
    /// Index of the VMPCK that protects the message.
    pub msg_vmpck: u8,
    /// Reserved.
    pub reserved2: [u8; 35],
}

impl GuestMessageHeader {
    /// The additional authenticated data: bytes 0x30..0x60.
    pub fn aad(&self) -> &[u8] {
        &self.as_bytes()[GUEST_MSG_AAD_OFFSET..]
    }
}

/// The AES-GCM IV of a message: the sequence number, little-endian, in
/// the first 8 of 12 bytes.
pub fn guest_msg_iv(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// MSG_REPORT_REQ payload.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReportRequest {
    /// Copied into the report's REPORT_DATA.
    pub report_data: [u8; 64],
    /// VMPL to record (at least the requester's).
    pub vmpl: u32,
    /// Bits [1:0]: [`KEY_SEL_ANY`], [`KEY_SEL_VCEK`] or [`KEY_SEL_VLEK`].
    pub key_sel: u32,
    /// Reserved, zero.
    pub reserved: [u8; 24],
}

/// `key_sel`: the VLEK if one is installed, else the VCEK.
pub const KEY_SEL_ANY: u32 = 0;
/// `key_sel`: the VCEK.
pub const KEY_SEL_VCEK: u32 = 1;
/// `key_sel`: the VLEK.
pub const KEY_SEL_VLEK: u32 = 2;
/// Version of the MSG_REPORT_REQ payload with `key_sel`.
pub const REPORT_REQ_MSG_VERSION: u8 = 1;

/// MSG_REPORT_RSP payload: this header, then the report.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReportResponseHeader {
    /// [`REPORT_STATUS_SUCCESS`] or an error.
    pub status: u32,
    /// Size of the report that follows.
    pub report_size: u32,
    /// Reserved.
    pub reserved: [u8; 24],
}

/// MSG_REPORT_RSP payload: header and report.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ReportResponse {
    /// Status and size.
    pub header: ReportResponseHeader,
    /// The report (meaningful only on success).
    pub report: AttestationReport,
}

/// MSG_REPORT_RSP status: success.
pub const REPORT_STATUS_SUCCESS: u32 = 0;
/// MSG_REPORT_RSP status: invalid parameters.
pub const REPORT_STATUS_INVALID_PARAM: u32 = 0x16;
/// MSG_REPORT_RSP status: invalid key selection.
pub const REPORT_STATUS_INVALID_KEY: u32 = 0x27;

// ---------------------------------------------------------------------------
// Extended-report certificate table (GHCB spec)
// ---------------------------------------------------------------------------

/// VCEK certificate (X.509 DER).
pub const CERT_GUID_VCEK: Guid = Guid::new(0x63da758d, 0xe664, 0x4564, 0xadc5, 0xf4b93be8accd);
/// VLEK certificate.
pub const CERT_GUID_VLEK: Guid = Guid::new(0xa8074bc2, 0xa25a, 0x483e, 0xaae6, 0x39c045a0b8a1);
/// ASK certificate.
pub const CERT_GUID_ASK: Guid = Guid::new(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f, 0x05aef327c782);
/// ARK certificate.
pub const CERT_GUID_ARK: Guid = Guid::new(0xc0b406a4, 0xa803, 0x4952, 0x9743, 0x3fb6014cd0ae);
/// Certificate revocation list.
pub const CERT_GUID_CRL: Guid = Guid::new(0x92f81bc3, 0x5811, 0x4d3d, 0x97ff, 0xd19f88dc67ea);

/// One certificate-table entry. The GUID is in RFC 4122 byte order; the
/// offset is from the start of the table's buffer.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct CertTableEntry {
    /// The certificate's GUID, RFC 4122 order.
    pub guid: [u8; 16],
    /// Offset of the certificate from the start of the buffer.
    pub offset: u32,
    /// Length of the certificate.
    pub length: u32,
}

/// Why a certificate table or services manifest was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The table has no terminating entry inside the buffer.
    Unterminated,
    /// An entry's data lies outside the buffer (entry index).
    OutOfBounds(usize),
    /// The header is malformed (manifest GUID or length).
    BadHeader,
    /// The output buffer is too small: this many bytes are needed.
    TooSmall(usize),
}

/// The entries of a certificate table (stops at the all-zero entry).
pub fn cert_table_entries(
    blob: &[u8],
) -> impl Iterator<Item = Result<(Guid, &[u8]), TableError>> + '_ {
    let mut index = 0usize;
    let mut done = false;
    core::iter::from_fn(move || {
        if done {
            return None;
        }
        let at = index * core::mem::size_of::<CertTableEntry>();
        let Some(raw) = blob.get(at..at + core::mem::size_of::<CertTableEntry>()) else {
            done = true;
            return Some(Err(TableError::Unterminated));
        };
        let entry = CertTableEntry::read_from_bytes(raw).expect("slice has the entry's size");
        if entry == CertTableEntry::default() {
            done = true;
            return None;
        }
        let item = data_range(blob, entry.offset, entry.length)
            .map(|data| (Guid::from_rfc4122_bytes(entry.guid), data))
            .ok_or(TableError::OutOfBounds(index));
        index += 1;
        done = item.is_err();
        Some(item)
    })
}

/// The certificate with `guid` in a certificate table, if present.
pub fn find_certificate(blob: &[u8], guid: Guid) -> Result<Option<&[u8]>, TableError> {
    for entry in cert_table_entries(blob) {
        let (entry_guid, data) = entry?;
        if entry_guid == guid {
            return Ok(Some(data));
        }
    }
    Ok(None)
}

/// Bytes a certificate table occupies in `blob`: its entries, the
/// terminator, and up to the end of the furthest certificate.
pub fn cert_table_extent(blob: &[u8]) -> Result<usize, TableError> {
    let entry_size = core::mem::size_of::<CertTableEntry>();
    let mut end = 0usize;
    let mut count = 0usize;
    for entry in cert_table_entries(blob) {
        let (_, data) = entry?;
        // `data` is a sub-slice of `blob`: its offset is the distance.
        end = end.max(data.as_ptr() as usize - blob.as_ptr() as usize + data.len());
        count += 1;
    }
    Ok(end.max((count + 1) * entry_size))
}

/// Bytes a certificate table of `certs` takes.
pub fn cert_table_len(certs: &[(Guid, &[u8])]) -> usize {
    (certs.len() + 1) * core::mem::size_of::<CertTableEntry>()
        + certs.iter().map(|(_, data)| data.len()).sum::<usize>()
}

/// Writes a certificate table (entries, terminator, data) into `out` and
/// returns its length.
pub fn write_cert_table(certs: &[(Guid, &[u8])], out: &mut [u8]) -> Result<usize, TableError> {
    let len = cert_table_len(certs);
    if out.len() < len || u32::try_from(len).is_err() {
        return Err(TableError::TooSmall(len));
    }
    out[..len].fill(0);
    let mut data_at = (certs.len() + 1) * core::mem::size_of::<CertTableEntry>();
    for (index, (guid, data)) in certs.iter().enumerate() {
        let entry = CertTableEntry {
            guid: guid.to_rfc4122_bytes(),
            offset: data_at as u32,
            length: data.len() as u32,
        };
        let at = index * core::mem::size_of::<CertTableEntry>();
        out[at..at + core::mem::size_of::<CertTableEntry>()].copy_from_slice(entry.as_bytes());
        out[data_at..data_at + data.len()].copy_from_slice(data);
        data_at += data.len();
    }
    Ok(len)
}

fn data_range(blob: &[u8], offset: u32, length: u32) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    blob.get(start..end)
}

// ---------------------------------------------------------------------------
// SVSM services manifest (SVSM spec §7, Table 12)
// ---------------------------------------------------------------------------

/// The GUID that starts a services manifest.
pub const SERVICES_MANIFEST_GUID: Guid =
    Guid::new(0x63849ebb, 0x3d92, 0x4670, 0xa1ff, 0x58f9c94b87bb);
/// The vTPM service (SVSM spec §8).
pub const VTPM_SERVICE_GUID: Guid = Guid::new(0xc476f1eb, 0x0123, 0x45a5, 0x9641, 0xb4e7dde5bfe3);

/// The services-manifest header. GUIDs in UEFI mixed-endian order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ManifestHeader {
    /// [`SERVICES_MANIFEST_GUID`].
    pub guid: [u8; 16],
    /// Length of the whole manifest.
    pub length: u32,
    /// Number of entries.
    pub count: u32,
}

/// One services-manifest entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct ManifestEntry {
    /// The service's GUID.
    pub guid: [u8; 16],
    /// Offset of the service's data from the start of the manifest.
    pub offset: u32,
    /// Length of the service's data (0 for a service without data).
    pub length: u32,
}

/// Bytes a services manifest of `services` takes.
pub fn manifest_len(services: &[(Guid, &[u8])]) -> usize {
    core::mem::size_of::<ManifestHeader>()
        + services.len() * core::mem::size_of::<ManifestEntry>()
        + services.iter().map(|(_, data)| data.len()).sum::<usize>()
}

/// Writes the services manifest of `services` into `out`; returns its length.
pub fn write_manifest(services: &[(Guid, &[u8])], out: &mut [u8]) -> Result<usize, TableError> {
    let len = manifest_len(services);
    if out.len() < len || u32::try_from(len).is_err() {
        return Err(TableError::TooSmall(len));
    }
    let header = ManifestHeader {
        guid: SERVICES_MANIFEST_GUID.to_uefi_bytes(),
        length: len as u32,
        count: services.len() as u32,
    };
    let header_size = core::mem::size_of::<ManifestHeader>();
    out[..header_size].copy_from_slice(header.as_bytes());
    let entry_size = core::mem::size_of::<ManifestEntry>();
    let mut data_at = header_size + services.len() * entry_size;
    for (index, (guid, data)) in services.iter().enumerate() {
        let entry = ManifestEntry {
            guid: guid.to_uefi_bytes(),
            offset: data_at as u32,
            length: data.len() as u32,
        };
        let at = header_size + index * entry_size;
        out[at..at + entry_size].copy_from_slice(entry.as_bytes());
        out[data_at..data_at + data.len()].copy_from_slice(data);
        data_at += data.len();
    }
    Ok(len)
}

/// The services of a manifest, checked: header GUID, length equal to the
/// buffer, every entry's data inside it.
pub fn manifest_entries(
    manifest: &[u8],
) -> Result<impl Iterator<Item = (Guid, &[u8])> + '_, TableError> {
    let (header, rest) =
        ManifestHeader::read_from_prefix(manifest).map_err(|_| TableError::BadHeader)?;
    if Guid::from_uefi_bytes(header.guid) != SERVICES_MANIFEST_GUID
        || usize::try_from(header.length).ok() != Some(manifest.len())
    {
        return Err(TableError::BadHeader);
    }
    let count = usize::try_from(header.count).map_err(|_| TableError::BadHeader)?;
    let entry_size = core::mem::size_of::<ManifestEntry>();
    let table = rest.get(..count.checked_mul(entry_size).ok_or(TableError::BadHeader)?);
    let table = table.ok_or(TableError::BadHeader)?;
    for (index, raw) in table.chunks_exact(entry_size).enumerate() {
        let entry = ManifestEntry::read_from_bytes(raw).expect("chunk has the entry's size");
        data_range(manifest, entry.offset, entry.length).ok_or(TableError::OutOfBounds(index))?;
    }
    Ok(table.chunks_exact(entry_size).map(move |raw| {
        let entry = ManifestEntry::read_from_bytes(raw).expect("chunk has the entry's size");
        let data = data_range(manifest, entry.offset, entry.length).expect("checked above");
        (Guid::from_uefi_bytes(entry.guid), data)
    }))
}

// ---------------------------------------------------------------------------
// Attestation protocol (protocol 1) operation structures (SVSM spec §7)
// ---------------------------------------------------------------------------

/// SVSM_ATTEST_SERVICES: a report over every service.
pub const ATTEST_SERVICES: u32 = 0;
/// SVSM_ATTEST_SINGLE_SERVICE: a report over one service.
pub const ATTEST_SINGLE_SERVICE: u32 = 1;
/// The only manifest version ATTEST_SINGLE_SERVICE defines.
pub const SERVICE_MANIFEST_VERSION: u32 = 0;

/// The attest-services operation (spec Table 11), at the GPA in RCX.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AttestServicesOp {
    /// Report buffer (page aligned).
    pub report_gpa: u64,
    /// Report buffer size.
    pub report_size: u32,
    /// Reserved, zero.
    pub reserved0: u32,
    /// Nonce.
    pub nonce_gpa: u64,
    /// Nonce size.
    pub nonce_size: u16,
    /// Reserved, zero.
    pub reserved1: [u8; 6],
    /// Manifest buffer (page aligned).
    pub manifest_gpa: u64,
    /// Manifest buffer size.
    pub manifest_size: u32,
    /// Reserved, zero.
    pub reserved2: u32,
    /// Certificate buffer (page aligned); size 0 = no certificates.
    pub certs_gpa: u64,
    /// Certificate buffer size.
    pub certs_size: u32,
    /// Reserved, zero.
    pub reserved3: u32,
}

impl AttestServicesOp {
    /// Whether every reserved field is zero.
    pub fn reserved_clear(&self) -> bool {
        self.reserved0 == 0
            && self.reserved1 == [0; 6]
            && self.reserved2 == 0
            && self.reserved3 == 0
    }
}

/// The attest-single-service operation (spec Table 13).
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct AttestSingleServiceOp {
    /// The buffers, as for ATTEST_SERVICES.
    pub services: AttestServicesOp,
    /// The service's GUID, UEFI mixed-endian.
    pub service_guid: [u8; 16],
    /// Manifest version ([`SERVICE_MANIFEST_VERSION`]).
    pub manifest_version: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

// ---------------------------------------------------------------------------
// Development PSP key hand-over (native IGVM platform only)
// ---------------------------------------------------------------------------

/// Where the xtask puts the [`DevPspParams`] in the IGVM file, for the
/// native platform only (the SNP platform never carries it): just above the
/// native firmware staging area, outside the measured boot image. The kernel
/// copies it into its own memory and wipes the pages before any guest runs.
pub const DEV_PSP_PARAMS_GPA: u64 = 0x0D00_0000;
/// Room reserved at [`DEV_PSP_PARAMS_GPA`] (header and certificate table).
pub const DEV_PSP_PARAMS_MAX_SIZE: usize = 0x4000;
/// `DevPspParams::magic`.
pub const DEV_PSP_PARAMS_MAGIC: [u8; 8] = *b"SVSMDPSP";
/// `DevPspParams::version`.
pub const DEV_PSP_PARAMS_VERSION: u32 = 1;

/// What the development PSP needs: its keys and what the real PSP would
/// know about the platform and the launch. Followed by `certs_len` bytes of
/// certificate table (ARK, ASK, VCEK) for extended requests.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct DevPspParams {
    /// [`DEV_PSP_PARAMS_MAGIC`].
    pub magic: [u8; 8],
    /// [`DEV_PSP_PARAMS_VERSION`].
    pub version: u32,
    /// Bytes of certificate table after this header.
    pub certs_len: u32,
    /// The VMPCK0 the SVSM and the development PSP share.
    pub vmpck0: [u8; VMPCK_SIZE],
    /// The development VCEK's private scalar, big-endian.
    pub vcek_private: [u8; 48],
    /// The chip ID the VCEK certificate names.
    pub chip_id: [u8; 64],
    /// The IGVM's SNP launch digest (MEASUREMENT).
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// ID_KEY_DIGEST (zero: no ID block).
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST (zero).
    pub author_key_digest: [u8; 48],
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// The guest policy of the IGVM's SNP platform.
    pub policy: u64,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// CURRENT_TCB.
    pub current_tcb: u64,
    /// REPORTED_TCB (the VCEK certificate's TCB).
    pub reported_tcb: u64,
    /// COMMITTED_TCB.
    pub committed_tcb: u64,
    /// LAUNCH_TCB.
    pub launch_tcb: u64,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// CPUID family.
    pub cpuid_family: u8,
    /// CPUID model.
    pub cpuid_model: u8,
    /// CPUID stepping.
    pub cpuid_stepping: u8,
    /// Reserved, zero.
    pub reserved0: u8,
    /// Current firmware version.
    pub current_version: FirmwareVersion,
    /// Reserved, zero.
    pub reserved1: u8,
    /// Committed firmware version.
    pub committed_version: FirmwareVersion,
    /// Reserved, zero.
    pub reserved2: u8,
}

/// Why a development-PSP hand-over was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevPspParamsError {
    /// Too short for the header.
    Truncated,
    /// No [`DEV_PSP_PARAMS_MAGIC`]: the image carries no development keys.
    BadMagic,
    /// A version this code does not understand.
    UnsupportedVersion(u32),
    /// The certificate table does not fit.
    BadCertsLength(u32),
}

impl DevPspParams {
    /// Reads the hand-over at the start of `area`: the header and its
    /// certificate table.
    pub fn parse(area: &[u8]) -> Result<(DevPspParams, &[u8]), DevPspParamsError> {
        let (params, rest) =
            DevPspParams::read_from_prefix(area).map_err(|_| DevPspParamsError::Truncated)?;
        if params.magic != DEV_PSP_PARAMS_MAGIC {
            return Err(DevPspParamsError::BadMagic);
        }
        if params.version != DEV_PSP_PARAMS_VERSION {
            return Err(DevPspParamsError::UnsupportedVersion(params.version));
        }
        let certs = usize::try_from(params.certs_len)
            .ok()
            .filter(|&len| core::mem::size_of::<DevPspParams>() + len <= DEV_PSP_PARAMS_MAX_SIZE)
            .and_then(|len| rest.get(..len))
            .ok_or(DevPspParamsError::BadCertsLength(params.certs_len))?;
        Ok((params, certs))
    }
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<AttestationReport>() == REPORT_SIZE);
    assert!(offset_of!(AttestationReport, policy) == 0x08);
    assert!(offset_of!(AttestationReport, family_id) == 0x10);
    assert!(offset_of!(AttestationReport, image_id) == 0x20);
    assert!(offset_of!(AttestationReport, vmpl) == 0x30);
    assert!(offset_of!(AttestationReport, signature_algo) == 0x34);
    assert!(offset_of!(AttestationReport, current_tcb) == 0x38);
    assert!(offset_of!(AttestationReport, platform_info) == 0x40);
    assert!(offset_of!(AttestationReport, key_info) == 0x48);
    assert!(offset_of!(AttestationReport, report_data) == 0x50);
    assert!(offset_of!(AttestationReport, measurement) == 0x90);
    assert!(offset_of!(AttestationReport, host_data) == 0xC0);
    assert!(offset_of!(AttestationReport, id_key_digest) == 0xE0);
    assert!(offset_of!(AttestationReport, author_key_digest) == 0x110);
    assert!(offset_of!(AttestationReport, report_id) == 0x140);
    assert!(offset_of!(AttestationReport, report_id_ma) == 0x160);
    assert!(offset_of!(AttestationReport, reported_tcb) == 0x180);
    assert!(offset_of!(AttestationReport, cpuid_family) == 0x188);
    assert!(offset_of!(AttestationReport, cpuid_model) == 0x189);
    assert!(offset_of!(AttestationReport, cpuid_stepping) == 0x18A);
    assert!(offset_of!(AttestationReport, chip_id) == 0x1A0);
    assert!(offset_of!(AttestationReport, committed_tcb) == 0x1E0);
    assert!(offset_of!(AttestationReport, current_version) == 0x1E8);
    assert!(offset_of!(AttestationReport, committed_version) == 0x1EC);
    assert!(offset_of!(AttestationReport, launch_tcb) == 0x1F0);
    assert!(offset_of!(AttestationReport, launch_mit_vector) == 0x1F8);
    assert!(offset_of!(AttestationReport, current_mit_vector) == 0x200);
    assert!(offset_of!(AttestationReport, signature) == REPORT_SIGNED_SIZE);
    assert!(size_of::<ReportSignature>() == 0x200);

    assert!(size_of::<GuestMessageHeader>() == GUEST_MSG_HEADER_SIZE);
    assert!(offset_of!(GuestMessageHeader, msg_seqno) == 0x20);
    assert!(offset_of!(GuestMessageHeader, algo) == GUEST_MSG_AAD_OFFSET);
    assert!(offset_of!(GuestMessageHeader, hdr_size) == 0x32);
    assert!(offset_of!(GuestMessageHeader, msg_type) == 0x34);
    assert!(offset_of!(GuestMessageHeader, msg_size) == 0x36);
    assert!(offset_of!(GuestMessageHeader, msg_vmpck) == 0x3C);
    assert!(size_of::<ReportRequest>() == 0x60);
    assert!(offset_of!(ReportRequest, vmpl) == 0x40);
    assert!(offset_of!(ReportRequest, key_sel) == 0x44);
    assert!(size_of::<ReportResponseHeader>() == 0x20);
    assert!(size_of::<ReportResponse>() == 0x20 + REPORT_SIZE);
    assert!(size_of::<ReportResponse>() <= GUEST_MSG_MAX_PAYLOAD);

    assert!(size_of::<CertTableEntry>() == 24);
    assert!(size_of::<ManifestHeader>() == 24);
    assert!(size_of::<ManifestEntry>() == 24);

    assert!(size_of::<AttestServicesOp>() == 0x40);
    assert!(offset_of!(AttestServicesOp, nonce_gpa) == 0x10);
    assert!(offset_of!(AttestServicesOp, nonce_size) == 0x18);
    assert!(offset_of!(AttestServicesOp, manifest_gpa) == 0x20);
    assert!(offset_of!(AttestServicesOp, certs_gpa) == 0x30);
    assert!(offset_of!(AttestServicesOp, certs_size) == 0x38);
    assert!(size_of::<AttestSingleServiceOp>() == 0x58);
    assert!(offset_of!(AttestSingleServiceOp, service_guid) == 0x40);
    assert!(offset_of!(AttestSingleServiceOp, manifest_version) == 0x50);

    assert!(size_of::<DevPspParams>() < DEV_PSP_PARAMS_MAX_SIZE);
    assert!(DEV_PSP_PARAMS_MAX_SIZE.is_multiple_of(crate::layout::PAGE_SIZE as usize));
    assert!(DEV_PSP_PARAMS_GPA.is_multiple_of(crate::layout::PAGE_SIZE));
    assert!(
        DEV_PSP_PARAMS_GPA
            >= crate::layout::FIRMWARE_STAGING_BASE + crate::layout::FIRMWARE_MAX_SIZE
    );
};

#[cfg(test)]
mod tests;
