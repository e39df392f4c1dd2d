//! What each kind of setting is allowed to hold, and how to say so to the
//! user. The same rule checks a value typed on the command line and a value
//! read from the file, so neither path can let through what the other
//! refuses. Rules only judge values; they never change settings.

/// The largest integer TOML can store: a bigger value could be set but
/// never saved.
const TOML_MAX: u64 = i64::MAX as u64;

/// The whole numbers a key accepts, both ends included.
#[derive(Clone, Copy, Debug)]
pub(super) struct IntRange {
    pub(super) min: u64,
    pub(super) max: u64,
}

impl IntRange {
    pub(super) const fn new(min: u64, max: u64) -> IntRange {
        IntRange { min, max }
    }

    pub(super) const fn at_least(min: u64) -> IntRange {
        IntRange { min, max: TOML_MAX }
    }

    pub(super) fn contains(&self, n: u64) -> bool {
        (self.min..=self.max).contains(&n)
    }

    pub(super) fn parse(&self, text: &str) -> Option<u64> {
        let text = text.trim();
        // u64's parser takes a leading '+'; a count is digits only.
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok().filter(|n| self.contains(*n))
    }

    pub(super) fn kind(&self) -> String {
        match (self.min, self.max) {
            (0, TOML_MAX) => "integer".to_string(),
            (min, TOML_MAX) => format!("integer {min}.."),
            (min, max) => format!("integer {min}..={max}"),
        }
    }

    pub(super) fn expected(&self) -> String {
        format!("a whole number from {} to {}", self.min, self.max)
    }
}

/// What a free-text key accepts.
#[derive(Clone, Copy, Debug)]
pub(super) enum TextRule {
    /// A name with no spaces, such as a model or an image reference.
    Name {
        what: &'static str,
        example: &'static str,
    },
    /// Empty, or the name of an environment variable.
    EnvVarOrEmpty,
    /// Empty, or a file path.
    PathOrEmpty,
    /// Empty, or a name without spaces.
    NameOrEmpty,
    /// An http:// or https:// base URL with a host and no path, query or
    /// fragment (the gateway appends `/v1/messages`).
    BaseUrl,
}

impl TextRule {
    pub(super) fn accepts(&self, text: &str) -> bool {
        match self {
            TextRule::Name { .. } => is_name(text),
            TextRule::EnvVarOrEmpty => text.is_empty() || is_env_var(text),
            TextRule::PathOrEmpty => !text.chars().any(char::is_control),
            TextRule::NameOrEmpty => text.is_empty() || is_name(text),
            TextRule::BaseUrl => is_base_url(text),
        }
    }

    pub(super) fn expected(&self) -> String {
        match self {
            TextRule::Name { what, example } => {
                format!("{what} without spaces, e.g. {example}")
            }
            TextRule::EnvVarOrEmpty => "an environment variable name of A-Z, 0-9 and _ \
                 that does not start with a digit, or empty for none"
                .to_string(),
            TextRule::PathOrEmpty => {
                "a file path without control characters, or empty for none".to_string()
            }
            TextRule::NameOrEmpty => {
                "a name without spaces or commas, or empty for none".to_string()
            }
            TextRule::BaseUrl => "an http:// or https:// URL with a host and no path, \
                 e.g. https://api.anthropic.com"
                .to_string(),
        }
    }
}

/// What a list key accepts. Items never contain commas, since the command
/// line separates items with them.
#[derive(Clone, Copy, Debug)]
pub(super) enum ListRule {
    /// One or more model names.
    Models,
    /// Any number of NATS server URLs.
    NatsUrls,
    /// Any number of node ids (64 lowercase hex characters each).
    NodeIds,
    /// Any number of names without spaces, e.g. beta flags or images.
    Names {
        what: &'static str,
        example: &'static str,
    },
}

const NATS_SCHEMES: [&str; 2] = ["nats://", "tls://"];

impl ListRule {
    pub(super) fn accepts(&self, items: &[String]) -> bool {
        match self {
            ListRule::Models => !items.is_empty() && items.iter().all(|item| is_name(item)),
            ListRule::NatsUrls => items.iter().all(|item| is_nats_url(item)),
            ListRule::NodeIds => items.iter().all(|item| is_node_id(item)),
            ListRule::Names { .. } => items.iter().all(|item| is_name(item)),
        }
    }

    pub(super) fn expected(&self) -> String {
        match self {
            ListRule::Models => "a comma-separated list of one or more model names \
                 without spaces, e.g. claude-sonnet-4-5,claude-haiku-4-5"
                .to_string(),
            ListRule::NatsUrls => "a comma-separated list of URLs starting with nats:// \
                 or tls://, or empty for none"
                .to_string(),
            ListRule::NodeIds => "a comma-separated list of node ids (64 lowercase hex \
                 characters each, as `keys show` prints them), or empty for none"
                .to_string(),
            ListRule::Names { what, example } => {
                format!(
                    "a comma-separated list of {what} without spaces, e.g. {example}, or empty for none"
                )
            }
        }
    }
}

fn is_name(text: &str) -> bool {
    !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ',')
}

fn is_env_var(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn is_node_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_nats_url(text: &str) -> bool {
    is_name(text)
        && NATS_SCHEMES.iter().any(|scheme| {
            text.strip_prefix(scheme)
                .is_some_and(|rest| !rest.is_empty())
        })
}

fn is_base_url(text: &str) -> bool {
    let rest = ["https://", "http://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme));
    let Some(authority) = rest.map(|r| r.strip_suffix('/').unwrap_or(r)) else {
        return false;
    };
    !authority.is_empty()
        && !authority
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '@'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_out_of_bounds_and_signs() {
        let range = IntRange::new(1, 10);
        assert_eq!(range.parse(" 10 "), Some(10));
        assert_eq!(range.parse("0"), None);
        assert_eq!(range.parse("11"), None);
        assert_eq!(range.parse("+5"), None);
        assert_eq!(range.parse("-5"), None);
        assert_eq!(range.parse(""), None);
    }

    #[test]
    fn unbounded_ranges_stop_where_toml_does() {
        let range = IntRange::at_least(0);
        assert_eq!(range.parse(&TOML_MAX.to_string()), Some(TOML_MAX));
        assert_eq!(range.parse(&(TOML_MAX + 1).to_string()), None);
        assert_eq!(range.kind(), "integer");
        assert_eq!(IntRange::at_least(1).kind(), "integer 1..");
        assert_eq!(IntRange::new(1, 1024).kind(), "integer 1..=1024");
    }

    #[test]
    fn env_var_names_are_upper_case_identifiers() {
        let rule = TextRule::EnvVarOrEmpty;
        for ok in ["", "KEY_PASS", "_X1"] {
            assert!(rule.accepts(ok), "{ok:?} refused");
        }
        for bad in ["1KEY", "key", "KEY-PASS", "KEY PASS"] {
            assert!(!rule.accepts(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths_refuse_control_characters() {
        assert!(TextRule::PathOrEmpty.accepts(""));
        assert!(TextRule::PathOrEmpty.accepts("/home/me/my key.txt"));
        assert!(!TextRule::PathOrEmpty.accepts("key\0.txt"));
    }

    #[test]
    fn lists_check_each_item() {
        let list = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(ListRule::Models.accepts(&list(&["claude-sonnet-4-5"])));
        assert!(!ListRule::Models.accepts(&list(&[])));
        assert!(!ListRule::Models.accepts(&list(&["a", ""])));
        assert!(ListRule::NatsUrls.accepts(&list(&[])));
        assert!(ListRule::NatsUrls.accepts(&list(&["nats://h:4222", "tls://h:4443"])));
        assert!(!ListRule::NatsUrls.accepts(&list(&["http://h"])));
        assert!(!ListRule::NatsUrls.accepts(&list(&["nats://"])));
        assert!(!ListRule::NatsUrls.accepts(&list(&["nats://a,nats://b"])));
        assert!(ListRule::NodeIds.accepts(&list(&[])));
        assert!(ListRule::NodeIds.accepts(&list(&[&"ab".repeat(32)])));
        assert!(!ListRule::NodeIds.accepts(&list(&[&"AB".repeat(32)])));
        assert!(!ListRule::NodeIds.accepts(&list(&["abc"])));
    }
}
