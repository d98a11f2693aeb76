//! The one rule for endpoints other hosts name: what an address is once
//! IPv4-mapped IPv6 forms are undone ([`canonical`]), and whether a remote
//! host could be reached there ([`usable`]).
//!
//! Every endpoint weft is told to send to, whoever tells it, passes here
//! before it is believed: static peers in the node's configuration, the
//! endpoints in gossip records and invite tokens, the member hints of a
//! join, and hole-punch candidates. An IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`) is the IPv4 address `a.b.c.d` to the kernel, so it is
//! judged as that address: `::ffff:127.0.0.1` is loopback,
//! `::ffff:224.0.0.1` multicast, `::ffff:0.0.0.0` unspecified. This module
//! knows nothing of who named the endpoint; the callers decide whether
//! loopback is allowed and which addresses are their own.

use core::fmt;
use std::net::{IpAddr, SocketAddr};

/// `endpoint` with an IPv4-mapped IPv6 address (`[::ffff:a.b.c.d]:p`)
/// written as the IPv4 endpoint it stands for (`a.b.c.d:p`); any other
/// endpoint unchanged.
pub fn canonical(endpoint: SocketAddr) -> SocketAddr {
    match endpoint {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => endpoint,
        },
        SocketAddr::V4(_) => endpoint,
    }
}

/// Whether a loopback endpoint is usable: it is for the tests and demos
/// that run several nodes on one host, never for what a hostile member
/// could name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loopback {
    /// Loopback is [`Unusable::Loopback`].
    Refused,
    /// Loopback is usable.
    Allowed,
}

/// Why no remote host can be reached at an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unusable {
    /// Port 0: nothing listens there.
    PortZero,
    /// `0.0.0.0/8` or `::`: names no host (Linux delivers `0.0.0.0` to
    /// the sending host itself).
    Unspecified,
    /// A group address (`224.0.0.0/4`, `ff00::/8`).
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `127.0.0.0/8` or `::1`: the sending host itself.
    Loopback,
    /// `fe80::/10` without an interface scope: means nothing to another
    /// host (gossip and tokens carry no scope).
    LinkLocal,
}

impl Unusable {
    /// A short description, for errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unusable::PortZero => "endpoint port is 0",
            Unusable::Unspecified => "endpoint address is unspecified",
            Unusable::Multicast => "endpoint address is multicast",
            Unusable::Broadcast => "endpoint address is broadcast",
            Unusable::Loopback => "endpoint address is loopback",
            Unusable::LinkLocal => "endpoint address is IPv6 link-local",
        }
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The [`canonical`] form of `endpoint` if a remote host could be reached
/// there, else why not. The checks see the canonical form, so a mapped
/// address is judged as the IPv4 address it is.
pub fn usable(endpoint: SocketAddr, loopback: Loopback) -> Result<SocketAddr, Unusable> {
    let canonical = canonical(endpoint);
    if canonical.port() == 0 {
        return Err(Unusable::PortZero);
    }
    let scoped = match canonical {
        SocketAddr::V6(v6) => v6.scope_id() != 0,
        SocketAddr::V4(_) => false,
    };
    check_ip(canonical.ip(), scoped, loopback)?;
    Ok(canonical)
}

/// [`usable`] for an address alone, whatever the port (an address the
/// node announces with a port of its own); the canonical address if a
/// remote host could be reached at it. A link-local IPv6 address is
/// refused: an address alone carries no interface scope.
pub fn usable_ip(ip: IpAddr, loopback: Loopback) -> Result<IpAddr, Unusable> {
    let ip = ip.to_canonical();
    check_ip(ip, false, loopback)?;
    Ok(ip)
}

/// The address rules of [`usable`] for a canonical `ip`; `scoped`: it
/// carries an interface scope.
fn check_ip(ip: IpAddr, scoped: bool, loopback: Loopback) -> Result<(), Unusable> {
    if ip.is_loopback() && loopback == Loopback::Refused {
        return Err(Unusable::Loopback);
    }
    match ip {
        IpAddr::V4(v4) => {
            if v4.octets()[0] == 0 {
                return Err(Unusable::Unspecified);
            }
            if v4.is_multicast() {
                return Err(Unusable::Multicast);
            }
            if v4.is_broadcast() {
                return Err(Unusable::Broadcast);
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                return Err(Unusable::Unspecified);
            }
            if v6.is_multicast() {
                return Err(Unusable::Multicast);
            }
            // fe80::/10.
            if v6.segments()[0] & 0xffc0 == 0xfe80 && !scoped {
                return Err(Unusable::LinkLocal);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, loopback: Loopback) -> Result<SocketAddr, Unusable> {
        usable(text.parse().unwrap(), loopback)
    }

    #[test]
    fn a_mapped_address_is_the_ipv4_address_it_stands_for() {
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:51820".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.1:51820".parse().unwrap());
        for plain in ["192.0.2.1:1", "[2001:db8::1]:1", "[::1]:1", "[::7f00:1]:1"] {
            let e: SocketAddr = plain.parse().unwrap();
            assert_eq!(canonical(e), e, "{plain}");
        }
    }

    #[test]
    fn unusable_endpoints_are_named_mapped_forms_included() {
        use Unusable::{Broadcast, LinkLocal, Multicast, PortZero, Unspecified};
        let bad = [
            ("0.0.0.0:1", Unspecified),
            ("0.1.2.3:1", Unspecified),
            ("[::]:1", Unspecified),
            ("[::ffff:0.0.0.0]:1", Unspecified),
            ("1.2.3.4:0", PortZero),
            ("[::ffff:1.2.3.4]:0", PortZero),
            ("224.0.0.1:1", Multicast),
            ("[::ffff:224.0.0.1]:1", Multicast),
            ("[ff02::1]:1", Multicast),
            ("255.255.255.255:1", Broadcast),
            ("[::ffff:255.255.255.255]:1", Broadcast),
            ("127.0.0.1:1", Unusable::Loopback),
            ("[::ffff:127.0.0.1]:51820", Unusable::Loopback),
            ("[::1]:1", Unusable::Loopback),
            ("[fe80::1]:1", LinkLocal),
        ];
        for (a, why) in bad {
            assert_eq!(check(a, Loopback::Refused), Err(why), "{a}");
        }
    }

    #[test]
    fn usable_endpoints_come_back_canonical() {
        for (a, want) in [
            ("192.0.2.1:51820", "192.0.2.1:51820"),
            ("[::ffff:192.0.2.1]:51820", "192.0.2.1:51820"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("10.0.0.1:1", "10.0.0.1:1"),
        ] {
            assert_eq!(
                check(a, Loopback::Refused),
                Ok(want.parse().unwrap()),
                "{a}"
            );
        }
    }

    #[test]
    fn loopback_is_usable_only_when_allowed_and_mapped_loopback_likewise() {
        for a in ["127.0.0.1:1", "[::1]:1"] {
            assert_eq!(check(a, Loopback::Allowed), Ok(a.parse().unwrap()));
        }
        assert_eq!(
            check("[::ffff:127.0.0.1]:1", Loopback::Allowed),
            Ok("127.0.0.1:1".parse().unwrap())
        );
        // Allowing loopback allows nothing else.
        assert_eq!(
            check("[::ffff:224.0.0.1]:1", Loopback::Allowed),
            Err(Unusable::Multicast)
        );
    }

    #[test]
    fn a_link_local_address_is_usable_only_with_its_interface_scope() {
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            51820,
            0,
            2,
        ));
        assert_eq!(usable(scoped, Loopback::Refused), Ok(scoped));
        assert_eq!(
            usable_ip("fe80::1".parse().unwrap(), Loopback::Refused),
            Err(Unusable::LinkLocal)
        );
    }

    #[test]
    fn an_address_alone_follows_the_same_rules() {
        let ip = |a: &str| -> IpAddr { a.parse().unwrap() };
        assert_eq!(
            usable_ip(ip("::ffff:192.0.2.1"), Loopback::Refused),
            Ok(ip("192.0.2.1"))
        );
        assert_eq!(
            usable_ip(ip("::ffff:127.0.0.1"), Loopback::Refused),
            Err(Unusable::Loopback)
        );
        assert_eq!(
            usable_ip(ip("::ffff:224.0.0.1"), Loopback::Allowed),
            Err(Unusable::Multicast)
        );
    }
}
