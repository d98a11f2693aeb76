//! The command-line surface around the tunnel: key generation (`genkey`, `pubkey`) and `up`
//! refusing a broken config with a one-line error. `up` runs inside a scratch namespace so a
//! misbehaving build cannot leave an interface in the host's own namespace.

use crate::harness::{weft_bin, Keypair, Lab};
use std::os::unix::fs::PermissionsExt;

#[test]
fn genkey_writes_an_owner_only_key_whose_public_key_is_32_bytes_of_base64() {
    let lab = Lab::new("genkey");
    let key = Keypair::generate(&lab, "k");
    let mode = std::fs::metadata(&key.private_key_file)
        .expect("genkey wrote the key file")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "private key file mode is {:o}",
        mode & 0o777
    );
    // 32 bytes of standard base64: 43 characters and one '=' of padding.
    assert_eq!(key.public_key.len(), 44, "public key {:?}", key.public_key);
    assert!(
        key.public_key.ends_with('='),
        "public key {:?}",
        key.public_key
    );
    let other = Keypair::generate(&lab, "k2");
    assert_ne!(
        key.public_key, other.public_key,
        "two genkey runs gave the same key"
    );
}

#[test]
fn up_with_a_broken_config_exits_nonzero_with_a_one_line_error() {
    let lab = Lab::new("badconfig");
    let ns = lab.netns("c");
    let cases = [
        ("not-toml", "this is [not toml"),
        (
            "bad-address",
            "[interface]\nname = \"weft0\"\nprivate_key_file = \"missing.key\"\n\
             listen_port = 51820\naddress = [\"not-an-address\"]\n",
        ),
        (
            "missing-key-file",
            "[interface]\nname = \"weft0\"\nprivate_key_file = \"missing.key\"\n\
             listen_port = 51820\naddress = [\"100.64.0.1/24\"]\n",
        ),
    ];
    for (name, text) in cases {
        let file = lab.dir().join(format!("{name}.toml"));
        std::fs::write(&file, text).expect("write config");
        let path = file.to_str().expect("temp dir path is UTF-8");
        let out = ns.exec_output(&[&weft_bin(), "up", "--config", path]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`weft up` accepted {name}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "`weft up` with {name} should print exactly one line, printed:\n{stderr}"
        );
        assert!(
            ns.try_ip(&["link", "show", "dev", "weft0"]).is_err(),
            "`weft up` with {name} left weft0 behind"
        );
    }
}
