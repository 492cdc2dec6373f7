//! `vtpm-sim`: the vTPM engine served over the Microsoft TPM 2.0 simulator
//! ("mssim") TCP protocol, so that unmodified tpm2-tools, tpm2-tss and
//! tss-esapi (TCTI `mssim`) can drive it on the host. Protocol: tpm.md §7.
//!
//! One TPM, manufactured at start with seeds from the OS; TPM commands on
//! port N, platform signals on N+1, both on 127.0.0.1. Every TPM-port
//! connection is a client of its own (its transient objects and sessions
//! are flushed when it closes, with or without SESSION_END).

#![forbid(unsafe_code)]

use std::io::{self, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use vtpm::{ClientId, OsEntropy, Tpm};

const USAGE: &str = "\
vtpm-sim: the project's TPM 2.0 engine behind the Microsoft TPM simulator TCP protocol

Usage: vtpm-sim [--port N] [-v|-vv|-vvv]

  --port N   listen for TPM commands on 127.0.0.1:N and for platform signals
             (power, physical presence, reset) on 127.0.0.1:N+1 (default 2321)
  -v         log connections and platform signals to stderr
  -vv        also log every command: client, locality, command code, response code, time
  -vvv       also log every command and response in hex
  -h, --help show this help

The TPM is manufactured at start (fresh seeds from the OS) and lives only in memory:
nothing persists when vtpm-sim exits. It starts powered off; clients power it on
(tpm2-tss does so on every connection; a repeated POWER_ON is a no-op) and then need
TPM2_Startup, e.g.:

  vtpm-sim --port 2321 &
  export TPM2TOOLS_TCTI=mssim:host=127.0.0.1,port=2321
  tpm2_startup -c && tpm2_getrandom --hex 16

Each connection to the TPM port is a separate client: its transient objects and
sessions are flushed when it disconnects. STOP (21) on either port ends vtpm-sim.
";

/// mssim TPM-port commands (TpmTcpProtocol.h).
const HASH_START: u32 = 5;
const HASH_DATA: u32 = 6;
const HASH_END: u32 = 7;
const SEND_COMMAND: u32 = 8;
const REMOTE_HANDSHAKE: u32 = 15;
const SESSION_END: u32 = 20;
const STOP: u32 = 21;

/// mssim platform signals.
const POWER_ON: u32 = 1;
const POWER_OFF: u32 = 2;
const PHYS_PRES_ON: u32 = 3;
const PHYS_PRES_OFF: u32 = 4;
const RESET: u32 = 17;
const RESTART: u32 = 18;
/// Accepted without effect: cancel, NV on/off, key cache (the engine has no
/// such inputs: commands run to completion, NV is always available).
const ACCEPTED_SIGNALS: &[(u32, &str)] = &[
    (9, "CANCEL_ON"),
    (10, "CANCEL_OFF"),
    (11, "NV_ON"),
    (12, "NV_OFF"),
    (13, "KEY_CACHE_ON"),
    (14, "KEY_CACHE_OFF"),
];

/// REMOTE_HANDSHAKE answer: server version 1, flags tpmPlatformAvailable.
const SERVER_VERSION: u32 = 1;
const FLAG_PLATFORM_AVAILABLE: u32 = 1;

/// Largest command or HASH_DATA block read from a client. Bigger ones close
/// the connection (the engine itself rejects anything above its own
/// maximum command size with TPM_RC_COMMAND_SIZE).
const MAX_TRANSFER: usize = 1 << 20;

struct Options {
    port: u16,
    verbosity: u8,
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options { port: 2321, verbosity: 0 };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => {
                let value = args.next().ok_or("--port needs a port number")?;
                options.port =
                    value.parse().ok().filter(|p| *p > 0 && *p < u16::MAX).ok_or_else(|| {
                        format!("bad port {value:?}: give 1..65534 (N+1 is used too)")
                    })?;
            }
            "-v" | "-vv" | "-vvv" => options.verbosity = (arg.len() - 1) as u8,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(options))
}

/// What every connection thread shares: the TPM and the log settings.
struct Shared {
    tpm: Mutex<Tpm>,
    verbosity: u8,
    started: Instant,
    next_client: AtomicU32,
}

impl Shared {
    fn log(&self, level: u8, message: std::fmt::Arguments) {
        if self.verbosity >= level {
            eprintln!("[{:9.3}] {message}", self.started.elapsed().as_secs_f64());
        }
    }

    fn tpm(&self) -> MutexGuard<'_, Tpm> {
        // A panic while holding the lock aborts the process (see main), so
        // the lock cannot be poisoned.
        self.tpm.lock().expect("the TPM lock is never poisoned: panics abort")
    }
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("vtpm-sim: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // An engine panic is a bug: stop the whole simulator loudly rather than
    // serve from a TPM whose state may be half-updated.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        eprintln!("vtpm-sim: the TPM engine panicked; aborting");
        std::process::abort();
    }));
    match serve(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vtpm-sim: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(options: &Options) -> Result<(), String> {
    let tpm =
        Tpm::manufacture(Box::new(OsEntropy)).map_err(|e| format!("manufacturing the TPM: {e}"))?;
    let bind = |port: u16, what: &str| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map_err(|e| {
            format!(
                "cannot listen on 127.0.0.1:{port} for {what}: {e} (pick other ports with --port N)"
            )
        })
    };
    let tpm_port = bind(options.port, "TPM commands")?;
    let platform_port = bind(options.port + 1, "platform signals")?;
    let shared = Arc::new(Shared {
        tpm: Mutex::new(tpm),
        verbosity: options.verbosity,
        started: Instant::now(),
        next_client: AtomicU32::new(1),
    });
    eprintln!(
        "vtpm-sim: TPM commands on 127.0.0.1:{}, platform signals on 127.0.0.1:{}",
        options.port,
        options.port + 1
    );
    let platform_shared = Arc::clone(&shared);
    std::thread::spawn(move || accept_loop(&platform_shared, platform_port, serve_platform));
    accept_loop(&shared, tpm_port, serve_tpm);
    Ok(())
}

fn accept_loop(
    shared: &Arc<Shared>,
    listener: TcpListener,
    handler: fn(&Shared, &mut Connection) -> io::Result<()>,
) {
    for stream in listener.incoming() {
        let connection = stream.and_then(Connection::new);
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(e) => {
                shared.log(0, format_args!("accepting a connection failed: {e}"));
                continue;
            }
        };
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            if let Err(e) = handler(&shared, &mut connection) {
                shared.log(1, format_args!("connection ended: {e}"));
            }
        });
    }
}

/// Sets TCP_QUICKACK (Linux): ACK what has arrived now, not after ~40 ms.
fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let _ = socket2::SockRef::from(stream).set_tcp_quickack(true);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream;
}

/// One client connection, with buffered reads: a message the client sent in
/// one piece costs one system call.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    fn new(stream: TcpStream) -> io::Result<Connection> {
        stream.set_nodelay(true)?;
        Ok(Connection { reader: BufReader::new(stream.try_clone()?), writer: stream })
    }

    /// Reads the rest of a message. When it is not all here yet, the client
    /// may be holding it back until we ACK what it sent (Nagle against our
    /// delayed ACK: tpm2-tss writes the SEND_COMMAND header and the command
    /// separately, and each command would stall ~40 ms). Quick-ack mode
    /// sends the pending ACK at once; it is not sticky, so it is set each time.
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if self.reader.buffer().len() < buf.len() {
            quickack(self.reader.get_ref());
        }
        self.reader.read_exact(buf)
    }

    /// Reads the u32 that starts a message (no hurry: nothing is pending),
    /// or None at a clean end of stream.
    fn read_code(&mut self) -> io::Result<Option<u32>> {
        let mut word = [0u8; 4];
        match self.reader.read_exact(&mut word) {
            Ok(()) => Ok(Some(u32::from_be_bytes(word))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a u32 inside a message.
    fn read_u32(&mut self) -> io::Result<u32> {
        let mut word = [0u8; 4];
        self.read_exact(&mut word)?;
        Ok(u32::from_be_bytes(word))
    }

    /// Reads a block of `len` bytes (after its length was read).
    fn read_block(&mut self, len: u32) -> io::Result<Vec<u8>> {
        let len = len as usize;
        if len > MAX_TRANSFER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{len}-byte transfer exceeds the {MAX_TRANSFER}-byte limit"),
            ));
        }
        let mut block = vec![0u8; len];
        self.read_exact(&mut block)?;
        Ok(block)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    fn peer(&self) -> Option<std::net::SocketAddr> {
        self.writer.peer_addr().ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One TPM-port connection: one client.
fn serve_tpm(shared: &Shared, stream: &mut Connection) -> io::Result<()> {
    let client = ClientId(shared.next_client.fetch_add(1, Ordering::Relaxed));
    shared.log(1, format_args!("client {}: connected from {:?}", client.0, stream.peer()));
    let result = tpm_commands(shared, stream, client);
    shared.tpm().client_gone(client);
    shared.log(1, format_args!("client {}: gone, its objects and sessions flushed", client.0));
    result
}

fn tpm_commands(shared: &Shared, stream: &mut Connection, client: ClientId) -> io::Result<()> {
    while let Some(code) = stream.read_code()? {
        match code {
            SEND_COMMAND => {
                let mut locality = [0u8; 1];
                stream.read_exact(&mut locality)?;
                let size = stream.read_u32()?;
                let command = stream.read_block(size)?;
                let started = Instant::now();
                let response = shared.tpm().execute(client, locality[0], &command);
                log_command(shared, client, locality[0], &command, &response, started);
                let len = u32::try_from(response.len()).expect("TPM responses are far below 4 GiB");
                let mut frame = Vec::with_capacity(response.len() + 8);
                frame.extend_from_slice(&len.to_be_bytes());
                frame.extend_from_slice(&response);
                frame.extend_from_slice(&0u32.to_be_bytes());
                stream.write_all(&frame)?;
            }
            REMOTE_HANDSHAKE => {
                let version = stream.read_u32()?;
                shared.log(
                    1,
                    format_args!("client {}: handshake, client version {version}", client.0),
                );
                let mut answer = Vec::with_capacity(12);
                for word in [SERVER_VERSION, FLAG_PLATFORM_AVAILABLE, 0] {
                    answer.extend_from_slice(&word.to_be_bytes());
                }
                stream.write_all(&answer)?;
            }
            HASH_START => {
                shared.log(1, format_args!("client {}: HASH_START", client.0));
                shared.tpm().hash_start();
                stream.write_all(&0u32.to_be_bytes())?;
            }
            HASH_DATA => {
                let len = stream.read_u32()?;
                let data = stream.read_block(len)?;
                shared.log(1, format_args!("client {}: HASH_DATA {} bytes", client.0, data.len()));
                shared.tpm().hash_data(&data);
                stream.write_all(&0u32.to_be_bytes())?;
            }
            HASH_END => {
                shared.log(1, format_args!("client {}: HASH_END", client.0));
                shared.tpm().hash_end();
                stream.write_all(&0u32.to_be_bytes())?;
            }
            SESSION_END => return Ok(()),
            STOP => stop(shared),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown TPM-port command {other}; closing"),
                ));
            }
        }
    }
    Ok(())
}

fn log_command(
    shared: &Shared,
    client: ClientId,
    locality: u8,
    command: &[u8],
    response: &[u8],
    started: Instant,
) {
    if shared.verbosity < 2 {
        return;
    }
    let word = |bytes: &[u8], at: usize| {
        bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let code = word(command, 6).map_or("(short)".to_string(), |c| format!("{c:#x}"));
    let rc = word(response, 6).map_or("(short)".to_string(), |c| format!("{c:#x}"));
    shared.log(
        2,
        format_args!(
            "client {} loc {locality}: cc {code} ({} bytes) -> rc {rc} ({} bytes) in {:.2} ms",
            client.0,
            command.len(),
            response.len(),
            started.elapsed().as_secs_f64() * 1e3
        ),
    );
    shared.log(3, format_args!("  command  {}", hex(command)));
    shared.log(3, format_args!("  response {}", hex(response)));
}

/// One platform-port connection: power, reset and the accepted no-ops.
fn serve_platform(shared: &Shared, stream: &mut Connection) -> io::Result<()> {
    while let Some(signal) = stream.read_code()? {
        let name = match signal {
            POWER_ON => {
                shared.tpm().power_on();
                "POWER_ON (no-op when already on)"
            }
            POWER_OFF => {
                shared.tpm().power_off();
                "POWER_OFF"
            }
            PHYS_PRES_ON | PHYS_PRES_OFF => {
                shared.tpm().set_physical_presence(signal == PHYS_PRES_ON);
                if signal == PHYS_PRES_ON { "PHYS_PRES_ON" } else { "PHYS_PRES_OFF" }
            }
            RESET | RESTART => {
                shared.tpm().reset();
                if signal == RESET { "RESET" } else { "RESTART" }
            }
            SESSION_END => return Ok(()),
            STOP => stop(shared),
            other => match ACCEPTED_SIGNALS.iter().find(|(code, _)| *code == other) {
                Some((_, name)) => name,
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unknown platform signal {other}; closing"),
                    ));
                }
            },
        };
        shared.log(1, format_args!("platform: {name}"));
        stream.write_all(&0u32.to_be_bytes())?;
    }
    Ok(())
}

fn stop(shared: &Shared) -> ! {
    shared.log(0, format_args!("STOP received; exiting"));
    std::process::exit(0)
}
