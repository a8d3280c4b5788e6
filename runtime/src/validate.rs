//! Field checks shared by every service's request validation. A failed check names the field
//! and the reason, and becomes `INVALID_ARGUMENT` at the gRPC edge.

use std::fmt;

/// A request field that failed validation; `Display` gives `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for FieldError {}

/// Identifiers (user ids, SKUs, idempotency keys): 1 to `max_len` bytes of visible characters,
/// no whitespace or control characters, so they are safe in keys, logs and URLs.
pub fn identifier(field: &str, value: &str, max_len: usize) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_len} bytes, got {}", value.len()),
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(FieldError::new(
            field,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// Free text (a reason) of at most `max_len` bytes; empty is allowed. No NUL character:
/// PostgreSQL refuses it in text, so it could never be stored.
pub fn text(field: &str, value: &str, max_len: usize) -> Result<(), FieldError> {
    if value.len() > max_len {
        return Err(FieldError::new(
            field,
            format!("must be at most {max_len} bytes, got {}", value.len()),
        ));
    }
    if value.contains('\0') {
        return Err(FieldError::new(
            field,
            "must not contain the NUL character (U+0000)",
        ));
    }
    Ok(())
}

/// An integer within `min..=max`.
pub fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<i64, FieldError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(FieldError::new(
            field,
            format!("must be between {min} and {max}, got {value}"),
        ))
    }
}

/// A list of 1 to `max` entries (`what` names one kind, for the message: "ids", "SKUs").
pub fn count(field: &str, len: usize, max: usize, what: &str) -> Result<(), FieldError> {
    if (1..=max).contains(&len) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("must hold 1 to {max} {what}, got {len}"),
        ))
    }
}

/// 1 to `max` UUIDs, in order; a malformed one is named `field[i]`.
pub fn uuids(field: &str, values: &[String], max: usize) -> Result<Vec<uuid::Uuid>, FieldError> {
    count(field, values.len(), max, "ids")?;
    values
        .iter()
        .enumerate()
        .map(|(index, value)| uuid(&format!("{field}[{index}]"), value))
        .collect()
}

/// A UUID in its canonical text form (order ids, event ids).
pub fn uuid(field: &str, value: &str) -> Result<uuid::Uuid, FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    uuid::Uuid::try_parse(value).map_err(|_| {
        let shown: String = value.chars().take(64).collect();
        FieldError::new(
            field,
            format!("{shown:?} is not a valid id (expected a UUID)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(identifier("user_id", "u-1", 8).is_ok());
        assert_eq!(
            identifier("user_id", "", 8).unwrap_err().to_string(),
            "user_id: must not be empty"
        );
        assert_eq!(
            identifier("user_id", &"x".repeat(9), 8)
                .unwrap_err()
                .to_string(),
            "user_id: must be at most 8 bytes, got 9"
        );
        assert!(identifier("sku", "a b", 8).is_err());
        assert!(identifier("sku", "a\u{0}", 8).is_err());
    }

    #[test]
    fn texts() {
        assert!(text("reason", "", 8).is_ok());
        assert!(text("reason", "line\nbreak", 16).is_ok());
        assert_eq!(
            text("reason", "a\u{0}b", 8).unwrap_err().to_string(),
            "reason: must not contain the NUL character (U+0000)"
        );
        assert!(text("reason", "123456789", 8).is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(in_range("q", 1, 1, 5), Ok(1));
        assert_eq!(
            in_range("items[0].quantity", 0, 1, 5)
                .unwrap_err()
                .to_string(),
            "items[0].quantity: must be between 1 and 5, got 0"
        );
        assert!(in_range("q", 6, 1, 5).is_err());
    }

    #[test]
    fn lists_of_uuids() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(uuids("ids", &[id.to_string()], 2), Ok(vec![id]));
        assert_eq!(
            uuids("ids", &[], 2).unwrap_err().to_string(),
            "ids: must hold 1 to 2 ids, got 0"
        );
        assert!(uuids("ids", &vec![id.to_string(); 3], 2).is_err());
        assert!(uuids("ids", &[id.to_string(), "x".into()], 2)
            .unwrap_err()
            .to_string()
            .starts_with("ids[1]: "));
    }

    #[test]
    fn single_uuids() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(uuid("order_id", &id.to_string()), Ok(id));
        assert_eq!(
            uuid("order_id", "").unwrap_err().to_string(),
            "order_id: must not be empty"
        );
        assert!(uuid("order_id", "nope")
            .unwrap_err()
            .to_string()
            .starts_with("order_id: \"nope\" is not a valid id"));
    }
}
