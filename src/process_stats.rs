//! The server process's own CPU time and resident memory, published at every scrape as
//! `zonehost_process_cpu_seconds` and `zonehost_process_resident_memory_bytes`, so that a
//! dashboard or a load generator (`loadgen --server-metrics`) can divide them by the
//! players online.
//!
//! Read from procfs (Linux): `/proc/self/stat` fields 14 and 15 (user and system time of
//! every thread, in clock ticks of 1/100 s: `USER_HZ` is 100 in the kernel's user ABI) and
//! the `VmRSS` line of `/proc/self/status`. Elsewhere nothing is published.

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`).
const USER_HZ: f64 = 100.0;

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time of the process, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

/// CPU seconds from the text of `/proc/<pid>/stat` (`None` when malformed). The second
/// field (the command name) is in parentheses and may hold spaces: fields are counted after
/// its closing parenthesis.
pub fn cpu_seconds_from_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ")": field 3 (state) is the first; utime is field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Resident bytes from the text of `/proc/<pid>/status` (its `VmRSS: N kB` line).
pub fn rss_bytes_from_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Reads this process's figures; `None` where procfs is not available.
pub fn sample() -> Option<ProcessSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(ProcessSample {
        cpu_seconds: cpu_seconds_from_stat(&stat)?,
        rss_bytes: rss_bytes_from_status(&status)?,
    })
}

/// Publishes a fresh reading to the installed `metrics` recorder (called at scrape time).
pub fn publish() {
    if let Some(s) = sample() {
        metrics::gauge!("zonehost_process_cpu_seconds").set(s.cpu_seconds);
        metrics::gauge!("zonehost_process_resident_memory_bytes").set(s.rss_bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name_and_status() {
        let stat = "4242 (zh sim (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 \
                    123 456 789";
        assert_eq!(cpu_seconds_from_stat(stat), Some(3.25));
        assert_eq!(cpu_seconds_from_stat("4242 (x) S 1"), None);
        let status = "Name:\tzonehost\nVmPeak:\t  9000 kB\nVmRSS:\t   88064 kB\nThreads:\t9\n";
        assert_eq!(rss_bytes_from_status(status), Some(88_064 * 1024));
        assert_eq!(rss_bytes_from_status("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_read_on_linux() {
        if cfg!(target_os = "linux") {
            let s = sample().expect("procfs");
            assert!(s.rss_bytes > 0 && s.cpu_seconds >= 0.0, "{s:?}");
        }
    }
}
