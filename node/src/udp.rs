//! The data-plane UDP socket: one dual-stack socket, batched with
//! quinn-udp (recvmmsg, GRO on receive, GSO on send), don't-fragment set.
//!
//! Socket options live here and nowhere else. IPv4 peers are addressed
//! through v4-mapped IPv6 addresses on the dual-stack socket; addresses
//! handed to the protocol are always canonical (plain IPv4 for IPv4 peers),
//! so an endpoint compares equal however it was learned.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use anyhow::Context;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;

use crate::host::{self, Ipv6, Step, StepError};

/// Socket buffer size asked for: enough for a burst of GSO batches at
/// multi-gigabit rates (wireguard-go and quinn use the same order).
const SOCKET_BUFFER: usize = 7 << 20;

/// The bound data-plane socket.
#[derive(Debug)]
pub struct UdpIo {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    v6: bool,
}

/// A non-blocking UDP socket bound to `addr`; an IPv6 one is dual-stack
/// whatever `net.ipv6.bindv6only` says, so IPv4 peers reach it too.
fn bind_socket(addr: SocketAddr) -> io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn force_buffer(fd: i32, option: libc::c_int) {
    let size = SOCKET_BUFFER as libc::c_int;
    // SAFETY: fd is an open socket owned by the caller for the duration of
    // the call, and the option value points to a live c_int of the given
    // length. Failure (no CAP_NET_ADMIN) is harmless: the normal option
    // set before this one stays in force.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl UdpIo {
    /// Binds `[::]:port` dual-stack, or `0.0.0.0:port` on a host without
    /// IPv6 ([`host::ipv6`]). Must be called inside a tokio runtime.
    pub fn bind(port: u16) -> anyhow::Result<Self> {
        Self::bind_for(port, host::ipv6())
    }

    /// [`UdpIo::bind`] for a host whose IPv6 is `ipv6`. A refusal is
    /// reported as the step it stopped, with its errno ([`StepError`]).
    fn bind_for(port: u16, ipv6: Ipv6) -> anyhow::Result<Self> {
        let any: IpAddr = if ipv6.usable() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let addr = SocketAddr::new(any, port);
        let socket = bind_socket(addr).map_err(|e| StepError::new(Step::BindUdp { addr }, e))?;
        let is_v6 = addr.is_ipv6();
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        force_buffer(socket.as_raw_fd(), libc::SO_RCVBUFFORCE);
        force_buffer(socket.as_raw_fd(), libc::SO_SNDBUFFORCE);
        let std_socket: std::net::UdpSocket = socket.into();
        let state = UdpSocketState::new(UdpSockRef::from(&std_socket))
            .context("cannot configure the UDP socket")?;
        // ICMP errors (above all "fragmentation needed") are read from the
        // error queue; where the kernel refuses, discovery still works by
        // probing alone.
        if let Err(e) = state.enable_transport_errors(UdpSockRef::from(&std_socket)) {
            tracing::debug!(error = %e, "no ICMP errors from the socket");
        }
        let socket = tokio::net::UdpSocket::from_std(std_socket)
            .context("cannot register the UDP socket")?;
        Ok(Self {
            socket,
            state,
            v6: is_v6,
        })
    }

    /// The bound local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// How many segments one send may carry (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// How many segments one received buffer may hold (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// Waits until a receive may succeed.
    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Receives a batch without waiting; `WouldBlock` when none is queued.
    /// Source addresses in `meta` are canonical.
    pub fn try_recv(
        &self,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let n = self.socket.try_io(Interest::READABLE, || {
            self.state.recv((&self.socket).into(), bufs, meta)
        })?;
        for m in &mut meta[..n] {
            m.addr = canonical(m.addr);
        }
        Ok(n)
    }

    /// Sends `contents` to `destination`, as `segment_size`-byte datagrams
    /// when given (GSO). Waits while the socket buffer is full.
    pub async fn send(
        &self,
        destination: SocketAddr,
        contents: &[u8],
        segment_size: Option<usize>,
    ) -> io::Result<()> {
        let destination = if self.v6 {
            mapped(destination)
        } else {
            destination
        };
        let transmit = Transmit {
            destination,
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        };
        let mut retried = false;
        loop {
            match self.socket.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.socket).into(), &transmit)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.socket.writable().await?;
                }
                // An ICMP error answering an earlier datagram is reported
                // by the next send, which it fails unsent: a port
                // unreachable (an initiation to a NAT with no mapping for
                // us, say) as ECONNREFUSED, a "fragmentation needed" (true
                // or forged; discovery reads it from the error queue) as
                // EMSGSIZE. This datagram deserves its own try; one really
                // too big for the interface fails again.
                Err(e)
                    if (e.kind() == io::ErrorKind::ConnectionRefused
                        || e.raw_os_error() == Some(libc::EMSGSIZE))
                        && !retried =>
                {
                    retried = true;
                }
                other => return other,
            }
        }
    }
}

impl UdpIo {
    /// Takes one pending ICMP error from the socket's error queue: `Some`
    /// with the MTU it announces for a "too big", `Some(None)` for others.
    pub fn take_transport_error(&self) -> Option<Option<u32>> {
        match self.state.recv_transport_error((&self.socket).into()) {
            Ok(Some(e)) => Some(e.mtu()),
            _ => None,
        }
    }
}

/// The path MTU the kernel knows toward `destination`: the route's MTU,
/// lowered by any ICMP "too big" it has cached for that address.
pub fn route_mtu(destination: SocketAddr) -> Option<u16> {
    let domain = if destination.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).ok()?;
    s.connect(&destination.into()).ok()?;
    let (level, name) = if destination.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the socket is open for the whole call; `mtu` and `len` are
    // live locals of the sizes passed.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            name,
            (&mut mtu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then(|| u16::try_from(mtu).ok()).flatten()
}

/// Plain IPv4 for v4-mapped addresses.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn mapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_mtu_toward_loopback_is_the_loopback_mtu() {
        let mtu = route_mtu("127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(mtu >= 1500, "{mtu}");
    }

    #[test]
    fn mapping_round_trips_through_canonical() {
        let a: SocketAddr = "192.0.2.7:51820".parse().unwrap();
        assert!(mapped(a).is_ipv6());
        assert_eq!(canonical(mapped(a)), a);
        let b: SocketAddr = "[fd00::1]:1".parse().unwrap();
        assert_eq!(mapped(b), b);
    }

    #[tokio::test]
    async fn on_a_host_without_ipv6_the_socket_is_ipv4_and_still_carries_ipv4() {
        let off = Ipv6::Disabled {
            setting: "net.ipv6.conf.all.disable_ipv6=1",
        };
        let a = UdpIo::bind_for(0, off).unwrap();
        let b = UdpIo::bind_for(0, Ipv6::Enabled).unwrap();
        assert!(a.local_addr().unwrap().is_ipv4());
        assert!(b.local_addr().unwrap().is_ipv6());
        let port = |s: &UdpIo| s.local_addr().unwrap().port();
        let to_b = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(&b));
        let to_a = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port(&a));
        a.send(to_b, b"to b", None).await.unwrap();
        b.send(to_a, b"to a", None).await.unwrap();
        for (socket, from, text) in [(&b, to_a, b"to b"), (&a, to_b, b"to a")] {
            let mut buf = vec![0u8; 65536];
            let mut meta = [RecvMeta::default()];
            let n = loop {
                socket.readable().await.unwrap();
                match socket.try_recv(&mut [IoSliceMut::new(&mut buf)], &mut meta) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    r => break r.unwrap(),
                }
            };
            assert_eq!((n, &buf[..meta[0].len]), (1, &text[..]));
            assert_eq!(meta[0].addr, from, "canonical IPv4 source");
        }
    }

    #[tokio::test]
    async fn a_port_in_use_is_reported_as_the_bind_step_and_eaddrinuse() {
        let held = UdpIo::bind_for(0, Ipv6::Enabled).unwrap();
        let port = held.local_addr().unwrap().port();
        let told = format!("{:#}", UdpIo::bind_for(port, Ipv6::Enabled).unwrap_err());
        assert!(
            told.starts_with(&format!(
                "binding the data-plane UDP socket to [::]:{port}: EADDRINUSE"
            )) && told.contains("interface.listen_port"),
            "{told}"
        );
    }

    #[tokio::test]
    async fn a_datagram_crosses_loopback_and_its_source_is_canonical() {
        let a = UdpIo::bind(0).unwrap();
        let b = UdpIo::bind(0).unwrap();
        let to = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), b.local_addr().unwrap().port());
        a.send(to, b"hello", None).await.unwrap();
        let mut buf = vec![0u8; 65536];
        let mut meta = [RecvMeta::default()];
        b.readable().await.unwrap();
        let n = loop {
            match b.try_recv(&mut [IoSliceMut::new(&mut buf)], &mut meta) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => b.readable().await.unwrap(),
                r => break r.unwrap(),
            }
        };
        assert_eq!(n, 1);
        assert_eq!(&buf[..meta[0].len], b"hello");
        assert!(meta[0].addr.is_ipv4());
    }
}
