//! The client's address: the peer of the connection, or, when that peer is a proxy listed in
//! `auth.trustedProxies`, the nearest address in `X-Forwarded-For` that is not itself a trusted
//! proxy. It is recorded (access records, logs); it never picks a rate-limit bucket or grants
//! anything, so a forged header can at most misreport an address behind a trusted proxy.

use std::net::IpAddr;

use anyhow::Context as _;
use axum::http::HeaderMap;
use ipnet::IpNet;

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses `auth.trustedProxies` (CIDRs, or single addresses); errors name the entry.
    pub fn parse(entries: &[String]) -> anyhow::Result<Self> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .with_context(|| {
                        format!("auth.trustedProxies[{i}]: {e:?} is not a CIDR such as 10.0.0.0/8 or an IP address")
                    })
            })
            .collect::<anyhow::Result<_>>()
            .map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address, given the connection's peer and the request's headers.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Right to left: each hop appends the address it received from; the first address a
        // trusted proxy did not add is the client.
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map_while(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect();
        Some(
            hops.into_iter()
                .rev()
                .find(|ip| !self.trusts(*ip))
                .unwrap_or(peer),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.168.1.5".into()]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let spoofed = headers("1.2.3.4");
        assert_eq!(
            proxies.client(Some(ip("203.0.113.9")), &spoofed),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            proxies.client(Some(ip("10.1.2.3")), &spoofed),
            Some(ip("1.2.3.4"))
        );
        let chain = headers("6.6.6.6, 198.51.100.7, 10.0.0.2");
        assert_eq!(
            proxies.client(Some(ip("192.168.1.5")), &chain),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(
            proxies.client(Some(ip("10.1.2.3")), &headers("junk")),
            Some(ip("10.1.2.3"))
        );
        let e = TrustedProxies::parse(&["10.0.0.0/33".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.trustedProxies[0]"), "{e}");
    }
}
