//! Writes a large, valid manifest to standard output, the same bytes every run: the input for
//! measuring what loading and validating costs (issue 8; see docs/benchmarks.md, "Loading a
//! large manifest (issue 8)").
//!
//! `cargo run --release -p sluice-api --example large_manifest -- 20000 > /tmp/large.yaml`
//! writes 20,000 policies (52 MB): Calico NetworkPolicies and GlobalNetworkPolicies with 13
//! rules each and Kubernetes NetworkPolicies, in six namespaces.

mod generate;

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|text| text.parse().ok())
        .unwrap_or(20_000);
    let mut out = BufWriter::new(std::io::stdout().lock());
    generate::write_manifest(count, &mut out)?;
    out.flush()
}
