//! The releases.hashicorp.com layout: `<product>/index.json` and version
//! resolution. Pure parsing and selection; fetching is in `mirror`.
//!
//! index.json (as served by releases.hashicorp.com):
//! `{"name":"consul","versions":{"1.20.1":{"name","version","shasums",
//! "shasums_signature","shasums_signatures":[..],"builds":[{"name","version",
//! "os","arch","filename","url"}]}}}`. The `url` fields name HashiCorp's host
//! and are ignored: every file comes from the configured mirror.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::version::VersionSpec;

/// One product's `index.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ProductIndex {
    /// Product name.
    pub name: String,
    /// Releases by version string.
    #[serde(default)]
    pub versions: BTreeMap<String, IndexVersion>,
}

/// One release in `index.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct IndexVersion {
    /// Version string.
    pub version: String,
    /// Name of the SHA256SUMS file.
    #[serde(default)]
    pub shasums: Option<String>,
    /// Name of the (legacy) signature file.
    #[serde(default)]
    pub shasums_signature: Option<String>,
    /// Names of every signature file, one per signing key.
    #[serde(default)]
    pub shasums_signatures: Vec<String>,
    /// Builds (os, arch, file name).
    #[serde(default)]
    pub builds: Vec<IndexBuild>,
}

/// One build of a release.
#[derive(Debug, Clone, Deserialize)]
pub struct IndexBuild {
    /// Operating system (`linux`).
    pub os: String,
    /// Architecture (`amd64`, `arm64`).
    pub arch: String,
    /// Zip file name.
    pub filename: String,
}

/// A release of the index with its parsed version.
#[derive(Debug, Clone)]
pub struct Release<'a> {
    /// Parsed version.
    pub version: semver::Version,
    /// The index entry.
    pub entry: &'a IndexVersion,
}

/// Whether a version is a stable release: no pre-release and no build
/// metadata (`+ent`, `+ent.fips1402`, ...).
pub fn is_stable(v: &semver::Version) -> bool {
    v.pre.is_empty() && v.build.is_empty()
}

/// Whether a version is an enterprise build (`+ent`, `+ent.*`).
pub fn is_enterprise(v: &semver::Version) -> bool {
    v.build.as_str() == "ent" || v.build.as_str().starts_with("ent.")
}

impl ProductIndex {
    /// Every release whose version parses, newest first.
    pub fn releases(&self) -> Vec<Release<'_>> {
        let mut out: Vec<Release<'_>> = self
            .versions
            .iter()
            .filter_map(|(k, entry)| {
                semver::Version::parse(k.strip_prefix('v').unwrap_or(k))
                    .ok()
                    .map(|version| Release { version, entry })
            })
            .collect();
        out.sort_by(|a, b| {
            b.version
                .cmp_precedence(&a.version)
                .then(b.version.cmp(&a.version))
        });
        out
    }

    /// The release `spec` selects: the exact version, or the newest stable
    /// one (matching the requirement, if any).
    pub fn resolve(&self, spec: &VersionSpec) -> Option<Release<'_>> {
        let releases = self.releases();
        match spec {
            VersionSpec::Exact(v) => releases.into_iter().find(|r| &r.version == v),
            VersionSpec::Latest => releases.into_iter().find(|r| is_stable(&r.version)),
            VersionSpec::Req(req) => releases
                .into_iter()
                .find(|r| is_stable(&r.version) && req.matches(&r.version)),
        }
    }
}

impl IndexVersion {
    /// The zip file name of the build for `os`/`arch`.
    pub fn build_file(&self, os: &str, arch: &str) -> Option<&str> {
        self.builds
            .iter()
            .find(|b| b.os == os && b.arch == arch)
            .map(|b| b.filename.as_str())
    }
}

/// The machine's architecture in HashiCorp's naming, if it is one we fetch.
pub fn machine_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> ProductIndex {
        let json = r#"{"name":"consul","versions":{
          "1.19.2":{"name":"consul","version":"1.19.2","shasums":"consul_1.19.2_SHA256SUMS","builds":[{"name":"consul","version":"1.19.2","os":"linux","arch":"amd64","filename":"consul_1.19.2_linux_amd64.zip","url":"https://releases.hashicorp.com/consul/1.19.2/consul_1.19.2_linux_amd64.zip"}]},
          "1.20.1":{"name":"consul","version":"1.20.1","builds":[]},
          "1.21.0-rc1":{"name":"consul","version":"1.21.0-rc1","builds":[]},
          "1.21.0+ent":{"name":"consul","version":"1.21.0+ent","builds":[]},
          "1.9.0":{"name":"consul","version":"1.9.0","builds":[]},
          "garbage":{"name":"consul","version":"garbage","builds":[]}
        }}"#;
        serde_json::from_str(json).expect("test index parses")
    }

    #[test]
    fn latest_skips_prereleases_and_enterprise_builds() {
        let idx = index();
        let r = idx.resolve(&VersionSpec::Latest).expect("a stable release");
        assert_eq!(r.version, semver::Version::new(1, 20, 1));
    }

    #[test]
    fn requirement_picks_newest_matching_stable() {
        let idx = index();
        let spec: VersionSpec = ">=1.19, <1.20".parse().expect("valid spec");
        let r = idx.resolve(&spec).expect("a match");
        assert_eq!(r.version, semver::Version::new(1, 19, 2));
        let spec: VersionSpec = "~1.21".parse().expect("valid spec");
        assert!(idx.resolve(&spec).is_none());
    }

    #[test]
    fn exact_may_name_a_prerelease() {
        let idx = index();
        let spec: VersionSpec = "1.21.0-rc1".parse().expect("valid spec");
        assert!(idx.resolve(&spec).is_some());
    }

    #[test]
    fn releases_sorted_newest_first_numerically() {
        let idx = index();
        let v: Vec<String> = idx
            .releases()
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(v[0], "1.21.0+ent");
        assert_eq!(v.last().map(String::as_str), Some("1.9.0"));
        assert!(is_enterprise(
            &semver::Version::parse("1.21.0+ent.fips1402").expect("v")
        ));
    }

    #[test]
    fn build_file_by_os_and_arch() {
        let idx = index();
        let r = idx
            .resolve(&VersionSpec::Exact(semver::Version::new(1, 19, 2)))
            .expect("present");
        assert_eq!(
            r.entry.build_file("linux", "amd64"),
            Some("consul_1.19.2_linux_amd64.zip")
        );
        assert_eq!(r.entry.build_file("linux", "arm64"), None);
    }
}
