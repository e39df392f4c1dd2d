//! status, and the compile cache it warms.

use crate::support::Home;

#[test]
fn status_reports_everything_and_warms_the_cache() {
    let home = Home::opted_in();
    let (code, doc) = home.json(&["status"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["consent"]["claude_jobs"], true);
    assert_eq!(doc["terms_current"], true);
    let policies = doc["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 4);
    for p in policies {
        assert_eq!(p["state"], "ok", "{p}");
        assert_eq!(p["plugin"]["origin"], "default");
        assert_eq!(p["plugin"]["digest"].as_str().unwrap().len(), 64);
    }
    let cached = cache_entries(&home);
    assert_eq!(cached.len(), 4, "{cached:?}");
}

#[test]
fn a_tampered_cache_entry_is_discarded_and_rebuilt() {
    let home = Home::new();
    home.ok(&["status"]);
    let victim = &cache_entries(&home)[0];
    let mut bytes = std::fs::read(victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();
    assert_rebuilt(&home, victim, &bytes);
}

#[test]
fn a_genuine_entry_copied_over_another_plugins_is_recompiled() {
    let home = Home::new();
    home.ok(&["status"]);
    let entries = cache_entries(&home);
    let (donor, victim) = (&entries[0], &entries[1]);
    let swapped = std::fs::read(donor).unwrap();
    std::fs::write(victim, &swapped).unwrap();
    assert_rebuilt(&home, victim, &swapped);
}

/// Every plugin still loads, and the entry at `victim` no longer holds
/// `planted`: it was compiled again from its own plugin.
fn assert_rebuilt(home: &Home, victim: &std::path::Path, planted: &[u8]) {
    let (code, doc) = home.json(&["status"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(
        doc["policies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "ok"),
        "{doc:#}"
    );
    assert_ne!(
        std::fs::read(victim).unwrap(),
        planted,
        "the entry was rewritten"
    );
}

fn cache_entries(home: &Home) -> Vec<std::path::PathBuf> {
    let mut entries: Vec<_> = std::fs::read_dir(home.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    entries.sort();
    entries
}
