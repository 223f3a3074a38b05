//! Integration tests: release (verification against HashiCorp's real signed
//! files, and fetch/verify/install through a real HTTP mirror).

use hashi_supervisor::release::{Keyring, Sha256Sums, VerifyError};

use crate::support::{data_dir, read_data};

fn vector(name: &str) -> Vec<u8> {
    read_data(&format!("hashicorp-release/{name}"))
}

/// (SHA256SUMS, signature) pairs the README marks valid.
const VALID_VECTORS: &[(&str, &str)] = &[
    ("consul_1.8.7_SHA256SUMS", "consul_1.8.7_SHA256SUMS.sig"),
    (
        "terraform_0.13.1_SHA256SUMS",
        "terraform_0.13.1_SHA256SUMS.72D7468F.sig",
    ),
    (
        "terraform_0.15.1_SHA256SUMS",
        "terraform_0.15.1_SHA256SUMS.sig",
    ),
    (
        "terraform_1.12.2_SHA256SUMS",
        "terraform_1.12.2_SHA256SUMS.72D7468F.sig",
    ),
    (
        "terraform_1.14.9_SHA256SUMS",
        "terraform_1.14.9_SHA256SUMS.72D7468F.sig",
    ),
    (
        "terraform_1.15.8_SHA256SUMS",
        "terraform_1.15.8_SHA256SUMS.sig",
    ),
];

#[test]
fn every_real_vector_verifies_with_the_embedded_key() {
    let ring = Keyring::hashicorp().expect("embedded key loads");
    for (sums, sig) in VALID_VECTORS {
        let r = ring.verify_detached(&vector(sums), &vector(sig));
        assert!(r.is_ok(), "{sig}: {r:?}");
    }
}

#[test]
fn signature_by_the_old_2014_key_is_refused_as_unknown() {
    let ring = Keyring::hashicorp().expect("embedded key loads");
    let r = ring.verify_detached(
        &vector("terraform_0.13.1_SHA256SUMS"),
        &vector("terraform_0.13.1_SHA256SUMS.348FFC4C.sig"),
    );
    match r {
        Err(VerifyError::UnknownKey { issuer }) => assert_eq!(issuer, "51852D87348FFC4C"),
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

#[test]
fn legacy_copy_alone_refuses_signatures_made_after_its_expiry() {
    // The legacy copy says the primary and C820C6D5 expire in April 2026;
    // 1.14.9 was signed on 2026-04-20 18:14Z, after that.
    let mut legacy = Keyring::default();
    legacy
        .add_file(
            &data_dir()
                .join("hashicorp-release")
                .join("hashicorp-release-key-legacy-expired-2026-04-18.asc"),
        )
        .expect("legacy copy loads");
    let r = legacy.verify_detached(
        &vector("terraform_1.14.9_SHA256SUMS"),
        &vector("terraform_1.14.9_SHA256SUMS.72D7468F.sig"),
    );
    assert!(
        matches!(r, Err(VerifyError::OutsideValidity { .. })),
        "{r:?}"
    );
    // Signatures made while the legacy bindings were valid still verify,
    // whatever the date today.
    for (sums, sig) in &VALID_VECTORS[..4] {
        let r = legacy.verify_detached(&vector(sums), &vector(sig));
        assert!(r.is_ok(), "{sig}: {r:?}");
    }
}

#[test]
fn renewed_copy_alone_accepts_old_signatures_within_the_renewed_validity() {
    // The policy does not require the self-signature to predate the
    // signature: the 2026 renewal covers the 2023 re-signature of 1.8.7.
    let mut renewed = Keyring::default();
    renewed
        .add_file(
            &data_dir()
                .join("hashicorp-release")
                .join("hashicorp-release-key.asc"),
        )
        .expect("renewed copy loads");
    for (sums, sig) in VALID_VECTORS {
        let r = renewed.verify_detached(&vector(sums), &vector(sig));
        assert!(r.is_ok(), "{sig}: {r:?}");
    }
}

#[test]
fn sha256sums_of_the_real_vectors_parse() {
    for (sums, _) in VALID_VECTORS {
        let parsed = Sha256Sums::parse(&vector(sums)).expect("parses");
        let text = String::from_utf8(vector(sums)).expect("utf8");
        let first = text.lines().next().expect("a line");
        let (hash, name) = first.split_once("  ").expect("two spaces");
        assert_eq!(parsed.get(name), Some(hash), "{sums}");
    }
}

#[test]
fn any_flipped_byte_in_sums_or_signature_is_refused() {
    let ring = Keyring::hashicorp().expect("embedded key loads");
    for (sums, sig) in VALID_VECTORS {
        let data = vector(sums);
        let sigb = vector(sig);
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0x01;
            assert!(
                ring.verify_detached(&d, &sigb).is_err(),
                "{sums} byte {i} flipped accepted"
            );
        }
        for i in 0..sigb.len() {
            let mut s = sigb.clone();
            s[i] ^= 0x01;
            assert!(
                ring.verify_detached(&data, &s).is_err(),
                "{sig} byte {i} flipped accepted"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Fetch, verify, install through a real HTTP mirror (hashi-testrig).
// ---------------------------------------------------------------------------

mod fetch {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use hashi_supervisor::release::{
        self, FetchCause, ReleaseError, VerifyError, current_version, ensure_installed_with,
    };
    use hashi_supervisor::version::VersionSpec;
    use hashi_supervisor::vocab::Product;
    use hashi_testrig::mirror::{Fault, MirrorBuilder, TestKey, ZipEntry, version_script};

    use crate::support::mirror::{TestMirror, quick_opts, temp_leftovers};
    use crate::support::release::{agent_plan, big_script, incompressible_script, three_versions};

    fn v(s: &str) -> semver::Version {
        semver::Version::parse(s).expect("test version parses")
    }

    fn exact(s: &str) -> VersionSpec {
        VersionSpec::Exact(v(s))
    }

    fn assert_current(releases: &Path, product: Product, want: &str) {
        assert_eq!(
            current_version(releases, product),
            Some(v(want)),
            "current of {product}"
        );
        let bin = releases
            .join(product.as_str())
            .join("current")
            .join(product.as_str());
        assert!(bin.is_file(), "{} missing", bin.display());
    }

    /// Installs consul 1.20.1 from the test mirror with the test options.
    async fn install_1_20_1(m: &TestMirror) -> Result<release::Installed, ReleaseError> {
        ensure_installed_with(&m.plan(), Product::Consul, &exact("1.20.1"), &quick_opts()).await
    }

    fn assert_clean(releases: &Path) {
        assert_eq!(temp_leftovers(releases), Vec::<std::path::PathBuf>::new());
    }

    #[tokio::test]
    async fn exact_version_is_installed_verified_and_current() {
        let m = TestMirror::start(three_versions()).await;
        let plan = m.plan();
        let got = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("install");
        assert_eq!(got.version, v("1.20.1"));
        assert!(got.downloaded);
        let releases = m.releases_dir();
        assert_eq!(got.binary, releases.join("consul/1.20.1/consul"));
        let mode = std::fs::metadata(&got.binary)
            .expect("binary")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            release::sha256_file(&got.binary).expect("hash"),
            got.sha256,
            "reported hash is the binary's"
        );
        let record = std::fs::read_to_string(releases.join("consul/1.20.1/consul.sha256"))
            .expect("hash record beside the binary");
        assert!(record.contains(&got.sha256));
        assert_eq!(
            std::fs::read_link(releases.join("consul/current")).expect("current is a symlink"),
            Path::new("1.20.1")
        );
        assert_current(&releases, Product::Consul, "1.20.1");
        assert_clean(&releases);
    }

    #[tokio::test]
    async fn unreachable_mirror_falls_back_to_the_installed_verified_release_only() {
        let m = TestMirror::start(three_versions()).await;
        let mut plan = m.plan();
        ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("install while the mirror is up");
        // The mirror goes away (nothing listens on port 9).
        plan.mirror = "http://127.0.0.1:9".into();
        for spec in [
            exact("1.20.1"),
            VersionSpec::Latest,
            "~1.20".parse().expect("spec"),
        ] {
            let got = ensure_installed_with(&plan, Product::Consul, &spec, &quick_opts())
                .await
                .unwrap_or_else(|e| panic!("{spec}: offline fallback: {e}"));
            assert_eq!(got.version, v("1.20.1"));
            assert!(!got.downloaded);
            assert_eq!(got.binary, m.releases_dir().join("consul/1.20.1/consul"));
        }
        // A version that is not the installed one cannot be had offline.
        let err = ensure_installed_with(&plan, Product::Consul, &exact("1.19.2"), &quick_opts())
            .await
            .expect_err("1.19.2 is not installed");
        assert!(matches!(err, ReleaseError::Fetch { .. }), "{err:?}");
        // Nor a binary that no longer matches its recorded hash.
        let bin = m.releases_dir().join("consul/1.20.1/consul");
        let mut bytes = std::fs::read(&bin).expect("read binary");
        bytes.push(b'\n');
        std::fs::write(&bin, bytes).expect("tamper");
        let err = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect_err("tampered binary is not used");
        assert!(matches!(err, ReleaseError::Fetch { .. }), "{err:?}");
        assert_eq!(hashi_supervisor::Error::from(err).exit_code(), 69);
    }

    #[tokio::test]
    async fn a_mirror_that_answers_is_never_bypassed() {
        let m = TestMirror::start(three_versions()).await;
        let plan = m.plan();
        ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("install");
        // The mirror answers, but its signature no longer verifies: no
        // fallback to what is installed.
        let sig = m.file("consul", "1.20.1", "consul_1.20.1_SHA256SUMS.sig");
        let mut bytes = std::fs::read(&sig).expect("read sig");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&sig, bytes).expect("tamper sig");
        let err = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect_err("bad signature is an error even with an install present");
        assert!(
            matches!(
                err,
                ReleaseError::Verify { .. } | ReleaseError::MissingSignature { .. }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn latest_skips_release_candidates() {
        let m = TestMirror::start(three_versions()).await;
        let got = ensure_installed_with(
            &m.plan(),
            Product::Consul,
            &VersionSpec::Latest,
            &quick_opts(),
        )
        .await
        .expect("install latest");
        assert_eq!(got.version, v("1.20.1"));
    }

    #[tokio::test]
    async fn requirement_selects_newest_matching_release() {
        let m = TestMirror::start(three_versions()).await;
        let spec: VersionSpec = ">=1.19, <1.20".parse().expect("spec");
        let got = ensure_installed_with(&m.plan(), Product::Consul, &spec, &quick_opts())
            .await
            .expect("install by requirement");
        assert_eq!(got.version, v("1.19.2"));
        let spec: VersionSpec = "~1.22".parse().expect("spec");
        let err = ensure_installed_with(&m.plan(), Product::Consul, &spec, &quick_opts())
            .await
            .expect_err("no release matches");
        assert!(
            matches!(err, ReleaseError::NoMatchingVersion { .. }),
            "{err:?}"
        );
        assert_eq!(hashi_supervisor::Error::from(err).exit_code(), 69);
    }

    #[tokio::test]
    async fn file_url_and_plain_directory_mirrors_work() {
        let m = TestMirror::start(three_versions()).await;
        let file_url = format!("file://{}", m.built.root.display());
        let plan = m.plan_for(file_url, m.tmp.path().join("r1"));
        let got = ensure_installed_with(&plan, Product::Nomad, &exact("1.9.3"), &quick_opts())
            .await
            .expect("install from file://");
        assert!(got.downloaded);
        let plan = m.plan_for(m.built.root.display().to_string(), m.tmp.path().join("r2"));
        let got =
            ensure_installed_with(&plan, Product::Consul, &VersionSpec::Latest, &quick_opts())
                .await
                .expect("install from a directory");
        assert_eq!(got.version, v("1.20.1"));
        assert_eq!(m.server.total_requests(), 0, "nothing went over HTTP");
    }

    #[tokio::test]
    async fn cached_second_run_does_no_download() {
        let m = TestMirror::start(three_versions()).await;
        let plan = m.plan();
        let zip = TestMirror::zip_path("consul", "1.20.1");
        let first = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("first install");
        assert_eq!(m.server.requests(&zip), 1);
        let second = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("second run");
        assert!(!second.downloaded);
        assert_eq!(second.sha256, first.sha256);
        assert_eq!(m.server.requests(&zip), 1, "the zip was fetched again");
    }

    #[tokio::test]
    async fn damaged_installed_binary_is_downloaded_again() {
        let m = TestMirror::start(three_versions()).await;
        let plan = m.plan();
        let first = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("first install");
        std::fs::write(&first.binary, b"#!/bin/sh\necho damaged\n").expect("damage binary");
        let again = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("reinstall");
        assert!(again.downloaded);
        assert_eq!(again.sha256, first.sha256);
        assert_clean(&m.releases_dir());
    }

    #[tokio::test]
    async fn consul_and_nomad_install_concurrently() {
        let m = TestMirror::start(three_versions()).await;
        let plan = m.plan();
        let opts = quick_opts();
        let (c, n) = tokio::join!(
            ensure_installed_with(&plan, Product::Consul, &VersionSpec::Latest, &opts),
            ensure_installed_with(&plan, Product::Nomad, &VersionSpec::Latest, &opts),
        );
        assert_eq!(c.expect("consul").version, v("1.20.1"));
        assert_eq!(n.expect("nomad").version, v("1.9.3"));
        assert_current(&m.releases_dir(), Product::Nomad, "1.9.3");
    }

    #[tokio::test]
    async fn fetch_plan_installs_every_agent_of_the_plan() {
        let m = TestMirror::start(three_versions()).await;
        let plan = hashi_supervisor::plan::Plan {
            node_name: "ams2-server-01".into(),
            region: "eu".into(),
            datacenter: "ams2".into(),
            roles: vec!["consul-server".into(), "nomad-server".into()],
            agents: vec![
                agent_plan(Product::Consul, ">=1.19, <1.21".parse().expect("spec")),
                agent_plan(Product::Nomad, exact("1.9.3")),
            ],
            release: m.plan(),
            health_listen: "127.0.0.1:0".parse().expect("addr"),
            state_dir: m.tmp.path().to_path_buf(),
            config_dir: m.tmp.path().join("etc"),
            render: Default::default(),
        };
        let got = release::fetch_plan_with(&plan, &quick_opts())
            .await
            .expect("fetch plan");
        let versions: Vec<(Product, String)> = got
            .iter()
            .map(|i| (i.product, i.version.to_string()))
            .collect();
        assert_eq!(
            versions,
            [
                (Product::Consul, "1.20.1".to_string()),
                (Product::Nomad, "1.9.3".to_string())
            ]
        );
        assert_current(&m.releases_dir(), Product::Consul, "1.20.1");
        assert_current(&m.releases_dir(), Product::Nomad, "1.9.3");
    }

    #[tokio::test]
    async fn key_id_signature_name_is_preferred_and_plain_name_is_fallback() {
        let m = TestMirror::start(
            MirrorBuilder::product("consul")
                .version("1.20.1")
                .key_id_signature(true)
                .plain_signature(false),
        )
        .await;
        ensure_installed_with(&m.plan(), Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("install with only the .72D7468F.sig name");
        let sig = TestMirror::url_path("consul", "1.20.1", "consul_1.20.1_SHA256SUMS.sig");
        assert_eq!(
            m.server.requests(&sig),
            0,
            "fallback asked although preferred exists"
        );
    }

    /// Installs 1.19.2 first so that every failure test can check the old
    /// version stays current and intact.
    async fn with_old_version(builder: MirrorBuilder) -> (TestMirror, String) {
        let m = TestMirror::start(builder).await;
        let old =
            ensure_installed_with(&m.plan(), Product::Consul, &exact("1.19.2"), &quick_opts())
                .await
                .expect("install the old version");
        (m, old.sha256)
    }

    fn assert_untouched(m: &TestMirror, old_sha: &str) {
        let releases = m.releases_dir();
        assert_current(&releases, Product::Consul, "1.19.2");
        let bin = releases.join("consul/current/consul");
        assert_eq!(
            release::sha256_file(&bin).expect("hash old binary"),
            old_sha
        );
        assert!(
            !releases.join("consul/1.20.1").exists(),
            "a failed version left its dir"
        );
        assert_clean(&releases);
    }

    #[tokio::test]
    async fn tampered_zip_is_refused_and_old_version_stays() {
        let (m, old) = with_old_version(three_versions()).await;
        m.server.set_fault(
            &TestMirror::zip_path("consul", "1.20.1"),
            Fault::Tamper { offset: 100 },
        );
        let err = install_1_20_1(&m).await.expect_err("tampered zip");
        assert!(matches!(err, ReleaseError::HashMismatch { .. }), "{err:?}");
        assert!(
            err.to_string().contains("consul_1.20.1_linux_amd64.zip"),
            "{err}"
        );
        assert_eq!(hashi_supervisor::Error::from(err).exit_code(), 69);
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn tampered_sha256sums_is_refused() {
        let (m, old) = with_old_version(three_versions()).await;
        let sums = m.file("consul", "1.20.1", "consul_1.20.1_SHA256SUMS");
        let mut text = std::fs::read(&sums).expect("read sums");
        text[0] = if text[0] == b'a' { b'b' } else { b'a' };
        std::fs::write(&sums, text).expect("tamper sums");
        let err = install_1_20_1(&m).await.expect_err("tampered SHA256SUMS");
        assert!(
            matches!(
                err,
                ReleaseError::Verify {
                    source: VerifyError::BadSignature { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn signature_by_an_unknown_key_is_refused() {
        let (m, old) = with_old_version(three_versions()).await;
        // Re-sign 1.20.1's SHA256SUMS with a key nobody trusts.
        let intruder = TestKey::generate().expect("generate key");
        let sums = std::fs::read(m.file("consul", "1.20.1", "consul_1.20.1_SHA256SUMS"))
            .expect("read sums");
        std::fs::write(
            m.file("consul", "1.20.1", "consul_1.20.1_SHA256SUMS.sig"),
            intruder.sign(&sums).expect("sign"),
        )
        .expect("write intruder signature");
        let err = install_1_20_1(&m).await.expect_err("unknown key");
        assert!(
            matches!(
                err,
                ReleaseError::Verify {
                    source: VerifyError::UnknownKey { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn test_mirror_is_refused_when_only_hashicorps_key_is_trusted() {
        let m = TestMirror::start(three_versions()).await;
        let mut plan = m.plan();
        plan.trust_hashicorp_key = true;
        plan.extra_trusted_keys.clear();
        let err = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect_err("test key not trusted");
        assert!(
            matches!(
                err,
                ReleaseError::Verify {
                    source: VerifyError::UnknownKey { .. },
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn missing_signature_is_refused() {
        let (m, old) = with_old_version(three_versions()).await;
        std::fs::remove_file(m.file("consul", "1.20.1", "consul_1.20.1_SHA256SUMS.sig"))
            .expect("remove sig");
        let err = install_1_20_1(&m).await.expect_err("no signature");
        assert!(
            matches!(err, ReleaseError::MissingSignature { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("72D7468F.sig"), "{err}");
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn body_cut_short_every_time_is_refused_after_the_retry_budget() {
        let (m, old) = with_old_version(three_versions()).await;
        let zip = TestMirror::zip_path("consul", "1.20.1");
        m.server.set_fault(
            &zip,
            Fault::DropAfter {
                bytes: 50,
                times: u32::MAX,
            },
        );
        // With resume, each attempt would make progress; refuse Range too.
        m.server.set_fault(&zip, Fault::IgnoreRange);
        let err = install_1_20_1(&m).await.expect_err("truncated body");
        assert!(matches!(err, ReleaseError::Fetch { .. }), "{err:?}");
        assert!(err.to_string().contains(&zip), "{err}");
        assert_eq!(m.server.requests(&zip), 4, "1 attempt + 3 retries");
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn content_length_longer_than_the_body_is_refused() {
        let (m, old) = with_old_version(three_versions()).await;
        let zip = TestMirror::zip_path("consul", "1.20.1");
        let real = std::fs::metadata(m.file("consul", "1.20.1", "consul_1.20.1_linux_amd64.zip"))
            .expect("zip")
            .len();
        m.server.set_fault(
            &zip,
            Fault::WrongLength {
                declared: real + 100,
            },
        );
        let err = install_1_20_1(&m).await.expect_err("short body");
        assert!(matches!(err, ReleaseError::Fetch { .. }), "{err:?}");
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn connection_dropped_mid_body_resumes_with_range_and_succeeds() {
        let m = TestMirror::start(
            MirrorBuilder::product("consul")
                .version("1.20.1")
                .binary_bytes(big_script("consul", "1.20.1")),
        )
        .await;
        let zip = TestMirror::zip_path("consul", "1.20.1");
        m.server.set_fault(
            &zip,
            Fault::DropAfter {
                bytes: 4096,
                times: 1,
            },
        );
        let got =
            ensure_installed_with(&m.plan(), Product::Consul, &exact("1.20.1"), &quick_opts())
                .await
                .expect("resumed download");
        assert!(got.downloaded);
        assert_eq!(m.server.requests(&zip), 2);
        assert_eq!(m.server.ranges(&zip), vec!["bytes=4096-".to_string()]);
        assert_clean(&m.releases_dir());
    }

    #[tokio::test]
    async fn slow_body_within_the_read_timeout_succeeds() {
        let m = TestMirror::start(three_versions()).await;
        let zip = TestMirror::zip_path("consul", "1.20.1");
        m.server.set_fault(
            &zip,
            Fault::SlowBody {
                chunk: 64,
                delay: std::time::Duration::from_millis(5),
            },
        );
        let got =
            ensure_installed_with(&m.plan(), Product::Consul, &exact("1.20.1"), &quick_opts())
                .await
                .expect("slow but steady download");
        assert!(got.downloaded);
        assert_eq!(m.server.requests(&zip), 1);
    }

    #[tokio::test]
    async fn stalled_body_hits_the_read_timeout_and_gives_up() {
        let (m, old) = with_old_version(three_versions()).await;
        let zip = TestMirror::zip_path("consul", "1.20.1");
        m.server.set_fault(
            &zip,
            Fault::SlowBody {
                chunk: 16,
                delay: std::time::Duration::from_secs(30),
            },
        );
        let mut opts = quick_opts();
        opts.read_timeout = std::time::Duration::from_millis(200);
        let err = ensure_installed_with(&m.plan(), Product::Consul, &exact("1.20.1"), &opts)
            .await
            .expect_err("stalled");
        assert!(matches!(err, ReleaseError::Fetch { .. }), "{err:?}");
        // Either our per-chunk timeout or reqwest's read timeout (both set
        // from `read_timeout`) ends each attempt.
        let timed_out = match &err {
            ReleaseError::Fetch {
                source: FetchCause::ReadTimeout(_),
                ..
            } => true,
            ReleaseError::Fetch {
                source: FetchCause::Http(e),
                ..
            } => e.is_timeout(),
            _ => false,
        };
        assert!(timed_out, "{err:?}");
        assert_eq!(
            m.server.requests(&zip),
            4,
            "1 attempt + 3 retries, each resuming"
        );
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn endless_500s_give_up_after_the_retry_budget() {
        let (m, old) = with_old_version(three_versions()).await;
        let zip = TestMirror::zip_path("consul", "1.20.1");
        m.server.set_fault(
            &zip,
            Fault::Status {
                code: 500,
                times: u32::MAX,
            },
        );
        let err = install_1_20_1(&m).await.expect_err("endless 500");
        assert!(
            matches!(
                err,
                ReleaseError::Fetch {
                    source: FetchCause::Status(500),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(m.server.requests(&zip), 4);
        assert_eq!(hashi_supervisor::Error::from(err).exit_code(), 69);
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn a_few_500s_then_ok_succeeds() {
        let m = TestMirror::start(three_versions()).await;
        let idx = "/consul/index.json";
        m.server.set_fault(
            idx,
            Fault::Status {
                code: 503,
                times: 2,
            },
        );
        ensure_installed_with(&m.plan(), Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect("retries succeed");
        assert_eq!(m.server.requests(idx), 3);
    }

    #[tokio::test]
    async fn unreachable_mirror_names_the_url() {
        let m = TestMirror::start(three_versions()).await;
        let port = m.server.addr().port();
        let TestMirror { tmp, built, server } = m;
        drop(server);
        // Let the aborted accept loop release the port before connecting.
        tokio::task::yield_now().await;
        let plan = hashi_supervisor::plan::ReleasePlan {
            mirror: format!("http://127.0.0.1:{port}"),
            trust_hashicorp_key: false,
            extra_trusted_keys: vec![built.public_key.clone()],
            releases_dir: tmp.path().join("r"),
            keep_versions: 2,
            max_download_bytes: 1 << 20,
        };
        let err = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect_err("unreachable");
        assert!(matches!(err, ReleaseError::Fetch { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("127.0.0.1:{port}/consul/index.json")),
            "{err}"
        );
        assert_eq!(hashi_supervisor::Error::from(err).exit_code(), 69);
    }

    #[tokio::test]
    async fn wrong_version_output_is_refused() {
        let (m, old) = with_old_version(
            MirrorBuilder::product("consul")
                .version("1.19.2")
                .version("1.20.1")
                .binary_bytes(version_script("consul", "9.9.9")),
        )
        .await;
        let err = install_1_20_1(&m).await.expect_err("wrong version");
        assert!(
            matches!(err, ReleaseError::VersionMismatch { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("Consul v9.9.9"), "{err}");
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn zip_slip_entry_is_refused() {
        let (m, old) = with_old_version(
            MirrorBuilder::product("consul")
                .version("1.19.2")
                .version("1.20.1")
                .extra_entry(ZipEntry::File {
                    name: "../../evil".into(),
                    data: b"x".to_vec(),
                    mode: 0o755,
                }),
        )
        .await;
        let err = install_1_20_1(&m).await.expect_err("zip slip");
        assert!(matches!(err, ReleaseError::BadArchive { .. }), "{err:?}");
        assert!(err.to_string().contains("../../evil"), "{err}");
        assert!(!m.tmp.path().join("evil").exists());
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn symlink_entry_is_refused() {
        let (m, old) = with_old_version(
            MirrorBuilder::product("consul")
                .version("1.19.2")
                .version("1.20.1")
                .extra_entry(ZipEntry::Symlink {
                    name: "LICENSE.txt".into(),
                    target: "/etc/passwd".into(),
                }),
        )
        .await;
        let err = install_1_20_1(&m).await.expect_err("symlink");
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn unexpected_extra_entry_is_refused_but_license_is_allowed() {
        let m = TestMirror::start(
            MirrorBuilder::product("consul")
                .version("1.20.1")
                .extra_entry(ZipEntry::File {
                    name: "LICENSE.txt".into(),
                    data: b"license".to_vec(),
                    mode: 0o644,
                })
                .and_product("nomad")
                .version("1.9.3")
                .extra_entry(ZipEntry::File {
                    name: "helper".into(),
                    data: b"x".to_vec(),
                    mode: 0o755,
                }),
        )
        .await;
        let got =
            ensure_installed_with(&m.plan(), Product::Consul, &exact("1.20.1"), &quick_opts())
                .await
                .expect("LICENSE.txt beside the binary is fine");
        assert!(!got.binary.with_file_name("LICENSE.txt").exists());
        let err = ensure_installed_with(&m.plan(), Product::Nomad, &exact("1.9.3"), &quick_opts())
            .await
            .expect_err("extra entry");
        assert!(
            err.to_string().contains("unexpected entry `helper`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn oversized_entry_is_refused() {
        // A zip bomb in miniature: 4 MiB of zeros compress to a few KiB.
        let mut bomb = version_script("consul", "1.20.1");
        bomb.resize(4 * 1024 * 1024, b'\n');
        let (m, old) = with_old_version(
            MirrorBuilder::product("consul")
                .version("1.19.2")
                .version("1.20.1")
                .binary_bytes(bomb),
        )
        .await;
        let mut plan = m.plan();
        plan.max_download_bytes = 256 * 1024; // binary bound: 8x = 2 MiB
        let err = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect_err("oversized");
        assert!(matches!(err, ReleaseError::BadArchive { .. }), "{err:?}");
        assert!(err.to_string().contains("limit"), "{err}");
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn download_over_the_size_bound_is_refused() {
        let (m, old) = with_old_version(
            MirrorBuilder::product("consul")
                .version("1.19.2")
                .version("1.20.1")
                .binary_bytes(big_script("consul", "1.20.1")),
        )
        .await;
        let mut plan = m.plan();
        plan.max_download_bytes = 8 * 1024;
        let err = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect_err("too large");
        assert!(matches!(err, ReleaseError::TooLarge { .. }), "{err:?}");
        assert_untouched(&m, &old);
    }

    #[tokio::test]
    async fn rollback_switches_current_back_and_prune_keeps_the_configured_count() {
        let m = TestMirror::start(
            MirrorBuilder::product("consul")
                .version("1.18.0")
                .version("1.19.2")
                .version("1.20.1"),
        )
        .await;
        let plan = m.plan(); // keep_versions = 2
        let releases = m.releases_dir();
        for ver in ["1.18.0", "1.19.2", "1.20.1"] {
            ensure_installed_with(&plan, Product::Consul, &exact(ver), &quick_opts())
                .await
                .expect("install");
        }
        assert!(
            !releases.join("consul/1.18.0").exists(),
            "pruned past keep_versions"
        );
        assert!(
            releases.join("consul/1.19.2/consul").is_file(),
            "previous kept"
        );
        let back = release::rollback(&releases, Product::Consul).expect("rollback");
        assert_eq!(back, v("1.19.2"));
        assert_current(&releases, Product::Consul, "1.19.2");
        // A second rollback goes forward again (previous is the one we left).
        let fwd = release::rollback(&releases, Product::Consul).expect("rollback again");
        assert_eq!(fwd, v("1.20.1"));
        let empty = tempfile::tempdir().expect("tmp");
        let err = release::rollback(empty.path(), Product::Nomad).expect_err("nothing installed");
        assert!(matches!(err, ReleaseError::NoPrevious { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn disk_full_fails_cleanly_and_keeps_the_old_version() {
        if !crate::support::available("root", crate::support::root("mounting a tmpfs needs it")) {
            return;
        }
        let m = TestMirror::start(
            MirrorBuilder::product("consul")
                .version("1.19.2")
                .version("1.20.1")
                .binary_bytes(incompressible_script("consul", "1.20.1", 3 * 1024 * 1024)),
        )
        .await;
        let small = m.tmp.path().join("small");
        std::fs::create_dir(&small).expect("mkdir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&small)
            .status();
        if !mounted.is_ok_and(|s| s.success())
            && !crate::support::available(
                "a tmpfs mount",
                Err(format!("could not mount a tmpfs at {}", small.display())),
            )
        {
            return;
        }
        struct Unmount(std::path::PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let _guard = Unmount(small.clone());
        let releases = small.join("releases");
        let plan = m.plan_for(m.server.url(), releases.clone());
        let old = ensure_installed_with(&plan, Product::Consul, &exact("1.19.2"), &quick_opts())
            .await
            .expect("old version fits");
        let err = ensure_installed_with(&plan, Product::Consul, &exact("1.20.1"), &quick_opts())
            .await
            .expect_err("disk full");
        assert!(matches!(err, ReleaseError::Io { .. }), "{err:?}");
        let mut chain = format!("{err}");
        let mut s = std::error::Error::source(&err);
        while let Some(e) = s {
            chain.push_str(&format!(": {e}"));
            s = e.source();
        }
        assert!(chain.contains("No space left"), "{chain}");
        assert_current(&releases, Product::Consul, "1.19.2");
        assert_eq!(
            release::sha256_file(&releases.join("consul/current/consul")).expect("hash"),
            old.sha256
        );
        assert!(!releases.join("consul/1.20.1").exists());
        assert_clean(&releases);
    }
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

#[tokio::test]
async fn versions_command_lists_newest_first_and_marks_prereleases() {
    use crate::support::mirror::TestMirror;
    use hashi_testrig::mirror::MirrorBuilder;
    let m = TestMirror::start(
        MirrorBuilder::product("consul")
            .version("1.9.0")
            .version("1.20.1")
            .version("1.21.0-rc1")
            .version("1.20.1+ent"),
    )
    .await;
    let url = m.server.url();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::supervisor_bin())
            .args(["versions", "consul", "--mirror", &url])
            .output()
            .expect("run supervisor versions")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "1.21.0-rc1  (prerelease)",
            "1.20.1+ent  (enterprise)",
            "1.20.1",
            "1.9.0"
        ]
    );
}

#[tokio::test]
async fn http_proxy_and_no_proxy_from_the_environment_are_honoured() {
    use crate::support::mirror::TestMirror;
    use hashi_testrig::mirror::MirrorBuilder;
    let m = TestMirror::start(MirrorBuilder::product("consul").version("1.20.1")).await;
    let proxy = m.server.url();
    let run = move |no_proxy: &str| {
        std::process::Command::new(crate::support::supervisor_bin())
            .args([
                "versions",
                "consul",
                "--mirror",
                "http://releases.example.invalid",
            ])
            .env_remove("http_proxy")
            .env_remove("no_proxy")
            .env("HTTP_PROXY", &proxy)
            .env("NO_PROXY", no_proxy)
            .output()
            .expect("run supervisor versions")
    };
    let (via_proxy, bypassed) =
        tokio::task::spawn_blocking(move || (run(""), run("example.invalid")))
            .await
            .expect("join");
    assert!(
        via_proxy.status.success(),
        "{}",
        String::from_utf8_lossy(&via_proxy.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&via_proxy.stdout).trim(), "1.20.1");
    assert_eq!(
        m.server.requests("/consul/index.json"),
        1,
        "the proxy saw the request"
    );
    assert_eq!(
        bypassed.status.code(),
        Some(69),
        "NO_PROXY host went direct and failed"
    );
    assert_eq!(m.server.requests("/consul/index.json"), 1);
}

#[test]
fn versions_command_exits_69_when_the_mirror_is_unreachable() {
    let out = std::process::Command::new(crate::support::supervisor_bin())
        .args(["versions", "consul", "--mirror", "http://127.0.0.1:9"])
        .output()
        .expect("run supervisor versions");
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http://127.0.0.1:9/consul/index.json"),
        "{err}"
    );
}

#[test]
fn mirror_builder_lays_out_the_releases_hashicorp_com_format() {
    let tmp = tempfile::tempdir().expect("tmp");
    let built = hashi_testrig::mirror::MirrorBuilder::product("nomad")
        .version("1.9.3")
        .key_id_signature(true)
        .build(tmp.path())
        .expect("build");
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("nomad/index.json")).expect("index"))
            .expect("json");
    assert_eq!(idx["name"], "nomad");
    let v = &idx["versions"]["1.9.3"];
    assert_eq!(v["shasums"], "nomad_1.9.3_SHA256SUMS");
    assert_eq!(v["builds"][0]["filename"], "nomad_1.9.3_linux_amd64.zip");
    for f in [
        "nomad_1.9.3_SHA256SUMS",
        "nomad_1.9.3_SHA256SUMS.sig",
        "nomad_1.9.3_SHA256SUMS.72D7468F.sig",
        "nomad_1.9.3_linux_amd64.zip",
        "nomad_1.9.3_linux_arm64.zip",
    ] {
        assert!(tmp.path().join("nomad/1.9.3").join(f).is_file(), "{f}");
    }
    // The signature verifies with the exported public key, under the same
    // policy as HashiCorp's.
    let mut ring = Keyring::default();
    ring.add_file(&built.public_key).expect("load test key");
    let sums = std::fs::read(tmp.path().join("nomad/1.9.3/nomad_1.9.3_SHA256SUMS")).expect("sums");
    let sig =
        std::fs::read(tmp.path().join("nomad/1.9.3/nomad_1.9.3_SHA256SUMS.sig")).expect("sig");
    assert_eq!(
        ring.verify_detached(&sums, &sig).expect("verifies"),
        built.key.fingerprint()
    );
}

#[tokio::test]
async fn run_stopped_during_a_slow_download_exits_0_and_leaves_nothing_half_installed() {
    use crate::support::mirror::TestMirror;
    use crate::support::role_file::RoleFile;
    use hashi_testrig::mirror::{Fault, MirrorBuilder};
    use std::time::{Duration, Instant};
    let m = TestMirror::start(MirrorBuilder::product("consul").version("1.20.1")).await;
    // The zip trickles: 64 bytes every 200 ms.
    let zip = TestMirror::url_path("consul", "1.20.1", "consul_1.20.1_linux_amd64.zip");
    m.server.set_fault(
        &zip,
        Fault::SlowBody {
            chunk: 64,
            delay: Duration::from_millis(200),
        },
    );
    let dir = m.tmp.path().join("node");
    std::fs::create_dir_all(&dir).expect("node dir");
    let health = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let health_addr = health.local_addr().expect("addr");
    drop(health);
    let role = RoleFile::consul_server(&dir)
        .consul("version", "\"1.20.1\"")
        .consul("bootstrap_expect", "1")
        .consul("user", "\"root\"")
        .mirror(&m.server.url(), &m.built.public_key)
        .health_listen(health_addr)
        .write();
    let mut child = std::process::Command::new(crate::support::supervisor_bin())
        .args(["run", "-c"])
        .arg(&role)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start supervisor");
    // Wait until the download is under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    while m.server.requests(&zip) == 0 {
        assert!(Instant::now() < deadline, "download never started");
        assert!(
            child.try_wait().expect("poll").is_none(),
            "supervisor exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "clean exit: {err}");
    assert!(
        err.contains("stopped before any agent was started"),
        "{err}"
    );
    // Nothing half-installed: no version dir with a binary, no `current`,
    // no temp file left anywhere under the releases dir.
    let releases = dir.join("state/releases/consul");
    assert!(!releases.join("current").exists(), "no current link");
    assert!(
        !releases.join("1.20.1/consul").exists(),
        "no installed binary"
    );
    let left = crate::support::mirror::temp_leftovers(&dir.join("state"));
    assert!(left.is_empty(), "temp files left: {left:?}");
}
