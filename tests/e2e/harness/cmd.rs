//! Running the system tools the harness drives (`ip`, `sysctl`, `iptables`, `ping`). Output is
//! captured, never inherited, so parallel tests do not interleave; a failure becomes a panic (or
//! an `Err`) that names the command line and quotes its stderr. Nothing here picks addresses.

use std::io::ErrorKind;
use std::process::{Command, Output};

/// Runs `argv` and returns its stdout; panics with the command line and stderr if it fails.
pub fn run(argv: &[&str]) -> String {
    try_run(argv).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `argv`: `Ok(stdout)` on exit status 0, otherwise `Err` describing the failure.
pub fn try_run(argv: &[&str]) -> Result<String, String> {
    let out = output(argv);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}{}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim(),
        ))
    }
}

/// Runs `argv` to completion whatever its exit status; panics only if it cannot be started.
pub fn output(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}{}", argv.join(" "), hint(argv[0], &e)))
}

/// Which package provides a missing tool (tests/run.sh installs them all).
pub fn hint(program: &str, e: &std::io::Error) -> &'static str {
    if e.kind() != ErrorKind::NotFound {
        return "";
    }
    match program {
        "ip" => " (install iproute2; tests/run.sh does)",
        "ping" => " (install iputils-ping; tests/run.sh does)",
        "iptables" => " (install iptables; tests/run.sh does)",
        "conntrack" => " (install conntrack; tests/run.sh does)",
        "sysctl" => " (install procps; tests/run.sh does)",
        "modprobe" => " (install kmod; tests/run.sh does)",
        _ => "",
    }
}
