//! Key files: base64 X25519 keys, created with mode 0600 and refused when
//! others can read them.
//!
//! A private key never reaches a log line or an error message; errors name
//! the file, not its contents.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use weft_protocol::{PresharedKey, PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// A new private key from the operating system's RNG.
pub fn generate() -> anyhow::Result<StaticSecret> {
    let mut b = Zeroizing::new([0u8; 32]);
    getrandom::fill(b.as_mut()).map_err(|e| anyhow!("no randomness from the OS: {e}"))?;
    Ok(StaticSecret::from_bytes(*b))
}

/// Base64 of a 32-byte key.
pub fn encode(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

fn decode(text: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let bytes = Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|_| anyhow!("not valid base64"))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        bail!("a key is 32 bytes, this is {}", bytes.len());
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Parses a base64 public key.
pub fn parse_public_key(text: &str) -> anyhow::Result<PublicKey> {
    Ok(PublicKey(*decode(text)?))
}

/// Parses a base64 private key (as `weft pubkey` reads it on stdin).
pub fn parse_private_key(text: &str) -> anyhow::Result<StaticSecret> {
    Ok(StaticSecret::from_bytes(*decode(text)?))
}

fn read_secret_file(path: &Path, what: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let meta = fs::metadata(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{what} file {} is accessible to group or others (mode {mode:04o}); run: chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text = Zeroizing::new(
        fs::read_to_string(path)
            .with_context(|| format!("cannot read {what} file {}", path.display()))?,
    );
    decode(&text).with_context(|| format!("{what} file {}", path.display()))
}

/// Reads any 32-byte secret key file (base64), refusing one readable by
/// group or others; `what` names it in errors.
pub fn read_secret_bytes(path: &Path, what: &str) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    read_secret_file(path, what)
}

/// Writes a 32-byte secret as base64 to a new file with mode 0600.
pub fn write_secret_bytes(path: &Path, key: &[u8; 32]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    let text = Zeroizing::new(format!("{}\n", encode(key)));
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write key file {}", path.display()))
}

/// Reads a private key file, refusing one readable by group or others.
pub fn read_private_key(path: &Path) -> anyhow::Result<StaticSecret> {
    Ok(StaticSecret::from_bytes(*read_secret_file(
        path,
        "private key",
    )?))
}

/// Reads a pre-shared key file, with the same permission rule.
pub fn read_preshared_key(path: &Path) -> anyhow::Result<PresharedKey> {
    Ok(PresharedKey(*read_secret_file(path, "pre-shared key")?))
}

/// Writes `key` to a new file with mode 0600; refuses to overwrite.
pub fn write_private_key(path: &Path, key: &StaticSecret) -> anyhow::Result<()> {
    write_secret_bytes(path, &Zeroizing::new(key.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-keys-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_written_key_has_mode_0600_and_reads_back() {
        let dir = temp("rt");
        let path = dir.join("k");
        let key = generate().unwrap();
        write_private_key(&path, &key).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private_key(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(write_private_key(&path, &key).is_err(), "overwrote a key");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_file_readable_by_others_is_refused_with_the_fix() {
        let dir = temp("perm");
        let path = dir.join("k");
        write_private_key(&path, &generate().unwrap()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", read_private_key(&path).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn public_key_of_a_known_private_key() {
        // RFC 7748 §6.1 test vector (Alice).
        let sk = parse_private_key("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=").unwrap();
        assert_eq!(
            encode(sk.public_key().as_bytes()),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
    }
}
