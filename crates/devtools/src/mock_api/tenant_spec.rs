//! The text form of a tenant, for `mock-api --tenant` and `MOCK_API_TENANTS`:
//! `name=acme-us,account=ws-us,project=PROJECT-US,key=…`, plus optional `platform-key`,
//! `emit-to` and `emit-secret`; each secret also as `…-file=PATH`.
//!
//! A spec holds a key, so no error ever quotes the text: errors point at the tenant by its
//! name once that is known and valid, by its position before, and at items by position.

use std::path::Path;

use polyai_relay::config::ConfigError;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    config::{EmitConfig, EmitScheme},
    tenant::{valid_name, Tenant},
};

const FIELDS: &[&str] = &[
    "name",
    "account",
    "project",
    "key",
    "key-file",
    "platform-key",
    "platform-key-file",
    "emit-to",
    "emit-secret",
    "emit-secret-file",
];

const VARIABLE: &str = "MOCK_API_TENANTS";

/// How every tenant with `emit-to` sends: the mock-wide `--emit-rate`, `--emit-count`, `--emit-scheme`.
#[derive(Debug, Clone, Copy)]
pub struct EmitPace {
    /// Webhooks per second, per tenant.
    pub rate: f64,
    /// Webhooks in all per tenant; `None`: one pass.
    pub count: Option<usize>,
    /// What is signed.
    pub scheme: EmitScheme,
}

/// Parses each spec into a tenant; empty specs (a trailing `;`) are skipped.
pub fn parse_tenants(specs: &[SecretString], emit: EmitPace) -> Result<Vec<Tenant>, ConfigError> {
    let specs = specs.iter().map(|s| s.expose_secret().trim()).filter(|s| !s.is_empty());
    specs.enumerate().map(|(position, spec)| parse(position + 1, spec, emit)).collect()
}

/// One spec's `field=value` items, checked against `FIELDS`: field and trimmed value, in order.
struct Items<'a>(Vec<(&'static str, &'a str)>);

impl<'a> Items<'a> {
    fn split(label: &str, spec: &'a str) -> Result<Self, ConfigError> {
        let mut items = Vec::new();
        for (position, item) in spec.split(',').enumerate() {
            let position = position + 1;
            let Some((field, value)) = item.split_once('=') else {
                return Err(error(format!("{label}: item {position} is not `field=value`")));
            };
            let Some(field) = FIELDS.iter().find(|f| **f == field.trim()) else {
                return Err(error(format!("{label}: item {position} is not one of {}", FIELDS.join(", "))));
            };
            if items.iter().any(|(seen, _)| seen == field) {
                return Err(error(format!("{label}: {field} is given twice")));
            }
            items.push((*field, value.trim()));
        }
        Ok(Self(items))
    }

    fn get(&self, field: &str) -> Option<&'a str> {
        self.0.iter().find(|(f, _)| *f == field).map(|(_, v)| *v)
    }

    fn require(&self, label: &str, field: &str) -> Result<&'a str, ConfigError> {
        self.get(field).filter(|v| !v.is_empty()).ok_or_else(|| error(format!("{label}: {field} is required")))
    }

    /// `field` or `field-file`, not both.
    fn secret(&self, label: &str, field: &str) -> Result<Option<SecretString>, ConfigError> {
        let file_field = format!("{field}-file");
        match (self.get(field), self.get(&file_field)) {
            (Some(_), Some(_)) => Err(error(format!("{label}: give {field} or {file_field}, not both"))),
            (Some(value), None) => Ok(Some(SecretString::from(value))),
            (None, Some(path)) => read_secret(label, &file_field, Path::new(path)).map(Some),
            (None, None) => Ok(None),
        }
    }
}

fn parse(position: usize, spec: &str, pace: EmitPace) -> Result<Tenant, ConfigError> {
    let items = Items::split(&format!("tenant {position}"), spec)?;
    let name = items.require(&format!("tenant {position}"), "name")?;
    if !valid_name(name) {
        return Err(error(format!("tenant {position}: its name may hold only a-z, 0-9 and `-` (1 to 63 of them)")));
    }
    let label = format!("tenant `{name}`");
    let api_key = items.secret(&label, "key")?.ok_or_else(|| error(format!("{label}: key or key-file is required")))?;
    let emit = match items.get("emit-to") {
        Some(url) => Some(EmitConfig {
            url: Url::parse(url).map_err(|_| error(format!("{label}: emit-to is not a URL")))?,
            secret: items
                .secret(&label, "emit-secret")?
                .ok_or_else(|| error(format!("{label}: emit-secret or emit-secret-file is required with emit-to")))?,
            rate: pace.rate,
            count: pace.count,
            scheme: pace.scheme,
        }),
        None if items.get("emit-secret").is_some() || items.get("emit-secret-file").is_some() => {
            return Err(error(format!("{label}: emit-secret needs emit-to")));
        }
        None => None,
    };
    Ok(Tenant {
        name: name.to_owned(),
        account_id: items.require(&label, "account")?.to_owned(),
        project_id: items.require(&label, "project")?.to_owned(),
        api_key,
        platform_api_key: items.secret(&label, "platform-key")?,
        faults: None,
        emit,
    })
}

/// As the relay reads its own `_FILE` secrets: a path that may be a key pasted in its place is
/// not shown, and an empty file is refused.
fn read_secret(label: &str, field: &str, path: &Path) -> Result<SecretString, ConfigError> {
    polyai_relay::config::secret::read_file(&format!("{VARIABLE}: {label}: {field}"), path)
}

fn error(message: String) -> ConfigError {
    ConfigError::new(VARIABLE, format!("{VARIABLE}: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace() -> EmitPace {
        EmitPace { rate: 7.0, count: Some(3), scheme: EmitScheme::Timestamped }
    }

    fn one(spec: &str) -> Result<Tenant, ConfigError> {
        parse_tenants(&[SecretString::from(spec)], pace()).map(|mut all| all.remove(0))
    }

    #[test]
    fn a_full_spec_becomes_a_tenant() {
        let dir = std::env::temp_dir().join(format!("mock-tenant-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, "from-a-file\n").unwrap();
        let spec = format!(
            "name=acme-us, account=ws-us,project=PROJECT-US,key-file={},platform-key=pk-1,\
             emit-to=http://127.0.0.1:8080/polyai-events/acme-us,emit-secret=whsec_us",
            dir.display()
        );
        let tenant = one(&spec).unwrap();
        std::fs::remove_file(dir).unwrap();
        assert_eq!((tenant.name.as_str(), tenant.account_id.as_str()), ("acme-us", "ws-us"));
        assert_eq!(tenant.project_id, "PROJECT-US");
        assert_eq!(tenant.api_key.expose_secret(), "from-a-file");
        assert_eq!(tenant.platform_key().expose_secret(), "pk-1");
        let emit = tenant.emit.unwrap();
        assert_eq!(emit.url.path(), "/polyai-events/acme-us");
        assert_eq!(emit.secret.expose_secret(), "whsec_us");
        assert_eq!((emit.rate, emit.count), (7.0, Some(3)), "the mock-wide rate and count");
    }

    #[test]
    fn several_specs_and_empty_ones() {
        let specs = ["name=a,account=ws-a,project=P-A,key=ka", "", "name=b,account=ws-b,project=P-B,key=kb"];
        let specs: Vec<SecretString> = specs.into_iter().map(SecretString::from).collect();
        let tenants = parse_tenants(&specs, pace()).unwrap();
        assert_eq!(tenants.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(tenants[1].platform_api_key.is_none() && tenants[1].emit.is_none());
    }

    #[test]
    fn errors_point_at_the_tenant_and_item_but_never_quote_the_text() {
        let secret = "s3cr3t-never-shown";
        let cases = [
            (format!("name=a,account=ws-a,project=P,{secret}"), "item 4 is not `field=value`"),
            (format!("name=a,account=ws-a,project=P,{secret}=x"), "item 4 is not one of"),
            (format!("name=A!{secret},account=ws-a,project=P,key=k"), "tenant 1: its name"),
            (format!("account=ws-a,project=P,key={secret}"), "tenant 1: name is required"),
            (format!("name=a,project=P,key={secret}"), "tenant `a`: account is required"),
            ("name=a,account=ws-a,project=P".to_owned(), "tenant `a`: key or key-file is required"),
            (format!("name=a,account=ws-a,project=P,key={secret},key=x"), "key is given twice"),
            (format!("name=a,account=ws-a,project=P,key={secret},key-file=/x"), "key or key-file, not both"),
            (format!("name=a,account=ws-a,project=P,key-file=/nonexistent/{secret}x"), "key-file: cannot read"),
            (format!("name=a,account=ws-a,project=P,key-file={secret}"), "key-file: cannot read"),
            ("name=a,account=ws-a,project=P,key=k,emit-to=http://x/h".to_owned(), "emit-secret or emit-secret-file"),
            (format!("name=a,account=ws-a,project=P,key=k,emit-secret={secret}"), "emit-secret needs emit-to"),
            (format!("name=a,account=ws-a,project=P,key=k,emit-to=::{secret},emit-secret=x"), "emit-to is not a URL"),
        ];
        for (spec, expected) in cases {
            let message = one(&spec).unwrap_err().to_string();
            assert!(message.starts_with("MOCK_API_TENANTS: "), "{message}");
            assert!(message.contains(expected), "{spec}: {message}");
            // A key or secret never is shown, nor a path that may be one pasted in its place.
            assert!(!message.contains(secret), "{message}");
        }
    }
}
