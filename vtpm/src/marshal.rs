//! Strict big-endian marshalling of TPM 2.0 wire data. Every read is bounds checked and fails
//! with TPM_RC_INSUFFICIENT (truncated) or TPM_RC_SIZE (a TPM2B larger than its type allows);
//! nothing here can panic on hostile input.

use alloc::vec::Vec;

use crate::rc::{TPM_RC_INSUFFICIENT, TPM_RC_SIZE, TPM_RC_VALUE, TpmResult};

/// A cursor over untrusted input.
#[derive(Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The unread rest of the input.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn bytes(&mut self, n: usize) -> TpmResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(TPM_RC_INSUFFICIENT);
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> TpmResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> TpmResult<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> TpmResult<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> TpmResult<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> TpmResult<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// TPMI_YES_NO: 0 or 1, anything else is TPM_RC_VALUE.
    pub fn bool(&mut self) -> TpmResult<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(TPM_RC_VALUE),
        }
    }

    /// A TPM2B: UINT16 size then that many octets, at most `max`.
    pub fn tpm2b(&mut self, max: usize) -> TpmResult<&'a [u8]> {
        let size = usize::from(self.u16()?);
        if size > max {
            return Err(TPM_RC_SIZE);
        }
        self.bytes(size)
    }

    /// A TPM2B copied into a vector.
    pub fn tpm2b_vec(&mut self, max: usize) -> TpmResult<Vec<u8>> {
        Ok(self.tpm2b(max)?.to_vec())
    }
}

/// A growing output buffer.
#[derive(Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }

    /// A TPM2B. Callers only pass buffers bounded by TPM limits (far below 64 KiB).
    pub fn tpm2b(&mut self, v: &[u8]) -> &mut Self {
        let size = u16::try_from(v.len()).expect("TPM2B contents are bounded by TPM limits");
        self.u16(size).bytes(v)
    }

    /// Writes a TPM2B whose contents are produced by `f` (size patched afterwards).
    pub fn sized(&mut self, f: impl FnOnce(&mut Writer)) -> &mut Self {
        let at = self.buf.len();
        self.u16(0);
        f(self);
        let size = u16::try_from(self.buf.len() - at - 2)
            .expect("nested TPM2B contents are bounded by TPM limits");
        self.buf[at..at + 2].copy_from_slice(&size.to_be_bytes());
        self
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Marshals a value produced by `f` into a fresh vector.
pub fn to_vec(f: impl FnOnce(&mut Writer)) -> Vec<u8> {
    let mut w = Writer::new();
    f(&mut w);
    w.buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let mut r = Reader::new(&[0x00, 0x03, 0xAA, 0xBB]);
        assert_eq!(r.clone().tpm2b(2), Err(TPM_RC_SIZE));
        assert_eq!(r.tpm2b(8), Err(TPM_RC_INSUFFICIENT));
        let mut r = Reader::new(&[0x12, 0x34, 0x56]);
        assert_eq!(r.u16(), Ok(0x1234));
        assert_eq!(r.u16(), Err(TPM_RC_INSUFFICIENT));
        assert_eq!(r.u8(), Ok(0x56));
        assert!(r.is_empty());
    }

    #[test]
    fn sized_patches_length() {
        let v = to_vec(|w| {
            w.sized(|w| {
                w.u32(0xDEADBEEF);
            });
        });
        assert_eq!(v, [0, 4, 0xDE, 0xAD, 0xBE, 0xEF]);
    }
}
