//! An incremental parser of `text/event-stream` (server-sent events) as the WHATWG HTML
//! spec defines it: `id`, `event`, `data` (multi-line) and `retry` fields, `:` comment
//! lines, LF, CRLF and lone-CR line ends, and events split anywhere across chunks. It owns
//! no I/O: feed it the body's chunks as they arrive and take the complete events out.

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The last event id seen on the stream when this event was dispatched (ids persist
    /// across events until a new `id:` line changes them).
    pub id: Option<String>,
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// A `retry:` reconnection delay in milliseconds sent with this event.
    pub retry: Option<u64>,
}

/// Parser state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The previous chunk ended with CR: a leading LF of the next one belongs to it.
    after_cr: bool,
    /// Still at the very start of the stream (a UTF-8 BOM there is dropped).
    started: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    retry: Option<u64>,
    last_id: Option<String>,
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::default()
    }

    /// The id a reconnecting client sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Feeds one chunk of the body and returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_ended(&line) {
                events.push(event);
            }
            if rest[end] == b'\r' {
                match rest.get(end + 1) {
                    Some(b'\n') => rest = &rest[end + 2..],
                    Some(_) => rest = &rest[end + 1..],
                    None => {
                        self.after_cr = true;
                        rest = &[];
                    }
                }
            } else {
                rest = &rest[end + 1..];
            }
        }
        self.line.extend_from_slice(rest);
        events
    }

    fn line_ended(&mut self, raw: &[u8]) -> Option<SseEvent> {
        let mut raw = raw;
        if !self.started {
            self.started = true;
            raw = raw.strip_prefix("\u{feff}".as_bytes()).unwrap_or(raw);
        }
        if raw.is_empty() {
            return self.dispatch();
        }
        let line = String::from_utf8_lossy(raw);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let retry = self.retry.take();
        if !self.has_data {
            self.data.clear();
            return None;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        Some(SseEvent {
            id: self.last_id.clone(),
            event: event.filter(|e| !e.is_empty()),
            data,
            retry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        chunks.iter().flat_map(|c| parser.push(c)).collect()
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn an_event_is_its_fields_up_to_a_blank_line() {
        let events = parse_all(&[b"id: 7\nevent: run\ndata: {\"a\":1}\n\n"]);
        assert_eq!(
            events,
            vec![SseEvent {
                id: Some("7".into()),
                event: Some("run".into()),
                data: "{\"a\":1}".into(),
                retry: None,
            }]
        );
    }

    #[test]
    fn data_lines_join_with_newlines() {
        let events = parse_all(&[b"data: first\ndata:second\ndata\ndata:  two spaces\n\n"]);
        assert_eq!(data(&events), vec!["first\nsecond\n\n two spaces"]);
    }

    #[test]
    fn comments_are_keep_alives_and_dispatch_nothing() {
        let events = parse_all(&[b": ping\n\n:\n\ndata: x\n: in the middle\n\n"]);
        assert_eq!(data(&events), vec!["x"]);
    }

    #[test]
    fn crlf_and_lone_cr_end_lines_like_lf() {
        let events = parse_all(&[b"data: a\r\n\r\ndata: b\r\rdata: c\n\n"]);
        assert_eq!(data(&events), vec!["a", "b", "c"]);
    }

    #[test]
    fn events_split_at_every_byte_parse_the_same() {
        let body: &[u8] =
            b"id: 1\r\ndata: one\r\n\r\n: keep\r\nid: 2\r\ndata: two\r\ndata: lines\r\n\r\n";
        let whole = parse_all(&[body]);
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(parse_all(&bytes), whole);
        assert_eq!(data(&whole), vec!["one", "two\nlines"]);
        assert_eq!(whole[1].id.as_deref(), Some("2"));
    }

    #[test]
    fn a_crlf_split_between_chunks_is_one_line_end() {
        let events = parse_all(&[b"data: a\r", b"\n\r", b"\ndata: b\n\n"]);
        assert_eq!(data(&events), vec!["a", "b"]);
    }

    #[test]
    fn the_last_id_persists_and_is_reported_for_resume() {
        let mut parser = SseParser::new();
        let events = parser.push(b"id: 3\ndata: a\n\ndata: b\n\n");
        assert_eq!(events[1].id.as_deref(), Some("3"));
        assert_eq!(parser.last_event_id(), Some("3"));
    }

    #[test]
    fn an_event_without_data_is_not_dispatched_but_its_id_counts() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"id: 9\nevent: noop\n\n").is_empty());
        assert_eq!(parser.last_event_id(), Some("9"));
        let events = parser.push(b"data: x\n\n");
        assert_eq!(
            events[0].event, None,
            "the event type resets after a dispatch"
        );
    }

    #[test]
    fn an_unterminated_event_is_held_back() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: half").is_empty());
        assert!(parser.push(b"\n").is_empty());
        assert_eq!(data(&parser.push(b"\n")), vec!["half"]);
    }

    #[test]
    fn retry_takes_digits_only_and_unknown_fields_are_ignored() {
        let events = parse_all(&[b"retry: 1500\nfoo: bar\ndata: x\n\nretry: soon\ndata: y\n\n"]);
        assert_eq!(events[0].retry, Some(1500));
        assert_eq!(events[1].retry, None);
        assert_eq!(data(&events), vec!["x", "y"]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped() {
        let events = parse_all(&["\u{feff}data: x\n\n".as_bytes()]);
        assert_eq!(data(&events), vec!["x"]);
    }
}
