//! L7 matches: what an HTTP request or a TLS ClientHello must carry for a rule to match, and
//! the L7 view of a flow they are checked against.
//!
//! A rule with an L7 match is a rule like any other whose last condition is on the
//! application layer: it matches only when every other match holds *and* the L7 match holds on
//! the flow's L7 view. Without a view (the flow's request is unknown), it does not match, so a
//! reader that cannot see requests fails closed (the rules are Allow-only).

use serde::{Deserialize, Serialize};
use sluice_api::domain::DomainPattern;

use crate::ir::DomainSet;

/// Index of an [`L7Match`] in [`crate::Dataplane::l7_matches`]: rules with the same match share
/// one, and a rule stays small.
pub type L7MatchId = u32;

/// One rule's L7 match: a connection is HTTP or TLS, never both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum L7Match {
    Http(HttpMatch),
    Tls(TlsMatch),
}

/// Calico's `http` (methods OR'd, paths OR'd) and Sluice's `hosts` (OR'd); the three AND'd, an
/// empty list allowing any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct HttpMatch {
    pub methods: Vec<String>,
    pub paths: Vec<PathMatch>,
    pub hosts: Vec<DomainPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

impl std::fmt::Display for PathMatch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathMatch::Exact(path) => write!(formatter, "exact {path}"),
            PathMatch::Prefix(path) => write!(formatter, "prefix {path}"),
        }
    }
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// Sluice's `tls`: the ClientHello's server name matches one of `server_names` (when given)
/// and, with `rule_domains`, one of the rule's `destination.domains`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct TlsMatch {
    pub server_names: Vec<DomainPattern>,
    pub rule_domains: bool,
}

/// What the proxy (or a person asking `explain`) knows of a connection above TCP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowL7 {
    /// The HTTP request on the connection, if it is HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRequest>,
    /// The server name of the TLS ClientHello, if the connection is TLS and names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl FlowL7 {
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.server_name.is_none()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    pub method: String,
    /// The request target's path; a query (`?…`) or fragment (`#…`) is not matched.
    pub path: String,
    /// The `Host` header; a `:port` is not matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

impl HttpRequest {
    /// The path without query or fragment, as path matches see it.
    pub fn matched_path(&self) -> &str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        &self.path[..end]
    }

    /// The host without a port, as host matches see it.
    pub fn matched_host(&self) -> Option<&str> {
        let host = self.host.as_deref()?;
        if host.starts_with('[') {
            // An IPv6 literal, which no name pattern matches; keep it whole.
            return Some(host);
        }
        Some(host.rsplit_once(':').map_or(host, |(name, _port)| name))
    }
}

/// How an L7 match went on a flow's view: what matched, or the first thing that did not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "l7", rename_all = "snake_case")]
pub enum L7Finding {
    /// The request matched: the method, path and host entries that allowed it (`None`: the
    /// match lists none, so any is allowed).
    HttpMatched {
        method: String,
        path: String,
        host: Option<String>,
        by_method: Option<String>,
        by_path: Option<String>,
        by_host: Option<String>,
    },
    /// The server name matched: the `serverNames` pattern and the rule's domain that allowed it.
    TlsMatched {
        server_name: String,
        by_server_name: Option<String>,
        by_domain: Option<String>,
    },
    /// The rule needs an HTTP request and the flow carries none.
    NoHttpRequest,
    /// The rule needs a TLS server name and the flow carries none.
    NoServerName,
    MethodNotListed {
        method: String,
        methods: Vec<String>,
    },
    PathNotListed {
        path: String,
        paths: Vec<String>,
    },
    HostNotListed {
        host: Option<String>,
        hosts: Vec<String>,
    },
    ServerNameNotListed {
        server_name: String,
        server_names: Vec<String>,
    },
    ServerNameNotInDomains {
        server_name: String,
        domains: Vec<String>,
    },
}

impl L7Finding {
    pub fn matched(&self) -> bool {
        matches!(self, L7Finding::HttpMatched { .. } | L7Finding::TlsMatched { .. })
    }
}

fn texts(patterns: &[DomainPattern]) -> Vec<String> {
    patterns.iter().map(DomainPattern::to_string).collect()
}

impl L7Match {
    /// Whether the match holds on `view`. `rule_domains` is the rule's domain set, which a TLS
    /// match with `rule_domains` checks the server name against (none: nothing matches).
    pub fn check(&self, rule_domains: Option<&DomainSet>, view: Option<&FlowL7>) -> L7Finding {
        match self {
            L7Match::Http(http) => match view.and_then(|view| view.http.as_ref()) {
                Some(request) => http.check(request),
                None => L7Finding::NoHttpRequest,
            },
            L7Match::Tls(tls) => match view.and_then(|view| view.server_name.as_deref()) {
                Some(server_name) => tls.check(server_name, rule_domains),
                None => L7Finding::NoServerName,
            },
        }
    }

    /// Whether the match holds, without saying why (the evaluator's fast path).
    pub fn holds(&self, rule_domains: Option<&DomainSet>, view: Option<&FlowL7>) -> bool {
        self.check(rule_domains, view).matched()
    }
}

impl HttpMatch {
    fn check(&self, request: &HttpRequest) -> L7Finding {
        let path = request.matched_path();
        let host = request.matched_host();
        // Methods are case-sensitive tokens (RFC 9110 §9.1), compared as written.
        let by_method = self.methods.iter().find(|method| **method == request.method);
        if !self.methods.is_empty() && by_method.is_none() {
            return L7Finding::MethodNotListed {
                method: request.method.clone(),
                methods: self.methods.clone(),
            };
        }
        let by_path = self.paths.iter().find(|entry| entry.matches(path));
        if !self.paths.is_empty() && by_path.is_none() {
            return L7Finding::PathNotListed {
                path: path.to_string(),
                paths: self.paths.iter().map(PathMatch::to_string).collect(),
            };
        }
        let by_host = host.and_then(|host| self.hosts.iter().find(|pattern| pattern.matches(host)));
        if !self.hosts.is_empty() && by_host.is_none() {
            return L7Finding::HostNotListed {
                host: host.map(str::to_string),
                hosts: texts(&self.hosts),
            };
        }
        L7Finding::HttpMatched {
            method: request.method.clone(),
            path: path.to_string(),
            host: host.map(str::to_string),
            by_method: by_method.cloned(),
            by_path: by_path.map(PathMatch::to_string),
            by_host: by_host.map(DomainPattern::to_string),
        }
    }
}

impl TlsMatch {
    fn check(&self, server_name: &str, rule_domains: Option<&DomainSet>) -> L7Finding {
        let by_server_name = self
            .server_names
            .iter()
            .find(|pattern| pattern.matches(server_name));
        if !self.server_names.is_empty() && by_server_name.is_none() {
            return L7Finding::ServerNameNotListed {
                server_name: server_name.to_string(),
                server_names: texts(&self.server_names),
            };
        }
        let by_domain = if self.rule_domains {
            let domain = rule_domains.and_then(|domains| domains.matching(server_name));
            if domain.is_none() {
                return L7Finding::ServerNameNotInDomains {
                    server_name: server_name.to_string(),
                    domains: rule_domains.map_or_else(Vec::new, |domains| texts(&domains.patterns)),
                };
            }
            domain
        } else {
            None
        };
        L7Finding::TlsMatched {
            server_name: server_name.to_string(),
            by_server_name: by_server_name.map(DomainPattern::to_string),
            by_domain: by_domain.map(DomainPattern::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(texts: &[&str]) -> Vec<DomainPattern> {
        texts.iter().map(|text| text.parse().unwrap()).collect()
    }

    fn request(method: &str, path: &str, host: Option<&str>) -> FlowL7 {
        FlowL7 {
            http: Some(HttpRequest {
                method: method.to_string(),
                path: path.to_string(),
                host: host.map(str::to_string),
            }),
            server_name: None,
        }
    }

    fn tls(name: &str) -> FlowL7 {
        FlowL7 {
            http: None,
            server_name: Some(name.to_string()),
        }
    }

    #[test]
    fn http_methods_paths_and_hosts_are_each_ored_and_anded_together() {
        let rule = L7Match::Http(HttpMatch {
            methods: vec!["GET".into(), "HEAD".into()],
            paths: vec![
                PathMatch::Prefix("/v1/".into()),
                PathMatch::Exact("/health".into()),
            ],
            hosts: patterns(&["api.partner.example", "*.cdn.example"]),
        });
        let table: &[(FlowL7, bool)] = &[
            (request("GET", "/v1/x", Some("api.partner.example")), true),
            (request("HEAD", "/health", Some("a.b.cdn.example:8080")), true),
            (request("GET", "/v1/x?y=/z", Some("API.partner.example")), true),
            (request("POST", "/v1/x", Some("api.partner.example")), false),
            (request("get", "/v1/x", Some("api.partner.example")), false),
            (request("GET", "/v2/x", Some("api.partner.example")), false),
            (request("GET", "/health/x", Some("api.partner.example")), false),
            (request("GET", "/v1", Some("api.partner.example")), false),
            (request("GET", "/v1/x", Some("cdn.example")), false),
            (request("GET", "/v1/x", None), false),
            (tls("api.partner.example"), false),
            (FlowL7::default(), false),
        ];
        for (view, expected) in table {
            assert_eq!(rule.holds(None, Some(view)), *expected, "{view:?}");
        }
        assert!(!rule.holds(None, None));
    }

    #[test]
    fn findings_name_what_matched_and_what_did_not() {
        let rule = L7Match::Http(HttpMatch {
            methods: vec!["GET".into()],
            paths: vec![PathMatch::Prefix("/v1/".into())],
            hosts: Vec::new(),
        });
        assert_eq!(
            rule.check(None, Some(&request("GET", "/v1/x?q", Some("h.example:80")))),
            L7Finding::HttpMatched {
                method: "GET".into(),
                path: "/v1/x".into(),
                host: Some("h.example".into()),
                by_method: Some("GET".into()),
                by_path: Some("prefix /v1/".into()),
                by_host: None,
            }
        );
        assert_eq!(
            rule.check(None, Some(&request("POST", "/v1/x", None))),
            L7Finding::MethodNotListed {
                method: "POST".into(),
                methods: vec!["GET".into()]
            }
        );
        assert_eq!(
            rule.check(None, Some(&request("GET", "/v2", None))),
            L7Finding::PathNotListed {
                path: "/v2".into(),
                paths: vec!["prefix /v1/".into()]
            }
        );
        assert_eq!(
            rule.check(None, Some(&tls("a.example"))),
            L7Finding::NoHttpRequest
        );
        // An empty HTTP match allows any request, but still needs one.
        let any = L7Match::Http(HttpMatch::default());
        assert!(any.holds(None, Some(&request("DELETE", "/", None))));
        assert!(!any.holds(None, Some(&tls("a.example"))));
    }

    #[test]
    fn tls_server_names_and_the_rules_domains_must_both_hold_when_given() {
        let domains = DomainSet {
            id: 0,
            name: "d0".into(),
            patterns: patterns(&["api.partner.example", "*.s3.example"]),
        };
        let by_domains = L7Match::Tls(TlsMatch {
            server_names: Vec::new(),
            rule_domains: true,
        });
        assert!(by_domains.holds(Some(&domains), Some(&tls("api.partner.example"))));
        assert!(by_domains.holds(Some(&domains), Some(&tls("bucket.s3.example"))));
        assert_eq!(
            by_domains.check(Some(&domains), Some(&tls("other.example"))),
            L7Finding::ServerNameNotInDomains {
                server_name: "other.example".into(),
                domains: vec!["api.partner.example".into(), "*.s3.example".into()]
            }
        );
        // No domain set to check against: nothing matches.
        assert!(!by_domains.holds(None, Some(&tls("api.partner.example"))));
        assert_eq!(by_domains.check(Some(&domains), None), L7Finding::NoServerName);
        let both = L7Match::Tls(TlsMatch {
            server_names: patterns(&["*.s3.example"]),
            rule_domains: true,
        });
        assert_eq!(
            both.check(Some(&domains), Some(&tls("bucket.s3.example"))),
            L7Finding::TlsMatched {
                server_name: "bucket.s3.example".into(),
                by_server_name: Some("*.s3.example".into()),
                by_domain: Some("*.s3.example".into()),
            }
        );
        assert!(!both.holds(Some(&domains), Some(&tls("api.partner.example"))));
        // A ClientHello carries no HTTP request, and an HTTP request no server name.
        assert!(!both.holds(
            Some(&domains),
            Some(&request("GET", "/", Some("bucket.s3.example")))
        ));
    }
}
