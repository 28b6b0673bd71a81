//! The request log: one line per request, in the configuration users run (`info`).
//!
//! Formatted here by hand rather than as a `tracing` event: the line has six fixed fields, and
//! `tracing-subscriber`'s general formatter spent more on them than the rest of a `/me` request
//! (BENCHMARKS.md, "The request log"). The output keeps `tracing-subscriber`'s shapes — the text
//! line and the JSON object (`timestamp`, `level`, `fields`, `target`) — so both kinds of line read
//! alike, and `RUST_LOG` still decides: the line is written only when `tessera::request` is
//! enabled at `info`. The line goes to the background writer ([`LogSink`]), never to stderr from
//! the request's thread.

use crate::support::logging::{LineFormat, LogSink};
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime};

/// Where request lines go, and in which format. Off when there is nowhere to write (tests).
#[derive(Debug, Clone)]
pub struct AccessLog {
    sink: Option<LogSink>,
    format: LineFormat,
}

/// What one request line says. Every string is ours — a route template, a base64url id, and a
/// method hyper has already checked is an HTTP token (no quotes, backslashes or controls); the
/// method is escaped all the same, being the one that came from the client.
pub(super) struct RequestLine<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub elapsed: Duration,
    /// When the request finished, on the monotonic clock: orders the line among other threads'.
    pub finished: Instant,
    pub request_id: &'a str,
    /// The client's address: the TCP peer.
    pub client: std::net::IpAddr,
}

impl AccessLog {
    /// Call it after the `tracing` subscriber is installed: whether `RUST_LOG` wants request
    /// lines is asked once, here. The filter cannot change while the process runs, and asking
    /// the subscriber on every request showed in profiles.
    pub fn new(sink: LogSink, format: LineFormat) -> Self {
        let wanted = tracing::enabled!(target: "tessera::request", tracing::Level::INFO);
        Self {
            sink: wanted.then_some(sink),
            format,
        }
    }

    pub fn off() -> Self {
        Self {
            sink: None,
            format: LineFormat::Text,
        }
    }

    pub(super) fn record(&self, line: &RequestLine<'_>) {
        let Some(sink) = &self.sink else {
            return;
        };
        let now = SystemTime::now();
        // Rendered straight into the writer's queue: no buffer, no copy.
        sink.send_rendered(line.finished, |out| render(out, self.format, now, line));
    }
}

fn render(out: &mut Vec<u8>, format: LineFormat, now: SystemTime, line: &RequestLine<'_>) {
    let micros = u64::try_from(line.elapsed.as_micros()).unwrap_or(u64::MAX);
    // Room for the whole line at once; only the method's length is not ours.
    out.reserve(192 + line.method.len());
    RENDERING.with_borrow_mut(|rendering| {
        if format == LineFormat::Json {
            out.extend_from_slice(br#"{"timestamp":""#);
        }
        rendering.timestamp(out, now);
        out.extend_from_slice(rendering.middle(format, line));
    });
    milliseconds(out, micros);
    match format {
        LineFormat::Text => {
            out.extend_from_slice(b" request_id=");
            out.extend_from_slice(line.request_id.as_bytes());
            out.extend_from_slice(b" client=");
            address(out, line.client);
        }
        LineFormat::Json => {
            out.extend_from_slice(br#","request_id":""#);
            out.extend_from_slice(line.request_id.as_bytes());
            out.extend_from_slice(br#"","client":""#);
            address(out, line.client);
            out.extend_from_slice(br#""},"target":"tessera::request"}"#);
        }
    }
    out.push(b'\n');
}

/// Between the timestamp and the latency, what a line says depends only on its format, method,
/// route and status — which most requests in a row share.
fn write_middle(out: &mut Vec<u8>, format: LineFormat, line: &RequestLine<'_>) {
    match format {
        LineFormat::Text => {
            out.extend_from_slice(b"  INFO tessera::request: request method=");
            escaped(out, line.method);
            out.extend_from_slice(b" route=\"");
            out.extend_from_slice(line.route.as_bytes());
            out.extend_from_slice(b"\" status=");
            decimal(out, u64::from(line.status));
            out.extend_from_slice(b" latency_ms=");
        }
        LineFormat::Json => {
            out.extend_from_slice(br#"","level":"INFO","fields":{"message":"request","method":""#);
            escaped(out, line.method);
            out.extend_from_slice(br#"","route":""#);
            out.extend_from_slice(line.route.as_bytes());
            out.extend_from_slice(br#"","status":"#);
            decimal(out, u64::from(line.status));
            out.extend_from_slice(br#","latency_ms":"#);
        }
    }
}

thread_local! {
    static RENDERING: std::cell::RefCell<Rendering> = const {
        std::cell::RefCell::new(Rendering {
            second: u64::MAX,
            second_text: String::new(),
            middle_of: None,
            middle: Vec::new(),
        })
    };
}

/// What this thread rendered last, kept for its next line: requests come many to a second, and
/// mostly to the same route with the same answer.
struct Rendering {
    /// The last second formatted, as `2026-11-27T12:00:00`.
    second: u64,
    second_text: String,
    /// The format, method, route and status that `middle` was written for.
    middle_of: Option<(LineFormat, String, String, u16)>,
    middle: Vec<u8>,
}

impl Rendering {
    /// `2026-11-27T12:00:00.123456Z`, as `tracing-subscriber` writes it.
    fn timestamp(&mut self, out: &mut Vec<u8>, now: SystemTime) {
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let second = since_epoch.as_secs();
        if self.second != second {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(second);
            self.second_text = humantime::format_rfc3339_seconds(whole).to_string();
            self.second_text.pop(); // the `Z`, written after the fraction
            self.second = second;
        }
        out.extend_from_slice(self.second_text.as_bytes());
        let micros = since_epoch.subsec_micros();
        let digit = |divisor: u32| b'0' + u8::try_from(micros / divisor % 10).unwrap_or(0);
        out.extend_from_slice(&[
            b'.',
            digit(100_000),
            digit(10_000),
            digit(1000),
            digit(100),
            digit(10),
            digit(1),
            b'Z',
        ]);
    }

    /// The middle of a line for `line`, written again only when it differs from the last one.
    fn middle(&mut self, format: LineFormat, line: &RequestLine<'_>) -> &[u8] {
        let same = self
            .middle_of
            .as_ref()
            .is_some_and(|(last_format, method, route, status)| {
                *last_format == format
                    && *status == line.status
                    && route == line.route
                    && method == line.method
            });
        if !same {
            self.middle.clear();
            write_middle(&mut self.middle, format, line);
            self.middle_of = Some((
                format,
                line.method.to_owned(),
                line.route.to_owned(),
                line.status,
            ));
        }
        &self.middle
    }
}

/// Copies `text`, escaping what JSON and a quoted text field cannot hold verbatim.
fn escaped(out: &mut Vec<u8>, text: &str) {
    let plain = |byte: &u8| !matches!(byte, b'"' | b'\\' | 0x00..=0x1f | 0x7f);
    if text.as_bytes().iter().all(plain) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for byte in text.bytes() {
        match byte {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', byte]),
            0x00..=0x1f | 0x7f => {
                let _ = write!(out, "\\u{byte:04x}");
            }
            _ => out.push(byte),
        }
    }
}

/// A client's address as it is written everywhere else: IPv4 (an IPv4-mapped IPv6 peer too, as
/// the per-client limits count it) by our own digits, without `core::fmt` on every request
/// line; IPv6 in its standard form.
fn address(out: &mut Vec<u8>, client: std::net::IpAddr) {
    match client.to_canonical() {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                decimal(out, u64::from(octet));
            }
        }
        v6 => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// An unsigned integer in decimal, without going through `core::fmt`.
fn decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while let Some(slot) = start.checked_sub(1).and_then(|at| digits.get_mut(at)) {
        *slot = b'0' + u8::try_from(value % 10).unwrap_or(0);
        start -= 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}

/// Microseconds as milliseconds with three decimals: `0.427`, a JSON number.
fn milliseconds(out: &mut Vec<u8>, micros: u64) {
    decimal(out, micros / 1000);
    let fraction = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + u8::try_from(fraction / 100).unwrap_or(0),
        b'0' + u8::try_from(fraction / 10 % 10).unwrap_or(0),
        b'0' + u8::try_from(fraction % 10).unwrap_or(0),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(format: LineFormat, now: SystemTime, line: &RequestLine<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        render(&mut out, format, now, line);
        out
    }

    fn line(method: &'static str, route: &'static str) -> RequestLine<'static> {
        RequestLine {
            method,
            route,
            status: 200,
            elapsed: Duration::from_micros(12_045),
            finished: Instant::now(),
            request_id: "c3--ceZHiFvb5GIP",
            client: "2001:db8::7".parse().unwrap(),
        }
    }

    fn at_noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_072_000_000_042)
    }

    #[test]
    fn text_lines_read_like_tracing_s() {
        let text = rendered(
            LineFormat::Text,
            at_noon(),
            &line("GET", "GET /v1/users/me"),
        );
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2025-11-25T12:00:00.000042Z  INFO tessera::request: request method=GET \
             route=\"GET /v1/users/me\" status=200 latency_ms=12.045 request_id=c3--ceZHiFvb5GIP \
             client=2001:db8::7\n"
        );
    }

    #[test]
    fn json_lines_parse_and_hold_numbers_as_numbers() {
        let json = rendered(
            LineFormat::Json,
            at_noon(),
            &line("GET", "GET /v1/users/me"),
        );
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["target"], "tessera::request");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["timestamp"], "2025-11-25T12:00:00.000042Z");
        let fields = &value["fields"];
        assert_eq!(fields["message"], "request");
        assert_eq!(fields["route"], "GET /v1/users/me");
        assert_eq!(fields["status"], 200);
        assert_eq!(fields["latency_ms"].as_f64(), Some(12.045));
        assert_eq!(fields["request_id"], "c3--ceZHiFvb5GIP");
        assert_eq!(fields["client"], "2001:db8::7");
    }

    #[test]
    fn an_unusual_method_is_escaped_not_injected() {
        let json = rendered(LineFormat::Json, at_noon(), &line("GE\"T\n", "r"));
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["fields"]["method"], "GE\"T\n");
        let text = rendered(LineFormat::Text, at_noon(), &line("GE\"T\n", "r"));
        assert_eq!(text.iter().filter(|b| **b == b'\n').count(), 1, "one line");
    }

    /// A thread keeps what it rendered last; any change of format, method, route or status
    /// still gives the line a thread that never logged before would write.
    #[test]
    fn a_line_reads_the_same_whatever_came_before_it() {
        let lines = [
            (LineFormat::Text, "GET", "GET /v1/users/me", 200),
            (LineFormat::Text, "GET", "GET /v1/users/me", 200),
            (LineFormat::Text, "GET", "GET /v1/users/me", 401),
            (LineFormat::Text, "HEAD", "GET /v1/users/me", 401),
            (LineFormat::Text, "HEAD", "POST /v1/users", 401),
            (LineFormat::Json, "HEAD", "POST /v1/users", 401),
            (LineFormat::Json, "GE\"T", "POST /v1/users", 401),
            (LineFormat::Text, "GET", "GET /v1/users/me", 200),
        ];
        let render_one =
            |(format, method, route, status): (LineFormat, &'static str, &'static str, u16)| {
                let mut line = line(method, route);
                line.status = status;
                rendered(format, at_noon(), &line)
            };
        let warm: Vec<Vec<u8>> = lines.iter().map(|l| render_one(*l)).collect();
        for (l, warm) in lines.iter().zip(warm) {
            let cold = std::thread::scope(|s| s.spawn(|| render_one(*l)).join().unwrap());
            assert_eq!(
                String::from_utf8(warm).unwrap(),
                String::from_utf8(cold).unwrap()
            );
        }
    }

    #[test]
    fn timestamps_are_right_across_seconds() {
        let mut out = Vec::new();
        let timestamp = |out: &mut Vec<u8>, now| {
            RENDERING.with_borrow_mut(|rendering| rendering.timestamp(out, now));
        };
        timestamp(&mut out, at_noon());
        timestamp(&mut out, at_noon() + Duration::from_micros(999_957));
        timestamp(&mut out, at_noon() + Duration::from_micros(999_958));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2025-11-25T12:00:00.000042Z2025-11-25T12:00:00.999999Z2025-11-25T12:00:01.000000Z"
        );
    }

    #[test]
    fn addresses_read_as_their_standard_forms() {
        for (ip, text) in [
            ("127.0.0.1", "127.0.0.1"),
            ("0.0.0.0", "0.0.0.0"),
            ("255.10.200.9", "255.10.200.9"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8::7", "2001:db8::7"),
            ("::1", "::1"),
        ] {
            let mut out = Vec::new();
            address(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
    }

    #[test]
    fn decimals_are_written_whole() {
        for value in [0, 7, 200, 1_000_000, u64::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }

    #[test]
    fn latency_keeps_three_decimals() {
        let mut out = Vec::new();
        milliseconds(&mut out, 7);
        assert_eq!(out, b"0.007");
    }
}
