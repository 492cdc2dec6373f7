//! Turns a `vtpm-sim -vvv` log (real client traffic: tpm2-tools, tss-esapi)
//! into seed inputs for the `execute` target: the commands of each client,
//! in order, cut into runs of up to 24 commands, one corpus file per run.
//!
//! Usage: seed-corpus LOG OUTPUT_DIR

use std::collections::BTreeMap;
use std::fmt::Write as _;

const RUN: usize = 24;

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [log, out] = args.as_slice() else {
        return Err("usage: seed-corpus VTPM_SIM_VVV_LOG OUTPUT_DIR".into());
    };
    let text = std::fs::read_to_string(log).map_err(|e| format!("reading {log}: {e}"))?;
    std::fs::create_dir_all(out).map_err(|e| format!("creating {out}: {e}"))?;
    // "client N loc L: cc ..." is followed by "  command  HEX".
    let mut streams: BTreeMap<u32, Vec<(u8, Vec<u8>)>> = BTreeMap::new();
    let mut current: Option<(u32, u8)> = None;
    for line in text.lines() {
        let line = line.split_once("] ").map_or(line, |(_, rest)| rest);
        if let Some(rest) = line.strip_prefix("client ") {
            let mut words = rest.split_whitespace();
            let client = words.next().and_then(|w| w.parse().ok());
            let locality = words.nth(1).and_then(|w| w.trim_end_matches(':').parse().ok());
            current = client.zip(locality);
        } else if let Some(hex) = line.trim_start().strip_prefix("command  ")
            && let (Some((client, locality)), Some(bytes)) = (current.take(), unhex(hex.trim()))
        {
            streams.entry(client).or_default().push((locality, bytes));
        }
    }
    let mut files = 0;
    for (client, commands) in &streams {
        for run in commands.chunks(RUN) {
            let mut input = Vec::new();
            for (locality, command) in run {
                let Ok(len) = u16::try_from(command.len()) else { continue };
                input.push((client % 4) as u8 | (locality & 7) << 2);
                input.extend_from_slice(&len.to_be_bytes());
                input.extend_from_slice(command);
            }
            let mut name = String::new();
            for b in &input[..input.len().min(8)] {
                let _ = write!(name, "{b:02x}");
            }
            std::fs::write(format!("{out}/seed-{files:05}-{name}"), &input)
                .map_err(|e| e.to_string())?;
            files += 1;
        }
    }
    println!("{files} seed inputs from {} clients", streams.len());
    Ok(())
}
