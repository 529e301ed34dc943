//! Which network addresses provider calls may reach: the guard against server-side request
//! forgery through tenant provider settings.
//!
//! A tenant chooses its providers' URLs and SMTP hosts, so without a guard it could make
//! Herald call loopback services, the private network or a cloud metadata endpoint
//! (169.254.169.254) and read the answers back through error messages. Addresses in
//! loopback, private, shared, link-local, multicast, documentation and reserved ranges are
//! refused unless the operator allows them (`allow_private_provider_addresses`, for a mock
//! provider on the same host). The rule is applied three times: when settings are stored
//! ([`check_url`], [`check_host`]), when a provider is built from them (a literal IP), and at
//! every connection ([`GuardedResolver`], so a name that resolved to a public address when it
//! was stored cannot later be re-pointed at a private one). HTTP redirects are not followed.
//!
//! It is not: an egress firewall; run Herald behind one too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Whether private addresses are allowed (operator configuration, never tenant input).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_private: bool,
}

/// Why an address may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{host} is (or resolves to) {ip}, an address providers may not reach (loopback, private, link-local or metadata range)")]
    NotAllowed { host: String, ip: IpAddr },
    #[error("{0}")]
    Invalid(String),
}

/// Whether `ip` is in a range provider calls must not reach.
pub fn forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) embeds an IPv4 address.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local (incl. fd00:ec2::254, AWS metadata)
        || (segments[0] & 0xffc0) == 0xfe80 // link-local
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
}

impl AddressPolicy {
    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), AddressError> {
        if !self.allow_private && forbidden(ip) {
            return Err(AddressError::NotAllowed { host: host.to_string(), ip });
        }
        Ok(())
    }

    /// Checks a literal IP host without resolving anything (names pass: they are checked when
    /// resolved).
    pub fn check_literal(&self, host: &str) -> Result<(), AddressError> {
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) => self.check_ip(host, ip),
            Err(_) => Ok(()),
        }
    }

    /// Checks `host`: a literal IP, or every address the name resolves to now. A name that
    /// does not resolve (yet) passes: the connection-time guard still applies.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<(), AddressError> {
        self.check_literal(host)?;
        if self.allow_private || host.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        let Ok(addrs) = tokio::net::lookup_host((host, port)).await else { return Ok(()) };
        for addr in addrs {
            self.check_ip(host, addr.ip())?;
        }
        Ok(())
    }

    /// Checks an http(s) URL's host (see [`AddressPolicy::check_host`]).
    pub async fn check_url(&self, url: &str) -> Result<(), AddressError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| AddressError::Invalid(format!("{url:?}: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| AddressError::Invalid(format!("{url:?} has no host")))?;
        self.check_host(host, parsed.port_or_known_default().unwrap_or(443)).await
    }

    /// The address to connect to for `host` (SMTP: lettre connects by name itself, so Herald
    /// resolves and checks first, then connects to the checked address).
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, AddressError> {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| AddressError::Invalid(format!("{host} does not resolve: {e}")))?;
        let mut refused = None;
        for addr in addrs {
            match self.check_ip(host, addr.ip()) {
                Ok(()) => return Ok(addr),
                Err(e) => refused = Some(e),
            }
        }
        Err(refused.unwrap_or_else(|| AddressError::Invalid(format!("{host} resolves to no address"))))
    }
}

/// A DNS resolver for the providers' HTTP client that drops addresses the policy forbids, so
/// every connection is checked, whatever the name resolved to when the settings were stored.
pub struct GuardedResolver {
    pub policy: AddressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                addrs.iter().copied().filter(|a| policy.check_ip(&host, a.ip()).is_ok()).collect();
            if allowed.is_empty() {
                let why = match addrs.first() {
                    Some(a) => AddressError::NotAllowed { host, ip: a.ip() }.to_string(),
                    None => format!("{host} resolves to no address"),
                };
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The resolver for `policy`, for `reqwest::ClientBuilder::dns_resolver`.
pub fn resolver(policy: AddressPolicy) -> Arc<GuardedResolver> {
    Arc::new(GuardedResolver { policy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_forbidden_public_ones_are_not() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(forbidden(bad.parse().unwrap()), "{bad}");
        }
        for good in ["8.8.8.8", "157.240.1.1", "2a03:2880:f003:c07:face:b00c::2", "64:ff9b::808:808"] {
            assert!(!forbidden(good.parse().unwrap()), "{good}");
        }
    }

    #[tokio::test]
    async fn urls_and_hosts_are_checked_unless_allowed() {
        let strict = AddressPolicy::default();
        for url in ["http://127.0.0.1:9090", "http://[::1]/x", "https://169.254.169.254/latest", "http://localhost:1/"]
        {
            assert!(matches!(strict.check_url(url).await, Err(AddressError::NotAllowed { .. })), "{url}");
        }
        assert!(strict.check_url("https://93.184.216.34/v21.0").await.is_ok());
        assert!(strict.check_url("not a url").await.is_err());
        let lenient = AddressPolicy { allow_private: true };
        assert!(lenient.check_url("http://127.0.0.1:9090").await.is_ok());
        assert!(strict.resolve("localhost", 25).await.is_err());
        assert!(lenient.resolve("localhost", 25).await.is_ok());
    }
}
