//! The HTTP listener (feature `server`): [`Api::handle`] behind tiny_http, with the `Host` check.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tiny_http::{Header, Response, Server};

use crate::{AllowedHosts, Api, ViewerError};

/// How often an idle worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// A viewer listening on an address: serves the page, the API and the dataset's files (see
/// [`Api::handle`]) to requests addressed to an allowed host ([`AllowedHosts`]); others get 403.
///
/// ```no_run
/// use std::sync::atomic::AtomicBool;
/// let viewer = attn_viewer::Viewer::bind("runs/bert", "127.0.0.1:0".parse()?)?;
/// if let Some(e) = viewer.dataset_error() {
///     eprintln!("warning: {e}; the page will say so");
/// }
/// println!("serving at {}", viewer.url());
/// viewer.run(4, &AtomicBool::new(false)); // until the process ends
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Viewer {
    server: Server,
    addr: SocketAddr,
    api: Api,
    hosts: AllowedHosts,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("addr", &self.addr)
            .field("api", &self.api)
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl Viewer {
    /// Binds `addr` (port 0 picks a free one) for the dataset in `dir`, answering to the default
    /// [`AllowedHosts`] of the bound address. A dataset that cannot be opened still serves the page,
    /// which shows why ([`Viewer::dataset_error`]).
    pub fn bind(dir: impl AsRef<Path>, addr: SocketAddr) -> Result<Viewer, ViewerError> {
        let server = Server::http(addr).map_err(|e| ViewerError::Bind {
            addr,
            message: e.to_string(),
        })?;
        let bound = server.server_addr().to_ip().unwrap_or(addr);
        Ok(Viewer {
            server,
            addr: bound,
            api: Api::open(dir),
            hosts: AllowedHosts::for_addr(bound),
        })
    }

    /// Also answers requests addressed to `host` (see [`AllowedHosts::allow`]), e.g. the machine's
    /// name when bound to `0.0.0.0`.
    pub fn allow_host(&mut self, host: &str) {
        self.hosts.allow(host);
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL: `http://<bound address>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The API answering the requests.
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// Why the dataset cannot be opened, if it cannot (with its full path, for the local user).
    pub fn dataset_error(&self) -> Option<&ViewerError> {
        self.api.dataset().err()
    }

    /// Serves requests on `threads` worker threads (at least one) until `stop` is set; returns within
    /// about 100 ms of that, after the requests in progress are answered.
    pub fn run(&self, threads: usize, stop: &AtomicBool) {
        std::thread::scope(|scope| {
            for _ in 0..threads.max(1) {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        // An error is one failed connection; the listener keeps going.
                        if let Ok(Some(request)) = self.server.recv_timeout(POLL) {
                            self.respond(request);
                        }
                    }
                });
            }
        });
    }

    fn respond(&self, request: tiny_http::Request) {
        // Exactly one Host header, else none (refused).
        let mut hosts = request.headers().iter().filter(|h| h.field.equiv("Host"));
        let host = match (hosts.next(), hosts.next()) {
            (Some(h), None) => Some(h.value.as_str()),
            _ => None,
        };
        let reply = if self.hosts.allows(host) {
            self.api.handle(request.method().as_str(), request.url())
        } else {
            self.hosts.refusal()
        };
        let headers = reply.headers();
        let mut response = Response::from_data(reply.body).with_status_code(reply.status);
        for (name, value) in headers {
            if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(h);
            }
        }
        // A client that went away is not the server's problem.
        let _ = request.respond(response);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;
    use crate::testutil::sample;

    /// A raw request with `host` (no header when `None`), returning status, headers and body.
    fn get(addr: SocketAddr, path: &str, host: Option<&str>) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\n{host}Connection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (status, head.to_string(), body.to_string())
    }

    #[test]
    fn listener_answers_allowed_hosts_and_stops() {
        let (_tmp, dir) = sample();
        let mut viewer = Viewer::bind(&dir, "127.0.0.1:0".parse().unwrap()).unwrap();
        viewer.allow_host("viewer.test");
        let addr = viewer.addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(viewer.url(), format!("http://{addr}/"));
        assert!(viewer.dataset_error().is_none());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let running = s.spawn(|| viewer.run(2, &stop));
            let port = addr.port();
            let (status, head, body) = get(addr, "/api/meta", Some(&format!("127.0.0.1:{port}")));
            assert_eq!(status, 200, "{body}");
            assert!(
                head.contains("application/json") && head.to_ascii_lowercase().contains("nosniff"),
                "{head}"
            );
            assert!(body.contains("\"sample\""));
            assert_eq!(
                get(addr, "/", Some("localhost")).0,
                200,
                "a loopback name without port"
            );
            assert_eq!(
                get(addr, "/", Some(&format!("viewer.test:{port}"))).0,
                200,
                "a configured host"
            );
            let (status, _, body) = get(addr, "/api/meta", Some(&format!("evil.example:{port}")));
            assert_eq!(status, 403);
            assert!(!body.contains("sample") && body.len() < 200, "{body}");
            assert_eq!(get(addr, "/api/meta", None).0, 403, "no Host header");
            assert_eq!(get(addr, "/files/../x", Some("localhost")).0, 404);
            stop.store(true, Ordering::Relaxed);
            running.join().unwrap();
        });
    }

    #[test]
    fn bind_failure_names_the_address() {
        let (_tmp, dir) = sample();
        let first = Viewer::bind(&dir, "127.0.0.1:0".parse().unwrap()).unwrap();
        let e = Viewer::bind(&dir, first.addr()).unwrap_err();
        assert!(
            matches!(e, ViewerError::Bind { .. })
                && e.to_string().contains(&first.addr().to_string()),
            "{e}"
        );
    }
}
