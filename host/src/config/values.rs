//! The value types and text forms shared by the settings: `ByteSize`, and
//! the bool and list spellings the command line accepts.
//!
//! Parsing here is about spelling only; whether a value is allowed for a
//! particular key is decided in `rules`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::error::InvalidSize;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A size in bytes, written like Docker writes it: `512m`, `64k`, `2g` or a
/// plain number of bytes. Suffixes are binary (m = MiB), as in Docker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n * MIB)
    }
}

impl FromStr for ByteSize {
    type Err = InvalidSize;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidSize {
            text: text.to_string(),
        };
        let trimmed = text.trim();
        let (digits, unit) = match trimmed.char_indices().last() {
            Some((at, c)) if c.is_ascii_alphabetic() => (&trimmed[..at], c.to_ascii_lowercase()),
            _ => (trimmed, 'b'),
        };
        let scale = match unit {
            'b' => 1,
            'k' => KIB,
            'm' => MIB,
            'g' => GIB,
            _ => return Err(invalid()),
        };
        // u64's own parser also takes a leading '+', which is not a size.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let count: u64 = digits.parse().map_err(|_| invalid())?;
        count.checked_mul(scale).map(ByteSize).ok_or_else(invalid)
    }
}

impl fmt::Display for ByteSize {
    /// The shortest exact form, so that parsing it gives the same size back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        match [(GIB, 'g'), (MIB, 'm'), (KIB, 'k')]
            .into_iter()
            .find(|(unit, _)| bytes != 0 && bytes.is_multiple_of(*unit))
        {
            Some((unit, suffix)) => write!(f, "{}{suffix}", bytes / unit),
            None => write!(f, "{bytes}"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ByteSizeVisitor)
    }
}

/// Takes `"512m"`, and also a bare integer of bytes, as Docker does.
struct ByteSizeVisitor;

impl Visitor<'_> for ByteSizeVisitor {
    type Value = ByteSize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"512m\" (k, m or g suffix) or a number of bytes")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
        text.parse().map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(bytes))
    }

    fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
        u64::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| E::custom("a size cannot be negative"))
    }
}

/// Reads the spellings of yes and no that people type on a command line.
pub(super) fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Splits `a, b,c` into items; an empty text is an empty list. Empty items
/// are kept so that the key's rule can refuse them rather than hide a typo.
pub(super) fn parse_list(text: &str) -> Vec<String> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    text.split(',')
        .map(|item| item.trim().to_string())
        .collect()
}

pub(super) fn join_list(items: &[String]) -> String {
    items.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_any_case_suffix() {
        assert_eq!("512m".parse::<ByteSize>().unwrap(), ByteSize::mib(512));
        assert_eq!("512M".parse::<ByteSize>().unwrap(), ByteSize::mib(512));
        assert_eq!("2g".parse::<ByteSize>().unwrap(), ByteSize(2 * GIB));
        assert_eq!(" 64k ".parse::<ByteSize>().unwrap(), ByteSize(64 * KIB));
        assert_eq!("1000".parse::<ByteSize>().unwrap(), ByteSize(1000));
    }

    #[test]
    fn malformed_sizes_are_refused() {
        for text in [
            "",
            "m",
            "12x",
            "+5m",
            "-1",
            "1.5g",
            "5 m",
            "99999999999999g",
        ] {
            assert!(text.parse::<ByteSize>().is_err(), "{text:?} parsed");
        }
    }

    #[test]
    fn sizes_print_in_their_shortest_exact_form() {
        assert_eq!(ByteSize::mib(512).to_string(), "512m");
        assert_eq!(ByteSize(1536 * KIB).to_string(), "1536k");
        assert_eq!(ByteSize(GIB).to_string(), "1g");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(ByteSize(0).to_string(), "0");
    }

    #[test]
    fn bools_take_common_spellings() {
        for text in ["true", "YES", "on", "1"] {
            assert_eq!(parse_bool(text), Some(true));
        }
        for text in ["false", "No", "OFF", "0"] {
            assert_eq!(parse_bool(text), Some(false));
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn lists_split_on_commas_and_keep_empty_items() {
        assert_eq!(parse_list(""), Vec::<String>::new());
        assert_eq!(parse_list("a, b,c"), ["a", "b", "c"]);
        assert_eq!(parse_list("a,,b"), ["a", "", "b"]);
        assert_eq!(join_list(&parse_list("a,b")), "a,b");
    }
}
