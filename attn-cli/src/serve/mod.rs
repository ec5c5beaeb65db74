//! `attnviz serve` and `attnviz export-html`: the interactive viewer. The page (assets/web) draws what
//! [`api::Api`] computes with attn-viz-core; the server answers on loopback unless told otherwise, and
//! serves only the page, the API and the dataset's own files.

pub mod api;
pub mod export;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use tiny_http::{Header, Response, Server};

use api::{Api, Reply, dataset_file, parse_query};

/// The viewer page and its script and style, compiled into the binary.
pub const INDEX_HTML: &str = include_str!("../../assets/web/index.html");
/// The viewer's script.
pub const APP_JS: &str = include_str!("../../assets/web/app.js");
/// The viewer's style sheet.
pub const STYLE_CSS: &str = include_str!("../../assets/web/style.css");

/// A running viewer server.
pub struct Viewer {
    server: Arc<Server>,
    api: Arc<Api>,
}

impl Viewer {
    /// Binds `addr` (port 0 picks a free one) for the dataset in `dir`. A dataset that cannot be opened
    /// still serves the page, which shows why.
    pub fn bind(dir: &Path, addr: SocketAddr) -> Result<Viewer> {
        let server = Server::http(addr).map_err(|e| anyhow!("--port: cannot listen on {addr}: {e}"))?;
        Ok(Viewer { server: Arc::new(server), api: Arc::new(Api::open(dir)) })
    }

    /// The address actually bound.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// Why the dataset cannot be opened, if it cannot.
    pub fn dataset_error(&self) -> Option<&str> {
        self.api.dataset().err()
    }

    /// Serves requests on `threads` worker threads until the process ends.
    pub fn run(self, threads: usize) {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let server = Arc::clone(&self.server);
                let api = Arc::clone(&self.api);
                std::thread::spawn(move || {
                    for request in server.incoming_requests() {
                        let reply = route(&api, request.method(), request.url());
                        let mut response = Response::from_data(reply.body).with_status_code(reply.status);
                        for (name, value) in [
                            ("Content-Type", reply.content_type),
                            ("Cache-Control", "no-store"),
                            ("X-Content-Type-Options", "nosniff"),
                        ] {
                            if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                                response.add_header(h);
                            }
                        }
                        // A client that went away is not the server's problem.
                        let _ = request.respond(response);
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
    }
}

/// Maps one request to its answer: the page, its assets, `/api/...`, or `/files/<path in dataset>`.
pub fn route(api: &Api, method: &tiny_http::Method, url: &str) -> Reply {
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return Reply { status: 405, content_type: "text/plain", body: b"only GET".to_vec() };
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let text = |content_type: &'static str, body: &str| Reply { status: 200, content_type, body: body.as_bytes().to_vec() };
    match path {
        "/" | "/index.html" => text("text/html; charset=utf-8", INDEX_HTML),
        "/app.js" => text("text/javascript; charset=utf-8", APP_JS),
        "/style.css" => text("text/css; charset=utf-8", STYLE_CSS),
        _ => {
            if let Some(endpoint) = path.strip_prefix("/api/") {
                api.handle(endpoint, &parse_query(query))
            } else if let Some(rel) = path.strip_prefix("/files/") {
                match dataset_file(api.dir(), rel).map(std::fs::read) {
                    Some(Ok(body)) => Reply { status: 200, content_type: content_type_of(rel), body },
                    _ => Reply::not_found(path),
                }
            } else {
                Reply::not_found(path)
            }
        }
    }
}

fn content_type_of(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
