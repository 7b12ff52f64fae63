//! Every command that prints, run with its standard output closed, full, or in each `-o`
//! format it accepts: it exits quietly, reports the error, or prints what the format promises.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sluice_store::{Condition, Operation};

/// A datastore holding the examples, an allocated address and a node's status.
struct Cluster {
    directory: PathBuf,
}

impl Cluster {
    fn new(name: &str) -> Self {
        let directory =
            std::env::temp_dir().join(format!("sluice-output-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        let cluster = Cluster { directory };
        let applied = cluster.run(&["apply", "-f", &examples()], Stdio::piped());
        assert!(applied.status.success(), "{}", text(&applied.stderr));
        let store: std::sync::Arc<dyn sluice_store::Store> =
            std::sync::Arc::from(sluice_store::open(&cluster.address()).unwrap());
        let ipam = sluice_ipam::Ipam::new(store.clone());
        let request = sluice_ipam::AssignRequest {
            handle: sluice_ipam::workload_handle("abc123", "eth0"),
            node: "node-1".into(),
            namespace: "prod".into(),
            pod: "web".into(),
            pod_annotations: Default::default(),
        };
        ipam.assign(&request).unwrap();
        let status = sluice_agent::NodeStatus {
            node: "node-1".into(),
            programmed_revision: 12,
            seen_revision: 12,
            in_sync: true,
            error: None,
            local_endpoints: 2,
            rules: 31,
            set_elements: 7,
            routes: 1,
            route_error: Some("no link to 192.0.2.9".into()),
            unprogrammed_endpoints: Vec::new(),
            left_out_objects: Vec::new(),
            warning: None,
            updated: std::time::SystemTime::now(),
            heartbeat_seconds: 30,
            stopped: false,
            flow_endpoints: Vec::new(),
        };
        store
            .commit(&[Operation::Put {
                key: sluice_agent::status_key("node-1"),
                value: serde_json::to_vec(&status).unwrap(),
                condition: Condition::Any,
            }])
            .unwrap();
        cluster
    }

    fn address(&self) -> String {
        format!("file://{}", self.directory.join("store.db").display())
    }

    fn run(&self, arguments: &[&str], stdout: Stdio) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(arguments)
            .env("SLUICE_DATASTORE", self.address())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .expect("the sluice binary runs")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn examples() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .display()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A stream whose reader is gone before the command starts: every write fails with EPIPE,
/// as when `head` has exited.
fn closed_pipe() -> Stdio {
    let (reader, writer) = UnixStream::pair().unwrap();
    drop(reader);
    Stdio::from(OwnedFd::from(writer))
}

fn dev_full() -> Stdio {
    Stdio::from(std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap())
}

/// Every command that prints to standard output, with each output format it accepts.
fn printing_commands() -> Vec<Vec<String>> {
    let examples = examples();
    let flows = format!("{examples}/flows.jsonl");
    let mut commands: Vec<Vec<&str>> = vec![
        vec!["validate", "-f", &examples],
        vec!["apply", "-f", &examples],
        vec!["apply", "-f", &examples, "--dry-run"],
        vec!["delete", "globalnetworkset", "threat-feed"],
        vec!["ipam", "show"],
        vec!["ipam", "show", "--by", "namespace", "--addresses"],
        vec!["ipam", "show", "-o", "json"],
        vec!["ipam", "show", "--by", "namespace", "-o", "json"],
        vec!["ipam", "check"],
        vec!["ipam", "check", "-o", "json"],
        vec!["ipam", "release", "nothing.eth0"],
    ];
    let explain_one = [
        "explain",
        "-f",
        &examples,
        "--from",
        "prod/web",
        "--to",
        "198.51.100.70",
        "--port",
        "443",
    ];
    let explain_many = ["explain", "-f", &examples, "--flows", &flows];
    let connectivity = ["connectivity", "-f", &examples, "--ports", "tcp/443,udp/53"];
    for format in ["text", "json", "jsonl", "csv"] {
        for base in [&explain_one[..], &explain_many[..], &connectivity[..]] {
            let mut command = base.to_vec();
            command.extend(["-o", format]);
            commands.push(command);
        }
    }
    for format in ["table", "wide", "yaml", "json", "name"] {
        for kind in [
            &["get", "pods", "-A"][..],
            &["get", "gnp"],
            &["get", "nodestatus"],
        ] {
            let mut command = kind.to_vec();
            command.extend(["-o", format]);
            commands.push(command);
        }
    }
    commands
        .into_iter()
        .map(|command| command.into_iter().map(String::from).collect())
        .collect()
}

/// The network set `delete` removes, put back before each run so it has something to print.
fn restore_deleted(cluster: &Cluster) {
    let restored = cluster.run(
        &["apply", "-f", &format!("{}/04-network-sets.yaml", examples())],
        Stdio::null(),
    );
    assert!(restored.status.success(), "{}", text(&restored.stderr));
}

#[test]
fn a_closed_pipe_ends_every_command_quietly_with_status_141() {
    let cluster = Cluster::new("closed-pipe");
    for command in printing_commands() {
        restore_deleted(&cluster);
        let arguments: Vec<&str> = command.iter().map(String::as_str).collect();
        // The same command prints when someone reads it.
        let read = cluster.run(&arguments, Stdio::piped());
        assert!(!read.stdout.is_empty(), "{command:?} prints nothing");
        restore_deleted(&cluster);
        let output = cluster.run(&arguments, closed_pipe());
        let errors = text(&output.stderr);
        assert!(!errors.contains("panicked"), "{command:?}: {errors}");
        assert_eq!(output.status.code(), Some(141), "{command:?}: {errors}");
        assert!(errors.is_empty(), "{command:?}: {errors}");
    }
}

#[test]
fn a_full_disk_is_reported_and_fails_every_command() {
    let cluster = Cluster::new("full");
    for command in printing_commands() {
        restore_deleted(&cluster);
        let arguments: Vec<&str> = command.iter().map(String::as_str).collect();
        let output = cluster.run(&arguments, dev_full());
        let errors = text(&output.stderr);
        assert!(!errors.contains("panicked"), "{command:?}: {errors}");
        assert_eq!(output.status.code(), Some(1), "{command:?}: {errors}");
        assert_eq!(
            errors, "error: writing output: No space left on device\n",
            "{command:?}"
        );
    }
}

/// What a format promises, checked on a command's whole output.
fn check_format(format: &str, output: &str) -> Result<(), String> {
    if output.trim().is_empty() {
        return Err("no output".into());
    }
    let lines: Vec<&str> = output.lines().collect();
    match format {
        "json" => serde_json::from_str::<serde_json::Value>(output)
            .map(drop)
            .map_err(|error| format!("not one JSON document: {error}")),
        "jsonl" => lines
            .iter()
            .try_for_each(|line| match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(_)) => Ok(()),
                _ => Err(format!("`{line}` is not one JSON object")),
            }),
        "csv" => {
            let records = parse_csv(output)?;
            let header = &records[0];
            if header
                .iter()
                .any(|field| field.is_empty() || field.parse::<f64>().is_ok())
            {
                return Err(format!("the first record {header:?} is not a header"));
            }
            if records.len() < 2 {
                return Err("a header and no rows".into());
            }
            match records.iter().find(|record| record.len() != header.len()) {
                Some(record) => Err(format!("{record:?} has not the header's {} fields", header.len())),
                None => Ok(()),
            }
        }
        "yaml" => {
            if serde_json::from_str::<serde_json::Value>(output).is_ok() {
                return Err("JSON, not YAML".into());
            }
            sluice_api::document::parse_documents(output)
                .map(drop)
                .map_err(|error| format!("not YAML: {error:?}"))
        }
        "name" => lines.iter().try_for_each(|line| match line.split_once('/') {
            Some((kind, name))
                if !kind.is_empty()
                    && !name.is_empty()
                    && !name.contains('/')
                    && kind.chars().all(|character| {
                        character.is_ascii_lowercase()
                            || character.is_ascii_digit()
                            || ".-".contains(character)
                    }) =>
            {
                Ok(())
            }
            _ => Err(format!("`{line}` is not kind/name")),
        }),
        "table" | "wide" => {
            let header = lines[0];
            if !header.starts_with("NAME") && !header.starts_with("NAMESPACE") && !header.starts_with("NODE")
            {
                return Err(format!("`{header}` is not a table header"));
            }
            let starts = |line: &str| -> Vec<usize> {
                let bytes = line.as_bytes();
                (0..bytes.len())
                    .filter(|&index| bytes[index] != b' ' && (index == 0 || line[..index].ends_with("   ")))
                    .collect()
            };
            let columns = starts(header);
            if columns.len() < 2 {
                return Err(format!("`{header}` has fewer than two columns"));
            }
            match lines[1..].iter().find(|line| {
                let cells = starts(line);
                cells.first() != Some(&0) || cells.iter().any(|start| !columns.contains(start))
            }) {
                Some(line) => Err(format!("`{line}` is not aligned with `{header}`")),
                None => Ok(()),
            }
        }
        "text" => {
            if serde_json::from_str::<serde_json::Value>(output).is_ok()
                || serde_json::from_str::<serde_json::Value>(lines[0]).is_ok()
                || lines[0].split(',').all(|field| {
                    !field.is_empty()
                        && field
                            .chars()
                            .all(|character| character.is_ascii_lowercase() || character == '_')
                })
            {
                Err(format!("`{}` is not text for people", lines[0]))
            } else {
                Ok(())
            }
        }
        other => Err(format!("no check for {other}")),
    }
}

/// RFC 4180: fields separated by commas, quoted when they hold commas, quotes or line breaks.
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut characters = text.chars().peekable();
    let mut quoted = false;
    while let Some(character) = characters.next() {
        match (quoted, character) {
            (true, '"') if characters.peek() == Some(&'"') => {
                characters.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, other) => field.push(other),
            (false, '"') if field.is_empty() => quoted = true,
            (false, '"') => return Err(format!("a quote inside the unquoted field `{field}`")),
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, other) => field.push(other),
        }
    }
    if quoted {
        return Err("an unterminated quoted field".into());
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    Ok(records)
}

#[test]
fn every_output_format_a_command_accepts_is_the_format_it_prints() {
    let cluster = Cluster::new("formats");
    let mut checked = 0;
    for command in printing_commands() {
        let Some(position) = command.iter().position(|argument| argument == "-o") else {
            continue;
        };
        let format = command[position + 1].clone();
        let arguments: Vec<&str> = command.iter().map(String::as_str).collect();
        let output = cluster.run(&arguments, Stdio::piped());
        // `ipam check` fails when it finds a leak, as the test's allocation is.
        let expected_failure = command[..2] == ["ipam", "check"];
        assert_eq!(
            output.status.success(),
            !expected_failure,
            "{command:?}: {}",
            text(&output.stderr)
        );
        if let Err(problem) = check_format(&format, &text(&output.stdout)) {
            panic!(
                "{command:?} does not print {format}: {problem}\n{}",
                text(&output.stdout)
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 4 * 3 + 5 * 3 + 3);
}

#[test]
fn a_format_a_command_cannot_print_is_refused_and_listed_in_help() {
    let cluster = Cluster::new("refused");
    for (command, format, accepted) in [
        (&["get", "gnp"][..], "csv", "table, wide, yaml, json, name"),
        (&["ipam", "show"][..], "csv", "table, json"),
        (&["ipam", "check"][..], "jsonl", "table, json"),
        (
            &["connectivity", "-f", "examples"][..],
            "yaml",
            "text, json, jsonl, csv",
        ),
    ] {
        let mut arguments = command.to_vec();
        arguments.extend(["-o", format]);
        let output = cluster.run(&arguments, Stdio::piped());
        assert_eq!(output.status.code(), Some(2), "{arguments:?}");
        let errors = text(&output.stderr);
        assert!(
            errors.contains(&format!("[possible values: {accepted}]")),
            "{errors}"
        );
        let mut help = command[..command.len().min(2)].to_vec();
        if help[0] == "connectivity" {
            help.truncate(1);
        }
        help.push("--help");
        let help_text = text(&cluster.run(&help, Stdio::piped()).stdout);
        for value in accepted.split(", ") {
            assert!(
                help_text.contains(value),
                "{help:?} does not list {value}: {help_text}"
            );
        }
    }
}

#[test]
fn the_csv_parser_of_these_tests_reads_quotes() {
    assert_eq!(
        parse_csv("a,b\n\"x, y\",\"say \"\"hi\"\"\"\n").unwrap(),
        [vec!["a", "b"], vec!["x, y", "say \"hi\""]]
    );
    assert!(check_format("csv", "{\"a\": 1}\n").is_err());
    assert!(check_format("table", "NAME   A\nx   y\n").is_err());
    assert!(check_format("table", "NAME   A\nx      y\n").is_ok());
}
