//! Whose request it is: the client's address, for the per-address rate limit, the
//! per-address caps, `X-Forwarded-For` and the logs.
//!
//! It is the connection's peer, unless the peer is a trusted proxy (`--trusted-proxies
//! CIDR,…`: a TLS terminator, a load balancer in front): then `X-Forwarded-For` is read
//! from the right, past every trusted hop, and the first address that is not one is the
//! client's. Addresses further left were written by the client itself and prove nothing.
//! nginx's `real_ip` (`set_real_ip_from`, `real_ip_recursive on`), HAProxy's and Envoy's
//! `xff_num_trusted_hops` do the same. Without trusted proxies the header is never read:
//! a client cannot choose its own address.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Default, Clone)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    /// From `CIDR,CIDR,…` (a bare address is a network of one); empty: none.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut networks = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let network = match item.parse::<IpNet>() {
                Ok(network) => network,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("{item:?} is not an address or a CIDR network"))?,
            };
            networks.push(network.trunc());
        }
        Ok(Self { networks })
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.networks.iter().any(|n| n.contains(&address))
    }

    /// The client's address, from the `peer` and the `X-Forwarded-For` values (in the
    /// order they came; a proxy may have appended its own field).
    pub fn client<'a>(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> Option<IpAddr> {
        let mut client = peer?;
        if !self.contains(client) {
            return Some(client);
        }
        let hops = forwarded_for
            .rev()
            .flat_map(|field| field.rsplit(|b| *b == b','));
        for hop in hops {
            let Some(address) = std::str::from_utf8(hop.trim_ascii())
                .ok()
                .and_then(parse_hop)
            else {
                // Nonsense: nothing to its left can be believed either.
                break;
            };
            client = canonical(address);
            if !self.contains(client) {
                break;
            }
        }
        Some(client)
    }
}

/// An `X-Forwarded-For` hop: an address, with a port or in brackets as some proxies
/// write them.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse() {
        return Some(address);
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`, as a dual-stack listener sees
/// it) is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(trusted: &str, peer: &str, xff: &[&str]) -> String {
        TrustedProxies::parse(trusted)
            .unwrap()
            .client(
                Some(peer.parse().unwrap()),
                xff.iter().map(|v| v.as_bytes()),
            )
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_header_is_read_only_from_a_trusted_peer_and_only_past_trusted_hops() {
        // No trusted proxies: the peer, whatever the header claims.
        assert_eq!(client("", "203.0.113.9", &["1.2.3.4"]), "203.0.113.9");
        // An untrusted peer: the same.
        assert_eq!(
            client("10.0.0.0/8", "203.0.113.9", &["1.2.3.4"]),
            "203.0.113.9"
        );
        // The terminator appended the client it saw; what the client wrote is left of it.
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.5", &["6.6.6.6, 198.51.100.7"]),
            "198.51.100.7"
        );
        // Two trusted hops, over two fields.
        assert_eq!(
            client(
                "10.0.0.0/8,192.168.1.1",
                "10.0.0.5",
                &["6.6.6.6, 198.51.100.7", "192.168.1.1"]
            ),
            "198.51.100.7"
        );
        // Every hop trusted: the leftmost.
        assert_eq!(client("10.0.0.0/8", "10.0.0.5", &["10.9.9.9"]), "10.9.9.9");
        // No header from a trusted peer: the peer.
        assert_eq!(client("10.0.0.0/8", "10.0.0.5", &[]), "10.0.0.5");
        // Nonsense stops the walk at the last trusted hop.
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.5", &["1.2.3.4, garbage, 10.1.1.1"]),
            "10.1.1.1"
        );
        // Ports and brackets, and a mapped address, are read.
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.5", &["198.51.100.7:4711"]),
            "198.51.100.7"
        );
        assert_eq!(
            client("10.0.0.0/8", "10.0.0.5", &["[2001:db8::1]"]),
            "2001:db8::1"
        );
        assert_eq!(
            client("127.0.0.1", "::ffff:127.0.0.1", &["198.51.100.7"]),
            "198.51.100.7"
        );
    }

    #[test]
    fn a_bad_list_is_refused_with_the_item_named() {
        let err = TrustedProxies::parse("10.0.0.0/8, nonsense").unwrap_err();
        assert!(err.contains("nonsense"), "{err}");
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        assert!(TrustedProxies::parse("127.0.0.1")
            .unwrap()
            .contains("127.0.0.1".parse().unwrap()));
    }
}
