//! The cause of a dead letter: what letters set aside for the same reason share, so that an
//! operator sees one line for a run of poison records, not one per record. Pure.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a group of dead letters has in common: where they were set aside, by whom, and why,
/// with the reason's ids and numbers taken out.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Cause {
    /// The dead-letter topic, e.g. `payments.dlq`.
    pub topic: String,
    pub consumer_group: Option<String>,
    pub error_class: Option<String>,
    /// The reason, with every id and number in it replaced by `<id>` or `<n>`.
    pub fingerprint: String,
}

impl Cause {
    pub fn new(
        topic: &str,
        consumer_group: Option<&str>,
        error_class: Option<&str>,
        reason: Option<&str>,
    ) -> Self {
        Self {
            topic: topic.to_owned(),
            consumer_group: consumer_group.map(str::to_owned),
            error_class: error_class.map(str::to_owned),
            fingerprint: fingerprint(reason.unwrap_or_default()),
        }
    }
}

/// `reason` with its ids and numbers taken out: a UUID becomes `<id>`; a number, decimal or
/// hexadecimal (a word of hex digits with a digit in it, or `0x…`), becomes `<n>`; a run of
/// digits inside a word (`order-7`) becomes `<n>` too. Everything else is kept as it is.
pub fn fingerprint(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut rest = reason;
    while let Some(start) = rest.find(is_word_char) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c| !is_word_char(c)).unwrap_or(rest.len());
        push_word(&mut out, &rest[..end]);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn push_word(out: &mut String, word: &str) {
    let hex = word.strip_prefix("0x").unwrap_or(word);
    if uuid::Uuid::try_parse(word).is_ok() {
        out.push_str("<id>");
    } else if !hex.is_empty()
        && hex.chars().all(|c| c.is_ascii_hexdigit())
        && hex.chars().any(|c| c.is_ascii_digit())
    {
        out.push_str("<n>");
    } else {
        // Digit runs inside a word: `order-17`, `e2e-4-payments`.
        let mut in_digits = false;
        for c in word.chars() {
            if c.is_ascii_digit() {
                if !in_digits {
                    out.push_str("<n>");
                }
                in_digits = true;
            } else {
                out.push(c);
                in_digits = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ids_are_taken_out() {
        assert_eq!(
            fingerprint(
                "19 bytes, first byte Some(110); expected magic byte 0 and a 4-byte schema id"
            ),
            "<n> bytes, first byte Some(<n>); expected magic byte <n> and a <n>-byte schema id"
        );
        assert_eq!(
            fingerprint("order 0196c1f2-7a3e-7c4b-9d2e-3f4a5b6c7d8e: the record at payments:1:0"),
            "order <id>: the record at payments:<n>:<n>"
        );
        assert_eq!(
            fingerprint("schema id 0x7ffffff0 (deadbeef01) is unknown, retry-7"),
            "schema id <n> (<n>) is unknown, retry-<n>"
        );
    }

    #[test]
    fn reasons_that_differ_only_in_numbers_share_a_fingerprint() {
        let a = fingerprint("schema id 2147483632 is not in the registry: 40403 not found");
        let b = fingerprint("schema id 7 is not in the registry: 40403 not found");
        assert_eq!(a, b);
        assert_ne!(a, fingerprint("schema id 7 is not an orderflow event's"));
    }

    #[test]
    fn words_without_digits_are_kept() {
        let reason = "corrupt history: order-service cannot read it (café, beef)";
        assert_eq!(fingerprint(reason), reason);
        assert_eq!(fingerprint(""), "");
    }

    #[test]
    fn a_cause_is_where_who_and_why() {
        let one = Cause::new(
            "payments.dlq",
            Some("order-service"),
            Some("invalid_event"),
            Some("amount -5"),
        );
        let two = Cause::new(
            "payments.dlq",
            Some("order-service"),
            Some("invalid_event"),
            Some("amount -12"),
        );
        assert_eq!(one, two);
        assert_ne!(
            one,
            Cause::new(
                "payments.dlq",
                Some("inventory-service"),
                Some("invalid_event"),
                Some("amount -5")
            )
        );
    }
}
