//! [`EventStream`]: the server-sent events of `GET /api/v1/audit/events/stream`, read message
//! by message ([`Client::stream_events`](crate::Client::stream_events)).

use datastorage_api::stream::StreamedEvent;
use reqwest::Response;

use crate::error::Error;

/// What the stream sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Streamed {
    /// A committed event.
    Event(Box<StreamedEvent>),
    /// This subscriber fell behind and the server skipped this many events: query for them.
    Lagged(u64),
}

/// An open stream. Dropping it unsubscribes.
#[derive(Debug)]
pub struct EventStream {
    response: Response,
    text: String,
}

impl EventStream {
    pub(crate) fn new(response: Response) -> Self {
        Self {
            response,
            text: String::new(),
        }
    }

    /// The next event or lag notice; `None` when the server ended the stream (shutdown).
    /// Comments (the opening `subscribed`, keep-alives) are skipped.
    pub async fn next(&mut self) -> Result<Option<Streamed>, Error> {
        loop {
            while let Some((block, rest)) = split_message(&self.text) {
                let (event, data) = parse_message(block);
                self.text = rest.to_owned();
                match event.as_deref() {
                    Some("audit_event") => {
                        return serde_json::from_str(&data)
                            .map(|e| Some(Streamed::Event(Box::new(e))))
                            .map_err(|e| Error::Stream(format!("audit_event data: {e}")));
                    }
                    Some("lagged") => {
                        let missed = serde_json::from_str::<serde_json::Value>(&data)
                            .ok()
                            .and_then(|v| v["missed"].as_u64())
                            .ok_or_else(|| Error::Stream(format!("lagged data {data:?}")))?;
                        return Ok(Some(Streamed::Lagged(missed)));
                    }
                    // Comments, and messages of kinds a newer server may add.
                    _ => {}
                }
            }
            match self.response.chunk().await.map_err(Error::from_reqwest)? {
                Some(chunk) => self.text.push_str(&String::from_utf8_lossy(&chunk)),
                None => return Ok(None),
            }
        }
    }
}

/// The first complete message of `text` (up to a blank line) and what follows it.
fn split_message(text: &str) -> Option<(&str, &str)> {
    let crlf = text.find("\r\n\r\n").map(|i| (i, 4));
    let lf = text.find("\n\n").map(|i| (i, 2));
    let (at, len) = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some((&text[..at], &text[at + len..]))
}

/// The `event` name and the joined `data` lines of one message.
fn parse_message(block: &str) -> (Option<String>, String) {
    let mut event = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    (event, data.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_at_blank_lines_and_join_their_data() {
        let text = ": subscribed\n\nevent: lagged\ndata: {\"missed\":\ndata: 3}\n\nevent: x";
        let (first, rest) = split_message(text).unwrap();
        assert_eq!(parse_message(first), (None, String::new()));
        let (second, rest) = split_message(rest).unwrap();
        assert_eq!(
            parse_message(second),
            (Some("lagged".into()), "{\"missed\":\n3}".into())
        );
        assert_eq!(split_message(rest), None, "incomplete");
        let (m, _) = split_message("event: a\r\ndata: b\r\n\r\n").unwrap();
        assert_eq!(parse_message(m), (Some("a".into()), "b".into()));
    }
}
