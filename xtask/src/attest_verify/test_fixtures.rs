//! Real AMD data for the tests, from the `sev` crate (virtee, crates.io
//! 8.0.0, a dev-dependency) as cargo unpacked it: `tests/certs_data/`
//! holds a report from a Milan part (`report_milan.hex`) with its VCEK
//! (`vcek_milan.der`), a Turin VCEK, and `src/certs/snp/builtin/<product>/`
//! AMD's ARK and ASK of Milan, Genoa and Turin as AMD's KDS serves them.
//! Nothing of it is copied into this repository.

use std::path::PathBuf;
use std::process::Command;

/// The unpacked `sev` 8.0.0 crate (located with `cargo metadata`).
pub fn sev_crate_dir() -> PathBuf {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path", manifest])
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json = String::from_utf8(output.stdout).expect("cargo metadata prints UTF-8");
    let end = json
        .find("/sev-8.0.0/Cargo.toml\"")
        .expect("the sev 8.0.0 dev-dependency is in the metadata");
    let start = json[..end].rfind('"').expect("a JSON string") + 1;
    PathBuf::from(&json[start..end]).join("sev-8.0.0")
}

/// A file of the `sev` crate.
pub fn read(path: &str) -> Vec<u8> {
    let full = sev_crate_dir().join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// A PEM certificate of the `sev` crate, as DER.
pub fn pem_cert(path: &str) -> Vec<u8> {
    der::pem::decode_vec(&read(path)).expect("a PEM certificate").1
}
