//! `cargo xtask lint`: clippy with warnings as errors over every crate, for
//! the target it is built for: the host crates (and the host builds of the
//! kernel and loader libraries, with their unit tests), then the bare-metal
//! binaries for x86_64-unknown-none, then the cargo-fuzz projects.

use anyhow::Result;

use crate::env::Env;

/// Bare-metal binary crates and the features that build them. The kernel
/// twice: as the SNP platform's kernel (no development PSP) and as the
/// native one with the in-kernel tests, so every cfg'd path is linted.
const BARE_METAL: &[(&str, &str)] = &[
    ("stage2", "bare-metal"),
    ("kernel", "bare-metal"),
    ("kernel", "bare-metal,test-runner,dev-psp"),
    ("romloader", "bare-metal"),
    ("test-guest", "bare-metal"),
];

/// cargo-fuzz projects: each its own workspace, so nothing else builds
/// them. Linted on the stable toolchain without sanitizers (a plain build of
/// libfuzzer-sys needs only a C++ compiler for libFuzzer's sources) so the
/// targets keep compiling against the crates they fuzz; running them needs
/// `cargo fuzz` (see their READMEs).
const FUZZ_PROJECTS: &[&str] = &["kernel/fuzz", "vtpm/fuzz"];

pub fn run(env: &Env) -> Result<()> {
    println!("lint: host crates");
    env.cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    for (package, features) in BARE_METAL {
        println!("lint: {package} ({features}) for x86_64-unknown-none");
        env.cargo(&[
            "clippy",
            "--target",
            "x86_64-unknown-none",
            "-p",
            package,
            "--features",
            features,
            "--",
            "-D",
            "warnings",
        ])?;
    }
    for project in FUZZ_PROJECTS {
        println!("lint: {project} (fuzz targets, built but not run)");
        let manifest = format!("{project}/Cargo.toml");
        env.cargo(&[
            "clippy",
            "--manifest-path",
            &manifest,
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    println!("lint: clean");
    Ok(())
}
