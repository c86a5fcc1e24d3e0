//! Handing freed heap memory back to the system. glibc's allocator keeps what a burst of
//! connections freed in its per-thread arenas, and a server that served 200 clients at once
//! would go on holding a hundred MiB it no longer uses; on a 1 GB machine that matters. Every
//! few seconds the free pages of every arena are returned (`malloc_trim`), which costs next to
//! nothing when there is nothing to return.

use std::time::Duration;

use tokio::sync::watch;

/// How often free heap pages are returned.
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Return free heap pages until `stop` turns true.
pub async fn trim_periodically(mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // It takes the allocator's locks: not on an async worker.
        let _ = tokio::task::spawn_blocking(release_free_memory).await;
    }
}

/// Allocator arenas at most. glibc gives busy threads arenas of their own, up to eight per
/// core; each keeps its own free memory, and with a blocking thread per upload or download
/// a burst of clients leaves a dozen arenas holding what they freed. Two cores gain nothing
/// from more than a few.
const ARENAS: i32 = 2;

/// Set the allocator up for a server: few arenas. Call before any thread starts.
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a parameter of the allocator; called at start-up, before
    // other threads exist.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Return the allocator's free pages to the system now.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only reorganises the allocator's own free lists and takes its locks;
    // it has no preconditions and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}
