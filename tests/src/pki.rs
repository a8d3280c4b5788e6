//! Certificates made for one test: a CA, a server certificate for 127.0.0.1 and localhost, and a
//! client certificate, written as PEM files the services read like production ones.

use std::path::PathBuf;

use orderflow_grpc::tls::ServerTlsArgs;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub struct Pki {
    dir: PathBuf,
    pub ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    pub fn generate() -> Self {
        let dir = std::env::temp_dir().join(format!("orderflow-pki-{}", crate::unique_id()));
        std::fs::create_dir_all(&dir).expect("a directory for the test certificates");
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "orderflow test CA");
        let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");

        let leaf = |name: &str| {
            let key = KeyPair::generate().expect("a key");
            let mut params =
                CertificateParams::new(vec!["localhost".to_owned()]).expect("parameters");
            params
                .subject_alt_names
                .push(SanType::IpAddress([127, 0, 0, 1].into()));
            params.distinguished_name.push(DnType::CommonName, name);
            let cert = params.signed_by(&key, &ca, &ca_key).expect("a certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) = leaf("inventory-svc");
        let (client_cert_pem, client_key_pem) = leaf("order-api");
        let pki = Self {
            dir,
            ca_pem: ca.pem(),
            client_cert_pem,
            client_key_pem,
        };
        for (name, pem) in [
            ("ca.pem", &pki.ca_pem),
            ("server.pem", &server_cert_pem),
            ("server-key.pem", &server_key_pem),
            ("client.pem", &pki.client_cert_pem),
            ("client-key.pem", &pki.client_key_pem),
        ] {
            std::fs::write(pki.dir.join(name), pem).expect("writing a PEM file");
        }
        pki
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// A server's TLS settings: this server certificate, and with `mutual` clients must
    /// present one this CA signed.
    pub fn server_tls(&self, mutual: bool) -> ServerTlsArgs {
        ServerTlsArgs {
            tls_cert_file: Some(self.path("server.pem")),
            tls_key_file: Some(self.path("server-key.pem")),
            tls_client_ca_file: mutual.then(|| self.path("ca.pem")),
        }
    }

    /// A client that trusts this CA, presenting the client certificate when `identity`.
    pub fn client(&self, identity: bool) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if identity {
            config.identity(Identity::from_pem(
                &self.client_cert_pem,
                &self.client_key_pem,
            ))
        } else {
            config
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
