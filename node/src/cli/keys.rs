//! `weft genkey` and `weft pubkey`: data-plane (X25519) keys for static
//! configurations.
//!
//! A new private key goes to stdout or to a new 0600 file; a private key
//! read on stdin is never printed, only its public key.

use std::io::Read;
use std::path::Path;

use anyhow::Context;

use crate::keys;

/// `weft genkey [--out FILE]`.
pub fn genkey(out: Option<&Path>) -> anyhow::Result<()> {
    let key = keys::generate()?;
    match out {
        Some(path) => keys::write_private_key(path, &key)?,
        None => println!("{}", keys::encode(&key.to_bytes())),
    }
    Ok(())
}

/// `weft pubkey`: the public key of the private key on stdin.
pub fn pubkey() -> anyhow::Result<()> {
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read a private key on stdin")?;
    let key = keys::parse_private_key(&text).context("stdin")?;
    println!("{}", keys::encode(key.public_key().as_bytes()));
    Ok(())
}
