//! Server-side request forgery protection: a subscription URL must not make the worker call
//! into its own network. Every address a delivery connects to is checked, at connection time:
//!
//! * an IP literal in the URL is checked before the request ([`DestinationPolicy::check_url`]);
//! * a host name is resolved by [`GuardedResolver`], which hands the HTTP client only the
//!   addresses that are not internal, and fails with [`Refused`] when none is left. Checking at
//!   connection time, on the addresses actually used, is what defeats DNS rebinding (a name
//!   that resolved to a public address when the subscription was made and to `10.0.0.5` now).
//!
//! Internal means private, loopback, link-local, shared (CGNAT), unspecified, multicast,
//! broadcast, documentation and benchmark ranges, and their IPv4-mapped, NAT64 and 6to4 forms.
//! A host listed in `fanout.allowed_hosts` (as written in the URL) may resolve to anything:
//! that is how tests reach `127.0.0.1` and how an operator allows an internal receiver.
//!
//! Redirects are never followed (a 3xx is a failed attempt), and proxies from the environment
//! are ignored, so a check cannot be bypassed by a hop the check did not see.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which destinations deliveries may connect to.
#[derive(Debug, Clone, Default)]
pub struct DestinationPolicy {
    allowed_hosts: Arc<HashSet<String>>,
}

/// A destination refused by the policy. The message names the host, never the whole URL
/// (which may carry a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination refused: {host} {reason} (allow it with fanout.allowed_hosts)")]
pub struct Refused {
    /// The host as written in the URL.
    pub host: String,
    /// Why, e.g. "resolves only to internal addresses".
    pub reason: String,
}

impl DestinationPolicy {
    /// A policy allowing `allowed_hosts` (case-insensitive; IPv6 with or without brackets) to
    /// resolve to internal addresses.
    pub fn new(allowed_hosts: &[String]) -> DestinationPolicy {
        DestinationPolicy {
            allowed_hosts: Arc::new(allowed_hosts.iter().map(|h| normalise_host(h)).collect()),
        }
    }

    /// Whether `host` may resolve to internal addresses.
    pub fn is_allowed_host(&self, host: &str) -> bool {
        self.allowed_hosts.contains(&normalise_host(host))
    }

    /// Checks what can be checked without resolving: an `http`/`https` URL with a host, and an
    /// IP-literal host that is not internal (unless allowed). Host names are checked by the
    /// resolver when connecting.
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let refuse = |reason: &str| Refused {
            host: host.clone(),
            reason: reason.to_owned(),
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refuse("is not reached over http or https"));
        }
        if host.is_empty() {
            return Err(refuse("is missing"));
        }
        // The URL parser has already normalised IPv4 spellings (`2130706433`, `0x7f.1`) to
        // dotted form and put IPv6 in brackets.
        let Ok(ip) = normalise_host(&host).parse::<IpAddr>() else {
            return Ok(());
        };
        if is_internal(ip) && !self.is_allowed_host(&host) {
            return Err(refuse("is an internal address"));
        }
        Ok(())
    }

    /// The resolver that enforces this policy on host names.
    pub fn resolver(&self) -> GuardedResolver {
        GuardedResolver {
            policy: self.clone(),
        }
    }
}

/// A DNS resolver for the delivery client that drops internal addresses (see the module
/// documentation).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: DestinationPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allowed = self.policy.is_allowed_host(&host);
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if allowed {
                return Ok(Box::new(resolved.into_iter()) as Addrs);
            }
            let public: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| !is_internal(address.ip()))
                .collect();
            if public.is_empty() {
                return Err(Box::new(Refused {
                    host,
                    reason: "resolves only to internal addresses".to_owned(),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The [`Refused`] somewhere in an error's source chain (how a resolver refusal comes back
/// out of the HTTP client).
pub fn refusal_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

/// Whether a delivery must not connect to `ip` (see the module documentation).
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_internal_v4(ip),
        IpAddr::V6(ip) => is_internal_v6(ip),
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this" network, 0.0.0.0/8
        || a == 10 // private
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), 100.64/10
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local (cloud metadata lives here)
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224 // multicast, reserved, broadcast
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_internal_v4(v4);
    }
    let segments = ip.segments();
    let embedded_v4 = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    ip.is_unspecified()
        || ip.is_loopback()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
        || (segments[0] & 0xff00) == 0xff00 // multicast
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only, 100::/64
        // IPv4-compatible (deprecated) ::a.b.c.d
        || (segments[..6] == [0, 0, 0, 0, 0, 0] && is_internal_v4(embedded_v4(segments[6], segments[7])))
        // NAT64, 64:ff9b::/96
        || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
            && is_internal_v4(embedded_v4(segments[6], segments[7])))
        // 6to4, 2002:a.b.c.d::/48
        || (segments[0] == 0x2002 && is_internal_v4(embedded_v4(segments[1], segments[2])))
}

fn normalise_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_recognised_and_public_ones_pass() {
        for internal in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.8.8.8",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_urls_are_checked_against_the_allow_list() {
        let policy = DestinationPolicy::new(&["127.0.0.1".to_owned(), "[::1]".to_owned()]);
        let check = |url: &str| policy.check_url(&Url::parse(url).unwrap());
        assert!(check("http://127.0.0.1:8080/hook").is_ok());
        assert!(check("http://[::1]:8080/hook").is_ok());
        assert!(
            check("https://example.com/hook").is_ok(),
            "names are checked when resolved"
        );
        assert!(check("http://1.1.1.1/hook").is_ok());
        let refused = check("http://127.0.0.2/hook").unwrap_err();
        assert_eq!(refused.host, "127.0.0.2");
        assert!(check("http://10.0.0.5/").is_err());
        assert!(check("http://169.254.169.254/latest/meta-data").is_err());
        assert!(check("http://2130706434/").is_err(), "127.0.0.2 in decimal");
        assert!(check("http://[::ffff:7f00:2]/").is_err());
        assert!(check("ftp://1.1.1.1/").is_err());
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused_unless_allowed() {
        let name = |host: &str| host.parse::<Name>().unwrap();
        let refused = DestinationPolicy::new(&[])
            .resolver()
            .resolve(name("localhost"))
            .await
            .err()
            .expect("localhost is refused");
        let refusal = refusal_in(refused.as_ref()).expect("a Refused in the chain");
        assert_eq!(refusal.host, "localhost");

        let allowed = DestinationPolicy::new(&["LOCALHOST".to_owned()])
            .resolver()
            .resolve(name("localhost"))
            .await
            .expect("allowed");
        assert!(allowed.into_iter().all(|a| a.ip().is_loopback()));
    }
}
