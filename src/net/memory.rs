//! Handing freed heap memory back to the operating system.
//!
//! The one place the gateway calls into libc: glibc's allocator keeps freed
//! small blocks resident (only the top of each heap is trimmed on its own),
//! so after a burst of connections the process would stay at its peak
//! resident size. `malloc_trim(0)` releases every free page of every arena.
#![allow(unsafe_code)]

/// Release the allocator's free pages to the system; `true` if any were.
/// A no-op (`false`) where the C library is not glibc.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists and
        // madvises free pages away; it takes no pointer from us and is
        // thread-safe (each arena is locked while it is trimmed).
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
