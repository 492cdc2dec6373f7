//! The SNP launch digest of an IGVM file, computed by our own code, and the
//! page log that lets independent implementations replay it.
//!
//! The PSP starts with a digest of 48 zero bytes and, for every page passed
//! to SNP_LAUNCH_UPDATE (and the VMSA at LAUNCH_FINISH), sets
//! `LD = SHA-384(PAGE_INFO)`, where PAGE_INFO (0x70 bytes) is the current
//! LD, the page's contents hash, length 0x70, page type, IMI 0, VMPL
//! permissions 0 and the GPA (snp-svsm.md §9.1). Directives of the SNP
//! platform are walked in file order with KVM's rules (§9.2): zero pages
//! are NORMAL pages of zeros, unmeasured/secrets/CPUID pages and inserted
//! parameter areas hash as 48 zero bytes, the VMSA is measured at its GPA.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{Result, bail};
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader};
use igvm_defs::{IgvmPageDataType, IgvmPlatformType};
use sha2::{Digest, Sha384};
use zerocopy::IntoBytes;

const PAGE_SIZE: usize = 4096;
const PAGE_INFO_SIZE: u16 = 0x70;

/// SNP_LAUNCH_UPDATE page types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageType {
    Normal = 1,
    Vmsa = 2,
    Unmeasured = 4,
    Secrets = 5,
    Cpuid = 6,
}

impl PageType {
    /// The name used in the page log.
    pub fn name(self) -> &'static str {
        match self {
            PageType::Normal => "normal",
            PageType::Vmsa => "vmsa",
            PageType::Unmeasured => "unmeasured",
            PageType::Secrets => "secrets",
            PageType::Cpuid => "cpuid",
        }
    }
}

/// One PAGE_INFO step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageStep {
    pub page_type: PageType,
    pub gpa: u64,
    /// The CONTENTS field: SHA-384 of the page, or zeros.
    pub contents: [u8; 48],
}

/// The digest and the steps that produced it.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub digest: [u8; 48],
    pub steps: Vec<PageStep>,
}

impl Measurement {
    /// The digest as lowercase hex.
    pub fn digest_hex(&self) -> String {
        hex(&self.digest)
    }

    /// The page log: one line per step, `TYPE 0xGPA CONTENTS-HEX`.
    pub fn page_log(&self) -> String {
        let mut log = String::new();
        for step in &self.steps {
            writeln!(log, "{} {:#018x} {}", step.page_type.name(), step.gpa, hex(&step.contents))
                .expect("writing to a String");
        }
        log
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The compatibility mask of the file's SNP platform.
pub fn snp_mask(file: &IgvmFile) -> Result<u32> {
    file.platforms()
        .iter()
        .find_map(|p| match p {
            IgvmPlatformHeader::SupportedPlatform(p)
                if p.platform_type == IgvmPlatformType::SEV_SNP =>
            {
                Some(p.compatibility_mask)
            }
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("the IGVM file has no SEV-SNP platform"))
}

fn sha384(data: &[u8]) -> [u8; 48] {
    Sha384::digest(data).into()
}

/// Computes the SNP launch digest of `file`.
pub fn measure_snp(file: &IgvmFile) -> Result<Measurement> {
    let mask = snp_mask(file)?;
    let mut steps = Vec::new();
    let mut areas: HashMap<u32, u64> = HashMap::new();
    for directive in file.directives() {
        if directive.compatibility_mask().is_some_and(|m| m & mask == 0) {
            continue;
        }
        match directive {
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes, parameter_area_index, ..
            } => {
                areas.insert(*parameter_area_index, *number_of_bytes);
            }
            IgvmDirectiveHeader::PageData { gpa, flags, data_type, data, .. } => {
                if flags.shared() {
                    continue;
                }
                if flags.is_2mb_page() {
                    bail!(
                        "page at {gpa:#x} is a 2 MiB page, which this measurement does not model"
                    );
                }
                let page_type = match *data_type {
                    IgvmPageDataType::SECRETS => PageType::Secrets,
                    IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF => PageType::Cpuid,
                    _ if flags.unmeasured() => PageType::Unmeasured,
                    _ => PageType::Normal,
                };
                let contents = if page_type == PageType::Normal {
                    if data.len() > PAGE_SIZE {
                        bail!("page at {gpa:#x} carries {} bytes", data.len());
                    }
                    let mut page = [0u8; PAGE_SIZE];
                    page[..data.len()].copy_from_slice(data);
                    sha384(&page)
                } else {
                    [0; 48]
                };
                steps.push(PageStep { page_type, gpa: *gpa, contents });
            }
            IgvmDirectiveHeader::ParameterInsert(insert) => {
                let Some(&size) = areas.get(&insert.parameter_area_index) else {
                    bail!("parameter insert of undeclared area {}", insert.parameter_area_index);
                };
                for gpa in (insert.gpa..insert.gpa + size).step_by(PAGE_SIZE) {
                    steps.push(PageStep {
                        page_type: PageType::Unmeasured,
                        gpa,
                        contents: [0; 48],
                    });
                }
            }
            IgvmDirectiveHeader::SnpVpContext { gpa, vmsa, .. } => {
                steps.push(PageStep {
                    page_type: PageType::Vmsa,
                    gpa: *gpa,
                    contents: sha384(vmsa.as_bytes()),
                });
            }
            _ => {}
        }
    }
    let mut digest = [0u8; 48];
    for step in &steps {
        digest = sha384(&page_info(&digest, step));
    }
    Ok(Measurement { digest, steps })
}

/// The PAGE_INFO structure of one step.
fn page_info(current: &[u8; 48], step: &PageStep) -> [u8; PAGE_INFO_SIZE as usize] {
    let mut info = [0u8; PAGE_INFO_SIZE as usize];
    info[0x00..0x30].copy_from_slice(current);
    info[0x30..0x60].copy_from_slice(&step.contents);
    info[0x60..0x62].copy_from_slice(&PAGE_INFO_SIZE.to_le_bytes());
    info[0x62] = step.page_type as u8;
    // 0x63 IMI, 0x64..0x68 VMPL permissions and reserved: all zero.
    info[0x68..0x70].copy_from_slice(&step.gpa.to_le_bytes());
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PAGE_INFO of a known step, byte by byte (snp-svsm.md §9.1).
    #[test]
    fn page_info_layout() {
        let step = PageStep { page_type: PageType::Cpuid, gpa: 0x0010_2000, contents: [0xAB; 48] };
        let info = page_info(&[0x11; 48], &step);
        assert!(info[..48].iter().all(|&b| b == 0x11));
        assert!(info[48..96].iter().all(|&b| b == 0xAB));
        assert_eq!(&info[96..104], &[0x70, 0, 6, 0, 0, 0, 0, 0]);
        assert_eq!(&info[104..112], &[0, 0x20, 0x10, 0, 0, 0, 0, 0]);
    }

    /// One step from the zero digest, checked against SHA-384 of the
    /// hand-built PAGE_INFO: a zero page at GPA 0.
    #[test]
    fn first_step_of_a_zero_page() {
        let zero_hash = sha384(&[0u8; 4096]);
        let mut expected_info = Vec::new();
        expected_info.extend_from_slice(&[0u8; 48]);
        expected_info.extend_from_slice(&zero_hash);
        expected_info.extend_from_slice(&[0x70, 0x00, 0x01, 0x00, 0, 0, 0, 0]);
        expected_info.extend_from_slice(&0u64.to_le_bytes());
        let step = PageStep { page_type: PageType::Normal, gpa: 0, contents: zero_hash };
        assert_eq!(sha384(&page_info(&[0; 48], &step)), sha384(&expected_info));
    }
}
