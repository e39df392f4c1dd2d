//! `policy new [--lang rust|python|c] ROLE NAME`: writes a policy plugin of
//! one role that builds with one command and passes its own `cases.toml` as
//! generated.
//!
//! A new plugin starts from a real one, never from a copy kept here that
//! could drift: in Rust, the default plugin of the role (`plugins/ROLE`,
//! which this binary also runs) with the plugin SDK (`plugins/sdk`); in
//! Python, the example in `examples/python-approval`, which the tests build
//! and run. Their sources are compiled into this binary from those folders,
//! and `wit/policy.wit` is the host's own, so a new plugin always targets
//! the contract this host speaks. Only the package manifest, the bundle
//! source and the README are written from templates, with `{{name}}`,
//! `{{crate}}`, `{{role}}`, `{{world}}` and `{{component}}` filled in by
//! plain replacement. The user's files are never overwritten: the folder
//! must be new or empty, every file is created only if it does not exist,
//! and when a write fails whatever was created is removed again.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::policy::Role;

use super::OpsError;

/// The longest name: short enough to name the bundle too, and with
/// `.cmmpol` added a file, on any file system.
const MAX_NAME: usize = 63;

const WIT: &str = include_str!("../../../wit/policy.wit");
// Not `.gitignore`: under that name it would apply to this source folder.
const GITIGNORE: &str = include_str!("scaffold/gitignore");
const BUNDLE: &str = include_str!("scaffold/bundle.toml");

/// The plugin SDK, copied next to a new Rust plugin so it builds anywhere.
const SDK: [(&str, &str); 4] = [
    (
        "sdk/Cargo.toml",
        include_str!("../../../plugins/sdk/Cargo.toml"),
    ),
    (
        "sdk/src/lib.rs",
        include_str!("../../../plugins/sdk/src/lib.rs"),
    ),
    (
        "sdk/src/settings.rs",
        include_str!("../../../plugins/sdk/src/settings.rs"),
    ),
    (
        "sdk/src/testing.rs",
        include_str!("../../../plugins/sdk/src/testing.rs"),
    ),
];

/// The languages a new plugin can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Rust,
    Python,
    C,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::C => "c",
        }
    }

    /// Why there is no `role` plugin to start from in this language, if
    /// there is none.
    pub fn unsupported(self, role: Role) -> Option<String> {
        let language = match self {
            Lang::Rust => return None,
            Lang::Python => "Python",
            Lang::C => "C",
        };
        (role != Role::Approval).then(|| {
            format!(
                "there is no {language} {role} plugin to start from: the {language} example is \
                 an approval policy (policy new --lang {} approval NAME); write a {role} \
                 plugin in Rust with --lang rust, or start from the approval example and \
                 target the {} world",
                self.as_str(),
                role.world()
            )
        })
    }

    /// The command that builds the plugin, run in its folder.
    fn build(self, role: Role, name: &str) -> String {
        match self {
            Lang::Rust => "cargo build --release --target wasm32-wasip2".to_owned(),
            Lang::Python => format!(
                "componentize-py -d wit -w {} componentize app -o {}",
                role.world(),
                self.component(name).display()
            ),
            Lang::C => {
                let stem = role.world().replace('-', "_");
                format!(
                    "cmm-c-plugin bindings wit {world} gen && clang-19 --target=wasm32-wasi \
                     -mexec-model=reactor -Os -Wall -Wextra -Werror -Wl,--strip-debug -I gen \
                     -o app.wasm app.c gen/{stem}.c gen/{stem}_component_type.o && \
                     cmm-c-plugin component app.wasm {}",
                    self.component(name).display(),
                    world = role.world(),
                )
            }
        }
    }

    /// Where the build puts the component, relative to the plugin folder.
    fn component(self, name: &str) -> PathBuf {
        match self {
            Lang::Rust => {
                Path::new("target/wasm32-wasip2/release").join(format!("{}.wasm", crate_name(name)))
            }
            Lang::Python | Lang::C => PathBuf::from(format!("{name}.wasm")),
        }
    }
}

/// A plugin `scaffold` wrote.
#[derive(Debug, Serialize)]
pub struct Scaffolded {
    /// The plugin folder, as given.
    pub dir: PathBuf,
    pub lang: Lang,
    /// Every file written, relative to `dir`.
    pub files: Vec<PathBuf>,
    /// The component `build` makes, relative to `dir`.
    pub component: PathBuf,
    /// The command that builds the component, run in `dir`.
    pub build: String,
    /// The command that runs the plugin's own cases, run in `dir`.
    pub test: String,
}

/// Writes a `lang` plugin for `role` named `name` into `dir`, which must
/// not exist yet or be an empty folder.
pub fn scaffold(lang: Lang, role: Role, name: &str, dir: &Path) -> Result<Scaffolded, OpsError> {
    check_name(name)?;
    let files = render(lang, role, name)?;
    check_free(dir)?;
    let mut made = Made::default();
    if let Err(e) = write_all(&mut made, dir, &files) {
        made.undo();
        return Err(e);
    }
    let component = lang.component(name);
    Ok(Scaffolded {
        dir: dir.to_path_buf(),
        lang,
        files: files.iter().map(|(path, _)| PathBuf::from(path)).collect(),
        test: format!(
            "claude-max-market policy test {} --cases cases.toml",
            component.display()
        ),
        component,
        build: lang.build(role, name),
    })
}

/// The name becomes a crate, a bundle and a file name, and goes into the
/// templates as it is, so only characters safe in all of those pass.
fn check_name(name: &str) -> Result<(), OpsError> {
    let mut chars = name.chars();
    let valid = name.len() <= MAX_NAME
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        // `a--b` would be the crate `a__b`, which rustc warns is not snake
        // case, and a new crate should build without warnings.
        && !name.contains("--");
    if valid {
        return Ok(());
    }
    Err(OpsError::InvalidInput {
        what: format!(
            "invalid plugin name '{name}': it becomes a crate, bundle and file name, so use \
             a lowercase letter followed by up to {} lowercase letters, digits or single \
             '-', e.g. 'my-approval'",
            MAX_NAME - 1
        ),
    })
}

/// Refuses a `dir` that exists and is anything but an empty folder.
fn check_free(dir: &Path) -> Result<(), OpsError> {
    // An empty path would scatter the files into the current folder
    // without the check below ever looking at it.
    if dir.as_os_str().is_empty() {
        return Err(OpsError::InvalidInput {
            what: "no folder given for the new plugin crate; pass --dir".into(),
        });
    }
    // A path that cannot be looked at is left for creating it to report,
    // which names the part that failed.
    let Ok(meta) = fs::metadata(dir) else {
        return Ok(());
    };
    let refuse = |problem: &str| {
        Err(OpsError::InvalidInput {
            what: format!(
                "{} {problem}; choose a new or empty folder with --dir, so that no file of \
                 yours is overwritten",
                dir.display()
            ),
        })
    };
    if !meta.is_dir() {
        return refuse("exists and is not a folder");
    }
    let mut entries = fs::read_dir(dir).map_err(|source| OpsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    if entries.next().is_some() {
        return refuse("is not empty");
    }
    Ok(())
}

/// The plugin's files, as paths relative to its folder and their contents,
/// in the order they are written.
fn render(lang: Lang, role: Role, name: &str) -> Result<Vec<(String, String)>, OpsError> {
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name(name))
            .replace("{{role}}", role.as_str())
            .replace("{{world}}", role.world())
            .replace("{{component}}", &lang.component(name).display().to_string())
    };
    let own: Vec<(&str, &str)> = match (lang, role) {
        (Lang::Rust, _) => {
            let mut files = vec![
                ("Cargo.toml", include_str!("scaffold/Cargo.toml.tmpl")),
                ("README.md", include_str!("scaffold/README.md")),
            ];
            files.extend(rust_plugin(role));
            files.extend(SDK);
            files
        }
        (Lang::Python, Role::Approval) => vec![
            ("README.md", include_str!("scaffold/README-python.md")),
            (
                "app.py",
                include_str!("../../../examples/python-approval/app.py"),
            ),
            (
                "cases.toml",
                include_str!("../../../examples/python-approval/cases.toml"),
            ),
        ],
        (Lang::C, Role::Approval) => vec![
            ("README.md", include_str!("scaffold/README-c.md")),
            ("app.c", include_str!("../../../examples/c-approval/app.c")),
            (
                "cases.toml",
                include_str!("../../../examples/c-approval/cases.toml"),
            ),
        ],
        (Lang::Python | Lang::C, _) => {
            return Err(OpsError::InvalidInput {
                what: lang.unsupported(role).unwrap_or_default(),
            });
        }
    };
    let mut files: Vec<(String, String)> = vec![
        (".gitignore".into(), GITIGNORE.to_owned()),
        ("bundle.toml".into(), fill(BUNDLE)),
        ("wit/policy.wit".into(), WIT.to_owned()),
    ];
    files.extend(own.into_iter().map(|(path, text)| {
        // Only the files written from templates have blanks to fill; the
        // real plugin's sources are copied as they are.
        let text = if path == "Cargo.toml" || path == "README.md" {
            fill(text)
        } else {
            text.to_owned()
        };
        (path.to_owned(), text)
    }));
    Ok(files)
}

/// The default plugin of `role`: its sources and its cases.
fn rust_plugin(role: Role) -> Vec<(&'static str, &'static str)> {
    match role {
        Role::Approval => vec![
            (
                "src/lib.rs",
                include_str!("../../../plugins/approval/src/lib.rs"),
            ),
            (
                "cases.toml",
                include_str!("../../../plugins/approval/cases.toml"),
            ),
        ],
        Role::Limits => vec![
            (
                "src/lib.rs",
                include_str!("../../../plugins/limits/src/lib.rs"),
            ),
            (
                "cases.toml",
                include_str!("../../../plugins/limits/cases.toml"),
            ),
        ],
        Role::Pricing => vec![
            (
                "src/lib.rs",
                include_str!("../../../plugins/pricing/src/lib.rs"),
            ),
            (
                "cases.toml",
                include_str!("../../../plugins/pricing/cases.toml"),
            ),
        ],
        Role::Compliance => vec![
            (
                "src/lib.rs",
                include_str!("../../../plugins/compliance/src/lib.rs"),
            ),
            (
                "src/tests.rs",
                include_str!("../../../plugins/compliance/src/tests.rs"),
            ),
            (
                "cases.toml",
                include_str!("../../../plugins/compliance/cases.toml"),
            ),
        ],
    }
}

/// The library's name, which Cargo derives from the package name and uses
/// for the `.wasm` file.
fn crate_name(name: &str) -> String {
    name.replace('-', "_")
}

fn write_all(made: &mut Made, dir: &Path, files: &[(String, String)]) -> Result<(), OpsError> {
    made.dirs(dir)?;
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            made.dirs(parent)?;
        }
        made.file(&path, text)?;
    }
    Ok(())
}

/// Something `scaffold` created.
enum Entry {
    Dir(PathBuf),
    File(PathBuf),
}

/// What `scaffold` has created so far, so that a failed write can remove
/// it again and leave nothing half-made.
#[derive(Default)]
struct Made(Vec<Entry>);

impl Made {
    /// Creates `dir` and any missing folders above it.
    fn dirs(&mut self, dir: &Path) -> Result<(), OpsError> {
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .collect();
        for dir in missing.into_iter().rev() {
            DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .map_err(|source| OpsError::Write {
                    path: dir.to_path_buf(),
                    source,
                })?;
            self.0.push(Entry::Dir(dir.to_path_buf()));
        }
        Ok(())
    }

    /// Creates `path` with `text`. `create_new` makes this fail rather than
    /// overwrite a file that appeared since the folder was found empty.
    fn file(&mut self, path: &Path, text: &str) -> Result<(), OpsError> {
        let failed = |source| OpsError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)
            .map_err(failed)?;
        self.0.push(Entry::File(path.to_path_buf()));
        file.write_all(text.as_bytes()).map_err(failed)
    }

    /// Removes everything created, newest first. Only what was created here
    /// is touched, and a folder only while it is empty, so anything someone
    /// else put there meanwhile stays. Failures are ignored: the caller is
    /// already reporting the error that matters.
    fn undo(self) {
        for entry in self.0.into_iter().rev() {
            let _ = match entry {
                Entry::File(path) => fs::remove_file(path),
                Entry::Dir(path) => fs::remove_dir(path),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn invalid_input(result: Result<Scaffolded, OpsError>) -> String {
        match result {
            Err(OpsError::InvalidInput { what }) => what,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn names_outside_the_rule_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let too_long = format!("a{}", "b".repeat(MAX_NAME));
        for bad in [
            "", "1abc", "-abc", "Abc", "a_b", "a b", "a.b", "a--b", "../up", "a/b", &too_long,
        ] {
            let what = invalid_input(scaffold(
                Lang::Rust,
                Role::Approval,
                bad,
                &tmp.path().join("x"),
            ));
            assert!(what.contains("lowercase letter"), "{bad}: {what}");
        }
        assert!(!tmp.path().join("x").exists());
        let longest = format!("a{}", "b".repeat(MAX_NAME - 1));
        for good in ["a", "my-policy-2", &longest] {
            scaffold(Lang::Rust, Role::Approval, good, &tmp.path().join(good)).unwrap();
        }
    }

    #[test]
    fn a_folder_in_use_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("notes.txt"), "mine").unwrap();
        let what = invalid_input(scaffold(Lang::Rust, Role::Limits, "p", tmp.path()));
        assert!(what.contains("is not empty"), "{what}");
        let left: Vec<_> = fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(
            fs::read_to_string(tmp.path().join("notes.txt")).unwrap(),
            "mine"
        );

        let what = invalid_input(scaffold(
            Lang::Rust,
            Role::Limits,
            "p",
            &tmp.path().join("notes.txt"),
        ));
        assert!(what.contains("is not a folder"), "{what}");
        let what = invalid_input(scaffold(Lang::Rust, Role::Limits, "p", Path::new("")));
        assert!(what.contains("no folder given"), "{what}");
    }

    #[test]
    fn an_empty_folder_and_missing_parents_are_fine() {
        let tmp = tempfile::tempdir().unwrap();
        scaffold(Lang::Rust, Role::Pricing, "p", tmp.path()).unwrap();
        let nested = tmp.path().join("a/b/c");
        scaffold(Lang::Rust, Role::Pricing, "p", &nested).unwrap();
        assert!(nested.join("src/lib.rs").is_file());
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_a_write_error() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("file"), "").unwrap();
        let under_a_file = tmp.path().join("file/plugin");
        match scaffold(Lang::Rust, Role::Pricing, "p", &under_a_file) {
            Err(OpsError::Write { path, .. }) => assert_eq!(path, under_a_file),
            other => panic!("expected Write, got {other:?}"),
        }
    }

    #[test]
    fn every_role_gets_complete_files_that_parse() {
        let tmp = tempfile::tempdir().unwrap();
        for role in Role::ALL {
            let dir = tmp.path().join(role.as_str());
            let done = scaffold(Lang::Rust, role, "my-plugin", &dir).unwrap();
            assert_eq!(
                done.component,
                Path::new("target/wasm32-wasip2/release/my_plugin.wasm")
            );
            for file in &done.files {
                let path = dir.join(file);
                let text = fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains("{{name}}") && !text.contains("{{role}}"),
                    "{} keeps a placeholder",
                    path.display()
                );
                let mode = fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777 & !0o644, 0, "{}", path.display());
            }
            let read = |file: &str| fs::read_to_string(dir.join(file)).unwrap();
            assert_eq!(read("wit/policy.wit"), WIT);
            assert!(
                read("src/lib.rs").contains(&format!("bindings!(\"{}\")", role.world())),
                "{role}"
            );
            assert!(read("Cargo.toml").contains("name = \"my-plugin\""));
            assert_eq!(read("sdk/src/settings.rs"), SDK[2].1);

            let cases: toml::Table = read("cases.toml").parse().unwrap();
            let cases = cases["case"].as_array().unwrap();
            assert!(cases.len() >= 4, "{role}: {} cases", cases.len());
            assert!(cases.iter().any(|c| c.get("config").is_some()), "{role}");
            let bundle: toml::Table = read("bundle.toml").parse().unwrap();
            let component = &bundle["roles"][role.as_str()]["component"];
            assert_eq!(
                component.as_str().map(Path::new),
                Some(done.component.as_path())
            );
        }
    }

    #[test]
    fn python_starts_from_the_example_and_only_for_approval() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("py");
        let done = scaffold(Lang::Python, Role::Approval, "gate", &dir).unwrap();
        assert_eq!(done.component, Path::new("gate.wasm"));
        assert_eq!(
            done.build,
            "componentize-py -d wit -w approval-policy componentize app -o gate.wasm"
        );
        assert_eq!(
            fs::read_to_string(dir.join("app.py")).unwrap(),
            include_str!("../../../examples/python-approval/app.py")
        );
        let c = scaffold(Lang::C, Role::Approval, "gate", &tmp.path().join("c")).unwrap();
        assert!(c.build.contains("gen/approval_policy.c"), "{}", c.build);
        assert!(c.files.contains(&PathBuf::from("app.c")));
        let other = tmp.path().join("limits");
        let what = invalid_input(scaffold(Lang::Python, Role::Limits, "gate", &other));
        assert!(what.contains("--lang rust"), "{what}");
        assert!(!other.exists(), "nothing is made for a refused language");
    }

    #[test]
    fn undo_removes_only_what_it_made() {
        let tmp = tempfile::tempdir().unwrap();
        let mut made = Made::default();
        made.dirs(&tmp.path().join("a/b")).unwrap();
        made.file(&tmp.path().join("a/b/one"), "1").unwrap();
        assert!(matches!(
            made.file(&tmp.path().join("a/b/one"), "2"),
            Err(OpsError::Write { .. })
        ));
        made.undo();
        assert!(tmp.path().exists());
        assert!(!tmp.path().join("a").exists());
    }
}
