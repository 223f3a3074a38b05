//! Gives back the start-up working set once the agents run.
//!
//! Start-up touches code the daemon never runs again: argument parsing, the
//! role file's parser and checks, the release downloader with its TLS and
//! OpenPGP code, zip, rendering. Each touched page of the binary stays mapped
//! in the process (the kernel maps text in 64 KiB fault-around blocks), and
//! since no other process maps the binary those pages count as the daemon's
//! own memory (USS) for as long as it lives. The heap keeps the freed
//! buffers of the download the same way.
//!
//! [`release_startup_memory`] drops the page-table entries of the binary's
//! read-only mappings that hold nothing but unmodified file pages
//! (`madvise(MADV_DONTNEED)`: the next access maps the same page of the file
//! again, from the page cache) and returns freed heap to the kernel (glibc's
//! `malloc_trim`). What the daemon keeps using comes back on first use; what
//! it never uses again stops counting. Mappings with private copies (the
//! relocated `.data.rel.ro`, `.data`, `.bss`) are never touched: dropping
//! them would lose their contents.
//!
//! It then takes the binary's pages out of the page cache where only this
//! process held them: `posix_fadvise(POSIX_FADV_DONTNEED)` for the pages no
//! process maps, then `madvise(MADV_PAGEOUT)` (Linux 5.4+; skipped where
//! the kernel lacks it) for those the trim's own code mapped again
//! meanwhile. A binary written by an installer, `cp` or `strip` sits in
//! the page cache in large folios (hundreds of KiB each, Linux 6.x), and a
//! fault maps the whole folio: one function of the steady state would map
//! back half a MiB of start-up code. Read again from the file on its next
//! use, a page comes back in the kernel's usual 64 KiB fault-around blocks.
//! Pages another process maps (a `supervisor status` running meanwhile)
//! stay cached.
//!
//! The daemon calls it when all agents become ready (after start-up, a
//! restart) and after a reload.

use std::path::Path;

/// What one call released.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Read-only mappings of the binary whose pages were dropped.
    pub mappings: usize,
    /// Resident bytes of those mappings before the drop.
    pub resident_bytes: u64,
}

/// A mapping of `/proc/<pid>/smaps` that may be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Droppable {
    /// Start address.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
    /// Resident bytes (`Rss:`).
    pub resident: u64,
}

/// Drops the binary's clean read-only pages and trims the heap. Errors are
/// logged at debug level and end the attempt: this is an optimisation, and
/// nothing is lost by not doing it.
pub fn release_startup_memory() -> Trimmed {
    trim_heap();
    match trim_own_binary() {
        Ok(t) => {
            tracing::debug!(
                mappings = t.mappings,
                resident_kib = t.resident_bytes / 1024,
                "released start-up pages"
            );
            t
        }
        Err(e) => {
            tracing::debug!(error = %e, "failed to release start-up pages");
            Trimmed::default()
        }
    }
}

fn trim_own_binary() -> std::io::Result<Trimmed> {
    let (dev_major, dev_minor, inode) = file_identity(Path::new("/proc/self/exe"))?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut done = Trimmed::default();
    for m in droppable_mappings(&smaps, dev_major, dev_minor, inode) {
        #[allow(unsafe_code)]
        // SAFETY: `m` is a whole read-only, private mapping of our own
        // executable without a single private (anonymous) page, as listed
        // by the kernel a moment ago. MADV_DONTNEED on such a mapping only
        // removes page-table entries; any later access maps the identical
        // page of the file again (a running executable cannot be written:
        // ETXTBSY). No Rust object owns these addresses.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        done.mappings += 1;
        done.resident_bytes += m.resident;
    }
    evict_unmapped_pages(Path::new("/proc/self/exe"))?;
    for m in droppable_mappings(&smaps, dev_major, dev_minor, inode) {
        #[allow(unsafe_code)]
        // SAFETY: as for MADV_DONTNEED above (the same mappings: read-only,
        // private, only file pages of our own executable): MADV_PAGEOUT
        // unmaps and reclaims clean file pages, which any later access reads
        // again from the unchanged file. It never changes their contents.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_PAGEOUT) };
        if rc != 0 {
            // EINVAL: a kernel before 5.4. The pages stay cached.
            break;
        }
    }
    Ok(done)
}

/// Drops the page-cache pages of the file at `path` that no process maps
/// (clean ones; the kernel writes nothing back for a binary). Only a hint:
/// the next read of such a page reads the file again.
fn evict_unmapped_pages(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    nix::fcntl::posix_fadvise(
        &file,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
    .map_err(std::io::Error::from)
}

/// Device (major, minor) and inode of a file, as `/proc/*/maps` shows them.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(path)?;
    let dev = md.dev();
    Ok((
        u64::from(libc::major(dev)),
        u64::from(libc::minor(dev)),
        md.ino(),
    ))
}

/// The mappings of `smaps` text that belong to the file `(major, minor,
/// inode)`, are private and not writable, and hold no anonymous page.
pub fn droppable_mappings(smaps: &str, major: u64, minor: u64, inode: u64) -> Vec<Droppable> {
    let mut out = Vec::new();
    // The mapping being read: (candidate, Rss, Anonymous seen).
    let mut cur: Option<(Droppable, Option<u64>)> = None;
    let finish = |c: Option<(Droppable, Option<u64>)>, out: &mut Vec<Droppable>| {
        if let Some((d, Some(0))) = c {
            out.push(d);
        }
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            finish(cur.take(), &mut out);
            cur = header
                .filter(|h| h.perms_ok && h.major == major && h.minor == minor && h.inode == inode)
                .map(|h| {
                    let d = Droppable {
                        start: h.start,
                        len: h.end - h.start,
                        resident: 0,
                    };
                    (d, None)
                });
            continue;
        }
        let Some((d, anon)) = cur.as_mut() else {
            continue;
        };
        if let Some(kib) = field_kib(line, "Rss:") {
            d.resident = kib * 1024;
        } else if let Some(kib) = field_kib(line, "Anonymous:") {
            *anon = Some(kib);
        }
    }
    finish(cur.take(), &mut out);
    out
}

struct Header {
    start: usize,
    end: usize,
    perms_ok: bool,
    major: u64,
    minor: u64,
    inode: u64,
}

/// `Some(..)` when `line` is a mapping header (`start-end perms offset
/// major:minor inode [path]`); the inner `None` for a header we cannot read.
fn mapping_header(line: &str) -> Option<Option<Header>> {
    let mut f = line.split_ascii_whitespace();
    let range = f.next()?;
    let (start, end) = range.split_once('-')?;
    // Field lines ("Rss:   4 kB") have no '-' range of hex digits.
    let start = usize::from_str_radix(start, 16).ok()?;
    let parsed = (|| {
        let end = usize::from_str_radix(end, 16).ok()?;
        let perms = f.next()?;
        let _offset = f.next()?;
        let (major, minor) = f.next()?.split_once(':')?;
        let inode = f.next()?.parse().ok()?;
        Some(Header {
            start,
            end,
            // Readable, not writable, private: "r--p" or "r-xp".
            perms_ok: perms.len() == 4
                && perms.starts_with('r')
                && perms.as_bytes()[1] == b'-'
                && perms.ends_with('p'),
            major: u64::from_str_radix(major, 16).ok()?,
            minor: u64::from_str_radix(minor, 16).ok()?,
            inode,
        })
    })();
    Some(parsed)
}

fn field_kib(line: &str, name: &str) -> Option<u64> {
    let rest = line.strip_prefix(name)?;
    rest.trim().strip_suffix("kB")?.trim().parse().ok()
}

fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: malloc_trim only returns free heap memory to the kernel;
        // it is thread-safe and takes no pointers.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c1a00000-55d0c1b00000 r--p 00000000 fd:01 4242 /usr/bin/supervisor
Size:               1024 kB
Rss:                 300 kB
Anonymous:             0 kB
55d0c1b00000-55d0c1f00000 r-xp 00100000 fd:01 4242 /usr/bin/supervisor
Size:               4096 kB
Rss:                2100 kB
Anonymous:             0 kB
55d0c1f00000-55d0c1f40000 r--p 00500000 fd:01 4242 /usr/bin/supervisor
Size:                256 kB
Rss:                 224 kB
Anonymous:           224 kB
55d0c1f40000-55d0c1f45000 rw-p 00540000 fd:01 4242 /usr/bin/supervisor
Size:                 20 kB
Rss:                  20 kB
Anonymous:            20 kB
55d0c1f45000-55d0c1f50000 r-xp 00000000 fd:01 9999 /usr/lib/libc.so.6
Size:                 44 kB
Rss:                  44 kB
Anonymous:             0 kB
55d0c2000000-55d0c2100000 rw-p 00000000 00:00 0 [heap]
Size:               1024 kB
Rss:                 160 kB
Anonymous:           160 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_binary_are_dropped() {
        let d = droppable_mappings(SMAPS, 0xfd, 0x01, 4242);
        assert_eq!(
            d,
            vec![
                Droppable {
                    start: 0x55d0c1a00000,
                    len: 0x100000,
                    resident: 300 * 1024
                },
                Droppable {
                    start: 0x55d0c1b00000,
                    len: 0x400000,
                    resident: 2100 * 1024
                },
            ],
            "the relocated read-only part (anonymous pages), the writable data, \
             libc and the heap must stay"
        );
    }

    #[test]
    fn evicting_a_file_from_the_page_cache_keeps_its_contents() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..=255u8).cycle().take(256 * 1024).collect();
        std::io::Write::write_all(&mut std::fs::File::create(&path).expect("create"), &data)
            .expect("write");
        evict_unmapped_pages(&path).expect("fadvise");
        assert_eq!(std::fs::read(&path).expect("read"), data);
        assert!(evict_unmapped_pages(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn a_mapping_without_an_anonymous_line_is_kept() {
        // Unknown shape: never drop what we could not check.
        let smaps = "7f00-8f00 r-xp 00000000 fd:01 4242 /usr/bin/supervisor\nRss: 4 kB\n";
        assert!(droppable_mappings(smaps, 0xfd, 1, 4242).is_empty());
        assert!(
            droppable_mappings(SMAPS, 0xfd, 0x02, 4242).is_empty(),
            "other device"
        );
    }

    /// Set in the child that measures (below).
    const CHILD: &str = "HASHI_TRIM_TEST_CHILD";

    /// Runs in a child process started from a private copy of the test
    /// binary, as the daemon runs: the only process mapping its binary.
    /// The test binary itself is mapped by every test process nextest runs
    /// at once; their mappings keep its large page-cache folios in place,
    /// and one fault then maps a whole folio back (the module doc): the
    /// drop is real but not visible in RssFile on a busy machine.
    #[test]
    fn dropping_the_own_text_lowers_the_resident_file_pages_and_code_still_runs() {
        if std::env::var_os(CHILD).is_some() {
            measure_the_drop();
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("trim-test");
        std::fs::copy("/proc/self/exe", &copy).expect("copy the test binary");
        // Written back: clean pages, as an installed binary's.
        std::fs::File::open(&copy)
            .and_then(|f| f.sync_all())
            .expect("sync the copy");
        let name = format!(
            "{}::dropping_the_own_text_lowers_the_resident_file_pages_and_code_still_runs",
            module_path!()
                .split_once("::")
                .map_or(module_path!(), |(_, rest)| rest)
        );
        let out = std::process::Command::new(&copy)
            .args(["--exact", &name, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("run the copy");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "the child: {}\n{stdout}\n{stderr}",
            out.status
        );
    }

    fn measure_the_drop() {
        fn rss_file_kib() -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            status
                .lines()
                .find_map(|l| field_kib(l, "RssFile:"))
                .expect("RssFile line")
        }
        let before = rss_file_kib();
        let t = release_startup_memory();
        let after = rss_file_kib();
        assert!(
            t.mappings >= 2,
            "text and read-only data of the test binary: {t:?}"
        );
        assert!(t.resident_bytes > 0, "{t:?}");
        assert!(
            after < before,
            "resident file pages went from {before} KiB to {after} KiB"
        );
        // The code keeps working after its pages were dropped: parse again.
        assert_eq!(droppable_mappings(SMAPS, 0xfd, 0x01, 4242).len(), 2);
    }
}
