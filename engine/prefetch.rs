//! Asking the CPU to fetch memory a reader will need a few steps ahead. `read_all` over many
//! small streams looks up each event's stream in one of 4,096 fan-out tables, at random: each
//! lookup missed the caches until it was asked for ahead (`perf` on W5, session 11).

/// Ask the CPU to bring the cache line at `p` close: a hint, with no effect on memory.
#[inline]
pub fn read<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and changes no memory, whatever the address (an invalid
    // one is ignored); SSE, which it needs, is part of every x86_64 CPU.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
