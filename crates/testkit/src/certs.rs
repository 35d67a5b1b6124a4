//! A throwaway certificate authority, a server certificate and a client certificate, made with
//! the openssl command line for one test.

use std::{path::Path, process::Command};

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn signed(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(dir, &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject]);
    let pem = format!("{name}.pem");
    openssl(
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
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

/// `ca.pem`, `server.pem`/`server.key` for `server_name` only, `client.pem`/`client.key`.
pub fn make(dir: &Path, server_name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=relay test CA",
        ],
    );
    let server = format!("subjectAltName=DNS:{server_name}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
    signed(dir, "server", &format!("/CN={server_name}"), &server);
    signed(dir, "client", "/CN=relay-client", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
}
