//! Record frames: how one record sits inside a segment.
//!
//! Every frame starts on an 8-byte boundary and is a whole number of 8-byte words long, so
//! the rkyv payload inside it is always 8-byte aligned when the segment is mapped at a page
//! boundary (mmap guarantees that).
//!
//! ```text
//! offset  size  field
//!      0     4  payload length in bytes (u32, little endian); 0 only in free space
//!      4     4  CRC32C of bytes [0, 4) then [8, frame end): everything but itself
//!      8     2  record kind (u16, never 0; see `schema::Kind`)
//!     10     2  schema version of that kind (u16)
//!     12     2  flags: bit 0 = source block present; other bits must be 0
//!     14     2  reserved, must be 0
//!     16    16  source block, only when flag bit 0 is set:
//!                 u64 input offset, u32 input partition id, u16 part index, u16 part count
//!     16|32  n  payload (rkyv 0.8 archive)
//!      ...   p  zero padding up to the next multiple of 8 (covered by the CRC)
//! ```
//!
//! Free space in a preallocated segment is zeros, so a zero length *and* zero CRC *and*
//! zero kind means "end of data". Anything else that fails validation is a torn or corrupt
//! record.
//!
//! Resync: the format has no sync marker (records written by every earlier build must still
//! read), so after damaged bytes the next frame is found by [`resync`]: the first 8-byte
//! aligned position whose header is plausible (kind not 0, known flags, reserved 0, length
//! within the limit and inside the segment) *and* whose CRC matches. A random position
//! passes with a chance of about 2^-32 after the header checks, so a frame found this way
//! is one the writer wrote. Whether the bad bytes are a torn tail or damage inside the
//! durable range is the segment scan's call (see `recovery`).

use crate::{Error, Result};

/// Size of the fixed frame header.
pub const HEADER_SIZE: usize = 16;
/// Size of the optional source block.
pub const SOURCE_SIZE: usize = 16;
/// Frames start and end on this boundary.
pub const ALIGN: usize = 8;
/// Flag bit: a source block follows the header.
pub const FLAG_SOURCE: u16 = 1;

const _: () = assert!(HEADER_SIZE % ALIGN == 0);
const _: () = assert!(SOURCE_SIZE % ALIGN == 0);

/// Where an output record came from: the input record whose processing produced it.
///
/// An actor's output carries this so that after a restart it can resume exactly after the
/// last input it finished (and finish an input whose outputs were only partly written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    /// Id of the input partition.
    pub partition: u32,
    /// Offset of the input record in that partition.
    pub offset: u64,
    /// Index of this output among the outputs of that input (0-based).
    pub part: u16,
    /// How many outputs that input produced in all (at least 1).
    pub parts: u16,
}

/// The header fields of a frame, as decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub crc: u32,
    pub kind: u16,
    pub version: u16,
    pub flags: u16,
}

/// Rounds `n` up to the frame alignment.
#[inline]
pub const fn align_up(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// Total size of a frame holding `payload_len` bytes.
#[inline]
pub const fn frame_size(payload_len: usize, has_source: bool) -> usize {
    HEADER_SIZE + if has_source { SOURCE_SIZE } else { 0 } + align_up(payload_len)
}

/// Writes a complete frame into `dst`, which must be exactly `frame_size(...)` long and
/// zeroed in its padding (segments are preallocated with zeros and never reused, but the
/// padding is written explicitly anyway so a stale byte can never change the CRC).
#[inline]
pub fn encode(dst: &mut [u8], kind: u16, version: u16, source: Option<&Source>, payload: &[u8]) {
    let total = frame_size(payload.len(), source.is_some());
    debug_assert_eq!(dst.len(), total);
    assert!(kind != 0, "record kind 0 is reserved for free space");
    let flags = if source.is_some() { FLAG_SOURCE } else { 0 };
    dst[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    dst[8..10].copy_from_slice(&kind.to_le_bytes());
    dst[10..12].copy_from_slice(&version.to_le_bytes());
    dst[12..14].copy_from_slice(&flags.to_le_bytes());
    dst[14..16].copy_from_slice(&0u16.to_le_bytes());
    let mut at = HEADER_SIZE;
    if let Some(s) = source {
        assert!(s.parts >= 1 && s.part < s.parts, "source part out of range");
        dst[at..at + 8].copy_from_slice(&s.offset.to_le_bytes());
        dst[at + 8..at + 12].copy_from_slice(&s.partition.to_le_bytes());
        dst[at + 12..at + 14].copy_from_slice(&s.part.to_le_bytes());
        dst[at + 14..at + 16].copy_from_slice(&s.parts.to_le_bytes());
        at += SOURCE_SIZE;
    }
    dst[at..at + payload.len()].copy_from_slice(payload);
    dst[at + payload.len()..total].fill(0);
    let crc = frame_crc(dst, total);
    dst[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC32C of a frame: its length field and everything after the CRC field.
#[inline]
fn frame_crc(buf: &[u8], total: usize) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&buf[0..4]), &buf[8..total])
}

/// Reads the fixed header at the start of `buf` (at least `HEADER_SIZE` bytes).
#[inline]
pub fn read_header(buf: &[u8]) -> FrameHeader {
    FrameHeader {
        payload_len: u32::from_le_bytes(buf[0..4].try_into().unwrap()),
        crc: u32::from_le_bytes(buf[4..8].try_into().unwrap()),
        kind: u16::from_le_bytes(buf[8..10].try_into().unwrap()),
        version: u16::from_le_bytes(buf[10..12].try_into().unwrap()),
        flags: u16::from_le_bytes(buf[12..14].try_into().unwrap()),
    }
}

/// Outcome of looking at the bytes where the next frame would start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A complete, CRC-valid frame of this total size.
    Frame(usize),
    /// Zeros: the end of written data.
    End,
    /// Something that is neither: a torn or corrupt record.
    Corrupt(&'static str),
}

/// Validates the frame at the start of `buf` (which runs to the end of the segment's
/// usable space). Never panics, whatever the bytes are.
pub fn probe(buf: &[u8], record_size_max: usize) -> Probe {
    if buf.len() < HEADER_SIZE {
        return Probe::End;
    }
    let h = read_header(buf);
    if h.payload_len == 0 && h.crc == 0 && h.kind == 0 && h.version == 0 && h.flags == 0 {
        return Probe::End;
    }
    if h.kind == 0 {
        return Probe::Corrupt("record kind 0");
    }
    if h.flags & !FLAG_SOURCE != 0 || buf[14..16] != [0, 0] {
        return Probe::Corrupt("unknown flags");
    }
    if h.payload_len as usize > record_size_max {
        return Probe::Corrupt("length over record-size-max");
    }
    let total = frame_size(h.payload_len as usize, h.flags & FLAG_SOURCE != 0);
    if total > buf.len() {
        return Probe::Corrupt("frame runs past the segment end");
    }
    if frame_crc(buf, total) != h.crc {
        return Probe::Corrupt("CRC mismatch");
    }
    Probe::Frame(total)
}

/// [`probe`] for a frame below a partition's published end in this process: the writer
/// published it only after writing it whole, and recovery checked every CRC of what was on
/// disk at open, so the CRC is not recomputed (tailing actors read each click several
/// times over). The header is still checked, so a bug can't walk off into garbage.
pub fn probe_published(buf: &[u8], record_size_max: usize) -> Probe {
    if buf.len() < HEADER_SIZE {
        return Probe::End;
    }
    let h = read_header(buf);
    if h.payload_len == 0 && h.crc == 0 && h.kind == 0 && h.version == 0 && h.flags == 0 {
        return Probe::End;
    }
    if h.kind == 0 || h.flags & !FLAG_SOURCE != 0 || h.payload_len as usize > record_size_max {
        return Probe::Corrupt("bad frame header below the published end");
    }
    let total = frame_size(h.payload_len as usize, h.flags & FLAG_SOURCE != 0);
    if total > buf.len() {
        return Probe::Corrupt("frame runs past the published end");
    }
    Probe::Frame(total)
}

/// The first 8-byte aligned position at or after `from` where a complete, CRC-valid frame
/// starts ([`probe`] answers `Frame`), or `None`. Never panics, whatever the bytes are.
/// Cost: one header check per 8 bytes and a CRC only where a header is plausible.
pub fn resync(buf: &[u8], from: usize, record_size_max: usize) -> Option<usize> {
    let mut at = align_up(from);
    while at + HEADER_SIZE <= buf.len() {
        if let Probe::Frame(_) = probe(&buf[at..], record_size_max) {
            return Some(at);
        }
        at += ALIGN;
    }
    None
}

/// Best count of the frames that stood in `damaged` (the bytes between the start of a bad
/// frame and the next valid one): the frames whose headers still chain from its start,
/// and at least 1. A single flipped payload byte counts 1; a lying length counts 1 or 2.
pub fn count_damaged_frames(damaged: &[u8], record_size_max: usize) -> u64 {
    let (mut at, mut count) = (0usize, 0u64);
    while at + HEADER_SIZE <= damaged.len() {
        let h = read_header(&damaged[at..]);
        count += 1;
        let plausible = h.kind != 0
            && h.flags & !FLAG_SOURCE == 0
            && damaged[at + 14..at + 16] == [0, 0]
            && h.payload_len as usize <= record_size_max;
        let total = frame_size(h.payload_len as usize, h.flags & FLAG_SOURCE != 0);
        if !plausible || at + total > damaged.len() {
            break;
        }
        at += total;
    }
    count.max(1)
}

/// A validated frame, borrowed from the mapped segment.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub kind: u16,
    pub version: u16,
    pub source: Option<Source>,
    /// The rkyv archive, 8-byte aligned, borrowed in place (zero-copy).
    pub payload: &'a [u8],
}

/// Splits an already validated frame (see [`probe`]) into its parts.
#[inline]
pub fn parts(buf: &[u8]) -> Frame<'_> {
    let h = read_header(buf);
    let mut at = HEADER_SIZE;
    let source = if h.flags & FLAG_SOURCE != 0 {
        let s = &buf[at..at + SOURCE_SIZE];
        at += SOURCE_SIZE;
        Some(Source {
            offset: u64::from_le_bytes(s[0..8].try_into().unwrap()),
            partition: u32::from_le_bytes(s[8..12].try_into().unwrap()),
            part: u16::from_le_bytes(s[12..14].try_into().unwrap()),
            parts: u16::from_le_bytes(s[14..16].try_into().unwrap()),
        })
    } else {
        None
    };
    Frame {
        kind: h.kind,
        version: h.version,
        source,
        payload: &buf[at..at + h.payload_len as usize],
    }
}

/// Checks a record before it is written: the pair of the checks [`probe`] does on read.
pub fn check_append(kind: u16, payload_len: usize, record_size_max: usize) -> Result<()> {
    if kind == 0 {
        return Err(Error::InvalidKind);
    }
    if payload_len > record_size_max {
        return Err(Error::RecordTooLarge {
            size: payload_len,
            max: record_size_max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_and_without_source() {
        for src in [
            None,
            Some(Source {
                partition: 7,
                offset: 123_456,
                part: 1,
                parts: 3,
            }),
        ] {
            for len in [0usize, 1, 7, 8, 9, 128, 1000] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
                let mut buf = vec![0u8; frame_size(len, src.is_some()) + 32];
                let total = frame_size(len, src.is_some());
                encode(&mut buf[..total], 3, 1, src.as_ref(), &payload);
                assert_eq!(probe(&buf, 1 << 20), Probe::Frame(total));
                let f = parts(&buf);
                assert_eq!((f.kind, f.version, f.source), (3, 1, src));
                assert_eq!(f.payload, &payload[..]);
                assert_eq!(probe(&buf[total..], 1 << 20), Probe::End);
            }
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let payload = b"hello, journal: 0123456789";
        let total = frame_size(payload.len(), true);
        let mut buf = vec![0u8; total];
        let src = Source {
            partition: 1,
            offset: 2,
            part: 0,
            parts: 1,
        };
        encode(&mut buf, 9, 2, Some(&src), payload);
        for byte in 0..total {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    matches!(probe(&b, 1 << 20), Probe::Corrupt(_)),
                    "flip at byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn resync_finds_the_next_valid_frame_after_garbage() {
        let mut buf = vec![0u8; 256];
        let a = frame_size(10, false);
        encode(&mut buf[..a], 5, 1, None, &[1; 10]);
        let b = frame_size(20, false);
        encode(&mut buf[a..a + b], 5, 1, None, &[2; 20]);
        let c = frame_size(3, false);
        encode(&mut buf[a + b..a + b + c], 5, 1, None, &[3; 3]);
        buf[a + 2] ^= 0x10; // the second frame's length lies
        assert!(matches!(probe(&buf[a..], 1 << 20), Probe::Corrupt(_)));
        assert_eq!(resync(&buf, a + 1, 1 << 20), Some(a + b));
        assert_eq!(count_damaged_frames(&buf[a..a + b], 1 << 20), 1);
        assert_eq!(resync(&buf, a + b + 1, 1 << 20), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..10_000 {
            let len = rng.usize(0..64);
            let buf: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = probe(&buf, 1024);
        }
    }
}
