//! The lab's flow logs: each node's agent serves them on a Unix socket in the lab's state
//! directory (named in its status record, as on a real node) and writes them to a file beside
//! it, every [`LAB_INTERVAL_SECONDS`].

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sluice_agent::flows::client;
use sluice_flowlog::FlowRecord;

use crate::Environment;
use crate::state::LabPaths;

/// The lab's agents end a flow-log interval every second.
pub const LAB_INTERVAL_SECONDS: u64 = 1;

pub fn socket_path(paths: &LabPaths, node: &str) -> PathBuf {
    paths.directory.join(format!("flows-{node}.sock"))
}

pub fn file_path(paths: &LabPaths, node: &str) -> PathBuf {
    paths.directory.join("logs").join(format!("flows-{node}.log"))
}

/// Every record each node's agent still serves, read over its socket.
pub fn served_records(environment: &Environment, name: &str) -> Result<Vec<FlowRecord>, String> {
    let paths = LabPaths::new(&environment.state_root, name);
    let state = paths.load()?;
    let mut records = Vec::new();
    for node in &state.nodes {
        let endpoint = format!("unix:{}", socket_path(&paths, &node.name).display());
        let response = client::get(&endpoint, "/flows", Duration::from_secs(5))
            .map_err(|error| format!("node {}: {error}", node.name))?;
        let text = response
            .text()
            .map_err(|error| format!("node {}: {error}", node.name))?;
        records.extend(parse_lines(&text, &format!("node {}", node.name))?);
    }
    Ok(records)
}

/// Every record in the nodes' flow log files.
pub fn file_records(environment: &Environment, name: &str) -> Result<Vec<FlowRecord>, String> {
    let paths = LabPaths::new(&environment.state_root, name);
    let state = paths.load()?;
    let mut records = Vec::new();
    for node in &state.nodes {
        let path = file_path(&paths, &node.name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        records.extend(parse_lines(&text, &path.display().to_string())?);
    }
    Ok(records)
}

/// The records of a flow log's lines; `origin` names where they came from in an error.
fn parse_lines(text: &str, origin: &str) -> Result<Vec<FlowRecord>, String> {
    text.lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            FlowRecord::from_json_line(line)
                .map_err(|error| format!("{origin}: a record that does not parse: {error}"))
        })
        .collect()
}

/// Waits until `done` holds for the served records (or `timeout` passes) and returns them: an
/// interval has to end, and a connection to be reported, before its record exists.
pub fn wait_for_records(
    environment: &Environment,
    name: &str,
    timeout: Duration,
    done: impl Fn(&[FlowRecord]) -> bool,
) -> Result<Vec<FlowRecord>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = served_records(environment, name)?;
        if done(&records) || Instant::now() >= deadline {
            return Ok(records);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
