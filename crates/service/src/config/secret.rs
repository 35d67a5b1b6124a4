//! Secrets given directly or as a `NAME_FILE` path (the container-secrets convention).

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, ProjectName};

/// clap value parser that moves a secret straight into a [`SecretString`], so the plain text
/// never lives in a `String` that a stray `{:?}` could print.
pub fn secret_value(text: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(without_line_end(text)))
}

/// A secret without the line end it was written with: files written by `echo` or editors end in
/// one, and so does a variable filled from such a file (a Kubernetes secret made with
/// `--from-file`, say). It is never part of the secret, and kept, the secret would never match.
fn without_line_end(text: &str) -> &str {
    text.trim_end_matches(['\r', '\n'])
}

/// Resolves a secret given either inline (`variable`) or as a file (`variable_FILE`).
///
/// Errors name the variable, never the value or the file's content.
pub fn resolve(
    variable: &'static str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
) -> Result<Option<SecretString>, ConfigError> {
    let secret = match (inline, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(variable, format!("set {variable} or {variable}_FILE, not both")));
        }
        (Some(secret), None) => secret.clone(),
        (None, Some(path)) => read_file(&format!("{variable}_FILE"), path)?,
        (None, None) => return Ok(None),
    };
    if secret.expose_secret().trim().is_empty() {
        return Err(ConfigError::new(variable, format!("{variable} is empty")));
    }
    Ok(Some(secret))
}

/// Reads a secret from a file; `label` names the setting that gave the path in the error, which
/// never holds the file's content. An empty secret is refused.
pub fn read_file(label: &str, path: &Path) -> Result<SecretString, ConfigError> {
    let content = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new("", format!("{label}: cannot read {}: {}", shown(path), e.kind())))?;
    let secret = SecretString::from(without_line_end(&content));
    if secret.expose_secret().trim().is_empty() {
        return Err(ConfigError::new("", format!("{label}: {} is empty", path.display())));
    }
    Ok(secret)
}

/// A path that could not be read, as an error shows it. A secret or key pasted where its file's
/// path belongs is read as a path, so a path is shown only when it names a file in a directory
/// that exists, other than `/` (a secret may start with `/`).
pub(super) fn shown(path: &Path) -> String {
    match path.parent() {
        Some(dir) if dir.parent().is_some() && !dir.as_os_str().is_empty() && dir.is_dir() => {
            path.display().to_string()
        }
        _ => "the file it names (not shown, since it may be a secret pasted in place of a path)".into(),
    }
}

/// Each PolyAI endpoint has its own signing secret. Two projects holding one (a `[[project]]`
/// block copied, its secret file left as it was) would accept each other's webhooks on their
/// paths, and fetch them with the wrong key: refused, naming both, never the secret. `projects`
/// holds each project's webhook secrets, current and previous.
pub fn refuse_shared(projects: &[(&ProjectName, Vec<&SecretString>)]) -> Result<(), ConfigError> {
    for (index, (name, secrets)) in projects.iter().enumerate() {
        for (earlier, theirs) in &projects[..index] {
            let shared =
                secrets.iter().any(|secret| theirs.iter().any(|other| secret.expose_secret() == other.expose_secret()));
            if shared {
                return Err(ConfigError::new(
                    "",
                    format!(
                        "project `{name}`: its webhook secret is project `{earlier}`'s too: each would accept the other's webhooks; give each the secret of its own endpoint"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Like [`resolve`], for a secret the command cannot run without.
pub fn require(
    variable: &'static str,
    inline: Option<&SecretString>,
    file: Option<&Path>,
    why: &str,
) -> Result<SecretString, ConfigError> {
    resolve(variable, inline, file)?
        .ok_or_else(|| ConfigError::new(variable, format!("{variable} (or {variable}_FILE) is required {why}")))
}

/// An API key goes into a request header. One holding a character a header cannot carry (a control
/// character pasted into a file, say) is refused here, naming where it came from (`label`), rather
/// than when the first request is built, after the relay has started reaching for the broker.
pub fn header_safe(label: &str, key: SecretString) -> Result<SecretString, ConfigError> {
    if reqwest::header::HeaderValue::from_str(key.expose_secret()).is_err() {
        return Err(ConfigError::new(label, format!("{label} holds a character an HTTP header cannot carry")));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_secret_loses_its_trailing_newline() {
        let dir = std::env::temp_dir().join(format!("relay-secret-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, "from-a-file\n").unwrap();
        let secret = resolve("X", None, Some(&dir)).unwrap().unwrap();
        assert_eq!(secret.expose_secret(), "from-a-file");
        std::fs::remove_file(dir).unwrap();
    }

    #[test]
    fn a_secret_given_in_a_variable_loses_its_trailing_newline_too() {
        // `POLYAI_WEBHOOK_SECRET_PREVIOUS` from a Kubernetes secret made with `--from-file`.
        let secret = secret_value("whsec_old\r\n").unwrap();
        assert_eq!(resolve("X", Some(&secret), None).unwrap().unwrap().expose_secret(), "whsec_old");
        assert_eq!(secret_value("  inner spaces stay  ").unwrap().expose_secret(), "  inner spaces stay  ");
    }

    #[test]
    fn errors_name_the_variable_but_never_the_value() {
        let value = SecretString::from("hunter2-value");
        let err = resolve("POLYAI_API_KEY", Some(&value), Some(Path::new("/nonexistent"))).unwrap_err();
        assert!(err.to_string().contains("POLYAI_API_KEY"));
        assert!(!err.to_string().contains("hunter2"));

        let missing = resolve("POLYAI_API_KEY", None, Some(Path::new("/nonexistent/hunter2"))).unwrap_err();
        assert!(missing.to_string().contains("POLYAI_API_KEY_FILE"));

        // A secret given where its file belongs is never shown as the file's name.
        let pasted = resolve("POLYAI_API_KEY", None, Some(Path::new("whsec_live_abc123"))).unwrap_err().to_string();
        assert!(
            pasted.contains("POLYAI_API_KEY_FILE: cannot read the file it names") && !pasted.contains("whsec_live"),
            "{pasted}"
        );
        let slashed = resolve("POLYAI_API_KEY", None, Some(Path::new("whsec_ab/cd+ef="))).unwrap_err().to_string();
        assert!(!slashed.contains("whsec_ab"), "{slashed}");
        let rooted = resolve("POLYAI_API_KEY", None, Some(Path::new("/Zk3pQv+8aW"))).unwrap_err().to_string();
        assert!(!rooted.contains("Zk3pQv"), "{rooted}");
        // A path is shown: it tells the operator which file is missing.
        let absent = std::env::temp_dir().join("relay-absent-secret");
        let path = resolve("POLYAI_API_KEY", None, Some(&absent)).unwrap_err().to_string();
        assert!(path.contains(&absent.display().to_string()), "{path}");

        let blank = resolve("POLYAI_API_KEY", Some(&SecretString::from("  ")), None).unwrap_err();
        assert!(blank.to_string().contains("empty"));
    }
}
