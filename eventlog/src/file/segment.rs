//! The file log's on-disk format: framed records in segment files, and reading them
//! back.
//!
//! A frame is `length: u32 LE | crc: u32 LE | body`, where the CRC-32 (IEEE, the
//! `crc32fast` crate: hardware-accelerated and already in the tree) covers the body. A
//! record's body is `offset: u64 LE | timestamp: i64 LE (Unix ms) | key length: u32 LE |
//! key | payload`; a commit's is `offset: u64 LE | group`. The offset inside the body
//! lets recovery notice a frame that is whole but out of place (a stale block after a
//! crash), which a CRC alone would accept.

use maily_engine::Timestamp;
use maily_engine::ports::Record;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::path::Path;

/// Bytes of a frame before its body: the length and the CRC.
pub const HEADER: u64 = 8;
/// Bytes of a record body before its key: offset, timestamp, key length.
const RECORD_FIXED: usize = 20;
/// The largest body a frame may have. Far above any record Maily writes (raw bounce
/// reports are the largest), it keeps a torn length field from sending recovery to
/// read gigabytes.
pub const MAX_BODY: usize = 64 << 20;

/// The name of the segment whose first record has offset `base`: zero-padded so names
/// sort like offsets.
pub fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The base offset a segment file name stands for, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Bytes a record takes on disk.
pub fn record_frame_len(key: &[u8], payload: &[u8]) -> u64 {
    HEADER + (RECORD_FIXED + key.len() + payload.len()) as u64
}

/// Whether a record fits in one frame.
pub fn record_fits(key: &[u8], payload: &[u8]) -> bool {
    RECORD_FIXED + key.len() + payload.len() <= MAX_BODY
}

/// Appends the frame of one record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, offset: u64, ts: Timestamp, key: &[u8], payload: &[u8]) {
    let body_len = RECORD_FIXED + key.len() + payload.len();
    let start = buf.len();
    buf.reserve(HEADER as usize + body_len);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&ts.0.to_le_bytes());
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(payload);
    let crc = crc32fast::hash(&buf[start + HEADER as usize..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the frame of one group's committed offset to `buf`.
pub fn encode_commit(buf: &mut Vec<u8>, group: &str, offset: u64) {
    let mut body = Vec::with_capacity(8 + group.len());
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(group.as_bytes());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    buf.extend_from_slice(&body);
}

/// A record decoded from a frame body, or why the body is not one.
pub fn decode_record(body: &[u8], partition: u32) -> Result<Record, Bad> {
    if body.len() < RECORD_FIXED {
        return Err(Bad::Malformed);
    }
    let u64_at = |i: usize| u64::from_le_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    let key_len = u32::from_le_bytes(body[16..20].try_into().expect("4 bytes")) as usize;
    let key_end = RECORD_FIXED
        .checked_add(key_len)
        .filter(|end| *end <= body.len())
        .ok_or(Bad::Malformed)?;
    Ok(Record {
        partition,
        offset: u64_at(0),
        key: body[RECORD_FIXED..key_end].to_vec(),
        payload: body[key_end..].to_vec(),
        timestamp: Timestamp(u64_at(8) as i64),
    })
}

/// A group's committed offset decoded from a frame body.
pub fn decode_commit(body: &[u8]) -> Result<(String, u64), Bad> {
    if body.len() < 8 {
        return Err(Bad::Malformed);
    }
    let offset = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
    let group = String::from_utf8(body[8..].to_vec()).map_err(|_| Bad::Malformed)?;
    Ok((group, offset))
}

/// Why the bytes at a position are not a good frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bad {
    #[error("short frame: {needed} bytes announced, {left} left")]
    Short { needed: u64, left: u64 },
    #[error("frame length {0} is out of bounds")]
    Length(u32),
    #[error("CRC mismatch")]
    Crc,
    #[error("malformed frame body")]
    Malformed,
    #[error("offset {found} where {expected} was due")]
    Sequence { expected: u64, found: u64 },
}

/// Where a scan ended.
#[derive(Debug)]
pub struct Scanned {
    /// The position after the last frame visited: the good length of the file when
    /// the scan met a bad frame.
    pub pos: u64,
    /// The bad frame that ended the scan, if one did.
    pub bad: Option<Bad>,
}

/// Reads the frames of `file` from byte `from` up to byte `to`, handing each body to
/// `visit` with the frame's position, until `to`, a bad frame, an error or a break
/// from `visit` (which may also call a frame bad, e.g. one out of sequence).
pub fn scan(
    file: &File,
    from: u64,
    to: u64,
    mut visit: impl FnMut(u64, &[u8]) -> Result<ControlFlow<()>, Bad>,
) -> io::Result<Scanned> {
    let mut reader = BufReader::with_capacity(64 << 10, file);
    reader.seek(SeekFrom::Start(from))?;
    let mut pos = from;
    let mut body = Vec::new();
    while pos < to {
        let left = to - pos;
        if left < HEADER {
            return Ok(bad(
                pos,
                Bad::Short {
                    needed: HEADER,
                    left,
                },
            ));
        }
        let mut header = [0u8; HEADER as usize];
        reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len as usize > MAX_BODY {
            return Ok(bad(pos, Bad::Length(len)));
        }
        if u64::from(len) > left - HEADER {
            let needed = HEADER + u64::from(len);
            return Ok(bad(pos, Bad::Short { needed, left }));
        }
        body.resize(len as usize, 0);
        reader.read_exact(&mut body)?;
        if crc32fast::hash(&body) != crc {
            return Ok(bad(pos, Bad::Crc));
        }
        match visit(pos, &body) {
            Err(b) => return Ok(bad(pos, b)),
            Ok(flow) => {
                pos += HEADER + u64::from(len);
                if flow.is_break() {
                    break;
                }
            }
        }
    }
    Ok(Scanned { pos, bad: None })
}

fn bad(pos: u64, bad: Bad) -> Scanned {
    Scanned {
        pos,
        bad: Some(bad),
    }
}

/// Reads up to `max` records (and about `max_bytes` of them, at least one) of a
/// segment from `offset` on, starting the scan at byte `from`, a frame at or before
/// the record; stops at byte `to`, the segment's written length.
pub fn read_records(
    path: &Path,
    partition: u32,
    (from, to): (u64, u64),
    offset: u64,
    max: usize,
    max_bytes: usize,
) -> Result<Vec<Record>, ReadError> {
    let file = File::open(path)?;
    let mut out = Vec::new();
    let mut bytes = 0;
    let scanned = scan(&file, from, to, |_, body| {
        let record = decode_record(body, partition)?;
        if record.offset < offset {
            return Ok(ControlFlow::Continue(()));
        }
        let expected = out.last().map_or(offset, |r: &Record| r.offset + 1);
        if record.offset != expected {
            return Err(Bad::Sequence {
                expected,
                found: record.offset,
            });
        }
        bytes += body.len();
        out.push(record);
        Ok(if out.len() >= max || bytes >= max_bytes {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })?;
    match scanned.bad {
        Some(bad) => Err(ReadError::Corrupt {
            pos: scanned.pos,
            bad,
        }),
        None => Ok(out),
    }
}

/// A segment's sparse index: the offset and position of its first frame, then of the
/// first frame at least `interval` bytes after the previous entry.
pub fn build_index(path: &Path, to: u64, interval: u64) -> Result<Vec<(u64, u64)>, ReadError> {
    let file = File::open(path)?;
    let mut index: Vec<(u64, u64)> = Vec::new();
    let scanned = scan(&file, 0, to, |pos, body| {
        if index.last().is_none_or(|(_, last)| pos - last >= interval) {
            let offset = body.get(..8).ok_or(Bad::Malformed)?;
            index.push((u64::from_le_bytes(offset.try_into().expect("8 bytes")), pos));
        }
        Ok(ControlFlow::Continue(()))
    })?;
    match scanned.bad {
        Some(bad) => Err(ReadError::Corrupt {
            pos: scanned.pos,
            bad,
        }),
        None => Ok(index),
    }
}

/// What recovering a partition's last segment found.
pub struct Recovered {
    /// The offset the next record gets.
    pub end: u64,
    /// The segment's length after recovery.
    pub size: u64,
    /// Bytes cut off the tail and why, if the tail was torn or corrupt.
    pub cut: Option<(u64, Bad)>,
    /// The segment's newest records, at most the cache size.
    pub tail: VecDeque<Record>,
    /// The segment's sparse index.
    pub index: Vec<(u64, u64)>,
}

/// Checks every frame of a partition's last segment, whose first record has offset
/// `base`, and truncates the file after the last good record in sequence: a crash can
/// leave a half-written frame, or blocks of a frame that never reached the disk.
pub fn recover(
    path: &Path,
    base: u64,
    partition: u32,
    cache: usize,
    interval: u64,
) -> io::Result<Recovered> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut next = base;
    let mut tail = VecDeque::new();
    let mut index: Vec<(u64, u64)> = Vec::new();
    let scanned = scan(&file, 0, len, |pos, body| {
        let record = decode_record(body, partition)?;
        if record.offset != next {
            return Err(Bad::Sequence {
                expected: next,
                found: record.offset,
            });
        }
        if index.last().is_none_or(|(_, last)| pos - last >= interval) {
            index.push((next, pos));
        }
        next += 1;
        if cache > 0 {
            if tail.len() == cache {
                tail.pop_front();
            }
            tail.push_back(record);
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let cut = match scanned.bad {
        Some(bad) => {
            file.set_len(scanned.pos)?;
            file.sync_all()?;
            Some((len - scanned.pos, bad))
        }
        None => None,
    };
    Ok(Recovered {
        end: next,
        size: scanned.pos,
        cut,
        tail,
        index,
    })
}

/// Why records could not be read from a segment.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("corrupt frame at byte {pos}: {bad}")]
    Corrupt { pos: u64, bad: Bad },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_like_offsets_and_parse_back() {
        assert_eq!(segment_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("commits"), None);
    }

    #[test]
    fn a_record_frame_round_trips_and_its_crc_covers_the_body() {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            7,
            Timestamp(1_700_000_000_123),
            b"key",
            b"payload",
        );
        assert_eq!(buf.len() as u64, record_frame_len(b"key", b"payload"));
        let body = &buf[HEADER as usize..];
        let record = decode_record(body, 3).unwrap();
        assert_eq!(
            (record.partition, record.offset, record.timestamp.0),
            (3, 7, 1_700_000_000_123)
        );
        assert_eq!(
            (&record.key[..], &record.payload[..]),
            (&b"key"[..], &b"payload"[..])
        );
        let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(body));
    }
}
