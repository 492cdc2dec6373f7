//! Reads an IGVM file and turns the directives of one platform (native or
//! SEV-SNP) into a [`LoadPlan`]: the pages to import in file order, each with
//! the kind that decides how it is loaded and measured, the filled parameter
//! areas, the memory the guest requires, and the start context.
//!
//! The file is untrusted input. Every address is checked against the guest
//! layout, overlapping imports are refused, and every problem is an
//! [`IgvmLoadError`] that names what is wrong; nothing here panics on input.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::ops::Range;

use igvm::snp_defs::SevVmsa;
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader};
use igvm_defs::{
    IGVM_VHS_MEMORY_MAP_ENTRY, IGVM_VHS_PARAMETER, IgvmNativeVpContextX64, IgvmPageDataType,
    IgvmPlatformType, MemoryMapEntryType,
};
use thiserror::Error;
use zerocopy::IntoBytes;

use crate::layout::{FIRMWARE_WINDOW_SIZE, FOUR_GIB, GuestLayout, PAGE_SIZE};

/// The guest-physical address KVM requires for the SNP boot VMSA.
pub const SNP_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// Size of a 2 MiB page-data directive.
const LARGE_PAGE_SIZE: u64 = 0x20_0000;
/// Largest parameter area the launcher fills (a sanity bound on file input).
const MAX_PARAMETER_AREA: u64 = 16 << 20;
/// Largest CPU count a standalone MADT with xAPIC entries can describe.
const MAX_MADT_CPUS: u32 = 255;

/// Which IGVM platform to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// No isolation: plain KVM.
    Native,
    /// AMD SEV-SNP.
    Snp,
}

impl Platform {
    fn igvm_type(self) -> IgvmPlatformType {
        match self {
            Platform::Native => IgvmPlatformType::NATIVE,
            Platform::Snp => IgvmPlatformType::SEV_SNP,
        }
    }

    /// The name used in messages and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Native => "native",
            Platform::Snp => "snp",
        }
    }
}

/// How one imported range is loaded (and, on SNP, measured).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    /// Data from the file; measured on SNP.
    Normal,
    /// A page of zeros from the file (empty data); SNP measures it as a
    /// normal page of zeros, as the IGVM spec, QEMU and igvmmeasure do.
    Zero,
    /// Data flagged unmeasured.
    Unmeasured,
    /// The SNP secrets page (filled by the firmware).
    Secrets,
    /// The SNP CPUID page (filled by the launcher, checked by the firmware).
    Cpuid,
    /// A filled parameter area (unmeasured on SNP).
    Parameter,
}

/// One range of guest memory to import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Import {
    /// Guest-physical address (page aligned).
    pub gpa: u64,
    /// How it is loaded.
    pub kind: PageKind,
    /// Contents, a whole number of pages.
    pub data: Vec<u8>,
}

/// The SNP ID block and its authentication information, as the IGVM file
/// carries them (repacked for the firmware by [`crate::snp`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdBlockDirective {
    /// Expected launch digest.
    pub ld: [u8; 48],
    /// Family ID.
    pub family_id: [u8; 16],
    /// Image ID.
    pub image_id: [u8; 16],
    /// ID block version.
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// ID key algorithm (1 = ECDSA P-384 with SHA-384).
    pub id_key_algorithm: u32,
    /// Author key algorithm.
    pub author_key_algorithm: u32,
    /// Whether an author key is present.
    pub author_key_enabled: bool,
    /// Signature of the ID block with the ID key: R then S, 72 bytes each.
    pub id_block_signature: ([u8; 72], [u8; 72]),
    /// The ID public key: curve, Qx, Qy.
    pub id_key: (u32, [u8; 72], [u8; 72]),
    /// Signature of the ID key with the author key.
    pub id_key_signature: ([u8; 72], [u8; 72]),
    /// The author public key.
    pub author_key: (u32, [u8; 72], [u8; 72]),
}

/// The register state a platform starts vCPU 0 with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartContext {
    /// `X64NativeVpContext`.
    Native(Box<IgvmNativeVpContextX64>),
    /// The SNP VMSA (at [`SNP_VMSA_GPA`]).
    Snp(Box<SevVmsa>),
}

/// Everything a VMM needs to load one platform of an IGVM file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// The platform loaded.
    pub platform: Platform,
    /// Imports in file order.
    pub imports: Vec<Import>,
    /// RAM ranges the guest requires (not loaded; private on SNP).
    pub required: Vec<Range<u64>>,
    /// The start context of vCPU 0.
    pub start: StartContext,
    /// The SNP guest policy (SNP only).
    pub policy: Option<u64>,
    /// The SNP ID block (SNP only, optional).
    pub id_block: Option<IdBlockDirective>,
}

/// Everything that can be wrong with an IGVM file for a given platform.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IgvmLoadError {
    /// The igvm crate rejected the file (truncated, bad checksum, ...).
    #[error(
        "the IGVM file is invalid: {0} (is it truncated or corrupt? rebuild it with `cargo xtask build`)"
    )]
    Invalid(String),
    /// The file has no header for the requested platform.
    #[error(
        "the IGVM file has no {wanted} platform (it has: {found}); build one with that platform or pick another with --platform"
    )]
    NoPlatform {
        /// The platform asked for.
        wanted: &'static str,
        /// The platform types the file has.
        found: String,
    },
    /// A directive the launcher does not implement applies to the platform.
    #[error(
        "directive #{index} ({name}) is not supported by the launcher for the {platform} platform"
    )]
    UnsupportedDirective {
        /// Directive index in the file.
        index: usize,
        /// Directive name.
        name: &'static str,
        /// The platform.
        platform: &'static str,
    },
    /// A page or range lies outside guest memory.
    #[error(
        "{what} at GPA {gpa:#x} (size {size:#x}, directive #{index}) lies outside guest memory ({layout}); raise --memory or fix the file"
    )]
    OutsideMemory {
        /// What the directive loads.
        what: &'static str,
        /// Its address.
        gpa: u64,
        /// Its size.
        size: u64,
        /// Directive index.
        index: usize,
        /// The guest layout.
        layout: String,
    },
    /// Two directives load the same memory.
    #[error(
        "directive #{index} loads GPA {gpa:#x}..{end:#x}, which overlaps the range loaded by directive #{other}"
    )]
    Overlap {
        /// Directive index.
        index: usize,
        /// Start of the range.
        gpa: u64,
        /// End of the range.
        end: u64,
        /// The earlier directive.
        other: usize,
    },
    /// An address or size is not page aligned.
    #[error("directive #{index} uses an address or size that is not 4 KiB aligned ({value:#x})")]
    Unaligned {
        /// Directive index.
        index: usize,
        /// The offending value.
        value: u64,
    },
    /// A page-data type the platform cannot load.
    #[error(
        "directive #{index}: page data of type {data_type} cannot be loaded on the {platform} platform"
    )]
    BadPageType {
        /// Directive index.
        index: usize,
        /// The type.
        data_type: String,
        /// The platform.
        platform: &'static str,
    },
    /// Shared pages (loaders disagree about them).
    #[error(
        "directive #{index}: page data at GPA {gpa:#x} is flagged shared, which SNP loaders treat differently; remove the flag"
    )]
    SharedPage {
        /// Directive index.
        index: usize,
        /// Its address.
        gpa: u64,
    },
    /// A parameter directive names an area that was not declared (or was
    /// already inserted).
    #[error(
        "directive #{index} uses parameter area {area}, which is not declared or was already inserted"
    )]
    UnknownParameterArea {
        /// Directive index.
        index: usize,
        /// Area index.
        area: u32,
    },
    /// A parameter area is declared twice or has a bad size.
    #[error(
        "directive #{index}: parameter area {area} is declared twice or has a bad size ({size:#x})"
    )]
    BadParameterArea {
        /// Directive index.
        index: usize,
        /// Area index.
        area: u32,
        /// Its size.
        size: u64,
    },
    /// A parameter does not fit in its area.
    #[error(
        "directive #{index}: the {what} ({size} bytes at offset {offset:#x}) does not fit parameter area {area} ({area_size} bytes)"
    )]
    ParameterTooLarge {
        /// Directive index.
        index: usize,
        /// Which parameter.
        what: &'static str,
        /// Area index.
        area: u32,
        /// Offset in the area.
        offset: u32,
        /// Size of the parameter.
        size: usize,
        /// Size of the area.
        area_size: usize,
    },
    /// RequiredMemory names memory the guest does not have.
    #[error(
        "the IGVM file requires RAM at {gpa:#x}..{end:#x} (directive #{index}), which the guest does not have ({layout}); raise --memory"
    )]
    RequiredMemoryMissing {
        /// Directive index.
        index: usize,
        /// Start.
        gpa: u64,
        /// End.
        end: u64,
        /// The guest layout.
        layout: String,
    },
    /// The start context is missing, repeated, or for another vCPU.
    #[error("{0}")]
    BadVpContext(String),
    /// SNP-specific rules (VMSA placement, policy).
    #[error("{0}")]
    Snp(String),
    /// The requested CPU count cannot be described.
    #[error("{0} CPUs cannot be described in the MADT parameter (at most {MAX_MADT_CPUS})")]
    TooManyCpus(u32),
}

/// One platform of a parsed IGVM file: its directives in file order.
#[derive(Debug)]
pub struct IgvmImage {
    platform: Platform,
    directives: Vec<(usize, IgvmDirectiveHeader)>,
    policy: Option<u64>,
}

impl IgvmImage {
    /// Parses `bytes` and keeps the directives that apply to `platform`.
    pub fn parse(bytes: &[u8], platform: Platform) -> Result<Self, IgvmLoadError> {
        let file = IgvmFile::new_from_binary(bytes, None).map_err(|e| {
            let mut text = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            IgvmLoadError::Invalid(text)
        })?;
        let mut found = Vec::new();
        let mut mask = None;
        for header in file.platforms() {
            let IgvmPlatformHeader::SupportedPlatform(p) = header;
            found.push(format!("{:?}", p.platform_type));
            if p.platform_type == platform.igvm_type() {
                mask = Some(p.compatibility_mask);
            }
        }
        let mask = mask.ok_or_else(|| IgvmLoadError::NoPlatform {
            wanted: platform.name(),
            found: found.join(", "),
        })?;
        let policy = file.initializations().iter().find_map(|init| match init {
            IgvmInitializationHeader::GuestPolicy { policy, compatibility_mask }
                if compatibility_mask & mask != 0 =>
            {
                Some(*policy)
            }
            _ => None,
        });
        let directives = file
            .directives()
            .iter()
            .enumerate()
            .filter(|(_, d)| d.compatibility_mask().is_none_or(|m| m & mask != 0))
            .map(|(i, d)| (i, d.clone()))
            .collect();
        Ok(IgvmImage { platform, directives, policy })
    }

    /// The platform this image loads.
    pub fn platform(&self) -> Platform {
        self.platform
    }

    /// The range of page data placed in the firmware window below 4 GiB, if
    /// any (the layout backs it with a firmware region).
    pub fn firmware_range(&self) -> Option<Range<u64>> {
        let window = FOUR_GIB - FIRMWARE_WINDOW_SIZE;
        self.directives
            .iter()
            .filter_map(|(_, d)| match d {
                IgvmDirectiveHeader::PageData { gpa, flags, .. }
                    if *gpa >= window && *gpa < FOUR_GIB =>
                {
                    let size = if flags.is_2mb_page() { LARGE_PAGE_SIZE } else { PAGE_SIZE };
                    Some(*gpa..gpa.saturating_add(size))
                }
                _ => None,
            })
            .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
    }

    /// The SEV features of the SNP VMSA, if the image has one.
    pub fn vmsa_sev_features(&self) -> Option<u64> {
        self.directives.iter().find_map(|(_, d)| match d {
            IgvmDirectiveHeader::SnpVpContext { vmsa, .. } => Some(vmsa.sev_features.into_bits()),
            _ => None,
        })
    }

    /// Builds the load plan for `layout` and `cpus` vCPUs.
    pub fn plan(&self, layout: &GuestLayout, cpus: u32) -> Result<LoadPlan, IgvmLoadError> {
        let mut builder = PlanBuilder {
            platform: self.platform,
            layout,
            cpus,
            areas: BTreeMap::new(),
            claimed: BTreeMap::new(),
            imports: Vec::new(),
            required: Vec::new(),
            start: None,
            id_block: None,
            vmsa_index: None,
        };
        for (index, directive) in &self.directives {
            builder.directive(*index, directive)?;
        }
        let start = builder.start.ok_or_else(|| {
            IgvmLoadError::BadVpContext(format!(
                "the IGVM file has no start context (VP context) for vCPU 0 of the {} platform",
                self.platform.name()
            ))
        })?;
        let policy = match self.platform {
            Platform::Native => None,
            Platform::Snp => Some(check_policy(self.policy)?),
        };
        Ok(LoadPlan {
            platform: self.platform,
            imports: builder.imports,
            required: builder.required,
            start,
            policy,
            id_block: builder.id_block,
        })
    }
}

fn check_policy(policy: Option<u64>) -> Result<u64, IgvmLoadError> {
    let policy = policy.ok_or_else(|| {
        IgvmLoadError::Snp(
            "the IGVM file has no guest policy for the SNP platform (GuestPolicy header, usually 0x30000)".into(),
        )
    })?;
    if policy & (1 << 17) == 0 {
        return Err(IgvmLoadError::Snp(format!(
            "the SNP guest policy {policy:#x} lacks bit 17, which the firmware requires to be 1 (use e.g. 0x30000)"
        )));
    }
    Ok(policy)
}

struct ParameterArea {
    bytes: Vec<u8>,
}

struct PlanBuilder<'a> {
    platform: Platform,
    layout: &'a GuestLayout,
    cpus: u32,
    areas: BTreeMap<u32, ParameterArea>,
    /// Claimed ranges: start → (end, directive index).
    claimed: BTreeMap<u64, (u64, usize)>,
    imports: Vec<Import>,
    required: Vec<Range<u64>>,
    start: Option<StartContext>,
    id_block: Option<IdBlockDirective>,
    vmsa_index: Option<usize>,
}

impl PlanBuilder<'_> {
    fn directive(&mut self, index: usize, d: &IgvmDirectiveHeader) -> Result<(), IgvmLoadError> {
        match d {
            IgvmDirectiveHeader::PageData { gpa, flags, data_type, data, .. } => {
                let size = if flags.is_2mb_page() { LARGE_PAGE_SIZE } else { PAGE_SIZE };
                if flags.shared() && self.platform == Platform::Snp {
                    return Err(IgvmLoadError::SharedPage { index, gpa: *gpa });
                }
                let kind =
                    self.page_kind(index, *data_type, flags.unmeasured(), data.is_empty())?;
                let mut bytes = data.clone();
                if bytes.len() as u64 > size {
                    return Err(IgvmLoadError::Unaligned { index, value: bytes.len() as u64 });
                }
                bytes.resize(size as usize, 0);
                self.import(index, "page data", *gpa, kind, bytes)
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => {
                let n = *number_of_bytes;
                if n == 0
                    || n % PAGE_SIZE != 0
                    || n > MAX_PARAMETER_AREA
                    || initial_data.len() as u64 > n
                    || self.areas.contains_key(parameter_area_index)
                {
                    return Err(IgvmLoadError::BadParameterArea {
                        index,
                        area: *parameter_area_index,
                        size: n,
                    });
                }
                let mut bytes = initial_data.clone();
                bytes.resize(n as usize, 0);
                self.areas.insert(*parameter_area_index, ParameterArea { bytes });
                Ok(())
            }
            IgvmDirectiveHeader::VpCount(p) => {
                self.write_parameter(index, p, "VP count", &self.cpus.to_le_bytes())
            }
            IgvmDirectiveHeader::EnvironmentInfo(p) => {
                // Native: all RAM is usable as is. SNP: memory the file does
                // not describe starts shared and must be accepted by the guest.
                let shared = u32::from(self.platform == Platform::Snp);
                self.write_parameter(index, p, "environment info", &shared.to_le_bytes())
            }
            IgvmDirectiveHeader::MemoryMap(p) => {
                let map = memory_map(self.layout);
                self.write_parameter(index, p, "memory map", &map)
            }
            IgvmDirectiveHeader::Madt(p) => {
                let madt = build_madt(self.cpus)?;
                self.write_parameter(index, p, "MADT", &madt)
            }
            IgvmDirectiveHeader::ParameterInsert(insert) => {
                let area = self.areas.remove(&insert.parameter_area_index).ok_or(
                    IgvmLoadError::UnknownParameterArea {
                        index,
                        area: insert.parameter_area_index,
                    },
                )?;
                self.import(index, "parameter area", insert.gpa, PageKind::Parameter, area.bytes)
            }
            IgvmDirectiveHeader::RequiredMemory { gpa, number_of_bytes, .. } => {
                let size = u64::from(*number_of_bytes);
                check_aligned(index, *gpa)?;
                check_aligned(index, size)?;
                if !self.layout.ram_contains(*gpa, size) {
                    return Err(IgvmLoadError::RequiredMemoryMissing {
                        index,
                        gpa: *gpa,
                        end: gpa.saturating_add(size),
                        layout: self.layout.to_string(),
                    });
                }
                self.required.push(*gpa..*gpa + size);
                Ok(())
            }
            IgvmDirectiveHeader::X64NativeVpContext { vp_index, context, .. }
                if self.platform == Platform::Native =>
            {
                self.set_start(index, *vp_index, StartContext::Native(context.clone()))
            }
            IgvmDirectiveHeader::SnpVpContext { gpa, vp_index, vmsa, .. }
                if self.platform == Platform::Snp =>
            {
                if *gpa != SNP_VMSA_GPA {
                    return Err(IgvmLoadError::Snp(format!(
                        "the SNP VMSA is at GPA {gpa:#x}, but KVM requires {SNP_VMSA_GPA:#x}"
                    )));
                }
                self.vmsa_index = Some(index);
                self.set_start(index, *vp_index, StartContext::Snp(vmsa.clone()))
            }
            IgvmDirectiveHeader::SnpIdBlock {
                author_key_enabled,
                ld,
                family_id,
                image_id,
                version,
                guest_svn,
                id_key_algorithm,
                author_key_algorithm,
                id_key_signature,
                id_public_key,
                author_key_signature,
                author_public_key,
                ..
            } if self.platform == Platform::Snp => {
                self.id_block = Some(IdBlockDirective {
                    ld: *ld,
                    family_id: *family_id,
                    image_id: *image_id,
                    version: *version,
                    guest_svn: *guest_svn,
                    id_key_algorithm: *id_key_algorithm,
                    author_key_algorithm: *author_key_algorithm,
                    author_key_enabled: *author_key_enabled != 0,
                    id_block_signature: (id_key_signature.r_comp, id_key_signature.s_comp),
                    id_key: (id_public_key.curve, id_public_key.qx, id_public_key.qy),
                    id_key_signature: (author_key_signature.r_comp, author_key_signature.s_comp),
                    author_key: (
                        author_public_key.curve,
                        author_public_key.qx,
                        author_public_key.qy,
                    ),
                });
                Ok(())
            }
            other => Err(IgvmLoadError::UnsupportedDirective {
                index,
                name: directive_name(other),
                platform: self.platform.name(),
            }),
        }
    }

    fn page_kind(
        &self,
        index: usize,
        data_type: IgvmPageDataType,
        unmeasured: bool,
        empty: bool,
    ) -> Result<PageKind, IgvmLoadError> {
        let snp = self.platform == Platform::Snp;
        let kind = match data_type {
            IgvmPageDataType::NORMAL if unmeasured => PageKind::Unmeasured,
            IgvmPageDataType::NORMAL if empty => PageKind::Zero,
            IgvmPageDataType::NORMAL => PageKind::Normal,
            IgvmPageDataType::SECRETS if snp => PageKind::Secrets,
            IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF if snp => PageKind::Cpuid,
            other => {
                return Err(IgvmLoadError::BadPageType {
                    index,
                    data_type: format!("{other:?}"),
                    platform: self.platform.name(),
                });
            }
        };
        Ok(kind)
    }

    fn import(
        &mut self,
        index: usize,
        what: &'static str,
        gpa: u64,
        kind: PageKind,
        data: Vec<u8>,
    ) -> Result<(), IgvmLoadError> {
        let size = data.len() as u64;
        check_aligned(index, gpa)?;
        if let Some(vmsa) = self.vmsa_index {
            return Err(IgvmLoadError::Snp(format!(
                "directive #{index} imports memory after the SNP VMSA (directive #{vmsa}); \
                 KVM measures the VMSA last, so it must be the last import"
            )));
        }
        if !self.layout.contains(gpa, size) {
            return Err(IgvmLoadError::OutsideMemory {
                what,
                gpa,
                size,
                index,
                layout: self.layout.to_string(),
            });
        }
        let end = gpa + size;
        // The claimed range starting at or below `gpa`, and the first one
        // starting inside [gpa, end), are the only candidates for overlap.
        let before = self.claimed.range(..=gpa).next_back();
        let inside = self.claimed.range(gpa..end).next();
        for (&start, &(other_end, other)) in before.into_iter().chain(inside) {
            if start < end && gpa < other_end {
                return Err(IgvmLoadError::Overlap { index, gpa, end, other });
            }
        }
        self.claimed.insert(gpa, (end, index));
        self.imports.push(Import { gpa, kind, data });
        Ok(())
    }

    fn write_parameter(
        &mut self,
        index: usize,
        p: &IGVM_VHS_PARAMETER,
        what: &'static str,
        value: &[u8],
    ) -> Result<(), IgvmLoadError> {
        let area = self
            .areas
            .get_mut(&p.parameter_area_index)
            .ok_or(IgvmLoadError::UnknownParameterArea { index, area: p.parameter_area_index })?;
        let area_size = area.bytes.len();
        let offset = p.byte_offset as usize;
        let target = offset
            .checked_add(value.len())
            .and_then(|end| area.bytes.get_mut(offset..end))
            .ok_or(IgvmLoadError::ParameterTooLarge {
                index,
                what,
                area: p.parameter_area_index,
                offset: p.byte_offset,
                size: value.len(),
                area_size,
            })?;
        target.copy_from_slice(value);
        Ok(())
    }

    fn set_start(
        &mut self,
        index: usize,
        vp_index: u16,
        context: StartContext,
    ) -> Result<(), IgvmLoadError> {
        if vp_index != 0 {
            return Err(IgvmLoadError::BadVpContext(format!(
                "directive #{index} sets the start context of vCPU {vp_index}; the launcher starts only vCPU 0"
            )));
        }
        if self.start.is_some() {
            return Err(IgvmLoadError::BadVpContext(format!(
                "directive #{index} sets the start context of vCPU 0 a second time"
            )));
        }
        self.start = Some(context);
        Ok(())
    }
}

fn check_aligned(index: usize, value: u64) -> Result<(), IgvmLoadError> {
    if value.is_multiple_of(PAGE_SIZE) {
        Ok(())
    } else {
        Err(IgvmLoadError::Unaligned { index, value })
    }
}

/// The memory-map parameter: the RAM regions of `layout`, ascending, as
/// `IGVM_VHS_MEMORY_MAP_ENTRY` records of type MEMORY.
pub fn memory_map(layout: &GuestLayout) -> Vec<u8> {
    layout
        .ram()
        .flat_map(|r| {
            IGVM_VHS_MEMORY_MAP_ENTRY {
                starting_gpa_page_number: r.gpa / PAGE_SIZE,
                number_of_pages: r.size / PAGE_SIZE,
                entry_type: MemoryMapEntryType::MEMORY,
                flags: 0,
                reserved: 0,
            }
            .as_bytes()
            .to_vec()
        })
        .collect()
}

/// A standalone ACPI MADT listing `cpus` enabled local APICs with IDs
/// 0..cpus, at the architectural local-APIC address.
pub fn build_madt(cpus: u32) -> Result<Vec<u8>, IgvmLoadError> {
    if cpus == 0 || cpus > MAX_MADT_CPUS {
        return Err(IgvmLoadError::TooManyCpus(cpus));
    }
    let length = 44 + 8 * cpus;
    let mut t = Vec::with_capacity(length as usize);
    t.extend_from_slice(b"APIC");
    t.extend_from_slice(&length.to_le_bytes());
    t.push(4); // revision
    t.push(0); // checksum, set below
    t.extend_from_slice(b"SVSMLA"); // OEM ID
    t.extend_from_slice(b"LAUNCHER"); // OEM table ID
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"SVSM"); // creator ID
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(&0xFEE0_0000u32.to_le_bytes()); // local APIC address
    t.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    for id in 0..cpus {
        let id = u8::try_from(id).expect("cpus is at most 255");
        t.extend_from_slice(&[0, 8, id, id]); // processor local APIC
        t.extend_from_slice(&1u32.to_le_bytes()); // enabled
    }
    let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    t[9] = 0u8.wrapping_sub(sum);
    Ok(t)
}

/// A short name for a directive, for messages.
pub fn directive_name(d: &IgvmDirectiveHeader) -> &'static str {
    match d {
        IgvmDirectiveHeader::PageData { .. } => "PageData",
        IgvmDirectiveHeader::ParameterArea { .. } => "ParameterArea",
        IgvmDirectiveHeader::VpCount(_) => "VpCount",
        IgvmDirectiveHeader::EnvironmentInfo(_) => "EnvironmentInfo",
        IgvmDirectiveHeader::Srat(_) => "Srat",
        IgvmDirectiveHeader::Madt(_) => "Madt",
        IgvmDirectiveHeader::Slit(_) => "Slit",
        IgvmDirectiveHeader::Pptt(_) => "Pptt",
        IgvmDirectiveHeader::MmioRanges(_) => "MmioRanges",
        IgvmDirectiveHeader::MemoryMap(_) => "MemoryMap",
        IgvmDirectiveHeader::CommandLine(_) => "CommandLine",
        IgvmDirectiveHeader::DeviceTree(_) => "DeviceTree",
        IgvmDirectiveHeader::RequiredMemory { .. } => "RequiredMemory",
        IgvmDirectiveHeader::SnpVpContext { .. } => "SnpVpContext",
        IgvmDirectiveHeader::X64NativeVpContext { .. } => "X64NativeVpContext",
        IgvmDirectiveHeader::X64VbsVpContext { .. } => "X64VbsVpContext",
        IgvmDirectiveHeader::AArch64VbsVpContext { .. } => "AArch64VbsVpContext",
        IgvmDirectiveHeader::AArch64CcaVpContext { .. } => "AArch64CcaVpContext",
        IgvmDirectiveHeader::ParameterInsert(_) => "ParameterInsert",
        IgvmDirectiveHeader::ErrorRange { .. } => "ErrorRange",
        IgvmDirectiveHeader::SnpIdBlock { .. } => "SnpIdBlock",
        IgvmDirectiveHeader::VbsMeasurement { .. } => "VbsMeasurement",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{self, BOTH, NATIVE_MASK, SNP_MASK};
    use igvm::IgvmDirectiveHeader as D;

    const MEMORY: u64 = 512 << 20;

    fn plan_of(bytes: &[u8], platform: Platform) -> Result<LoadPlan, IgvmLoadError> {
        let image = IgvmImage::parse(bytes, platform)?;
        let layout = GuestLayout::new(MEMORY, image.firmware_range()).unwrap();
        image.plan(&layout, 1)
    }

    /// A file with the sample directives, modified by `edit`.
    fn file_with(edit: impl FnOnce(&mut Vec<D>)) -> Vec<u8> {
        let mut d = sample::sample_directives(&sample::smoke_guest());
        edit(&mut d);
        sample::serialize(sample::platforms(), vec![sample::policy(sample::POLICY)], d).unwrap()
    }

    fn u32_at(data: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap())
    }

    #[test]
    fn native_plan_has_the_native_pages_and_filled_parameters() {
        let plan = plan_of(&sample::sample_file(&sample::smoke_guest()), Platform::Native).unwrap();
        let kinds: Vec<_> = plan.imports.iter().map(|i| (i.gpa, i.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (sample::CODE_GPA, PageKind::Normal),
                (sample::STACK_GPA, PageKind::Zero),
                (sample::GENERAL_PARAMS_GPA, PageKind::Parameter),
                (sample::MEMORY_MAP_GPA, PageKind::Parameter),
                (sample::UNMEASURED_GPA, PageKind::Unmeasured),
            ]
        );
        assert!(plan.imports.iter().all(|i| i.data.len() == 4096));
        let general = &plan.imports[2].data;
        assert_eq!(u32_at(general, 0), 1, "VP count");
        assert_eq!(u32_at(general, 4), 0, "memory_is_shared on native");
        let map = &plan.imports[3].data;
        let expected = IGVM_VHS_MEMORY_MAP_ENTRY {
            starting_gpa_page_number: 0,
            number_of_pages: MEMORY / PAGE_SIZE,
            entry_type: MemoryMapEntryType::MEMORY,
            flags: 0,
            reserved: 0,
        };
        assert_eq!(&map[..24], expected.as_bytes());
        assert!(map[24..].iter().all(|b| *b == 0), "the map ends with a zero entry");
        assert_eq!(plan.required, vec![sample::REQUIRED_GPA..sample::REQUIRED_GPA + 0x20_0000]);
        assert!(
            matches!(plan.start, StartContext::Native(ref c) if c.rip == sample::CODE_GPA && c.cr0 == 0x31)
        );
        assert_eq!(plan.policy, None);
    }

    #[test]
    fn snp_plan_has_every_page_kind_and_the_policy() {
        let plan = plan_of(&sample::sample_file(&sample::smoke_guest()), Platform::Snp).unwrap();
        let kinds: Vec<_> = plan.imports.iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            vec![
                PageKind::Normal,
                PageKind::Zero,
                PageKind::Secrets,
                PageKind::Cpuid,
                PageKind::Parameter,
                PageKind::Parameter,
                PageKind::Unmeasured,
            ]
        );
        assert_eq!(u32_at(&plan.imports[4].data, 4), 1, "memory_is_shared on SNP");
        assert_eq!(plan.policy, Some(0x30000));
        assert!(matches!(plan.start, StartContext::Snp(ref v) if v.rip == sample::CODE_GPA));
    }

    #[test]
    fn truncated_and_corrupt_files_are_rejected() {
        let good = sample::sample_file(&sample::smoke_guest());
        for bad in [&good[..0], &good[..20], &good[..good.len() / 2], &good[..good.len() - 1]] {
            let err = plan_of(bad, Platform::Native).unwrap_err();
            assert!(matches!(err, IgvmLoadError::Invalid(_)), "{err}");
        }
        let mut corrupt = good.clone();
        corrupt[40] ^= 0xff; // inside the variable headers: checksum mismatch
        let err = plan_of(&corrupt, Platform::Native).unwrap_err();
        assert!(err.to_string().contains("invalid"), "{err}");
        let err = plan_of(&[0xA5; 4096], Platform::Native).unwrap_err();
        assert!(matches!(err, IgvmLoadError::Invalid(_)));
    }

    #[test]
    fn a_missing_platform_is_named() {
        let bytes = sample::serialize(
            vec![sample::platform(SNP_MASK, IgvmPlatformType::SEV_SNP)],
            vec![sample::policy(0x30000)],
            vec![
                sample::page(0x1000, SNP_MASK, IgvmPageDataType::NORMAL, b"x"),
                sample::snp_context(sample::snp_vmsa(0x1000, 0)),
            ],
        )
        .unwrap();
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert_eq!(err, IgvmLoadError::NoPlatform { wanted: "native", found: "SEV_SNP".into() });
        assert!(err.to_string().contains("no native platform"));
    }

    #[test]
    fn overlapping_pages_are_rejected() {
        let bytes = file_with(|d| {
            d.insert(
                6,
                sample::page(sample::CODE_GPA, NATIVE_MASK, IgvmPageDataType::NORMAL, b"again"),
            );
        });
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert!(
            matches!(err, IgvmLoadError::Overlap { gpa, .. } if gpa == sample::CODE_GPA),
            "{err}"
        );
        // A parameter area inserted over a page is an overlap too.
        let bytes = file_with(|d| {
            d.insert(6, sample::page(sample::MEMORY_MAP_GPA, BOTH, IgvmPageDataType::NORMAL, b"x"));
        });
        assert!(matches!(plan_of(&bytes, Platform::Snp), Err(IgvmLoadError::Overlap { .. })));
    }

    #[test]
    fn pages_and_parameters_outside_memory_are_rejected() {
        let bytes = file_with(|d| {
            d.insert(6, sample::page(MEMORY, BOTH, IgvmPageDataType::NORMAL, b"x"));
        });
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert!(matches!(err, IgvmLoadError::OutsideMemory { gpa: MEMORY, .. }), "{err}");
        assert!(err.to_string().contains("raise --memory"));
        let bytes = file_with(|d| {
            for x in d.iter_mut() {
                if let D::ParameterInsert(p) = x {
                    p.gpa = 0x7_0000_0000;
                }
            }
        });
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert!(
            matches!(err, IgvmLoadError::OutsideMemory { what: "parameter area", .. }),
            "{err}"
        );
    }

    #[test]
    fn a_memory_map_that_does_not_fit_its_area_is_rejected() {
        let bytes = file_with(|d| {
            for x in d.iter_mut() {
                if let D::MemoryMap(p) = x {
                    p.byte_offset = 4096 - 8;
                }
            }
        });
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert!(
            matches!(err, IgvmLoadError::ParameterTooLarge { what: "memory map", .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_required_memory_is_rejected() {
        let bytes = file_with(|d| {
            for x in d.iter_mut() {
                if let D::RequiredMemory { gpa, .. } = x {
                    *gpa = MEMORY - 0x1000;
                }
            }
        });
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert!(matches!(err, IgvmLoadError::RequiredMemoryMissing { .. }), "{err}");
    }

    #[test]
    fn unsupported_directives_and_page_types_are_named() {
        let bytes = file_with(|d| d.insert(2, D::CommandLine(sample::param(0, 64))));
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert!(
            matches!(err, IgvmLoadError::UnsupportedDirective { name: "CommandLine", .. }),
            "{err}"
        );
        let bytes = file_with(|d| {
            d.insert(6, sample::page(0x30_0000, NATIVE_MASK, IgvmPageDataType::SECRETS, &[]));
        });
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert!(matches!(err, IgvmLoadError::BadPageType { .. }), "{err}");
    }

    #[test]
    fn start_context_rules() {
        let bytes = file_with(|d| {
            d.retain(|x| !matches!(x, D::X64NativeVpContext { .. }));
        });
        assert!(matches!(plan_of(&bytes, Platform::Native), Err(IgvmLoadError::BadVpContext(_))));
        let bytes = file_with(|d| {
            for x in d.iter_mut() {
                if let D::X64NativeVpContext { vp_index, .. } = x {
                    *vp_index = 1;
                }
            }
        });
        let err = plan_of(&bytes, Platform::Native).unwrap_err();
        assert!(err.to_string().contains("vCPU 1"), "{err}");
    }

    #[test]
    fn snp_rules_vmsa_last_at_kvms_address_and_a_valid_policy() {
        let bytes = file_with(|d| {
            d.push(sample::page(0x30_0000, SNP_MASK, IgvmPageDataType::NORMAL, b"late"));
        });
        let err = plan_of(&bytes, Platform::Snp).unwrap_err();
        assert!(err.to_string().contains("after the SNP VMSA"), "{err}");
        let bytes = file_with(|d| {
            for x in d.iter_mut() {
                if let D::SnpVpContext { gpa, .. } = x {
                    *gpa = 0x1000;
                }
            }
        });
        let err = plan_of(&bytes, Platform::Snp).unwrap_err();
        assert!(err.to_string().contains("0xfffffffff000"), "{err}");
        let d = sample::sample_directives(&[]);
        let no_policy = sample::serialize(sample::platforms(), vec![], d.clone()).unwrap();
        let err = plan_of(&no_policy, Platform::Snp).unwrap_err();
        assert!(err.to_string().contains("no guest policy"), "{err}");
        let bad_policy =
            sample::serialize(sample::platforms(), vec![sample::policy(0x10000)], d).unwrap();
        let err = plan_of(&bad_policy, Platform::Snp).unwrap_err();
        assert!(err.to_string().contains("bit 17"), "{err}");
    }

    #[test]
    fn firmware_pages_below_4g_get_a_firmware_window() {
        let fw = FOUR_GIB - 0x10_0000;
        let bytes = file_with(|d| {
            d.insert(6, sample::page(fw, SNP_MASK, IgvmPageDataType::NORMAL, b"ovmf"));
        });
        let image = IgvmImage::parse(&bytes, Platform::Snp).unwrap();
        assert_eq!(image.firmware_range(), Some(fw..fw + 0x1000));
        assert!(plan_of(&bytes, Platform::Snp).is_ok());
        assert_eq!(image.vmsa_sev_features(), Some(1));
    }

    #[test]
    fn madt_lists_the_cpus_and_checksums_to_zero() {
        let madt = build_madt(2).unwrap();
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(u32_at(&madt, 4) as usize, madt.len());
        assert_eq!(madt.len(), 44 + 16);
        assert_eq!(madt.iter().fold(0u8, |s, b| s.wrapping_add(*b)), 0);
        assert_eq!(&madt[44..48], &[0, 8, 0, 0]);
        assert_eq!(&madt[52..56], &[0, 8, 1, 1]);
        assert_eq!(build_madt(0), Err(IgvmLoadError::TooManyCpus(0)));
        assert_eq!(build_madt(256), Err(IgvmLoadError::TooManyCpus(256)));
    }
}
