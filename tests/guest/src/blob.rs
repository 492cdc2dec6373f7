//! Binary data the guest hands the xtask through the serial console (the
//! attestation report, the services manifest, the nonce, the certificate
//! table, a TPM response): hex lines between a start and an end line, so a
//! blob survives the console and a lost or damaged line is noticed.
//!
//! ```text
//! test-guest: blob report len=1184
//! test-guest: blob report @0 0300000000000000...   (up to 64 bytes a line)
//! test-guest: blob report @64 ...
//! test-guest: blob report end
//! ```
//!
//! Written by the guest ([`write_blob`]) and read back by the xtask
//! ([`parse_blobs`], host builds only), here, once.

use core::fmt::{self, Write};

/// Prefix of every blob line.
pub const BLOB: &str = "test-guest: blob ";
/// Bytes per data line.
pub const BYTES_PER_LINE: usize = 64;

/// Writes `data` as the blob `name` (no spaces in `name`).
pub fn write_blob(out: &mut impl Write, name: &str, data: &[u8]) -> fmt::Result {
    writeln!(out, "{BLOB}{name} len={}", data.len())?;
    for (index, chunk) in data.chunks(BYTES_PER_LINE).enumerate() {
        write!(out, "{BLOB}{name} @{} ", index * BYTES_PER_LINE)?;
        for byte in chunk {
            write!(out, "{byte:02x}")?;
        }
        writeln!(out)?;
    }
    writeln!(out, "{BLOB}{name} end")
}

#[cfg(not(target_os = "none"))]
pub use host::parse_blobs;

#[cfg(not(target_os = "none"))]
mod host {
    use std::collections::BTreeMap;

    use super::BLOB;

    /// A blob being read: its announced length and the bytes so far.
    struct Partial {
        len: usize,
        data: Vec<u8>,
        ended: bool,
    }

    /// Every blob in `serial`, by name. Fails (naming the blob and the
    /// line) on a blob announced twice, a line out of order or that is not
    /// hex, a length that does not match, or a blob without its end line.
    pub fn parse_blobs(serial: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let mut blobs: BTreeMap<String, Partial> = BTreeMap::new();
        for line in serial.lines() {
            let Some(rest) = line.trim_end().strip_prefix(BLOB) else { continue };
            let (name, field) = rest.split_once(' ').ok_or(format!("blob line {line:?}"))?;
            if let Some(len) = field.strip_prefix("len=") {
                let len = len.parse().map_err(|_| format!("blob {name}: bad length {len:?}"))?;
                let fresh = Partial { len, data: Vec::with_capacity(len), ended: false };
                if blobs.insert(name.to_string(), fresh).is_some() {
                    return Err(format!("blob {name} is announced twice"));
                }
                continue;
            }
            let blob = blobs.get_mut(name).ok_or(format!("blob {name}: data before its start"))?;
            if blob.ended {
                return Err(format!("blob {name}: a line after its end"));
            }
            if field == "end" {
                if blob.data.len() != blob.len {
                    return Err(format!(
                        "blob {name}: {} of {} bytes arrived",
                        blob.data.len(),
                        blob.len
                    ));
                }
                blob.ended = true;
                continue;
            }
            let (offset, hex) = field.split_once(' ').ok_or(format!("blob line {line:?}"))?;
            if offset.strip_prefix('@').and_then(|o| o.parse().ok()) != Some(blob.data.len()) {
                return Err(format!(
                    "blob {name}: line {offset} out of order (expected @{})",
                    blob.data.len()
                ));
            }
            blob.data.extend(unhex(hex).ok_or(format!("blob {name}: {offset} is not hex"))?);
            if blob.data.len() > blob.len {
                return Err(format!("blob {name}: more than its {} bytes", blob.len));
            }
        }
        blobs
            .into_iter()
            .map(|(name, blob)| {
                if blob.ended { Ok((name, blob.data)) } else { Err(format!("blob {name}: no end")) }
            })
            .collect()
    }

    fn unhex(text: &str) -> Option<Vec<u8>> {
        if !text.len().is_multiple_of(2) {
            return None;
        }
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(blobs: &[(&str, &[u8])]) -> String {
        let mut out = String::from("SVSM: noise\r\n");
        for (name, data) in blobs {
            write_blob(&mut out, name, data).unwrap();
            out.push_str("test-guest: case x: PASS: between blobs\r\n");
        }
        out
    }

    #[test]
    fn blobs_round_trip() {
        let long: Vec<u8> = (0..=255u8).cycle().take(1184).collect();
        let serial = written(&[("report", &long), ("empty", &[]), ("nonce", &[0xAB; 64])]);
        assert!(serial.contains("test-guest: blob nonce @0 abababab"));
        let blobs = parse_blobs(&serial).unwrap();
        assert_eq!(blobs.len(), 3);
        assert_eq!(blobs["report"], long);
        assert_eq!(blobs["empty"], Vec::<u8>::new());
        assert_eq!(blobs["nonce"], vec![0xAB; 64]);
    }

    #[test]
    fn damaged_blobs_are_refused() {
        let serial = written(&[("report", &[1u8; 200])]);
        let drop_line = |needle: &str| -> String {
            serial.lines().filter(|l| !l.contains(needle)).collect::<Vec<_>>().join("\n")
        };
        assert!(parse_blobs(&drop_line("@64 ")).unwrap_err().contains("out of order"));
        assert!(parse_blobs(&drop_line("@192 ")).unwrap_err().contains("192 of 200"));
        assert!(parse_blobs(&drop_line("report end")).unwrap_err().contains("no end"));
        assert!(parse_blobs(&drop_line("len=")).unwrap_err().contains("before its start"));
        let bad_hex = serial.replacen("@0 0101", "@0 01x1", 1);
        assert!(parse_blobs(&bad_hex).unwrap_err().contains("not hex"));
        let twice = format!("{serial}{serial}");
        assert!(parse_blobs(&twice).unwrap_err().contains("twice"));
    }
}
