//! The processes and packages the vTPM tests need: Debian's TPM tools
//! (installed with apt-get when missing), our `vtpm-sim` and Debian's swtpm,
//! each started on a free loopback port and stopped when dropped.

use std::cell::RefCell;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::env::Env;
use crate::vtpm_wire::Wire;

/// Debian packages the conformance run and the benchmark need (tpm.md §13):
/// tpm2-tools and its mssim TCTI to drive vtpm-sim, swtpm and swtpm-tools
/// (swtpm_setup) as the reference TPM, its TCTI for tpm2-tools against swtpm,
/// OpenSSL to check signatures, and libtss2-dev + pkg-config to build the
/// tss-esapi test suite.
pub const APT_PACKAGES: &[&str] = &[
    "tpm2-tools",
    "libtss2-tcti-mssim0",
    "libtss2-tcti-swtpm0",
    "swtpm",
    "swtpm-tools",
    "openssl",
    "libtss2-dev",
    "pkg-config",
];

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs whichever of `packages` are missing, with apt-get, as root and
/// non-interactively; says what it installs.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("vtpm: installing missing Debian packages: {}", missing.join(" "));
    let uid = Command::new("id").arg("-u").output().context("running id -u")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!(
            "Debian packages {} are missing and installing them needs root: run \
             `sudo apt-get install -y {}` and try again",
            missing.join(" "),
            missing.join(" ")
        );
    }
    apt_get(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q"];
    install.extend(&missing);
    apt_get(&install)
}

fn apt_get(args: &[&str]) -> Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get (is this a Debian machine?)")?;
    ensure!(status.success(), "`apt-get {}` failed ({status})", args.join(" "));
    Ok(())
}

/// Where cargo puts build outputs (honours CARGO_TARGET_DIR).
pub fn target_dir(env: &Env) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => env.root.join(dir),
        None => env.root.join("target"),
    }
}

/// Builds `vtpm-sim` (release for benchmarks; the dev profile, with overflow
/// checks and debug assertions, for conformance) and returns its path.
pub fn build_vtpm_sim(env: &Env, release: bool) -> Result<PathBuf> {
    let mut args = vec!["build", "-p", "vtpm", "--features", "std", "--bin", "vtpm-sim"];
    if release {
        args.push("--release");
    }
    env.cargo(&args)?;
    let profile = if release { "release" } else { "debug" };
    let path = target_dir(env).join(profile).join("vtpm-sim");
    ensure!(path.exists(), "cargo built vtpm-sim but {} is missing", path.display());
    Ok(path)
}

/// Finds a port N on 127.0.0.1 such that N and N+1 are both free.
fn free_port_pair() -> Result<u16> {
    for _ in 0..50 {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = first.local_addr()?.port();
        if port < u16::MAX && TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no two consecutive free TCP ports on 127.0.0.1")
}

/// Which TPM a server is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Our engine behind vtpm-sim (mssim protocol).
    Vtpm,
    /// Debian's swtpm (libtpms), data socket + control channel.
    Swtpm,
}

/// A TPM server process listening on `port` (and `port + 1`), killed on drop.
pub struct Server {
    pub kind: Kind,
    pub port: u16,
    pub log: PathBuf,
    child: RefCell<Child>,
}

impl Server {
    /// Starts `vtpm-sim` on a free port; its log (`-vv`) goes to `log`.
    pub fn vtpm(binary: &Path, log: &Path, verbosity: &str) -> Result<Server> {
        let port = free_port_pair()?;
        let mut command = Command::new(binary);
        command.args(["--port", &port.to_string()]);
        if !verbosity.is_empty() {
            command.arg(verbosity);
        }
        Server::spawn(Kind::Vtpm, port, command, log)
    }

    /// Manufactures a fresh swtpm state in `state` (PCR banks SHA-1, SHA-256,
    /// SHA-384, like our engine) and starts swtpm on a free port. The TPM
    /// needs Startup, as ours does.
    pub fn swtpm(state: &Path, log: &Path) -> Result<Server> {
        if state.exists() {
            std::fs::remove_dir_all(state)?;
        }
        std::fs::create_dir_all(state)?;
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--tpm-state"])
            .arg(state)
            .args(["--pcr-banks", "sha1,sha256,sha384"])
            .output()
            .context("running swtpm_setup (package swtpm-tools)")?;
        ensure!(
            out.status.success(),
            "swtpm_setup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port_pair()?;
        let mut command = Command::new("swtpm");
        command
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .args(["--server", &format!("type=tcp,port={port}")])
            .args(["--ctrl", &format!("type=tcp,port={}", port + 1)])
            .args(["--flags", "not-need-init"]);
        Server::spawn(Kind::Swtpm, port, command, log)
    }

    fn spawn(kind: Kind, port: u16, mut command: Command, log: &Path) -> Result<Server> {
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {command:?}"))?;
        let server = Server { kind, port, log: log.to_path_buf(), child: RefCell::new(child) };
        server.wait_listening()?;
        Ok(server)
    }

    fn wait_listening(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.borrow_mut().try_wait()? {
                bail!(
                    "{:?} exited ({status}) before listening; log {}:\n{}",
                    self.kind,
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let up = |port: u16| {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            };
            // swtpm accepts one data connection at a time: probing its data
            // port would be served and closed, which is harmless.
            if up(self.port + 1) && up(self.port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{:?} did not listen on port {} within 20 s", self.kind, self.port);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The tpm2-tss TCTI string for this server.
    pub fn tcti(&self) -> String {
        match self.kind {
            Kind::Vtpm => format!("mssim:host=127.0.0.1,port={}", self.port),
            Kind::Swtpm => format!("swtpm:host=127.0.0.1,port={}", self.port),
        }
    }

    /// A new raw connection to the server.
    pub fn wire(&self) -> Result<Wire> {
        match self.kind {
            Kind::Vtpm => Wire::mssim(self.port),
            Kind::Swtpm => Wire::swtpm(self.port),
        }
    }

    /// Sends TPM2_Startup(CLEAR) and checks it succeeded.
    pub fn startup(&self) -> Result<()> {
        let mut wire = self.wire()?;
        let response = wire.transact(&[0x80, 0x01, 0, 0, 0, 0x0c, 0, 0, 0x01, 0x44, 0, 0])?;
        let rc = crate::vtpm_wire::response_code(&response);
        ensure!(rc == 0, "{:?}: Startup(CLEAR) returned {rc:#x}", self.kind);
        wire.close()
    }

    /// Power-cycles the TPM; it then needs Startup.
    pub fn power_cycle(&self) -> Result<()> {
        let mut wire = self.wire()?;
        wire.power_cycle()?;
        wire.close()
    }

    /// Whether the process is still running (it must be after every test).
    pub fn check_alive(&self) -> Result<()> {
        if let Some(status) = self.child.borrow_mut().try_wait()? {
            bail!("{:?} died ({status}); log {}", self.kind, self.log.display());
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The child is ours; kill by its own id and reap it.
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}
