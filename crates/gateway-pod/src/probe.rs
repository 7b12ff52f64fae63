//! One upstream probe, bounded in time: an ICMP echo with the system `ping` (iputils), or an
//! HTTP GET over a plain TCP connection (`http://` only; a 2xx status is a success).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs as _};
use std::process::Command;
use std::time::Duration;

use crate::readiness::ProbeKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Icmp(IpAddr),
    Http(HttpTarget),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub url: String,
    /// `host` or `host:port` as written, for the Host header and for resolving.
    pub authority: String,
    pub path: String,
}

impl HttpTarget {
    /// Reads `http://HOST[:PORT][/PATH]`.
    pub fn parse(url: &str) -> Result<HttpTarget, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("HTTP probe {url:?}: only http:// URLs are supported (no TLS in the gateway's prober)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "HTTP probe {url:?}: needs a host (and no user information)"
            ));
        }
        Ok(HttpTarget {
            url: url.to_string(),
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }

    fn socket_address(&self) -> Result<SocketAddr, String> {
        let with_port = if self.authority.ends_with(']') || !self.authority.contains(':') {
            format!("{}:80", self.authority)
        } else {
            self.authority.clone()
        };
        with_port
            .to_socket_addrs()
            .map_err(|error| format!("resolving {}: {error}", self.authority))?
            .next()
            .ok_or_else(|| format!("{} resolves to no address", self.authority))
    }
}

impl Probe {
    pub fn kind(&self) -> ProbeKind {
        match self {
            Probe::Icmp(_) => ProbeKind::Icmp,
            Probe::Http(_) => ProbeKind::Http,
        }
    }

    pub fn target(&self) -> String {
        match self {
            Probe::Icmp(address) => address.to_string(),
            Probe::Http(target) => target.url.clone(),
        }
    }

    /// Runs the probe once; it takes at most about `timeout`.
    pub fn run(&self, timeout: Duration) -> Result<(), String> {
        match self {
            Probe::Icmp(address) => ping(*address, timeout),
            Probe::Http(target) => get(target, timeout),
        }
    }
}

fn ping(address: IpAddr, timeout: Duration) -> Result<(), String> {
    // One echo and -W (seconds, a fraction allowed) for its reply. No -w: with -c it would
    // keep ping waiting up to its whole-second deadline, longer than a sub-second timeout.
    let seconds = format!("{:.3}", timeout.as_secs_f64().max(0.001));
    let output = Command::new("ping")
        .args(["-n", "-q", "-c", "1", "-W", &seconds])
        .arg(address.to_string())
        .output()
        .map_err(|error| format!("cannot run ping (install iputils-ping): {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("no echo reply from {address} within {seconds} s"))
    }
}

fn get(target: &HttpTarget, timeout: Duration) -> Result<(), String> {
    let address = target.socket_address()?;
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|error| format!("connecting to {address}: {error}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|error| error.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|error| error.to_string())?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-gateway\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("sending to {address}: {error}"))?;
    // The status line is all that is needed; read until it is complete.
    let mut received = Vec::new();
    let mut buffer = [0_u8; 512];
    while !received.contains(&b'\n') && received.len() < 4096 {
        let count = stream
            .read(&mut buffer)
            .map_err(|error| format!("reading from {address}: {error}"))?;
        if count == 0 {
            break;
        }
        received.extend_from_slice(&buffer[..count]);
    }
    let status =
        status_code(&received).ok_or_else(|| format!("{} answered no HTTP status line", target.url))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("{} answered {status}", target.url))
    }
}

fn status_code(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    let line = text.lines().next()?;
    let mut words = line.split_whitespace();
    words.next()?.strip_prefix("HTTP/")?;
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls() {
        let target = HttpTarget::parse("http://192.0.2.1:8080/health").unwrap();
        assert_eq!(target.authority, "192.0.2.1:8080");
        assert_eq!(target.path, "/health");
        assert_eq!(
            target.socket_address().unwrap(),
            "192.0.2.1:8080".parse().unwrap()
        );
        let bare = HttpTarget::parse("http://[2001:db8::1]").unwrap();
        assert_eq!(bare.path, "/");
        assert_eq!(
            bare.socket_address().unwrap(),
            "[2001:db8::1]:80".parse().unwrap()
        );
    }

    #[test]
    fn refuses_https_and_hostless_urls() {
        assert!(
            HttpTarget::parse("https://example.com/")
                .unwrap_err()
                .contains("only http://")
        );
        assert!(HttpTarget::parse("http:///path").is_err());
    }

    #[test]
    fn reads_status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn an_http_probe_succeeds_on_2xx_and_fails_otherwise() {
        for (answer, expected) in [
            ("HTTP/1.0 200 OK\r\n\r\n", true),
            ("HTTP/1.0 503 No\r\n\r\n", false),
        ] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut connection, _) = listener.accept().unwrap();
                let mut request = [0_u8; 1024];
                let _ = connection.read(&mut request).unwrap();
                connection.write_all(answer.as_bytes()).unwrap();
            });
            let probe = Probe::Http(HttpTarget::parse(&format!("http://127.0.0.1:{port}/ok")).unwrap());
            assert_eq!(probe.run(Duration::from_secs(5)).is_ok(), expected, "{answer}");
            server.join().unwrap();
        }
    }
}
