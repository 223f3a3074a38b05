//! Builders of release fixtures: mirror contents, fake agent binaries (shell
//! scripts answering `version`) and an agent plan that points nowhere, for
//! tests of `release` that need no running agent.

use std::time::Duration;

use hashi_supervisor::plan::AgentPlan;
use hashi_supervisor::version::VersionSpec;
use hashi_supervisor::vocab::{Product, RestartMode, RestartPolicy};
use hashi_testrig::mirror::{MirrorBuilder, version_script};

/// Consul 1.19.2, 1.20.1 and 1.21.0-rc1, and Nomad 1.9.3.
pub fn three_versions() -> MirrorBuilder {
    MirrorBuilder::product("consul")
        .version("1.19.2")
        .version("1.20.1")
        .version("1.21.0-rc1")
        .and_product("nomad")
        .version("1.9.3")
}

/// A version script padded with comment lines (compressible), ~256 KiB.
pub fn big_script(product: &str, version: &str) -> Vec<u8> {
    let mut s = version_script(product, version);
    for i in 0..8000 {
        s.extend_from_slice(format!("# padding line {i} of the test binary\n").as_bytes());
    }
    s
}

/// A version script followed by `size` random bytes after `exit 0`.
pub fn incompressible_script(product: &str, version: &str, size: usize) -> Vec<u8> {
    let mut s = version_script(product, version);
    s.extend_from_slice(b"exit 0\n");
    let mut noise = vec![0u8; size];
    rand::fill(&mut noise[..]);
    s.extend_from_slice(&noise);
    s
}

/// A server agent of `product` at `version`, with paths that do not exist:
/// what fetching reads of a plan, and nothing that could run.
pub fn agent_plan(product: Product, version: VersionSpec) -> AgentPlan {
    AgentPlan {
        product,
        version,
        server: true,
        client: false,
        user: "root".into(),
        binary: format!("/nonexistent/{product}").into(),
        args: vec!["agent".into()],
        config_dir: "/nonexistent/config".into(),
        data_dir: "/nonexistent/data".into(),
        stop_signal: nix::sys::signal::Signal::SIGINT,
        stop_timeout: Duration::from_secs(5),
        restart: RestartPolicy {
            attempts: 3,
            interval: Duration::from_secs(60),
            delay: Duration::from_secs(1),
            mode: RestartMode::Delay,
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        },
        http_addr: "127.0.0.1:8500".parse().expect("addr"),
        api_tls: None,
    }
}
