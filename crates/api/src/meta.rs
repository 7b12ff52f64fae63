//! Kubernetes object metadata, shared by every kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a resource was read from: file, line and column of its document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// `metadata` of any object. Fields Sluice does not use are accepted (objects exported from a
/// cluster carry them) but kept opaque.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_references: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_fields: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<String>,
    /// Where this object was read from; not part of the resource.
    #[serde(skip)]
    pub origin: Origin,
}

impl ObjectMeta {
    /// The namespace, defaulting to `default` as kubectl does.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("default")
    }
}

/// Checks a DNS-1123 subdomain name (the rule for most object names).
pub fn validate_subdomain_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.chars().all(|character| {
                    character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
                })
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name: use lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
        ))
    }
}

/// Checks a DNS-1123 label (the rule for namespace names).
pub fn validate_label_name(name: &str) -> Result<(), String> {
    if name.len() <= 63 && !name.contains('.') && validate_subdomain_name(name).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid namespace name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// Checks a Kubernetes label key and value.
pub fn validate_label(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty() && name.len() <= 63 && is_label_text(name);
    let prefix_ok = prefix.is_none_or(|prefix| validate_subdomain_name(prefix).is_ok());
    if !name_ok || !prefix_ok {
        return Err(format!(
            "`{key}` is not a valid label key: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    if value.len() > 63 || !(value.is_empty() || is_label_text(value)) {
        return Err(format!(
            "`{value}` is not a valid value for label `{key}`: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

fn is_label_text(text: &str) -> bool {
    text.chars()
        .all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'))
        && text.starts_with(|character: char| character.is_ascii_alphanumeric())
        && text.ends_with(|character: char| character.is_ascii_alphanumeric())
}
