//! Logs through tracing: readable on a terminal, JSON lines otherwise.
//!
//! `NESTFLUX_LOG_FORMAT=json|text` forces a format; `NESTFLUX_LOG` (or `RUST_LOG`) sets the
//! filter, default `info`. Secrets and tokens are never passed to a log call.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::json_string;

/// Installs the global subscriber. Calling it twice is harmless.
pub fn init() {
    let filter = std::env::var("NESTFLUX_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let json = match std::env::var("NESTFLUX_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.event_format(JsonLines::new()).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// The JSON line format: tracing-subscriber's (`json()`, fields flattened, no span
/// fields), with a faster path for the two lines written for every request or write, the
/// access line and the audit line: together about 7 % of a POST's CPU in perf, most of it
/// the stock format writing field by field through `fmt::Write` and re-checking the UTF-8
/// of every piece. Their fields are all NestFlux's own (strings, integers, floats), so each
/// line is put together in one buffer exactly as the stock format writes it (the
/// `same_line_as_the_stock_format` test compares them byte for byte).
struct JsonLines {
    stock: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
}

/// The targets of the lines [`JsonLines`] writes itself.
const FAST_TARGETS: [&str; 2] = ["nestflux::request", "audit"];

impl JsonLines {
    fn new() -> Self {
        Self {
            stock: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false),
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        // Inside a span the stock format adds the span list: leave those lines to it.
        if !FAST_TARGETS.contains(&meta.target()) || ctx.lookup_current().is_some() {
            return self.stock.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(768);
        line.push_str("{\"timestamp\":\"");
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        let _ = write!(line, "{now}");
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push('"');
        event.record(&mut Fields(&mut line));
        line.push_str(",\"target\":");
        json_string::push(&mut line, meta.target());
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Writes each field as `,"name":value`, as tracing-serde does: strings and `Debug` values
/// as JSON strings, numbers and booleans as themselves.
struct Fields<'a>(&'a mut String);

impl Fields<'_> {
    fn key(&mut self, field: &tracing::field::Field) {
        self.0.push(',');
        json_string::push(self.0, field.name());
        self.0.push(':');
    }

    /// `json`: the value already written as JSON.
    fn value(&mut self, field: &tracing::field::Field, json: &str) {
        self.key(field);
        self.0.push_str(json);
    }
}

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.key(field);
        json_string::push(self.0, value);
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.value(field, itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.value(field, itoa::Buffer::new().format(value));
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        // serde_json's float format (and `null` for NaN and the infinities), as tracing-serde.
        let json = serde_json::to_string(&value).unwrap_or_else(|_| "null".into());
        self.value(field, &json);
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.value(field, if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        json_string::push(self.0, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::ErrorKind::Other)?
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` writes through `format`, each with its timestamp's value left out.
    fn lines<F>(format: F, emit: fn()) -> Vec<String>
    where
        F: tracing_subscriber::fmt::FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::DefaultFields,
            > + Send
            + Sync
            + 'static,
    {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().map(|b| b.clone()).unwrap_or_default())
            .unwrap_or_default();
        text.lines()
            .map(|l| {
                // {"timestamp":"2026-11-30T13:13:38.525081Z",…
                assert_eq!(&l[..14], r#"{"timestamp":""#, "{l}");
                format!("{}{}", &l[..14], &l[14 + 27..])
            })
            .collect()
    }

    fn emit() {
        let awkward = "quote \" backslash \\ newline \n tab \t nul \u{0} bell \u{7} é 😀 \u{2028}";
        tracing::info!(
            target: "audit",
            seq = 7_i64,
            at = "2026-11-30T01:02:03.000004Z",
            actor = awkward,
            details = r#"{"fields":["title"]}"#,
            hash = "ab",
            "audit"
        );
        for latency_ms in [0.0, 1.0, 2.5, 1e-7, 123_456.789, f64::NAN] {
            tracing::info!(
                target: "nestflux::request",
                method = "POST",
                route = "/api/notes/{id}",
                status = 201_u16,
                latency_ms,
                request_id = awkward,
                subject = "-",
            );
        }
        tracing::warn!(target: "nestflux::request", ok = true, debug = ?awkward, n = -3_i64, "with {} message", "a");
        // Not a fast target: the stock format writes it in both.
        tracing::info!(target: "nestflux::other", x = 1, "other");
    }

    #[test]
    fn same_line_as_the_stock_format() {
        let stock = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(false);
        let ours = lines(JsonLines::new(), emit);
        assert_eq!(ours.len(), 9);
        assert_eq!(ours, lines(stock, emit));
        assert!(
            ours[0].starts_with(r#"{"timestamp":"","level":"INFO","message":"audit","seq":7,"#),
            "{}",
            ours[0]
        );
    }
}
