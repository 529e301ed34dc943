//! How a Herald record is laid out in a Fluvio record, and the partitioner that honours the
//! partition Herald chose.
//!
//! - Key (12 bytes): the partition (u32 LE) then Herald's record key (u64 LE). Fluvio hands the
//!   key to the partitioner, which reads the partition back from it, so Herald, not Fluvio,
//!   places every record.
//! - Value: a version byte, the headers, then Herald's payload. Fluvio 0.50 records carry no
//!   headers of their own, so the envelope carries them (`traceparent` among them).
//!
//! It is not: a general codec. Schemas (`schemas::codec`) encode the payload itself.

use crate::topic::Partition;
use crate::{Error, Result};
use ::fluvio::{Partitioner, PartitionerConfig};
use schemas::envelope::Headers;

const VERSION: u8 = 1;
/// Bytes of an envelope key.
pub const KEY_LEN: usize = 12;

/// The Fluvio record key for a record Herald placed on `partition`.
pub fn key(partition: Partition, key: u64) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    out[..4].copy_from_slice(&partition.to_le_bytes());
    out[4..].copy_from_slice(&key.to_le_bytes());
    out
}

/// `(partition, key)` read back from a Fluvio record key.
pub fn split_key(bytes: &[u8]) -> Result<(Partition, u64)> {
    let bytes: &[u8; KEY_LEN] =
        bytes.try_into().map_err(|_| Error::Fatal(format!("a record key of {} bytes, not {KEY_LEN}", bytes.len())))?;
    let partition = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let key = u64::from_le_bytes(bytes[4..].try_into().expect("8 bytes"));
    Ok((partition, key))
}

/// The envelope of one record: headers then payload.
pub fn encode_value(headers: &Headers, value: &[u8]) -> Result<Vec<u8>> {
    let headers_len: usize = headers.0.iter().map(|(k, v)| 6 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(5 + headers_len + value.len());
    out.push(VERSION);
    out.extend_from_slice(&len_u32(headers.0.len())?.to_le_bytes());
    for (name, val) in &headers.0 {
        let name_len =
            u16::try_from(name.len()).map_err(|_| Error::Fatal(format!("header name of {} bytes", name.len())))?;
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&len_u32(val.len())?.to_le_bytes());
        out.extend_from_slice(val.as_bytes());
    }
    out.extend_from_slice(value);
    Ok(out)
}

/// Headers and payload back from an envelope.
pub fn decode_value(bytes: &[u8]) -> Result<(Headers, Vec<u8>)> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.take(1)?[0];
    if version != VERSION {
        return Err(Error::Fatal(format!("record envelope version {version}, this Herald reads {VERSION}")));
    }
    let count = r.u32()?;
    let mut headers = Headers::new();
    for _ in 0..count {
        let name_len = u16::from_le_bytes(r.take(2)?.try_into().expect("2 bytes")) as usize;
        let name = r.text(name_len)?;
        let val_len = r.u32()? as usize;
        let val = r.text(val_len)?;
        headers.0.push((name, val));
    }
    Ok((headers, bytes[r.at..].to_vec()))
}

fn len_u32(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Fatal(format!("a record part of {n} bytes")))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| Error::Fatal("a record envelope cut short".into()))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn text(&mut self, n: usize) -> Result<String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Error::Fatal("a header that is not UTF-8".into()))
    }
}

/// Places each record on the partition written in its key (see [`key`]). A record without a
/// Herald key cannot reach this producer; should one, it goes to partition 0 rather than
/// panicking inside the Fluvio client.
#[derive(Debug, Default)]
pub struct KeyedPartitioner;

impl Partitioner for KeyedPartitioner {
    fn partition(&self, config: &PartitionerConfig, key: Option<&[u8]>, _value: &[u8]) -> ::fluvio::PartitionId {
        match key.map(split_key) {
            Some(Ok((partition, _))) if partition < config.partition_count => partition,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_envelopes_round_trip() {
        assert_eq!(split_key(&key(7, u64::MAX - 3)).unwrap(), (7, u64::MAX - 3));
        assert!(split_key(b"short").is_err());
        let mut headers = Headers::new();
        headers.set("traceparent", "00-abc-01");
        headers.set("herald-error", "");
        let bytes = encode_value(&headers, b"payload").unwrap();
        assert_eq!(decode_value(&bytes).unwrap(), (headers, b"payload".to_vec()));
        assert_eq!(decode_value(&encode_value(&Headers::new(), b"").unwrap()).unwrap(), (Headers::new(), vec![]));
        for cut in 0..bytes.len() - b"payload".len() {
            assert!(decode_value(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(decode_value(&bad).is_err());
    }

    #[test]
    fn the_partitioner_reads_the_partition_from_the_key() {
        let config = PartitionerConfig { partition_count: 8, available_partitions: (0..8).collect() };
        let p = KeyedPartitioner;
        assert_eq!(p.partition(&config, Some(&key(5, 1)), b""), 5);
        assert_eq!(p.partition(&config, Some(&key(9, 1)), b""), 0, "out of range");
        assert_eq!(p.partition(&config, None, b""), 0);
    }
}
