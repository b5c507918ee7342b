//! Memory returned to the system after a wave of clients leaves (issue 14).
//!
//! glibc's malloc keeps what is freed: each thread's arena holds on to its freed chunks, and
//! the main heap shrinks only from its top. After 10,000 clients log in and leave, the process
//! would keep their memory (mostly free, but resident) for ever. Every [`PERIOD`], this looks at
//! the number of connected clients; when it has fallen well below the highest seen since the
//! last trim, `malloc_trim(0)` gives the free pages of every arena back to the system
//! (`madvise(MADV_DONTNEED)` of whole free pages; nothing in use moves).
//!
//! Why not another allocator: jemalloc or mimalloc would return memory on their own, but add a
//! C dependency built with the crate; glibc is what the field runs PgBouncer with, and one trim
//! after a wave costs a walk over the heap's free lists (milliseconds for hundreds of MiB), once
//! per wave, never on a client's path.

use std::time::Duration;

/// How often the client count is looked at.
pub const PERIOD: Duration = Duration::from_secs(5);

/// Clients that must have left since the last trim (or the highest count since) before the
/// next one: small waves free too little to be worth a walk over the heap.
const MIN_WAVE: i64 = 256;

/// Whether a trim is due: `now` clients connected, `peak` the most since the last trim.
pub fn due(peak: i64, now: i64) -> bool {
    peak - now >= MIN_WAVE && now <= peak / 2
}

/// Give free memory back to the system (glibc only; a no-op elsewhere).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes the arenas' locks itself; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trim after each wave of clients that leaves, for ever (spawned by the proxy).
pub async fn trim_after_waves(clients: prometheus::IntGauge) {
    let mut peak = clients.get();
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = clients.get();
        peak = peak.max(now);
        if due(peak, now) {
            tokio::task::spawn_blocking(trim);
            tracing::debug!(
                peak,
                now,
                "clients left: free memory returned to the system"
            );
            peak = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_wave_not_a_trickle() {
        assert!(due(10_000, 0));
        assert!(due(10_000, 5_000));
        assert!(!due(10_000, 6_000), "most clients are still there");
        assert!(!due(200, 0), "too few left to be worth it");
        assert!(!due(0, 0));
    }
}
