//! The server's CPU time, read from `/proc` (Linux): a process named with `--server-pid` and
//! its descendants (the simulated enclave is a child of `ekms serve`), each by its name, so a
//! measurement can say how much CPU each request cost on each side of the vsock.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`, fixed at 100 by the kernel's ABI).
const TICKS_PER_SEC: u64 = 100;

/// CPU time so far (user + system, all threads, in microseconds) of `root` and every process
/// below it, by process name (`comm`). Processes that cannot be read are left out.
#[must_use]
pub(crate) fn sample(root: u32) -> BTreeMap<String, u64> {
    by_name(root, process_cpu_us)
}

/// `read` of `root` and of every process below it, summed by process name.
fn by_name(root: u32, read: impl Fn(u32) -> Option<(String, u64)>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root];
    let mut seen = 0usize;
    while let Some(pid) = todo.pop() {
        // A bound against a malformed or cyclic /proc view.
        seen += 1;
        if seen > 4096 {
            break;
        }
        if let Some((name, n)) = read(pid) {
            *out.entry(name).or_insert(0) += n;
        }
        todo.extend(children(pid));
    }
    out
}

/// Resident memory (KiB, `VmRSS` of `/proc/PID/status`) of `root` and every process below it,
/// by process name.
#[must_use]
pub(crate) fn rss_kib(root: u32) -> BTreeMap<String, u64> {
    by_name(root, |pid| {
        parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    })
}

/// `Name` and `VmRSS` (KiB) of a `/proc/PID/status` text.
fn parse_status(status: &str) -> Option<(String, u64)> {
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    let name = field("Name:")?.to_owned();
    let kib = field("VmRSS:")?.strip_suffix("kB")?.trim().parse().ok()?;
    Some((name, kib))
}

/// The name and CPU time (µs) of one process, from `/proc/PID/stat`.
fn process_cpu_us(pid: u32) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// `comm`, utime and stime of a `/proc/PID/stat` line. The name is in parentheses and may
/// itself hold spaces and parentheses: the fields resume after the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    // After the name: state (field 3) … utime (14), stime (15).
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, (utime + stime) * (1_000_000 / TICKS_PER_SEC)))
}

/// The children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// What each process spent between two samples, in µs.
#[must_use]
pub(crate) fn spent(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or(0);
            (name.clone(), a.saturating_sub(b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let line = "4242 (ekms (x) y) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("ekms (x) y".into(), 1_750_000)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (a) S 1 2"), None);
    }

    #[test]
    fn status_gives_name_and_rss() {
        let status = "Name:\tekms-enclave\nUmask:\t0022\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status(status), Some(("ekms-enclave".into(), 12345)));
        assert_eq!(parse_status("Name:\tx\n"), None);
        assert_eq!(parse_status("Name:\tx\nVmRSS:\tlots kB\n"), None);
        assert!(!rss_kib(std::process::id()).is_empty());
    }

    #[test]
    fn this_process_is_sampled() {
        let s = sample(std::process::id());
        assert!(!s.is_empty());
    }
}
