//! The parser and the replay against a real log (OVMF on swtpm, see
//! tests/linux/fixtures/README.md) and hand-built ones.

use super::*;

const FIXTURE_LOG: &[u8] =
    include_bytes!("../../../../tests/linux/fixtures/swtpm-ovmf/binary_bios_measurements");
const FIXTURE_PCRS: &str = include_str!("../../../../tests/linux/fixtures/swtpm-ovmf/pcrs.txt");

/// The fixture's PCRs: algorithm -> 24 values.
fn fixture_pcrs() -> Banks {
    let mut banks = Banks::new();
    for line in FIXTURE_PCRS.lines() {
        let words: Vec<_> = line.split_whitespace().collect();
        let algorithm = bank_algorithm(words[1]).unwrap();
        let index: usize = words[2].parse().unwrap();
        let value = (0..words[3].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&words[3][i..i + 2], 16).unwrap())
            .collect();
        banks.entry(algorithm).or_insert_with(|| vec![Vec::new(); PCR_COUNT])[index] = value;
    }
    banks
}

#[test]
fn real_log_parses_with_its_spec_id_algorithms() {
    let log = parse(FIXTURE_LOG).unwrap();
    assert_eq!(
        log.algorithms,
        [(TPM_ALG_SHA1, 20), (TPM_ALG_SHA256, 32), (TPM_ALG_SHA384, 48), (TPM_ALG_SHA512, 64)]
    );
    assert_eq!(log.events.len(), 28);
    assert!(log.events.iter().all(|e| e.digests.len() == 4));
    // One separator (EV_SEPARATOR) in each of PCR 0-7 (OVMF logs PCR 7's first).
    let mut separators: Vec<u32> =
        log.events.iter().filter(|e| e.event_type == 0x4).map(|e| e.pcr).collect();
    separators.sort_unstable();
    assert_eq!(separators, [0, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn real_log_replays_to_the_tpms_pcrs_in_every_bank() {
    let replayed = replay(&parse(FIXTURE_LOG).unwrap());
    let tpm = fixture_pcrs();
    assert_eq!(replayed.keys().collect::<Vec<_>>(), tpm.keys().collect::<Vec<_>>());
    for (algorithm, pcrs) in &tpm {
        for index in 0..=7 {
            assert_eq!(replayed[algorithm][index], pcrs[index], "bank {algorithm:#x} PCR {index}");
        }
    }
}

#[test]
fn a_changed_digest_changes_only_its_pcr() {
    let mut log = parse(FIXTURE_LOG).unwrap();
    let event = log.events.iter_mut().find(|e| e.pcr == 4 && e.event_type != EV_NO_ACTION).unwrap();
    event.digests[1].1[0] ^= 1;
    let replayed = replay(&log);
    let tpm = fixture_pcrs();
    for index in 0..=7 {
        let same = replayed[&TPM_ALG_SHA256][index] == tpm[&TPM_ALG_SHA256][index];
        assert_eq!(same, index != 4, "PCR {index}");
    }
    assert_eq!(replayed[&TPM_ALG_SHA1][4], tpm[&TPM_ALG_SHA1][4], "the SHA-1 bank is untouched");
}

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    for len in 0..FIXTURE_LOG.len() {
        // Cuts at event boundaries are valid shorter logs; everything else errs.
        if let Ok(log) = parse(&FIXTURE_LOG[..len]) {
            assert!(log.events.len() < 28);
        }
    }
    assert_eq!(
        parse(&FIXTURE_LOG[..10]),
        Err(EventLogError::Truncated { what: "the first event", offset: 8 })
    );
}

/// A log with the given algorithms and raw events (already encoded).
fn synthetic(algorithms: &[(u16, u16)], events: &[u8]) -> Vec<u8> {
    let mut spec = SPEC_ID_SIGNATURE.to_vec();
    spec.extend_from_slice(&0u32.to_le_bytes());
    spec.extend_from_slice(&[0, 2, 0, 2]);
    spec.extend_from_slice(&(algorithms.len() as u32).to_le_bytes());
    for (alg, size) in algorithms {
        spec.extend_from_slice(&alg.to_le_bytes());
        spec.extend_from_slice(&size.to_le_bytes());
    }
    spec.push(0);
    let mut log = Vec::new();
    log.extend_from_slice(&0u32.to_le_bytes());
    log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
    log.extend_from_slice(&[0; 20]);
    log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
    log.extend_from_slice(&spec);
    log.extend_from_slice(events);
    log
}

fn event2(pcr: u32, event_type: u32, digests: &[(u16, &[u8])], data: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(&pcr.to_le_bytes());
    e.extend_from_slice(&event_type.to_le_bytes());
    e.extend_from_slice(&(digests.len() as u32).to_le_bytes());
    for (alg, digest) in digests {
        e.extend_from_slice(&alg.to_le_bytes());
        e.extend_from_slice(digest);
    }
    e.extend_from_slice(&(data.len() as u32).to_le_bytes());
    e.extend_from_slice(data);
    e
}

#[test]
fn replay_extends_and_honours_the_startup_locality() {
    let digest = [0x11u8; 32];
    let mut locality = STARTUP_LOCALITY_SIGNATURE.to_vec();
    locality.push(3);
    let events = [
        event2(0, EV_NO_ACTION, &[(TPM_ALG_SHA256, &[0; 32])], &locality),
        event2(0, 0x8, &[(TPM_ALG_SHA256, &digest)], b"crtm"),
        event2(5, 0x80000007, &[(TPM_ALG_SHA256, &digest)], b""),
        event2(5, EV_NO_ACTION, &[(TPM_ALG_SHA256, &digest)], b"not extended"),
    ]
    .concat();
    let log = parse(&synthetic(&[(TPM_ALG_SHA256, 32)], &events)).unwrap();
    let banks = replay(&log);
    let mut start = [0u8; 32];
    start[31] = 3;
    let pcr0: Vec<u8> = Sha256::new().chain_update(start).chain_update(digest).finalize().to_vec();
    let pcr5: Vec<u8> =
        Sha256::new().chain_update([0u8; 32]).chain_update(digest).finalize().to_vec();
    assert_eq!(banks[&TPM_ALG_SHA256][0], pcr0);
    assert_eq!(banks[&TPM_ALG_SHA256][5], pcr5);
    assert_eq!(banks[&TPM_ALG_SHA256][1], vec![0u8; 32]);
}

#[test]
fn malformed_logs_are_rejected_with_the_reason() {
    // A SHA-1-only (TPM 1.2 style) log: no Spec ID event.
    let mut sha1_log = vec![0u8; 32];
    sha1_log[4] = 0x8;
    assert_eq!(parse(&sha1_log), Err(EventLogError::NotCryptoAgile));
    // A digest of an algorithm the Spec ID event does not list.
    let events = event2(0, 0x8, &[(TPM_ALG_SHA384, &[0; 48])], b"");
    let log = synthetic(&[(TPM_ALG_SHA256, 32)], &events);
    assert!(matches!(
        parse(&log),
        Err(EventLogError::UnknownAlgorithm { algorithm: TPM_ALG_SHA384, .. })
    ));
    // A PCR beyond 23.
    let events = event2(24, 0x8, &[(TPM_ALG_SHA256, &[0; 32])], b"");
    let log = synthetic(&[(TPM_ALG_SHA256, 32)], &events);
    assert_eq!(parse(&log), Err(EventLogError::BadPcr { index: 1, pcr: 24 }));
    // A huge event size does not allocate or panic.
    let mut events = event2(0, 0x8, &[(TPM_ALG_SHA256, &[0; 32])], b"");
    let size_at = events.len() - 4;
    events[size_at..].copy_from_slice(&u32::MAX.to_le_bytes());
    let log = synthetic(&[(TPM_ALG_SHA256, 32)], &events);
    assert!(matches!(parse(&log), Err(EventLogError::Truncated { what: "event data", .. })));
}
