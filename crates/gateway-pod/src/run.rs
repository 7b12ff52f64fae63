//! `sluice gateway` from start to signal: read the pod's addresses, serve health (not ready
//! yet), turn forwarding on, install the SNAT table and the tunnel device, mark ready-to-probe,
//! probe until SIGTERM or SIGINT, then stop serving and remove the device and the table.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use sluice_gateway::tunnel::DEVICE;
use sluice_nft::CommandBackend;

use crate::arguments::GatewayArguments;
use crate::health::HealthServer;
use crate::probe::Probe;
use crate::readiness::{ProbeKind, Readiness};
use crate::tunnel::{self, TunnelSettings};
use crate::{address, forwarding, snat};

// How often waiting threads look at the stop flag: bounds how long a signal takes to act.
const STOP_CHECK: Duration = Duration::from_millis(50);

pub fn run(arguments: &GatewayArguments) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_draining = Arc::new(AtomicBool::new(false));
    stop_on_signals(
        Arc::clone(&stop),
        Arc::clone(&stop_draining),
        arguments.drain_seconds > 0,
    )?;
    let addresses = address::read(&arguments.interface)?;
    let primary = addresses
        .primary()
        .expect("address::read refuses an interface without one");
    tracing::info!(interface = %arguments.interface, ipv4 = ?addresses.ipv4, ipv6 = ?addresses.ipv6, "gateway starting");

    let probes = arguments.probes();
    let has = |kind| probes.iter().any(|probe: &Probe| probe.kind() == kind);
    let readiness = Arc::new(Mutex::new(Readiness::new(
        arguments.window(),
        has(ProbeKind::Icmp),
        has(ProbeKind::Http),
    )));
    let server = HealthServer::serve(
        SocketAddr::new(primary, arguments.health_port),
        Arc::clone(&readiness),
    )?;
    tracing::info!(address = %server.address(), "serving /readiness and /liveness");

    let installed = match set_up(arguments, &addresses) {
        Ok(installed) => installed,
        Err(error) => {
            server.stop();
            return Err(error);
        }
    };
    readiness.lock().expect("not poisoned").mark_set_up();
    // The lab waits for this line before it goes on.
    tracing::info!("gateway set up");

    let probe_threads: Vec<_> = probes
        .into_iter()
        .map(|probe| {
            let readiness = Arc::clone(&readiness);
            let stop = Arc::clone(&stop);
            let (interval, timeout) = (arguments.interval(), arguments.attempt_timeout());
            std::thread::Builder::new()
                .name("probe".into())
                .spawn(move || probe_until_stopped(&probe, interval, timeout, &readiness, &stop))
                .map_err(|error| format!("cannot start a probe thread: {error}"))
        })
        .collect::<Result<_, _>>()?;

    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(STOP_CHECK);
    }
    if arguments.drain_seconds > 0 {
        // Agents keep a draining gateway for the clients it has (its pod's deletionTimestamp
        // is set), so their flows go on through the tunnel and the table until they finish.
        tracing::info!(seconds = arguments.drain_seconds, "draining: still forwarding");
        let until = Instant::now() + Duration::from_secs(arguments.drain_seconds);
        while !stop_draining.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(STOP_CHECK);
        }
        tracing::info!("drained");
    }
    server.stop();
    for thread in probe_threads {
        let _ = thread.join();
    }
    installed.remove()?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// What `set_up` put in place, removed when the gateway stops.
struct Installed {
    /// Kept to remove the SNAT table; none with `--no-snat`.
    backend: Option<CommandBackend>,
    tunnel: bool,
}

impl Installed {
    /// The tunnel first, so no decapsulated packet is forwarded once the SNAT table is gone;
    /// when the device cannot be removed, the table stays too (nothing leaves unNATed).
    fn remove(self) -> Result<(), String> {
        if self.tunnel {
            tunnel::remove().map_err(|error| format!("removing the tunnel device {DEVICE}: {error}"))?;
            tracing::info!(device = DEVICE, "removed the tunnel device");
        }
        if let Some(mut backend) = self.backend {
            snat::remove(&mut backend)
                .map_err(|error| format!("removing table inet {}: {error}", snat::TABLE_NAME))?;
            tracing::info!(table = snat::TABLE_NAME, "removed the source NAT table");
        }
        Ok(())
    }
}

/// Forwarding on, then the SNAT table unless `--no-snat`, then the tunnel device: client
/// traffic can arrive only once what it needs to leave is in place.
fn set_up(
    arguments: &GatewayArguments,
    addresses: &address::InterfaceAddresses,
) -> Result<Installed, String> {
    forwarding::enable(addresses)?;
    let mut installed = Installed {
        backend: None,
        tunnel: false,
    };
    if arguments.no_snat {
        tracing::info!("no source NAT (--no-snat): the node NATs for the gateway's pool");
    } else {
        let mut backend = CommandBackend::new().map_err(|error| error.to_string())?;
        snat::install(&mut backend, &arguments.interface, addresses)
            .map_err(|error| format!("installing table inet {}: {error}", snat::TABLE_NAME))?;
        tracing::info!(table = snat::TABLE_NAME, interface = %arguments.interface, "forwarded traffic is source-NATed to the gateway's address");
        installed.backend = Some(backend);
    }
    let Some(ipv4) = addresses.ipv4 else {
        // Client nodes tunnel IPv4 only (Calico's egress gateways are IPv4).
        tracing::warn!(
            device = DEVICE,
            "no IPv4 address: no tunnel device, no client can reach this gateway"
        );
        return Ok(installed);
    };
    let made = tunnel::interface_mtu(&arguments.interface)
        .and_then(|mtu| TunnelSettings::new(arguments.vxlan_vni, arguments.vxlan_port, ipv4, mtu))
        .and_then(|settings| tunnel::install(&settings).map(|()| settings));
    match made {
        Ok(settings) => {
            installed.tunnel = true;
            tracing::info!(
                device = DEVICE,
                vni = settings.vni,
                port = settings.port,
                mtu = settings.mtu,
                mac = %sluice_gateway::tunnel::mac_text(settings.mac),
                "decapsulating client traffic"
            );
            Ok(installed)
        }
        Err(error) => {
            let error = format!("the tunnel device {DEVICE}: {error}");
            if let Err(cleanup) = installed.remove() {
                return Err(format!("{error}; then {cleanup}"));
            }
            Err(error)
        }
    }
}

fn probe_until_stopped(
    probe: &Probe,
    interval: Duration,
    timeout: Duration,
    readiness: &Mutex<Readiness>,
    stop: &AtomicBool,
) {
    let mut last_ok = None;
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let result = probe.run(timeout);
        if result.is_ok() {
            readiness
                .lock()
                .expect("not poisoned")
                .record_success(probe.kind(), Instant::now());
        }
        // Log changes only: a probe runs every interval.
        if last_ok != Some(result.is_ok()) {
            match &result {
                Ok(()) => tracing::info!(target = %probe.target(), "probe succeeds"),
                Err(error) => tracing::warn!(target = %probe.target(), %error, "probe fails"),
            }
            last_ok = Some(result.is_ok());
        }
        let next = started + interval;
        while !stop.load(Ordering::SeqCst) && Instant::now() < next {
            std::thread::sleep(STOP_CHECK.min(next.saturating_duration_since(Instant::now())));
        }
    }
}

/// The agent's way: the first SIGTERM or SIGINT asks to stop (the table is then removed); a
/// second ends the process at once.
/// The first signal sets `stop`; with `drains`, a second one sets `stop_draining` (the drain
/// ends at once) and a third exits; without, a second one exits at once.
fn stop_on_signals(
    stop: Arc<AtomicBool>,
    stop_draining: Arc<AtomicBool>,
    drains: bool,
) -> Result<(), String> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|error| format!("cannot handle SIGTERM and SIGINT: {error}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if stop.swap(true, Ordering::SeqCst) {
                    if drains && !stop_draining.swap(true, Ordering::SeqCst) {
                        tracing::info!(signal = name, "a second signal: ending the drain");
                        continue;
                    }
                    tracing::warn!(signal = name, "a second signal while stopping; exiting at once");
                    std::process::exit(1);
                }
                tracing::info!(
                    signal = name,
                    "stopping: removing the tunnel device and the source NAT table"
                );
            }
        })
        .map_err(|error| format!("cannot start the signal thread: {error}"))?;
    Ok(())
}
