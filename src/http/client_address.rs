//! Who the client is: the TCP peer, or — when the peer is a proxy the operator trusts — the
//! address that proxy recorded in `X-Forwarded-For`.
//!
//! Every proxy appends the address it received the request from, so the chain reads
//! "client, proxy 1, proxy 2" and only its right end is written by machines we trust. Reading
//! from the right and stopping at the first address that is not a trusted proxy gives the
//! address the nearest untrusted machine connected from; everything further left is whatever
//! that machine claimed, and may be forged. `Forwarded` (RFC 7239) is not read: nginx and Caddy
//! write `X-Forwarded-For`, and a second header a proxy passes through untouched would be a
//! second chain for a client to forge.

use hyper::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// Entries read from the right of a chain. More proxies than this in front of Tessera is a
/// configuration nobody runs; a chain longer than that is someone's padding, and its address is
/// the last trusted hop reached (a proxy, so limits fall on the proxy: closed, not open).
pub const MAX_HOPS: usize = 16;

/// The proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`). Empty: no header is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        Self {
            networks: networks.into_iter().map(|net| net.trunc()).collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }

    fn trusts(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|net| net.contains(&address))
    }

    /// The client's address for a request from `peer`: the peer itself unless it is trusted;
    /// then the right-most `X-Forwarded-For` entry that is not itself trusted. An entry that is
    /// not an address (garbage, `unknown`, an obfuscated name) ends the walk at the last trusted
    /// hop: nothing left of it was written by a machine we trust.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.networks.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut nearest_trusted = peer;
        let mut hops = 0;
        // Several fields form one list, in order (RFC 9110 §5.3): the last field's last entry
        // is the nearest hop.
        for field in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(field) = field.to_str() else {
                return nearest_trusted;
            };
            for entry in field.rsplit(',') {
                hops += 1;
                let Some(hop) = (hops <= MAX_HOPS).then(|| hop_address(entry)).flatten() else {
                    return nearest_trusted;
                };
                if !self.trusts(hop) {
                    return hop;
                }
                nearest_trusted = hop;
            }
        }
        nearest_trusted
    }
}

/// One chain entry: an address, as proxies write it — bare, an IPv6 address in brackets, or
/// either with a port.
fn hop_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches([' ', '\t']);
    if let Ok(address) = entry.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || is_port(after.strip_prefix(':')?);
        return port_ok
            .then(|| inside.parse::<std::net::Ipv6Addr>().ok())
            .flatten()
            .map(|v6| IpAddr::V6(v6).to_canonical());
    }
    let (v4, port) = entry.split_once(':')?;
    is_port(port)
        .then(|| v4.parse::<std::net::Ipv4Addr>().ok())
        .flatten()
        .map(IpAddr::V4)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// A `--trusted-proxy` value: a network in CIDR notation, or one address.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("{text:?} is neither a CIDR network (10.0.0.0/8, fd00::/8) nor an address")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use proptest::prelude::*;

    fn proxies(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| parse_network(n).unwrap()))
    }

    fn chain(fields: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for field in fields {
            headers.append("x-forwarded-for", HeaderValue::from_str(field).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let headers = chain(&["1.2.3.4"]);
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &headers),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_peer_names_the_right_most_untrusted_hop() {
        let trusted = proxies(&["10.0.0.0/8", "fd00::/8"]);
        let peer = ip("10.0.0.1");
        // Client-forged entries left of the real client are ignored.
        let headers = chain(&["6.6.6.6, 198.51.100.7, 10.1.1.1"]);
        assert_eq!(trusted.client(peer, &headers), ip("198.51.100.7"));
        // Several fields are one list.
        let headers = chain(&["6.6.6.6", "198.51.100.7", "10.1.1.1, fd00::2"]);
        assert_eq!(trusted.client(peer, &headers), ip("198.51.100.7"));
        // IPv6, bracketed, with ports; IPv4-mapped addresses are IPv4.
        for (entry, expect) in [
            ("2001:db8::5", "2001:db8::5"),
            ("[2001:db8::5]", "2001:db8::5"),
            ("[2001:db8::5]:443", "2001:db8::5"),
            ("198.51.100.7:5000", "198.51.100.7"),
            ("::ffff:198.51.100.7", "198.51.100.7"),
            ("  198.51.100.7\t", "198.51.100.7"),
        ] {
            assert_eq!(
                trusted.client(peer, &chain(&[entry])),
                ip(expect),
                "{entry}"
            );
        }
        // The peer may be an IPv4-mapped IPv6 address on a dual-stack listener.
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.1"), &chain(&["198.51.100.7"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn garbage_or_an_all_trusted_chain_stops_at_the_last_trusted_hop() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(trusted.client(peer, &HeaderMap::new()), peer);
        assert_eq!(trusted.client(peer, &chain(&["10.2.2.2"])), ip("10.2.2.2"));
        for garbage in [
            "unknown",
            "",
            "1.2.3.4, ",
            "_hidden",
            "1.2.3.4:99999999",
            "[2001:db8::1",
            "[1.2.3.4]",
            "1.2.3.4 5.6.7.8",
            "10.3.3.3, nonsense",
        ] {
            assert_eq!(
                trusted.client(peer, &chain(&[garbage])),
                peer,
                "{garbage:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(trusted.client(peer, &headers), peer);
        assert_eq!(
            trusted.client(peer, &chain(&["198.51.100.7, 10.9.9.9, garbage"])),
            peer
        );
    }

    #[test]
    fn an_overlong_chain_of_trusted_hops_names_a_proxy() {
        let trusted = proxies(&["10.0.0.0/8"]);
        let padding = vec!["10.4.4.4"; MAX_HOPS + 4].join(", ");
        let headers = chain(&[&format!("198.51.100.7, {padding}")]);
        assert_eq!(trusted.client(ip("10.0.0.1"), &headers), ip("10.4.4.4"));
    }

    #[test]
    fn networks_parse_as_cidr_or_single_addresses() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert_eq!(
            parse_network(" 127.0.0.1 ").unwrap().to_string(),
            "127.0.0.1/32"
        );
        for bad in ["10.0.0.0/33", "localhost", "", "10.0.0.0/8/8"] {
            assert!(parse_network(bad).is_err(), "{bad}");
        }
        // Host bits are dropped: 10.1.2.3/8 trusts 10.0.0.0/8.
        assert!(proxies(&["10.1.2.3/8"]).trusts(ip("10.200.0.1")));
    }

    proptest! {
        /// Whatever an untrusted client writes, the address is one a trusted machine saw or
        /// the address the client's own header names right of every trusted hop: it can never
        /// be a value from a field that a trusted proxy did not write. Here: the peer is
        /// trusted and appended `real`; anything the client prepended loses.
        #[test]
        fn a_client_cannot_choose_its_address(forged in "[ -~]{0,200}", real in any::<[u8; 4]>()) {
            let trusted = proxies(&["10.0.0.0/8"]);
            let real = IpAddr::from(real);
            prop_assume!(!trusted.trusts(real));
            let Ok(value) = HeaderValue::from_str(&format!("{forged}, {real}")) else {
                return Ok(());
            };
            let mut headers = HeaderMap::new();
            headers.append("x-forwarded-for", value);
            prop_assert_eq!(trusted.client(ip("10.0.0.1"), &headers), real);
        }
    }
}
