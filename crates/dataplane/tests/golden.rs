//! Golden snapshot of the examples' ruleset for node-1 (prod/web and staging/web): a change to
//! rendering shows up as a readable diff of nft text. Review with `cargo insta review`, or
//! accept with `INSTA_UPDATE=always cargo test -p sluice-dataplane --test golden`.

use std::path::Path;

use sluice_dataplane::{LocalEndpoint, Syncer, render};
use sluice_nft::FakeBackend;

#[test]
fn the_examples_for_node_one() {
    let resources =
        sluice_api::load_paths(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")]).unwrap();
    let local: Vec<LocalEndpoint> = resources
        .pods
        .iter()
        .filter(|pod| pod.spec.node_name.as_deref() == Some("node-1"))
        .map(|pod| LocalEndpoint {
            namespace: pod.metadata.namespace().to_string(),
            name: pod.metadata.name.clone(),
            interface: format!("slc-{}-{}", pod.metadata.namespace(), pod.metadata.name),
            egress_gateway: false,
        })
        .collect();
    let ruleset = render(&sluice_policy::compile(&resources), &local);
    let text = Syncer::new(FakeBackend::new()).full(&ruleset).render();
    insta::assert_snapshot!(text);
}
