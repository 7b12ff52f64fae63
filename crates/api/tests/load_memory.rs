//! Loading a large manifest needs a small multiple of its size (issue 8: a 53 MB manifest of
//! 20,000 policies peaked at 2.1 GB, the whole file's YAML trees and position tables held at
//! once). The test writes a generated manifest of 2,000 policies (5 MB), loads it in a child
//! process (this binary again) and reads the child's peak resident set with getrusage. It is a
//! bound on memory, not a timing; docs/benchmarks.md has the full-size measurement.

#[path = "../examples/large_manifest/generate.rs"]
mod generate;

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::Command;

use nix::sys::resource::{UsageWho, getrusage};

/// Set in the child: the manifest to load.
const MANIFEST_VARIABLE: &str = "SLUICE_LOAD_MEMORY_MANIFEST";
const TEST_NAME: &str = "loading_a_large_manifest_needs_a_small_multiple_of_its_size";
const POLICIES: usize = 2000;
/// What the test binary takes before it loads anything (code, the runtime, the test harness).
const BASELINE_BYTES: u64 = 16 << 20;

#[test]
fn loading_a_large_manifest_needs_a_small_multiple_of_its_size() {
    if let Some(path) = std::env::var_os(MANIFEST_VARIABLE) {
        let resources = sluice_api::load_paths(&[PathBuf::from(path)]).expect("a valid manifest");
        assert_eq!(resources.len(), POLICIES + 6);
        return;
    }
    let directory = std::env::temp_dir().join(format!("sluice-load-memory-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("large.yaml");
    let mut file = BufWriter::new(std::fs::File::create(&path).unwrap());
    generate::write_manifest(POLICIES, &mut file).unwrap();
    file.flush().unwrap();
    drop(file);
    let size = std::fs::metadata(&path).unwrap().len();

    let status = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--test-threads=1"])
        .env(MANIFEST_VARIABLE, &path)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let _ = std::fs::remove_dir_all(&directory);
    assert!(status.success(), "the loading child failed: {status}");
    // The largest resident set of any waited-for child, in KiB on Linux; this test has one.
    let peak = u64::try_from(getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss()).unwrap() * 1024;
    let bound = 4 * size + BASELINE_BYTES;
    assert!(
        peak <= bound,
        "loading {size} bytes peaked at {peak} bytes ({:.1}× the file); the bound is 4× the file plus {} MiB",
        peak as f64 / size as f64,
        BASELINE_BYTES >> 20
    );
}
