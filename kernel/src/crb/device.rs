//! The TPM 2.0 Command Response Buffer (CRB) interface, locality 0 (TCG PC
//! Client Platform TPM Profile (PTP) specification for TPM 2.0, rev 1.05,
//! §6.4-6.5).
//!
//! The page at 0xFED40000 holds the locality registers (0x00-0x3F), the CRB
//! control area (0x40-0x7F) and the data buffer (0x80-0xFFF) that carries
//! the command and then the response. Software requests the locality
//! (LOC_CTRL.requestAccess), asks the TPM to be ready (CTRL_REQ.cmdReady),
//! writes the command into the buffer, sets CTRL_START, polls until START
//! clears, reads the response, and sends the TPM idle (CTRL_REQ.goIdle).
//! Here every command runs synchronously inside the write to CTRL_START, so
//! requests complete at once: CTRL_REQ reads 0 and START is clear again by
//! the time the guest polls it.
//!
//! The registers EDK2 (SecurityPkg Tpm2DeviceLibDTpm, Tpm2Ptp.c) and Linux
//! (drivers/char/tpm/tpm_crb.c) use behave as in QEMU's tpm-crb, which both
//! are known to work with: INTF_ID says "CRB active, version 1, locality 0
//! only, 64-byte transfers"; the command/response address and size
//! registers are fixed at the data buffer (EDK2 writes them; the writes are
//! ignored). Malformed commands (a size field that disagrees with the
//! buffer, garbage) are passed to the TPM, which answers them with its own
//! error codes.

use crate::vtpm::{TPM_RC_FAILURE, TpmBackend, error_response};

/// Guest-physical base of the CRB interface (locality 0).
pub const CRB_BASE: u64 = 0xFED4_0000;
/// Size of the emulated range: locality 0's page.
pub const CRB_SIZE: u64 = 0x1000;

/// TPM_LOC_STATE_0.
pub const LOC_STATE: u64 = 0x00;
/// TPM_LOC_CTRL_0.
pub const LOC_CTRL: u64 = 0x08;
/// TPM_LOC_STS_0.
pub const LOC_STS: u64 = 0x0C;
/// TPM_CRB_INTF_ID_0 (64 bits).
pub const INTF_ID: u64 = 0x30;
/// TPM_CRB_CTRL_REQ_0.
pub const CTRL_REQ: u64 = 0x40;
/// TPM_CRB_CTRL_STS_0.
pub const CTRL_STS: u64 = 0x44;
/// TPM_CRB_CTRL_CANCEL_0.
pub const CTRL_CANCEL: u64 = 0x48;
/// TPM_CRB_CTRL_START_0.
pub const CTRL_START: u64 = 0x4C;
/// TPM_CRB_CTRL_CMD_SIZE_0.
pub const CTRL_CMD_SIZE: u64 = 0x58;
/// TPM_CRB_CTRL_CMD_LADDR_0.
pub const CTRL_CMD_LADDR: u64 = 0x5C;
/// TPM_CRB_CTRL_CMD_HADDR_0.
pub const CTRL_CMD_HADDR: u64 = 0x60;
/// TPM_CRB_CTRL_RSP_SIZE_0.
pub const CTRL_RSP_SIZE: u64 = 0x64;
/// TPM_CRB_CTRL_RSP_ADDR_0 (64 bits).
pub const CTRL_RSP_ADDR: u64 = 0x68;
/// TPM_CRB_DATA_BUFFER_0.
pub const DATA_BUFFER: u64 = 0x80;
/// Size of the data buffer (the command and response limit).
pub const BUFFER_SIZE: usize = (CRB_SIZE - DATA_BUFFER) as usize;

const LOC_STATE_ESTABLISHED_CLEAR: u32 = 1 << 0;
const LOC_STATE_ASSIGNED: u32 = 1 << 1;
const LOC_STATE_REG_VALID: u32 = 1 << 7;
const LOC_CTRL_REQUEST_ACCESS: u32 = 1 << 0;
const LOC_CTRL_RELINQUISH: u32 = 1 << 1;
const LOC_STS_GRANTED: u32 = 1 << 0;
const CTRL_REQ_CMD_READY: u32 = 1 << 0;
const CTRL_REQ_GO_IDLE: u32 = 1 << 1;
const CTRL_STS_IDLE: u32 = 1 << 1;
const START_INVOKE: u32 = 1 << 0;
const TPM_CC_PCR_EXTEND: u32 = 0x0000_0182;
const CANCEL_INVOKE: u32 = 1 << 0;

/// TPM_CRB_INTF_ID_0 (low half): InterfaceType 1 (CRB active),
/// InterfaceVersion 1 (CRB), CapLocality 0 (locality 0 only),
/// CapCRBIdleBypass 0, CapDataXferSizeSupport 3 (64 bytes), CapFIFO 0,
/// CapCRB 1, InterfaceSelector 1 (CRB), IntfSelLock 1; VID/DID (high half) 0.
pub const INTERFACE_ID: u64 = 0x1 | (0x1 << 4) | (0x3 << 11) | (1 << 14) | (1 << 17) | (1 << 19);

/// Counters for the figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrbStats {
    /// Register and buffer accesses (one per emulated element).
    pub accesses: u64,
    /// Commands run.
    pub commands: u64,
    /// TPM2_PCR_Extend commands among them (measurements).
    pub pcr_extends: u64,
    /// Time-stamp-counter cycles spent running the commands in the TPM.
    pub tpm_cycles: u64,
}

/// The CRB interface of one TPM.
pub struct CrbDevice<T> {
    tpm: T,
    locality_assigned: bool,
    idle: bool,
    cancel: bool,
    buffer: [u8; BUFFER_SIZE],
    stats: CrbStats,
}

impl<T: TpmBackend> CrbDevice<T> {
    /// The interface after reset: idle, no locality assigned.
    pub fn new(tpm: T) -> CrbDevice<T> {
        CrbDevice {
            tpm,
            locality_assigned: false,
            idle: true,
            cancel: false,
            buffer: [0; BUFFER_SIZE],
            stats: CrbStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> CrbStats {
        self.stats
    }

    /// A read of `size` bytes at `offset` (little-endian, any alignment).
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.stats.accesses += 1;
        (0..u64::from(size)).fold(0, |value, i| value | u64::from(self.byte(offset + i)) << (8 * i))
    }

    /// A write of the low `size` bytes of `value` at `offset`.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.stats.accesses += 1;
        let end = offset.saturating_add(u64::from(size));
        // Data buffer bytes.
        for at in offset.max(DATA_BUFFER)..end.min(CRB_SIZE) {
            self.buffer[(at - DATA_BUFFER) as usize] = (value >> (8 * (at - offset))) as u8;
        }
        // Registers, one 32-bit register at a time; only writes that
        // include a register's low byte (where all control bits are) act.
        let mut register = offset & !3;
        while register < end.min(DATA_BUFFER) {
            if register >= offset {
                let shifted = value >> (8 * (register - offset));
                let bytes = (end - register).min(4);
                let mask = if bytes == 4 { u32::MAX } else { (1u32 << (8 * bytes)) - 1 };
                self.write_register(register, shifted as u32 & mask);
            }
            register += 4;
        }
    }

    fn byte(&self, offset: u64) -> u8 {
        if offset >= CRB_SIZE {
            return 0;
        }
        if offset >= DATA_BUFFER {
            return self.buffer[(offset - DATA_BUFFER) as usize];
        }
        (self.register(offset & !3) >> (8 * (offset & 3))) as u8
    }

    /// The value of the 32-bit register at `offset` (4-aligned).
    fn register(&self, offset: u64) -> u32 {
        let data_buffer = (CRB_BASE + DATA_BUFFER) as u32;
        match offset {
            LOC_STATE => {
                let assigned = if self.locality_assigned { LOC_STATE_ASSIGNED } else { 0 };
                LOC_STATE_REG_VALID | LOC_STATE_ESTABLISHED_CLEAR | assigned
            }
            LOC_STS => u32::from(self.locality_assigned) * LOC_STS_GRANTED,
            INTF_ID => INTERFACE_ID as u32,
            0x34 => (INTERFACE_ID >> 32) as u32,
            CTRL_STS => u32::from(self.idle) * CTRL_STS_IDLE,
            CTRL_CANCEL => u32::from(self.cancel) * CANCEL_INVOKE,
            CTRL_CMD_SIZE | CTRL_RSP_SIZE => BUFFER_SIZE as u32,
            CTRL_CMD_LADDR | CTRL_RSP_ADDR => data_buffer,
            // CTRL_REQ and CTRL_START read 0: requests and commands complete
            // within the write that starts them. Everything else is 0.
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            LOC_CTRL => {
                if value & LOC_CTRL_RELINQUISH != 0 {
                    self.locality_assigned = false;
                } else if value & LOC_CTRL_REQUEST_ACCESS != 0 {
                    self.locality_assigned = true;
                }
            }
            CTRL_REQ => {
                if value & CTRL_REQ_GO_IDLE != 0 {
                    self.idle = true;
                } else if value & CTRL_REQ_CMD_READY != 0 {
                    self.idle = false;
                }
            }
            CTRL_CANCEL => self.cancel = value & CANCEL_INVOKE != 0,
            CTRL_START if value & START_INVOKE != 0 && self.locality_assigned => self.run(),
            // Read-only or fixed registers: the writes are ignored.
            _ => {}
        }
    }

    /// Runs the command in the buffer and puts the response there.
    fn run(&mut self) {
        self.stats.commands += 1;
        self.idle = false;
        let declared =
            u32::from_be_bytes([self.buffer[2], self.buffer[3], self.buffer[4], self.buffer[5]]);
        // The TPM checks the size field against what it is given.
        let length = (declared as usize).clamp(10, BUFFER_SIZE);
        if self.buffer[6..10] == TPM_CC_PCR_EXTEND.to_be_bytes() {
            if self.stats.pcr_extends == 0 {
                log::info!("CRB: first PCR_Extend (the guest's first measurement)");
            }
            self.stats.pcr_extends += 1;
        }
        let started = tsc();
        let response = self.tpm.execute(0, &self.buffer[..length]);
        self.stats.tpm_cycles += tsc().wrapping_sub(started);
        let response = if response.len() > BUFFER_SIZE {
            log::error!("CRB: a {} byte response does not fit the buffer", response.len());
            error_response(TPM_RC_FAILURE)
        } else {
            response
        };
        self.buffer[..response.len()].copy_from_slice(&response);
        self.buffer[response.len()..].fill(0);
    }
}

/// The time-stamp counter (0 on the host, where nothing is timed).
fn tsc() -> u64 {
    #[cfg(target_os = "none")]
    {
        // SAFETY: RDTSC only reads the time-stamp counter.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

impl<T: TpmBackend> super::mmio::MmioDevice for CrbDevice<T> {
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        CrbDevice::read(self, offset, size)
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        CrbDevice::write(self, offset, size, value)
    }
}

#[cfg(test)]
mod tests;
