//! What the guest learns at start: where the SVSM is (its secrets page
//! copy), which mode this boot runs (fw_cfg), and a check that the linker
//! placed the RAM image where the layout says.

use abi::secrets::SecretsPage;
use abi::sev_status::SevFeatures;
use zerocopy::FromBytes;

use crate::arch::{inb, outw};
use crate::layout::{CALLING_AREA_GPA, RAM_IMAGE_BASE, RAM_IMAGE_LIMIT, SECRETS_GPA};
use crate::mode::{
    self, FW_CFG_DATA_PORT, FW_CFG_DIR_ENTRY_SIZE, FW_CFG_FILE, FW_CFG_FILE_DIR,
    FW_CFG_SELECTOR_PORT, FW_CFG_SIGNATURE, Mode,
};
use crate::report::PREFIX;
use crate::{println, snp};

/// The SVSM as the guest's secrets page describes it.
#[derive(Clone, Copy, Debug)]
pub struct Env {
    /// First GPA of SVSM memory.
    pub svsm_base: u64,
    /// Size of SVSM memory.
    pub svsm_size: u64,
    /// The boot calling area.
    pub calling_area: u64,
    /// Highest core-protocol version.
    pub max_version: u32,
    /// The VMPL this guest runs at.
    pub guest_vmpl: u8,
    /// SEV_FEATURES of this vCPU (SEV_STATUS >> 2), for the AP's VMSA.
    pub sev_features: SevFeatures,
}

impl Env {
    /// Reads the secrets page and checks what a guest relies on.
    pub fn discover() -> Env {
        // SAFETY: the secrets page lies at the GPA the SEV metadata names;
        // the SVSM put it there, validated, before the guest started.
        let page = unsafe { core::slice::from_raw_parts(SECRETS_GPA as *const u8, 4096) };
        let secrets = SecretsPage::ref_from_bytes(page).expect("the slice is one page");
        let env = Env {
            svsm_base: secrets.svsm_base,
            svsm_size: secrets.svsm_size,
            calling_area: secrets.svsm_caa,
            max_version: secrets.svsm_max_version,
            guest_vmpl: secrets.svsm_guest_vmpl,
            sev_features: snp::sev_status().features(),
        };
        println!(
            "{PREFIX}SVSM at {:#x}+{:#x}, calling area {:#x}, core protocol <= {}, guest VMPL {}",
            env.svsm_base, env.svsm_size, env.calling_area, env.max_version, env.guest_vmpl
        );
        if env.svsm_size == 0 {
            crate::abort(format_args!("the secrets page says there is no SVSM (SVSM_SIZE 0)"));
        }
        if env.calling_area != CALLING_AREA_GPA {
            crate::abort(format_args!(
                "the secrets page names calling area {:#x}, the SEV metadata {CALLING_AREA_GPA:#x}",
                env.calling_area
            ));
        }
        if env.guest_vmpl == 0 || env.svsm_size < 0x4000 {
            crate::abort(format_args!("implausible SVSM description in the secrets page"));
        }
        env
    }
}

unsafe extern "C" {
    static __ram_image_start: u8;
    static __bss_end: u8;
}

/// Checks that the linker script and [`crate::layout`] agree.
pub fn check_link_layout() {
    let start = (&raw const __ram_image_start) as u64;
    let end = (&raw const __bss_end) as u64;
    if start != RAM_IMAGE_BASE || end > RAM_IMAGE_LIMIT {
        crate::abort(format_args!(
            "linked at {start:#x}..{end:#x}, the layout allows {RAM_IMAGE_BASE:#x}..{RAM_IMAGE_LIMIT:#x}"
        ));
    }
}

fn fw_cfg_select(selector: u16) {
    outw(FW_CFG_SELECTOR_PORT, selector);
}

fn fw_cfg_read(into: &mut [u8]) {
    for byte in into {
        *byte = inb(FW_CFG_DATA_PORT);
    }
}

/// The mode the xtask chose through fw_cfg; [`Mode::Calls`] when there is
/// no fw_cfg file.
pub fn read_mode() -> Mode {
    let mut signature = [0u8; 4];
    fw_cfg_select(FW_CFG_SIGNATURE);
    fw_cfg_read(&mut signature);
    if &signature != b"QEMU" {
        return Mode::Calls;
    }
    fw_cfg_select(FW_CFG_FILE_DIR);
    let mut count = [0u8; 4];
    fw_cfg_read(&mut count);
    // A hostile count cannot hurt: at most this many entries are read.
    let count = u32::from_be_bytes(count).min(1024);
    let mut found = None;
    for _ in 0..count {
        let mut entry = [0u8; FW_CFG_DIR_ENTRY_SIZE];
        fw_cfg_read(&mut entry);
        if found.is_none() {
            found = mode::directory_entry_for(&entry, FW_CFG_FILE);
        }
    }
    let Some((selector, size)) = found else { return Mode::Calls };
    let mut content = [0u8; 32];
    let len = (size as usize).min(content.len());
    fw_cfg_select(selector);
    fw_cfg_read(&mut content[..len]);
    Mode::from_bytes(&content[..len]).unwrap_or_else(|| {
        crate::abort(format_args!("fw_cfg {FW_CFG_FILE} names no mode this guest knows"))
    })
}
