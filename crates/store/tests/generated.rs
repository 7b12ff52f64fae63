//! The committed etcd gRPC code (src/generated) must be what the trimmed protos in proto/
//! generate, so that nobody edits it by hand and the build never needs `protoc`. After
//! changing a proto, regenerate with:
//!
//!     cargo test -p sluice-store --test generated -- --ignored regenerate

use std::path::{Path, PathBuf};

/// The generated files, by the proto package they come from.
const PACKAGES: [&str; 2] = ["etcdserverpb", "mvccpb"];

fn crate_directory() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compiles the protos with protox (pure Rust) and generates the client code into `directory`.
fn generate(directory: &Path) {
    let root = crate_directory().join("proto");
    let descriptors = protox::compile([root.join("rpc.proto")], [&root]).expect("the protos compile");
    tonic_prost_build::configure()
        .build_server(false)
        // Sluice builds its own channel (several endpoints, timeouts), so no `connect` helper.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(directory)
        .compile_fds(descriptors)
        .expect("code generation");
}

#[test]
fn committed_code_is_generated_from_the_protos() {
    let fresh = tempfile::tempdir().expect("temporary directory");
    generate(fresh.path());
    for package in PACKAGES {
        let name = format!("{package}.rs");
        let generated = std::fs::read_to_string(fresh.path().join(&name)).expect("generated file");
        let committed_path = crate_directory().join("src/generated").join(&name);
        let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
        assert!(
            generated == committed,
            "{} differs from what proto/ generates; regenerate with\n    \
             cargo test -p sluice-store --test generated -- --ignored regenerate",
            committed_path.display()
        );
    }
    let mut files: Vec<String> = std::fs::read_dir(fresh.path())
        .expect("list generated files")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, PACKAGES.map(|package| format!("{package}.rs")));
}

/// Writes the generated code into src/generated (run by hand, see the top of this file).
#[test]
#[ignore = "writes src/generated; run by hand after changing proto/"]
fn regenerate() {
    generate(&crate_directory().join("src/generated"));
}
