//! Compact binary encoding (bincode, varint integers) and length-delimited
//! frames: a 4-byte big-endian length, then the payload.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame a node accepts by default.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

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
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).await?;
    Ok(Some(buf))
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
