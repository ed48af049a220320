//! Measuring a run: wall and CPU time (`getrusage`), the figures per message, medians
//! over runs, and a plain text table for the results.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Wall and CPU time from its start until [`Stopwatch::stop`].
pub struct Stopwatch {
    who: libc::c_int,
    started: Instant,
    cpu: Duration,
}

impl Stopwatch {
    /// Starts timing; `who` is `RUSAGE_SELF` or `RUSAGE_CHILDREN`.
    pub fn start(who: libc::c_int) -> Result<Self> {
        Ok(Stopwatch {
            who,
            cpu: cpu_time(who)?,
            started: Instant::now(),
        })
    }

    /// The wall and CPU time since the start.
    pub fn stop(&self) -> Result<(Duration, Duration)> {
        let wall = self.started.elapsed();
        Ok((wall, cpu_time(self.who)?.saturating_sub(self.cpu)))
    }
}

/// User plus system CPU time of `who` (`RUSAGE_SELF` or `RUSAGE_CHILDREN`).
pub fn cpu_time(who: libc::c_int) -> Result<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes only into the struct it is given, which is big enough.
    let rc = unsafe { libc::getrusage(who, usage.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("getrusage");
    }
    // SAFETY: zero is a valid rusage, and getrusage succeeded.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// The CPUs this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One timed run of a sender into a sink.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub messages: usize,
    pub wall: Duration,
    /// CPU time of the sending process.
    pub cpu: Duration,
    /// CPU time of the sink.
    pub sink_cpu: Duration,
    /// Messages the sink counted as received.
    pub accepted: u64,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.wall.as_secs_f64()
    }

    pub fn cpu_us_per_message(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.messages as f64
    }

    pub fn sink_cpu_us_per_message(&self) -> f64 {
        self.sink_cpu.as_secs_f64() * 1e6 / self.messages as f64
    }

    /// The run's figures as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "wall_seconds": self.wall.as_secs_f64(),
            "messages_per_second": self.rate(),
            "cpu_us_per_message": self.cpu_us_per_message(),
            "sink_cpu_us_per_message": self.sink_cpu_us_per_message(),
            "accepted_by_sink": self.accepted,
        })
    }
}

/// The median of each figure over several runs.
#[derive(Debug, Clone)]
pub struct Medians {
    pub runs: Vec<Run>,
    pub rate: f64,
    pub wall_s: f64,
    pub cpu_us: f64,
    pub sink_cpu_us: f64,
    pub accepted: f64,
}

impl Medians {
    pub fn of(runs: Vec<Run>) -> Medians {
        let of = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        Medians {
            rate: of(Run::rate),
            wall_s: of(|r| r.wall.as_secs_f64()),
            cpu_us: of(Run::cpu_us_per_message),
            sink_cpu_us: of(Run::sink_cpu_us_per_message),
            accepted: of(|r| r.accepted as f64),
            runs,
        }
    }

    /// The medians, then every run, as the fields of a JSON object.
    pub fn to_json(&self) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        out.insert("messages_per_second".into(), json!(self.rate));
        out.insert("wall_seconds".into(), json!(self.wall_s));
        out.insert("cpu_us_per_message".into(), json!(self.cpu_us));
        out.insert("sink_cpu_us_per_message".into(), json!(self.sink_cpu_us));
        out.insert("accepted_by_sink".into(), json!(self.accepted));
        out.insert(
            "runs".into(),
            Value::Array(self.runs.iter().map(Run::to_json).collect()),
        );
        out
    }
}

/// Runs every contender once untimed with `warmup` messages (none when 0), then
/// `rounds` timed rounds of `messages` each, every round running each contender once in
/// a rotated order so none always runs first or last; progress goes to stderr. Returns
/// each contender's medians, in the order of `contenders`.
pub fn interleaved<C: Copy>(
    contenders: &[C],
    name: impl Fn(C) -> String,
    warmup: usize,
    rounds: usize,
    messages: usize,
    mut run: impl FnMut(C, usize) -> Result<Run>,
) -> Result<Vec<Medians>> {
    if warmup > 0 {
        for &c in contenders {
            let r = run(c, warmup)?;
            eprintln!("warm-up   {:<18} {:>8.0} msg/s", name(c), r.rate());
        }
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        for k in 0..contenders.len() {
            let at = (k + round) % contenders.len();
            let r = run(contenders[at], messages)?;
            eprintln!(
                "round {}/{} {:<18} {:>8.0} msg/s  {:>6.1} µs CPU/msg  {:>6.1} µs sink CPU/msg",
                round + 1,
                rounds,
                name(contenders[at]),
                r.rate(),
                r.cpu_us_per_message(),
                r.sink_cpu_us_per_message()
            );
            runs[at].push(r);
        }
    }
    Ok(runs.into_iter().map(Medians::of).collect())
}

/// The median; the mean of the middle two for an even count. `values` must not be empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// A text table: the first column left-aligned, the others right-aligned, each as wide
/// as its widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table, one line per row, each ending in a line feed.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count();
                match widths.get_mut(i) {
                    Some(width) => *width = (*width).max(w),
                    None => widths.push(w),
                }
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i == 0 {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str("  ");
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(["mode", "msg/s"]);
        t.row(["ed25519", "9"]);
        t.row(["off", "12345"]);
        assert_eq!(
            t.render(),
            "mode     msg/s\ned25519      9\noff      12345\n"
        );
    }

    #[test]
    fn cpu_time_grows() {
        let before = cpu_time(libc::RUSAGE_SELF).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        assert!(cpu_time(libc::RUSAGE_SELF).unwrap() >= before, "{x}");
    }
}
