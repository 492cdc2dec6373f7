//! `cargo xtask`: the one entry point for building, packaging, booting and
//! testing the SVSM. CI runs exactly what a developer runs.

mod env;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, package, boot and test the SVSM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every test: host unit tests, vTPM conformance, boot tests.
    Test,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let env = env::Env::discover()?;
    match cli.command {
        Command::Test => {
            env.cargo(&["test", "--workspace"])?;
            Ok(())
        }
    }
}
