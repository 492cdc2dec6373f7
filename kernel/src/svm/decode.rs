//! Instructions the dev platform intercepts without the CPU telling it
//! their length (QEMU TCG has no NRIP save): the guest's code is read
//! through its own page tables and decoded here.
//!
//! - [`GuestPaging`] translates a guest linear address as the guest's MMU
//!   would (no paging, 32-bit, PAE, 4- and 5-level long mode), with its
//!   permission checks for a read, write or fetch (the CRB emulator relies
//!   on them: an access the guest's own tables deny is not performed),
//!   reading page tables through a checked reader, so a hostile page table
//!   cannot make the SVSM read its own memory.
//! - [`decode_intercepted`] recognises VMMCALL (with or without the `rep`
//!   prefix that makes it VMGEXIT), RDMSR and WRMSR after any legacy and
//!   REX prefixes, and returns the instruction's length.

/// Reads guest-physical memory for the walker and the decoder.
pub trait GuestPhysRead {
    /// Copies `buf.len()` bytes at `gpa`; `None` if the SVSM may not.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Option<()>;
}

/// The guest's paging mode, from its control registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPaging {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const USER: u64 = 1 << 2;
const LARGE: u64 = 1 << 7;
const NO_EXECUTE: u64 = 1 << 63;
/// Physical-address bits of a 64-bit entry.
const ADDRESS_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// What an access through the guest's page tables is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

/// An access the guest makes: its kind and whether it runs at CPL 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageAccess {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// A user-mode (CPL 3) access.
    pub user: bool,
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// An entry on the way is not present.
    NotPresent,
    /// The entries deny the access (the guest would take a #PF).
    Denied,
    /// A page table lies where the SVSM may not read.
    TableNotReadable(u64),
    /// The address is not canonical.
    NonCanonical,
}

/// The rights the entries of a walk grant together: an access needs them at
/// every level.
#[derive(Clone, Copy)]
struct Rights {
    writable: bool,
    user: bool,
    no_execute: bool,
}

impl Rights {
    const ALL: Rights = Rights { writable: true, user: true, no_execute: false };

    fn and(self, entry: u64) -> Rights {
        Rights {
            writable: self.writable && entry & WRITABLE != 0,
            user: self.user && entry & USER != 0,
            no_execute: self.no_execute || entry & NO_EXECUTE != 0,
        }
    }
}

impl GuestPaging {
    /// The guest-physical address of linear address `la`, without the
    /// permission checks (for code the CPU already fetched).
    pub fn translate(&self, la: u64, memory: &dyn GuestPhysRead) -> Result<u64, WalkError> {
        self.walk(la, memory).map(|(gpa, _)| gpa)
    }

    /// The guest-physical address of linear address `la` for `access`, if
    /// the guest's entries allow it: a write needs R/W at every level (in
    /// user mode, or with CR0.WP), a user access U/S at every level, a fetch
    /// no NX bit on the way (with EFER.NXE).
    pub fn translate_for(
        &self,
        la: u64,
        access: PageAccess,
        memory: &dyn GuestPhysRead,
    ) -> Result<u64, WalkError> {
        let (gpa, rights) = self.walk(la, memory)?;
        let denied = match access.kind {
            AccessKind::Read => false,
            AccessKind::Write => !rights.writable && (access.user || self.cr0 & CR0_WP != 0),
            AccessKind::Fetch => self.efer & EFER_NXE != 0 && rights.no_execute,
        } || (access.user && !rights.user);
        if denied { Err(WalkError::Denied) } else { Ok(gpa) }
    }

    /// The walk: the guest-physical address and the rights on the way.
    fn walk(&self, la: u64, memory: &dyn GuestPhysRead) -> Result<(u64, Rights), WalkError> {
        if self.cr0 & CR0_PG == 0 {
            return Ok((la & 0xFFFF_FFFF, Rights::ALL));
        }
        if self.efer & EFER_LMA != 0 {
            let levels = if self.cr4 & CR4_LA57 != 0 { 5 } else { 4 };
            let width = 12 + 9 * levels;
            let top = la >> (width - 1);
            let all_ones = (1u64 << (64 - width + 1)) - 1;
            if top != 0 && top != all_ones {
                return Err(WalkError::NonCanonical);
            }
            return self.walk_levels(la, self.cr3 & ADDRESS_MASK, levels, memory);
        }
        let la = la & 0xFFFF_FFFF;
        if self.cr4 & CR4_PAE != 0 {
            // PAE's PDPTEs carry no rights; the walk below checks the rest.
            let pdpt = (self.cr3 & 0xFFFF_FFE0) + ((la >> 30) & 3) * 8;
            let pdpte = read_u64(memory, pdpt)?;
            if pdpte & PRESENT == 0 {
                return Err(WalkError::NotPresent);
            }
            return self.walk_levels(la, pdpte & ADDRESS_MASK, 2, memory);
        }
        self.walk32(la, memory)
    }

    /// Walks 64-bit entries from the table at `table` for `levels` levels
    /// (level 1 = page table).
    fn walk_levels(
        &self,
        la: u64,
        mut table: u64,
        levels: u32,
        memory: &dyn GuestPhysRead,
    ) -> Result<(u64, Rights), WalkError> {
        let mut rights = Rights::ALL;
        for level in (1..=levels).rev() {
            let shift = 12 + 9 * (level - 1);
            let entry = read_u64(memory, table + ((la >> shift) & 0x1FF) * 8)?;
            if entry & PRESENT == 0 {
                return Err(WalkError::NotPresent);
            }
            rights = rights.and(entry);
            let is_leaf = level == 1 || (entry & LARGE != 0 && level <= 3);
            if is_leaf {
                let page_mask = (1u64 << shift) - 1;
                return Ok(((entry & ADDRESS_MASK & !page_mask) | (la & page_mask), rights));
            }
            table = entry & ADDRESS_MASK;
        }
        Err(WalkError::NotPresent)
    }

    /// 32-bit paging: 32-bit entries, no NX.
    fn walk32(&self, la: u64, memory: &dyn GuestPhysRead) -> Result<(u64, Rights), WalkError> {
        let pde = u64::from(read_u32(memory, (self.cr3 & 0xFFFF_F000) + (la >> 22) * 4)?);
        if pde & PRESENT == 0 {
            return Err(WalkError::NotPresent);
        }
        let rights = Rights::ALL.and(pde);
        if pde & LARGE != 0 && self.cr4 & CR4_PSE != 0 {
            // 4 MiB page: bits 13..21 of the entry are address bits 32..40.
            let high = ((pde >> 13) & 0xFF) << 32;
            return Ok((high | (pde & 0xFFC0_0000) | (la & 0x3F_FFFF), rights));
        }
        let pte = u64::from(read_u32(memory, (pde & 0xFFFF_F000) + ((la >> 12) & 0x3FF) * 4)?);
        if pte & PRESENT == 0 {
            return Err(WalkError::NotPresent);
        }
        Ok(((pte & 0xFFFF_F000) | (la & 0xFFF), rights.and(pte)))
    }
}

fn read_u64(memory: &dyn GuestPhysRead, gpa: u64) -> Result<u64, WalkError> {
    let mut bytes = [0u8; 8];
    memory.read(gpa, &mut bytes).ok_or(WalkError::TableNotReadable(gpa))?;
    Ok(u64::from_le_bytes(bytes))
}

fn read_u32(memory: &dyn GuestPhysRead, gpa: u64) -> Result<u32, WalkError> {
    let mut bytes = [0u8; 4];
    memory.read(gpa, &mut bytes).ok_or(WalkError::TableNotReadable(gpa))?;
    Ok(u32::from_le_bytes(bytes))
}

/// Longest x86 instruction.
pub const MAX_INSTRUCTION_LENGTH: usize = 15;

/// Reads the instruction bytes at linear address `la`, up to
/// [`MAX_INSTRUCTION_LENGTH`] of them, stopping early at the first page the
/// guest's tables or the reader refuse (a fetch at CPL 3 if `user`).
/// Returns how many were read.
pub fn fetch(
    paging: &GuestPaging,
    la: u64,
    user: bool,
    memory: &dyn GuestPhysRead,
    out: &mut [u8; MAX_INSTRUCTION_LENGTH],
) -> Result<usize, WalkError> {
    let access = PageAccess { kind: AccessKind::Fetch, user };
    let mut done = 0;
    while done < out.len() {
        let address = la.wrapping_add(done as u64);
        let gpa = match paging.translate_for(address, access, memory) {
            Ok(gpa) => gpa,
            Err(error) if done == 0 => return Err(error),
            Err(_) => break,
        };
        let in_page = (0x1000 - (gpa & 0xFFF)) as usize;
        let chunk = in_page.min(out.len() - done);
        if memory.read(gpa, &mut out[done..done + chunk]).is_none() {
            if done == 0 {
                return Err(WalkError::TableNotReadable(gpa));
            }
            break;
        }
        done += chunk;
    }
    Ok(done)
}

/// An instruction the dev platform intercepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intercepted {
    /// VMMCALL; `rep` = with an F3 prefix, i.e. VMGEXIT.
    Vmmcall {
        /// Whether an F3 (`rep`) prefix precedes it.
        rep: bool,
    },
    /// RDMSR.
    Rdmsr,
    /// WRMSR.
    Wrmsr,
}

/// Decodes the intercepted instruction at the start of `bytes` (the bytes
/// that could be read, at most 15); returns it and its length, or `None`
/// if the bytes are not one of them (the guest changed its code, or the
/// exit was not for what the bytes say). `long_mode` = a 64-bit code
/// segment, where 0x40-0x4F are REX prefixes.
pub fn decode_intercepted(bytes: &[u8], long_mode: bool) -> Option<(Intercepted, usize)> {
    let mut rep = false;
    let mut at = 0;
    while at < bytes.len().min(MAX_INSTRUCTION_LENGTH) {
        match bytes[at] {
            0xF3 => rep = true,
            0xF2 | 0xF0 | 0x66 | 0x67 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 => {}
            0x40..=0x4F if long_mode => {}
            _ => break,
        }
        at += 1;
    }
    let rest = bytes.get(at..)?;
    let (instruction, length) = match rest {
        [0x0F, 0x01, 0xD9, ..] => (Intercepted::Vmmcall { rep }, at + 3),
        [0x0F, 0x32, ..] => (Intercepted::Rdmsr, at + 2),
        [0x0F, 0x30, ..] => (Intercepted::Wrmsr, at + 2),
        _ => return None,
    };
    (length <= MAX_INSTRUCTION_LENGTH).then_some((instruction, length))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// Guest memory as a map of 8-byte words; addresses at or above
    /// `forbidden` are refused.
    struct Memory {
        bytes: BTreeMap<u64, u8>,
        forbidden: u64,
    }

    impl Memory {
        fn new() -> Memory {
            Memory { bytes: BTreeMap::new(), forbidden: u64::MAX }
        }
        fn put64(&mut self, gpa: u64, value: u64) {
            for (i, b) in value.to_le_bytes().iter().enumerate() {
                self.bytes.insert(gpa + i as u64, *b);
            }
        }
        fn put32(&mut self, gpa: u64, value: u32) {
            for (i, b) in value.to_le_bytes().iter().enumerate() {
                self.bytes.insert(gpa + i as u64, *b);
            }
        }
        fn put(&mut self, gpa: u64, bytes: &[u8]) {
            for (i, b) in bytes.iter().enumerate() {
                self.bytes.insert(gpa + i as u64, *b);
            }
        }
    }

    impl GuestPhysRead for Memory {
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
            if gpa.checked_add(buf.len() as u64)? > self.forbidden {
                return None;
            }
            for (i, b) in buf.iter_mut().enumerate() {
                *b = *self.bytes.get(&(gpa + i as u64)).unwrap_or(&0);
            }
            Some(())
        }
    }

    const LONG: GuestPaging =
        GuestPaging { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PAE, efer: EFER_LMA | (1 << 8) };

    /// A 4-level table: 0xFFFF_8000_0020_3000 -> 0x5_3000 (4K), and
    /// 0x4000_0000.. -> 0x8000_0000 (1G page), 0x20_0000.. -> 0x60_0000 (2M).
    fn long_mode_tables() -> Memory {
        let mut m = Memory::new();
        m.put64(0x1000 + 256 * 8, 0x2000 | 3);
        m.put64(0x2000, 0x3000 | 3);
        m.put64(0x3000 + 8, 0x4000 | 3);
        m.put64(0x4000 + 3 * 8, 0x5_3000 | 3);
        m.put64(0x1000, 0x6000 | 3);
        m.put64(0x6000 + 8, 0x8000_0000 | LARGE | 3);
        m.put64(0x6000, 0x7000 | 3);
        m.put64(0x7000 + 8, 0x60_0000 | LARGE | 3);
        m
    }

    #[test]
    fn walks_long_mode_tables_with_every_page_size() {
        let m = long_mode_tables();
        assert_eq!(LONG.translate(0xFFFF_8000_0020_3123, &m), Ok(0x5_3123));
        assert_eq!(LONG.translate(0x4123_4567, &m), Ok(0x8123_4567));
        assert_eq!(LONG.translate(0x2F_FFFF, &m), Ok(0x6F_FFFF));
        assert_eq!(LONG.translate(0xFFFF_8000_0020_4000, &m), Err(WalkError::NotPresent));
        assert_eq!(LONG.translate(0x0000_8000_0000_0000, &m), Err(WalkError::NonCanonical));
    }

    #[test]
    fn hostile_tables_pointing_at_refused_memory_fail() {
        let mut m = long_mode_tables();
        m.put64(0x4000 + 3 * 8, 0x5_3000 | 3);
        m.put64(0x3000 + 8, 0x800_0000 | 3);
        m.forbidden = 0x800_0000;
        assert_eq!(
            LONG.translate(0xFFFF_8000_0020_3000, &m),
            Err(WalkError::TableNotReadable(0x800_0000 + 3 * 8))
        );
    }

    #[test]
    fn permissions_are_those_of_every_level() {
        const READ: PageAccess = PageAccess { kind: AccessKind::Read, user: false };
        const WRITE: PageAccess = PageAccess { kind: AccessKind::Write, user: false };
        const FETCH: PageAccess = PageAccess { kind: AccessKind::Fetch, user: false };
        const USER_READ: PageAccess = PageAccess { kind: AccessKind::Read, user: true };
        const USER_WRITE: PageAccess = PageAccess { kind: AccessKind::Write, user: true };
        let la = 0xFFFF_8000_0020_3123;
        // Supervisor, writable everywhere: reads, writes and fetches pass,
        // user accesses do not.
        let mut m = long_mode_tables();
        assert_eq!(LONG.translate_for(la, WRITE, &m), Ok(0x5_3123));
        assert_eq!(LONG.translate_for(la, FETCH, &m), Ok(0x5_3123));
        assert_eq!(LONG.translate_for(la, USER_READ, &m), Err(WalkError::Denied));
        // U/S at every level but the PDPT's: still no user access.
        m.put64(0x1000 + 256 * 8, 0x2000 | 7);
        m.put64(0x3000 + 8, 0x4000 | 7);
        m.put64(0x4000 + 3 * 8, 0x5_3000 | 7);
        assert_eq!(LONG.translate_for(la, USER_READ, &m), Err(WalkError::Denied));
        m.put64(0x2000, 0x3000 | 7);
        assert_eq!(LONG.translate_for(la, USER_WRITE, &m), Ok(0x5_3123));
        // Read-only leaf: supervisor writes pass without CR0.WP only.
        m.put64(0x4000 + 3 * 8, 0x5_3000 | 5);
        assert_eq!(LONG.translate_for(la, USER_WRITE, &m), Err(WalkError::Denied));
        assert_eq!(LONG.translate_for(la, WRITE, &m), Ok(0x5_3123));
        let wp = GuestPaging { cr0: LONG.cr0 | CR0_WP, ..LONG };
        assert_eq!(wp.translate_for(la, WRITE, &m), Err(WalkError::Denied));
        assert_eq!(wp.translate_for(la, READ, &m), Ok(0x5_3123));
        // NX in a directory entry: no fetch with EFER.NXE, fetch without.
        m.put64(0x3000 + 8, 0x4000 | 7 | NO_EXECUTE);
        let nxe = GuestPaging { efer: LONG.efer | EFER_NXE, ..LONG };
        assert_eq!(nxe.translate_for(la, FETCH, &m), Err(WalkError::Denied));
        assert_eq!(nxe.translate_for(la, READ, &m), Ok(0x5_3123));
        assert_eq!(LONG.translate_for(la, FETCH, &m), Ok(0x5_3123));
        // Without the checks, the address is the same.
        assert_eq!(nxe.translate(la, &m), Ok(0x5_3123));
    }

    #[test]
    fn legacy_modes_check_permissions_too() {
        const WRITE: PageAccess = PageAccess { kind: AccessKind::Write, user: false };
        const USER_READ: PageAccess = PageAccess { kind: AccessKind::Read, user: true };
        // 32-bit paging: a user page behind a supervisor directory entry.
        let mut m = Memory::new();
        m.put32(0x1000 + 4, 0x2000 | 3);
        m.put32(0x2000 + 5 * 4, 0x9000 | 7);
        let paged32 = GuestPaging { cr0: CR0_PG | CR0_WP | 1, cr3: 0x1000, cr4: 0, efer: 0 };
        assert_eq!(paged32.translate_for(0x40_5ABC, USER_READ, &m), Err(WalkError::Denied));
        assert_eq!(paged32.translate_for(0x40_5ABC, WRITE, &m), Ok(0x9ABC));
        // PAE: a read-only 2M page with CR0.WP.
        let mut m = Memory::new();
        m.put64(0x1000 + 8, 0x3000 | 1);
        m.put64(0x3000, 0x20_0000 | LARGE | 1);
        let pae = GuestPaging { cr0: CR0_PG | CR0_WP | 1, cr3: 0x1000, cr4: CR4_PAE, efer: 0 };
        assert_eq!(pae.translate_for(0x4001_2345, WRITE, &m), Err(WalkError::Denied));
    }

    #[test]
    fn walks_legacy_modes() {
        let real = GuestPaging { cr0: 0x10, cr3: 0, cr4: 0, efer: 0 };
        let m = Memory::new();
        assert_eq!(real.translate(0x1_0000_FFF0, &m), Ok(0xFFF0), "32-bit linear addresses");
        // 32-bit paging, 4K and 4M pages.
        let mut m = Memory::new();
        m.put32(0x1000 + 4, 0x2000 | 3);
        m.put32(0x2000 + 5 * 4, 0x9000 | 3);
        m.put32(0x1000 + 8, 0x0040_0000 | LARGE as u32 | 3);
        let paged32 = GuestPaging { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PSE, efer: 0 };
        assert_eq!(paged32.translate(0x40_5ABC, &m), Ok(0x9ABC));
        assert_eq!(paged32.translate(0x80_1234, &m), Ok(0x40_1234));
        // PAE: PDPT at CR3, 2M page.
        let mut m = Memory::new();
        m.put64(0x1000 + 8, 0x3000 | 1);
        m.put64(0x3000, 0x20_0000 | LARGE | 3);
        let pae = GuestPaging { cr0: CR0_PG | 1, cr3: 0x1000, cr4: CR4_PAE, efer: 0 };
        assert_eq!(pae.translate(0x4001_2345, &m), Ok(0x21_2345));
    }

    #[test]
    fn decodes_the_intercepted_instructions_and_their_prefixes() {
        assert_eq!(
            decode_intercepted(&[0x0F, 0x01, 0xD9], true),
            Some((Intercepted::Vmmcall { rep: false }, 3))
        );
        assert_eq!(
            decode_intercepted(&[0xF3, 0x0F, 0x01, 0xD9, 0x90], true),
            Some((Intercepted::Vmmcall { rep: true }, 4))
        );
        assert_eq!(decode_intercepted(&[0x0F, 0x32], false), Some((Intercepted::Rdmsr, 2)));
        assert_eq!(decode_intercepted(&[0x48, 0x0F, 0x30], true), Some((Intercepted::Wrmsr, 3)));
        assert_eq!(
            decode_intercepted(&[0x48, 0x0F, 0x30], false),
            None,
            "0x48 is DEC outside long mode"
        );
        assert_eq!(
            decode_intercepted(&[0x66, 0x2E, 0xF3, 0x0F, 0x01, 0xD9], false),
            Some((Intercepted::Vmmcall { rep: true }, 6))
        );
        assert_eq!(decode_intercepted(&[0x0F, 0x01, 0xD8], true), None, "VMRUN is not VMMCALL");
        assert_eq!(decode_intercepted(&[0x0F, 0x01], true), None, "cut short");
        assert_eq!(decode_intercepted(&[0x66; 15], true), None, "prefixes only");
        let mut long = [0x66u8; 15];
        long[12..].copy_from_slice(&[0x0F, 0x01, 0xD9]);
        assert_eq!(
            decode_intercepted(&long, true),
            Some((Intercepted::Vmmcall { rep: false }, 15))
        );
        let mut too_long = [0x66u8; 16];
        too_long[13..].copy_from_slice(&[0x0F, 0x01, 0xD9]);
        assert_eq!(decode_intercepted(&too_long, true), None, "over 15 bytes");
    }

    #[test]
    fn fetch_reads_across_pages_and_stops_at_refused_ones() {
        let mut m = long_mode_tables();
        // The instruction straddles 0x5_3FFE..0x5_4001; map the next page.
        m.put64(0x4000 + 4 * 8, 0x5_7000 | 3);
        m.put(0x5_3FFE, &[0xF3, 0x0F]);
        m.put(0x5_7000, &[0x01, 0xD9]);
        let mut out = [0u8; MAX_INSTRUCTION_LENGTH];
        let n = fetch(&LONG, 0xFFFF_8000_0020_3FFE, false, &m, &mut out).unwrap();
        assert_eq!(n, 15);
        assert_eq!(
            decode_intercepted(&out[..n], true),
            Some((Intercepted::Vmmcall { rep: true }, 4))
        );
        // With the second page unmapped, only two bytes come back.
        m.put64(0x4000 + 4 * 8, 0);
        let n = fetch(&LONG, 0xFFFF_8000_0020_3FFE, false, &m, &mut out).unwrap();
        assert_eq!(n, 2);
        assert_eq!(decode_intercepted(&out[..n], true), None);
    }
}
