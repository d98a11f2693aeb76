//! End-to-end tests of the `weft` binary: real nodes, real TUN devices, real UDP, each node in
//! its own Linux network namespace. Every test builds its own namespaces with unique names and
//! removes them again, also when it fails, so tests run in parallel and survive leftovers from a
//! crashed run. Underlay traffic stays inside 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24,
//! overlay traffic inside 100.64.0.0/10 and fd00::/8; nothing leaves the namespaces the tests
//! made. They need root and say so plainly instead of skipping; `tests/run.sh` runs them.
//! `WEFT_E2E_BIN=PATH` points them at another build of the binary than cargo's own.

mod harness;

mod adversary;
mod authorities;
mod certificates;
mod cli;
mod deploy;
mod host;
mod hostile;
mod mesh;
mod nat;
mod operability;
mod pmtu;
mod relay;
mod restart;
mod roaming;
mod rogue;
mod scale;
mod tunnel;
