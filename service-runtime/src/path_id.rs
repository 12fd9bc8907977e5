//! Identifiers taken from a URL path (`/products/{product_id}`): bounded before they are
//! looked up, echoed in a problem or written to a log, so a request cannot make the service
//! repeat megabytes or forge log lines. One over the bound, or a control character, is a
//! 400 that does not repeat the value.

use std::fmt;

use serde::Deserialize;

/// 1 to `MAX` characters, none of them a control character.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PathId<const MAX: usize>(String);

impl<const MAX: usize> PathId<MAX> {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl<const MAX: usize> TryFrom<String> for PathId<MAX> {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        let length = value.chars().count();
        if length == 0 || length > MAX || value.chars().any(char::is_control) {
            return Err(format!(
                "an id of 1 to {MAX} characters without control characters"
            ));
        }
        Ok(Self(value))
    }
}

impl<const MAX: usize> fmt::Display for PathId<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_and_one_line() {
        type Id = PathId<4>;
        assert!(Id::try_from("abcd".to_owned()).is_ok());
        assert!(
            Id::try_from("éééé".to_owned()).is_ok(),
            "characters, not bytes"
        );
        for refused in ["", "abcde", "a\nb", "a\u{1b}[31m"] {
            let error = Id::try_from(refused.to_owned()).unwrap_err();
            assert!(!error.contains(refused) || refused.is_empty(), "{error}");
        }
    }
}
