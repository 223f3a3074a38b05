//! Release fetch benchmark (`cargo bench --bench release_fetch`).
//!
//! 1. Fetch + verify + install of a 64 MiB zip from a local HTTP mirror
//!    (hashi-testrig, test key) with `release::ensure_installed_with`, side by
//!    side with the documented shell procedure: `curl` the zip, SHA256SUMS and
//!    .sig, `gpg --verify`, `sha256sum -c`, `unzip`.
//! 2. SHA-256 throughput of the verifier's hasher (sha2) vs `sha256sum` on
//!    the same 64 MiB file (page cache warm).
//! 3. Peak RSS (VmHWM) of a child process doing only the fetch.
//!
//! Prints numbers; asserts nothing about time.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hashi_supervisor::plan::ReleasePlan;
use hashi_supervisor::release::{self, FetchOptions};
use hashi_supervisor::version::VersionSpec;
use hashi_supervisor::vocab::Product;
use hashi_testrig::mirror::{MirrorBuilder, serve, version_script};

const VERSION: &str = "1.20.1";
/// Payload size in MiB; `RELEASE_BENCH_MIB` overrides the default 64.
const DEFAULT_PAYLOAD_MIB: usize = 64;
const ROUNDS: usize = 3;

fn plan(mirror: &str, releases: PathBuf, key: &Path) -> ReleasePlan {
    ReleasePlan {
        mirror: mirror.to_string(),
        trust_hashicorp_key: false,
        extra_trusted_keys: vec![key.to_path_buf()],
        releases_dir: releases,
        keep_versions: 2,
        max_download_bytes: 512 * 1024 * 1024,
    }
}

fn opts() -> FetchOptions {
    FetchOptions {
        arch: Some("amd64".into()),
        ..FetchOptions::default()
    }
}

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Child mode: fetch once, report peak RSS.
    if let Some(i) = args.iter().position(|a| a == "--child-fetch") {
        let (url, dir, key) = (&args[i + 1], &args[i + 2], &args[i + 3]);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let p = plan(url, PathBuf::from(dir), Path::new(key));
        let got = rt
            .block_on(release::ensure_installed_with(
                &p,
                Product::Consul,
                &VersionSpec::Exact(semver::Version::parse(VERSION).unwrap()),
                &opts(),
            ))
            .unwrap();
        assert!(got.downloaded);
        println!("VmHWM_KiB {}", vm_hwm_kib());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` compatibility
    }

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mirror");
    let mut binary = version_script("consul", VERSION);
    binary.extend_from_slice(b"exit 0\n");
    let payload_mib = std::env::var("RELEASE_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PAYLOAD_MIB);
    let mut noise = vec![0u8; payload_mib * 1024 * 1024];
    rand::fill(&mut noise[..]);
    binary.extend_from_slice(&noise);
    drop(noise);
    let t = Instant::now();
    let built = MirrorBuilder::product("consul")
        .version(VERSION)
        .binary_bytes(binary)
        .arches(&["amd64"])
        .build(&root)
        .unwrap();
    let build_time = t.elapsed();
    let zip_name = format!("consul_{VERSION}_linux_amd64.zip");
    let zip_path = root.join("consul").join(VERSION).join(&zip_name);
    let zip_len = std::fs::metadata(&zip_path).unwrap().len();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(serve(root.clone())).unwrap();
    let url = server.url();

    // Shell procedure setup (not timed): a keyring holding the test key.
    let gnupg = tmp.path().join("gnupg");
    std::fs::create_dir(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let imported = Command::new("gpg")
        .args(["--batch", "--quiet", "--import"])
        .arg(&built.public_key)
        .env("GNUPGHOME", &gnupg)
        .status()
        .unwrap();
    assert!(imported.success());
    let script = format!(
        r#"set -e
cd "$WORK"
base="{url}/consul/{VERSION}"
curl -sfSO "$base/{zip_name}"
curl -sfSO "$base/consul_{VERSION}_SHA256SUMS"
curl -sfSO "$base/consul_{VERSION}_SHA256SUMS.sig"
gpg --batch --quiet --verify consul_{VERSION}_SHA256SUMS.sig consul_{VERSION}_SHA256SUMS 2>/dev/null
sha256sum -c --ignore-missing --quiet consul_{VERSION}_SHA256SUMS
unzip -oq {zip_name}
./consul version >/dev/null
"#
    );

    let mut ours = Vec::new();
    let mut shell = Vec::new();
    for round in 0..ROUNDS {
        let releases = tmp.path().join(format!("releases-{round}"));
        let p = plan(&url, releases, &built.public_key);
        let t = Instant::now();
        let got = rt
            .block_on(release::ensure_installed_with(
                &p,
                Product::Consul,
                &VersionSpec::Exact(semver::Version::parse(VERSION).unwrap()),
                &opts(),
            ))
            .unwrap();
        ours.push(t.elapsed());
        assert!(got.downloaded);

        let work = tmp.path().join(format!("shell-{round}"));
        std::fs::create_dir(&work).unwrap();
        let t = Instant::now();
        let st = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("WORK", &work)
            .env("GNUPGHOME", &gnupg)
            .status()
            .unwrap();
        shell.push(t.elapsed());
        assert!(st.success(), "shell procedure failed");
    }
    let (o, s) = (median(ours.clone()), median(shell.clone()));

    // SHA-256 throughput on the zip (page cache warm: read once first).
    let _ = release::sha256_file(&zip_path).unwrap();
    let mut ours_h = Vec::new();
    let mut sum_h = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let _ = release::sha256_file(&zip_path).unwrap();
        ours_h.push(t.elapsed());
        let t = Instant::now();
        let out = Command::new("sha256sum").arg(&zip_path).output().unwrap();
        sum_h.push(t.elapsed());
        assert!(out.status.success());
    }
    let mib = zip_len as f64 / (1024.0 * 1024.0);
    let (oh, sh) = (median(ours_h), median(sum_h));

    // Peak RSS of a fetch in a fresh process.
    let child = Command::new(std::env::current_exe().unwrap())
        .arg("--child-fetch")
        .arg(&url)
        .arg(tmp.path().join("releases-rss"))
        .arg(&built.public_key)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let hwm: u64 = String::from_utf8_lossy(&child.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM_KiB "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);

    println!("## release fetch benchmark");
    println!("cpu sha extensions (SHA-NI): {}", has_sha_ni());
    println!("mirror build ({payload_mib} MiB payload, signed): {build_time:?}");
    println!("zip size: {zip_len} bytes ({mib:.1} MiB)");
    println!("fetch+verify+install, ours   (median of {ROUNDS}): {o:?}  all: {ours:?}");
    println!("shell curl x3+gpg+sha256sum+unzip (median): {s:?}  all: {shell:?}");
    println!(
        "ratio ours/shell: {:.2} (target <= 0.70)",
        o.as_secs_f64() / s.as_secs_f64()
    );
    println!(
        "sha256 ours: {:.0} MiB/s, sha256sum: {:.0} MiB/s, ratio {:.2} (target >= 0.90)",
        mib / oh.as_secs_f64(),
        mib / sh.as_secs_f64(),
        sh.as_secs_f64() / oh.as_secs_f64()
    );
    println!(
        "peak RSS of a fetch process (VmHWM): {:.1} MiB (target < 32 MiB)",
        hwm as f64 / 1024.0
    );
}

/// Whether the CPU has the SHA extensions sha2 selects at run time.
fn has_sha_ni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("sha")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
