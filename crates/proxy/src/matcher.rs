//! L7 rule alternatives as plain data, and the decision for a request or a ClientHello.
//!
//! The agent builds these from the IR: one alternative per egress Allow rule with an L7 match
//! that a connection can reach, in evaluation order. The first alternative that matches allows;
//! when none does, the request is denied (HTTP 403) or the TLS connection reset. An alternative
//! with no constraints allows everything, so "a later rule without an L7 match would allow" is
//! expressed by ending the list with such an alternative.
//!
//! Calico's `http` match: methods OR'd, paths OR'd, the two AND'd; an empty list places no
//! constraint. Sluice adds `hosts` (AND'd with both) and TLS `serverNames`.

use std::fmt;

use sluice_api::domain::DomainPattern;

/// Which rule an alternative comes from, so a decision can name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleIdentity {
    /// The policy as `explain` names it, its kind and name (for example `GlobalNetworkPolicy
    /// allow-partner` or `NetworkPolicy shop/web`); the proxy only prints it.
    pub policy: String,
    /// The rule's index in the policy's egress rules, from 0.
    pub rule_index: usize,
}

impl fmt::Display for RuleIdentity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}, egress rule {}", self.policy, self.rule_index)
    }
}

/// One path of Calico's `http.paths`.
///
/// Compared with the request's canonical path ([`crate::http::canonical_path`]); pass rule paths
/// through the same function, since a rule path that is not canonical (say `/%61`) can never
/// equal a canonical request path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The path equals this.
    Exact(String),
    /// The path starts with this (a string prefix, as Calico's: `/api` matches `/apiary`).
    Prefix(String),
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => path.starts_with(prefix.as_str()),
        }
    }
}

/// One rule's HTTP match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAlternative {
    pub rule: RuleIdentity,
    /// Methods, compared case-sensitively as HTTP does (`GET`, not `get`); empty: any.
    pub methods: Vec<String>,
    /// Empty: any path.
    pub paths: Vec<PathMatch>,
    /// The request's host (from `Host` or an absolute-form target, lowercased, without port);
    /// empty: any host, including none.
    pub hosts: Vec<DomainPattern>,
}

impl HttpAlternative {
    /// Whether this alternative allows the request.
    pub fn matches(&self, method: &str, path: &str, host: Option<&str>) -> bool {
        let method_matches = self.methods.is_empty() || self.methods.iter().any(|allowed| allowed == method);
        let path_matches = self.paths.is_empty() || self.paths.iter().any(|allowed| allowed.matches(path));
        let host_matches = self.hosts.is_empty()
            || host.is_some_and(|host| self.hosts.iter().any(|pattern| pattern.matches(host)));
        method_matches && path_matches && host_matches
    }
}

/// One rule's TLS match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsAlternative {
    pub rule: RuleIdentity,
    /// Empty: any ClientHello, with or without a server name. Otherwise the ClientHello must
    /// name a server that one of these matches, and must not be an Encrypted ClientHello
    /// (whose outer name is the provider's, not the site's).
    pub server_names: Vec<DomainPattern>,
}

impl TlsAlternative {
    pub fn matches(&self, server_name: Option<&str>, encrypted_client_hello: bool) -> bool {
        if self.server_names.is_empty() {
            return true;
        }
        !encrypted_client_hello
            && server_name.is_some_and(|name| self.server_names.iter().any(|pattern| pattern.matches(name)))
    }
}

/// A request's decision, as a judge gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// Forward the request; the rule that allowed it.
    Allow(RuleIdentity),
    /// Answer 403; the rules whose L7 match was tried (the answer names them).
    Deny(Vec<RuleIdentity>),
}

/// Decides complete requests. The core's own alternatives are one judge; the node's proxy
/// passes the policy evaluator's verdict on the connection's flow and the request, so that the
/// proxy has no rule interpreter of its own. A judge must not block for long: the core calls it
/// inside `receive`.
pub trait RequestJudge: fmt::Debug + Send + Sync {
    fn judge(&self, request: &crate::http::Request) -> Judgement;
}

/// The first HTTP alternative that allows the request, if any.
pub fn match_request<'a>(
    alternatives: &'a [HttpAlternative],
    method: &str,
    path: &str,
    host: Option<&str>,
) -> Option<&'a HttpAlternative> {
    alternatives
        .iter()
        .find(|alternative| alternative.matches(method, path, host))
}

/// The first TLS alternative that admits the ClientHello, if any.
pub fn match_client_hello<'a>(
    alternatives: &'a [TlsAlternative],
    server_name: Option<&str>,
    encrypted_client_hello: bool,
) -> Option<&'a TlsAlternative> {
    alternatives
        .iter()
        .find(|alternative| alternative.matches(server_name, encrypted_client_hello))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(index: usize) -> RuleIdentity {
        RuleIdentity {
            policy: "default.partner".to_string(),
            rule_index: index,
        }
    }

    fn patterns(names: &[&str]) -> Vec<DomainPattern> {
        names.iter().map(|name| name.parse().unwrap()).collect()
    }

    fn http(methods: &[&str], paths: Vec<PathMatch>, hosts: &[&str]) -> HttpAlternative {
        HttpAlternative {
            rule: rule(0),
            methods: methods.iter().map(|method| method.to_string()).collect(),
            paths,
            hosts: patterns(hosts),
        }
    }

    #[test]
    fn http_match_table() {
        let exact = |path: &str| PathMatch::Exact(path.to_string());
        let prefix = |path: &str| PathMatch::Prefix(path.to_string());
        let cases: Vec<(HttpAlternative, &str, &str, Option<&str>, bool)> = vec![
            (http(&[], vec![], &[]), "DELETE", "/x", None, true),
            (http(&["GET"], vec![], &[]), "GET", "/x", None, true),
            (http(&["GET"], vec![], &[]), "get", "/x", None, false),
            (http(&["GET", "HEAD"], vec![], &[]), "HEAD", "/", None, true),
            (http(&["GET"], vec![], &[]), "POST", "/", None, false),
            (http(&[], vec![exact("/v1/x")], &[]), "GET", "/v1/x", None, true),
            (http(&[], vec![exact("/v1/x")], &[]), "GET", "/v1/x/", None, false),
            (http(&[], vec![prefix("/v1")], &[]), "GET", "/v1beta", None, true),
            (http(&[], vec![prefix("/v1/")], &[]), "GET", "/v2/", None, false),
            (
                http(&[], vec![exact("/a"), prefix("/b/")], &[]),
                "GET",
                "/b/c",
                None,
                true,
            ),
            // Methods and paths are AND'd.
            (http(&["GET"], vec![exact("/a")], &[]), "POST", "/a", None, false),
            (http(&["GET"], vec![exact("/a")], &[]), "GET", "/b", None, false),
            (
                http(&[], vec![], &["api.example.com"]),
                "GET",
                "/",
                Some("api.example.com"),
                true,
            ),
            (
                http(&[], vec![], &["api.example.com"]),
                "GET",
                "/",
                Some("www.example.com"),
                false,
            ),
            (http(&[], vec![], &["api.example.com"]), "GET", "/", None, false),
            (
                http(&[], vec![], &["*.example.com"]),
                "GET",
                "/",
                Some("a.b.example.com"),
                true,
            ),
            (
                http(&[], vec![], &["*.example.com"]),
                "GET",
                "/",
                Some("example.com"),
                false,
            ),
            (
                http(&["GET"], vec![prefix("/v1/")], &["api.example.com"]),
                "GET",
                "/v1/items",
                Some("api.example.com"),
                true,
            ),
        ];
        for (alternative, method, path, host, expected) in cases {
            assert_eq!(
                alternative.matches(method, path, host),
                expected,
                "{alternative:?} against {method} {path} host {host:?}"
            );
        }
    }

    #[test]
    fn first_matching_alternative_decides() {
        let mut get_only = http(&["GET"], vec![], &[]);
        get_only.rule = rule(0);
        let mut anything = http(&[], vec![], &[]);
        anything.rule = rule(3);
        let alternatives = vec![get_only, anything];
        assert_eq!(
            match_request(&alternatives, "GET", "/", None).map(|found| found.rule.rule_index),
            Some(0)
        );
        assert_eq!(
            match_request(&alternatives, "POST", "/", None).map(|found| found.rule.rule_index),
            Some(3)
        );
        assert!(match_request(&alternatives[..1], "POST", "/", None).is_none());
        assert!(match_request(&[], "GET", "/", None).is_none());
    }

    #[test]
    fn tls_match_table() {
        let named = TlsAlternative {
            rule: rule(1),
            server_names: patterns(&["api.example.com", "*.cdn.example"]),
        };
        let any = TlsAlternative {
            rule: rule(2),
            server_names: vec![],
        };
        let cases = [
            (&named, Some("api.example.com"), false, true),
            (&named, Some("API.example.com"), false, true),
            (&named, Some("x.cdn.example"), false, true),
            (&named, Some("cdn.example"), false, false),
            (&named, Some("other.example.com"), false, false),
            (&named, None, false, false),
            (&named, Some("api.example.com"), true, false),
            (&any, None, false, true),
            (&any, Some("anything.example"), true, true),
        ];
        for (alternative, name, encrypted, expected) in cases {
            assert_eq!(
                alternative.matches(name, encrypted),
                expected,
                "{name:?} encrypted {encrypted}"
            );
        }
        let alternatives = [named.clone(), any.clone()];
        assert_eq!(
            match_client_hello(&alternatives, Some("other.example"), false)
                .map(|found| found.rule.rule_index),
            Some(2)
        );
        assert!(match_client_hello(&alternatives[..1], None, false).is_none());
    }
}
