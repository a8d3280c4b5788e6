//! The caller's deadline as gRPC carries it (`grpc-timeout`), for a server that bounds its own
//! work by it (order-api's call budgets) or must know how long the caller may keep acting on
//! what it answers (inventory-svc holding a placement's reservation).

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// What is left of the caller's deadline when the request arrived, if it sent one.
pub fn caller_timeout(metadata: &MetadataMap) -> Option<Duration> {
    metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
}

/// `grpc-timeout` is 1 to 8 digits and a unit: `H`ours, `M`inutes, `S`econds, `m`illis,
/// `u`micros, `n`anos (gRPC over HTTP/2 spec).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_the_rest() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "123456789m", "5x", "-5m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_the_header() {
        let mut metadata = MetadataMap::new();
        assert_eq!(caller_timeout(&metadata), None);
        metadata.insert("grpc-timeout", "200m".parse().unwrap());
        assert_eq!(caller_timeout(&metadata), Some(Duration::from_millis(200)));
    }
}
