//! The firmware's TPM event log in the TCG PC Client crypto-agile format
//! (TCG PC Client Platform Firmware Profile, rev 1.05, §10), as Linux
//! exports it in `/sys/kernel/security/tpm0/binary_bios_measurements`, and
//! its replay: extending a zero PCR with every logged digest must give the
//! TPM's PCR value, bank by bank, if the log tells the truth.
//!
//! Layout (all integers little-endian):
//! - the first event is a SHA-1-format TCG_PCR_EVENT (PCR 0, EV_NO_ACTION,
//!   20 zero bytes) whose data is the Spec ID event, `"Spec ID Event03\0"`,
//!   with the digest algorithms and sizes the log uses;
//! - every later event is a TCG_PCR_EVENT2: PCR index, event type, a count
//!   of `(algorithm, digest)` pairs, the event data's size and the data.
//!
//! EV_NO_ACTION events are not extended; a "StartupLocality" one sets the
//! start value of PCR 0 (its last byte is the locality).

use std::collections::BTreeMap;

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// EV_NO_ACTION: logged, never extended.
pub const EV_NO_ACTION: u32 = 0x3;
/// TPM_ALG_SHA1.
pub const TPM_ALG_SHA1: u16 = 0x0004;
/// TPM_ALG_SHA256.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// TPM_ALG_SHA384.
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// TPM_ALG_SHA512.
pub const TPM_ALG_SHA512: u16 = 0x000D;

/// Number of PCRs a PC client TPM has.
pub const PCR_COUNT: usize = 24;

/// The bank name Linux uses in sysfs (`pcr-<name>`) for an algorithm.
pub fn bank_name(algorithm: u16) -> Option<&'static str> {
    match algorithm {
        TPM_ALG_SHA1 => Some("sha1"),
        TPM_ALG_SHA256 => Some("sha256"),
        TPM_ALG_SHA384 => Some("sha384"),
        TPM_ALG_SHA512 => Some("sha512"),
        _ => None,
    }
}

/// The algorithm of a bank name.
pub fn bank_algorithm(name: &str) -> Option<u16> {
    [TPM_ALG_SHA1, TPM_ALG_SHA256, TPM_ALG_SHA384, TPM_ALG_SHA512]
        .into_iter()
        .find(|&alg| bank_name(alg) == Some(name))
}

/// Why a log does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventLogError {
    #[error("the event log ends inside {what} at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("the first event is not the crypto-agile Spec ID event (\"Spec ID Event03\")")]
    NotCryptoAgile,
    #[error(
        "event {index} at byte {offset} has a digest of algorithm {algorithm:#06x}, which the Spec ID event does not list"
    )]
    UnknownAlgorithm { index: usize, offset: usize, algorithm: u16 },
    #[error("event {index} extends PCR {pcr}, beyond PCR 23")]
    BadPcr { index: usize, pcr: u32 },
}

/// One measurement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The PCR it extends.
    pub pcr: u32,
    /// The event type (EV_*).
    pub event_type: u32,
    /// One digest per bank: (algorithm, digest).
    pub digests: Vec<(u16, Vec<u8>)>,
    /// The event data.
    pub data: Vec<u8>,
}

/// A parsed log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    /// The algorithms and digest sizes of the Spec ID event.
    pub algorithms: Vec<(u16, u16)>,
    /// Every event after the Spec ID event.
    pub events: Vec<Event>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], EventLogError> {
        let end = self.at.checked_add(len).filter(|&end| end <= self.bytes.len());
        let end = end.ok_or(EventLogError::Truncated { what, offset: self.at })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, EventLogError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, EventLogError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, EventLogError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";

/// Parses a crypto-agile log.
pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    let mut r = Reader { bytes, at: 0 };
    // TCG_PCR_EVENT header of the Spec ID event.
    let pcr = r.u32("the first event")?;
    let event_type = r.u32("the first event")?;
    r.take(20, "the first event")?;
    let size = r.u32("the first event")? as usize;
    let spec = r.take(size, "the Spec ID event")?;
    if pcr != 0 || event_type != EV_NO_ACTION || !spec.starts_with(SPEC_ID_SIGNATURE) {
        return Err(EventLogError::NotCryptoAgile);
    }
    let algorithms = parse_spec_id(spec)?;
    let mut events = Vec::new();
    while r.at < bytes.len() {
        let offset = r.at;
        let index = events.len() + 1;
        let pcr = r.u32("an event header")?;
        let event_type = r.u32("an event header")?;
        let count = r.u32("a digest count")?;
        let mut digests = Vec::new();
        for _ in 0..count {
            let algorithm = r.u16("a digest")?;
            let size = algorithms
                .iter()
                .find(|(alg, _)| *alg == algorithm)
                .map(|(_, size)| usize::from(*size))
                .ok_or(EventLogError::UnknownAlgorithm { index, offset, algorithm })?;
            digests.push((algorithm, r.take(size, "a digest")?.to_vec()));
        }
        let size = r.u32("an event size")? as usize;
        let data = r.take(size, "event data")?.to_vec();
        if pcr as usize >= PCR_COUNT {
            return Err(EventLogError::BadPcr { index, pcr });
        }
        events.push(Event { pcr, event_type, digests, data });
    }
    Ok(EventLog { algorithms, events })
}

/// The (algorithm, digest size) list of a Spec ID event.
fn parse_spec_id(spec: &[u8]) -> Result<Vec<(u16, u16)>, EventLogError> {
    let mut r = Reader { bytes: spec, at: 16 };
    let _platform_class = r.u32("the Spec ID event")?;
    let _version = r.take(3, "the Spec ID event")?;
    let _uintn_size = r.u8("the Spec ID event")?;
    let count = r.u32("the Spec ID event")?;
    (0..count).map(|_| Ok((r.u16("the Spec ID event")?, r.u16("the Spec ID event")?))).collect()
}

/// PCR values per bank: algorithm -> the 24 PCRs.
pub type Banks = BTreeMap<u16, Vec<Vec<u8>>>;

fn extend(algorithm: u16, pcr: &[u8], digest: &[u8]) -> Option<Vec<u8>> {
    fn with<D: Digest>(pcr: &[u8], digest: &[u8]) -> Vec<u8> {
        D::new().chain_update(pcr).chain_update(digest).finalize().to_vec()
    }
    Some(match algorithm {
        TPM_ALG_SHA1 => with::<Sha1>(pcr, digest),
        TPM_ALG_SHA256 => with::<Sha256>(pcr, digest),
        TPM_ALG_SHA384 => with::<Sha384>(pcr, digest),
        TPM_ALG_SHA512 => with::<Sha512>(pcr, digest),
        _ => return None,
    })
}

/// Replays the log: the PCR values it claims, for every bank it lists
/// whose hash we can compute.
pub fn replay(log: &EventLog) -> Banks {
    let mut banks: Banks = log
        .algorithms
        .iter()
        .filter(|(alg, _)| bank_name(*alg).is_some())
        .map(|&(alg, size)| (alg, vec![vec![0u8; usize::from(size)]; PCR_COUNT]))
        .collect();
    for event in &log.events {
        if event.event_type == EV_NO_ACTION {
            if event.pcr == 0 && event.data.starts_with(STARTUP_LOCALITY_SIGNATURE) {
                let locality = event.data.get(16).copied().unwrap_or(0);
                for pcrs in banks.values_mut() {
                    let last = pcrs[0].len() - 1;
                    pcrs[0].fill(0);
                    pcrs[0][last] = locality;
                }
            }
            continue;
        }
        for (algorithm, digest) in &event.digests {
            if let Some(pcrs) = banks.get_mut(algorithm) {
                let pcr = &mut pcrs[event.pcr as usize];
                if let Some(value) = extend(*algorithm, pcr, digest) {
                    *pcr = value;
                }
            }
        }
    }
    banks
}

#[cfg(test)]
mod tests;
