//! How `cairn run` and `cairn runs logs` print: task output lines prefixed with the task
//! name (coloured on a terminal), a live status line of the DAG (terminal only), and a
//! summary table at the end. `NO_COLOR` turns colours off.
//!
//! Step output is not trusted to drive the terminal: [`escape_controls`] keeps only its
//! colours (SGR sequences) and tabs and shows every other control character (`^[`,
//! `^G`, …), and [`LineSplitter`] cuts it into lines of at most [`MAX_LINE`] bytes in
//! linear time (security review L4).

use std::borrow::Cow;
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
        let task = escape_controls(task);
        let prefix = self.paint(style, &format!("{task:<width$} │"));
        let _ = writeln!(self.out, "{prefix} {}", escape_controls(line));
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

/// `line` with its control characters shown rather than obeyed: `ESC` as `^[`, other
/// C0 characters in caret notation (`^G`, `^M`), DEL as `^?` and C1 characters as
/// `\x9b`; only tabs and colour sequences (`ESC [ digits;… m`) pass as they are, so a
/// step cannot retitle the window, clear the screen or move the cursor.
pub fn escape_controls(line: &str) -> Cow<'_, str> {
    let is_control = |c: char| (c.is_control() && c != '\t') || c == '\u{7f}';
    if !line.contains(is_control) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    let mut rest = line;
    while let Some(c) = rest.chars().next() {
        if c == '\x1b'
            && let Some(len) = sgr_len(rest)
        {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        match c {
            '\t' => out.push(c),
            '\u{0}'..='\u{1f}' => {
                out.push('^');
                out.push(char::from(c as u8 + b'@'));
            }
            '\u{7f}' => out.push_str("^?"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// The length of the colour (SGR) sequence `ESC [ [0-9;:]* m` that `s` starts with.
fn sgr_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix("\x1b[")?;
    let params = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';' || *b == b':')
        .count();
    (body.as_bytes().get(params) == Some(&b'm')).then_some(2 + params + 1)
}

/// The longest line [`LineSplitter`] gives; longer ones are cut in pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;

/// Cuts a byte stream into lines (without their `\n`), scanning each byte once: the
/// bytes after the last newline wait for the next chunk, and a line that reaches
/// [`MAX_LINE`] bytes is given in pieces (cut before a UTF-8 character, not inside one).
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The lines completed by `chunk`.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let room = MAX_LINE - self.partial.len();
            let window = &rest[..rest.len().min(room)];
            if let Some(pos) = window.iter().position(|b| *b == b'\n') {
                self.partial.extend_from_slice(&window[..pos]);
                lines.push(self.take(self.partial.len()));
                rest = &rest[pos + 1..];
            } else {
                self.partial.extend_from_slice(window);
                rest = &rest[window.len()..];
                if self.partial.len() == MAX_LINE {
                    let cut = utf8_cut(&self.partial);
                    lines.push(self.take(cut));
                }
            }
        }
        lines
    }

    /// What is left without a final newline, if anything.
    pub fn finish(mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| self.take(self.partial.len()))
    }

    /// The first `n` bytes of the pending line, as text.
    fn take(&mut self, n: usize) -> String {
        let line = String::from_utf8_lossy(&self.partial[..n]).into_owned();
        self.partial.drain(..n);
        line
    }
}

/// Where to cut a full line so that no UTF-8 character is split: before the last
/// character when it is incomplete.
fn utf8_cut(bytes: &[u8]) -> usize {
    let start = bytes.len().saturating_sub(3);
    for i in (start..bytes.len()).rev() {
        let b = bytes[i];
        if b & 0xC0 != 0x80 {
            let need = match b {
                0xF0..=0xF7 => 4,
                0xE0..=0xEF => 3,
                0xC0..=0xDF => 2,
                _ => 1,
            };
            return if i + need > bytes.len() && i > 0 {
                i
            } else {
                bytes.len()
            };
        }
    }
    bytes.len()
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

    #[test]
    fn control_sequences_are_shown_not_obeyed_but_colours_and_tabs_pass() {
        assert_eq!(
            escape_controls("\x1b]0;TITLE-HIJACK\x07\x1b[2J\x1b[H"),
            "^[]0;TITLE-HIJACK^G^[[2J^[[H"
        );
        assert_eq!(
            escape_controls("\x1b[1;32mok\x1b[0m\tdone"),
            "\x1b[1;32mok\x1b[0m\tdone"
        );
        assert_eq!(escape_controls("a\rb\x7f\u{9b}2Jé"), "a^Mb^?\\x9b2Jé");
        assert_eq!(escape_controls("\x1b[38:5:1m"), "\x1b[38:5:1m");
        assert_eq!(escape_controls("\x1b[5A"), "^[[5A");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed("plain")));
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\nb"), ["a"]);
        assert_eq!(s.push(b"c\n\nd"), ["bc", ""]);
        assert_eq!(s.finish().as_deref(), Some("d"));
        assert_eq!(LineSplitter::default().finish(), None);
    }

    #[test]
    fn a_long_line_is_cut_in_pieces_in_linear_time() {
        let mut s = LineSplitter::default();
        let mut pieces = Vec::new();
        let started = std::time::Instant::now();
        // 16 MiB without a newline, in 8 KiB chunks: rescanning the pending bytes at
        // each chunk (16 GB of reads) would take minutes here.
        let chunk = vec![b'x'; 8192];
        for _ in 0..2048 {
            pieces.extend(s.push(&chunk));
        }
        pieces.extend(s.push(b"\n"));
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(pieces.len(), 256 + 1);
        assert!(pieces[..256].iter().all(|p| p.len() == MAX_LINE));
        assert_eq!(pieces[256], "");
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let mut s = LineSplitter::default();
        let mut text = "x".repeat(MAX_LINE - 1).into_bytes();
        text.extend_from_slice("é\n".as_bytes());
        let lines = s.push(&text);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE - 1);
        assert_eq!(lines[1], "é");
    }
}
