//! CPU time from Linux's `/proc`: a process's (with its reaped children's, for a server whose
//! connections come and go) and the whole machine's. Zero wherever `/proc` cannot be read. The
//! benchmark's CPU table reads it, and so does the load generator, for its own lookups' share
//! of Postgres.

/// `/proc` counts CPU time in clock ticks of `USER_HZ`, which is 100 on every Linux
/// architecture Waybill is built for.
const TICKS_PER_SEC: f64 = 100.0;

/// User plus system time of one process (and of its reaped children with `children`), s.
pub fn process_seconds(pid: u32, children: bool) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(0.0, |stat| stat_seconds(&stat, children))
}

/// [`process_seconds`] from the text of `/proc/<pid>/stat`.
fn stat_seconds(stat: &str, children: bool) -> f64 {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    // utime stime cutime cstime are the 14th to 17th fields, the 12th to 15th after the name.
    let at = numbers(fields, 11);
    let own = at(0) + at(1);
    let reaped = at(2) + at(3);
    (own + if children { reaped } else { 0.0 }) / TICKS_PER_SEC
}

/// The whitespace-separated numbers of `line` from the `skip`th on, by index (0 where absent
/// or not a number).
fn numbers(line: &str, skip: usize) -> impl Fn(usize) -> f64 {
    let values: Vec<f64> = line
        .split_whitespace()
        .skip(skip)
        .map(|field| field.parse().unwrap_or(0.0))
        .collect();
    move |index| values.get(index).copied().unwrap_or(0.0)
}

/// Every process id with its command name.
pub fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            Some((pid, name.trim_end().to_owned()))
        })
        .collect()
}

/// The machine's busy and total CPU seconds over all cores (`/proc/stat`).
pub fn machine_seconds() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0.0, 0.0);
    };
    let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let at = numbers(line, 1);
    let idle = at(3) + at(4);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy / TICKS_PER_SEC, (busy + idle) / TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_a_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime …
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 10 0 0 0 250 50 700 100 20 0";
        assert!((stat_seconds(stat, false) - 3.0).abs() < 1e-9);
        assert!((stat_seconds(stat, true) - 11.0).abs() < 1e-9);
        assert_eq!(stat_seconds("garbage", true), 0.0);
    }
}
