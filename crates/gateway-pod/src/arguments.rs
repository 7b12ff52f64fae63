//! The command line of `sluice gateway`.

use std::net::IpAddr;
use std::time::Duration;

use crate::probe::{HttpTarget, Probe};

#[derive(Debug, Clone, clap::Args)]
pub struct GatewayArguments {
    /// The pod's interface: forwarded traffic leaves through it with its address.
    #[arg(long, default_value = "eth0")]
    pub interface: String,
    /// Do not source-NAT: the gateway's IPPool has natOutgoing and the node NATs. Whoever
    /// starts the gateway passes it (the gateway cannot see its pool); default: SNAT.
    #[arg(long)]
    pub no_snat: bool,
    /// The port of `/readiness` and `/liveness` (the pod's named port `health`), served on the
    /// pod's address.
    #[arg(long, default_value_t = 8080)]
    pub health_port: u16,
    /// An address to ping (ICMP echo); repeatable. Calico: ICMP_PROBE_IPS.
    #[arg(long = "icmp-probe", value_name = "ADDR")]
    pub icmp_probes: Vec<IpAddr>,
    /// An http:// URL to GET (2xx succeeds); repeatable. Calico: HTTP_PROBE_URLS.
    #[arg(long = "http-probe", value_name = "URL", value_parser = HttpTarget::parse)]
    pub http_probes: Vec<HttpTarget>,
    /// Seconds between two runs of each probe (also the most one run may wait).
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0, value_parser = parse_seconds)]
    pub probe_interval: f64,
    /// Not ready once every probe of a kind has failed for this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0, value_parser = parse_seconds)]
    pub probe_timeout: f64,
    /// The VXLAN network identifier of the tunnel from client nodes (FelixConfiguration's
    /// egressIPVXLANVNI; whoever starts the gateway passes the cluster's value).
    #[arg(long, value_name = "VNI", default_value_t = 4097, value_parser = clap::value_parser!(u32).range(1..=16_777_215))]
    pub vxlan_vni: u32,
    /// The UDP port client nodes encapsulate to (FelixConfiguration's egressIPVXLANPort).
    #[arg(long, value_name = "PORT", default_value_t = 4790, value_parser = clap::value_parser!(u16).range(1..))]
    pub vxlan_port: u16,
    /// After SIGTERM, keep forwarding (and answering `/readiness`) this many seconds before
    /// removing the tunnel and the SNAT table, so the flows of clients that keep a draining
    /// gateway (its pod being deleted) finish; a second signal ends the drain at once. Set it
    /// below the pod's terminationGracePeriodSeconds. Default 0: stop at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub drain_seconds: u64,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.01..=3600.0).contains(&seconds) {
        return Err(format!("{seconds} s is outside 0.01 to 3600 seconds"));
    }
    Ok(seconds)
}

impl GatewayArguments {
    pub fn probes(&self) -> Vec<Probe> {
        let icmp = self.icmp_probes.iter().copied().map(Probe::Icmp);
        let http = self.http_probes.iter().cloned().map(Probe::Http);
        icmp.chain(http).collect()
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.probe_interval)
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs_f64(self.probe_timeout)
    }

    /// One probe run never outlasts the interval nor the window.
    pub fn attempt_timeout(&self) -> Duration {
        self.interval().min(self.window())
    }
}
