//! Assembling the IGVM file: one file, two platforms (SNP = mask bit 0,
//! native = mask bit 1), laid out exactly as `abi::layout` says, every page
//! in ascending GPA order and the SNP VMSA last (what KVM measures last).
//!
//! This is a pure function of its inputs (stage2's ELF, the stripped
//! kernel ELF, the guest firmware) so tests build images from stand-ins.

use std::collections::BTreeMap;

use abi::boot::{
    BOOT_PARAMS_MAGIC, BOOT_PARAMS_VERSION, BootParams, FirmwareInfo, MemoryRange, PlatformType,
};
use abi::elf::Elf;
use abi::layout::*;
use anyhow::{Context, Result, bail, ensure};
use igvm::{
    IgvmDirectiveHeader, IgvmFile, IgvmInitializationHeader, IgvmPlatformHeader, IgvmRevision,
};
use igvm_defs::{
    IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM, IgvmPageDataFlags,
    IgvmPageDataType, IgvmPlatformType,
};
use zerocopy::{FromZeros, IntoBytes};

use crate::firmware::{self, GuestFirmware};
use crate::{id_block, measure, start_context};
use p384::ecdsa::SigningKey;

/// Both platforms.
pub const ALL_PLATFORMS: u32 = SNP_PLATFORM_MASK | NATIVE_PLATFORM_MASK;
/// The SNP guest policy: SMT allowed (bit 16), reserved-must-be-one (bit 17).
pub const SNP_GUEST_POLICY: u64 = 0x30000;
/// IGVM parameter-area index of the general parameters (VP count, environment).
pub const GENERAL_PARAMS_AREA: u32 = 0;
/// IGVM parameter-area index of the memory map.
pub const MEMORY_MAP_AREA: u32 = 1;
/// The highest VTL of the SNP platform: 2, as COCONUT's builder sets when the
/// file carries firmware for a lower VMPL (igvm-and-launch.md §3.1).
const SNP_HIGHEST_VTL: u8 = 2;

/// What the file is built from.
pub struct ImageInputs<'a> {
    /// Stage2's ELF executable, linked at its load address.
    pub stage2_elf: &'a [u8],
    /// The SNP platform's kernel ELF file, debug info stripped; placed as
    /// is. Built without the development PSP.
    pub kernel_snp: &'a [u8],
    /// The native platform's kernel ELF file (with the development PSP the
    /// dev platform offers), placed at the same address for that platform.
    pub kernel_native: &'a [u8],
    /// The guest firmware, if any.
    pub firmware: Option<&'a GuestFirmware>,
}

/// Builds the IGVM file; with an ID key, a signed ID block carrying the
/// file's own launch digest is added before the VP contexts.
pub fn assemble(inputs: &ImageInputs<'_>, id_key: Option<&SigningKey>) -> Result<IgvmFile> {
    let mut d = directives(inputs)?;
    let file = file_from(d.clone())?;
    let Some(key) = id_key else { return Ok(file) };
    let digest = measure::measure_snp(&file)?.digest;
    let contexts_at = d.len() - 2;
    d.insert(contexts_at, id_block::directive(key, &digest, SNP_GUEST_POLICY, SNP_PLATFORM_MASK));
    file_from(d)
}

/// The directives of the file, in file order.
fn directives(inputs: &ImageInputs<'_>) -> Result<Vec<IgvmDirectiveHeader>> {
    let stage2 = Elf::parse(inputs.stage2_elf).map_err(|e| anyhow::anyhow!("stage2 ELF: {e}"))?;
    let stage2_pages = stage2_pages(&stage2)?;
    let entry = stage2.entry();
    ensure!(
        stage2_pages.keys().any(|&gpa| (gpa..gpa + PAGE_SIZE).contains(&entry)),
        "stage2's entry point {entry:#x} is not inside any of its loaded pages"
    );
    for (name, kernel) in [("SNP", inputs.kernel_snp), ("native", inputs.kernel_native)] {
        Elf::parse(kernel).map_err(|e| anyhow::anyhow!("{name} kernel ELF: {e}"))?;
        let kernel_room = KERNEL_ELF_LIMIT - KERNEL_ELF_GPA;
        ensure!(
            kernel.len() as u64 <= kernel_room,
            "the stripped {name} kernel ELF is {} bytes, more than the {kernel_room} bytes \
             reserved for it at {KERNEL_ELF_GPA:#x}..{KERNEL_ELF_LIMIT:#x} (abi/src/layout.rs): \
             shrink the kernel or move KERNEL_ELF_LIMIT",
            kernel.len()
        );
    }
    if let Some(fw) = inputs.firmware {
        firmware::check_size(&fw.image).with_context(|| format!("guest firmware {}", fw.name))?;
    }

    let mut d = Vec::new();
    for (mask, platform, kernel) in [
        (SNP_PLATFORM_MASK, PlatformType::Snp, inputs.kernel_snp),
        (NATIVE_PLATFORM_MASK, PlatformType::Native, inputs.kernel_native),
    ] {
        let params = boot_params(platform, kernel.len() as u64, inputs.firmware);
        d.push(page(BOOT_PARAMS_GPA, mask, IgvmPageDataType::NORMAL, params.as_bytes().to_vec()));
    }
    d.push(page(SECRETS_GPA, SNP_PLATFORM_MASK, IgvmPageDataType::SECRETS, Vec::new()));
    d.push(page(CPUID_GPA, SNP_PLATFORM_MASK, IgvmPageDataType::CPUID_DATA, cpuid_page()));
    parameter_area(
        &mut d,
        GENERAL_PARAMS_AREA,
        PAGE_SIZE,
        GENERAL_PARAMS_GPA,
        &[
            IgvmDirectiveHeader::VpCount(param(GENERAL_PARAMS_AREA, VP_COUNT_OFFSET)),
            IgvmDirectiveHeader::EnvironmentInfo(param(
                GENERAL_PARAMS_AREA,
                ENVIRONMENT_INFO_OFFSET,
            )),
        ],
    );
    parameter_area(
        &mut d,
        MEMORY_MAP_AREA,
        MEMORY_MAP_SIZE,
        MEMORY_MAP_GPA,
        &[IgvmDirectiveHeader::MemoryMap(param(MEMORY_MAP_AREA, 0))],
    );
    for gpa in (STAGE2_STACK_BASE..STAGE2_STACK_TOP).step_by(PAGE_SIZE as usize) {
        d.push(page(gpa, ALL_PLATFORMS, IgvmPageDataType::NORMAL, Vec::new()));
    }
    for (gpa, data) in stage2_pages {
        d.push(page(gpa, ALL_PLATFORMS, IgvmPageDataType::NORMAL, data));
    }
    push_blob(&mut d, KERNEL_ELF_GPA, SNP_PLATFORM_MASK, inputs.kernel_snp);
    push_blob(&mut d, KERNEL_ELF_GPA, NATIVE_PLATFORM_MASK, inputs.kernel_native);
    d.push(IgvmDirectiveHeader::RequiredMemory {
        gpa: KERNEL_REGION_BASE,
        compatibility_mask: ALL_PLATFORMS,
        number_of_bytes: u32::try_from(KERNEL_REGION_SIZE).expect("kernel region fits u32"),
        vtl2_protectable: false,
    });
    if let Some(fw) = inputs.firmware {
        push_blob(&mut d, FIRMWARE_STAGING_BASE, NATIVE_PLATFORM_MASK, &fw.image);
        push_blob(&mut d, (1 << 32) - fw.image.len() as u64, SNP_PLATFORM_MASK, &fw.image);
    }
    d.push(IgvmDirectiveHeader::X64NativeVpContext {
        compatibility_mask: NATIVE_PLATFORM_MASK,
        vp_index: 0,
        context: start_context::native_context(entry),
    });
    d.push(IgvmDirectiveHeader::SnpVpContext {
        gpa: SNP_VMSA_GPA,
        compatibility_mask: SNP_PLATFORM_MASK,
        vp_index: 0,
        vmsa: start_context::snp_vmsa(entry),
    });

    Ok(d)
}

fn file_from(directives: Vec<IgvmDirectiveHeader>) -> Result<IgvmFile> {
    let platforms = vec![
        platform_header(SNP_PLATFORM_MASK, IgvmPlatformType::SEV_SNP, SNP_HIGHEST_VTL),
        platform_header(NATIVE_PLATFORM_MASK, IgvmPlatformType::NATIVE, 0),
    ];
    let inits = vec![IgvmInitializationHeader::GuestPolicy {
        policy: SNP_GUEST_POLICY,
        compatibility_mask: SNP_PLATFORM_MASK,
    }];
    let revision = IgvmRevision::V2 { arch: igvm::Arch::X64, page_size: PAGE_SIZE as u32 };
    IgvmFile::new(revision, platforms, inits, directives)
        .context("the igvm crate rejected the file")
}

/// Serializes a file.
pub fn serialize(file: &IgvmFile) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.serialize(&mut bytes).context("serializing the IGVM file")?;
    Ok(bytes)
}

fn platform_header(
    mask: u32,
    platform_type: IgvmPlatformType,
    highest_vtl: u8,
) -> IgvmPlatformHeader {
    IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: mask,
        highest_vtl,
        platform_type,
        platform_version: 1,
        shared_gpa_boundary: 0,
    })
}

/// A page; all-zero contents become a zero page (no file data, measured
/// the same way as a page of zeros).
fn page(
    gpa: u64,
    mask: u32,
    data_type: IgvmPageDataType,
    mut data: Vec<u8>,
) -> IgvmDirectiveHeader {
    if data.iter().all(|&b| b == 0) {
        data.clear();
    }
    IgvmDirectiveHeader::PageData {
        gpa,
        compatibility_mask: mask,
        flags: IgvmPageDataFlags::new(),
        data_type,
        data,
    }
}

fn param(area: u32, offset: u32) -> IGVM_VHS_PARAMETER {
    IGVM_VHS_PARAMETER { parameter_area_index: area, byte_offset: offset }
}

/// Declares a parameter area, its parameters, and inserts it at `gpa` for
/// both platforms.
fn parameter_area(
    d: &mut Vec<IgvmDirectiveHeader>,
    index: u32,
    size: u64,
    gpa: u64,
    params: &[IgvmDirectiveHeader],
) {
    d.push(IgvmDirectiveHeader::ParameterArea {
        number_of_bytes: size,
        parameter_area_index: index,
        initial_data: Vec::new(),
    });
    d.extend(params.iter().cloned());
    d.push(IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
        gpa,
        compatibility_mask: ALL_PLATFORMS,
        parameter_area_index: index,
    }));
}

/// A byte string as consecutive pages from `gpa` (the last one zero-padded).
fn push_blob(d: &mut Vec<IgvmDirectiveHeader>, gpa: u64, mask: u32, blob: &[u8]) {
    for (i, chunk) in blob.chunks(PAGE_SIZE as usize).enumerate() {
        d.push(page(gpa + i as u64 * PAGE_SIZE, mask, IgvmPageDataType::NORMAL, chunk.to_vec()));
    }
}

/// Stage2's loadable segments as 4 KiB pages by GPA, bss included as zeros.
/// Stage2 runs with paging off, so each segment must be linked where it is
/// loaded, inside [STAGE2_BASE, STAGE2_LIMIT).
fn stage2_pages(elf: &Elf<'_>) -> Result<BTreeMap<u64, Vec<u8>>> {
    let mut pages: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for segment in elf.segments() {
        let end = segment.paddr + segment.mem_size;
        if segment.paddr < STAGE2_BASE || end > STAGE2_LIMIT {
            bail!(
                "stage2 segment [{:#x}, {end:#x}) does not fit [{STAGE2_BASE:#x}, {STAGE2_LIMIT:#x}) \
                 (abi/src/layout.rs): fix stage2's linker script or its size",
                segment.paddr
            );
        }
        if segment.vaddr != segment.paddr {
            bail!(
                "stage2 segment at {:#x} is linked at {:#x}: stage2 runs with paging off",
                segment.paddr,
                segment.vaddr
            );
        }
        for gpa in (segment.paddr & !(PAGE_SIZE - 1)..end).step_by(PAGE_SIZE as usize) {
            let page = pages.entry(gpa).or_insert_with(|| vec![0; PAGE_SIZE as usize]);
            let from = segment.paddr.max(gpa);
            let to = (segment.paddr + segment.file_data.len() as u64).min(gpa + PAGE_SIZE);
            if from < to {
                let src = &segment.file_data
                    [(from - segment.paddr) as usize..(to - segment.paddr) as usize];
                page[(from - gpa) as usize..(to - gpa) as usize].copy_from_slice(src);
            }
        }
    }
    Ok(pages)
}

/// The measured boot-parameter page of one platform.
pub fn boot_params(
    platform: PlatformType,
    kernel_elf_size: u64,
    firmware: Option<&GuestFirmware>,
) -> BootParams {
    let snp = platform == PlatformType::Snp;
    let mut params = BootParams::new_zeroed();
    params.magic = BOOT_PARAMS_MAGIC;
    params.version = BOOT_PARAMS_VERSION;
    params.platform = platform as u32;
    params.kernel_region = MemoryRange { base: KERNEL_REGION_BASE, size: KERNEL_REGION_SIZE };
    params.kernel_elf = MemoryRange { base: KERNEL_ELF_GPA, size: kernel_elf_size };
    params.boot_area = MemoryRange { base: BOOT_AREA_BASE, size: BOOT_AREA_END - BOOT_AREA_BASE };
    params.secrets_gpa = if snp { SECRETS_GPA } else { 0 };
    params.cpuid_gpa = if snp { CPUID_GPA } else { 0 };
    params.general_params_gpa = GENERAL_PARAMS_GPA;
    params.memory_map = MemoryRange { base: MEMORY_MAP_GPA, size: MEMORY_MAP_SIZE };
    params.firmware = match firmware {
        Some(fw) => fw.info((!snp).then_some(FIRMWARE_STAGING_BASE)),
        None => FirmwareInfo::new_zeroed(),
    };
    params
}

/// The CPUID leaves (function, subfunction, XCR0 input) a loader fills in
/// the SNP CPUID page: COCONUT's list (igvmbuilder cpuid.rs), which covers
/// what the SVSM and a guest firmware ask.
pub const CPUID_LEAVES: [(u32, u32, u64); 34] = [
    (0x8000_001f, 0, 0),
    (0, 0, 0),
    (1, 0, 0),
    (2, 0, 0),
    (4, 0, 0),
    (4, 1, 0),
    (4, 2, 0),
    (4, 3, 0),
    (5, 0, 0),
    (6, 0, 0),
    (7, 0, 0),
    (7, 1, 0),
    (0xb, 0, 0),
    (0xb, 1, 0),
    (0xd, 0, 1),
    (0xd, 1, 1),
    (0xd, 2, 0),
    (0x8000_0000, 0, 0),
    (0x8000_0001, 0, 0),
    (0x8000_0002, 0, 0),
    (0x8000_0003, 0, 0),
    (0x8000_0004, 0, 0),
    (0x8000_0005, 0, 0),
    (0x8000_0006, 0, 0),
    (0x8000_0007, 0, 0),
    (0x8000_0008, 0, 0),
    (0x8000_000a, 0, 0),
    (0x8000_0019, 0, 0),
    (0x8000_001a, 0, 0),
    (0x8000_001d, 0, 0),
    (0x8000_001d, 1, 0),
    (0x8000_001d, 2, 0),
    (0x8000_001d, 3, 0),
    (0x8000_001e, 0, 0),
];

/// The SNP CPUID page as the loader receives it (snp-svsm.md §5.2): a
/// 16-byte header with the count, then 48-byte entries with the inputs
/// set and the outputs zero.
pub fn cpuid_page() -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    page[0..4].copy_from_slice(&(CPUID_LEAVES.len() as u32).to_le_bytes());
    for (i, &(eax_in, ecx_in, xcr0_in)) in CPUID_LEAVES.iter().enumerate() {
        let at = 16 + i * 48;
        page[at..at + 4].copy_from_slice(&eax_in.to_le_bytes());
        page[at + 4..at + 8].copy_from_slice(&ecx_in.to_le_bytes());
        page[at + 8..at + 16].copy_from_slice(&xcr0_in.to_le_bytes());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_page_layout() {
        let page = cpuid_page();
        assert_eq!(u32::from_le_bytes(page[0..4].try_into().unwrap()), 34);
        // Entry 14 is leaf 0xD subleaf 0 with XCR0 input 1.
        let e = 16 + 14 * 48;
        assert_eq!(&page[e..e + 16], &[0xd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert!(page[e + 16..e + 48].iter().all(|&b| b == 0));
        assert!(page[16 + 34 * 48..].iter().all(|&b| b == 0));
    }

    #[test]
    fn boot_params_fill_every_field() {
        let fw = GuestFirmware {
            name: "synthetic".into(),
            image: crate::firmware::tests::synthetic_ovmf(&crate::firmware::tests::TRIXIE_SECTIONS),
            sev: None,
        };
        let fw = GuestFirmware {
            sev: Some(crate::firmware::parse_sev_metadata(&fw.image).unwrap()),
            ..fw
        };
        let snp = boot_params(PlatformType::Snp, 0x1234, Some(&fw));
        assert_eq!(snp.validate(), Ok(PlatformType::Snp));
        assert_eq!((snp.secrets_gpa, snp.cpuid_gpa), (SECRETS_GPA, CPUID_GPA));
        assert_eq!(snp.kernel_elf, MemoryRange { base: KERNEL_ELF_GPA, size: 0x1234 });
        assert_eq!(
            (snp.firmware.base, snp.firmware.size, snp.firmware.staging_base),
            (0xffff_0000, 0x1_0000, 0xffff_0000)
        );
        assert_eq!(snp.firmware.calling_area_gpa, 0x80_f000);
        assert_eq!(snp.firmware_prevalidated().len(), 3);
        let native = boot_params(PlatformType::Native, 0x1234, Some(&fw));
        assert_eq!(native.validate(), Ok(PlatformType::Native));
        assert_eq!((native.secrets_gpa, native.cpuid_gpa), (0, 0));
        assert_eq!(native.firmware.staging_base, FIRMWARE_STAGING_BASE);
        assert_eq!(native.firmware.base, 0xffff_0000);
    }
}
