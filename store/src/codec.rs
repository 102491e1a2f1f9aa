//! Compact binary encoding (bincode, varint integers) and length-delimited
//! frames: a 4-byte big-endian length, then the payload.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Largest frame a node accepts by default.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of frames a node holds at once over all its connections, by default.
pub const DEFAULT_FRAME_BUDGET_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed payload: {0}")]
    Malformed(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(DEFAULT_MAX_FRAME_BYTES as u64)
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own types into memory cannot fail short of the size limit,
    // which the frame limit enforces on the reader's side.
    options().serialize(value).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    options()
        .deserialize(bytes)
        .map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Reads the leading request id of a payload that failed to decode, so the
/// error reply can name it.
pub fn decode_id_prefix(bytes: &[u8]) -> Option<u64> {
    options()
        .allow_trailing_bytes()
        .deserialize::<u64>(bytes)
        .ok()
}

/// Appends one frame holding `payload` to `out`.
pub fn put_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Reads one frame. `Ok(None)` at a clean end of stream. An oversized frame
/// is skipped (so the stream stays usable) and reported as `TooLarge`.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<Vec<u8>>, CodecError> {
    let Some(len) = read_len(reader, max_frame_bytes).await? else {
        return Ok(None);
    };
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// [`read_frame`], holding the frame's bytes from `budget` before taking
/// the memory: the frames a node reads on all its connections at once fit
/// the budget, and one past it waits for earlier ones to be done.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
    budget: &FrameBudget,
) -> Result<Option<(Vec<u8>, FrameHeld)>, CodecError> {
    let Some(len) = read_len(reader, max_frame_bytes).await? else {
        return Ok(None);
    };
    let held = budget.hold(len).await;
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).await?;
    Ok(Some((buf, held)))
}

/// The next frame's length, after skipping it (and erring) when it is over the limit.
async fn read_len<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_frame_bytes: usize,
) -> Result<Option<usize>, CodecError> {
    let mut len_bytes = [0u8; 4];
    match reader.read_exact(&mut len_bytes).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max_frame_bytes {
        let mut remaining = len;
        let mut sink = vec![0u8; 64 * 1024];
        while remaining > 0 {
            let n = remaining.min(sink.len());
            reader.read_exact(&mut sink[..n]).await?;
            remaining -= n;
        }
        return Err(CodecError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    Ok(Some(len))
}

/// Bytes of frames one node may hold at once while reading and decoding
/// them, over all its connections, counted in KiB.
#[derive(Debug, Clone)]
pub struct FrameBudget {
    kib: Arc<Semaphore>,
    total_kib: u32,
}

/// Part of a [`FrameBudget`], given back when dropped.
#[derive(Debug)]
pub struct FrameHeld(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl FrameBudget {
    pub fn new(bytes: usize) -> FrameBudget {
        let total_kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, Semaphore::MAX_PERMITS as u32);
        FrameBudget {
            kib: Arc::new(Semaphore::new(total_kib as usize)),
            total_kib,
        }
    }

    /// Bytes held now, for tests and status.
    pub fn held_bytes(&self) -> usize {
        (self.total_kib as usize - self.kib.available_permits()) * 1024
    }

    /// Wait until `len` bytes fit; a frame larger than the whole budget
    /// waits for all of it.
    pub async fn hold(&self, len: usize) -> FrameHeld {
        let kib = u32::try_from(len.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(self.total_kib);
        if kib == 0 {
            return FrameHeld(None);
        }
        FrameHeld(self.kib.clone().acquire_many_owned(kib).await.ok())
    }
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
) -> Result<(), CodecError> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    put_frame(&mut out, payload);
    writer.write_all(&out).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_past_the_budget_wait_until_earlier_ones_are_done() {
        let budget = FrameBudget::new(3 << 20);
        let frame = |len: usize| {
            let mut out = Vec::new();
            put_frame(&mut out, &vec![7u8; len]);
            out
        };
        let (first, first_held) = read_frame_within(&mut &frame(2 << 20)[..], 16 << 20, &budget)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.len(), 2 << 20);
        assert_eq!(budget.held_bytes(), 2 << 20);
        let second_bytes = frame(2 << 20);
        let mut second_reader = &second_bytes[..];
        let second = read_frame_within(&mut second_reader, 16 << 20, &budget);
        tokio::pin!(second);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), &mut second).await;
        assert!(
            waited.is_err(),
            "a second 2 MiB frame does not fit a 3 MiB budget"
        );
        drop(first_held);
        let (second, _held) = second.await.unwrap().unwrap();
        assert_eq!(second.len(), 2 << 20);
        assert_eq!(budget.held_bytes(), 2 << 20);
        // One frame larger than the whole budget still goes through, alone.
        drop(_held);
        let big = frame(5 << 20);
        let (big, _held) = read_frame_within(&mut &big[..], 16 << 20, &budget)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(big.len(), 5 << 20);
        assert_eq!(budget.held_bytes(), 3 << 20);
    }
    use crate::msg::{Op, Request, RequestOptions, Value};

    #[test]
    fn request_round_trips_and_id_prefix_survives_garbage() {
        let req = Request {
            id: 77,
            op: Op::Put {
                key: "k".into(),
                value: Value::Int(5),
            },
            options: RequestOptions::default(),
        };
        let bytes = encode(&req);
        assert_eq!(decode::<Request>(&bytes).unwrap(), req);
        let mut broken = bytes.clone();
        broken[1] = 200; // an op variant that does not exist
        assert!(decode::<Request>(&broken).is_err());
        assert_eq!(decode_id_prefix(&broken), Some(77));
    }

    #[tokio::test]
    async fn oversized_frame_is_skipped_and_next_frame_read() {
        let mut stream = Vec::new();
        put_frame(&mut stream, &[1u8; 100]);
        put_frame(&mut stream, &[2u8; 3]);
        let mut reader = &stream[..];
        assert!(matches!(
            read_frame(&mut reader, 10).await,
            Err(CodecError::TooLarge { len: 100, max: 10 })
        ));
        assert_eq!(
            read_frame(&mut reader, 10).await.unwrap(),
            Some(vec![2u8; 3])
        );
        assert_eq!(read_frame(&mut reader, 10).await.unwrap(), None);
    }
}
