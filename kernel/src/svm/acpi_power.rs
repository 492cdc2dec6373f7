//! The guest's ACPI power-off on the dev platform.
//!
//! A stock guest powers off by writing SLP_TYP and SLP_EN to the ACPI PM1a
//! control register; QEMU ends the VM on that write at once. The SVSM must
//! see it first: the vTPM's state is wiped and its final PCRs are reported
//! at shutdown, and an orderly power-off should end the VM with success.
//! So the dev platform intercepts the register's ports, ends the VM itself
//! for a power-off, and passes every other access through.
//!
//! Facts: q35's PM1a control register is PMBASE + 4, 16 bits (ACPI 6.5
//! section 4.8.3.2.1: SLP_TYP bits 10-12, SLP_EN bit 13). OVMF programs
//! PMBASE to 0x600 on q35 (`ICH9_PMBASE_VALUE`), and the FADT QEMU builds
//! from the chipset names 0x604. QEMU's DSDT `_S5` package is 0: SLP_TYP 0
//! with SLP_EN is the soft-off QEMU acts on (`acpi_pm1_cnt_write`).

/// The first port of the PM1a control register on q35 under OVMF.
pub const PM1A_CONTROL_PORT: u16 = 0x604;
/// The ports the dev platform intercepts for it.
pub const PORTS: [u16; 2] = [PM1A_CONTROL_PORT, PM1A_CONTROL_PORT + 1];

const SLEEP_ENABLE: u32 = 1 << 13;
const SLEEP_TYPE_SHIFT: u32 = 10;
const SLEEP_TYPE_MASK: u32 = 0b111;
/// QEMU's `_S5` sleep type.
const SOFT_OFF_SLEEP_TYPE: u32 = 0;

/// Whether an OUT of `size` bytes of `value` at `port` asks for soft-off:
/// it writes the register's high byte (SLP_TYP and SLP_EN) with SLP_EN set
/// and the S5 sleep type.
pub fn is_soft_off(port: u16, size: u8, value: u32) -> bool {
    let Some(offset) = port.checked_sub(PM1A_CONTROL_PORT) else {
        return false;
    };
    let writes_high_byte = offset <= 1 && u32::from(offset) + u32::from(size) >= 2;
    if !writes_high_byte {
        return false;
    }
    let register = (value << (8 * u32::from(offset))) & 0xFFFF;
    register & SLEEP_ENABLE != 0
        && (register >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK == SOFT_OFF_SLEEP_TYPE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_and_ovmf_soft_off_is_recognised() {
        // Linux's acpi_hw_write_pm1_control for _S5 = 0: SLP_EN alone,
        // written as 16 bits; SCI_EN (bit 0) stays set.
        assert!(is_soft_off(0x604, 2, 0x2001));
        assert!(is_soft_off(0x604, 2, 0x2000));
        // The high byte alone, and a 32-bit write covering the register.
        assert!(is_soft_off(0x605, 1, 0x20));
        assert!(is_soft_off(0x604, 4, 0x0000_2001));
    }

    #[test]
    fn other_writes_pass_through() {
        // SLP_TYP written without SLP_EN (the first of Linux's two writes).
        assert!(!is_soft_off(0x604, 2, 0x0001));
        // Suspend to RAM (SLP_TYP 1) and another sleep type.
        assert!(!is_soft_off(0x604, 2, 0x2401));
        assert!(!is_soft_off(0x604, 2, 0x2801));
        // The low byte alone cannot hold SLP_EN.
        assert!(!is_soft_off(0x604, 1, 0xFF));
        // Other ports.
        assert!(!is_soft_off(0x600, 2, 0x2000));
        assert!(!is_soft_off(0x606, 2, 0x2000));
        assert!(!is_soft_off(0x603, 2, 0x2000));
    }
}
