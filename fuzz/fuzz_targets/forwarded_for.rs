//! `X-Forwarded-For` chains: any header bytes from any peer give an address, never a panic; a
//! peer that is not a trusted proxy is the client whatever it sends; with no header, a trusted
//! peer is the client too.
#![no_main]

use hyper::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use tessera::http::client_address::TrustedProxies;

fuzz_target!(
    |input: (bool, [u8; 16], Vec<(bool, [u8; 16], u8)>, Vec<Vec<u8>>)| {
        let (v4, peer, networks, fields) = input;
        let address = |v4: bool, bytes: [u8; 16]| -> IpAddr {
            if v4 {
                IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
            } else {
                IpAddr::from(bytes)
            }
        };
        let peer = address(v4, peer);
        let trusted = TrustedProxies::new(networks.iter().filter_map(|(v4, bytes, prefix)| {
            ipnet::IpNet::new(address(*v4, *bytes), prefix % if *v4 { 33 } else { 129 }).ok()
        }));
        let mut headers = HeaderMap::new();
        for field in &fields {
            if let Ok(value) = HeaderValue::from_bytes(field) {
                headers.append("x-forwarded-for", value);
            }
        }
        let client = trusted.client(peer, &headers);
        let peer = peer.to_canonical();
        let is_trusted = trusted.networks().iter().any(|net| net.contains(&peer));
        if !is_trusted || headers.is_empty() {
            assert_eq!(client, peer);
        }
    }
);
