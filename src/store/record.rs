//! The versioned on-disk encoding of a [`PlayerRecord`], shared by every backend.
//!
//! ```text
//! offset  size  field
//! 0       4     magic b"ZHPR"
//! 4       2     record layout version, u16 little-endian (1 or 2; see below)
//! 6       4     CRC-32 (IEEE) of the body, u32 little-endian
//! 10      ..    body: postcard encoding of the layout named by the version
//! ```
//!
//! Layouts:
//! - **v1**: the first release: no `level` and no `xp`.
//! - **v2** (current, [`RECORD_VERSION`]): adds `level: u32` and `xp: u64`. A v1 record is
//!   migrated on load with `level = 1, xp = 0`; the next save writes v2.
//!
//! Adding a layout: freeze the current body struct under a new name, add the new one, bump
//! [`RECORD_VERSION`] and add one `migrate_vN` step; decoding walks every step in order.
//! Anything that does not decode (short, wrong magic, bad checksum, unknown version, bad
//! body, or a body for another player) is [`StoreError::Corrupt`] with the player id:
//! the server reports it and keeps serving everyone else.

use serde::{Deserialize, Serialize};

use super::{PlayerRecord, StoreError};

pub use super::types::RECORD_VERSION;
/// The oldest layout this build can migrate from.
pub const OLDEST_RECORD_VERSION: u16 = 1;

const MAGIC: &[u8; 4] = b"ZHPR";
const HEADER_LEN: usize = 10;

/// Layout v1 (frozen: never change it).
#[derive(Debug, Serialize, Deserialize)]
struct BodyV1 {
    player_id: u64,
    name: String,
    epoch: u64,
    seq: u64,
    zone: u16,
    x_mm: i32,
    y_mm: i32,
    gold: u64,
    state: Vec<u8>,
    saved_at_ms: u64,
}

/// Layout v2 (current).
#[derive(Debug, Serialize, Deserialize)]
struct BodyV2 {
    player_id: u64,
    name: String,
    epoch: u64,
    seq: u64,
    zone: u16,
    x_mm: i32,
    y_mm: i32,
    level: u32,
    xp: u64,
    gold: u64,
    state: Vec<u8>,
    saved_at_ms: u64,
}

fn migrate_v1(v1: BodyV1) -> BodyV2 {
    BodyV2 {
        player_id: v1.player_id,
        name: v1.name,
        epoch: v1.epoch,
        seq: v1.seq,
        zone: v1.zone,
        x_mm: v1.x_mm,
        y_mm: v1.y_mm,
        level: 1,
        xp: 0,
        gold: v1.gold,
        state: v1.state,
        saved_at_ms: v1.saved_at_ms,
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), table built at compile time.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

fn frame(version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&crc32(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn invalid(reason: String) -> StoreError {
    StoreError::Invalid { reason }
}

/// Encodes `record` in the current layout ([`RECORD_VERSION`]); its `schema_version`
/// field is ignored (a save always writes the current layout).
pub fn encode(record: &PlayerRecord) -> Result<Vec<u8>, StoreError> {
    let body = BodyV2 {
        player_id: record.player_id,
        name: record.name.clone(),
        epoch: record.epoch,
        seq: record.seq,
        zone: record.zone,
        x_mm: record.x_mm,
        y_mm: record.y_mm,
        level: record.level,
        xp: record.xp,
        gold: record.gold,
        state: record.state.clone(),
        saved_at_ms: record.saved_at_ms,
    };
    let bytes = postcard::to_allocvec(&body)
        .map_err(|e| invalid(format!("encoding player {}: {e}", record.player_id)))?;
    Ok(frame(RECORD_VERSION, &bytes))
}

/// Encodes `record` in the legacy v1 layout (dropping `level` and `xp`). Only for tests
/// and tools that need an old record on disk to exercise the migration path.
pub fn encode_v1(record: &PlayerRecord) -> Result<Vec<u8>, StoreError> {
    let body = BodyV1 {
        player_id: record.player_id,
        name: record.name.clone(),
        epoch: record.epoch,
        seq: record.seq,
        zone: record.zone,
        x_mm: record.x_mm,
        y_mm: record.y_mm,
        gold: record.gold,
        state: record.state.clone(),
        saved_at_ms: record.saved_at_ms,
    };
    let bytes = postcard::to_allocvec(&body)
        .map_err(|e| invalid(format!("encoding player {}: {e}", record.player_id)))?;
    Ok(frame(1, &bytes))
}

/// The layout version in an encoded record's header, if the header is intact.
pub fn peek_version(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return None;
    }
    Some(u16::from_le_bytes([bytes[4], bytes[5]]))
}

/// Decodes a record stored under `player_id`, migrating older layouts to the current one.
/// The returned record's `schema_version` is the layout found on disk.
pub fn decode(player_id: u64, bytes: &[u8]) -> Result<PlayerRecord, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { player_id, reason };
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "record is {} bytes, shorter than its {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if &bytes[..4] != MAGIC {
        return Err(corrupt("bad magic (not a player record)".into()));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    let crc = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let body = &bytes[HEADER_LEN..];
    if crc32(body) != crc {
        return Err(corrupt("checksum mismatch".into()));
    }
    let v2 = match version {
        1 => migrate_v1(
            postcard::from_bytes::<BodyV1>(body)
                .map_err(|e| corrupt(format!("v1 body does not decode: {e}")))?,
        ),
        2 => postcard::from_bytes::<BodyV2>(body)
            .map_err(|e| corrupt(format!("v2 body does not decode: {e}")))?,
        v => {
            return Err(corrupt(format!(
                "unknown record version {v} (this build reads {OLDEST_RECORD_VERSION}..={RECORD_VERSION})"
            )))
        }
    };
    if v2.player_id != player_id {
        return Err(corrupt(format!(
            "record belongs to player {} (stored under the wrong key)",
            v2.player_id
        )));
    }
    Ok(PlayerRecord {
        player_id: v2.player_id,
        name: v2.name,
        schema_version: u32::from(version),
        epoch: v2.epoch,
        seq: v2.seq,
        zone: v2.zone,
        x_mm: v2.x_mm,
        y_mm: v2.y_mm,
        level: v2.level,
        xp: v2.xp,
        gold: v2.gold,
        state: v2.state,
        saved_at_ms: v2.saved_at_ms,
    })
}

/// Version byte of the small internal rows (item rows, op log, leases) written by
/// [`encode_row`].
pub(crate) const ROW_VERSION: u8 = 1;

/// Encodes an internal row: one version byte, then postcard.
pub(crate) fn encode_row<T: Serialize>(row: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![ROW_VERSION];
    let body = postcard::to_allocvec(row).map_err(|e| StoreError::Invalid {
        reason: format!("encoding a row: {e}"),
    })?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes an internal row written by [`encode_row`]; the error is a reason string for
/// the caller to wrap with the row's key.
pub(crate) fn decode_row<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        None => Err("empty row".into()),
        Some((&ROW_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| format!("row does not decode: {e}"))
        }
        Some((v, _)) => Err(format!("unknown row version {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PlayerRecord {
        PlayerRecord {
            player_id: 42,
            name: "ada".into(),
            schema_version: u32::from(RECORD_VERSION),
            epoch: 3,
            seq: 9,
            zone: 7,
            x_mm: -1500,
            y_mm: 2500,
            level: 12,
            xp: 34_000,
            gold: 99,
            state: vec![1, 2, 3],
            saved_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn crc32_matches_the_reference_vector() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trip_current_version() {
        let r = sample();
        let bytes = encode(&r).expect("encode");
        assert_eq!(peek_version(&bytes), Some(RECORD_VERSION));
        assert_eq!(decode(42, &bytes).expect("decode"), r);
    }

    #[test]
    fn v1_migrates_with_defaults() {
        let r = sample();
        let bytes = encode_v1(&r).expect("encode");
        let got = decode(42, &bytes).expect("decode");
        assert_eq!(got.schema_version, 1);
        assert_eq!((got.level, got.xp), (1, 0));
        assert_eq!(
            (got.gold, got.x_mm, got.state.clone()),
            (99, -1500, vec![1, 2, 3])
        );
    }

    #[test]
    fn damage_is_reported_as_corrupt_with_the_player_id() {
        let bytes = encode(&sample()).expect("encode");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let mut future = bytes.clone();
        future[4] = 99;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("short", bytes[..5].to_vec()),
            ("magic", [b"XXXX", &bytes[4..]].concat()),
            ("checksum", flipped),
            ("version", future),
            ("empty", Vec::new()),
        ];
        for (what, case) in cases {
            match decode(42, &case) {
                Err(StoreError::Corrupt { player_id, .. }) => assert_eq!(player_id, 42, "{what}"),
                other => panic!("{what}: expected Corrupt, got {other:?}"),
            }
        }
        match decode(43, &bytes) {
            Err(StoreError::Corrupt {
                player_id: 43,
                reason,
            }) => {
                assert!(reason.contains("wrong key"), "{reason}")
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn truncated_body_with_valid_checksum_is_corrupt_not_a_panic() {
        let body = [0xFFu8; 3];
        let bytes = frame(2, &body);
        assert!(matches!(
            decode(1, &bytes),
            Err(StoreError::Corrupt { player_id: 1, .. })
        ));
    }
}
