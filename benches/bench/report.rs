//! The result tables: aligned text for the terminal and the same as markdown.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::Sample;
use crate::procs::System;

pub struct WriteRow {
    pub system: System,
    pub nodes: usize,
    pub clients: usize,
    pub sample: Sample,
}

pub struct ReadRow {
    pub system: System,
    pub nodes: usize,
    pub serializable: bool,
    /// "leader" or "follower".
    pub via: &'static str,
    pub sample: Sample,
}

pub struct FailoverRow {
    pub system: System,
    pub trials: Vec<Duration>,
    pub errors: Vec<String>,
}

#[derive(Default)]
pub struct Results {
    pub writes: Vec<WriteRow>,
    pub reads: Vec<ReadRow>,
    pub failovers: Vec<FailoverRow>,
    /// Scenarios that could not run, with why.
    pub failed: Vec<String>,
}

fn scenario(system: System, nodes: usize) -> String {
    format!(
        "{} {} node{}",
        system.name(),
        nodes,
        if nodes == 1 { "" } else { "s" }
    )
}

/// A table: header and rows of cells.
struct Table {
    head: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Numeric columns are right-aligned.
    fn right(&self) -> Vec<bool> {
        (0..self.head.len())
            .map(|i| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        let c = r[i].trim_end_matches('x');
                        c.is_empty() || c == "-" || c.parse::<f64>().is_ok()
                    })
            })
            .collect()
    }

    fn text(&self) -> String {
        let right = self.right();
        let widths: Vec<usize> = (0..self.head.len())
            .map(|i| {
                self.rows
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.head[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = " ".repeat(widths[i].saturating_sub(c.chars().count()));
                if right[i] {
                    let _ = write!(s, "{pad}{c}  ");
                } else {
                    let _ = write!(s, "{c}{pad}  ");
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(self.head.clone());
        for r in &self.rows {
            out += &line(r.iter().map(String::as_str).collect());
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", self.head.join(" | "));
        let align: Vec<&str> = self
            .right()
            .into_iter()
            .map(|r| if r { "---:" } else { "---" })
            .collect();
        out += &format!("| {} |\n", align.join(" | "));
        for r in &self.rows {
            out += &format!("| {} |\n", r.join(" | "));
        }
        out
    }
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

fn ratio(cairn: f64, etcd: Option<f64>) -> String {
    match etcd {
        Some(e) if e > 0.0 => format!("{:.2}x", cairn / e),
        _ => "n/a".into(),
    }
}

fn errors(s: &Sample) -> String {
    s.errors.to_string()
}

impl Results {
    fn write_table(&self) -> Table {
        let mut rows = Vec::new();
        for w in &self.writes {
            let etcd = self
                .writes
                .iter()
                .find(|o| o.system == System::Etcd && o.nodes == w.nodes && o.clients == w.clients)
                .map(|o| o.sample.per_sec());
            let rate = w.sample.per_sec();
            let (vs, target) = match w.system {
                System::Etcd => (String::new(), String::new()),
                System::Cairn => {
                    let mut t = Vec::new();
                    let floor = match (w.nodes, w.clients) {
                        (1, 64) => Some(2000.0),
                        (3, 64) => Some(1000.0),
                        _ => None,
                    };
                    if let Some(f) = floor {
                        t.push(format!(
                            "≥ {f:.0}/s {}",
                            if rate >= f { "met" } else { "MISSED" }
                        ));
                    }
                    if let Some(e) = etcd {
                        t.push(format!(
                            "≥ etcd {}",
                            if rate >= e { "met" } else { "MISSED" }
                        ));
                    }
                    (ratio(rate, etcd), t.join(", "))
                }
            };
            rows.push(vec![
                scenario(w.system, w.nodes),
                w.clients.to_string(),
                format!("{rate:.0}"),
                ms(w.sample.pct_ms(0.50)),
                ms(w.sample.pct_ms(0.99)),
                errors(&w.sample),
                vs,
                target,
            ]);
        }
        Table {
            head: vec![
                "scenario",
                "clients",
                "writes/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "cairn/etcd",
                "target",
            ],
            rows,
        }
    }

    fn read_table(&self) -> Table {
        let mut rows = Vec::new();
        for r in &self.reads {
            let etcd = self
                .reads
                .iter()
                .find(|o| {
                    o.system == System::Etcd
                        && o.nodes == r.nodes
                        && o.serializable == r.serializable
                        && o.via == r.via
                })
                .map(|o| o.sample.per_sec());
            let rate = r.sample.per_sec();
            rows.push(vec![
                scenario(r.system, r.nodes),
                if r.serializable {
                    "serializable".into()
                } else {
                    "linearizable".into()
                },
                r.via.to_string(),
                format!("{rate:.0}"),
                ms(r.sample.pct_ms(0.50)),
                ms(r.sample.pct_ms(0.99)),
                errors(&r.sample),
                match r.system {
                    System::Cairn => ratio(rate, etcd),
                    System::Etcd => String::new(),
                },
            ]);
        }
        Table {
            head: vec![
                "scenario",
                "read",
                "via",
                "reads/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "cairn/etcd",
            ],
            rows,
        }
    }

    fn failover_table(&self) -> Table {
        let mut rows = Vec::new();
        for f in &self.failovers {
            let mut t: Vec<f64> = f.trials.iter().map(Duration::as_secs_f64).collect();
            t.sort_by(f64::total_cmp);
            let s = |v: Option<&f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            let mean = (!t.is_empty()).then(|| t.iter().sum::<f64>() / t.len() as f64);
            let within = t.iter().filter(|v| **v <= 3.0).count();
            rows.push(vec![
                scenario(f.system, 3),
                format!("{}", t.len()),
                s(t.first()),
                s(t.get((t.len().max(1) - 1) / 2)),
                s(mean.as_ref()),
                s(t.last()),
                f.errors.len().to_string(),
                match f.system {
                    System::Cairn => format!(
                        "≤ 3 s in {within}/{} trials{}",
                        t.len() + f.errors.len(),
                        if within == t.len() + f.errors.len() && within > 0 {
                            " (met)"
                        } else {
                            " (MISSED)"
                        }
                    ),
                    System::Etcd => String::new(),
                },
            ]);
        }
        Table {
            head: vec![
                "scenario", "trials", "min s", "p50 s", "mean s", "max s", "failed", "target",
            ],
            rows,
        }
    }

    /// The three tables as aligned text, then the same as markdown.
    pub fn render(&self, context: &str) -> String {
        let (w, r, f) = (self.write_table(), self.read_table(), self.failover_table());
        let mut out = String::new();
        out += "\n== Writes (256-byte values, distinct keys, fsync on)\n";
        out += &w.text();
        out += "\n== Reads (1 client, existing keys)\n";
        out += &r.text();
        out += "\n== Leader failover (kill -9 leader -> first acknowledged write via a survivor)\n";
        out += &f.text();
        for e in &self.failed {
            out += &format!("\nFAILED: {e}\n");
        }
        out += "\n---- markdown ----\n\n";
        out += context;
        out += "\n### Writes (256-byte values, distinct keys, fsync on)\n\n";
        out += &w.markdown();
        out += "\n### Reads (1 client, existing keys)\n\n";
        out += &r.markdown();
        out += "\n### Leader failover (`kill -9` leader → first acknowledged write through a survivor)\n\n";
        out += &f.markdown();
        for e in &self.failed {
            out += &format!("\n**Failed:** {e}\n");
        }
        out
    }
}
