//! The connection-mark side of egress gateway pins: the table `inet sluice-egress`, apart from
//! `inet sluice` (whose full rebuilds must never drop a pin), holding
//!
//! - the map `pins` (gateway address → `pin_mark(index)`);
//! - `postrouting` (mangle): a new connection leaving through `egress.sluice` gets the mark of
//!   the gateway the route chose (`rt ip nexthop`), in its connection mark;
//! - `prerouting` (mangle): every later packet of such a connection, in the original
//!   direction, carries that mark (under `PIN_MASK`) as its packet mark, so the pin's rule
//!   (`fwmark <mark>/PIN_MASK lookup <pin table>`, before the clients' rules) routes it to
//!   the same gateway whatever the client's ECMP route says by then; the packet mark's pin
//!   bits are cleared again as the packet enters the tunnel, since the tunnel routes its outer
//!   packet with the inner packet's mark.
//!
//! So a connection stays on its gateway while gateways are added, drained or removed around
//! it; when its own gateway fails, its pin goes and it follows the spread (it had broken anyway).

use sluice_gateway::routing::{PIN_MASK, Pin, pin_mark};
use sluice_gateway::tunnel::DEVICE;
use sluice_nft::{Chain, Element, Family, Object, Rule, Set, Table, Transaction};

/// The table's name; only the agent's gateway shell writes it.
pub const TABLE_NAME: &str = "sluice-egress";
const MAP: &str = "pins";
// Mangle: before conntrack's NAT and the routing decision in prerouting; after routing in
// postrouting.
const MANGLE_PRIORITY: i32 = -150;

pub fn table() -> Table {
    Table::new(Family::Inet, TABLE_NAME)
}

/// Replaces the table with one for `pins` in one transaction (the old rules hold until the new
/// ones are in); with no pin, removes it.
pub fn transaction(pins: &[Pin]) -> Transaction {
    let mut transaction = Transaction::new(table());
    transaction.add(Object::Table).delete(Object::Table);
    if pins.is_empty() {
        return transaction;
    }
    transaction.add(Object::Table);
    transaction.add(Object::Set(Set::map(MAP, "ipv4_addr", "mark")));
    for pin in pins {
        transaction.add(Object::Element(Element::mapping(
            MAP,
            pin.gateway.to_string(),
            format!("{:#010x}", pin_mark(pin.index)),
        )));
    }
    transaction.add(Object::Chain(Chain::base(
        "prerouting",
        "filter",
        "prerouting",
        MANGLE_PRIORITY,
        Some("accept"),
    )));
    transaction.add(Object::Rule(
        Rule::new(
            "prerouting",
            format!(
                "ct direction original ct mark & {PIN_MASK:#010x} != 0 meta mark set ct mark & {PIN_MASK:#010x}"
            ),
        )
        .with_comment("a pinned connection keeps its gateway"),
    ));
    transaction.add(Object::Chain(Chain::base(
        "postrouting",
        "filter",
        "postrouting",
        MANGLE_PRIORITY,
        Some("accept"),
    )));
    transaction.add(Object::Rule(
        Rule::new(
            "postrouting",
            format!("oifname \"{DEVICE}\" ct state new ct mark set rt ip nexthop map @{MAP}"),
        )
        .with_comment("a new connection is pinned to the gateway its route chose"),
    ));
    // The tunnel routes its outer packet with the inner packet's mark: without clearing the
    // pin bits, the outer packet to the gateway would match the pin's rule and be sent into the
    // tunnel again.
    transaction.add(Object::Rule(
        Rule::new(
            "postrouting",
            format!(
                "oifname \"{DEVICE}\" meta mark set meta mark & {:#010x}",
                !PIN_MASK
            ),
        )
        .with_comment("the outer packet is routed without the pin"),
    ));
    transaction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_become_a_map_and_two_mangle_chains_and_none_removes_the_table() {
        let pins = [Pin {
            gateway: "10.72.0.3".parse().unwrap(),
            index: 2,
        }];
        let text = transaction(&pins).render();
        assert!(text.contains("add table inet sluice-egress\ndelete table inet sluice-egress\nadd table inet sluice-egress\n"), "{text}");
        assert!(text.contains("10.72.0.3 : 0x02000000"), "{text}");
        assert!(text.contains("hook prerouting priority -150"), "{text}");
        assert!(text.contains("ct mark set rt ip nexthop map @pins"), "{text}");
        let none = transaction(&[]).render();
        assert!(none.ends_with("delete table inet sluice-egress\n"), "{none}");
    }
}
