//! Latency histograms: microseconds with 3 significant digits, and their text form (V2
//! serialization, base64) in reports and the per-second series. A leaf: the live counters
//! (`stats`) and the report (`report`) both build on it.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hdrhistogram::serialization::{
    Deserializer, Serializer as _, V2DeflateSerializer, V2Serializer,
};
use hdrhistogram::Histogram;

/// Largest value a histogram records exactly, in microseconds (one hour); larger values
/// are recorded as this.
pub(crate) const HIST_MAX_US: u64 = 3_600_000_000;

/// A histogram of microseconds with 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("constant bounds are valid")
}

/// Serializes a histogram (V2, base64 standard alphabet, padded).
pub fn encode_hist(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2Serializer::new().serialize(h, &mut bytes) {
        Ok(_) => STANDARD.encode(&bytes),
        Err(e) => {
            tracing::warn!(error = %e, "histogram serialization failed");
            String::new()
        }
    }
}

/// Serializes a histogram compactly (V2 with deflate, base64): the per-second series,
/// where a soak run has thousands. [`decode_hist`] reads both forms.
pub fn encode_hist_compact(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut bytes) {
        Ok(_) => STANDARD.encode(&bytes),
        Err(e) => {
            tracing::warn!(error = %e, "histogram serialization failed");
            String::new()
        }
    }
}

/// Reads a histogram written by [`encode_hist`] or [`encode_hist_compact`].
pub fn decode_hist(text: &str) -> Result<Histogram<u64>, String> {
    if text.is_empty() {
        return Ok(histogram());
    }
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| format!("histogram base64: {e}"))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram: {e}"))?;
    // Same bounds as ours, so adding never fails on range.
    let mut out = histogram();
    out.add(&h).map_err(|e| format!("histogram range: {e}"))?;
    Ok(out)
}
