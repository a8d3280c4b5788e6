//! ListNotifications page tokens: the position of the last notification of a page,
//! `hex("<created_at in µs>.<notification_id>")`, the same shape as ListOrders' tokens. Opaque
//! to clients; because it pins a position in the `(created_at, notification_id)` order rather
//! than an offset, notifications stored meanwhile neither repeat nor shift a page.

use time::OffsetDateTime;
use uuid::Uuid;

/// Where the next page starts: strictly older than this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub notification_id: Uuid,
}

pub fn encode(cursor: Cursor) -> String {
    let micros = cursor.created_at.unix_timestamp_nanos() / 1_000;
    hex::encode(format!("{micros}.{}", cursor.notification_id))
}

/// `None` for anything [`encode`] did not make.
pub fn decode(token: &str) -> Option<Cursor> {
    let text = String::from_utf8(hex::decode(token).ok()?).ok()?;
    let (micros, notification_id) = text.split_once('.')?;
    let micros: i128 = micros.parse().ok()?;
    Some(Cursor {
        created_at: OffsetDateTime::from_unix_timestamp_nanos(micros.checked_mul(1_000)?).ok()?,
        notification_id: Uuid::try_parse(notification_id).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_microsecond_precision() {
        let cursor = Cursor {
            created_at: orderflow_runtime::timestamp::now(),
            notification_id: Uuid::now_v7(),
        };
        assert_eq!(decode(&encode(cursor)), Some(cursor));
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
