//! What the host lets weft do, and what weft says when the host refuses.
//!
//! [`ipv6`] answers, once per process, whether this host carries IPv6. A
//! host can switch IPv6 off (`net.ipv6.conf.all.disable_ipv6=1` and
//! `net.ipv6.conf.default.disable_ipv6=1`, as hardened images do) or run a
//! kernel without it (`ipv6.disable=1`); on such a host every part of weft
//! that would give the interface an IPv6 address, program an IPv6 route or
//! open an IPv6 listener asks [`ipv6`] first and leaves IPv6 out, so the
//! node runs IPv4-only and says so in one WARN line
//! ([`ipv4_only_warning`]) instead of failing at its first IPv6 step.
//!
//! [`StepError`] is how weft reports the OS refusing one of its set-up
//! steps (creating the TUN device, setting its MTU or an address, bringing
//! it up, binding a socket, programming a route): the step by name, the
//! errno by name, and what that errno means for that step. EPERM (a
//! missing capability) is not EACCES (file modes, or IPv6 disabled on the
//! interface) is not EBUSY (another process holds the device) is not
//! EAFNOSUPPORT (a kernel without IPv6), and each gets its own advice.
//!
//! This module only reads host settings (`/proc/sys/net/ipv6`); it never
//! changes one.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use ip_network::IpNetwork;
use nix::errno::Errno;

use crate::config::Config;

/// Where the kernel keeps the IPv6 settings of each interface, and of
/// `all` and `default` (the value a new interface starts with).
const IPV6_CONF: &str = "/proc/sys/net/ipv6/conf";

/// Whether this host carries IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6 {
    /// IPv6 works: dual-stack sockets, an IPv6 overlay address, IPv6 routes.
    Enabled,
    /// The kernel has IPv6 but the host switched it off; `setting` names
    /// the sysctl(s) that say so, e.g. `net.ipv6.conf.all.disable_ipv6=1`.
    /// A new interface such as weft's TUN device takes `default`, so with
    /// either set weft's interface, or every other one, has no IPv6.
    Disabled {
        /// The sysctl(s) found set.
        setting: &'static str,
    },
    /// The kernel has no IPv6 at all: an IPv6 socket fails with
    /// EAFNOSUPPORT (booted with `ipv6.disable=1`, or built without it).
    Unsupported,
}

impl Ipv6 {
    /// Probes this host (the network namespace of the calling thread): an
    /// IPv6 socket, then the `all` and `default` `disable_ipv6` settings.
    pub fn probe() -> Self {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(0));
        let read =
            |which: &str| std::fs::read_to_string(format!("{IPV6_CONF}/{which}/disable_ipv6")).ok();
        Self::judge(socket, read("all").as_deref(), read("default").as_deref())
    }

    /// The verdict from what [`Ipv6::probe`] found: the errno of opening an
    /// IPv6 socket, and the text of the `all` and `default` settings
    /// (`None`: unreadable).
    fn judge(socket: Result<(), i32>, all: Option<&str>, default: Option<&str>) -> Self {
        if socket == Err(libc::EAFNOSUPPORT) {
            return Ipv6::Unsupported;
        }
        // Any value but 0 disables, as the kernel reads it.
        let set =
            |v: Option<&str>| v.is_some_and(|v| v.trim().parse::<i64>().is_ok_and(|n| n != 0));
        match (set(all), set(default)) {
            (true, true) => Ipv6::Disabled {
                setting: "net.ipv6.conf.all.disable_ipv6=1, net.ipv6.conf.default.disable_ipv6=1",
            },
            (true, false) => Ipv6::Disabled {
                setting: "net.ipv6.conf.all.disable_ipv6=1",
            },
            (false, true) => Ipv6::Disabled {
                setting: "net.ipv6.conf.default.disable_ipv6=1",
            },
            // Unreadable settings (no /proc) prove nothing: weft tries
            // IPv6, and a refusal is reported as the step it failed.
            (false, false) => Ipv6::Enabled,
        }
    }

    /// Whether weft uses IPv6 on this host.
    pub fn usable(self) -> bool {
        self == Ipv6::Enabled
    }

    /// Why IPv6 is not used, for messages; `None` when it is.
    pub fn why_not(self) -> Option<String> {
        match self {
            Ipv6::Enabled => None,
            Ipv6::Disabled { setting } => Some(format!("IPv6 is disabled on this host ({setting})")),
            Ipv6::Unsupported => Some(
                "this kernel has no IPv6 (an IPv6 socket fails with EAFNOSUPPORT: booted with ipv6.disable=1?)"
                    .to_string(),
            ),
        }
    }
}

/// This host's IPv6, probed on first use and then fixed for the life of
/// the process, so the interface, the routes and every listener agree.
pub fn ipv6() -> Ipv6 {
    static PROBED: OnceLock<Ipv6> = OnceLock::new();
    *PROBED.get_or_init(Ipv6::probe)
}

/// The one WARN line of a node on a host without IPv6: what is left out.
/// `None` when the host has IPv6. An error when nothing would be left to
/// run: an interface with no IPv4 address.
pub fn ipv4_only_warning(ipv6: Ipv6, config: &Config) -> anyhow::Result<Option<String>> {
    let Some(why) = ipv6.why_not() else {
        return Ok(None);
    };
    let iface = &config.interface;
    if !iface.address.iter().any(|a| a.addr.is_ipv4()) {
        anyhow::bail!(
            "{why}, and interface.address holds no IPv4 address: weft has nothing to carry"
        );
    }
    let mut skipped = Vec::new();
    let v6: Vec<String> = iface
        .address
        .iter()
        .filter(|a| a.addr.is_ipv6())
        .map(|a| format!("{}/{}", a.addr, a.prefix))
        .collect();
    if !v6.is_empty() {
        skipped.push(format!(
            "the IPv6 overlay address {} on {}",
            v6.join(", "),
            iface.name
        ));
    }
    skipped.push("IPv6 routes".to_string());
    let mut listeners = vec![format!("data plane UDP {}", iface.listen_port)];
    if let Some(mesh) = &config.mesh {
        listeners.push(format!(
            "control plane UDP {port}, join TCP {port}",
            port = mesh.join_port
        ));
    }
    skipped.push(format!("IPv6 listeners ({})", listeners.join(", ")));
    let v6_peers: Vec<&str> = config
        .peers
        .iter()
        .filter(|p| p.endpoint.is_some_and(|e| e.is_ipv6()))
        .map(|p| p.name.as_str())
        .collect();
    if !v6_peers.is_empty() {
        skipped.push(format!(
            "the IPv6 endpoints of peer(s) {}",
            v6_peers.join(", ")
        ));
    }
    Ok(Some(format!(
        "{why}: running IPv4-only; skipped: {}; inner IPv4 is carried as usual",
        skipped.join("; ")
    )))
}

/// A set-up step the OS can refuse, named in [`StepError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Creating the TUN device `name` (opening `/dev/net/tun`, TUNSETIFF).
    CreateTun {
        /// The interface name.
        name: String,
    },
    /// Setting the MTU of interface `name`.
    SetMtu {
        /// The interface name.
        name: String,
        /// The MTU asked for.
        mtu: u16,
    },
    /// Putting `addr/prefix` on interface `name`.
    SetAddress {
        /// The interface name.
        name: String,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix: u8,
    },
    /// Bringing interface `name` up.
    BringUp {
        /// The interface name.
        name: String,
    },
    /// Binding the data-plane UDP socket to `addr`.
    BindUdp {
        /// The local address.
        addr: SocketAddr,
    },
    /// Programming the route to `prefix` through weft's interface.
    SetRoute {
        /// The destination.
        prefix: IpNetwork,
    },
    /// Listening for the control plane (QUIC) on UDP `addr`.
    ListenControl {
        /// The local address.
        addr: SocketAddr,
    },
    /// Listening for joins on TCP `addr`.
    ListenJoin {
        /// The local address.
        addr: SocketAddr,
    },
    /// Serving metrics on TCP `addr`.
    ListenMetrics {
        /// The local address.
        addr: SocketAddr,
    },
}

impl Step {
    /// The interface the step acts on, if any.
    fn interface(&self) -> Option<&str> {
        match self {
            Step::CreateTun { name }
            | Step::SetMtu { name, .. }
            | Step::SetAddress { name, .. }
            | Step::BringUp { name } => Some(name),
            _ => None,
        }
    }

    /// The local address of a listening step.
    fn listen_addr(&self) -> Option<SocketAddr> {
        match self {
            Step::BindUdp { addr }
            | Step::ListenControl { addr }
            | Step::ListenJoin { addr }
            | Step::ListenMetrics { addr } => Some(*addr),
            _ => None,
        }
    }

    /// Whether the step is about IPv6.
    fn is_ipv6(&self) -> bool {
        match self {
            Step::SetAddress { addr, .. } => addr.is_ipv6(),
            Step::SetRoute { prefix } => matches!(prefix, IpNetwork::V6(_)),
            _ => self.listen_addr().is_some_and(|a| a.is_ipv6()),
        }
    }

    /// The configuration key that sets what the step uses.
    fn setting(&self) -> &'static str {
        match self {
            Step::CreateTun { .. } | Step::BringUp { .. } => "interface.name",
            Step::SetMtu { .. } => "interface.mtu",
            Step::SetAddress { .. } => "interface.address",
            Step::BindUdp { .. } => "interface.listen_port",
            Step::SetRoute { .. } => "a member's or peer's allowed IPs",
            Step::ListenControl { .. } | Step::ListenJoin { .. } => "mesh.join_port",
            Step::ListenMetrics { .. } => "metrics.listen",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateTun { name } => write!(f, "creating TUN device {name}"),
            Step::SetMtu { name, mtu } => write!(f, "setting MTU {mtu} on {name}"),
            Step::SetAddress { name, addr, prefix } => {
                write!(f, "setting address {addr}/{prefix} on {name}")
            }
            Step::BringUp { name } => write!(f, "bringing {name} up"),
            Step::BindUdp { addr } => write!(f, "binding the data-plane UDP socket to {addr}"),
            Step::SetRoute { prefix } => write!(f, "setting the route to {prefix}"),
            Step::ListenControl { addr } => {
                write!(f, "listening for the control plane on UDP {addr}")
            }
            Step::ListenJoin { addr } => write!(f, "listening for joins on TCP {addr}"),
            Step::ListenMetrics { addr } => write!(f, "serving metrics on TCP {addr}"),
        }
    }
}

/// A set-up step the OS refused: the step, the errno by name, and what
/// that errno means for that step.
///
/// Displayed as `STEP: ERRNO (description): advice`, e.g. `creating TUN
/// device weft0: EPERM (Operation not permitted): weft needs CAP_NET_ADMIN
/// …`.
#[derive(Debug)]
pub struct StepError {
    step: Step,
    error: io::Error,
    advice: Option<String>,
}

impl StepError {
    /// Explains `error`, returned by the OS for `step`. For an IPv6 step
    /// refused with EACCES it reads the interface's own `disable_ipv6`, so
    /// the message says whether that was the reason.
    pub fn new(step: Step, error: io::Error) -> Self {
        let v6_off_on_interface = match (error.raw_os_error(), step.interface()) {
            (Some(libc::EACCES), Some(name)) if step.is_ipv6() => {
                std::fs::read_to_string(format!("{IPV6_CONF}/{name}/disable_ipv6"))
                    .ok()
                    .map(|v| v.trim() != "0")
            }
            _ => None,
        };
        let advice = advice(&step, &error, v6_off_on_interface);
        Self {
            step,
            error,
            advice,
        }
    }

    /// The first `io::Error` in `error`'s chain of causes, explained as
    /// [`StepError::new`] does; without one, `error`'s own text.
    pub fn from_chain(step: Step, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(n) = e
                .downcast_ref::<io::Error>()
                .and_then(io::Error::raw_os_error)
            {
                return Self::new(step, io::Error::from_raw_os_error(n));
            }
            cause = e.source();
        }
        Self::new(step, io::Error::other(error.to_string()))
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.step)?;
        match self.error.raw_os_error() {
            Some(n) => {
                let errno = Errno::from_raw(n);
                if errno == Errno::UnknownErrno {
                    write!(f, "os error {n}")?;
                } else {
                    write!(f, "{errno:?} ({})", errno.desc())?;
                }
            }
            None => write!(f, "{}", self.error)?,
        }
        if let Some(advice) = &self.advice {
            write!(f, ": {advice}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StepError {}

/// What `error` means for `step`, where weft knows better than the
/// errno's description. `v6_off_on_interface`: the interface's own
/// `disable_ipv6`, read for an IPv6 step refused with EACCES.
fn advice(step: &Step, error: &io::Error, v6_off_on_interface: Option<bool>) -> Option<String> {
    let errno = error.raw_os_error()?;
    let on_interface = step.interface().is_some() || matches!(step, Step::SetRoute { .. });
    let listen = step.listen_addr();
    let low_port = listen.is_some_and(|a| a.port() != 0 && a.port() < 1024);
    let setting = step.setting();
    Some(match errno {
        libc::EPERM if matches!(step, Step::CreateTun { .. }) => {
            "weft needs CAP_NET_ADMIN (run it as root, or grant the capability to the weft binary); \
             in a container the device rules must also allow /dev/net/tun"
                .to_string()
        }
        libc::EPERM if on_interface => {
            "weft needs CAP_NET_ADMIN to configure its interface and routes".to_string()
        }
        libc::EACCES if matches!(step, Step::CreateTun { .. }) => {
            "this user may not open /dev/net/tun (its mode is usually 0666; see ls -l /dev/net/tun)"
                .to_string()
        }
        libc::EACCES if step.is_ipv6() && on_interface => match (v6_off_on_interface, step.interface()) {
            (Some(true), Some(name)) => format!(
                "IPv6 is disabled on {name} (net.ipv6.conf.{name}.disable_ipv6=1; new interfaces take \
                 net.ipv6.conf.default.disable_ipv6)"
            ),
            _ => "the kernel refuses IPv6 on this interface (is IPv6 disabled on it? see \
                  net.ipv6.conf.*.disable_ipv6)"
                .to_string(),
        },
        libc::EACCES | libc::EPERM if low_port => {
            "ports below 1024 need CAP_NET_BIND_SERVICE".to_string()
        }
        libc::EACCES | libc::EPERM => {
            "refused by a security policy (seccomp, SELinux, AppArmor, a container's rules)".to_string()
        }
        libc::EBUSY if matches!(step, Step::CreateTun { .. }) => {
            "a TUN device of that name exists and another process holds it (is another weft running?)"
                .to_string()
        }
        libc::EINVAL if matches!(step, Step::CreateTun { .. }) => format!(
            "an interface of that name exists and is not a TUN device weft can take (choose another {setting})"
        ),
        libc::EEXIST if matches!(step, Step::CreateTun { .. }) => {
            format!("an interface of that name already exists (choose another {setting})")
        }
        libc::EEXIST if matches!(step, Step::SetAddress { .. }) => {
            "the address is already on the interface".to_string()
        }
        libc::EEXIST => "it exists already".to_string(),
        libc::ENOENT | libc::ENODEV if matches!(step, Step::CreateTun { .. }) => {
            "/dev/net/tun is missing (load the tun module: modprobe tun; in a container, pass the device in)"
                .to_string()
        }
        libc::ENODEV | libc::ENXIO if on_interface => {
            "the interface is gone (deleted while weft set it up?)".to_string()
        }
        libc::EINVAL if matches!(step, Step::SetMtu { .. }) => {
            format!("the kernel refuses this MTU for the device ({setting})")
        }
        libc::EINVAL if matches!(step, Step::SetAddress { .. }) => {
            format!("the kernel refuses this address or prefix length ({setting})")
        }
        libc::EAFNOSUPPORT if step.is_ipv6() => {
            "this kernel has no IPv6 (booted with ipv6.disable=1, or built without it)".to_string()
        }
        libc::EAFNOSUPPORT => "this kernel does not support that address family".to_string(),
        libc::EADDRINUSE => {
            format!("another program (another weft?) already uses this port ({setting})")
        }
        libc::EADDRNOTAVAIL if listen.is_some_and(|a| a.is_ipv6()) => format!(
            "the address is not on this host (is IPv6 disabled here?) ({setting})"
        ),
        libc::EADDRNOTAVAIL => format!("the address is not on this host ({setting})"),
        libc::ENETUNREACH | libc::ENETDOWN if on_interface => {
            "the interface is down or has no address of this family".to_string()
        }
        libc::EMFILE | libc::ENFILE => {
            "out of file descriptors (raise the limit: ulimit -n, LimitNOFILE=)".to_string()
        }
        libc::ENOMEM | libc::ENOBUFS => "the kernel is out of memory".to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained(step: Step, errno: i32) -> String {
        StepError {
            advice: advice(&step, &io::Error::from_raw_os_error(errno), None),
            step,
            error: io::Error::from_raw_os_error(errno),
        }
        .to_string()
    }

    fn tun() -> Step {
        Step::CreateTun {
            name: "weft0".into(),
        }
    }

    fn v6_address() -> Step {
        Step::SetAddress {
            name: "weft0".into(),
            addr: "fd00::1".parse().unwrap(),
            prefix: 64,
        }
    }

    #[test]
    fn ipv6_is_judged_off_by_either_setting_and_unsupported_without_an_ipv6_socket() {
        assert_eq!(Ipv6::judge(Ok(()), Some("0\n"), Some("0\n")), Ipv6::Enabled);
        assert_eq!(Ipv6::judge(Ok(()), None, None), Ipv6::Enabled);
        assert!(matches!(
            Ipv6::judge(Ok(()), Some("1\n"), Some("1\n")),
            Ipv6::Disabled { setting } if setting.contains("all") && setting.contains("default")
        ));
        assert!(matches!(
            Ipv6::judge(Ok(()), Some("0\n"), Some("1\n")),
            Ipv6::Disabled { setting } if setting == "net.ipv6.conf.default.disable_ipv6=1"
        ));
        assert!(matches!(
            Ipv6::judge(Ok(()), Some("2"), Some("0")),
            Ipv6::Disabled { setting } if setting == "net.ipv6.conf.all.disable_ipv6=1"
        ));
        assert_eq!(
            Ipv6::judge(Err(libc::EAFNOSUPPORT), None, None),
            Ipv6::Unsupported
        );
        // Out of descriptors says nothing about IPv6.
        assert_eq!(
            Ipv6::judge(Err(libc::EMFILE), Some("0"), Some("0")),
            Ipv6::Enabled
        );
        assert!(!Ipv6::Unsupported.usable() && Ipv6::Enabled.usable());
    }

    #[test]
    fn creating_the_tun_device_tells_eperm_eacces_ebusy_einval_and_enoent_apart() {
        let eperm = explained(tun(), libc::EPERM);
        assert!(
            eperm.starts_with("creating TUN device weft0: EPERM (Operation not permitted): ")
                && eperm.contains("CAP_NET_ADMIN"),
            "{eperm}"
        );
        let eacces = explained(tun(), libc::EACCES);
        assert!(
            eacces.contains("EACCES") && eacces.contains("may not open /dev/net/tun"),
            "{eacces}"
        );
        assert!(!eacces.contains("CAP_NET_ADMIN"), "{eacces}");
        assert!(explained(tun(), libc::EBUSY).contains("another process holds it"));
        assert!(explained(tun(), libc::EINVAL).contains("not a TUN device"));
        assert!(explained(tun(), libc::EEXIST).contains("EEXIST"));
        assert!(explained(tun(), libc::ENOENT).contains("modprobe tun"));
    }

    #[test]
    fn an_ipv6_address_refused_with_eacces_blames_disabled_ipv6_not_a_capability() {
        let step = v6_address();
        let error = io::Error::from_raw_os_error(libc::EACCES);
        let told = StepError {
            advice: advice(&step, &error, Some(true)),
            step,
            error,
        }
        .to_string();
        assert_eq!(
            told,
            "setting address fd00::1/64 on weft0: EACCES (Permission denied): IPv6 is disabled on \
             weft0 (net.ipv6.conf.weft0.disable_ipv6=1; new interfaces take \
             net.ipv6.conf.default.disable_ipv6)"
        );
        let unsure = explained(v6_address(), libc::EACCES);
        assert!(
            unsure.contains("disable_ipv6") && !unsure.contains("CAP_NET_ADMIN"),
            "{unsure}"
        );
        let no_kernel = explained(v6_address(), libc::EAFNOSUPPORT);
        assert!(
            no_kernel.contains("EAFNOSUPPORT") && no_kernel.contains("ipv6.disable=1"),
            "{no_kernel}"
        );
        assert!(explained(v6_address(), libc::EEXIST).contains("already on the interface"));
        assert!(explained(v6_address(), libc::EPERM).contains("CAP_NET_ADMIN"));
    }

    #[test]
    fn each_step_is_named_in_its_message() {
        let name = || "weft0".to_string();
        let udp: SocketAddr = "[::]:51820".parse().unwrap();
        let join: SocketAddr = "0.0.0.0:51821".parse().unwrap();
        for (step, errno, starts) in [
            (
                Step::SetMtu {
                    name: name(),
                    mtu: 1420,
                },
                libc::EINVAL,
                "setting MTU 1420 on weft0: EINVAL",
            ),
            (
                Step::BringUp { name: name() },
                libc::EPERM,
                "bringing weft0 up: EPERM",
            ),
            (
                Step::BindUdp { addr: udp },
                libc::EADDRINUSE,
                "binding the data-plane UDP socket to [::]:51820: EADDRINUSE",
            ),
            (
                Step::BindUdp { addr: udp },
                libc::EAFNOSUPPORT,
                "binding the data-plane UDP socket to [::]:51820: EAFNOSUPPORT",
            ),
            (
                Step::SetRoute {
                    prefix: "fd00::2/128".parse().unwrap(),
                },
                libc::EACCES,
                "setting the route to fd00::2/128: EACCES",
            ),
            (
                Step::ListenControl {
                    addr: "0.0.0.0:51821".parse().unwrap(),
                },
                libc::EADDRINUSE,
                "listening for the control plane on UDP 0.0.0.0:51821: EADDRINUSE",
            ),
            (
                Step::ListenJoin { addr: join },
                libc::EMFILE,
                "listening for joins on TCP 0.0.0.0:51821: EMFILE",
            ),
            (
                Step::ListenMetrics {
                    addr: "[::1]:9820".parse().unwrap(),
                },
                libc::EADDRNOTAVAIL,
                "serving metrics on TCP [::1]:9820: EADDRNOTAVAIL",
            ),
        ] {
            let told = explained(step, errno);
            assert!(told.starts_with(starts), "{told}");
        }
        assert!(explained(Step::BindUdp { addr: udp }, libc::EADDRINUSE)
            .contains("interface.listen_port"));
        let low: SocketAddr = "0.0.0.0:500".parse().unwrap();
        assert!(explained(Step::ListenJoin { addr: low }, libc::EACCES)
            .contains("CAP_NET_BIND_SERVICE"));
        assert!(explained(
            Step::ListenMetrics {
                addr: "[::1]:9820".parse().unwrap()
            },
            libc::EADDRNOTAVAIL
        )
        .contains("IPv6 disabled"));
    }

    #[test]
    fn an_error_without_an_errno_keeps_its_own_text_and_one_in_a_chain_is_found() {
        let told = StepError::new(
            tun(),
            io::Error::new(io::ErrorKind::InvalidInput, "device name too long"),
        );
        assert_eq!(
            told.to_string(),
            "creating TUN device weft0: device name too long"
        );
        let wrapped =
            anyhow::Error::new(io::Error::from_raw_os_error(libc::EADDRINUSE)).context("quic");
        let step = Step::ListenControl {
            addr: "0.0.0.0:51821".parse().unwrap(),
        };
        let found = StepError::from_chain(step, wrapped.as_ref()).to_string();
        assert!(
            found.starts_with("listening for the control plane on UDP 0.0.0.0:51821: EADDRINUSE"),
            "{found}"
        );
    }
}

/// The probe and the diagnosis against the real kernel, each in a network
/// namespace made for it (these need root, as CI runs them).
#[cfg(test)]
mod kernel_tests {
    use super::*;

    use std::fs::File;
    use std::path::PathBuf;
    use std::process::Command;

    use crate::config::{Interface, IpNetworkWithHost};
    use crate::tun;

    const DEV: &str = "weft-h0";

    fn run(argv: &[&str]) -> String {
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("running {argv:?}: {e}"));
        assert!(
            out.status.success(),
            "{argv:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A namespace of its own, with IPv6 switched off as hardened images
    /// do (both settings, before any link exists) unless `ipv6`; deleted
    /// on drop, also when the test fails.
    struct Netns {
        name: String,
    }

    impl Netns {
        fn create(tag: &str, ipv6: bool) -> Netns {
            assert!(
                nix::unistd::geteuid().is_root(),
                "this test creates a network namespace and must run as root (CI does)"
            );
            let name = format!("weft-host-{tag}-{}", std::process::id());
            // Only a crashed run of this test whose pid was reused can own the name.
            if std::path::Path::new(&format!("/run/netns/{name}")).exists() {
                let _ = Command::new("ip").args(["netns", "del", &name]).status();
            }
            run(&["ip", "netns", "add", &name]);
            let ns = Netns { name };
            if !ipv6 {
                run(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns.name,
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ]);
            }
            ns
        }

        /// `ip -n NS ARGS`.
        fn ip(&self, args: &[&str]) -> String {
            let mut argv = vec!["ip", "-n", &self.name];
            argv.extend_from_slice(args);
            run(&argv)
        }

        /// Runs `f` on a thread that joined the namespace, inside a Tokio
        /// runtime (the TUN device needs one).
        fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            let path = format!("/run/netns/{}", self.name);
            std::thread::scope(|s| {
                s.spawn(|| {
                    let file = File::open(&path).expect("the namespace file");
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("entering the namespace");
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime");
                    let _entered = runtime.enter();
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    fn interface(addresses: &[&str]) -> Interface {
        Interface {
            name: DEV.to_string(),
            private_key_file: PathBuf::new(),
            listen_port: 0,
            address: addresses
                .iter()
                .map(|a| {
                    let (addr, prefix) = a.split_once('/').unwrap();
                    IpNetworkWithHost {
                        addr: addr.parse().unwrap(),
                        prefix: prefix.parse().unwrap(),
                    }
                })
                .collect(),
            mtu: 1420,
            pmtu_discovery: true,
            mss_clamp: true,
        }
    }

    fn dual_stack() -> Interface {
        interface(&["100.64.9.1/24", "fd00:9::1/64"])
    }

    #[test]
    fn the_probe_sees_ipv6_switched_off_in_the_namespace_it_runs_in() {
        let off = Netns::create("probe-off", false);
        let on = Netns::create("probe-on", true);
        assert_eq!(
            off.run(Ipv6::probe),
            Ipv6::Disabled {
                setting: "net.ipv6.conf.all.disable_ipv6=1, net.ipv6.conf.default.disable_ipv6=1"
            }
        );
        assert_eq!(on.run(Ipv6::probe), Ipv6::Enabled);
    }

    #[test]
    fn on_a_host_with_ipv6_disabled_the_tun_device_comes_up_with_its_ipv4_address_only() {
        let ns = Netns::create("tun-off", false);
        ns.run(|| {
            let tun = tun::create_for(&dual_stack(), Ipv6::probe()).expect("an IPv4-only device");
            let addrs = ns.ip(&["-o", "addr", "show", "dev", DEV]);
            assert!(addrs.contains("inet 100.64.9.1/24"), "{addrs}");
            assert!(!addrs.contains("inet6"), "{addrs}");
            let link = ns.ip(&["-o", "link", "show", "dev", DEV]);
            assert!(link.contains(",UP") && link.contains("mtu 1420"), "{link}");
            drop(tun);
        });
    }

    #[test]
    fn an_ipv6_address_the_interface_refuses_is_eacces_with_ipv6_disabled_not_a_missing_capability()
    {
        let ns = Netns::create("tun-eacces", false);
        // As if the probe had missed it: the kernel's refusal itself.
        let told = ns.run(|| {
            format!(
                "{:#}",
                tun::create_for(&dual_stack(), Ipv6::Enabled).unwrap_err()
            )
        });
        assert_eq!(
            told,
            format!(
                "setting address fd00:9::1/64 on {DEV}: EACCES (Permission denied): IPv6 is disabled \
                 on {DEV} (net.ipv6.conf.{DEV}.disable_ipv6=1; new interfaces take \
                 net.ipv6.conf.default.disable_ipv6)"
            )
        );
        assert!(
            ns.ip(&["-o", "link", "show"])
                .lines()
                .all(|l| !l.contains(DEV)),
            "a failed start leaves no device behind"
        );
    }

    #[test]
    fn a_tun_device_another_process_holds_is_ebusy_and_an_interface_that_is_no_tun_device_einval() {
        let ns = Netns::create("tun-busy", true);
        let v4 = interface(&["100.64.9.1/24"]);
        let busy = ns.run(|| {
            let _held = tun::create_for(&v4, Ipv6::Enabled).expect("the first device");
            format!("{:#}", tun::create_for(&v4, Ipv6::Enabled).unwrap_err())
        });
        assert!(
            busy.starts_with(&format!(
                "creating TUN device {DEV}: EBUSY (Device or resource busy): "
            )) && busy.contains("another process holds it"),
            "{busy}"
        );
        ns.ip(&[
            "link", "add", DEV, "type", "veth", "peer", "name", "weft-h1",
        ]);
        let taken = ns.run(|| format!("{:#}", tun::create_for(&v4, Ipv6::Enabled).unwrap_err()));
        assert!(
            taken.starts_with(&format!(
                "creating TUN device {DEV}: EINVAL (Invalid argument): "
            )) && taken.contains("not a TUN device"),
            "{taken}"
        );
    }
}
