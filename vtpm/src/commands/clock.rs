//! ReadClock, ClockSet, ClockRateAdjust.

use crate::dispatch::Cmd;
use crate::marshal::{Reader, Writer};
use crate::rc::*;
use crate::state::Tpm;

use super::end;

impl Tpm {
    /// TPMS_CLOCK_INFO, with reset/restart counts obfuscated by `obfuscate` (attestation
    /// by keys outside the endorsement/platform hierarchies).
    pub(crate) fn write_clock_info(&self, w: &mut Writer, obfuscate: Option<(u32, u32)>) {
        let (r, s) = obfuscate.unwrap_or((0, 0));
        w.u64(self.clock.clock)
            .u32(self.clock.reset_count.wrapping_add(r))
            .u32(self.clock.restart_count.wrapping_add(s))
            .u8(u8::from(self.clock.safe));
    }
}

/// TPM2_ReadClock: TPMS_TIME_INFO.
pub fn read_clock(tpm: &mut Tpm, c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    end(r)?;
    c.out.u64(tpm.clock.time);
    tpm.write_clock_info(&mut c.out, None);
    Ok(())
}

/// TPM2_ClockSet: Clock may only move forward.
pub fn clock_set(tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let new = r.u64().param(1)?;
    end(r)?;
    if new < tpm.clock.clock || new > 0xFFFF_0000_0000_0000 {
        return Err(at_param(TPM_RC_VALUE, 1));
    }
    tpm.clock.clock = new;
    Ok(())
}

/// TPM2_ClockRateAdjust: accepted; the clock follows the platform time source exactly.
pub fn clock_rate_adjust(_tpm: &mut Tpm, _c: &mut Cmd, r: &mut Reader) -> TpmResult<()> {
    let adjust = r.u8().param(1)? as i8;
    end(r)?;
    if !(-3..=3).contains(&adjust) {
        return Err(at_param(TPM_RC_VALUE, 1));
    }
    Ok(())
}
