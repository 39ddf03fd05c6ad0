//! Exact money parsing: decimal strings ("49.90") into integer minor units, per ISO 4217
//! currency exponent. No floating point anywhere.

use crate::schema::{Currency, Money};

/// Largest amount accepted, in major units of any currency (one billion: 100,000,000,000
/// minor units of EUR, 1,000,000,000,000 of KWD). No sale an affiliate program pays on is
/// near it, and it keeps sums of millions of amounts, and any commission rate up to
/// 1000% of one, far inside `i64` (10^12 minor units at most per amount, 10^13 per
/// commission). The ledger widens or checks its sums as well; this bound is where a
/// poison amount is refused, at the edge, with a 400 and nothing written.
pub const AMOUNT_MAJOR_MAX: i64 = 1_000_000_000;
/// Longest integer part that can be within [`AMOUNT_MAJOR_MAX`] (leading zeros aside).
const INTEGER_DIGITS_MAX: usize = 10;

const _: () = assert!(AMOUNT_MAJOR_MAX < 10i64.pow(INTEGER_DIGITS_MAX as u32));

/// Currencies we accept and their minor-unit exponents (ISO 4217). A code not listed is
/// refused as unknown rather than guessed at.
const CURRENCIES: &[(&str, u32)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
    // "No currency": for events without an amount (leads, signups).
    ("XXX", 0),
];

/// Why an amount was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("unknown currency {0:?} (ISO 4217 code expected)")]
    UnknownCurrency(String),
    #[error("amount {0:?} is not a decimal number like \"49.90\"")]
    NotDecimal(String),
    #[error("amount {0:?} is negative")]
    Negative(String),
    #[error("amount {0:?} has more decimals than {1} allows ({2})")]
    TooManyDecimals(String, String, u32),
    #[error("amount {0:?} is above the largest accepted, 1000000000 (one billion) {1}")]
    TooLarge(String, String),
}

/// The minor-unit exponent of a known currency.
pub fn exponent(code: &str) -> Option<u32> {
    CURRENCIES.iter().find(|(c, _)| *c == code).map(|(_, e)| *e)
}

/// Parses `amount` in `currency` exactly. Accepts `"49"`, `"49.9"`, `"49.90"`; refuses
/// signs, exponents, spaces, separators, and more decimals than the currency has.
pub fn parse(amount: &str, currency: &str) -> Result<Money, AmountError> {
    let exp = exponent(currency).ok_or_else(|| AmountError::UnknownCurrency(currency.into()))?;
    let code =
        Currency::parse(currency).ok_or_else(|| AmountError::UnknownCurrency(currency.into()))?;
    if amount.starts_with('-') {
        return Err(AmountError::Negative(amount.into()));
    }
    let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (amount.contains('.') && frac.is_empty())
    {
        return Err(AmountError::NotDecimal(amount.into()));
    }
    if frac.len() > exp as usize {
        return Err(AmountError::TooManyDecimals(
            amount.into(),
            currency.into(),
            exp,
        ));
    }
    let int = int.trim_start_matches('0');
    let too_large = || AmountError::TooLarge(amount.into(), currency.into());
    if int.len() > INTEGER_DIGITS_MAX {
        return Err(too_large());
    }
    let mut minor: i64 = if int.is_empty() {
        0
    } else {
        int.parse().expect("at most 10 digits")
    };
    let has_fraction = frac.bytes().any(|b| b != b'0');
    if minor > AMOUNT_MAJOR_MAX || (minor == AMOUNT_MAJOR_MAX && has_fraction) {
        return Err(too_large());
    }
    for _ in 0..exp {
        minor *= 10;
    }
    let mut f: i64 = 0;
    for i in 0..exp as usize {
        f = f * 10 + frac.as_bytes().get(i).map_or(0, |b| (b - b'0') as i64);
    }
    Ok(Money {
        amount_minor: minor + f,
        currency: code,
    })
}

/// Formats minor units back as a decimal string ("4990", EUR -> "49.90").
pub fn format(m: &Money) -> String {
    let exp = exponent(m.currency.as_str()).unwrap_or(2);
    if exp == 0 {
        return m.amount_minor.to_string();
    }
    let scale = 10i64.pow(exp);
    let sign = if m.amount_minor < 0 { "-" } else { "" };
    let a = m.amount_minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        a / scale as u64,
        a % scale as u64,
        width = exp as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(a: &str, c: &str) -> i64 {
        parse(a, c).unwrap().amount_minor
    }

    #[test]
    fn parses_exactly_per_currency_exponent() {
        assert_eq!(minor("49.90", "EUR"), 4990);
        assert_eq!(minor("49.9", "EUR"), 4990);
        assert_eq!(minor("49", "EUR"), 4900);
        assert_eq!(minor("0.01", "USD"), 1);
        assert_eq!(minor("0", "USD"), 0);
        assert_eq!(minor("1500", "JPY"), 1500);
        assert_eq!(minor("1.234", "KWD"), 1234);
        assert_eq!(minor("0000012.50", "GBP"), 1250);
        assert_eq!(minor("1000000000", "EUR"), 100_000_000_000);
        assert_eq!(minor("1000000000.000", "KWD"), 1_000_000_000_000);
        assert_eq!(minor("0000000000001000000000", "JPY"), 1_000_000_000);
        assert_eq!(format(&parse("49.90", "EUR").unwrap()), "49.90");
        assert_eq!(format(&parse("1.234", "KWD").unwrap()), "1.234");
        assert_eq!(format(&parse("1500", "JPY").unwrap()), "1500");
    }

    #[test]
    fn refuses_what_is_not_an_exact_amount() {
        use AmountError::*;
        type Case = (&'static str, &'static str, fn(&AmountError) -> bool);
        let cases: &[Case] = &[
            ("49.90", "XYZ", |e| matches!(e, UnknownCurrency(_))),
            ("49.90", "eur", |e| matches!(e, UnknownCurrency(_))),
            ("-1.00", "EUR", |e| matches!(e, Negative(_))),
            ("49.901", "EUR", |e| matches!(e, TooManyDecimals(..))),
            ("1.5", "JPY", |e| matches!(e, TooManyDecimals(..))),
            ("1e3", "EUR", |e| matches!(e, NotDecimal(_))),
            ("", "EUR", |e| matches!(e, NotDecimal(_))),
            (".5", "EUR", |e| matches!(e, NotDecimal(_))),
            ("5.", "EUR", |e| matches!(e, NotDecimal(_))),
            ("1,000.00", "EUR", |e| matches!(e, NotDecimal(_))),
            (" 1.00", "EUR", |e| matches!(e, NotDecimal(_))),
            ("+1.00", "EUR", |e| matches!(e, NotDecimal(_))),
            ("NaN", "EUR", |e| matches!(e, NotDecimal(_))),
            ("99999999999999.00", "EUR", |e| matches!(e, TooLarge(..))),
            ("9999999999999.99", "EUR", |e| matches!(e, TooLarge(..))),
            ("1000000000.01", "EUR", |e| matches!(e, TooLarge(..))),
            ("1000000001", "JPY", |e| matches!(e, TooLarge(..))),
        ];
        for (a, c, ok) in cases {
            let e = parse(a, c).unwrap_err();
            assert!(ok(&e), "{a:?} {c:?} gave {e:?}");
        }
    }
}
