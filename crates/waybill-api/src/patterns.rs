//! The request constraints the OpenAPI documents state, written to accept exactly what the
//! domain's parsers accept (`waybill_core::{CarrierCode, TenantId, SourceId, TrackingNumber}`),
//! so a schema-valid request is never refused for its shape and a schema-invalid one always is.
//! Tests run the patterns and the parsers side by side over generated strings.
//!
//! The patterns use only syntax ECMA-262, Python's `re` and Rust's `regex` read the same way
//! (`\uXXXX` escapes, classes, bounded repeats), because clients validate with the first, the
//! contract tests generate data with the second and our tests check with the third.

/// The white space class, as a macro so the patterns below can be `concat!`ed constants.
macro_rules! white_space {
    () => {
        r"[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    };
}

/// The white space the parsers trim or drop: exactly Rust's `char::is_whitespace` (the Unicode
/// `White_Space` property), spelled out because `\s` means something different in each engine.
pub const WHITE_SPACE: &str = white_space!();

/// A slug as a client may send it (`carrier`, `tenant`, `source`): white space around it is
/// trimmed, inner spaces become `-`, ASCII letters are lower-cased; then 1 to 40 of
/// `a-z 0-9 - _`.
pub const SLUG: &str = concat!(
    "^",
    white_space!(),
    "*[A-Za-z0-9_-](?:[A-Za-z0-9_ -]{0,38}[A-Za-z0-9_-])?",
    white_space!(),
    "*$"
);

/// A source id exactly as configured (the form `waybill_core::SourceId` normalises to): 1 to
/// 40 of `a-z 0-9 - _`. Webhook URLs name their source exactly.
pub const SOURCE_ID: &str = "^[a-z0-9_-]{1,40}$";

/// A tracking number as a client may send it: white space anywhere is dropped, ASCII letters
/// are upper-cased; then 1 to 64 of ASCII letters, digits and `- _ . /`.
pub const TRACKING_NUMBER: &str = concat!(
    "^",
    white_space!(),
    "*(?:[A-Za-z0-9._/-]",
    white_space!(),
    "*){1,64}$"
);

/// Text that is not only white space (it holds at least one other character). Unanchored: a
/// JSON Schema `pattern` matches anywhere in the value.
pub const NOT_BLANK: &str =
    r"[^\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]";

/// Longest order number accepted, in characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them).
pub use waybill_core::storable::MAX_ORDER_NUMBER_CHARS;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use regex::Regex;
    use waybill_core::{CarrierCode, TrackingNumber};

    use super::*;

    /// Strings built from the characters that matter to the rules: the allowed ones, every
    /// white space, near misses (other Unicode letters, dots, slashes, controls, NUL).
    fn interesting() -> impl Strategy<Value = String> {
        let alphabet: Vec<char> =
            "aZ09-_./ \t\n\u{0B}\u{85}\u{A0}\u{2028}\u{3000}\u{FEFF}\u{1C}é\u{0}<:"
                .chars()
                .collect();
        proptest::collection::vec(proptest::sample::select(alphabet), 0..70)
            .prop_map(|chars| chars.into_iter().collect())
    }

    fn anchored_match(pattern: &str, value: &str) -> bool {
        Regex::new(pattern).unwrap().is_match(value)
    }

    /// What the code accepts of a value.
    type Accepts = fn(&str) -> bool;

    /// Each pattern, named, with what the code accepts: the parser's verdict (for `SOURCE_ID`,
    /// the normalised form itself; for `NOT_BLANK`, not trimming to nothing).
    const AGREEMENTS: [(&str, &str, Accepts); 4] = [
        ("SLUG", SLUG, |value| CarrierCode::parse(value).is_ok()),
        ("TRACKING_NUMBER", TRACKING_NUMBER, |value| {
            TrackingNumber::parse(value).is_ok()
        }),
        ("SOURCE_ID", SOURCE_ID, |value| {
            waybill_core::SourceId::parse(value).is_ok_and(|id| id.as_str() == value)
        }),
        ("NOT_BLANK", NOT_BLANK, |value| !value.trim().is_empty()),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn each_pattern_accepts_what_the_code_accepts(value in interesting()) {
            for (name, pattern, accepts) in AGREEMENTS {
                prop_assert_eq!(
                    anchored_match(pattern, &value),
                    accepts(&value),
                    "{}: {:?}", name, value
                );
            }
        }
    }

    #[test]
    fn not_blank_is_the_white_space_class_negated() {
        assert_eq!(NOT_BLANK.replacen("[^", "[", 1), WHITE_SPACE);
    }

    #[test]
    fn the_white_space_class_is_exactly_rusts() {
        let class = Regex::new(&format!("^{WHITE_SPACE}$")).unwrap();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            assert_eq!(
                class.is_match(c.encode_utf8(&mut [0; 4])),
                c.is_whitespace(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn long_values_are_measured_like_the_parsers_measure_them() {
        let forty = "a".repeat(40);
        assert!(anchored_match(SLUG, &format!("  {forty}\u{3000}")));
        assert!(!anchored_match(SLUG, &format!("{forty}a")));
        let sixty_four = "1 ".repeat(64);
        assert!(anchored_match(TRACKING_NUMBER, &sixty_four));
        assert!(!anchored_match(TRACKING_NUMBER, &format!("{sixty_four}1")));
    }
}
