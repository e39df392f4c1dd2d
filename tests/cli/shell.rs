//! What a shell user gets besides the commands: completion scripts and man
//! pages, generated from the same definitions the binary parses.

use std::process::Command;

use crate::support::Home;

/// What bash offers after `words` (the last one being completed), with the
/// script `completions bash` printed sourced the way a user would.
fn bash_completes(script: &str, words: &[&str]) -> Vec<String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), script).unwrap();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'
         f=$(complete -p claude-max-market | sed -E 's/.* -F ([^ ]+) .*/\\1/')
         COMP_WORDS=({})
         COMP_CWORD={}
         \"$f\" claude-max-market '{}' '{}'
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.path().display(),
        quoted.join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_their_flags() {
    let home = Home::new();
    let script = home.ok(&["completions", "bash"]).stdout;
    let policy = bash_completes(&script, &["claude-max-market", "policy", ""]);
    for sub in ["install", "set", "test", "bench", "trust", "rollback"] {
        assert!(policy.contains(&sub.to_owned()), "{sub} not in {policy:?}");
    }
    let audit = bash_completes(&script, &["claude-max-market", "audit", "--"]);
    for flag in ["--verify", "--against", "--recover", "--since"] {
        assert!(audit.contains(&flag.to_owned()), "{flag} not in {audit:?}");
    }

    for shell in ["zsh", "fish"] {
        let script = home.ok(&["completions", shell]).stdout;
        assert!(script.contains("rollback"), "{shell}: {script}");
    }
    let bad = home.run(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2, "{bad:?}");
}

#[test]
fn man_pages_cover_every_command() {
    let home = Home::new();
    let main = home.ok(&["man"]).stdout;
    assert!(main.contains(".TH claude-max-market 1"), "{main}");
    let dir = tempfile::tempdir().unwrap();
    let (code, doc) = home.json(&["man", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{doc:#}");
    let install = std::fs::read_to_string(dir.path().join("claude-max-market-policy-install.1"))
        .expect("a page per nested command");
    assert!(
        install.contains("claude\\-max\\-market policy install"),
        "{install}"
    );
    assert!(dir.path().join("claude-max-market-docker-build.1").exists());
    assert!(doc["written"].as_array().unwrap().len() > 40, "{doc:#}");
}
