//! Talking to a TPM over the wire from Rust, without tpm2-tss: the Microsoft
//! simulator ("mssim") TCP protocol that `vtpm-sim` serves, and the raw data
//! socket of swtpm (`swtpm socket --server type=tcp`). The conformance
//! differential tests and the benchmark send hand-built command bytes through
//! this, so they see exactly what the TPM answers (tpm.md §7 and §8).

use std::io::{BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

/// mssim TPM-port command: `u32 8, u8 locality, u32 size, command`.
const MSSIM_SEND_COMMAND: u32 = 8;
/// mssim platform signals (tpm.md §7.1).
pub const MSSIM_POWER_ON: u32 = 1;
pub const MSSIM_POWER_OFF: u32 = 2;
pub const MSSIM_NV_ON: u32 = 11;
/// mssim TPM-port signal: the client is done with this connection.
const MSSIM_SESSION_END: u32 = 20;

/// swtpm control-channel commands INIT and SET_LOCALITY (tpm.md §8).
const SWTPM_CTRL_INIT: u32 = 2;
const SWTPM_CTRL_SET_LOCALITY: u32 = 5;

/// How long one command may take before we call the TPM hung. RSA key
/// generation in a debug build is the slowest thing a TPM does here.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Largest response we accept (a TPM's responses are a few KiB at most).
const MAX_RESPONSE: usize = 1 << 20;

/// TPM_RC_RETRY: libtpms 0.9 answers it on the first authorised use of a
/// non-noDA object (tpm.md §11); clients simply resend.
const RC_RETRY: u32 = 0x922;

/// One client connection to a TPM. Responses are read through a buffer: one
/// system call per response, whatever the framing (fair to both servers).
pub enum Wire {
    /// vtpm-sim (or any mssim server): TPM port and platform port.
    Mssim { tpm: BufReader<TcpStream>, platform: TcpStream },
    /// swtpm: data socket, plus its control channel for localities.
    Swtpm { data: BufReader<TcpStream>, ctrl: TcpStream },
}

fn connect(port: u16) -> Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .with_context(|| format!("connecting to the TPM at {addr}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
    Ok(stream)
}

fn read_u32(stream: &mut impl Read) -> Result<u32> {
    let mut word = [0u8; 4];
    stream.read_exact(&mut word)?;
    Ok(u32::from_be_bytes(word))
}

impl Wire {
    /// Connects to an mssim server on `port` (platform on `port + 1`) and
    /// powers it on the way tpm2-tss does (POWER_ON, NV_ON).
    pub fn mssim(port: u16) -> Result<Wire> {
        let tpm = BufReader::new(connect(port)?);
        let platform = connect(port + 1)?;
        let mut wire = Wire::Mssim { tpm, platform };
        wire.platform_signal(MSSIM_POWER_ON)?;
        wire.platform_signal(MSSIM_NV_ON)?;
        Ok(wire)
    }

    /// Connects to swtpm's data port `port` and control port `port + 1`.
    pub fn swtpm(port: u16) -> Result<Wire> {
        Ok(Wire::Swtpm { data: BufReader::new(connect(port)?), ctrl: connect(port + 1)? })
    }

    /// Sends an mssim platform signal and checks that the server accepted it.
    pub fn platform_signal(&mut self, signal: u32) -> Result<()> {
        let Wire::Mssim { platform, .. } = self else {
            bail!("platform signal {signal} needs an mssim server");
        };
        platform.write_all(&signal.to_be_bytes())?;
        let status = read_u32(platform).context("reading the platform signal's answer")?;
        ensure!(status == 0, "mssim platform signal {signal} failed: status {status}");
        Ok(())
    }

    /// Sends one command at locality 0 and returns the response bytes.
    pub fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        self.transact_at(0, command)
    }

    /// Sends one command at `locality` and returns the response bytes, after
    /// checking that the response is framed correctly (a 10-byte header whose
    /// size field equals its length).
    pub fn transact_at(&mut self, locality: u8, command: &[u8]) -> Result<Vec<u8>> {
        let response = match self {
            Wire::Mssim { tpm, .. } => {
                let size = u32::try_from(command.len()).context("command too long")?;
                let mut frame = Vec::with_capacity(9 + command.len());
                frame.extend_from_slice(&MSSIM_SEND_COMMAND.to_be_bytes());
                frame.push(locality);
                frame.extend_from_slice(&size.to_be_bytes());
                frame.extend_from_slice(command);
                tpm.get_mut().write_all(&frame).context("sending the command")?;
                let len = read_u32(tpm).context("reading the response size")? as usize;
                ensure!(len <= MAX_RESPONSE, "response size {len} is absurd");
                let mut response = vec![0u8; len];
                tpm.read_exact(&mut response).context("reading the response")?;
                let trailer = read_u32(tpm).context("reading the mssim trailer")?;
                ensure!(trailer == 0, "mssim trailer is {trailer}, not 0");
                response
            }
            Wire::Swtpm { data, ctrl } => {
                if locality != 0 {
                    ctrl.write_all(&SWTPM_CTRL_SET_LOCALITY.to_be_bytes())?;
                    ctrl.write_all(&[locality])?;
                    let status = read_u32(ctrl)?;
                    ensure!(status == 0, "swtpm SET_LOCALITY({locality}) failed: {status}");
                }
                data.get_mut().write_all(command).context("sending the command")?;
                let mut header = [0u8; 10];
                data.read_exact(&mut header).context("reading the response header")?;
                let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
                ensure!((10..=MAX_RESPONSE).contains(&len), "response size {len} is absurd");
                let mut response = header.to_vec();
                response.resize(len, 0);
                data.read_exact(&mut response[10..]).context("reading the response body")?;
                if locality != 0 {
                    ctrl.write_all(&SWTPM_CTRL_SET_LOCALITY.to_be_bytes())?;
                    ctrl.write_all(&[0])?;
                    read_u32(ctrl)?;
                }
                response
            }
        };
        check_framing(&response)?;
        Ok(response)
    }

    /// Like [`Wire::transact`], but resends while the TPM answers
    /// TPM_RC_RETRY (libtpms' dictionary-attack quirk, tpm.md §11).
    pub fn transact_retrying(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        for _ in 0..5 {
            let response = self.transact(command)?;
            if response_code(&response) != RC_RETRY {
                return Ok(response);
            }
        }
        bail!("the TPM kept answering TPM_RC_RETRY")
    }

    /// Power-cycles the TPM (_TPM_Init follows): mssim POWER_OFF + POWER_ON,
    /// or swtpm's control-channel INIT. The TPM then needs Startup.
    pub fn power_cycle(&mut self) -> Result<()> {
        match self {
            Wire::Mssim { .. } => {
                self.platform_signal(MSSIM_POWER_OFF)?;
                self.platform_signal(MSSIM_POWER_ON)
            }
            Wire::Swtpm { ctrl, .. } => {
                ctrl.write_all(&SWTPM_CTRL_INIT.to_be_bytes())?;
                ctrl.write_all(&0u32.to_be_bytes())?;
                let status = read_u32(ctrl)?;
                ensure!(status == 0, "swtpm INIT failed: {status:#x}");
                Ok(())
            }
        }
    }

    /// Ends the connection the way a polite client does (mssim SESSION_END).
    pub fn close(self) -> Result<()> {
        if let Wire::Mssim { mut tpm, .. } = self {
            tpm.get_mut().write_all(&MSSIM_SESSION_END.to_be_bytes())?;
        }
        Ok(())
    }
}

/// The answer to a command whose tag is neither TPM_ST_NO_SESSIONS nor
/// TPM_ST_SESSIONS: tag TPM_ST_RSP_COMMAND (0x00C4), TPM_RC_BAD_TAG (0x1E),
/// which a TPM 1.2 driver also understands (Part 2, Table 19, TPM_ST).
pub const BAD_TAG_RESPONSE: [u8; 10] = [0x00, 0xC4, 0, 0, 0, 10, 0, 0, 0, 0x1E];

/// Checks a response's header (or the bad-tag answer): known tag, size field equal to the length,
/// and error responses carry nothing but the header.
pub fn check_framing(response: &[u8]) -> Result<()> {
    ensure!(response.len() >= 10, "response of {} bytes is shorter than a header", response.len());
    if response == BAD_TAG_RESPONSE {
        return Ok(());
    }
    let tag = u16::from_be_bytes([response[0], response[1]]);
    let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]) as usize;
    ensure!(size == response.len(), "response size field {size} but {} bytes", response.len());
    ensure!(
        tag == 0x8001 || tag == 0x8002,
        "response tag {tag:#06x} is neither NO_SESSIONS nor SESSIONS"
    );
    let rc = response_code(response);
    if rc != 0 {
        ensure!(
            size == 10 && tag == 0x8001,
            "error response {rc:#x} has tag {tag:#06x} and {size} bytes (want 0x8001, 10)"
        );
    }
    Ok(())
}

/// The response code of a (framed) response.
pub fn response_code(response: &[u8]) -> u32 {
    match response.get(6..10) {
        Some(rc) => u32::from_be_bytes([rc[0], rc[1], rc[2], rc[3]]),
        None => u32::MAX,
    }
}
