//! The `-bios` wrapper for QEMU without an IGVM loader: converts the IGVM
//! file's native platform into the ROM loader's load table
//! (`romloader::table`) and puts it in front of the loader's code.
//!
//! Everything is derived from the IGVM file itself (parsed with the igvm
//! crate), not from build inputs, so the ROM boots exactly what the file
//! says. Parameter areas are resolved here: an insert becomes "zero the
//! area at its GPA, then write each parameter at GPA + offset".

use std::collections::HashMap;

use crate::kvm_rules::directive_name;
use abi::elf::Elf;
use anyhow::{Context, Result, bail, ensure};
use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IsolationType};
use igvm_defs::{IgvmPageDataType, IgvmPlatformType};
use romloader::table::{
    IDENTITY_MAP_LIMIT, LOADER_RAM_BASE, LOADER_RAM_END, LOADER_SIZE, MAX_ROM_SIZE, ROM_END,
    RomBuilder, StartContext, Step,
};

const PAGE_SIZE: u64 = 4096;

/// The loader's flat 64 KiB image from its ELF: every segment with file
/// data must be stored in [4 GiB - 64 KiB, 4 GiB).
pub fn loader_image(elf_bytes: &[u8]) -> Result<Vec<u8>> {
    let elf = Elf::parse(elf_bytes).map_err(|e| anyhow::anyhow!("romloader ELF: {e}"))?;
    let base = ROM_END - LOADER_SIZE;
    let mut image = vec![0u8; LOADER_SIZE as usize];
    for segment in elf.segments().filter(|s| !s.file_data.is_empty()) {
        let end = segment.paddr + segment.file_data.len() as u64;
        ensure!(
            segment.paddr >= base && end <= ROM_END,
            "romloader segment stored at {:#x}..{end:#x} is outside its 64 KiB ROM window (romloader.ld)",
            segment.paddr
        );
        let at = (segment.paddr - base) as usize;
        image[at..at + segment.file_data.len()].copy_from_slice(segment.file_data);
    }
    Ok(image)
}

/// A parameter area being filled.
struct Area {
    size: u64,
    initial: Vec<u8>,
    params: Vec<(IgvmDirectiveHeader, u32)>,
    inserted: bool,
}

/// Converts an IGVM file's native platform into a ROM image.
pub fn build_rom(igvm_bytes: &[u8], loader: &[u8]) -> Result<Vec<u8>> {
    let file = IgvmFile::new_from_binary(igvm_bytes, Some(IsolationType::NotIsolated))
        .context("parsing the IGVM file for its native platform")?;
    let native = file
        .platforms()
        .iter()
        .find_map(|p| match p {
            IgvmPlatformHeader::SupportedPlatform(p)
                if p.platform_type == IgvmPlatformType::NATIVE =>
            {
                Some(p.compatibility_mask)
            }
            _ => None,
        })
        .context("the IGVM file has no native platform")?;
    let mut table = Table::default();
    let mut areas: HashMap<u32, Area> = HashMap::new();
    let mut context = None;
    for directive in file.directives() {
        if directive.compatibility_mask().is_some_and(|m| m & native == 0) {
            continue;
        }
        match directive {
            IgvmDirectiveHeader::PageData { gpa, flags, data_type, data, .. } => {
                ensure!(
                    *data_type == IgvmPageDataType::NORMAL,
                    "native page at {gpa:#x} has type {data_type:?}"
                );
                ensure!(!flags.is_2mb_page(), "native page at {gpa:#x} is a 2 MiB page");
                table.page(*gpa, data)?;
            }
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes,
                parameter_area_index,
                initial_data,
            } => {
                let area = Area {
                    size: *number_of_bytes,
                    initial: initial_data.clone(),
                    params: Vec::new(),
                    inserted: false,
                };
                ensure!(
                    areas.insert(*parameter_area_index, area).is_none(),
                    "parameter area {parameter_area_index} declared twice"
                );
            }
            IgvmDirectiveHeader::VpCount(p)
            | IgvmDirectiveHeader::EnvironmentInfo(p)
            | IgvmDirectiveHeader::MemoryMap(p) => {
                let area = areas.get_mut(&p.parameter_area_index).with_context(|| {
                    format!("parameter of undeclared area {}", p.parameter_area_index)
                })?;
                ensure!(
                    !area.inserted,
                    "parameter for area {} after its insert",
                    p.parameter_area_index
                );
                area.params.push((directive.clone(), p.byte_offset));
            }
            IgvmDirectiveHeader::ParameterInsert(insert) => {
                let area = areas.get_mut(&insert.parameter_area_index).with_context(|| {
                    format!("insert of undeclared area {}", insert.parameter_area_index)
                })?;
                ensure!(
                    !area.inserted,
                    "parameter area {} inserted twice",
                    insert.parameter_area_index
                );
                area.inserted = true;
                table.insert(insert.gpa, area)?;
            }
            IgvmDirectiveHeader::RequiredMemory { gpa, number_of_bytes, .. } => {
                table.flush();
                table
                    .builder
                    .step(Step::RequiredMemory { gpa: *gpa, size: u64::from(*number_of_bytes) });
            }
            IgvmDirectiveHeader::X64NativeVpContext { vp_index, context: c, .. } => {
                ensure!(
                    *vp_index == 0,
                    "native VP context for vCPU {vp_index}: the ROM loader starts vCPU 0 only"
                );
                ensure!(context.is_none(), "two native VP contexts for vCPU 0");
                context = Some(start_context(c)?);
            }
            other => {
                bail!("the ROM loader cannot carry out IGVM directive {}", directive_name(other))
            }
        }
    }
    table.flush();
    let context = context.context("the IGVM file has no native VP context")?;
    check_targets(table.builder.steps())?;
    table.builder.finish(context, loader).map_err(|e| anyhow::anyhow!("building the ROM: {e:?}"))
}

/// The native VP context as the loader's start context, checked.
fn start_context(c: &igvm_defs::IgvmNativeVpContextX64) -> Result<StartContext> {
    let nonzero_64bit = [c.r8, c.r9, c.r10, c.r11, c.r12, c.r13, c.r14, c.r15, c.gs_base];
    ensure!(
        nonzero_64bit.iter().all(|&r| r == 0),
        "native VP context sets r8-r15 or gs_base, which 32-bit protected mode cannot hold"
    );
    let context = StartContext {
        rax: c.rax,
        rbx: c.rbx,
        rcx: c.rcx,
        rdx: c.rdx,
        rsi: c.rsi,
        rdi: c.rdi,
        rbp: c.rbp,
        rsp: c.rsp,
        rip: c.rip,
        rflags: c.rflags,
        cr0: c.cr0,
        cr3: c.cr3,
        cr4: c.cr4,
        efer: c.efer,
        gdtr_base: c.gdtr_base,
        idtr_base: c.idtr_base,
        gdtr_limit: c.gdtr_limit,
        idtr_limit: c.idtr_limit,
        code_selector: c.code_selector,
        data_selector: c.data_selector,
        code_attributes: c.code_attributes,
        data_attributes: c.data_attributes,
        reserved: 0,
        code_base: c.code_base,
        code_limit: c.code_limit,
        data_base: c.data_base,
        data_limit: c.data_limit,
    };
    context
        .check()
        .map_err(|e| anyhow::anyhow!("the ROM loader cannot start this context: {e}"))?;
    Ok(context)
}

/// Page runs being collected into copy and zero steps.
#[derive(Default)]
struct Table {
    builder: RomBuilder,
    run: Option<Run>,
}

struct Run {
    gpa: u64,
    zero: bool,
    data: Vec<u8>,
    pages: u64,
}

impl Table {
    /// Adds a page, extending the current run when contiguous and alike.
    fn page(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        ensure!(
            gpa.is_multiple_of(PAGE_SIZE) && data.len() as u64 <= PAGE_SIZE,
            "page at {gpa:#x} is not a 4 KiB page"
        );
        let zero = data.iter().all(|&b| b == 0);
        if let Some(run) = &self.run
            && (run.zero != zero || run.gpa + run.pages * PAGE_SIZE != gpa)
        {
            self.flush();
        }
        let run = self.run.get_or_insert(Run { gpa, zero, data: Vec::new(), pages: 0 });
        if !zero {
            run.data.extend_from_slice(data);
            run.data.resize((run.pages as usize + 1) * PAGE_SIZE as usize, 0);
        }
        run.pages += 1;
        Ok(())
    }

    fn flush(&mut self) {
        if let Some(run) = self.run.take() {
            if run.zero {
                self.builder.step(Step::Zero { gpa: run.gpa, size: run.pages * PAGE_SIZE });
            } else {
                self.builder.copy(run.gpa, &run.data);
            }
        }
    }

    /// An inserted parameter area: its initial contents (zeros unless the
    /// file gives data), then each parameter at its offset.
    fn insert(&mut self, gpa: u64, area: &Area) -> Result<()> {
        self.flush();
        ensure!(
            area.size > 0 && area.size.is_multiple_of(PAGE_SIZE) && gpa.is_multiple_of(PAGE_SIZE),
            "parameter area at {gpa:#x} is not page-sized"
        );
        if area.initial.iter().all(|&b| b == 0) {
            self.builder.step(Step::Zero { gpa, size: area.size });
        } else {
            let mut initial = area.initial.clone();
            initial.resize(area.size as usize, 0);
            self.builder.copy(gpa, &initial);
        }
        for (param, offset) in &area.params {
            let offset = u64::from(*offset);
            let room = area
                .size
                .checked_sub(offset)
                .filter(|&r| r >= 4)
                .with_context(|| format!("parameter offset {offset:#x} outside its area"))?;
            let at = gpa + offset;
            let step = match param {
                IgvmDirectiveHeader::VpCount(_) => Step::VpCount { gpa: at },
                IgvmDirectiveHeader::EnvironmentInfo(_) => Step::EnvironmentInfo { gpa: at },
                _ => Step::MemoryMap {
                    gpa: at,
                    size: room - room % romloader::table::MEMORY_MAP_ENTRY_SIZE,
                },
            };
            self.builder.step(step);
        }
        Ok(())
    }
}

/// Writes must not overlap each other (except a parameter written inside
/// its own zeroed area), the loader's RAM, or anything above the ROM floor.
fn check_targets(steps: &[Step]) -> Result<()> {
    let rom_floor = ROM_END - MAX_ROM_SIZE;
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for step in steps {
        let Some((gpa, size)) = step.written_range() else { continue };
        let end = gpa.checked_add(size).context("load range wraps")?;
        ensure!(
            end <= IDENTITY_MAP_LIMIT && end <= rom_floor,
            "load range [{gpa:#x}, {end:#x}) reaches the ROM at the top of 4 GiB"
        );
        ensure!(
            end <= LOADER_RAM_BASE || gpa >= LOADER_RAM_END,
            "load range [{gpa:#x}, {end:#x}) overlaps the ROM loader's RAM [{LOADER_RAM_BASE:#x}, {LOADER_RAM_END:#x})"
        );
        if matches!(step, Step::Copy { .. } | Step::Zero { .. }) {
            ranges.push((gpa, end));
        }
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        ensure!(
            pair[0].1 <= pair[1].0,
            "load ranges [{:#x}, {:#x}) and [{:#x}, {:#x}) overlap",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
    Ok(())
}
