//! TLS for gRPC (rustls): a server identity, optionally a client CA that makes it mutual TLS,
//! and the client side for calls between services. Plaintext stays the local default; files are
//! read once at start-up and a missing or malformed one stops the start, naming the flag.

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::GrpcError;

#[derive(Clone, Debug, Default, clap::Args, serde::Serialize)]
pub struct ServerTlsArgs {
    /// PEM certificate chain of this server; with --tls-key-file, the server speaks only TLS.
    #[arg(long, env = "ORDERFLOW_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<String>,

    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "ORDERFLOW_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<String>,

    /// PEM CA bundle; when set, every client must present a certificate it signed (mutual TLS).
    #[arg(long, env = "ORDERFLOW_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<String>,
}

impl ServerTlsArgs {
    /// `None`: plaintext.
    pub fn server_config(&self) -> Result<Option<ServerTlsConfig>, GrpcError> {
        let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_key_file) else {
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
            read("--tls-cert-file", cert)?,
            read("--tls-key-file", key)?,
        ));
        if let Some(ca) = &self.tls_client_ca_file {
            config =
                config.client_ca_root(Certificate::from_pem(read("--tls-client-ca-file", ca)?));
        }
        Ok(Some(config))
    }
}

/// The TLS settings of a client of another orderflow service: `ca_file` verifies the server,
/// `cert_file` and `key_file` (together) are this client's identity for mutual TLS. `None` when
/// no file is given (plaintext, or the URL's scheme decides).
pub fn client_config(
    flag_prefix: &str,
    ca_file: Option<&str>,
    cert_file: Option<&str>,
    key_file: Option<&str>,
) -> Result<Option<ClientTlsConfig>, GrpcError> {
    if ca_file.is_none() && cert_file.is_none() && key_file.is_none() {
        return Ok(None);
    }
    let mut config = ClientTlsConfig::new();
    if let Some(ca) = ca_file {
        config = config.ca_certificate(Certificate::from_pem(read(
            &format!("--{flag_prefix}-ca-file"),
            ca,
        )?));
    }
    match (cert_file, key_file) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read(&format!("--{flag_prefix}-client-cert-file"), cert)?,
                read(&format!("--{flag_prefix}-client-key-file"), key)?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(GrpcError::Config(format!(
                "--{flag_prefix}-client-cert-file and --{flag_prefix}-client-key-file go together"
            )))
        }
    }
    Ok(Some(config))
}

/// The PEM file `path`: tonic parses it only when it serves or connects, and its error then
/// names no flag.
fn read(flag: &str, path: &str) -> Result<Vec<u8>, GrpcError> {
    Ok(orderflow_config::read_pem_file(
        flag,
        std::path::Path::new(path),
    )?)
}
