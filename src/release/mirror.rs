//! A release mirror: an `https://`/`http://` base URL, a `file://` URL or a
//! plain directory. Fetches small files into memory and release zips into a
//! file while hashing them, with timeouts, retries (capped exponential
//! backoff with jitter on 5xx and dropped connections) and HTTP Range resume.
//!
//! It never interprets what it fetches.

use std::io::{IsTerminal, Write};

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;

use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{FetchOptions, ReleaseError};

/// Bytes per chunk read from a local mirror.
const FILE_CHUNK: usize = 256 * 1024;
/// Chunks queued between the network and the writer thread (bounds memory).
const WRITE_QUEUE: usize = 4;

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchCause {
    /// The server answered with an error status.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The request or the body failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// No data arrived within the read timeout.
    #[error("no data for {0:?}")]
    ReadTimeout(Duration),
    /// The body ended before its announced length.
    #[error("body ended after {got} of {expected} bytes")]
    Truncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// A local read failed (file mirror).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl FetchCause {
    fn is_retryable(&self) -> bool {
        match self {
            Self::Status(s) => *s >= 500 || *s == 429,
            Self::Http(e) => !e.is_builder() && !e.is_redirect() && e.status().is_none(),
            Self::ReadTimeout(_) | Self::Truncated { .. } => true,
            Self::Io(_) => false,
        }
    }
}

/// A file of a directory mirror refused by the regular-file reader:
/// missing, too large, or not a regular file (a FIFO, a device).
fn local_error(e: crate::role::file::FileError, url: &str, limit: u64) -> ReleaseError {
    use crate::role::file::FileError;
    match e {
        FileError::Open(io) if io.kind() == std::io::ErrorKind::NotFound => {
            ReleaseError::NotFound {
                url: url.to_string(),
            }
        }
        FileError::TooLarge { .. } => ReleaseError::TooLarge {
            url: url.to_string(),
            limit,
        },
        other => ReleaseError::Fetch {
            url: url.to_string(),
            source: std::io::Error::other(other).into(),
        },
    }
}

#[derive(Debug, Clone)]
enum Base {
    Http(reqwest::Url),
    Dir(PathBuf),
}

/// A release mirror.
#[derive(Debug, Clone)]
pub struct Mirror {
    base: Base,
    client: reqwest::Client,
    opts: FetchOptions,
}

/// Result of streaming a file to disk.
#[derive(Debug)]
pub struct Downloaded {
    /// Lowercase hex SHA-256 of every byte written.
    pub sha256: String,
    /// Bytes written.
    pub len: u64,
}

impl Mirror {
    /// A mirror from a base URL (`https://`, `http://`, `file://`) or a
    /// local directory path.
    pub fn new(base: &str, opts: &FetchOptions) -> Result<Mirror, ReleaseError> {
        let invalid = || ReleaseError::InvalidMirror {
            mirror: base.to_string(),
        };
        let base_kind = if base.starts_with("http://") || base.starts_with("https://") {
            let mut s = base.to_string();
            if !s.ends_with('/') {
                s.push('/');
            }
            Base::Http(reqwest::Url::parse(&s).map_err(|_| invalid())?)
        } else if let Some(rest) = base.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(invalid());
            }
            Base::Dir(PathBuf::from(rest))
        } else if base.contains("://") || base.is_empty() {
            return Err(invalid());
        } else {
            Base::Dir(PathBuf::from(base))
        };
        // System proxy settings (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY,
        // NO_PROXY) are honoured by reqwest's default builder.
        let client = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .user_agent(concat!("hashi-supervisor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ReleaseError::Internal(format!("http client: {e}")))?;
        Ok(Mirror {
            base: base_kind,
            client,
            opts: opts.clone(),
        })
    }

    /// The URL (or path) a mirror-relative path resolves to, for messages.
    pub fn url_of(&self, rel: &str) -> String {
        match &self.base {
            Base::Http(u) => u
                .join(rel)
                .map_or_else(|_| format!("{u}{rel}"), |u| u.to_string()),
            Base::Dir(d) => d.join(rel).display().to_string(),
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let r = &self.opts.retry;
        let exp = r
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        let capped = exp.min(r.max_delay);
        // Jitter: a random delay in [capped/2, capped].
        let half = capped / 2;
        let extra = if half.is_zero() {
            Duration::ZERO
        } else {
            half.mul_f64(rand::random::<f64>())
        };
        half + extra
    }

    /// Fetches a small file into memory. `Ok(None)` when it does not exist.
    pub async fn get_small(&self, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, ReleaseError> {
        let url = self.url_of(rel);
        match &self.base {
            Base::Dir(d) => {
                // A regular file of at most `limit` bytes, never blocking
                // (a FIFO) nor read without end (a device).
                let path = d.join(rel);
                let read = tokio::task::spawn_blocking(move || {
                    crate::role::file::read_regular(&path, limit)
                })
                .await
                .map_err(|e| ReleaseError::Internal(format!("file mirror read: {e}")))?;
                match read {
                    Ok(b) => Ok(Some(b)),
                    Err(crate::role::file::FileError::Open(e))
                        if e.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(local_error(e, &url, limit)),
                }
            }
            Base::Http(_) => {
                let mut attempt = 0u32;
                loop {
                    let res = self.try_get_small(&url, limit).await;
                    match res {
                        Ok(v) => return Ok(v),
                        Err(SmallErr::Fatal(e)) => return Err(e),
                        Err(SmallErr::Retry(cause)) => {
                            attempt += 1;
                            if attempt > self.opts.retry.retries || !cause.is_retryable() {
                                return Err(ReleaseError::Fetch { url, source: cause });
                            }
                            let d = self.backoff(attempt);
                            warn!(url = %url, attempt, delay_ms = d.as_millis() as u64, cause = %cause, "retrying");
                            tokio::time::sleep(d).await;
                        }
                    }
                }
            }
        }
    }

    async fn try_get_small(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>, SmallErr> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| SmallErr::Retry(e.into()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(SmallErr::Retry(FetchCause::Status(status.as_u16())));
        }
        if resp.content_length().is_some_and(|l| l > limit) {
            return Err(SmallErr::Fatal(ReleaseError::TooLarge {
                url: url.to_string(),
                limit,
            }));
        }
        let expected = resp.content_length();
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.opts.read_timeout, stream.next())
                .await
                .map_err(|_| SmallErr::Retry(FetchCause::ReadTimeout(self.opts.read_timeout)))?;
            match next {
                None => break,
                Some(Ok(b)) => {
                    if (body.len() + b.len()) as u64 > limit {
                        return Err(SmallErr::Fatal(ReleaseError::TooLarge {
                            url: url.to_string(),
                            limit,
                        }));
                    }
                    body.extend_from_slice(&b);
                }
                Some(Err(e)) => return Err(SmallErr::Retry(e.into())),
            }
        }
        if let Some(exp) = expected
            && exp != body.len() as u64
        {
            return Err(SmallErr::Retry(FetchCause::Truncated {
                got: body.len() as u64,
                expected: exp,
            }));
        }
        Ok(Some(body))
    }

    /// Streams `rel` into the new file `dest`, hashing SHA-256 as bytes
    /// arrive (one pass). Resumes with an HTTP Range request after a drop.
    /// Refuses more than `limit` bytes.
    pub async fn download(
        &self,
        rel: &str,
        dest: &Path,
        limit: u64,
    ) -> Result<Downloaded, ReleaseError> {
        let url = self.url_of(rel);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(|source| ReleaseError::Io {
                what: "create the download file",
                path: dest.to_path_buf(),
                source,
            })?;
        let (tx, rx) = mpsc::channel::<Chunk>(WRITE_QUEUE);
        let dest_buf = dest.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || write_loop(file, rx, &dest_buf));
        let fetched = match &self.base {
            Base::Dir(d) => self.copy_local(&d.join(rel), &url, &tx, limit).await,
            Base::Http(_) => self.download_http(&url, &tx, limit).await,
        };
        drop(tx);
        let written = writer
            .await
            .map_err(|e| ReleaseError::Internal(format!("writer task: {e}")))?;
        // A writer failure (disk full) explains a closed channel; report it first.
        let (sha256, len) = written?;
        fetched?;
        Ok(Downloaded { sha256, len })
    }

    async fn copy_local(
        &self,
        path: &Path,
        url: &str,
        tx: &mpsc::Sender<Chunk>,
        limit: u64,
    ) -> Result<(), ReleaseError> {
        let fetch_err = |source: std::io::Error| ReleaseError::Fetch {
            url: url.to_string(),
            source: source.into(),
        };
        let p = path.to_path_buf();
        let opened =
            tokio::task::spawn_blocking(move || crate::role::file::open_regular(&p, limit))
                .await
                .map_err(|e| ReleaseError::Internal(format!("file mirror open: {e}")))?;
        let mut f = tokio::fs::File::from_std(opened.map_err(|e| local_error(e, url, limit))?);
        let mut total = 0u64;
        loop {
            let mut buf = vec![0u8; FILE_CHUNK];
            let n = f.read(&mut buf).await.map_err(fetch_err)?;
            if n == 0 {
                return Ok(());
            }
            total += n as u64;
            if total > limit {
                return Err(ReleaseError::TooLarge {
                    url: url.to_string(),
                    limit,
                });
            }
            buf.truncate(n);
            if tx.send(Chunk::Data(buf.into())).await.is_err() {
                return Ok(()); // the writer failed; its error is reported
            }
        }
    }

    async fn download_http(
        &self,
        url: &str,
        tx: &mpsc::Sender<Chunk>,
        limit: u64,
    ) -> Result<(), ReleaseError> {
        let progress = Progress::new(url);
        let mut written = 0u64;
        let mut attempt = 0u32;
        loop {
            match self
                .try_download(url, tx, limit, &mut written, &progress)
                .await
            {
                Ok(()) => {
                    progress.finish(written);
                    return Ok(());
                }
                Err(SmallErr::Fatal(e)) => return Err(e),
                Err(SmallErr::Retry(cause)) => {
                    if tx.is_closed() {
                        return Ok(()); // the writer failed; its error is reported
                    }
                    attempt += 1;
                    if attempt > self.opts.retry.retries || !cause.is_retryable() {
                        if let FetchCause::Status(404) = cause {
                            return Err(ReleaseError::NotFound {
                                url: url.to_string(),
                            });
                        }
                        return Err(ReleaseError::Fetch {
                            url: url.to_string(),
                            source: cause,
                        });
                    }
                    let d = self.backoff(attempt);
                    warn!(url = %url, attempt, resume_at = written, delay_ms = d.as_millis() as u64, cause = %cause, "retrying download");
                    tokio::time::sleep(d).await;
                }
            }
        }
    }

    async fn try_download(
        &self,
        url: &str,
        tx: &mpsc::Sender<Chunk>,
        limit: u64,
        written: &mut u64,
        progress: &Progress,
    ) -> Result<(), SmallErr> {
        let mut req = self.client.get(url);
        if *written > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={written}-"));
        }
        let resp = req.send().await.map_err(|e| SmallErr::Retry(e.into()))?;
        let status = resp.status();
        let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT
            && *written > 0
            && content_range_start(&resp) == Some(*written);
        if status == reqwest::StatusCode::OK || (status.is_success() && !resumed) {
            if *written > 0 {
                // The server ignored the Range: start over from byte 0.
                tx.send(Chunk::Reset)
                    .await
                    .map_err(|_| SmallErr::Retry(FetchCause::Status(0)))?;
                *written = 0;
            }
        } else if !resumed {
            return Err(SmallErr::Retry(FetchCause::Status(status.as_u16())));
        }
        let expected_total = resp.content_length().map(|l| l + *written);
        if expected_total.is_some_and(|t| t > limit) {
            return Err(SmallErr::Fatal(ReleaseError::TooLarge {
                url: url.to_string(),
                limit,
            }));
        }
        progress.set_total(expected_total);
        let mut stream = resp.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.opts.read_timeout, stream.next())
                .await
                .map_err(|_| SmallErr::Retry(FetchCause::ReadTimeout(self.opts.read_timeout)))?;
            match next {
                None => break,
                Some(Ok(b)) => {
                    *written += b.len() as u64;
                    if *written > limit {
                        return Err(SmallErr::Fatal(ReleaseError::TooLarge {
                            url: url.to_string(),
                            limit,
                        }));
                    }
                    progress.set(*written);
                    if tx.send(Chunk::Data(b)).await.is_err() {
                        // Writer failed; surfaced by the caller.
                        return Err(SmallErr::Retry(FetchCause::Status(0)));
                    }
                }
                Some(Err(e)) => return Err(SmallErr::Retry(e.into())),
            }
        }
        if let Some(t) = expected_total
            && t != *written
        {
            return Err(SmallErr::Retry(FetchCause::Truncated {
                got: *written,
                expected: t,
            }));
        }
        Ok(())
    }
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let rest = v.strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

enum SmallErr {
    Retry(FetchCause),
    Fatal(ReleaseError),
}

enum Chunk {
    Data(bytes::Bytes),
    Reset,
}

/// Writes and hashes chunks on a blocking thread; returns the hash and the
/// byte count, or the write error (e.g. disk full).
fn write_loop(
    file: std::fs::File,
    mut rx: mpsc::Receiver<Chunk>,
    path: &Path,
) -> Result<(String, u64), ReleaseError> {
    use std::io::{Seek, SeekFrom};
    let io_err = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| ReleaseError::Io {
            what,
            path: path.clone(),
            source,
        }
    };
    let mut out = std::io::BufWriter::with_capacity(FILE_CHUNK, file);
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        match chunk {
            Chunk::Data(b) => {
                hasher.update(&b);
                out.write_all(&b)
                    .map_err(io_err("write the download file"))?;
                len += b.len() as u64;
            }
            Chunk::Reset => {
                out.flush().map_err(io_err("write the download file"))?;
                let f = out.get_mut();
                f.set_len(0).map_err(io_err("truncate the download file"))?;
                f.seek(SeekFrom::Start(0))
                    .map_err(io_err("truncate the download file"))?;
                hasher = Sha256::new();
                len = 0;
            }
        }
    }
    let f = out
        .into_inner()
        .map_err(|e| io_err("write the download file")(e.into_error()))?;
    f.sync_all().map_err(io_err("sync the download file"))?;
    Ok((hex::encode(hasher.finalize()), len))
}

/// A progress bar on a TTY, log lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    url: String,
}

impl Progress {
    fn new(url: &str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            ) {
                b.set_style(style);
            }
            b.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
            b
        });
        if bar.is_none() {
            info!(url = %url, "downloading");
        }
        Progress {
            bar,
            url: url.to_string(),
        }
    }

    fn set_total(&self, total: Option<u64>) {
        if let (Some(b), Some(t)) = (&self.bar, total) {
            b.set_length(t);
        }
    }

    fn set(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.set_position(n);
        }
    }

    fn finish(&self, n: u64) {
        match &self.bar {
            Some(b) => b.finish_and_clear(),
            None => info!(url = %self.url, bytes = n, "downloaded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bound of each call: far above a local read, so only a hang fails it.
    const BOUND: Duration = Duration::from_secs(20);

    fn source_text(e: &ReleaseError) -> String {
        let mut s = e.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(c) = cur {
            s.push_str(&format!(": {c}"));
            cur = c.source();
        }
        s
    }

    /// Asserts that `call` fails within [`BOUND`] with an error whose
    /// chain names `cause`.
    async fn assert_refused_in_bound<T: std::fmt::Debug>(
        rel: &str,
        cause: &str,
        call: impl std::future::Future<Output = Result<T, ReleaseError>>,
    ) {
        let e = tokio::time::timeout(BOUND, call)
            .await
            .expect("bounded")
            .unwrap_err();
        assert!(
            source_text(&e).contains(cause),
            "{rel}: {}",
            source_text(&e)
        );
    }

    #[tokio::test]
    async fn a_directory_mirror_refuses_fifos_and_devices_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
        std::fs::write(dir.path().join("big"), vec![b'x'; 2048]).unwrap();
        let m = Mirror::new(dir.path().to_str().unwrap(), &FetchOptions::default()).unwrap();
        for (rel, cause) in [
            ("fifo", "is a FIFO, not a regular file"),
            ("zero", "is a character device, not a regular file"),
        ] {
            assert_refused_in_bound(rel, cause, m.get_small(rel, 1024)).await;
            let dest = dir.path().join(format!("{rel}.out"));
            assert_refused_in_bound(rel, cause, m.download(rel, &dest, 1 << 20)).await;
        }
        let e = m.get_small("big", 1024).await.unwrap_err();
        assert!(
            matches!(e, ReleaseError::TooLarge { limit: 1024, .. }),
            "{e}"
        );
        assert_eq!(m.get_small("missing", 1024).await.unwrap(), None);
    }
}
