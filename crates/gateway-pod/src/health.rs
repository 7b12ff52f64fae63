//! The gateway's health endpoint (its named port `health`): `GET /readiness` answers 200 when
//! ready and 503 when not, `GET /liveness` 200 while the process serves.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::readiness::Readiness;

pub struct HealthServer {
    address: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for HealthServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HealthServer")
            .field("address", &self.address)
            .finish()
    }
}

/// What a path answers, given whether the gateway is ready.
pub fn answer(path: &str, ready: bool) -> (u16, &'static str) {
    // A query string does not change the answer (kubelet sends none, people may).
    match path.split('?').next().unwrap_or_default() {
        "/readiness" if ready => (200, "ready\n"),
        "/readiness" => (503, "not ready: setting up, or upstream probes failing\n"),
        "/liveness" => (200, "alive\n"),
        _ => (404, "not found\n"),
    }
}

impl HealthServer {
    /// Serves from a thread of its own until stopped.
    pub fn serve(address: SocketAddr, readiness: Arc<Mutex<Readiness>>) -> Result<HealthServer, String> {
        let server = tiny_http::Server::http(address)
            .map_err(|error| format!("cannot serve health on {address}: {error}"))?;
        let bound = server.server_addr().to_ip().unwrap_or(address);
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("health".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let ready = readiness.lock().expect("not poisoned").is_ready(Instant::now());
                    let (status, body) = if *request.method() == tiny_http::Method::Get {
                        answer(request.url(), ready)
                    } else {
                        (405, "only GET\n")
                    };
                    let _ = request.respond(tiny_http::Response::from_string(body).with_status_code(status));
                }
            })
            .map_err(|error| format!("cannot start the health thread: {error}"))?;
        Ok(HealthServer {
            address: bound,
            server,
            thread: Some(thread),
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting requests and waits for the serving thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_state_and_liveness_does_not() {
        assert_eq!(answer("/readiness", true).0, 200);
        assert_eq!(answer("/readiness", false).0, 503);
        assert_eq!(answer("/readiness?verbose", false).0, 503);
        assert_eq!(answer("/liveness", false).0, 200);
        assert_eq!(answer("/metrics", true).0, 404);
    }
}
