//! Who the client is: the peer address, or, when the peer is a trusted proxy, the right-most
//! `X-Forwarded-For` entry that is not itself a trusted proxy (a client can prepend anything;
//! only what our proxies appended is believed). The walk stops at the first entry it cannot
//! read (`unknown`, a name): the peer is then the client, never a guess further left.

use crate::config::IpNet;
use http::HeaderMap;
use std::net::IpAddr;

pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    // Entries in arrival order; a header value that is not text is one unreadable entry.
    let entries: Vec<Option<&str>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(text) => text.split(',').map(Some).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect();
    for entry in entries.into_iter().rev() {
        // An entry we cannot read ends the walk: everything left of it was written by someone
        // we cannot vouch for (skipping it would let a client-chosen entry become the client).
        let Some(ip) = entry.and_then(parse_entry) else {
            return peer;
        };
        if !trusted(ip) {
            return ip;
        }
    }
    peer
}

/// One `X-Forwarded-For` entry: `ip`, `ip:port`, `[v6]` or `[v6]:port` (proxies write all of
/// them); `unknown`, obfuscated names and garbage are None.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(sock.ip());
    }
    let v6 = entry.strip_prefix('[')?.strip_suffix(']')?;
    v6.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The peer is a trusted proxy and says the client spoke HTTPS to it.
pub fn https_via_proxy(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> bool {
    trusted_proxies.iter().any(|n| n.contains(peer))
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    #[test]
    fn only_trusted_peers_are_believed() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8"]
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.7"),
        );
        assert_eq!(client_ip(ip("8.8.8.8"), &h, &trusted), ip("8.8.8.8"));
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("1.2.3.4"));
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted),
            ip("10.0.0.1")
        );
    }

    /// Regression (issue 18, item 12): the trusted proxy's own entry carried a port (or was
    /// `unknown`), was skipped as unreadable, and the client's forged `6.6.6.6` became the
    /// client IP.
    #[test]
    fn an_unreadable_entry_ends_the_walk_at_the_peer() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8"]
            .iter()
            .filter_map(|c| c.parse().ok())
            .collect();
        let peer = ip("10.0.0.1");
        // (X-Forwarded-For as received, the client IP)
        let table: &[(&[&str], &str)] = &[
            (&["6.6.6.6, 1.2.3.4:5678"], "1.2.3.4"),
            (&["6.6.6.6, 1.2.3.4"], "1.2.3.4"),
            (&["6.6.6.6, [2001:db8::1]:443"], "2001:db8::1"),
            (&["6.6.6.6, [2001:db8::1]"], "2001:db8::1"),
            (&["6.6.6.6, 2001:db8::1"], "2001:db8::1"),
            (&["6.6.6.6, 10.0.0.9:80"], "6.6.6.6"),
            (&["6.6.6.6, [::ffff:10.0.0.9]:80"], "6.6.6.6"),
            (&["6.6.6.6, unknown"], "10.0.0.1"),
            (&["6.6.6.6, unknown, 10.0.0.9"], "10.0.0.1"),
            (&["6.6.6.6, 1.2.3.4:notaport"], "10.0.0.1"),
            (&["6.6.6.6, 1.2.3.4:99999"], "10.0.0.1"),
            (&["6.6.6.6, [2001:db8::1"], "10.0.0.1"),
            (&["6.6.6.6, _hidden"], "10.0.0.1"),
            (&["6.6.6.6, "], "10.0.0.1"),
            (&["6.6.6.6,,10.0.0.9"], "10.0.0.1"),
            (&["6.6.6.6", "unknown"], "10.0.0.1"),
            (&["unknown", "1.2.3.4"], "1.2.3.4"),
            (&["unknown, 10.0.0.9"], "10.0.0.1"),
            (&[" 1.2.3.4 , 10.0.0.9:1 "], "1.2.3.4"),
        ];
        for (values, want) in table {
            let mut h = HeaderMap::new();
            for v in *values {
                h.append(
                    "x-forwarded-for",
                    HeaderValue::from_str(v).unwrap_or_else(|e| panic!("{e}")),
                );
            }
            assert_eq!(client_ip(peer, &h, &trusted), ip(want), "{values:?}");
        }
        // A value that is not text is unreadable too.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(client_ip(peer, &h, &trusted), peer);
    }
}
