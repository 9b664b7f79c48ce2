//! Security fixtures for `tests/security.rs`: a throwaway PKI made with the
//! `openssl` CLI (CA, server and client certificates), nkey pairs, and NATS
//! JWTs (operator / account / user) signed with the `nkeys` crate, written
//! as a `.creds` file. Everything lives in a temp dir deleted on drop.
#![allow(dead_code)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

/// Finds `openssl`: `OPENSSL_BIN`, then `PATH`, then `/usr/bin/openssl`.
pub fn openssl_bin() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("OPENSSL_BIN") {
        let bin = PathBuf::from(bin);
        return bin.is_file().then_some(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("openssl"))
        .chain([PathBuf::from("/usr/bin/openssl")])
        .find(|p| p.is_file())
}

/// `None` (after a visible SKIPPED line) without `openssl`; panics instead
/// when `A3S_REQUIRE_NATS=1`.
pub fn require_openssl(test: &str) -> Option<PathBuf> {
    match openssl_bin() {
        Some(bin) => Some(bin),
        None => {
            if std::env::var("A3S_REQUIRE_NATS").as_deref() == Ok("1") {
                panic!("{test}: openssl not found (OPENSSL_BIN, PATH) and A3S_REQUIRE_NATS=1");
            }
            // straight to stderr: libtest captures `eprintln!` of passing tests
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: openssl not found (set OPENSSL_BIN or put it on PATH)"
            );
            None
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temp dir, deleted on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `a3s-nats-sec-<pid>-<n>-<nanos>` under the system temp dir.
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "a3s-nats-sec-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway PKI: a CA signing a server certificate (SAN `localhost`,
/// `127.0.0.1`) and a client certificate, plus an unrelated second CA.
pub struct Pki {
    dir: TempDir,
    /// The CA that signed both certificates.
    pub ca: PathBuf,
    /// Server certificate (PEM).
    pub server_cert: PathBuf,
    /// Server key (PEM, PKCS#8).
    pub server_key: PathBuf,
    /// Client certificate (PEM).
    pub client_cert: PathBuf,
    /// Client key (PEM, PKCS#8).
    pub client_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn run(openssl: &Path, dir: &Path, args: &[&str]) {
    let out = Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ECDSA P-256 keys: fast to generate, supported by rustls and Go.
const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn make_ca(openssl: &Path, dir: &Path, name: &str) {
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    let subj = format!("/CN=a3s-test-{name}");
    let mut args = vec!["req", "-x509"];
    args.extend(EC);
    args.extend([
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &pem,
        "-days",
        "2",
        "-subj",
        &subj,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(openssl, dir, &args);
}

fn make_leaf(openssl: &Path, dir: &Path, name: &str, cn: &str, ext: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    let extfile = format!("{name}.ext");
    let subj = format!("/CN={cn}");
    std::fs::write(dir.join(&extfile), ext).expect("write ext file");
    let mut args = vec!["req"];
    args.extend(EC);
    args.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
    run(openssl, dir, &args);
    let serial = format!("0x{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    run(
        openssl,
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &extfile,
        ],
    );
}

impl Pki {
    /// Generates the PKI; `None` (skipped) without `openssl`.
    pub fn generate(test: &str) -> Option<Self> {
        let openssl = require_openssl(test)?;
        let dir = TempDir::new();
        let d = dir.path();
        make_ca(&openssl, d, "ca");
        make_ca(&openssl, d, "other-ca");
        make_leaf(
            &openssl,
            d,
            "server",
            "localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        );
        make_leaf(
            &openssl,
            d,
            "client",
            "a3s-test-client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        );
        Some(Self {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            other_ca: d.join("other-ca.pem"),
            dir,
        })
    }

    /// The PKI's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A `tls { }` block for the server config: the server certificate,
    /// the CA to verify clients with, and `verify: true` (mutual TLS).
    pub fn server_tls_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 2\n}}\n",
            self.server_cert.display().to_string(),
            self.server_key.display().to_string(),
            self.ca.display().to_string(),
        )
    }
}

/// A NATS JWT (`ed25519-nkey`) with `claims` (without `jti`, `iat`, `iss`),
/// signed by `issuer`.
pub fn sign_jwt(issuer: &nkeys::KeyPair, mut claims: serde_json::Value) -> String {
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    claims["jti"] = uuid::Uuid::new_v4()
        .simple()
        .to_string()
        .to_uppercase()
        .into();
    claims["iat"] = iat.into();
    claims["iss"] = issuer.public_key().into();
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let signature = issuer.sign(signing_input.as_bytes()).expect("sign jwt");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The self-signed operator JWT.
pub fn operator_jwt(operator: &nkeys::KeyPair) -> String {
    sign_jwt(
        operator,
        serde_json::json!({
            "sub": operator.public_key(),
            "name": "a3s-test-operator",
            "nats": { "type": "operator", "version": 2 },
        }),
    )
}

/// An account JWT signed by `operator`; JetStream enabled when `jetstream`.
pub fn account_jwt(
    operator: &nkeys::KeyPair,
    account: &nkeys::KeyPair,
    name: &str,
    jetstream: bool,
) -> String {
    let storage = if jetstream { -1 } else { 0 };
    sign_jwt(
        operator,
        serde_json::json!({
            "sub": account.public_key(),
            "name": name,
            "nats": {
                "limits": {
                    "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                    "wildcards": true, "conn": -1, "leaf": -1,
                    "mem_storage": storage, "disk_storage": storage,
                    "streams": -1, "consumer": -1,
                },
                "type": "account",
                "version": 2,
            },
        }),
    )
}

/// A user JWT for `user` signed by `account`, allowed everything.
pub fn user_jwt(account: &nkeys::KeyPair, user: &nkeys::KeyPair) -> String {
    sign_jwt(
        account,
        serde_json::json!({
            "sub": user.public_key(),
            "name": "a3s-test-user",
            "nats": {
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2,
            },
        }),
    )
}

/// The `.creds` file text (decorated user JWT + user seed).
pub fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// A decentralised-auth setup: operator, a system account and one
/// JetStream-enabled account, preloaded in a memory resolver.
pub struct Operator {
    /// The operator key.
    pub operator: nkeys::KeyPair,
    /// The system account (JetStream needs one in operator mode).
    pub system: nkeys::KeyPair,
    /// The trusted account.
    pub account: nkeys::KeyPair,
}

impl Operator {
    /// Fresh keys.
    pub fn new() -> Self {
        Self {
            operator: nkeys::KeyPair::new_operator(),
            system: nkeys::KeyPair::new_account(),
            account: nkeys::KeyPair::new_account(),
        }
    }

    /// Server config lines: `operator`, `system_account`, memory
    /// `resolver` with both accounts preloaded.
    pub fn server_conf(&self) -> String {
        format!(
            "operator: {op}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {sys_jwt}\n  {acc}: {acc_jwt}\n}}\n",
            op = operator_jwt(&self.operator),
            sys = self.system.public_key(),
            sys_jwt = account_jwt(&self.operator, &self.system, "SYS", false),
            acc = self.account.public_key(),
            acc_jwt = account_jwt(&self.operator, &self.account, "A3S", true),
        )
    }

    /// A `.creds` file text for a new user of the trusted account.
    pub fn user_creds(&self) -> String {
        let user = nkeys::KeyPair::new_user();
        creds(
            &user_jwt(&self.account, &user),
            &user.seed().expect("user seed"),
        )
    }
}

impl Default for Operator {
    fn default() -> Self {
        Self::new()
    }
}
