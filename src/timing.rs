//! Wall and CPU clocks for honest throughput figures on shared, noisy machines.

/// CPU seconds (user + system) used so far by the whole process, all threads.
pub fn process_cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Peak resident memory of this process so far, in bytes (Linux reports kilobytes).
pub fn peak_rss_bytes() -> u64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    ru.ru_maxrss as u64 * 1024
}

/// Current resident memory of this process in bytes: total, anonymous (heap) and file-backed
/// (mapped files), from `/proc/self/status` (`VmRSS`, `RssAnon`, `RssFile`); zeros where that
/// file is missing (not Linux).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rss {
    pub total: u64,
    pub anon: u64,
    pub file: u64,
}

/// See [`Rss`].
pub fn rss_now() -> Rss {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return Rss::default();
    };
    let field = |name: &str| -> u64 {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// A stopwatch over wall time and process CPU time.
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch {
    wall: std::time::Instant,
    cpu: f64,
}

impl Stopwatch {
    /// Start now.
    pub fn start() -> Self {
        Stopwatch {
            wall: std::time::Instant::now(),
            cpu: process_cpu_seconds(),
        }
    }
    /// Wall seconds since start.
    pub fn wall(&self) -> f64 {
        self.wall.elapsed().as_secs_f64()
    }
    /// Process CPU seconds since start.
    pub fn cpu(&self) -> f64 {
        process_cpu_seconds() - self.cpu
    }
}
