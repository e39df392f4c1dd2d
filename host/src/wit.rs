//! The WIT package this build speaks: the one place its name and version
//! are written in the host. The policy engine links plugins against it and
//! the bundle format records it, so a test holds it to `wit/policy.wit`.

/// As it appears in a component's import and export names and in a
/// bundle's manifest.
pub const WIT_PACKAGE: &str = "claude-max-market:policy@0.3.0";

/// The package name without its version, the start of interface names.
pub fn package_name() -> &'static str {
    WIT_PACKAGE
        .split_once('@')
        .map_or(WIT_PACKAGE, |(name, _)| name)
}

/// The version after the `@`.
pub fn wit_version() -> &'static str {
    WIT_PACKAGE
        .split_once('@')
        .map_or("", |(_, version)| version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_constant_is_the_wit_files() {
        let wit = include_str!("../../wit/policy.wit");
        let declared = wit
            .lines()
            .find_map(|line| line.trim().strip_prefix("package "))
            .and_then(|rest| rest.strip_suffix(';'))
            .expect("wit/policy.wit declares its package");
        assert_eq!(declared, WIT_PACKAGE);
        assert_eq!(
            (package_name(), wit_version()),
            ("claude-max-market:policy", "0.3.0")
        );
    }
}
