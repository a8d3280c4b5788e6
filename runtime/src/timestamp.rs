//! Conversions between protobuf timestamps and the `time` types sqlx reads and writes.

use prost_types::Timestamp;
use time::OffsetDateTime;

pub fn to_proto(at: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
    }
}

/// `None` when the timestamp is outside what PostgreSQL and `time` can hold.
pub fn from_proto(at: &Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// Now, truncated to microseconds: what PostgreSQL stores, so a value read back compares equal.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_microsecond_precision() {
        let at = now();
        assert_eq!(from_proto(&to_proto(at)), Some(at));
    }

    #[test]
    fn out_of_range_is_none() {
        let far = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert_eq!(from_proto(&far), None);
    }
}
