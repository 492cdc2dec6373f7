//! The launch digest of a built IGVM file, checked against independent
//! implementations: the `igvm` crate's measurement, the page-hash context
//! of `sev-snp-measure` (PyPI) replaying our page log over the file's own
//! pages, and the pages the launcher would hand KVM for an SNP launch
//! (its own prepare/launch sequence against its fake KVM, ending with the
//! VMSA KVM would build from the vCPU state the launcher sets).
//!
//! Our digest (`measure`) is what the build records and what a guest
//! owner compares with the attestation report's MEASUREMENT, so a wrong
//! digest would make every real launch fail verification. The image tests
//! pin the computation on stand-in images; this module checks the files
//! users actually boot, in `cargo xtask test` and `cargo xtask measure
//! --cross-check`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use igvm::{IgvmDirectiveHeader, IgvmFile};
use igvm_defs::IgvmPageDataType;
use zerocopy::IntoBytes;

use crate::env::Env;
use crate::measure::{self, Measurement};
use crate::setup;

/// Replays a page log (`measure::Measurement::page_log`) with
/// sev-snp-measure's GCTX over the measured pages in file order, checking
/// each page against the log's contents hash; prints the digest.
pub const REPLAY_SCRIPT: &str = r#"
import hashlib, sys
from sevsnpmeasure.gctx import GCTX
log, blob = sys.argv[1], open(sys.argv[2], 'rb').read()
gctx, pos = GCTX(), 0
for line in open(log):
    kind, gpa, contents = line.split()
    gpa = int(gpa, 16)
    if kind in ('normal', 'vmsa'):
        page, pos = blob[pos:pos + 4096], pos + 4096
        if hashlib.sha384(page).hexdigest() != contents:
            sys.exit('contents hash mismatch at %#x' % gpa)
        if kind == 'normal':
            gctx.update_normal_pages(gpa, page)
        elif gpa != GCTX.VMSA_GPA:
            sys.exit('VMSA logged at %#x' % gpa)
        else:
            gctx.update_vmsa_page(page)
    elif kind == 'unmeasured':
        gctx.update_unmeasured_pages(gpa, 4096)
    elif kind == 'secrets':
        gctx.update_secrets_page(gpa)
    elif kind == 'cpuid':
        gctx.update_cpuid_page(gpa)
    else:
        sys.exit('unknown page type ' + kind)
if pos != len(blob):
    sys.exit('page data left over')
print(gctx.hex_ld())
"#;

/// The measured pages of the SNP platform in file order (normal page data
/// padded to 4 KiB, and the VMSA), as the replay reads them: taken from the
/// file with the igvm crate, not from our measurement code.
pub fn page_blob(file: &IgvmFile) -> Vec<u8> {
    let mut blob = Vec::new();
    for d in file.directives() {
        match d {
            IgvmDirectiveHeader::PageData {
                compatibility_mask, data_type, flags, data, ..
            } if compatibility_mask & abi::layout::SNP_PLATFORM_MASK != 0
                && *data_type == IgvmPageDataType::NORMAL
                && !flags.unmeasured() =>
            {
                let mut page = data.clone();
                page.resize(4096, 0);
                blob.extend_from_slice(&page);
            }
            IgvmDirectiveHeader::SnpVpContext { vmsa, .. } => {
                blob.extend_from_slice(vmsa.as_bytes())
            }
            _ => {}
        }
    }
    blob
}

/// The digest sev-snp-measure computes replaying `measurement`'s page log
/// over `file`'s pages (work files go to `dir`).
pub fn sev_snp_measure_replay(
    python: &Path,
    dir: &Path,
    file: &IgvmFile,
    measurement: &Measurement,
) -> Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (log, blob, script) = (dir.join("page.log"), dir.join("pages.bin"), dir.join("replay.py"));
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write(&log, measurement.page_log().as_bytes())?;
    write(&blob, &page_blob(file))?;
    write(&script, REPLAY_SCRIPT.as_bytes())?;
    let out = Command::new(python)
        .arg(&script)
        .arg(&log)
        .arg(&blob)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("sev-snp-measure's replay failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The igvm crate's SNP launch digest of `file`.
pub fn igvm_crate_digest(file: &IgvmFile) -> Result<[u8; 48]> {
    igvm::measurement::generate_snp_measurement(
        file.initializations(),
        file.directives(),
        abi::layout::SNP_PLATFORM_MASK,
    )
    .map_err(|e| anyhow::anyhow!("the igvm crate could not measure the file: {e:?}"))
}

/// Checks the launch digest of the IGVM file at `igvm` against every
/// independent implementation, and against the digest the build recorded
/// next to it (`<file>.digest`) when there is one. Returns one line.
pub fn cross_check(env: &Env, igvm: &Path) -> Result<String> {
    let bytes = std::fs::read(igvm).with_context(|| format!("reading {}", igvm.display()))?;
    let file = IgvmFile::new_from_binary(&bytes, None)
        .with_context(|| format!("{} is not a valid IGVM file", igvm.display()))?;
    let ours = measure::measure_snp(&file)?;
    let ours_hex = ours.digest_hex();
    let mut agreeing = Vec::new();

    let recorded_path = igvm.with_file_name(format!(
        "{}.digest",
        igvm.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    if let Ok(recorded) = std::fs::read_to_string(&recorded_path) {
        if recorded.trim() != ours_hex {
            bail!(
                "{}: the recorded digest {} differs from the file's {ours_hex}: rebuild",
                igvm.display(),
                recorded.trim()
            );
        }
        agreeing.push("the recorded digest");
    }

    let crate_digest = measure::hex(&igvm_crate_digest(&file)?);
    if crate_digest != ours_hex {
        bail!("{}: ours {ours_hex}, the igvm crate's {crate_digest}", igvm.display());
    }
    agreeing.push("the igvm crate");

    let python = setup::ensure_python_venv(env)?;
    let replayed = sev_snp_measure_replay(&python, &env.build.join("digest-check"), &file, &ours)?;
    if replayed != ours_hex {
        bail!("{}: ours {ours_hex}, sev-snp-measure's replay {replayed}", igvm.display());
    }
    agreeing.push("sev-snp-measure");

    let launcher = launcher::snp::measure::expected_launch_digest(&bytes)
        .with_context(|| format!("the launcher's SNP launch of {}", igvm.display()))?;
    let launcher = measure::hex(&launcher);
    if launcher != ours_hex {
        bail!(
            "{}: ours {ours_hex}, the launcher's LAUNCH_UPDATE sequence {launcher}",
            igvm.display()
        );
    }
    agreeing.push("the launcher's launch sequence");

    Ok(format!(
        "{}: launch digest {}… ({} pages) equals {}",
        igvm.display(),
        &ours_hex[..16],
        ours.steps.len(),
        agreeing.join(", ")
    ))
}
