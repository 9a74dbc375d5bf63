//! How `cairn run` and `cairn runs logs` print: task output lines prefixed with the task
//! name (coloured on a terminal), a live status line of the DAG (terminal only), and a
//! summary table at the end. `NO_COLOR` turns colours off.

use std::io::{IsTerminal, Write};

use anstyle::{AnsiColor, Style};
use cairn_client::run::RunTaskStatus;

const PALETTE: [AnsiColor; 6] = [
    AnsiColor::Cyan,
    AnsiColor::Magenta,
    AnsiColor::Blue,
    AnsiColor::Yellow,
    AnsiColor::Green,
    AnsiColor::BrightCyan,
];

/// The terminal (or pipe) a command prints to.
pub struct Terminal {
    tty: bool,
    color: bool,
    status: bool,
    out: std::io::Stdout,
}

impl Default for Terminal {
    fn default() -> Self {
        Self::new()
    }
}

impl Terminal {
    pub fn new() -> Terminal {
        let tty = std::io::stdout().is_terminal();
        let color = tty && std::env::var_os("NO_COLOR").is_none();
        Terminal {
            tty,
            color,
            status: false,
            out: std::io::stdout(),
        }
    }

    fn paint(&self, style: Style, text: &str) -> String {
        if self.color {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_string()
        }
    }

    /// One line of a task's output.
    pub fn task_line(&mut self, task: &str, index: usize, width: usize, line: &str) {
        self.clear_status();
        let style = Style::new().fg_color(Some(PALETTE[index % PALETTE.len()].into()));
        let prefix = self.paint(style, &format!("{task:<width$} │"));
        let _ = writeln!(self.out, "{prefix} {line}");
    }

    /// A line of Cairn's own (not task output).
    pub fn note(&mut self, line: &str) {
        self.clear_status();
        let style = Style::new().dimmed();
        let _ = writeln!(self.out, "{}", self.paint(style, line));
    }

    /// Whether [`Terminal::status`] shows anything (a terminal).
    pub fn has_status_line(&self) -> bool {
        self.tty
    }

    /// Replaces the live status line (terminals only).
    pub fn status(&mut self, line: &str) {
        if !self.tty {
            return;
        }
        let _ = write!(self.out, "\r\x1b[2K{line}");
        let _ = self.out.flush();
        self.status = true;
    }

    pub fn clear_status(&mut self) {
        if self.status {
            let _ = write!(self.out, "\r\x1b[2K");
            self.status = false;
        }
    }

    /// The glyph of a task status, coloured.
    pub fn glyph(&self, status: RunTaskStatus, waiting_approval: bool) -> String {
        let (g, c) = match status {
            _ if waiting_approval => ("?", AnsiColor::Yellow),
            RunTaskStatus::NotStarted => ("·", AnsiColor::BrightBlack),
            RunTaskStatus::Running => ("▶", AnsiColor::Blue),
            RunTaskStatus::Success => ("✓", AnsiColor::Green),
            RunTaskStatus::Failed => ("✗", AnsiColor::Red),
            RunTaskStatus::Stopped | RunTaskStatus::Cancelled => ("■", AnsiColor::Yellow),
            RunTaskStatus::Skipped => ("-", AnsiColor::BrightBlack),
        };
        self.paint(Style::new().fg_color(Some(c.into())), g)
    }

    /// A table with a header row; columns padded to their widest cell.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.clear_status();
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for r in rows {
            for (i, c) in r.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(visible_len(c));
                }
            }
        }
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let pad = widths[i].saturating_sub(visible_len(c));
                    format!("{c}{}", " ".repeat(pad))
                })
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let head = line(header.iter().map(|h| h.to_string()).collect());
        let _ = writeln!(self.out, "{}", self.paint(Style::new().bold(), &head));
        for r in rows {
            let _ = writeln!(self.out, "{}", line(r.clone()));
        }
    }

    pub fn result_word(&self, word: &str) -> String {
        let color = match word {
            "success" => AnsiColor::Green,
            "failed" => AnsiColor::Red,
            "stopped" | "cancelled" => AnsiColor::Yellow,
            _ => return word.to_string(),
        };
        self.paint(Style::new().fg_color(Some(color.into())).bold(), word)
    }
}

/// Characters of `s` that are not part of an ANSI escape sequence.
fn visible_len(s: &str) -> usize {
    let mut n = 0;
    let mut esc = false;
    for c in s.chars() {
        if esc {
            if c.is_ascii_alphabetic() {
                esc = false;
            }
        } else if c == '\x1b' {
            esc = true;
        } else {
            n += 1;
        }
    }
    n
}

/// `1.2s`, `3m04s`, `1h02m`.
pub fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(chrono::Duration::milliseconds(1234)), "1.2s");
        assert_eq!(duration(chrono::Duration::seconds(184)), "3m04s");
        assert_eq!(duration(chrono::Duration::seconds(3720)), "1h02m");
    }

    #[test]
    fn escapes_do_not_count_as_width() {
        assert_eq!(visible_len("\x1b[32m✓\x1b[0m"), 1);
        assert_eq!(visible_len("abc"), 3);
    }
}
