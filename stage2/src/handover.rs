//! Building the [`KernelBootInfo`] from the measured boot parameters and the
//! host-supplied IGVM parameter pages (untrusted: VP count and memory map
//! are checked before the kernel sees them).

use abi::boot::{
    BootParams, KERNEL_BOOT_INFO_MAGIC, KernelBootInfo, MAX_MEMORY_RANGES, MemoryMapError,
    MemoryRange, PlatformType, parse_memory_map,
};
use abi::layout::{KERNEL_VIRT_BASE, VP_COUNT_OFFSET};

use crate::load::LoadedKernel;

/// Most vCPUs the SVSM supports.
pub const MAX_CPUS: u32 = 64;

/// Why the host's parameters were rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverError {
    /// The VP count is 0 or above [`MAX_CPUS`].
    BadCpuCount(u32),
    /// The memory map is malformed.
    MemoryMap(MemoryMapError),
    /// The memory map does not list the kernel region as RAM.
    KernelRegionNotRam,
}

/// Fills the kernel's boot info. `general_params` and `memory_map` are the
/// IGVM parameter pages as the host's loader wrote them.
pub fn build_boot_info(
    platform: PlatformType,
    boot_params_gpa: u64,
    params: &BootParams,
    general_params: &[u8],
    memory_map: &[u8],
    loaded: &LoadedKernel,
    c_bit_mask: u64,
) -> Result<KernelBootInfo, HandoverError> {
    let offset = VP_COUNT_OFFSET as usize;
    let cpu_count = general_params
        .get(offset..offset + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0);
    if cpu_count == 0 || cpu_count > MAX_CPUS {
        return Err(HandoverError::BadCpuCount(cpu_count));
    }
    let mut memory = [MemoryRange::default(); MAX_MEMORY_RANGES];
    let count = parse_memory_map(memory_map, &mut memory).map_err(HandoverError::MemoryMap)?;
    if !memory[..count].iter().any(|ram| ram.contains_range(&params.kernel_region)) {
        return Err(HandoverError::KernelRegionNotRam);
    }
    Ok(KernelBootInfo {
        magic: KERNEL_BOOT_INFO_MAGIC,
        platform: platform as u32,
        cpu_count,
        boot_params_gpa,
        kernel_region: params.kernel_region,
        kernel_image: loaded.image,
        kernel_virt_base: KERNEL_VIRT_BASE,
        free_base: loaded.free_base,
        c_bit_mask,
        memory_count: count as u32,
        reserved: 0,
        memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi::boot::IgvmMemoryMapEntry;
    use zerocopy::{FromZeros, IntoBytes};

    fn params() -> BootParams {
        let mut p = BootParams::new_zeroed();
        p.kernel_region = MemoryRange { base: 0x0800_0000, size: 0x0400_0000 };
        p
    }

    fn loaded() -> LoadedKernel {
        LoadedKernel {
            entry: KERNEL_VIRT_BASE,
            image: MemoryRange { base: 0x0800_0000, size: 0x10_0000 },
            cr3: 0x0810_0000,
            boot_info_pa: 0x0810_8000,
            free_base: 0x0810_9000,
        }
    }

    fn general(cpus: u32) -> [u8; 4096] {
        let mut page = [0u8; 4096];
        page[0..4].copy_from_slice(&cpus.to_le_bytes());
        page
    }

    fn map(entries: &[(u64, u64)]) -> [u8; 4096] {
        let mut page = [0u8; 4096];
        for (i, &(base, size)) in entries.iter().enumerate() {
            let e = IgvmMemoryMapEntry {
                starting_gpa_page_number: base >> 12,
                number_of_pages: size >> 12,
                ..Default::default()
            };
            page[i * 24..(i + 1) * 24].copy_from_slice(e.as_bytes());
        }
        page
    }

    #[test]
    fn builds_boot_info_from_the_parameters() {
        let info = build_boot_info(
            PlatformType::Native,
            0x10_0000,
            &params(),
            &general(2),
            &map(&[(0, 0x2000_0000)]),
            &loaded(),
            0,
        )
        .unwrap();
        assert_eq!(info.cpu_count, 2);
        assert_eq!(info.memory_ranges(), &[MemoryRange { base: 0, size: 0x2000_0000 }]);
        assert_eq!(info.free_base, 0x0810_9000);
        assert_eq!(info.magic, KERNEL_BOOT_INFO_MAGIC);
    }

    #[test]
    fn rejects_hostile_parameters() {
        let ram = map(&[(0, 0x2000_0000)]);
        let build = |general: &[u8], map: &[u8]| {
            build_boot_info(PlatformType::Snp, 0, &params(), general, map, &loaded(), 0)
        };
        assert_eq!(build(&general(0), &ram), Err(HandoverError::BadCpuCount(0)));
        assert_eq!(build(&general(65), &ram), Err(HandoverError::BadCpuCount(65)));
        assert_eq!(build(&[1, 0], &ram), Err(HandoverError::BadCpuCount(0)));
        let small = map(&[(0, 0x0900_0000)]);
        assert_eq!(build(&general(1), &small), Err(HandoverError::KernelRegionNotRam));
        let unsorted = map(&[(0x1000_0000, 0x1000), (0, 0x1000)]);
        assert!(matches!(build(&general(1), &unsorted), Err(HandoverError::MemoryMap(_))));
    }
}
