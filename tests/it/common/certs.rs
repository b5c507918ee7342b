//! Certificates for TLS tests, made at test time with rcgen (no key material in the
//! repository), and a PostgreSQL cluster serving TLS with them.

use std::path::PathBuf;

use pgheal::cluster::TempCluster;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use super::{admin, start_pg};

/// A certificate authority made for one test.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Ca { cert, key }
    }

    /// A server certificate for `names` and its key, in PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("server params");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory for the test's CA files, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("pgheal-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// [`start_pg`] switched to `ssl = on` with a certificate for `localhost` only, signed by
/// `ca`, and a pg_hba.conf that accepts TCP connections over TLS only.
pub fn start_tls_pg(ca: &Ca) -> TempCluster {
    let pg = start_pg();
    let (cert, key) = ca.issue(&["localhost"]);
    pg.write_data_file("server.crt", cert.as_bytes(), 0o600)
        .expect("server.crt");
    pg.write_data_file("server.key", key.as_bytes(), 0o600)
        .expect("server.key");
    pg.write_data_file(
        "pg_hba.conf",
        b"local all all trust\n\
          hostssl all all 127.0.0.1/32 scram-sha-256\n\
          hostssl all all ::1/128 scram-sha-256\n",
        0o600,
    )
    .expect("pg_hba.conf");
    admin(
        &pg,
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt';
         ALTER SYSTEM SET ssl_key_file = 'server.key';
         ALTER SYSTEM SET ssl = on;",
    );
    pg.reload().expect("reload");
    // psql connects with sslmode=prefer: this succeeds only once TLS is on.
    let ssl = admin(
        &pg,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert_eq!(ssl, "t", "the admin connection should be encrypted by now");
    pg
}
