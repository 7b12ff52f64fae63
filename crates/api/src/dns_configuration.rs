//! The FelixConfiguration fields that domain-name policy reads (Calico Enterprise's names and
//! forms): `dnsTrustedServers`, `dnsCacheFile`, `dnsCacheSaveInterval`, `dnsCacheEpoch` and
//! `dnsExtraTTL`, and the effective values for one node (`node.<name>` over `default` over
//! Sluice's defaults).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use crate::kept::FelixConfiguration;

/// The port a trusted server given by address alone answers on.
pub const DNS_PORT: u16 = 53;
/// Where the agent keeps what it learned across restarts, unless configured.
pub const DEFAULT_CACHE_FILE: &str = "/run/sluice/dns-cache.json";
/// Calico's default for `dnsCacheSaveInterval`.
pub const DEFAULT_CACHE_SAVE_INTERVAL: Duration = Duration::from_secs(60);
/// Calico's default for `dnsTrustedServers`: the cluster DNS Service.
pub const DEFAULT_TRUSTED_SERVER: &str = "k8s-service:kube-dns";
/// The namespace of a `k8s-service:<name>` entry without one (Calico's).
pub const DEFAULT_SERVICE_NAMESPACE: &str = "kube-system";

/// A duration written as Kubernetes' `metav1.Duration` (Go's `time.ParseDuration`): `60s`,
/// `1m30s`, `1.5h`, `250ms`, `0`. Kept as written, so it round-trips unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoDuration {
    text: String,
    duration: Duration,
}

impl GoDuration {
    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for GoDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<GoDuration, String> {
        parse_go_duration(text).map(|duration| GoDuration {
            text: text.to_string(),
            duration,
        })
    }
}

fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| {
        format!("`{text}` is not a duration ({why}); write one such as `60s`, `1m30s` or `500ms`")
    };
    if text.starts_with('-') {
        return Err(format!("`{text}` is negative; this duration must be 0 or more"));
    }
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid("it is empty"));
    }
    let mut total = 0f64;
    let mut remaining = rest;
    while !remaining.is_empty() {
        let number_length = remaining
            .find(|character: char| !(character.is_ascii_digit() || character == '.'))
            .unwrap_or(remaining.len());
        let number = &remaining[..number_length];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(invalid("expected a number"));
        }
        remaining = &remaining[number_length..];
        let unit_length = remaining
            .find(|character: char| character.is_ascii_digit() || character == '.')
            .unwrap_or(remaining.len());
        let unit = &remaining[..unit_length];
        remaining = &remaining[unit_length..];
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(invalid("a number without a unit")),
            other => {
                return Err(invalid(&format!(
                    "unknown unit `{other}`; use ns, us, ms, s, m or h"
                )));
            }
        };
        let value: f64 = number.parse().map_err(|_| invalid("expected a number"))?;
        total += value * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid("too long"))
}

impl fmt::Display for GoDuration {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        match value {
            serde_json::Value::String(text) => text.parse().map_err(de::Error::custom),
            other => Err(de::Error::custom(format!(
                "`{other}` is not a duration; write a string such as `60s`, `1m30s` or `500ms`"
            ))),
        }
    }
}

/// A DNS server whose answers the agent learns from: Calico's `<ip>[:<port>]` (IPv6 with a port
/// as `[<ip>]:<port>`) or `k8s-service:[<namespace>/]<name>[:<port>]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TrustedServer {
    Address(SocketAddr),
    /// A Kubernetes Service, resolved to its cluster IP only with a Kubernetes API backend,
    /// which Sluice does not have yet: until then such an entry trusts no server.
    KubernetesService {
        namespace: String,
        name: String,
        /// `None`: the Service's first port.
        port: Option<u16>,
    },
}

impl TrustedServer {
    pub fn address(&self) -> Option<SocketAddr> {
        match self {
            TrustedServer::Address(address) => Some(*address),
            TrustedServer::KubernetesService { .. } => None,
        }
    }
}

impl FromStr for TrustedServer {
    type Err = String;

    fn from_str(text: &str) -> Result<TrustedServer, String> {
        let expected = "expected `<ip>`, `<ip>:<port>`, `[<ipv6>]:<port>` or `k8s-service:[<namespace>/]<name>[:<port>]`";
        if let Some(service) = text.strip_prefix("k8s-service:") {
            let (service, port) = match service.rsplit_once(':') {
                Some((service, port)) => (service, Some(parse_server_port(text, port)?)),
                None => (service, None),
            };
            let (namespace, name) = service
                .split_once('/')
                .unwrap_or((DEFAULT_SERVICE_NAMESPACE, service));
            for (value, what) in [(namespace, "namespace"), (name, "Service name")] {
                crate::meta::validate_label_name(value).map_err(|_| {
                    format!(
                        "`{text}` has the {what} `{value}`, which is not a DNS label (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
                    )
                })?;
            }
            return Ok(TrustedServer::KubernetesService {
                namespace: namespace.to_string(),
                name: name.to_string(),
                port,
            });
        }
        if let Ok(address) = text.parse::<IpAddr>() {
            return Ok(TrustedServer::Address(SocketAddr::new(address, DNS_PORT)));
        }
        if let Ok(address) = text.parse::<SocketAddr>() {
            if address.port() == 0 {
                return Err(format!("`{text}` has port 0; a DNS server's port is 1 to 65535"));
            }
            return Ok(TrustedServer::Address(address));
        }
        Err(format!("`{text}` is not a trusted DNS server; {expected}"))
    }
}

fn parse_server_port(text: &str, port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("`{text}` has the port `{port}`; a DNS server's port is 1 to 65535"))
}

impl fmt::Display for TrustedServer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustedServer::Address(address) if address.port() == DNS_PORT => {
                write!(formatter, "{}", address.ip())
            }
            TrustedServer::Address(address) => write!(formatter, "{address}"),
            TrustedServer::KubernetesService {
                namespace,
                name,
                port,
            } => {
                write!(formatter, "k8s-service:{namespace}/{name}")?;
                match port {
                    Some(port) => write!(formatter, ":{port}"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl Serialize for TrustedServer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TrustedServer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A path for `dnsCacheFile`: absolute, since the agent may run from any directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct CacheFile(String);

impl CacheFile {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for CacheFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if !text.starts_with('/') {
            return Err(de::Error::custom(format!(
                "`{text}` is not an absolute path; dnsCacheFile names a file such as `{DEFAULT_CACHE_FILE}`"
            )));
        }
        Ok(CacheFile(text))
    }
}

/// What one node's agent uses for domain-name policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfiguration {
    pub trusted_servers: Vec<TrustedServer>,
    pub cache_file: String,
    pub cache_save_interval: Duration,
    pub cache_epoch: i64,
    pub extra_ttl: Duration,
}

/// The DNS configuration for `node`: each field from `node.<node>` if it sets it, else from
/// `default`, else Sluice's default (Calico's, where Calico has one).
pub fn dns_configuration(configurations: &[FelixConfiguration], node: &str) -> DnsConfiguration {
    let own = configurations
        .iter()
        .find(|configuration| configuration.node() == Some(node));
    let cluster = configurations
        .iter()
        .find(|configuration| configuration.metadata.name == "default");
    let layers: Vec<_> = [own, cluster]
        .into_iter()
        .flatten()
        .map(|configuration| &configuration.spec)
        .collect();
    let first = |pick: &dyn Fn(&crate::kept::FelixConfigurationSpec) -> bool| {
        layers.iter().copied().find(|spec| pick(spec))
    };
    DnsConfiguration {
        trusted_servers: first(&|spec| spec.dns_trusted_servers.is_some())
            .and_then(|spec| spec.dns_trusted_servers.clone())
            .unwrap_or_else(|| vec![DEFAULT_TRUSTED_SERVER.parse().expect("the default parses")]),
        cache_file: first(&|spec| spec.dns_cache_file.is_some())
            .and_then(|spec| spec.dns_cache_file.as_ref())
            .map_or_else(
                || DEFAULT_CACHE_FILE.to_string(),
                |file| file.as_str().to_string(),
            ),
        cache_save_interval: first(&|spec| spec.dns_cache_save_interval.is_some())
            .and_then(|spec| spec.dns_cache_save_interval.as_ref())
            .map_or(DEFAULT_CACHE_SAVE_INTERVAL, GoDuration::duration),
        cache_epoch: first(&|spec| spec.dns_cache_epoch.is_some())
            .and_then(|spec| spec.dns_cache_epoch)
            .unwrap_or(0),
        extra_ttl: first(&|spec| spec.dns_extra_ttl.is_some())
            .and_then(|spec| spec.dns_extra_ttl.as_ref())
            .map_or(Duration::ZERO, GoDuration::duration),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_reads_them() {
        let table: &[(&str, Duration)] = &[
            ("60s", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("1.5h", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
        ];
        for (text, expected) in table {
            let parsed: GoDuration = text.parse().unwrap_or_else(|error| panic!("{text}: {error}"));
            assert_eq!(parsed.duration(), *expected, "{text}");
            assert_eq!(parsed.as_str(), *text);
        }
        let bad: &[(&str, &str)] = &[
            ("", "empty"),
            ("60", "without a unit"),
            ("1d", "unknown unit `d`"),
            ("-5s", "negative"),
            ("s", "expected a number"),
            ("1..2s", "expected a number"),
        ];
        for (text, hint) in bad {
            let error = text.parse::<GoDuration>().expect_err(text);
            assert!(error.contains(hint), "{text}: {error}");
        }
    }

    #[test]
    fn trusted_servers_in_calicos_forms() {
        let address = |text: &str| text.parse::<TrustedServer>().unwrap().address().unwrap();
        assert_eq!(address("10.96.0.10"), "10.96.0.10:53".parse().unwrap());
        assert_eq!(address("10.96.0.10:5353"), "10.96.0.10:5353".parse().unwrap());
        assert_eq!(address("fd00::a"), "[fd00::a]:53".parse().unwrap());
        assert_eq!(address("[fd00::a]:5353"), "[fd00::a]:5353".parse().unwrap());
        assert_eq!(
            "k8s-service:kube-dns".parse::<TrustedServer>().unwrap(),
            TrustedServer::KubernetesService {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
                port: None
            }
        );
        assert_eq!(
            "k8s-service:openshift-dns/dns-default:5353"
                .parse::<TrustedServer>()
                .unwrap()
                .to_string(),
            "k8s-service:openshift-dns/dns-default:5353"
        );
        for (text, hint) in [
            ("dns.example", "is not a trusted DNS server"),
            ("10.96.0.10:0", "port 0"),
            ("k8s-service:kube-dns:99999", "port `99999`"),
            ("k8s-service:Kube_DNS", "Service name `Kube_DNS`"),
            ("k8s-service:", "Service name ``"),
        ] {
            let error = text.parse::<TrustedServer>().expect_err(text);
            assert!(error.contains(hint), "{text}: {error}");
        }
    }
}
