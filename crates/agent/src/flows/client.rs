//! The client side of the flow endpoints, for `sluice flows`, `sluice ui` and tests: a GET over
//! TCP (`http://HOST:PORT`) or a Unix socket (`unix:PATH`), HTTP/1.1 with `Connection: close`,
//! the body read until the server closes (the endpoints send no chunked bodies).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// A connected response: status, headers, and the body as a line reader.
pub struct FlowResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: BufReader<Box<dyn Read + Send>>,
}

impl std::fmt::Debug for FlowResponse {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FlowResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish()
    }
}

impl FlowResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// The rest of the body as text.
    pub fn text(mut self) -> std::io::Result<String> {
        let mut text = String::new();
        self.body.read_to_string(&mut text)?;
        Ok(text)
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// GETs `path_and_query` from `endpoint`. `read_timeout` bounds each read (a follower passes
/// one a little longer than the server's one-second keep-alive writes).
pub fn get(endpoint: &str, path_and_query: &str, read_timeout: Duration) -> Result<FlowResponse, String> {
    let (mut stream, host): (Box<dyn Stream>, String) = if let Some(path) = endpoint.strip_prefix("unix:") {
        let stream =
            UnixStream::connect(path).map_err(|error| format!("cannot connect to {endpoint}: {error}"))?;
        stream
            .set_read_timeout(Some(read_timeout))
            .map_err(|error| error.to_string())?;
        (Box::new(stream), "localhost".to_string())
    } else {
        let address = endpoint
            .strip_prefix("http://")
            .unwrap_or(endpoint)
            .trim_end_matches('/');
        let stream =
            TcpStream::connect(address).map_err(|error| format!("cannot connect to {endpoint}: {error}"))?;
        stream
            .set_read_timeout(Some(read_timeout))
            .map_err(|error| error.to_string())?;
        (Box::new(stream), address.to_string())
    };
    let request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|error| format!("cannot send to {endpoint}: {error}"))?;
    let reader: Box<dyn Read + Send> = Box::new(stream);
    let mut body = BufReader::new(reader);
    let mut status_line = String::new();
    body.read_line(&mut status_line)
        .map_err(|error| format!("no answer from {endpoint}: {error}"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{endpoint} answered `{}`, not HTTP", status_line.trim()))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        body.read_line(&mut line)
            .map_err(|error| format!("cannot read from {endpoint}: {error}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    if headers
        .iter()
        .any(|(name, value)| name.eq_ignore_ascii_case("Transfer-Encoding") && value.contains("chunked"))
    {
        return Err(format!(
            "{endpoint} sent a chunked body, which this client does not read"
        ));
    }
    Ok(FlowResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::flows::{FlowListen, FlowServer, RecentFlows};

    #[test]
    fn serves_selected_records_and_follows_new_ones_over_a_unix_socket() {
        let directory = tempfile::tempdir().unwrap();
        let recent = Arc::new(RecentFlows::new(100, 1 << 20));
        recent.push([(100, "{\"n\":1}".to_string()), (200, "{\"n\":2}".to_string())]);
        let server = FlowServer::start(
            &FlowListen::Unix(directory.path().join("flows.sock")),
            recent.clone(),
        )
        .unwrap();
        let timeout = Duration::from_secs(5);

        let response = get(&server.endpoint, "/flows?since=150", timeout).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("X-Sluice-Last-Sequence"), Some("2"));
        assert_eq!(response.text().unwrap(), "{\"n\":2}\n");

        let response = get(&server.endpoint, "/flows?after=2", timeout).unwrap();
        assert_eq!(response.text().unwrap(), "");

        // A large answer comes with its length, not in chunks.
        let big: Vec<(u64, String)> = (0..50)
            .map(|index| (150, format!("{{\"n\":\"{}\"}}", "x".repeat(1000 + index))))
            .collect();
        recent.push(big);
        let response = get(&server.endpoint, "/flows?after=2", timeout).unwrap();
        assert!(response.header("Content-Length").is_some());
        assert_eq!(response.text().unwrap().lines().count(), 50);

        let mut stream = get(&server.endpoint, "/flows/stream?since=0", timeout).unwrap();
        assert_eq!(stream.status, 200);
        let mut line = String::new();
        stream.body.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"n\":1}\n");
        line.clear();
        stream.body.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"n\":2}\n");
        for _ in 0..50 {
            line.clear();
            stream.body.read_line(&mut line).unwrap();
        }
        recent.push([(300, "{\"n\":3}".to_string())]);
        line.clear();
        stream.body.read_line(&mut line).unwrap();
        assert_eq!(line, "{\"n\":3}\n");

        assert_eq!(get(&server.endpoint, "/nothing", timeout).unwrap().status, 404);
        assert_eq!(
            get(&server.endpoint, "/flows?since=tomorrow", timeout)
                .unwrap()
                .status,
            400
        );
        recent.close();
        drop(stream);
        server.stop();
    }

    #[test]
    fn serves_over_tcp_on_loopback() {
        let recent = Arc::new(RecentFlows::new(100, 1 << 20));
        recent.push([(1, "{\"n\":1}".to_string())]);
        let server = FlowServer::start(&FlowListen::Tcp("127.0.0.1:0".to_string()), recent.clone()).unwrap();
        assert!(server.endpoint.starts_with("http://127.0.0.1:"));
        let response = get(&server.endpoint, "/flows", Duration::from_secs(5)).unwrap();
        assert_eq!(response.text().unwrap(), "{\"n\":1}\n");
        recent.close();
        server.stop();
    }
}
