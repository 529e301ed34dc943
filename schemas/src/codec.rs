//! The codec for topic payloads and stored values.
//!
//! bincode 2 (standard config: varint integers) behind one leading format-version byte, so a
//! future format change can be detected instead of misread. Measured in `benches/benches/codec.rs`
//! against serde_json; bincode is several times faster and ~3x smaller for our records.

use crate::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};

/// Version byte written in front of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` as `[FORMAT_VERSION, bincode...]`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config()).map_err(|e| Error::Encode(e.to_string()))?;
    Ok(out)
}

/// Decodes a value written by [`encode`]. Never panics on malformed input.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (&version, body) = bytes.split_first().ok_or(Error::Empty)?;
    if version != FORMAT_VERSION {
        return Err(Error::Version { found: version, expected: FORMAT_VERSION });
    }
    let (value, _) = bincode::serde::decode_from_slice(body, config()).map_err(|e| Error::Decode(e.to_string()))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    fn message(i: u64) -> RenderedMessage {
        let key = MessageKey {
            tenant: TenantId(1),
            campaign: CampaignId(2),
            bucket: (i % 64) as u32,
            id: MessageId::derive(TenantId(1), CampaignId(2), RecipientId(i), Channel::Sms),
        };
        RenderedMessage {
            key,
            recipient: RecipientId(i),
            address: format!("+1555000{i:04}"),
            content: Content::Sms { text: format!("Hello {i}") },
            trigger_ms: 1_700_000_000_000 + i,
            attempt: 0,
        }
    }

    #[test]
    fn batch_round_trips() {
        let batch =
            MessageBatch { tenant: TenantId(1), campaign: CampaignId(2), messages: (0..100).map(message).collect() };
        let bytes = encode(&batch).unwrap();
        let back: MessageBatch = decode(&bytes).unwrap();
        assert_eq!(batch, back);
    }

    #[test]
    fn rejects_wrong_version_and_garbage() {
        let mut bytes = encode(&message(1)).unwrap();
        bytes[0] = 9;
        assert!(matches!(decode::<RenderedMessage>(&bytes), Err(Error::Version { found: 9, .. })));
        assert!(matches!(decode::<RenderedMessage>(&[]), Err(Error::Empty)));
        assert!(decode::<RenderedMessage>(&[FORMAT_VERSION, 0xff, 0xff]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<MessageBatch>(&bytes);
            let _ = decode::<OutcomeBatch>(&bytes);
        }

        #[test]
        fn sms_text_round_trips(text in ".*", i in any::<u64>()) {
            let mut m = message(i % 1000);
            m.content = Content::Sms { text };
            let back: RenderedMessage = decode(&encode(&m).unwrap()).unwrap();
            prop_assert_eq!(m, back);
        }
    }
}
