//! Reading settings: the node's (`section.key`) and the plugin's own
//! (`plugin.key`, from its bundle), all as strings the plugin parses.

use std::sync::OnceLock;

/// A plugin's settings, parsed once from whichever source has them.
pub trait Settings: Sized {
    /// Reads every key the plugin uses; defaults fill what is unset, and a
    /// value that does not parse is recorded in the reader.
    fn read(r: &mut Reader<'_>) -> Self;

    /// Parses the settings `lookup` answers for.
    fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let mut reader = Reader {
            lookup,
            problems: Vec::new(),
        };
        let settings = Self::read(&mut reader);
        if reader.problems.is_empty() {
            Ok(settings)
        } else {
            Err(reader.problems)
        }
    }

    /// Parses the list `validate-config` gets; the last occurrence of a key
    /// wins, as it would in a config file read top down.
    fn from_pairs(config: &[(String, String)]) -> Result<Self, Vec<String>> {
        Self::from_lookup(&|key| {
            config
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        })
    }

    /// What `validate-config` answers: every problem, one message each.
    fn validate(config: &[(String, String)]) -> Result<(), Vec<String>> {
        Self::from_pairs(config).map(|_| ())
    }
}

/// Reads keys one at a time, collecting a message for every value that does
/// not parse instead of stopping at the first, so the owner can fix them
/// all in one go.
pub struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    /// The raw value of `key`, if set.
    pub fn raw(&self, key: &str) -> Option<String> {
        (self.lookup)(key)
    }

    /// The parsed value of `key`, or `default` when it is unset. A value
    /// that does not parse is recorded (`expected` says what would) and
    /// also yields `default`, so reading can carry on.
    pub fn value<T>(
        &mut self,
        key: &str,
        default: T,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> T {
        let Some(raw) = self.raw(key) else {
            return default;
        };
        parse(&raw).unwrap_or_else(|| {
            self.problems
                .push(format!("{key}: expected {expected}, got '{raw}'"));
            default
        })
    }

    /// `true` or `false`.
    pub fn flag(&mut self, key: &str, default: bool) -> bool {
        self.value(key, default, "true or false", |raw| match raw {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        })
    }

    /// A whole number.
    pub fn count(&mut self, key: &str, default: u64) -> u64 {
        self.value(key, default, "a whole number", |raw| raw.parse().ok())
    }

    /// A comma-separated list of at least one item (blanks around items
    /// dropped); unset gives `default`, read the same way. A value with no
    /// item in it is refused rather than read as "nothing allowed": a slip
    /// in a setting should not quietly stop every job.
    pub fn list(&mut self, key: &str, default: &str) -> Vec<String> {
        let default = split(default);
        self.value(
            key,
            default,
            "a comma-separated list of at least one item",
            |raw| {
                let items = split(raw);
                (!items.is_empty()).then_some(items)
            },
        )
    }

    /// A comma-separated list that may be empty ("none"); unset gives
    /// `default`, read the same way.
    pub fn items(&mut self, key: &str, default: &str) -> Vec<String> {
        split(&self.raw(key).unwrap_or_else(|| default.to_owned()))
    }

    /// Like [`Reader::list`], but `None` while the key is unset.
    pub fn optional_list(&mut self, key: &str) -> Option<Vec<String>> {
        self.raw(key)?;
        Some(self.list(key, ""))
    }

    /// Records a problem the typed readers cannot see (two keys that
    /// contradict each other, say).
    pub fn problem(&mut self, message: String) {
        self.problems.push(message);
    }
}

fn split(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

/// Settings read from the host once per instance: they never change during
/// an instance's life, and asking for every key on every decision would
/// cost each one a call per key.
pub struct Cached<T>(OnceLock<Result<T, Vec<String>>>);

impl<T: Settings> Cached<T> {
    pub const fn new() -> Cached<T> {
        Cached(OnceLock::new())
    }

    /// The settings, asking `lookup` (the host's `settings::get`) the first
    /// time. The host activates only a plugin whose configuration
    /// validated, so an error here means the settings changed underneath:
    /// callers refuse rather than guess.
    pub fn get(&self, lookup: fn(&str) -> Option<String>) -> &Result<T, Vec<String>> {
        self.0.get_or_init(|| T::from_lookup(&lookup))
    }
}

impl<T: Settings> Default for Cached<T> {
    fn default() -> Self {
        Cached::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Rules {
        on: bool,
        most: u64,
        models: Vec<String>,
        images: Option<Vec<String>>,
        tags: Vec<String>,
    }

    impl Settings for Rules {
        fn read(r: &mut Reader<'_>) -> Rules {
            Rules {
                on: r.flag("a.on", true),
                most: r.count("a.most", 7),
                models: r.list("a.models", "x, y"),
                images: r.optional_list("plugin.images"),
                tags: r.items("plugin.tags", "a"),
            }
        }
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unset_keys_take_their_defaults() {
        assert_eq!(
            Rules::from_pairs(&[]).unwrap(),
            Rules {
                on: true,
                most: 7,
                models: vec!["x".into(), "y".into()],
                images: None,
                tags: vec!["a".into()],
            }
        );
        let none = Rules::from_pairs(&pairs(&[("plugin.tags", "")])).unwrap();
        assert!(none.tags.is_empty(), "an empty list is a list");
    }

    #[test]
    fn every_bad_value_is_reported_and_the_last_occurrence_wins() {
        let problems = Rules::from_pairs(&pairs(&[
            ("a.on", "yes"),
            ("a.most", "5"),
            ("a.most", "many"),
            ("a.models", " , "),
            ("plugin.images", ""),
        ]))
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "a.on: expected true or false, got 'yes'",
                "a.most: expected a whole number, got 'many'",
                "a.models: expected a comma-separated list of at least one item, got ' , '",
                "plugin.images: expected a comma-separated list of at least one item, got ''",
            ]
        );
        let later = Rules::from_pairs(&pairs(&[("a.most", "many"), ("a.most", "5")])).unwrap();
        assert_eq!(later.most, 5);
    }

    #[test]
    fn the_cache_asks_the_host_once() {
        use std::sync::atomic::{AtomicU32, Ordering};
        static ASKED: AtomicU32 = AtomicU32::new(0);
        fn host(key: &str) -> Option<String> {
            ASKED.fetch_add(1, Ordering::Relaxed);
            (key == "a.most").then(|| "3".into())
        }
        static CACHE: Cached<Rules> = Cached::new();
        assert_eq!(CACHE.get(host).as_ref().unwrap().most, 3);
        let after_first = ASKED.load(Ordering::Relaxed);
        assert_eq!(CACHE.get(host).as_ref().unwrap().most, 3);
        assert_eq!(ASKED.load(Ordering::Relaxed), after_first);
    }
}
