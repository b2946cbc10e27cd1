//! Which `Host` names the admin listener's web console answers under:
//! loopback names, IP literals and the names of `--admin-allowed-hosts`. A
//! DNS-rebinding page reaches the listener under a host name of its own,
//! never under these.

use std::sync::Arc;

/// The host names the console answers under besides loopback names and IP
/// literals (`--admin-allowed-hosts`): exact names, or `*.domain` for any
/// subdomain of `domain`.
#[derive(Clone, Debug, Default)]
pub struct AllowedHosts {
    names: Arc<Vec<String>>,
}

/// Most names `--admin-allowed-hosts` may list.
const MAX_ALLOWED_HOSTS: usize = 100;

impl AllowedHosts {
    /// Checks and keeps `names` (lowercased): host names without port,
    /// scheme or path.
    pub fn new(names: &[String]) -> Result<AllowedHosts, String> {
        if names.len() > MAX_ALLOWED_HOSTS {
            return Err(format!("at most {MAX_ALLOWED_HOSTS} host names"));
        }
        let mut kept = Vec::new();
        for raw in names {
            let name = raw.trim().to_ascii_lowercase();
            let bare = name.strip_prefix("*.").unwrap_or(&name);
            let valid = !bare.is_empty()
                && bare.len() <= 253
                && bare.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                return Err(format!(
                    "'{raw}' is not a host name (give names like console.example.com or *.example.com, without port or scheme)"
                ));
            }
            kept.push(name);
        }
        Ok(AllowedHosts {
            names: Arc::new(kept),
        })
    }

    fn allows(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|allowed| match allowed.strip_prefix('*') {
                // "*.example.com": any name ending in ".example.com".
                Some(suffix) => name.len() > suffix.len() && name.ends_with(suffix),
                None => allowed == name,
            })
    }
}

/// Whether `host` (a `Host` header's value) names this machine's loopback,
/// an IP literal or one of the `allowed` names: a DNS-rebinding page
/// reaches the listener under its own host name, never under these.
pub fn host_allowed(host: &str, allowed: &AllowedHosts) -> bool {
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok() && port_ok(port);
            }
            _ => return false,
        },
        None => host,
    };
    let (name, port) = match name.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (name, None),
    };
    if let Some(p) = port {
        if p.parse::<u16>().is_err() {
            return false;
        }
    }
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::Ipv4Addr>().is_ok()
        || allowed.allows(&name)
}

fn port_ok(port: &str) -> bool {
    port.is_empty() || port[1..].parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::{host_allowed, AllowedHosts};

    #[test]
    fn allowed_host_names_are_exact_or_a_subdomain_wildcard() {
        let allowed = AllowedHosts::new(&[
            "Console.Example.com".to_string(),
            "*.runnel.test".to_string(),
        ])
        .unwrap();
        for ok in [
            "console.example.com",
            "console.example.com:9644",
            "a.runnel.test:80",
            "a.b.runnel.test",
            "127.0.0.1:9644",
        ] {
            assert!(host_allowed(ok, &allowed), "{ok}");
        }
        for bad in [
            "example.com",
            "evil.console.example.com",
            "runnel.test",
            "xrunnel.test",
            "console.example.com.evil.test",
        ] {
            assert!(!host_allowed(bad, &allowed), "{bad}");
        }
        for invalid in ["", "http://x.test", "x.test:80", "a..b", "*", "*.", "a/b"] {
            assert!(
                AllowedHosts::new(&[invalid.to_string()]).is_err(),
                "{invalid}"
            );
        }
    }

    #[test]
    fn loopback_names_and_ip_literals_are_allowed_host_names_are_not() {
        let none = AllowedHosts::default();
        for ok in [
            "127.0.0.1:9644",
            "localhost:9644",
            "LOCALHOST",
            "console.localhost:1",
            "[::1]:9644",
            "10.0.0.5:9644",
        ] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in [
            "evil.example:9644",
            "127.0.0.1.evil.example",
            "localhost.evil.example:9644",
            "[::1",
            "127.0.0.1:port",
            "",
        ] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
    }
}
