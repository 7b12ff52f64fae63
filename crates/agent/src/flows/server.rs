//! The agent's flow endpoints, over TCP and/or a Unix socket (what `sluice flows` and `sluice ui`
//! read; a Unix socket reaches an agent in another network namespace, as in the lab):
//!
//! - `GET /flows?since=T&after=N`: the records still held that ended at or after `T` (Unix
//!   seconds, an RFC 3339 time, or a duration back from now such as `5m`) and came after
//!   sequence `N`, as JSON lines; the header `X-Sluice-Last-Sequence` says where to go on from.
//! - `GET /flows/stream?since=T`: the same, then every new record as it is written, one line
//!   each, until the client goes away or the agent stops (HTTP/1.1, `Connection: close`, no
//!   length: the body ends when the connection does).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::recent::{RecentFlows, RecentRecord};

/// At most this many followers at once, each holding a thread.
const MAX_STREAMS: usize = 32;

/// Where the flow endpoints listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowListen {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for FlowListen {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlowListen::Tcp(address) => write!(formatter, "http://{address}"),
            FlowListen::Unix(path) => write!(formatter, "unix:{}", path.display()),
        }
    }
}

/// A running flow server; [`FlowServer::stop`] ends it.
pub struct FlowServer {
    /// What it listens on, as `sluice flows` addresses it (`http://HOST:PORT` or `unix:PATH`).
    pub endpoint: String,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    socket_path: Option<PathBuf>,
}

impl std::fmt::Debug for FlowServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FlowServer")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl FlowServer {
    pub fn start(listen: &FlowListen, recent: Arc<RecentFlows>) -> Result<FlowServer, String> {
        let (server, endpoint, socket_path) = match listen {
            FlowListen::Tcp(address) => {
                let server = tiny_http::Server::http(address)
                    .map_err(|error| format!("cannot listen on {address}: {error}"))?;
                let bound = server
                    .server_addr()
                    .to_ip()
                    .ok_or_else(|| format!("{address} is not an IP address"))?;
                (server, format!("http://{bound}"), None)
            }
            FlowListen::Unix(path) => {
                if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
                }
                // A socket left by an agent that did not stop cleanly.
                let _ = std::fs::remove_file(path);
                let server = tiny_http::Server::http_unix(path)
                    .map_err(|error| format!("cannot listen on {}: {error}", path.display()))?;
                (server, format!("unix:{}", path.display()), Some(path.clone()))
            }
        };
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let streams = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("flows-http".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    handle(request, &recent, &streams);
                }
            })
            .map_err(|error| error.to_string())?;
        Ok(FlowServer {
            endpoint,
            server,
            thread: Some(thread),
            socket_path,
        })
    }

    /// Stops accepting requests (followers end when the ring is closed).
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn handle(request: tiny_http::Request, recent: &Arc<RecentFlows>, streams: &Arc<AtomicUsize>) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let parameters = match Query::parse(query) {
        Ok(parameters) => parameters,
        Err(message) => return respond_text(request, 400, &message),
    };
    match (request.method(), path) {
        (tiny_http::Method::Get, "/flows") => {
            let records = recent.select(parameters.since, parameters.after);
            let last = records
                .last()
                .map_or(parameters.after.max(recent.last_sequence()), |record| {
                    record.sequence
                });
            let mut body = String::new();
            for record in &records {
                body.push_str(&record.line);
                body.push('\n');
            }
            // A length, never chunks: clients read the body to its end.
            let response = tiny_http::Response::from_string(body)
                .with_chunked_threshold(usize::MAX)
                .with_header(header("Content-Type", "application/x-ndjson"))
                .with_header(header("X-Sluice-Last-Sequence", &last.to_string()));
            let _ = request.respond(response);
        }
        (tiny_http::Method::Get, "/flows/stream") => {
            if streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
                streams.fetch_sub(1, Ordering::SeqCst);
                return respond_text(request, 503, "too many followers\n");
            }
            let recent = Arc::clone(recent);
            let streams_done = Arc::clone(streams);
            let spawned = std::thread::Builder::new()
                .name("flows-stream".into())
                .spawn(move || {
                    follow(request.into_writer(), &recent, parameters);
                    streams_done.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                streams.fetch_sub(1, Ordering::SeqCst);
            }
        }
        (_, "/flows" | "/flows/stream") => respond_text(request, 405, "only GET\n"),
        _ => respond_text(request, 404, "not found: try /flows or /flows/stream\n"),
    }
}

fn follow(mut writer: Box<dyn Write + Send>, recent: &RecentFlows, parameters: Query) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
    if writer
        .write_all(head.as_bytes())
        .and_then(|()| writer.flush())
        .is_err()
    {
        return;
    }
    let write = |writer: &mut Box<dyn Write + Send>, records: &[RecentRecord]| -> std::io::Result<()> {
        for record in records {
            writer.write_all(record.line.as_bytes())?;
            writer.write_all(b"\n")?;
        }
        writer.flush()
    };
    let backlog = recent.select(parameters.since, parameters.after);
    let mut after = backlog
        .last()
        .map_or(recent.last_sequence().max(parameters.after), |record| {
            record.sequence
        });
    if write(&mut writer, &backlog).is_err() {
        return;
    }
    while !recent.is_closed() {
        let records = recent.wait_after(after, Duration::from_secs(1));
        if let Some(last) = records.last() {
            after = last.sequence;
        }
        // An empty write every second finds a client that went away.
        if write(&mut writer, &records).is_err() {
            return;
        }
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn respond_text(request: tiny_http::Request, status: u16, text: &str) {
    let _ = request.respond(tiny_http::Response::from_string(text).with_status_code(status));
}

/// The query parameters both endpoints take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Query {
    /// Unix seconds.
    since: u64,
    after: u64,
}

impl Query {
    fn parse(query: &str) -> Result<Query, String> {
        let mut parsed = Query::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "since" => parsed.since = parse_since(&value, SystemTime::now())?,
                "after" => {
                    parsed.after = value
                        .parse()
                        .map_err(|_| format!("after={value}: expected a sequence number\n"))?;
                }
                other => return Err(format!("unknown parameter `{other}`: try since or after\n")),
            }
        }
        Ok(parsed)
    }
}

/// `since` as Unix seconds: a number of seconds, an RFC 3339 time, or a duration back from now.
pub fn parse_since(text: &str, now: SystemTime) -> Result<u64, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()));
    }
    if let Ok(back) = humantime::parse_duration(text) {
        let then = now.checked_sub(back).unwrap_or(UNIX_EPOCH);
        return Ok(then
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs()));
    }
    Err(format!(
        "since={text}: expected Unix seconds, an RFC 3339 time or a duration such as 5m\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_seconds_times_and_durations() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_since("1234", now).unwrap(), 1234);
        assert_eq!(parse_since("5m", now).unwrap(), 10_000 - 300);
        assert_eq!(parse_since("1970-01-01T00:01:40Z", now).unwrap(), 100);
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("since=yesterday")
        );
    }

    #[test]
    fn queries_are_decoded_and_checked() {
        assert_eq!(Query::parse("after=7").unwrap().after, 7);
        assert_eq!(Query::parse("since=1970-01-01T00%3A01%3A40Z").unwrap().since, 100);
        assert!(Query::parse("colour=red").unwrap_err().contains("colour"));
        assert!(Query::parse("after=x").is_err());
    }
}
