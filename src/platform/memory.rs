//! The C allocator's habits, tuned where lomob's threads make them costly (glibc on Linux;
//! elsewhere nothing to tune).

/// Limits glibc to `arenas` malloc arenas. Each thread that allocates (walkers, hashers,
/// sled's, the runtime's) would otherwise get an arena of its own and keep its freed memory
/// there: at a million files that held 30 MB more than the heap in use. Call before threads
/// start.
pub fn limit_arenas(arenas: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called before other threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas.clamp(1, 64) as libc::c_int);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Hands freed memory at the top of the heaps back to the system (an idle daemon stays
/// small: glibc keeps it otherwise).
pub fn release() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory at the top of the heaps to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}
