//! What the process may use, as the container runtime set it: the cgroup memory limit, and
//! from it (and the CPUs the process may run on, which `available_parallelism` reads from the
//! cgroup CPU quota and the affinity mask) the default number of password-hashing threads.

/// One argon2id verification at the default parameters (m = 19 MiB) holds this much, for as
/// long as its hashing thread lives (the thread reuses it).
pub const HASH_MEMORY: u64 = 19 * 1024 * 1024;

/// The default number of hashing threads: one per CPU the process may use, but no more than
/// half the cgroup's memory limit holds at `hash_memory` each (the costliest stored hash's
/// memory, at least `HASH_MEMORY`; at least one thread).
pub fn default_hash_threads(hash_memory: u64) -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    hash_threads_for(cpus, memory_limit(), hash_memory)
}

/// `cpus` threads, capped by a memory budget of half of `limit` (bytes), at the default
/// parameters' memory each.
pub fn hash_threads(cpus: usize, limit: Option<u64>) -> usize {
    hash_threads_for(cpus, limit, HASH_MEMORY)
}

/// `cpus` threads, capped by a memory budget of half of `limit`, at `hash_memory` each.
pub fn hash_threads_for(cpus: usize, limit: Option<u64>, hash_memory: u64) -> usize {
    let each = hash_memory.max(HASH_MEMORY);
    let by_memory = limit.map_or(usize::MAX, |l| {
        usize::try_from(l / 2 / each).unwrap_or(usize::MAX)
    });
    cpus.min(by_memory).max(1)
}

/// What one open client connection may hold, at most, in the gateway (buffers, TLS state,
/// the request being served): the budget `max_connections` is sized by.
pub const CONNECTION_MEMORY: u64 = 32 * 1024;

/// The default `server.max_connections`: 10,000, but no more than a quarter of the cgroup
/// memory limit holds at `CONNECTION_MEMORY` each (a 128 MiB sidecar: 1,024).
pub fn default_max_connections() -> usize {
    max_connections_for(memory_limit())
}

pub fn max_connections_for(limit: Option<u64>) -> usize {
    let by_memory = limit.map_or(usize::MAX, |l| {
        usize::try_from(l / 4 / CONNECTION_MEMORY).unwrap_or(usize::MAX)
    });
    by_memory.clamp(64, 10_000)
}

/// A warning when `threads` hashing threads at `each` bytes could hold more than the memory
/// `limit` (the cgroup's): a login burst would get the process killed.
pub fn hash_memory_warning(threads: usize, each: u64, limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    let each = each.max(HASH_MEMORY);
    let total = each.saturating_mul(threads as u64);
    (total > limit).then(|| {
        format!(
            "login.max_concurrent_hashes = {threads} threads x {} MiB (the costliest stored hash) = {} MiB, over the memory limit of {} MiB: a burst of logins can exhaust it. Lower max_concurrent_hashes (0 picks a safe number), or raise the limit",
            each >> 20,
            total >> 20,
            limit >> 20
        )
    })
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), or None when unlimited or unknown.
pub fn memory_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    v2.or_else(v1).and_then(|t| parse_limit(&t))
}

/// `max` (v2) or a huge v1 value (the page-rounded i64::MAX) mean no limit.
pub fn parse_limit(text: &str) -> Option<u64> {
    let t = text.trim();
    if t == "max" {
        return None;
    }
    let n: u64 = t.parse().ok()?;
    (n < 1 << 60).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_fit_the_memory_limit() {
        assert_eq!(max_connections_for(None), 10_000);
        assert_eq!(max_connections_for(Some(128 << 20)), 1024);
        assert_eq!(max_connections_for(Some(16 << 30)), 10_000);
        assert_eq!(max_connections_for(Some(1 << 20)), 64, "a floor");
    }

    #[test]
    fn too_many_hashing_threads_for_the_limit_is_a_warning() {
        assert!(hash_memory_warning(8, HASH_MEMORY, Some(128 << 20)).is_some());
        assert!(hash_memory_warning(2, HASH_MEMORY, Some(128 << 20)).is_none());
        assert!(hash_memory_warning(8, HASH_MEMORY, None).is_none());
    }

    /// Users hashed elsewhere with 64 MiB: a 128 MiB sidecar gets one thread, not three.
    #[test]
    fn the_thread_budget_counts_the_costliest_hash() {
        assert_eq!(hash_threads_for(4, Some(128 << 20), 64 << 20), 1);
        assert_eq!(hash_threads_for(4, Some(128 << 20), 0), 3);
        assert_eq!(hash_threads_for(4, None, 64 << 20), 4);
    }

    #[test]
    fn the_memory_limit_caps_the_hashing_threads() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(hash_threads(8, None), 8);
        assert_eq!(hash_threads(8, Some(128 * MIB)), 3); // 64 MiB budget / 19 MiB
        assert_eq!(hash_threads(2, Some(128 * MIB)), 2);
        assert_eq!(hash_threads(8, Some(32 * MIB)), 1); // never zero
        assert_eq!(hash_threads(8, Some(1024 * MIB)), 8);
    }

    #[test]
    fn reads_cgroup_limits() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("134217728\n"), Some(134_217_728));
        assert_eq!(parse_limit("9223372036854771712\n"), None); // v1 "unlimited"
        assert_eq!(parse_limit("garbage"), None);
    }
}
