//! Wall-clock time as the store and the cluster record it: one function every layer may
//! use (a leaf: it imports nothing of the crate).

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix time, milliseconds (0 if the clock is before 1970).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_2020() {
        assert!(super::unix_millis() > 1_577_836_800_000);
    }
}
