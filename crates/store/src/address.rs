//! Datastore addresses: `file:PATH` / `file:///ABSOLUTE/PATH` for the embedded store and
//! `etcd://HOST:PORT[,HOST:PORT…]` (or `etcd+http://…`) for etcd.

use std::path::PathBuf;

use crate::{EmbeddedStore, EtcdStore, Result, Store, StoreError};

/// etcd's client port, used when an endpoint names none.
const ETCD_DEFAULT_PORT: u16 = 2379;
/// Where root's store lives when nothing else is said.
const SYSTEM_ADDRESS: &str = "file:///var/lib/sluice/store.db";

/// A parsed datastore address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// The embedded store in this file.
    File(PathBuf),
    /// An etcd cluster at these endpoints (`http://host:port`).
    Etcd(Vec<String>),
}

impl Address {
    pub fn parse(address: &str) -> Result<Address> {
        let invalid = |reason: &str| StoreError::InvalidAddress {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = address.split_once(':') else {
            return Err(invalid(
                "expected file:PATH, file:///ABSOLUTE/PATH or etcd://HOST:PORT[,HOST:PORT...]",
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => parse_file(rest)
                .map(Address::File)
                .map_err(|reason| invalid(&reason)),
            "etcd" | "etcd+http" => {
                let Some(hosts) = rest.strip_prefix("//") else {
                    return Err(invalid("expected etcd://HOST:PORT[,HOST:PORT...]"));
                };
                parse_endpoints(hosts)
                    .map(Address::Etcd)
                    .map_err(|reason| invalid(&reason))
            }
            "etcd+https" => Err(invalid("TLS connections to etcd are not supported yet")),
            other => Err(invalid(&format!(
                "unknown scheme `{other}`; expected `file` or `etcd` (also `etcd+http`)"
            ))),
        }
    }

    /// Opens the existing store at this address: a store file that does not exist is
    /// `Missing` (a typo must not read as an empty store), one that cannot be written is
    /// opened for reading. For readers: the agent, the CNI plugin, `get`, `explain`.
    pub fn open(&self) -> Result<Box<dyn Store>> {
        Ok(match self {
            Address::File(path) => Box::new(EmbeddedStore::open_existing(path)?),
            Address::Etcd(endpoints) => Box::new(EtcdStore::connect(endpoints)?),
        })
    }

    /// Opens the store at this address, creating the file (and its directories) if missing.
    /// For the writers that set a store up: `sluice apply`, writing `ipam` commands, the lab.
    pub fn open_or_create(&self) -> Result<Box<dyn Store>> {
        Ok(match self {
            Address::File(path) => Box::new(EmbeddedStore::open(path)?),
            Address::Etcd(endpoints) => Box::new(EtcdStore::connect(endpoints)?),
        })
    }
}

/// Opens the existing datastore at `address` (see [`Address::open`]).
pub fn open(address: &str) -> Result<Box<dyn Store>> {
    Address::parse(address)?.open()
}

/// Opens the datastore at `address`, creating a store file if there is none (see
/// [`Address::open_or_create`]).
pub fn open_or_create(address: &str) -> Result<Box<dyn Store>> {
    Address::parse(address)?.open_or_create()
}

/// `SLUICE_DATASTORE` if set; else the system store for root; else the user's data directory
/// (`$XDG_DATA_HOME/sluice/store.db`, or `~/.local/share/sluice/store.db`).
pub fn default_address() -> String {
    if let Some(address) = std::env::var_os("SLUICE_DATASTORE").filter(|value| !value.is_empty()) {
        return address.to_string_lossy().into_owned();
    }
    if effective_user_is_root() {
        return SYSTEM_ADDRESS.to_string();
    }
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    let data_home =
        absolute("XDG_DATA_HOME").or_else(|| absolute("HOME").map(|home| home.join(".local").join("share")));
    match data_home {
        Some(directory) => {
            let path = directory.join("sluice").join("store.db");
            format!("file://{}", escape_path(&path.to_string_lossy()))
        }
        None => SYSTEM_ADDRESS.to_string(),
    }
}

/// Reads the effective user id from procfs, which needs no unsafe call into libc.
fn effective_user_is_root() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

fn parse_file(rest: &str) -> std::result::Result<PathBuf, String> {
    if rest.contains(['?', '#']) {
        return Err("query strings and fragments are not supported in file addresses".into());
    }
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => {
            let (host, path) = match authority_and_path.find('/') {
                Some(slash) => authority_and_path.split_at(slash),
                None => (authority_and_path, ""),
            };
            if !(host.is_empty() || host.eq_ignore_ascii_case("localhost")) {
                return Err(format!(
                    "`{host}` is read as a host name; write file:{authority_and_path} for a \
                     relative path or file:///{authority_and_path} for an absolute one"
                ));
            }
            path
        }
        None => rest,
    };
    if path.is_empty() {
        return Err("no file path given".into());
    }
    let path = unescape_path(path)?;
    if path.ends_with('/') {
        return Err("the path names a directory; name the store file, e.g. store.db".into());
    }
    Ok(PathBuf::from(path))
}

fn parse_endpoints(hosts: &str) -> std::result::Result<Vec<String>, String> {
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains('/') {
        return Err("etcd addresses take no path".into());
    }
    if hosts.contains('@') {
        return Err("credentials in the address are not supported".into());
    }
    if hosts.is_empty() {
        return Err("no etcd endpoint given".into());
    }
    hosts
        .split(',')
        .map(|endpoint| parse_endpoint(endpoint.trim()))
        .collect()
}

fn parse_endpoint(endpoint: &str) -> std::result::Result<String, String> {
    if endpoint.is_empty() {
        return Err("empty endpoint in the list".into());
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = if let Some(bracketed) = endpoint.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(format!("endpoint `{endpoint}` has no closing `]`"));
        };
        let port = match after {
            "" => None,
            after => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(format!("unexpected `{after}` after `[{inside}]`")),
            },
        };
        (format!("[{inside}]"), port)
    } else {
        match endpoint.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(format!(
                    "write the IPv6 address in `{endpoint}` as [ADDRESS]:PORT"
                ));
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (endpoint.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("endpoint `{endpoint}` has no host"));
    }
    let port = match port {
        None => ETCD_DEFAULT_PORT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("`{port}` in `{endpoint}` is not a port (1-65535)")),
        },
    };
    Ok(format!("http://{host}:{port}"))
}

/// Decodes `%XX` escapes, as in any `file:` URL.
fn unescape_path(path: &str) -> std::result::Result<String, String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let value = path
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| format!("bad escape at `{}`", &path[index..]))?;
            decoded.push(value);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "the path is not UTF-8 once unescaped".to_string())
}

fn escape_path(path: &str) -> String {
    let mut escaped = String::with_capacity(path.len());
    for character in path.chars() {
        match character {
            '%' => escaped.push_str("%25"),
            '?' => escaped.push_str("%3F"),
            '#' => escaped.push_str("%23"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(address: &str) -> String {
        match Address::parse(address) {
            Err(StoreError::InvalidAddress { reason, .. }) => reason,
            other => panic!("{address}: expected an invalid address, got {other:?}"),
        }
    }

    #[test]
    fn file_addresses() {
        let file = |path: &str| Ok(Address::File(PathBuf::from(path)));
        assert_eq!(
            Address::parse("file:///var/lib/sluice/store.db"),
            file("/var/lib/sluice/store.db")
        );
        assert_eq!(Address::parse("file:relative/path.db"), file("relative/path.db"));
        assert_eq!(Address::parse("file:/absolute.db"), file("/absolute.db"));
        assert_eq!(Address::parse("file://localhost/tmp/a.db"), file("/tmp/a.db"));
        assert_eq!(
            Address::parse("FILE:///tmp/with%20space.db"),
            file("/tmp/with space.db")
        );
        assert!(reason("file://store.db").contains("host name"));
        assert!(reason("file:").contains("no file path"));
        assert!(reason("file:///tmp/").contains("directory"));
        assert!(reason("file:///a.db?mode=ro").contains("query"));
        assert!(reason("file:///a%2.db").contains("escape"));
    }

    #[test]
    fn etcd_addresses() {
        let etcd = |endpoints: &[&str]| {
            Ok(Address::Etcd(
                endpoints.iter().map(|endpoint| endpoint.to_string()).collect(),
            ))
        };
        assert_eq!(
            Address::parse("etcd://127.0.0.1:2379,127.0.0.1:22379"),
            etcd(&["http://127.0.0.1:2379", "http://127.0.0.1:22379"])
        );
        assert_eq!(
            Address::parse("etcd+http://etcd-0/"),
            etcd(&["http://etcd-0:2379"])
        );
        assert_eq!(Address::parse("etcd://[::1]:2379"), etcd(&["http://[::1]:2379"]));
        assert!(reason("etcd://").contains("no etcd endpoint"));
        assert!(reason("etcd://a:1,,b:2").contains("empty endpoint"));
        assert!(reason("etcd://a:http").contains("not a port"));
        assert!(reason("etcd://a:0").contains("not a port"));
        assert!(reason("etcd://::1").contains("IPv6"));
        assert!(reason("etcd://a:1/prefix").contains("no path"));
        assert!(reason("etcd://user:pw@a:1").contains("credentials"));
        assert!(reason("etcd+https://a:1").contains("TLS"));
        assert!(reason("etcd:a:1").contains("etcd://"));
        assert!(reason("redis://a").contains("unknown scheme `redis`"));
        assert!(reason("/var/lib/store.db").contains("expected file:PATH"));
    }

    #[test]
    fn default_address_is_a_valid_file_or_given_address() {
        // Only checks the shape: the environment belongs to the whole test process.
        let address = default_address();
        assert!(Address::parse(&address).is_ok(), "{address}");
    }
}
