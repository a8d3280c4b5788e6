//! The page tokens of ListOrders and ListNotifications: the position of the last item of a page
//! in `(created_at, id)` order, newest first, as `hex("<created_at in µs>.<id>")`. Opaque to
//! clients; because a token pins a position rather than an offset, items stored meanwhile
//! neither repeat nor shift a page. One codec for both services, so their tokens keep one
//! shape and one set of checks.

use time::OffsetDateTime;
use uuid::Uuid;

/// Where the next page starts: strictly older than this `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    /// The order's or the notification's id: the tie-break between equal timestamps.
    pub id: Uuid,
}

pub fn encode(cursor: Cursor) -> String {
    let micros = cursor.created_at.unix_timestamp_nanos() / 1_000;
    hex::encode(format!("{micros}.{}", cursor.id))
}

/// `None` for anything [`encode`] did not make.
pub fn decode(token: &str) -> Option<Cursor> {
    let text = String::from_utf8(hex::decode(token).ok()?).ok()?;
    let (micros, id) = text.split_once('.')?;
    let micros: i128 = micros.parse().ok()?;
    Some(Cursor {
        created_at: OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1_000)?).ok()?,
        id: Uuid::try_parse(id).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_microsecond_precision() {
        let cursor = Cursor {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_000)
                .expect("a valid instant"),
            id: Uuid::now_v7(),
        };
        assert_eq!(decode(&encode(cursor)), Some(cursor));
    }

    #[test]
    fn the_shape_is_stable() {
        // Clients keep tokens across releases: the shape is part of the API.
        let id = Uuid::try_parse("0193a1b2-0000-7000-8000-000000000001").expect("a uuid");
        let cursor = Cursor {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(1_765_000_000_123_456_000)
                .expect("a valid instant"),
            id,
        };
        assert_eq!(
            encode(cursor),
            hex::encode(format!("1765000000123456.{id}"))
        );
    }

    #[test]
    fn refuses_forgeries() {
        let far = format!("{}.{}", i128::MAX, Uuid::now_v7());
        for bad in [
            "",
            "zz",
            "0",
            &hex::encode("1.not-a-uuid"),
            &hex::encode("x.0193a1b2-0000-7000-8000-000000000001"),
            &hex::encode(far),
            &hex::encode([0xff, 0xfe]),
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
