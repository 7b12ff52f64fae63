//! Destination names on the command line: `--resolve NAME=ADDR[,ADDR]` (as curl's), and the
//! names a flow may carry. Sluice evaluates a name by the addresses it is told the name
//! resolved to; reading a node's learned DNS cache comes later, with the agent.

use std::net::IpAddr;

use sluice_api::domain::DomainPattern;

/// One `--resolve` option: a name and the addresses it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// Parses `NAME=ADDR[,ADDR]` (clap's value parser for `--resolve`).
pub fn parse_resolution(text: &str) -> Result<Resolution, String> {
    let (name, addresses) = text.split_once('=').ok_or_else(|| {
        format!("`{text}` is not NAME=ADDRESS[,ADDRESS]; for example api.partner.example=203.0.113.10")
    })?;
    let name = domain_name(name)?;
    let addresses = addresses
        .split(',')
        .map(|address| {
            address
                .trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("`{address}` in `{text}` is not an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Resolution { name, addresses })
}

/// A destination name as a flow carries it: a valid DNS name (lowercased), not a pattern.
pub fn domain_name(text: &str) -> Result<String, String> {
    let pattern: DomainPattern = text
        .strip_suffix('.')
        .unwrap_or(text)
        .parse()
        .map_err(|error| format!("`{text}` is not a domain name: {error}"))?;
    if pattern.is_wildcard() {
        return Err(format!(
            "`{text}` is a wildcard pattern; a flow goes to one name, such as api.partner.example"
        ));
    }
    Ok(pattern.as_str().to_string())
}

/// Whether `text` is meant as a name: not an address and not a pod (`namespace/name`).
pub fn looks_like_name(text: &str) -> bool {
    text.parse::<IpAddr>().is_err() && !text.contains('/') && text.contains('.')
}

/// The addresses every `--resolve` gives `name`, in order, without repeats.
pub fn addresses_of(resolutions: &[Resolution], name: &str) -> Result<Vec<IpAddr>, String> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for resolution in resolutions.iter().filter(|resolution| resolution.name == name) {
        for address in &resolution.addresses {
            if !addresses.contains(address) {
                addresses.push(*address);
            }
        }
    }
    if addresses.is_empty() {
        return Err(format!(
            "`{name}` is a name, and these manifests say nothing of what it resolved to (reading the datastore, a node's learned DNS cache does); give --resolve {name}=ADDRESS[,ADDRESS]"
        ));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions_read_as_curl_writes_them() {
        let resolution = parse_resolution("API.partner.example=203.0.113.10,2001:db8::10").unwrap();
        assert_eq!(resolution.name, "api.partner.example");
        assert_eq!(
            resolution.addresses,
            [
                "203.0.113.10".parse::<IpAddr>().unwrap(),
                "2001:db8::10".parse().unwrap()
            ]
        );
        assert!(
            parse_resolution("api.partner.example")
                .unwrap_err()
                .contains("NAME=ADDRESS")
        );
        assert!(
            parse_resolution("api.partner.example=web")
                .unwrap_err()
                .contains("`web`")
        );
        assert!(
            parse_resolution("*.partner.example=203.0.113.10")
                .unwrap_err()
                .contains("wildcard")
        );
        assert!(
            parse_resolution("bad_name.example=203.0.113.10")
                .unwrap_err()
                .contains("contains `_`")
        );
    }

    #[test]
    fn names_are_told_from_addresses_and_pods() {
        assert!(looks_like_name("api.partner.example"));
        assert!(!looks_like_name("203.0.113.10"));
        assert!(!looks_like_name("2001:db8::1"));
        assert!(!looks_like_name("prod/web"));
    }
}
