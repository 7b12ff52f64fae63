//! The lab's egress gateway pods: the `sluice gateway` command line a pod's `egressGateway`
//! gives (checked by the parser `sluice gateway` itself uses, so the lab file is refused where
//! the gateway would refuse to start), and starting and finding that process in the pod's
//! namespace. `lab down` stops it with the lab's other processes (SIGTERM, so it removes its
//! tunnel device and table first).

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use sluice_gateway_pod::GatewayArguments;

use crate::Environment;
use crate::cluster::POD_INTERFACE;
use crate::config::{
    EgressGatewaySpec, GATEWAY_HEALTH_PORT, GATEWAY_HEALTH_PORT_NAME, PodSpec, PortProtocol,
};
use crate::shell;
use crate::state::{LabPaths, PidRecord, PodState};

/// Part of every gateway's command line; the pid file also records the pod's namespace, since
/// the command line is the same in every lab.
const MARKER: &str = "gateway --interface";
/// What `sluice gateway` logs once forwarding, the table and the tunnel are in place.
const SET_UP: &str = "gateway set up";
const START_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct GatewayCommandLine {
    #[command(flatten)]
    arguments: GatewayArguments,
}

/// `gateway …` for `sluice`: the pod's interface, the health port and the spec's options.
pub fn arguments(spec: &EgressGatewaySpec) -> Vec<String> {
    let mut arguments: Vec<String> = [
        "gateway",
        "--interface",
        POD_INTERFACE,
        "--health-port",
        &GATEWAY_HEALTH_PORT.to_string(),
    ]
    .iter()
    .map(|argument| argument.to_string())
    .collect();
    for address in &spec.icmp_probes {
        arguments.extend(["--icmp-probe".to_string(), address.to_string()]);
    }
    for url in &spec.http_probes {
        arguments.extend(["--http-probe".to_string(), url.clone()]);
    }
    if spec.no_snat {
        arguments.push("--no-snat".into());
    }
    if let Some(seconds) = spec.probe_interval_seconds {
        arguments.extend(["--probe-interval".to_string(), seconds.to_string()]);
    }
    if let Some(seconds) = spec.probe_timeout_seconds {
        arguments.extend(["--probe-timeout".to_string(), seconds.to_string()]);
    }
    arguments
}

/// A gateway pod leaves its health port to the lab, and its options must be ones `sluice
/// gateway` takes.
pub fn check(pod: &PodSpec, spec: &EgressGatewaySpec) -> Result<(), String> {
    if pod.ports.iter().any(|port| {
        port.name.as_deref() == Some(GATEWAY_HEALTH_PORT_NAME)
            || (port.container_port == GATEWAY_HEALTH_PORT && port.protocol == PortProtocol::Tcp)
    }) {
        return Err(format!(
            "pod {}/{}: the lab gives a gateway pod its port `{GATEWAY_HEALTH_PORT_NAME}` (TCP {GATEWAY_HEALTH_PORT}); list no port of that name or number",
            pod.namespace, pod.name
        ));
    }
    let arguments = arguments(spec);
    GatewayCommandLine::try_parse_from(&arguments[1..]).map_err(|error| {
        let rendered = error.to_string();
        let first = rendered.lines().next().unwrap_or_default();
        first.strip_prefix("error: ").unwrap_or(first).to_string()
    })?;
    Ok(())
}

/// The name of a gateway's log and pid files.
fn process_name(pod: &PodState) -> String {
    format!("gateway-{}-{}", pod.namespace, pod.name)
}

/// Starts the pod's gateway and waits until it is set up (forwarding, table, tunnel); returns
/// its process id. Its log (standard error, `info`) is `logs/gateway-<namespace>-<name>.log`.
pub fn start(
    environment: &Environment,
    paths: &LabPaths,
    pod: &PodState,
    spec: &EgressGatewaySpec,
) -> Result<u32, String> {
    let mut command = shell::in_netns(&pod.netns, &environment.sluice_binary);
    command.args(arguments(spec)).env("RUST_LOG", "info");
    let name = process_name(pod);
    let log = paths.log_file(&name);
    let mut child = shell::spawn_background(command, &log, &paths.pid_file(&name), MARKER, Some(&pod.netns))?;
    let mut exit = None;
    let set_up = shell::wait_until(START_TIMEOUT, Duration::from_millis(20), || {
        exit = child.try_wait().ok().flatten();
        exit.is_some() || read(&log).contains(SET_UP)
    });
    if set_up && exit.is_none() {
        return Ok(child.id());
    }
    let output = read(&log);
    Err(match exit {
        Some(status) => format!(
            "sluice gateway in {} exited ({status}): {}",
            pod.netns,
            output.trim()
        ),
        None => format!(
            "sluice gateway in {} was not set up within {START_TIMEOUT:?}: {}",
            pod.netns,
            output.trim()
        ),
    })
}

/// The process id of a pod's gateway, if it runs.
pub fn pid(paths: &LabPaths, pod: &PodState) -> Option<u32> {
    PidRecord::read(&paths.pid_file(&process_name(pod)))
        .filter(PidRecord::is_running)
        .map(|record| record.pid)
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LabFile;

    const LAB: &str =
        "name: t\nnodes: [{name: n}]\npods:\n  - namespace: egress\n    name: gateway\n    node: n\n";

    fn lab(gateway: &str) -> Result<LabFile, String> {
        LabFile::parse("lab.yaml", &format!("{LAB}    egressGateway: {gateway}\n"))
    }

    #[test]
    fn an_empty_spec_runs_the_gateway_with_its_defaults() {
        let lab = lab("{}").unwrap();
        let spec = lab.pods[0].egress_gateway.as_ref().unwrap();
        assert_eq!(
            arguments(spec).join(" "),
            "gateway --interface eth0 --health-port 8080"
        );
    }

    #[test]
    fn the_options_become_flags() {
        let lab = lab("{icmpProbes: [203.0.113.10], httpProbes: ['http://203.0.113.10/'], noSnat: true, probeIntervalSeconds: 0.2, probeTimeoutSeconds: 1}").unwrap();
        let spec = lab.pods[0].egress_gateway.as_ref().unwrap();
        assert_eq!(
            arguments(spec).join(" "),
            "gateway --interface eth0 --health-port 8080 --icmp-probe 203.0.113.10 --http-probe http://203.0.113.10/ --no-snat --probe-interval 0.2 --probe-timeout 1"
        );
    }

    #[test]
    fn options_the_gateway_refuses_are_refused_in_the_lab_file() {
        let error = lab("{httpProbes: ['https://203.0.113.10/']}").unwrap_err();
        assert!(error.starts_with("lab.yaml:7:"), "{error}");
        assert!(
            error.contains("pods[0].egressGateway: ") && error.contains("only http:// URLs"),
            "{error}"
        );
        let error = lab("{probeIntervalSeconds: 0}").unwrap_err();
        assert!(error.contains("outside 0.01 to 3600 seconds"), "{error}");
        let error = lab("{icmpProbe: [203.0.113.10]}").unwrap_err();
        assert!(error.contains("unknown field `icmpProbe`"), "{error}");
    }

    #[test]
    fn the_health_port_is_the_labs() {
        let text =
            format!("{LAB}    ports: [{{name: health, containerPort: 9000}}]\n    egressGateway: {{}}\n");
        let error = LabFile::parse("lab.yaml", &text).unwrap_err();
        assert!(error.contains("its port `health` (TCP 8080)"), "{error}");
        let text = format!("{LAB}    ports: [{{containerPort: 8080}}]\n    egressGateway: {{}}\n");
        assert!(LabFile::parse("lab.yaml", &text).is_err());
        let text =
            format!("{LAB}    ports: [{{containerPort: 8080, protocol: UDP}}]\n    egressGateway: {{}}\n");
        assert!(LabFile::parse("lab.yaml", &text).is_ok());
    }
}
