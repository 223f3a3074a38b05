//! Version requests as written in the role file: an exact version, `latest`
//! (newest stable), or a semver requirement such as `~1.20` or
//! `>=1.19, <1.21`.

use std::fmt;
use std::str::FromStr;

/// What the operator asked for in `version = "..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    /// Newest stable release: no pre-release, no `+ent` build.
    Latest,
    /// Exactly this version (pre-release and build metadata allowed).
    Exact(semver::Version),
    /// Newest stable release matching this requirement.
    Req(semver::VersionReq),
}

/// Why a version string was refused.
#[derive(Debug, thiserror::Error)]
pub enum VersionSpecError {
    /// Not a version, `latest` or a requirement.
    #[error(
        "`{input}` is neither an exact version, `latest`, nor a semver requirement (like `~1.20` or `>=1.9, <1.11`)"
    )]
    Invalid {
        /// The string as written.
        input: String,
    },
    /// A bare wildcard.
    #[error("`{input}` would match any version: write `latest` for the newest stable release")]
    Wildcard {
        /// The string as written.
        input: String,
    },
}

impl FromStr for VersionSpec {
    type Err = VersionSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("latest") {
            return Ok(Self::Latest);
        }
        let bare = t.strip_prefix('v').unwrap_or(t);
        if let Ok(v) = semver::Version::parse(bare) {
            return Ok(Self::Exact(v));
        }
        // A requirement must carry an operator or be a partial version
        // (`1.20` means `^1.20` in semver; we accept it as such). A bare
        // wildcard (`*`, `x`) would silently mean "any version, pre-releases
        // aside": refused, `latest` says that on purpose.
        let wildcard_only = t.chars().all(|c| matches!(c, '*' | 'x' | 'X' | '.' | ' '));
        match semver::VersionReq::parse(t) {
            Ok(_) if !t.is_empty() && wildcard_only => Err(VersionSpecError::Wildcard {
                input: s.to_string(),
            }),
            Ok(r) if !t.is_empty() => Ok(Self::Req(r)),
            _ => Err(VersionSpecError::Invalid {
                input: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::Exact(v) => write!(f, "{v}"),
            Self::Req(r) => write!(f, "{r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(
            "latest".parse::<VersionSpec>().unwrap(),
            VersionSpec::Latest
        );
        assert!(matches!(
            "1.20.1".parse::<VersionSpec>().unwrap(),
            VersionSpec::Exact(v) if v == semver::Version::new(1, 20, 1)
        ));
        assert!(matches!(
            "v1.9.3".parse::<VersionSpec>().unwrap(),
            VersionSpec::Exact(_)
        ));
        assert!(matches!(
            "~1.20".parse::<VersionSpec>().unwrap(),
            VersionSpec::Req(_)
        ));
        assert!(matches!(
            ">=1.19, <1.21".parse::<VersionSpec>().unwrap(),
            VersionSpec::Req(_)
        ));
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "", "newest", "1.x.y", ">>1", "1.2.3.4", "x", "*", "X.x", "*.*.*",
        ] {
            assert!(bad.parse::<VersionSpec>().is_err(), "{bad} accepted");
        }
    }
}
