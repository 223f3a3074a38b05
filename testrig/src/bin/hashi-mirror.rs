//! `hashi-mirror`: builds and serves a signed local release mirror of
//! stand-in binaries (test support; not HashiCorp's releases).
//!
//! ```text
//! hashi-mirror build --out DIR --product consul=1.20.1,1.19.2 --product nomad=1.9.3 \
//!     --binary PATH --key-out FILE
//! hashi-mirror serve DIR --listen 127.0.0.1:0
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hashi_testrig::mirror::{MirrorBuilder, serve_on};

/// Builds or serves a signed local release mirror of stand-in binaries.
#[derive(Debug, Parser)]
#[command(name = "hashi-mirror", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write a mirror directory signed by a fresh test key.
    Build {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// `PRODUCT=VER[,VER...]`, repeatable.
        #[arg(long = "product", required = true)]
        products: Vec<String>,
        /// Binary to zip for every version (default: a version script).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Where to copy the armored public test key.
        #[arg(long)]
        key_out: Option<PathBuf>,
        /// Also write `_SHA256SUMS.72D7468F.sig` files.
        #[arg(long)]
        key_id_signature: bool,
    },
    /// Serve a mirror directory over HTTP until interrupted.
    Serve {
        /// Mirror directory.
        dir: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build {
            out,
            products,
            binary,
            key_out,
            key_id_signature,
        } => build(out, &products, binary, key_out, key_id_signature),
        Cmd::Serve { dir, listen } => serve(dir, &listen),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn build(
    out: PathBuf,
    products: &[String],
    binary: Option<PathBuf>,
    key_out: Option<PathBuf>,
    key_id_signature: bool,
) -> Result<(), String> {
    let mut b = MirrorBuilder::new().key_id_signature(key_id_signature);
    for spec in products {
        let (name, versions) = spec
            .split_once('=')
            .ok_or_else(|| format!("`{spec}` is not PRODUCT=VER[,VER...]"))?;
        b = b.and_product(name);
        for v in versions.split(',').filter(|v| !v.is_empty()) {
            b = b.version(v);
            if let Some(p) = &binary {
                b = b.binary(p.clone());
            }
        }
    }
    let built = b.build(&out).map_err(|e| e.to_string())?;
    if let Some(k) = key_out {
        std::fs::copy(&built.public_key, &k)
            .map_err(|e| format!("failed to write {}: {e}", k.display()))?;
    }
    let mut so = std::io::stdout().lock();
    let _ = writeln!(so, "mirror: {}", built.root.display());
    let _ = writeln!(
        so,
        "key: {} ({})",
        built.public_key.display(),
        built.key.fingerprint()
    );
    Ok(())
}

fn serve(dir: PathBuf, listen: &str) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("failed to start runtime: {e}"))?;
    rt.block_on(async {
        let server = serve_on(dir, listen).await.map_err(|e| e.to_string())?;
        let mut so = std::io::stdout().lock();
        let _ = writeln!(so, "{}", server.url());
        let _ = so.flush();
        drop(so);
        tokio::signal::ctrl_c()
            .await
            .map_err(|e| format!("failed to wait for ctrl-c: {e}"))?;
        drop(server);
        Ok(())
    })
}
