//! The Host-header check that defeats DNS rebinding: a page on `http://evil.example:8737/` whose name
//! the attacker re-points to 127.0.0.1 reaches the viewer with `Host: evil.example:8737`, which is not
//! an allowed host, and gets 403 instead of the dataset.

use std::net::{IpAddr, SocketAddr};

use crate::Reply;

/// The host names a viewer answers to (the `Host` header of a request, compared case-insensitively).
///
/// By default ([`AllowedHosts::for_addr`]): `localhost`, `127.0.0.1`, `[::1]` and the bound IP
/// address, each either without a port or with the bound port. A listener bound to an unspecified
/// address (`0.0.0.0`, `[::]`) also answers to any IP address with that port (an IP literal cannot be
/// rebound); a host *name* of the machine (`mybox.lan`) must be added with [`AllowedHosts::allow`].
/// A request without a `Host` header is refused.
///
/// ```
/// use attn_viewer::AllowedHosts;
/// let mut hosts = AllowedHosts::for_addr("127.0.0.1:8737".parse().unwrap());
/// assert!(hosts.allows(Some("localhost:8737")));
/// assert!(hosts.allows(Some("127.0.0.1:8737")));
/// assert!(!hosts.allows(Some("evil.example:8737")));
/// assert!(!hosts.allows(Some("localhost:9999")));
/// assert!(!hosts.allows(None));
/// hosts.allow("viewer.lan");
/// assert!(hosts.allows(Some("Viewer.LAN:8737")));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    port: u16,
    /// Lowercase names (IPv6 literals in brackets), with the port an entry requires (`None`: no port
    /// or the bound port).
    entries: Vec<(String, Option<u16>)>,
    /// Any IP literal is allowed (bound to an unspecified address).
    any_ip: bool,
}

impl AllowedHosts {
    /// The default hosts of a listener bound to `addr` (its actual port, not 0).
    pub fn for_addr(addr: SocketAddr) -> AllowedHosts {
        let mut hosts = AllowedHosts {
            port: addr.port(),
            entries: Vec::new(),
            any_ip: addr.ip().is_unspecified(),
        };
        for name in ["localhost", "127.0.0.1", "[::1]"] {
            hosts.allow(name);
        }
        hosts.allow(&host_of(addr.ip()));
        hosts
    }

    /// Also allows `host`: a name or IP address (`viewer.lan`, `10.0.0.5`, `[fe80::1]`), allowed with
    /// or without the bound port, or `host:port` to allow exactly that port (behind a proxy).
    pub fn allow(&mut self, host: &str) {
        let (name, port) = split_host(host.trim());
        let entry = (normalize(name), port);
        if !entry.0.is_empty() && !self.entries.contains(&entry) {
            self.entries.push(entry);
        }
    }

    /// Whether a request whose `Host` header is `host` (`None`: no such header) may be answered.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return false };
        let (name, port) = split_host(host.trim());
        if name.is_empty() {
            return false;
        }
        let name = normalize(name);
        let port_ok = |required: Option<u16>| match required {
            Some(p) => port == Some(p),
            None => port.is_none() || port == Some(self.port),
        };
        self.entries.iter().any(|(n, p)| *n == name && port_ok(*p))
            || (self.any_ip && parse_ip(&name).is_some() && port_ok(None))
    }

    /// The reply to a request whose host is not allowed: 403 with a short plain-text message.
    pub fn refusal(&self) -> Reply {
        let body = format!(
            "403 forbidden: unknown Host; open http://127.0.0.1:{}/ or an allowed host (DNS rebinding protection)\n",
            self.port
        );
        Reply {
            status: 403,
            content_type: "text/plain; charset=utf-8",
            body: body.into_bytes(),
        }
    }
}

/// `ip` as a Host header writes it (IPv6 in brackets).
fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Splits `name[:port]` / `[v6][:port]`. A port that is not a number leaves the name empty (refused).
fn split_host(host: &str) -> (&str, Option<u16>) {
    let (name, port) = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => (&host[..=end], host[end + 1..].strip_prefix(':')),
            None => return ("", None),
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    match port {
        None => (name, None),
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>()
        {
            Ok(p) => (name, Some(p)),
            Err(_) => ("", None),
        },
        Some(_) => ("", None),
    }
}

/// Lowercase; IP literals in their canonical form (so `[0:0::1]` is `[::1]`).
fn normalize(name: &str) -> String {
    match parse_ip(name) {
        Some(ip) => host_of(ip),
        None => name.to_ascii_lowercase(),
    }
}

fn parse_ip(name: &str) -> Option<IpAddr> {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6),
        None => name.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(addr: &str) -> AllowedHosts {
        AllowedHosts::for_addr(addr.parse().unwrap())
    }

    #[test]
    fn loopback_names_with_the_bound_port_or_none() {
        let h = hosts("127.0.0.1:8737");
        for ok in [
            "localhost:8737",
            "LOCALHOST:8737",
            "127.0.0.1:8737",
            "[::1]:8737",
            "[0:0::1]:8737",
            "localhost",
        ] {
            assert!(h.allows(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example:8737",
            "evil.example",
            "localhost:8738",
            "localhost.:8737",
            "127.0.0.2:8737",
            "localhost:87x7",
            "localhost:+8737",
            "localhost:",
            "[::1",
            "",
            "10.0.0.5:8737",
        ] {
            assert!(!h.allows(Some(bad)), "{bad}");
        }
        assert!(!h.allows(None), "a request without Host is refused");
    }

    #[test]
    fn the_bound_address_is_allowed() {
        let h = hosts("192.168.1.5:80");
        assert!(h.allows(Some("192.168.1.5")));
        assert!(h.allows(Some("192.168.1.5:80")));
        assert!(!h.allows(Some("192.168.1.6:80")));
        let h = hosts("[fe80::1]:9000");
        assert!(h.allows(Some("[FE80::1]:9000")));
        assert!(!h.allows(Some("fe80::1")), "an IPv6 host needs brackets");
    }

    #[test]
    fn unspecified_address_allows_ip_literals_not_names() {
        let h = hosts("0.0.0.0:8737");
        assert!(h.allows(Some("10.1.2.3:8737")));
        assert!(h.allows(Some("[2001:db8::1]:8737")));
        assert!(!h.allows(Some("10.1.2.3:8000")));
        assert!(!h.allows(Some("mybox.lan:8737")));
    }

    #[test]
    fn configured_extra_hosts() {
        let mut h = hosts("127.0.0.1:8737");
        h.allow("Viewer.Lan");
        h.allow("proxy.example:443");
        assert!(h.allows(Some("viewer.lan:8737")));
        assert!(h.allows(Some("viewer.lan")));
        assert!(!h.allows(Some("viewer.lan:9")));
        assert!(h.allows(Some("proxy.example:443")));
        assert!(
            !h.allows(Some("proxy.example:8737")),
            "an entry with a port allows only that port"
        );
        assert!(!h.allows(Some("proxy.example")));
    }

    #[test]
    fn refusal_is_a_short_plain_403() {
        let r = hosts("127.0.0.1:8737").refusal();
        assert_eq!(r.status, 403);
        assert!(r.content_type.starts_with("text/plain"));
        assert!(r.body.len() < 200);
    }
}
