//! The gateway's own nft table, `inet sluice-gateway`: one postrouting NAT chain that rewrites
//! the source of everything forwarded out of the pod's interface to the pod's address. Replies
//! come back to that address and conntrack reverses the rewrite toward the client.

use sluice_nft::{Backend, Chain, CommandBackend, Family, NftError, Object, Rule, Table, Transaction};

use crate::address::InterfaceAddresses;

/// The table's name; no other Sluice program writes it.
pub const TABLE_NAME: &str = "sluice-gateway";
const CHAIN: &str = "postrouting";
// srcnat: after filtering, as iptables' MASQUERADE would be.
const SRCNAT_PRIORITY: i32 = 100;

pub fn table() -> Table {
    Table::new(Family::Inet, TABLE_NAME)
}

/// Replaces whatever table of that name exists with one that source-NATs forwarded traffic
/// leaving `interface` to the gateway's address of its family. Traffic the gateway sends
/// itself already has that source and is left alone.
pub fn install_transaction(interface: &str, addresses: &InterfaceAddresses) -> Transaction {
    let mut transaction = Transaction::new(table());
    // Add then delete: a leftover table from a killed gateway goes, in the same transaction.
    transaction
        .add(Object::Table)
        .delete(Object::Table)
        .add(Object::Table);
    transaction.add(Object::Chain(Chain::base(
        CHAIN,
        "nat",
        "postrouting",
        SRCNAT_PRIORITY,
        None,
    )));
    let interface = interface.replace('"', "");
    if let Some(address) = addresses.ipv4 {
        transaction.add(Object::Rule(
            Rule::new(
                CHAIN,
                format!("oifname \"{interface}\" ip saddr != {address} snat ip to {address}"),
            )
            .with_comment("forwarded IPv4 leaves with the gateway's address"),
        ));
    }
    if let Some(address) = addresses.ipv6 {
        transaction.add(Object::Rule(
            Rule::new(
                CHAIN,
                format!("oifname \"{interface}\" ip6 saddr != {address} snat ip6 to {address}"),
            )
            .with_comment("forwarded IPv6 leaves with the gateway's address"),
        ));
    }
    transaction
}

/// Removes the table, and nothing if it is already gone.
pub fn remove_transaction() -> Transaction {
    let mut transaction = Transaction::new(table());
    transaction.add(Object::Table).delete(Object::Table);
    transaction
}

pub fn install(
    backend: &mut CommandBackend,
    interface: &str,
    addresses: &InterfaceAddresses,
) -> Result<(), NftError> {
    backend.apply(&install_transaction(interface, addresses))
}

pub fn remove(backend: &mut CommandBackend) -> Result<(), NftError> {
    backend.apply(&remove_transaction())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_get_a_snat_rule_to_their_address() {
        let addresses = InterfaceAddresses {
            ipv4: Some("10.10.0.5".parse().unwrap()),
            ipv6: Some("fd00::5".parse().unwrap()),
        };
        let text = install_transaction("eth0", &addresses).render();
        assert!(text.contains("add table inet sluice-gateway\ndelete table inet sluice-gateway\nadd table inet sluice-gateway\n"), "{text}");
        assert!(text.contains("type nat hook postrouting priority 100"), "{text}");
        assert!(
            text.contains("oifname \"eth0\" ip saddr != 10.10.0.5 snat ip to 10.10.0.5"),
            "{text}"
        );
        assert!(
            text.contains("oifname \"eth0\" ip6 saddr != fd00::5 snat ip6 to fd00::5"),
            "{text}"
        );
    }

    #[test]
    fn an_ipv4_only_gateway_has_no_ipv6_rule() {
        let addresses = InterfaceAddresses {
            ipv4: Some("10.10.0.5".parse().unwrap()),
            ipv6: None,
        };
        let text = install_transaction("eth0", &addresses).render();
        assert!(!text.contains("ip6"), "{text}");
    }
}
