//! Amounts as people read them in a notification: `¥199.00`, `$5.00`, `€0.99`, `12.00 GBP`.
//! Amounts travel as integer minor units (hundredths, like every orderflow total), so this is
//! integer arithmetic only: a float would round some amounts wrongly.

/// `total_cents` hundredths of `currency` (ISO 4217), e.g. `(19900, "CNY")` → `¥199.00`.
/// CNY, USD and EUR get their symbol in front; any other code follows the number; an empty
/// code gives the bare number.
pub fn format(total_cents: i64, currency: &str) -> String {
    let sign = if total_cents < 0 { "-" } else { "" };
    // unsigned_abs: i64::MIN has no positive i64 counterpart.
    let cents = total_cents.unsigned_abs();
    let number = format!("{}.{:02}", cents / 100, cents % 100);
    match symbol(currency) {
        Some(symbol) => format!("{sign}{symbol}{number}"),
        None if currency.is_empty() => format!("{sign}{number}"),
        None => format!("{sign}{number} {currency}"),
    }
}

fn symbol(currency: &str) -> Option<&'static str> {
    match currency {
        "CNY" => Some("¥"),
        "USD" => Some("$"),
        "EUR" => Some("€"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_currencies_get_their_symbol() {
        assert_eq!(format(19_900, "CNY"), "¥199.00");
        assert_eq!(format(500, "USD"), "$5.00");
        assert_eq!(format(99, "EUR"), "€0.99");
    }

    #[test]
    fn other_currencies_follow_the_number() {
        assert_eq!(format(1_205, "GBP"), "12.05 GBP");
        assert_eq!(format(7, ""), "0.07");
    }

    #[test]
    fn exact_at_the_edges() {
        assert_eq!(format(0, "CNY"), "¥0.00");
        assert_eq!(format(-150, "USD"), "-$1.50");
        // 0.1 + 0.2 style rounding cannot happen: every digit is kept.
        assert_eq!(format(99_999_999_999_999, "CNY"), "¥999999999999.99");
        assert_eq!(format(i64::MAX, "XYZ"), "92233720368547758.07 XYZ");
        assert_eq!(format(i64::MIN, "XYZ"), "-92233720368547758.08 XYZ");
    }
}
