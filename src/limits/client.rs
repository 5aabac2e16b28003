//! Who is calling, by network address: the peer of the connection, or, when that peer is a
//! configured trusted proxy, the address the proxies recorded in `X-Forwarded-For`.
//!
//! `X-Forwarded-For` is read right to left: each trusted proxy appends the address it received
//! the request from, so the rightmost address that is not a trusted proxy is the client. A
//! header from an untrusted peer is ignored entirely (anyone can send one).

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;
use tonic::transport::server::TcpConnectInfo;

/// The client address of a call, resolved once and stored in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(pub IpAddr);

/// Networks whose connections are proxies allowed to name the client (TALLY_TRUSTED_PROXIES).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses a comma-separated list of addresses or CIDR networks (`10.0.0.0/8, ::1`).
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is neither an IP address nor a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request that arrived from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Every X-Forwarded-For header, in order, as one list.
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.into_iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(address) => {
                    client = address;
                    if !self.trusts(address) {
                        break;
                    }
                }
                // A malformed entry ends what can be believed: the last proxy's word stands.
                Err(_) => break,
            }
        }
        client
    }
}

/// The client address of a request: the stored [`ClientAddress`], else the connection's peer.
pub fn of<B>(request: &http::Request<B>) -> Option<IpAddr> {
    if let Some(ClientAddress(address)) = request.extensions().get::<ClientAddress>() {
        return Some(*address);
    }
    request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|info| info.remote_addr())
        .map(|addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", v.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let proxies = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(
            proxies.client(ip("203.0.113.7"), &headers(&["1.2.3.4"])),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse("10.0.0.0/8, 192.168.1.1").unwrap();
        // The client forged a first entry; the proxies appended the real hops after it.
        let forwarded = headers(&["6.6.6.6, 198.51.100.9", "10.1.2.3"]);
        assert_eq!(
            proxies.client(ip("192.168.1.1"), &forwarded),
            ip("198.51.100.9")
        );
        // No header: the proxy itself is all we know.
        assert_eq!(
            proxies.client(ip("10.0.0.5"), &HeaderMap::new()),
            ip("10.0.0.5")
        );
        // A malformed hop stops the walk at the last good one.
        assert_eq!(
            proxies.client(ip("10.0.0.5"), &headers(&["198.51.100.9, junk, 10.0.0.6"])),
            ip("10.0.0.6")
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.local").is_err());
        assert!(TrustedProxies::parse("").unwrap().0.is_empty());
    }
}
