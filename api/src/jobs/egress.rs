//! The HTTP client of outbound webhook deliveries, which go to URLs that users chose:
//! it reaches public addresses only (unless told otherwise for development), checked
//! where it cannot be dodged.
//!
//! - Host names are resolved by [`PublicResolver`], which drops every address that is
//!   not public ([`till_domain::net::is_public`]) and fails when none is left. The
//!   connection goes to the addresses it returned, so a name that resolved to a public
//!   address at registration and to `127.0.0.1` now (DNS rebinding) is refused.
//! - A URL whose host is an IP address never reaches a resolver, so [`check_url`]
//!   refuses internal ones before a request is made.
//! - Redirects are not followed and proxies (`HTTP_PROXY`, ...) are not used: either
//!   would let the request go somewhere the checks above did not look at.
//!
//! What went wrong is told to staff (deliveries, dead letters) in the fixed words of
//! [`Failure`]; the network error itself goes to the log only.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use till_domain::webhooks::{forbidden_host, UrlPolicy};

/// Why [`PublicResolver`] gave no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name resolved, but to internal addresses only.
    #[error("{name} resolves to no public address")]
    NotPublic {
        /// The name.
        name: String,
    },
    /// The name did not resolve.
    #[error("{name} did not resolve: {source}")]
    Lookup {
        /// The name.
        name: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
}

/// Resolves host names with the system resolver and keeps only public addresses
/// (all of them when `allow_private`).
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver {
    /// Keep internal addresses too (development and tests only).
    pub allow_private: bool,
}

impl PublicResolver {
    /// The addresses of `addrs` a delivery may connect to; an error when none.
    pub fn keep(
        &self,
        name: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, ResolveError> {
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| self.allow_private || till_domain::net::is_public(a.ip()))
            .collect();
        if kept.is_empty() {
            return Err(ResolveError::NotPublic {
                name: name.to_owned(),
            });
        }
        Ok(kept)
    }
}

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = *self;
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|source| ResolveError::Lookup {
                    name: name.clone(),
                    source,
                })?;
            let kept = this.keep(&name, found)?;
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// The client deliveries use: public addresses only (unless `allow_private`), no
/// redirects, no proxy, the given timeouts.
pub fn client(
    allow_private: bool,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(PublicResolver { allow_private }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .build()
}

/// Refuses a subscriber URL before anything is sent: one that does not parse, or
/// whose host is an internal IP address (a literal address is connected to without
/// resolution, so [`PublicResolver`] never sees it).
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, Failure> {
    let parsed = reqwest::Url::parse(url).map_err(|_| Failure::BadUrl)?;
    let policy = UrlPolicy {
        require_https: false,
        allow_private,
    };
    match parsed.host() {
        Some(host) if forbidden_host(&host, policy) => Err(Failure::NotPublic),
        Some(_) => Ok(parsed),
        None => Err(Failure::BadUrl),
    }
}

/// Why a delivery failed, in the fixed words staff read (`webhookDeliveries.error`,
/// dead letters): no addresses, host names or operating-system messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The subscriber's address (as given, or as its name resolved) is internal.
    #[error("refused: the address is not public")]
    NotPublic,
    /// The stored URL does not parse or has no host.
    #[error("invalid URL")]
    BadUrl,
    /// The host name did not resolve.
    #[error("name not resolved")]
    Unresolved,
    /// Nothing listens at the address.
    #[error("connection refused")]
    Refused,
    /// Connecting or answering took longer than allowed.
    #[error("timed out")]
    TimedOut,
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS error")]
    Tls,
    /// The connection failed otherwise (reset, unreachable network...).
    #[error("connection failed")]
    Connect,
    /// The subscriber answered with a status that is not 2xx.
    #[error("HTTP {0}")]
    Status(u16),
    /// Anything else.
    #[error("request failed")]
    Other,
}

impl Failure {
    /// The words for a failed request.
    pub fn of(error: &reqwest::Error) -> Self {
        let mut next: Option<&(dyn StdError + 'static)> = Some(error);
        let mut found = None;
        while let Some(e) = next {
            if let Some(r) = e.downcast_ref::<ResolveError>() {
                return match r {
                    ResolveError::NotPublic { .. } => Self::NotPublic,
                    ResolveError::Lookup { .. } => Self::Unresolved,
                };
            }
            if e.downcast_ref::<rustls::Error>().is_some() {
                return Self::Tls;
            }
            next = match e.downcast_ref::<std::io::Error>() {
                Some(io) => {
                    found = found.or(match io.kind() {
                        std::io::ErrorKind::ConnectionRefused => Some(Self::Refused),
                        std::io::ErrorKind::TimedOut => Some(Self::TimedOut),
                        _ => None,
                    });
                    // An io::Error's `source()` skips the error it wraps (where rustls
                    // puts its own): go through it.
                    match io.get_ref() {
                        Some(inner) => Some(inner as &(dyn StdError + 'static)),
                        None => io.source(),
                    }
                }
                None => e.source(),
            };
        }
        if error.is_timeout() {
            return Self::TimedOut;
        }
        match (found, error.is_connect()) {
            (Some(f), _) => f,
            (None, true) => Self::Connect,
            (None, false) => Self::Other,
        }
    }
}

/// The whole chain of an error's causes, for the log.
pub fn detail(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn addr(ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, 0)
    }

    #[test]
    fn only_public_addresses_are_kept() {
        let strict = PublicResolver {
            allow_private: false,
        };
        let loopback = addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let metadata = addr(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)));
        let v6_loopback = addr(IpAddr::V6(Ipv6Addr::LOCALHOST));
        let public = addr(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)));
        // A rebinding answer mixing both keeps the public one only.
        assert_eq!(
            strict
                .keep("mixed.example", [loopback, public, metadata])
                .ok(),
            Some(vec![public])
        );
        assert!(matches!(
            strict.keep("rebound.example", [loopback, v6_loopback, metadata]),
            Err(ResolveError::NotPublic { .. })
        ));
        let open = PublicResolver {
            allow_private: true,
        };
        assert_eq!(
            open.keep("localhost", [loopback]).ok(),
            Some(vec![loopback])
        );
    }

    #[test]
    fn literal_internal_addresses_are_refused_before_sending() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://2130706433/",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00::1]/",
        ] {
            assert_eq!(
                check_url(url, false).err(),
                Some(Failure::NotPublic),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_url("http://localhost:8080/x", false).is_ok());
        assert_eq!(check_url("not a url", false).err(), Some(Failure::BadUrl));
    }

    async fn failure_of(client: &reqwest::Client, url: &str) -> Failure {
        match client.post(url).body("{}").send().await {
            Ok(r) => Failure::Status(r.status().as_u16()),
            Err(e) => Failure::of(&e),
        }
    }

    fn local_client(allow_private: bool, timeout: Duration) -> reqwest::Client {
        match client(allow_private, timeout, timeout) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// A port nothing listens on: bound, then closed.
    fn closed_port() -> u16 {
        match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.port(),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_when_connecting() {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let strict = local_client(false, Duration::from_secs(5));
        let url = format!("http://localhost:{port}/hook");
        assert_eq!(failure_of(&strict, &url).await, Failure::NotPublic);
    }

    #[tokio::test]
    async fn network_errors_become_fixed_words() {
        let open = local_client(true, Duration::from_secs(5));
        let port = closed_port();
        assert_eq!(
            failure_of(&open, &format!("http://127.0.0.1:{port}/")).await,
            Failure::Refused
        );
        // TLS to a server that speaks plain text.
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let server = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut socket, _)) = listener.accept().await {
                let _ = socket
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        assert_eq!(
            failure_of(&open, &format!("https://127.0.0.1:{port}/")).await,
            Failure::Tls
        );
        server.abort();
        // A server that accepts and never answers.
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let impatient = local_client(true, Duration::from_millis(200));
        assert_eq!(
            failure_of(&impatient, &format!("http://127.0.0.1:{port}/")).await,
            Failure::TimedOut
        );
        silent.abort();
        assert_eq!(Failure::Status(500).to_string(), "HTTP 500");
    }
}
