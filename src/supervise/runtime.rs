//! The async runtime every `supervisor` command runs on, shared with the
//! supervision benchmark (`benches/supervise_daemon.rs`) so that its numbers
//! describe exactly this configuration.
//!
//! * One thread (`current_thread`): the daemon's work is waiting (for
//!   children, signals, sockets, timers). A single thread needs no cross-thread
//!   wake-ups on the restart path and no per-worker stacks. CPU-heavy steps
//!   (hashing, unzipping, key parsing) already run on the blocking pool,
//!   whose threads exist only while used ([`BLOCKING_KEEP_ALIVE`]).
//! * One malloc arena ([`MALLOC_ARENAS`]): glibc gives every thread that
//!   allocates its own arena, each keeping freed memory as private pages;
//!   with at most a blocking thread or two beside the main one, contention
//!   is not worth that memory.

use std::time::Duration;

/// How long an idle blocking-pool thread lingers before it exits.
pub const BLOCKING_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// glibc `M_ARENA_MAX` set before any thread starts.
pub const MALLOC_ARENAS: i32 = 1;
/// Readiness events taken from epoll per turn of the runtime. The daemon
/// watches a few dozen descriptors at most (agent pipes and notify sockets,
/// signals, agent API and health connections); more ready ones are taken on
/// the next turn. Tokio's default of 1024 keeps a 12 KiB event buffer.
pub const IO_EVENTS_PER_TICK: usize = 64;

/// Builds the runtime (call once, early in `main`, before other threads).
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    limit_malloc_arenas(MALLOC_ARENAS);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .max_io_events_per_tick(IO_EVENTS_PER_TICK)
        .build()
}

/// Caps glibc's malloc arenas (no-op on other C libraries).
pub fn limit_malloc_arenas(arenas: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[allow(unsafe_code)]
        // SAFETY: mallopt only sets an allocator parameter; called before the
        // runtime starts any thread.
        let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
        if ok != 1 {
            tracing::debug!(arenas, "failed to cap malloc arenas");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}
