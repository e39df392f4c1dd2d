//! Helps someone who typed a key that does not exist: the closest real key,
//! and the keys they could have meant. Reads the registry, changes nothing.

use super::keys::keys;

/// The real key closest to `typed`, if any is close enough to be a typo.
/// A key typed without its section (`dailyTasks`) is matched too.
pub(super) fn closest(typed: &str) -> Option<&'static str> {
    let typed = typed.to_ascii_lowercase();
    // Half the typed length still catches a truncated key such as
    // `limits.daily`, while a word from nowhere suggests nothing.
    let tolerance = (typed.chars().count() / 2).max(2);
    keys()
        .iter()
        .map(|key| {
            let full = key.name.to_ascii_lowercase();
            let short = full.split_once('.').map_or(full.as_str(), |(_, name)| name);
            let distance = edit_distance(&typed, &full).min(edit_distance(&typed, short));
            (distance, key.name)
        })
        .filter(|(distance, _)| *distance <= tolerance)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// The rest of an unknown-key message: a suggestion, then the valid keys of
/// the section named, or of every section when the section is unknown.
pub(super) fn hint(typed: &str, suggestion: &Option<String>) -> String {
    let mut hint = match suggestion {
        Some(name) => format!("; did you mean '{name}'?"),
        None => ";".to_string(),
    };
    let section = typed.split_once('.').map(|(section, _)| section);
    let known = section.filter(|section| keys().iter().any(|key| section_of(key.name) == *section));
    match known {
        Some(section) => {
            hint.push_str(&format!(
                " valid keys in [{section}]: {}",
                names_in(section)
            ));
        }
        None => {
            hint.push_str(" valid keys:");
            for section in sections() {
                hint.push_str(&format!(" [{section}] {};", names_in(section)));
            }
            hint.pop();
        }
    }
    hint
}

fn section_of(name: &str) -> &str {
    name.split_once('.').map_or(name, |(section, _)| section)
}

fn sections() -> Vec<&'static str> {
    let mut sections: Vec<&str> = keys().iter().map(|key| section_of(key.name)).collect();
    sections.dedup();
    sections
}

fn names_in(section: &str) -> String {
    keys()
        .iter()
        .filter(|key| section_of(key.name) == section)
        .map(|key| &key.name[section.len() + 1..])
        .collect::<Vec<_>>()
        .join(", ")
}

/// Levenshtein distance, over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn typos_truncations_and_missing_sections_find_their_key() {
        assert_eq!(closest("limits.daily"), Some("limits.dailyTasks"));
        assert_eq!(closest("limits.dailytasks"), Some("limits.dailyTasks"));
        assert_eq!(closest("docker.memroy"), Some("docker.memory"));
        assert_eq!(closest("maxBidPrice"), Some("market.maxBidPrice"));
        assert_eq!(closest("zzz"), None);
    }

    #[test]
    fn hint_lists_the_section_or_every_section() {
        let in_section = hint("limits.daily", &Some("limits.dailyTasks".to_string()));
        assert_eq!(
            in_section,
            "; did you mean 'limits.dailyTasks'? valid keys in [limits]: \
             concurrentJobs, dailyTasks, dailyTokens, maxTokensPerTask, requestsPerJob, \
             timeoutSecs"
        );
        let anywhere = hint("nope.key", &None);
        assert!(
            anywhere.starts_with(
                "; valid keys: [api] baseUrl, defaultModel, maxRetries; [compliance] "
            )
        );
        assert!(
            anywhere.ends_with("[workspace] maxBytes, maxFiles"),
            "{anywhere}"
        );
    }
}
