//! Who a client is for limits, and how many long-lived connections each may hold.
//!
//! A client address counts by its network: an IPv4 address alone, an IPv6 address by its
//! /64 (one subscriber line or host gets a whole /64, so per-address limits would hand
//! each client 2^64 budgets). WebSocket connections are capped per address and per
//! account; a connection holds a [`Slot`] for each, released when it closes.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::HttpRequest;
use ipnet::IpNet;
use uuid::Uuid;

use crate::networks::network_of;

/// Counts of open connections per key, capped.
struct Counts<K> {
    max: usize,
    open: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    fn enter(&self, key: &K) -> bool {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    fn leave(&self, key: &K) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(key);
            }
        }
    }
}

/// The WebSocket connections open in this process, per client network and per account.
pub struct Connections {
    per_ip: Counts<IpAddr>,
    per_account: Counts<Uuid>,
    /// Most subscriptions running at once on one connection.
    pub max_subscriptions: usize,
}

/// What a [`Slot`] holds.
enum Held {
    Ip(IpAddr),
    Account(Uuid),
}

/// One connection's place in a cap; released on drop.
pub struct Slot {
    registry: Arc<Connections>,
    held: Held,
}

impl Drop for Slot {
    fn drop(&mut self) {
        match &self.held {
            Held::Ip(ip) => self.registry.per_ip.leave(ip),
            Held::Account(id) => self.registry.per_account.leave(id),
        }
    }
}

impl Connections {
    /// Caps of `per_ip` connections per client network, `per_account` per account, and
    /// `max_subscriptions` per connection.
    pub fn new(per_ip: usize, per_account: usize, max_subscriptions: usize) -> Self {
        Self {
            per_ip: Counts::new(per_ip),
            per_account: Counts::new(per_account),
            max_subscriptions: max_subscriptions.max(1),
        }
    }

    /// A place for one more connection from `ip` (by its network), if under the cap.
    pub fn enter_ip(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let net = network_of(ip);
        self.per_ip.enter(&net).then(|| Slot {
            registry: self.clone(),
            held: Held::Ip(net),
        })
    }

    /// A place for one more connection of `account`, if under the cap.
    pub fn enter_account(self: &Arc<Self>, account: Uuid) -> Option<Slot> {
        self.per_account.enter(&account).then(|| Slot {
            registry: self.clone(),
            held: Held::Account(account),
        })
    }
}

/// The client's address: the peer, or when the peer is a trusted proxy, the
/// right-most `X-Forwarded-For` hop that is not itself a trusted proxy.
pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    // Several header lines are one list in order (RFC 9110), and each proxy appends
    // to its end: walk the lines from the last one, each from its right.
    let lines: Vec<_> = req.headers().get_all("x-forwarded-for").collect();
    for value in lines.into_iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(client);
        };
        for hop in text.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => client = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(client),
            }
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        let b: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        let c: IpAddr = "2001:db8:1:3::1"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        assert_eq!(network_of(a), network_of(b));
        assert_ne!(network_of(a), network_of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1"
            .parse()
            .unwrap_or(IpAddr::V4([0; 4].into()));
        assert_eq!(network_of(mapped), IpAddr::V4([10, 0, 0, 1].into()));
    }

    #[test]
    fn slots_are_capped_and_given_back() {
        let reg = Arc::new(Connections::new(2, 1, 5));
        let ip: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::V4([0; 4].into()));
        let same_net: IpAddr = "2001:db8::2".parse().unwrap_or(IpAddr::V4([0; 4].into()));
        let first = reg.enter_ip(ip);
        let second = reg.enter_ip(same_net);
        assert!(first.is_some() && second.is_some());
        assert!(reg.enter_ip(ip).is_none(), "a third from the same /64");
        drop(first);
        assert!(reg.enter_ip(ip).is_some(), "given back on close");
        let id = Uuid::now_v7();
        let held = reg.enter_account(id);
        assert!(held.is_some());
        assert!(reg.enter_account(id).is_none());
        drop(held);
        assert!(reg.enter_account(id).is_some());
    }
}

#[cfg(test)]
mod client_ip_tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let from = |peer: &str, xff: Option<&str>| {
            let mut r = TestRequest::default().peer_addr(
                format!("{peer}:4000")
                    .parse()
                    .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into()),
            );
            if let Some(x) = xff {
                r = r.insert_header(("x-forwarded-for", x));
            }
            client_ip(&r.to_http_request(), &trusted)
        };
        // A direct client cannot choose its address.
        assert_eq!(from("203.0.113.5", Some("1.2.3.4")), ip("203.0.113.5"));
        // Through the proxy: the right-most hop that is not a proxy; spoofed hops to
        // its left are ignored.
        assert_eq!(
            from("10.1.1.1", Some("1.2.3.4, 198.51.100.7, 10.2.2.2")),
            ip("198.51.100.7")
        );
        assert_eq!(from("10.1.1.1", None), ip("10.1.1.1"));
        assert_eq!(from("10.1.1.1", Some("garbage")), ip("10.1.1.1"));
    }

    /// A proxy that appends its own `X-Forwarded-For` line (instead of extending the
    /// client's) puts the address it saw last: the client's own line is to the left.
    #[test]
    fn an_appended_forwarded_for_line_is_read_from_the_end() {
        let trusted: Vec<IpNet> = ["10.0.0.0/8"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let r = TestRequest::default()
            .peer_addr(([10, 1, 1, 1], 4000).into())
            .append_header(("x-forwarded-for", "1.2.3.4"))
            .append_header(("x-forwarded-for", "198.51.100.7"))
            .to_http_request();
        assert_eq!(client_ip(&r, &trusted), ip("198.51.100.7"));
    }
}
