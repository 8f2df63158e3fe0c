//! CPU time of this process's threads, by thread name, from
//! `/proc/self/task/*/stat`: the scale benchmark runs each replica on a
//! tokio runtime whose threads carry the replica's name, so one replica's
//! CPU can be told from the others' in one process.

use std::time::Duration;

/// User + system CPU time so far of every thread whose name starts with
/// `prefix` (threads that ended are not counted: a runtime's workers live
/// as long as the runtime).
pub fn threads_cpu(prefix: &str) -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, user, system)) = parse_stat(&stat) {
            if name.starts_with(prefix) {
                ticks += user + system;
            }
        }
    }
    Duration::from_millis(ticks * 1000 / ticks_per_s)
}

/// `(name, utime, stime)` of a `/proc/*/stat` line. The name is in
/// parentheses and may itself hold spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(&str, u64, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name: state (field 3) ... utime (14), stime (15).
    let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((name, user, system))
}
