//! The helpers every settings group uses for what may be secret: a value or the file that holds
//! it (a mounted Secret), PEM files read and checked once at start-up, and URLs with their
//! passwords redacted for logs and errors. Every orderflow crate with settings uses them, so
//! they sit below all of those crates.

use std::path::Path;

/// A setting that cannot work, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The content of a file that must hold PEM (a CA bundle, a certificate, a key), read once and
/// checked at start-up: the client libraries read such files only when they first connect, and
/// their errors then name no setting. A missing or wrong file stops the start naming `setting`.
pub fn read_pem_file(setting: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let content = std::fs::read(path)
        .map_err(|error| ConfigError(format!("{setting} {}: {error}", path.display())))?;
    if content.windows(11).any(|window| window == b"-----BEGIN ") {
        Ok(content)
    } else {
        Err(ConfigError(format!(
            "{setting} {}: not PEM (no -----BEGIN line)",
            path.display()
        )))
    }
}

/// `value`, or the content of `file` when one is given (a secret mounted as a file); a trailing
/// newline is not part of it.
pub fn secret_or_file(value: &str, file: Option<&Path>, flag: &str) -> Result<String, ConfigError> {
    match file {
        None => Ok(value.to_owned()),
        Some(path) => std::fs::read_to_string(path)
            .map(|content| content.trim_end_matches(['\r', '\n']).to_owned())
            .map_err(|error| ConfigError(format!("{flag} {}: {error}", path.display()))),
    }
}

/// `scheme://user:password@host/db` becomes `scheme://user:***@host/db`; anything without a
/// password is returned as it is. A comma-separated list (cluster seed nodes) is redacted item
/// by item.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(redact_one_url)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            if credentials.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_keeps_the_rest() {
        assert_eq!(
            redact_url("postgres://orderflow:secret@127.0.0.1:5432/orderflow"),
            "postgres://orderflow:***@127.0.0.1:5432/orderflow"
        );
        assert_eq!(
            redact_url("redis://:secret@localhost:6379"),
            "redis://:***@localhost:6379"
        );
        assert_eq!(
            redact_url("redis://token@localhost"),
            "redis://***@localhost"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            redact_url("redis://:a@n1:7000,redis://:b@n2:7001"),
            "redis://:***@n1:7000,redis://:***@n2:7001"
        );
    }

    #[test]
    fn a_secret_file_replaces_the_value_without_its_newline() {
        let path = std::env::temp_dir().join(format!("orderflow-secret-{}", std::process::id()));
        std::fs::write(&path, "redis://:pw@cache:6379\n").expect("writing the secret");
        assert_eq!(
            secret_or_file("redis://127.0.0.1", Some(&path), "--redis-url-file").ok(),
            Some("redis://:pw@cache:6379".to_owned())
        );
        assert_eq!(
            secret_or_file("redis://127.0.0.1", None, "--redis-url-file").ok(),
            Some("redis://127.0.0.1".to_owned())
        );
        let missing = secret_or_file("", Some(Path::new("/nonexistent")), "--redis-url-file");
        assert!(missing.is_err_and(|error| error.to_string().contains("--redis-url-file")));
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_pem_file_must_exist_and_hold_pem() {
        let path = std::env::temp_dir().join(format!("orderflow-pem-{}", std::process::id()));
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("writing the file");
        assert!(read_pem_file("--ca", &path).is_ok());
        std::fs::write(&path, "not a pem").expect("writing the file");
        let refused = read_pem_file("--ca", &path).expect_err("not PEM");
        assert!(refused.to_string().contains("--ca") && refused.to_string().contains("not PEM"));
        let _ = std::fs::remove_file(&path);
        let missing = read_pem_file("--ca", &path).expect_err("missing");
        assert!(missing.to_string().contains("--ca"), "{missing}");
    }
}
