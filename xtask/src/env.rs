//! Where things are: the workspace root, the build folder, and how to call
//! cargo for host and bare-metal crates.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Paths every xtask command works with.
pub struct Env {
    /// The workspace root (the folder holding the top-level `Cargo.toml`).
    pub root: PathBuf,
    /// `build/` under the root: downloaded packages, generated keys, images.
    pub build: PathBuf,
}

impl Env {
    /// Finds the workspace from the xtask's own manifest directory.
    pub fn discover() -> Result<Env> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().context("xtask is not inside the workspace")?.to_path_buf();
        let build = root.join("build");
        std::fs::create_dir_all(&build)
            .with_context(|| format!("creating the build folder {}", build.display()))?;
        Ok(Env { root, build })
    }

    /// Runs `cargo ARGS` in the workspace root and fails if it fails.
    pub fn cargo(&self, args: &[&str]) -> Result<()> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(&cargo)
            .args(args)
            .current_dir(&self.root)
            .status()
            .with_context(|| format!("running {cargo}"))?;
        if !status.success() {
            bail!("`cargo {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }
}
