//! CPU time of chosen processes over a window, from `/proc/<pid>/stat` (utime + stime of all
//! threads), and how busy the whole machine was (`/proc/stat`): where the CPU of a run went.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Which processes to count: explicit pids under a label, and every process with a name.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub pids: Vec<(String, u32)>,
    pub names: Vec<String>,
}

impl Selection {
    /// From `LABEL=PID` flags and `--cpu-process NAME`; loadgen itself is always counted.
    pub fn parse<'a>(
        pids: impl IntoIterator<Item = &'a String>,
        names: &[String],
    ) -> anyhow::Result<Self> {
        let mut selection = Self {
            pids: vec![("loadgen".into(), std::process::id())],
            names: names.to_vec(),
        };
        for spec in pids {
            let (label, pid) = spec
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{spec:?}: expected LABEL=PID"))?;
            let pid = pid
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{spec:?}: {pid:?} is not a pid"))?;
            selection.pids.push((label.trim().to_owned(), pid));
        }
        Ok(selection)
    }
}

#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    /// Seconds since boot, in clock ticks (the unit of a process's start time).
    uptime_ticks: u64,
    /// pid → (label, utime + stime in ticks).
    processes: HashMap<u32, (String, u64)>,
    /// Busy and total ticks of every CPU.
    machine: (u64, u64),
}

/// CPU seconds per label over a window, and the machine's busy and available CPU seconds.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub window_s: f64,
    pub seconds: BTreeMap<String, f64>,
    pub machine_busy_s: f64,
    pub machine_capacity_s: f64,
}

pub struct Watch {
    selection: Selection,
    ticks_per_second: u64,
    start: Snapshot,
}

/// USER_HZ: 100 on every mainstream Linux, asked of `getconf` to be sure (no libc here).
fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime and start time (ticks) of `pid`; `None` if it is gone.
fn process_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<u64>().ok())
    };
    // After ')': state is field 3 of stat(5), so utime (14) is at 11, stime at 12, start at 19.
    Some((field(11)? + field(12)?, field(19)?))
}

fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    let at = |index: usize| values.get(index).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    (busy, busy + at(3) + at(4))
}

fn uptime_ticks(ticks_per_second: u64) -> u64 {
    let uptime = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let seconds: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    (seconds * ticks_per_second as f64) as u64
}

impl Watch {
    pub fn start(selection: Selection) -> Self {
        let ticks_per_second = ticks_per_second();
        let start = snapshot(&selection, ticks_per_second);
        Self {
            selection,
            ticks_per_second,
            start,
        }
    }

    /// CPU used since [`Watch::start`]. A process started meanwhile counts whole; one that
    /// ended meanwhile is lost (PostgreSQL backends of pooled connections live long).
    pub fn usage(&self) -> Usage {
        let end = snapshot(&self.selection, self.ticks_per_second);
        let tick = 1.0 / self.ticks_per_second as f64;
        let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
        for label in self
            .selection
            .pids
            .iter()
            .map(|(label, _)| label)
            .chain(&self.selection.names)
        {
            seconds.entry(label.clone()).or_insert(0.0);
        }
        for (pid, (label, ticks)) in &end.processes {
            let before = match self.start.processes.get(pid) {
                Some((_, before)) => *before,
                None => {
                    let started_after = process_ticks(*pid)
                        .is_some_and(|(_, start)| start >= self.start.uptime_ticks);
                    if !started_after {
                        continue;
                    }
                    0
                }
            };
            *seconds.entry(label.clone()).or_insert(0.0) +=
                ticks.saturating_sub(before) as f64 * tick;
        }
        Usage {
            window_s: end.at.duration_since(self.start.at).as_secs_f64(),
            seconds,
            machine_busy_s: end.machine.0.saturating_sub(self.start.machine.0) as f64 * tick,
            machine_capacity_s: end.machine.1.saturating_sub(self.start.machine.1) as f64 * tick,
        }
    }
}

fn snapshot(selection: &Selection, ticks_per_second: u64) -> Snapshot {
    let mut processes = HashMap::new();
    for (label, pid) in &selection.pids {
        if let Some((ticks, _)) = process_ticks(*pid) {
            processes.insert(*pid, (label.clone(), ticks));
        }
    }
    for name in &selection.names {
        for pid in processes_named(name) {
            if let Some((ticks, _)) = process_ticks(pid) {
                processes.entry(pid).or_insert((name.clone(), ticks));
            }
        }
    }
    Snapshot {
        at: Instant::now(),
        uptime_ticks: uptime_ticks(ticks_per_second),
        processes,
        machine: machine_ticks(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_its_own_cpu() {
        let watch = Watch::start(Selection::parse(&[], &[]).expect("no flags"));
        let started = Instant::now();
        let mut spin = 0u64;
        while started.elapsed().as_millis() < 300 {
            spin = spin.wrapping_add(1);
        }
        let usage = watch.usage();
        assert!(spin > 0);
        assert!(usage.seconds["loadgen"] > 0.1, "{usage:?}");
        assert!(usage.machine_capacity_s >= usage.machine_busy_s);
    }
}
