//! `moat certs` end to end: the real binary, checked with the real openssl.

mod common;

use std::path::{Path, PathBuf};

use common::{moat, moat_ok, mode, run, snapshot};

struct Pki {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        moat_ok(&[
            "certs",
            "init",
            "--dir",
            &dir_of(&root),
            "--host",
            "localhost",
            "--ip",
            "127.0.0.1",
        ]);
        Pki { _tmp: tmp, root }
    }

    fn dir(&self) -> String {
        dir_of(&self.root)
    }

    fn file(&self, name: &str) -> String {
        self.root.join("pki").join(name).display().to_string()
    }

    fn out(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    /// Issues a certificate and returns its bundle directory and serial.
    fn issue(&self, user: &str, groups: &[&str]) -> (String, String) {
        let out = self.out(user);
        let dir = self.dir();
        let mut args = vec![
            "certs", "issue", user, "--dir", &dir, "--out", &out, "-o", "json",
        ];
        for g in groups {
            args.extend(["--group", g]);
        }
        let json: serde_json::Value = serde_json::from_str(&moat_ok(&args)).unwrap();
        (out, json["serial"].as_str().unwrap().to_owned())
    }
}

fn dir_of(root: &Path) -> String {
    root.join("pki").display().to_string()
}

fn openssl(args: &[&str]) -> (bool, String) {
    run("openssl", args)
}

#[test]
fn issued_bundle_verifies_with_openssl() {
    let pki = Pki::new();
    let (out, _) = pki.issue("alice", &["developer", "ops"]);
    let cert = format!("{out}/cert.pem");
    let (ok, text) = openssl(&["verify", "-CAfile", &format!("{out}/ca.pem"), &cert]);
    assert!(ok && text.contains("cert.pem: OK"), "{text}");
    let (_, subject) = openssl(&["x509", "-in", &cert, "-noout", "-subject"]);
    assert!(
        subject.contains("CN = alice, O = developer, O = ops"),
        "{subject}"
    );
    let (_, purpose) = openssl(&["x509", "-in", &cert, "-noout", "-purpose"]);
    assert!(purpose.contains("SSL client : Yes"), "{purpose}");
    assert!(purpose.contains("SSL server : No"), "{purpose}");
    // The key matches the certificate.
    let (_, cert_pub) = openssl(&["x509", "-in", &cert, "-noout", "-pubkey"]);
    let (_, key_pub) = openssl(&["pkey", "-in", &format!("{out}/key.pem"), "-pubout"]);
    assert_eq!(cert_pub, key_pub);
    // The gateway's certificate verifies too, for the names given at init.
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &pki.file("ca.pem"),
        "-purpose",
        "sslserver",
        "-verify_hostname",
        "localhost",
        &pki.file("server-cert.pem"),
    ]);
    assert!(ok, "{text}");
}

#[test]
fn crl_verifies_and_names_revoked_serials() {
    let pki = Pki::new();
    let (ok, text) = openssl(&[
        "crl",
        "-CAfile",
        &pki.file("ca.pem"),
        "-in",
        &pki.file("crl.pem"),
        "-noout",
    ]);
    assert!(ok && text.contains("verify OK"), "{text}");

    let (alice, serial) = pki.issue("alice", &["developer"]);
    let (_, other) = pki.issue("bob", &["developer"]);
    moat_ok(&["certs", "revoke", &serial, "--dir", &pki.dir()]);

    let (ok, text) = openssl(&[
        "crl",
        "-CAfile",
        &pki.file("ca.pem"),
        "-in",
        &pki.file("crl.pem"),
        "-noout",
        "-text",
    ]);
    assert!(ok && text.contains("verify OK"), "{text}");
    assert!(
        text.contains(&format!("Serial Number: {serial}")),
        "{serial} not in:\n{text}"
    );
    assert!(!text.contains(&other), "bob's serial must not be revoked");

    let crl_check = |bundle: &str| {
        openssl(&[
            "verify",
            "-crl_check",
            "-CRLfile",
            &pki.file("crl.pem"),
            "-CAfile",
            &pki.file("ca.pem"),
            &format!("{bundle}/cert.pem"),
        ])
    };
    let (ok, text) = crl_check(&alice);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    let (ok, text) = crl_check(&pki.out("bob"));
    assert!(ok, "{text}");

    // Revoking by user takes every unrevoked certificate of that user.
    pki.issue("bob", &["ops"]);
    let revoked: serde_json::Value = serde_json::from_str(&moat_ok(&[
        "certs",
        "revoke",
        "--user",
        "bob",
        "--dir",
        &pki.dir(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(revoked.as_array().unwrap().len(), 2);

    // Re-signing keeps the revocations and raises the CRL number.
    let number = |text: &str| {
        text.lines()
            .skip_while(|l| !l.contains("X509v3 CRL Number"))
            .nth(1)
            .unwrap()
            .trim()
            .to_owned()
    };
    let (_, before) = openssl(&["crl", "-in", &pki.file("crl.pem"), "-noout", "-text"]);
    moat_ok(&["certs", "crl", "--dir", &pki.dir()]);
    let (_, after) = openssl(&["crl", "-in", &pki.file("crl.pem"), "-noout", "-text"]);
    assert!(after.contains(&serial) && after.contains(&other));
    assert!(number(&after).parse::<u64>().unwrap() > number(&before).parse::<u64>().unwrap());
}

#[test]
fn csr_signing_keeps_the_key_home_and_ignores_requested_extensions() {
    let pki = Pki::new();
    let key = pki.out("carol.key");
    let csr = pki.out("carol.csr");
    let (ok, text) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=carol/O=developer",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "extendedKeyUsage=serverAuth",
    ]);
    assert!(ok, "{text}");
    let out = pki.out("carol");
    moat_ok(&[
        "certs",
        "sign",
        &csr,
        "--dir",
        &pki.dir(),
        "--ttl",
        "1h",
        "--out",
        &out,
    ]);
    assert!(
        !Path::new(&format!("{out}/key.pem")).exists(),
        "the key never travels"
    );
    let cert = format!("{out}/cert.pem");
    let (ok, text) = openssl(&["verify", "-CAfile", &pki.file("ca.pem"), &cert]);
    assert!(ok, "{text}");
    let (_, text) = openssl(&["x509", "-in", &cert, "-noout", "-text"]);
    assert!(!text.contains("CA:TRUE"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    let (_, subject) = openssl(&["x509", "-in", &cert, "-noout", "-subject"]);
    assert!(subject.contains("CN = carol, O = developer"), "{subject}");

    // Without --out the certificate is printed.
    let printed = moat_ok(&["certs", "sign", &csr, "--dir", &pki.dir()]);
    assert!(printed.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[test]
fn keys_are_private_and_a_second_init_refuses() {
    let pki = Pki::new();
    let dir = pki.root.join("pki");
    assert_eq!(mode(&dir), 0o700);
    for key in [
        "ca-key.pem",
        "server-key.pem",
        "audit-key.pem",
        "issued.json",
    ] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    let (out, _) = pki.issue("alice", &[]);
    assert_eq!(mode(Path::new(&format!("{out}/key.pem"))), 0o600);
    assert_eq!(mode(Path::new(&out)), 0o700);

    let before = snapshot(&dir);
    let out = moat(&["certs", "init", "--dir", &pki.dir(), "--host", "other"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a CA"));
    assert_eq!(before, snapshot(&dir), "a refused init changed the PKI");
}

/// Each bad input fails with a message naming the problem and leaves the
/// PKI directory exactly as it was.
#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let pki = Pki::new();
    let (_, serial) = pki.issue("alice", &["developer"]);
    moat_ok(&["certs", "revoke", &serial, "--dir", &pki.dir()]);
    let dir = pki.dir();
    let out_file = pki.out("a-file");
    std::fs::write(&out_file, "x").unwrap();
    let garbage_csr = pki.out("garbage.csr");
    std::fs::write(
        &garbage_csr,
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    .unwrap();
    let bad_cn_csr = pki.out("bad.csr");
    let (ok, text) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &pki.out("bad.key"),
        "-out",
        &bad_cn_csr,
        "-subj",
        "/CN=eve\\,O=admin",
    ]);
    assert!(ok, "{text}");
    let ou_csr = pki.out("ou.csr");
    let (ok, text) = openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &pki.out("ou.key"),
        "-out",
        &ou_csr,
        "-subj",
        "/CN=eve/OU=admin",
    ]);
    assert!(ok, "{text}");
    let long = "a".repeat(65);

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["issue", "a,O=admin"], "character ','"),
        (vec!["issue", "a=b"], "character '='"),
        (vec!["issue", "a/b"], "character '/'"),
        (vec!["issue", "a+b"], "character '+'"),
        (vec!["issue", "a\nb"], "is not allowed"),
        (vec!["issue", "a\u{7}b"], "is not allowed"),
        (vec!["issue", ""], "must not be empty"),
        (vec!["issue", &long], "at most 64"),
        (
            vec!["issue", "alice", "--group", "dev,O=admin"],
            "invalid group name",
        ),
        (vec!["issue", "alice", "--group", ""], "invalid group name"),
        (
            vec!["issue", "alice", "--ttl", "31d"],
            "over the maximum of 30d",
        ),
        (vec!["issue", "alice", "--ttl", "12"], "missing unit"),
        (vec!["issue", "alice", "--ttl", "0h"], "longer than zero"),
        (
            vec!["issue", "alice", "--out", &out_file],
            "not a directory",
        ),
        (
            vec!["sign", &garbage_csr],
            "invalid certificate signing request",
        ),
        (vec!["sign", &bad_cn_csr], "invalid user name"),
        (vec!["sign", &ou_csr], "is not allowed (only one CN"),
        (vec!["sign", "/nonexistent.csr"], "nonexistent.csr"),
        (
            vec!["revoke", "00FF00FF"],
            "no certificate with serial 00FF00FF",
        ),
        (vec!["revoke", "not-hex"], "no certificate with serial"),
        (vec!["revoke", &serial], "already revoked"),
        (
            vec!["revoke", "--user", "nobody"],
            "no unrevoked certificate issued to user",
        ),
        (vec!["revoke", "--user", "a,b"], "invalid user name"),
        (
            vec!["renew-server", "--host", "bad host"],
            "invalid host name",
        ),
    ];
    let pki_dir = pki.root.join("pki");
    for (args, expected) in cases {
        let before = snapshot(&pki_dir);
        let mut full = vec!["certs"];
        full.extend(&args);
        full.extend(["--dir", &dir]);
        let out = moat(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr:?}"
        );
        assert_eq!(
            before,
            snapshot(&pki_dir),
            "{args:?} changed the PKI directory"
        );
    }
}

#[test]
fn a_broken_pki_is_reported_and_left_alone() {
    type Breakage = fn(&Path);
    let cases: Vec<(&str, Breakage, &str)> = vec![
        (
            "missing CA key",
            |d| std::fs::remove_file(d.join("ca-key.pem")).unwrap(),
            "ca-key.pem",
        ),
        (
            "corrupt CA cert",
            |d| std::fs::write(d.join("ca.pem"), "garbage").unwrap(),
            "ca.pem is corrupt",
        ),
        (
            "CA key of another CA",
            |d| {
                let other = tempfile::tempdir().unwrap();
                let odir = other.path().join("pki");
                moat_ok(&[
                    "certs",
                    "init",
                    "--dir",
                    odir.to_str().unwrap(),
                    "--host",
                    "x",
                ]);
                std::fs::copy(odir.join("ca-key.pem"), d.join("ca-key.pem")).unwrap();
            },
            "does not match ca.pem",
        ),
        (
            "corrupt index",
            |d| std::fs::write(d.join("issued.json"), "{").unwrap(),
            "issued.json is corrupt",
        ),
        (
            "key directory open to others",
            |d| set_mode(d, 0o755),
            "has mode 0755",
        ),
        (
            "CA key readable by others",
            |d| set_mode(&d.join("ca-key.pem"), 0o644),
            "expected 0600 for a private key",
        ),
    ];
    for (what, break_it, expected) in cases {
        let pki = Pki::new();
        let dir = pki.root.join("pki");
        break_it(&dir);
        let before = snapshot(&dir);
        let out = moat(&[
            "certs",
            "issue",
            "alice",
            "--dir",
            &pki.dir(),
            "--out",
            &pki.out("alice"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: issue succeeded");
        assert!(
            stderr.contains(expected),
            "{what}: expected {expected:?} in {stderr:?}"
        );
        assert_eq!(before, snapshot(&dir), "{what}: the PKI directory changed");
        assert!(
            !Path::new(&pki.out("alice")).exists(),
            "{what}: a bundle was written"
        );
    }

    let empty = tempfile::tempdir().unwrap();
    let out = moat(&[
        "certs",
        "issue",
        "alice",
        "--dir",
        empty.path().to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no CA"));
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn list_shows_every_certificate_with_its_status() {
    let pki = Pki::new();
    let (_, alice) = pki.issue("alice", &["developer"]);
    let (_, bob) = pki.issue("bob", &["viewer"]);
    moat_ok(&["certs", "revoke", &bob.to_lowercase(), "--dir", &pki.dir()]);
    let list: serde_json::Value = serde_json::from_str(&moat_ok(&[
        "certs",
        "list",
        "--dir",
        &pki.dir(),
        "-o",
        "json",
    ]))
    .unwrap();
    let rows = list.as_array().unwrap();
    let status_of = |serial: &str| {
        rows.iter()
            .find(|r| r["serial"] == serial)
            .map(|r| r["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of(&alice).as_deref(), Some("valid"));
    assert_eq!(status_of(&bob).as_deref(), Some("revoked"));
    assert!(rows.iter().any(|r| r["kind"] == "server"));
    assert!(
        rows.iter()
            .all(|r| r["fingerprint"].as_str().unwrap().starts_with("sha256:"))
    );
    let table = moat_ok(&["certs", "list", "--dir", &pki.dir()]);
    assert!(table.contains(&alice) && table.contains("revoked"));
}

#[test]
fn renew_server_replaces_the_gateway_certificate() {
    let pki = Pki::new();
    let before = std::fs::read(pki.file("server-cert.pem")).unwrap();
    moat_ok(&[
        "certs",
        "renew-server",
        "--dir",
        &pki.dir(),
        "--host",
        "moat.example.com",
    ]);
    let after = std::fs::read(pki.file("server-cert.pem")).unwrap();
    assert_ne!(before, after);
    let (ok, text) = openssl(&[
        "verify",
        "-CAfile",
        &pki.file("ca.pem"),
        "-verify_hostname",
        "moat.example.com",
        &pki.file("server-cert.pem"),
    ]);
    assert!(ok, "{text}");
    assert_eq!(mode(Path::new(&pki.file("server-key.pem"))), 0o600);
}
