//! Which network a client address counts as, for every per-client limit (rate limits,
//! sign-in limits, WebSocket caps).

use std::net::{IpAddr, Ipv6Addr};

/// The network a client address counts as: IPv4 (and IPv4-mapped IPv6) as is, IPv6 by
/// its /64.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}
