//! Prometheus metrics and the HTTP endpoint that serves them with `/healthz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    pub sync_seconds: Histogram,
    pub compile_seconds: Histogram,
    pub render_seconds: Histogram,
    pub kernel_seconds: Histogram,
    pub transaction_operations: Histogram,
    pub rules: Gauge,
    pub set_elements: Gauge,
    pub local_endpoints: Gauge,
    pub routes: Gauge,
    pub sync_errors: Counter,
    pub route_errors: Counter,
    pub full_syncs: Counter,
    pub datastore_errors: Counter,
    pub dns: DnsMetrics,
    pub gateway: GatewayMetrics,
    pub flows: FlowMetrics,
    pub proxy: ProxyMetrics,
    healthy: AtomicBool,
}

/// A policy hit as metric labels: what decided, in which direction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct HitLabels {
    pub tier: String,
    pub kind: String,
    pub policy: String,
    pub rule: String,
    pub action: String,
    pub direction: String,
}

/// An action as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ActionLabels {
    pub action: String,
}

/// What the flow-log shell reports: traffic per deciding rule and per action, records written,
/// kernel events read, and what the bounds dropped.
#[derive(Debug)]
pub struct FlowMetrics {
    pub policy_packets: Family<HitLabels, Counter>,
    pub policy_bytes: Family<HitLabels, Counter>,
    pub policy_connections: Family<HitLabels, Counter>,
    pub action_packets: Family<ActionLabels, Counter>,
    pub action_bytes: Family<ActionLabels, Counter>,
    pub action_connections: Family<ActionLabels, Counter>,
    pub records: Counter,
    pub log_packets: Counter,
    pub conntrack_events: Counter,
    pub dropped: Counter,
    pub tracked_connections: Gauge,
    pub read_errors: Counter,
    pub write_errors: Counter,
}

impl FlowMetrics {
    fn new(registry: &mut Registry) -> FlowMetrics {
        let metrics = FlowMetrics {
            policy_packets: Family::default(),
            policy_bytes: Family::default(),
            policy_connections: Family::default(),
            action_packets: Family::default(),
            action_bytes: Family::default(),
            action_connections: Family::default(),
            records: Counter::default(),
            log_packets: Counter::default(),
            conntrack_events: Counter::default(),
            dropped: Counter::default(),
            tracked_connections: Gauge::default(),
            read_errors: Counter::default(),
            write_errors: Counter::default(),
        };
        let families = [
            (
                "flow_policy_packets",
                "Packets of the flows each policy rule decided (both directions of allowed connections; logged packets of denied ones)",
                &metrics.policy_packets,
            ),
            (
                "flow_policy_bytes",
                "Bytes of the flows each policy rule decided",
                &metrics.policy_bytes,
            ),
            (
                "flow_policy_connections",
                "Connections each policy rule allowed, or distinct flows it denied",
                &metrics.policy_connections,
            ),
        ];
        for (name, help, family) in families {
            registry.register(name, help, family.clone());
        }
        let actions = [
            (
                "flow_action_packets",
                "Packets of flows by action",
                &metrics.action_packets,
            ),
            (
                "flow_action_bytes",
                "Bytes of flows by action",
                &metrics.action_bytes,
            ),
            (
                "flow_action_connections",
                "Connections allowed, or distinct flows denied",
                &metrics.action_connections,
            ),
        ];
        for (name, help, family) in actions {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "flow_records",
            "Flow log records written",
            metrics.records.clone(),
        );
        registry.register(
            "flow_log_packets",
            "Decisions the kernel logged (first packets of connections, rate-limited denied packets)",
            metrics.log_packets.clone(),
        );
        registry.register(
            "flow_conntrack_events",
            "Connection-tracking events and dumped entries read",
            metrics.conntrack_events.clone(),
        );
        registry.register(
            "flow_dropped",
            "Connections, keys or records the flow log's memory bounds dropped",
            metrics.dropped.clone(),
        );
        registry.register(
            "flow_tracked_connections",
            "Connections the flow log follows now",
            metrics.tracked_connections.clone(),
        );
        registry.register(
            "flow_read_errors",
            "Failed reads of the kernel's log or conntrack sockets",
            metrics.read_errors.clone(),
        );
        registry.register(
            "flow_write_errors",
            "Failed writes of the flow log file",
            metrics.write_errors.clone(),
        );
        metrics
    }
}

/// What the egress gateway shell reports: health changes and failovers, the clients and
/// gateways it routes, probe round trips and routing trouble.
#[derive(Debug)]
pub struct GatewayMetrics {
    pub health_changes: Counter,
    pub failovers: Counter,
    pub clients: Gauge,
    pub gateways_ready: Gauge,
    pub gateways_not_ready: Gauge,
    pub probe_seconds: Histogram,
    pub probe_failures: Counter,
    pub program_seconds: Histogram,
    pub routing_errors: Counter,
}

impl GatewayMetrics {
    fn new(registry: &mut Registry) -> GatewayMetrics {
        let metrics = GatewayMetrics {
            health_changes: Counter::default(),
            failovers: Counter::default(),
            clients: Gauge::default(),
            gateways_ready: Gauge::default(),
            gateways_not_ready: Gauge::default(),
            // From 50 µs: a probe on one machine or one rack answers in well under a millisecond.
            probe_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            probe_failures: Counter::default(),
            program_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            routing_errors: Counter::default(),
        };
        registry.register(
            "egress_gateway_health_changes",
            "Times a probed egress gateway's health changed (ready, not ready, draining)",
            metrics.health_changes.clone(),
        );
        registry.register(
            "egress_gateway_failovers",
            "Times a ready egress gateway failed its probes and was taken out of every client's table",
            metrics.failovers.clone(),
        );
        registry.register(
            "egress_gateway_clients",
            "Local client pods with an egress gateway routing table",
            metrics.clients.clone(),
        );
        registry.register(
            "egress_gateways_ready",
            "Probed egress gateways that answer their health port",
            metrics.gateways_ready.clone(),
        );
        registry.register(
            "egress_gateways_not_ready",
            "Probed egress gateways that do not answer (or were never probed ready)",
            metrics.gateways_not_ready.clone(),
        );
        registry.register(
            "egress_gateway_probe_seconds",
            "Round trip of successful egress gateway health probes",
            metrics.probe_seconds.clone(),
        );
        registry.register(
            "egress_gateway_probe_failures",
            "Egress gateway health probes that failed",
            metrics.probe_failures.clone(),
        );
        registry.register(
            "egress_gateway_program_seconds",
            "Time to plan and program the egress gateway rules, tables and tunnel after a change",
            metrics.program_seconds.clone(),
        );
        registry.register(
            "egress_gateway_routing_errors",
            "Egress gateway routing syncs the kernel refused in part",
            metrics.routing_errors.clone(),
        );
        metrics
    }
}

/// What the DNS shell reports: mappings learned, answers by fate, evictions, and how long a
/// held answer waited for its batch.
#[derive(Debug)]
pub struct DnsMetrics {
    pub mappings: Gauge,
    pub answers_passed: Counter,
    pub answers_held: Counter,
    pub answers_dropped: Counter,
    pub evictions: Counter,
    pub hold_seconds: Histogram,
}

impl DnsMetrics {
    fn new(registry: &mut Registry) -> DnsMetrics {
        let metrics = DnsMetrics {
            mappings: Gauge::default(),
            answers_passed: Counter::default(),
            answers_held: Counter::default(),
            answers_dropped: Counter::default(),
            evictions: Counter::default(),
            // From 50 µs: a held answer normally waits well under a millisecond.
            hold_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
        };
        registry.register(
            "dns_mappings",
            "Name to address mappings learned from DNS answers, over all local endpoints",
            metrics.mappings.clone(),
        );
        registry.register(
            "dns_answers_passed",
            "DNS answers released at once (they changed nothing in the kernel)",
            metrics.answers_passed.clone(),
        );
        registry.register(
            "dns_answers_held",
            "DNS answers held until their addresses were in the domain sets, then released",
            metrics.answers_held.clone(),
        );
        registry.register(
            "dns_answers_dropped",
            "DNS answers dropped because their addresses could not be programmed in time",
            metrics.answers_dropped.clone(),
        );
        registry.register(
            "dns_evictions",
            "Learned mappings evicted to keep within the per-name, per-endpoint and per-node caps",
            metrics.evictions.clone(),
        );
        registry.register(
            "dns_hold_seconds",
            "How long a held DNS answer waited for its batch to be programmed",
            metrics.hold_seconds.clone(),
        );
        metrics
    }
}

/// A decision of the L7 proxy as metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ProxyDecisionLabels {
    /// `http` (a request) or `tls` (a ClientHello).
    pub protocol: String,
    /// `allowed` or `denied`.
    pub verdict: String,
}

/// Why the L7 proxy reset a connection without judging it, as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct ProxyRefusalLabels {
    /// `pod_limit`, `proxy_limit`, `not_judged`, `unreadable` or `upstream_failed`.
    pub reason: String,
}

/// What the L7 proxy shell reports: starts, connections, decisions and refusals (from the
/// child's reports, `crate::proxy::stats`).
#[derive(Debug)]
pub struct ProxyMetrics {
    pub starts: Counter,
    pub up: Gauge,
    pub open_connections: Gauge,
    pub open_pipes: Gauge,
    pub spliced_bytes: Counter,
    pub accepted: Counter,
    pub decisions: Family<ProxyDecisionLabels, Counter>,
    pub refusals: Family<ProxyRefusalLabels, Counter>,
}

impl ProxyMetrics {
    fn new(registry: &mut Registry) -> ProxyMetrics {
        let metrics = ProxyMetrics {
            starts: Counter::default(),
            up: Gauge::default(),
            open_connections: Gauge::default(),
            open_pipes: Gauge::default(),
            spliced_bytes: Counter::default(),
            accepted: Counter::default(),
            decisions: Family::default(),
            refusals: Family::default(),
        };
        registry.register(
            "l7_proxy_starts",
            "Times the L7 proxy child was started (more than once: it exited and was restarted)",
            metrics.starts.clone(),
        );
        registry.register(
            "l7_proxy_up",
            "Whether the L7 proxy child runs (1) or not (0; redirected connections are dropped)",
            metrics.up.clone(),
        );
        registry.register(
            "l7_proxy_open_connections",
            "Connections the L7 proxy holds open, at its last report",
            metrics.open_connections.clone(),
        );
        registry.register(
            "l7_proxy_open_pipes",
            "Kernel pipes the L7 proxy holds to splice bulk bytes, at its last report",
            metrics.open_pipes.clone(),
        );
        registry.register(
            "l7_proxy_spliced_bytes",
            "Bytes the L7 proxy moved by splice (answers and admitted TLS streams in bulk), never copying them",
            metrics.spliced_bytes.clone(),
        );
        registry.register(
            "l7_proxy_accepted_connections",
            "Connections redirected to the L7 proxy and accepted",
            metrics.accepted.clone(),
        );
        registry.register(
            "l7_proxy_decisions",
            "HTTP requests and TLS ClientHellos the L7 proxy judged, by verdict",
            metrics.decisions.clone(),
        );
        registry.register(
            "l7_proxy_refused_connections",
            "Connections the L7 proxy reset for want of a verdict (a bound, nothing to judge by, unreadable bytes) or of a destination (upstream failed), by reason",
            metrics.refusals.clone(),
        );
        metrics
    }

    /// Adds what a child's report added since its previous one.
    pub fn add(&self, added: &crate::proxy::stats::StatsReport) {
        self.accepted.inc_by(added.accepted);
        self.open_connections
            .set(i64::try_from(added.open).unwrap_or(i64::MAX));
        self.open_pipes
            .set(i64::try_from(added.open_pipes).unwrap_or(i64::MAX));
        self.spliced_bytes.inc_by(added.spliced_bytes);
        let decisions = [
            ("http", "allowed", added.http_allowed),
            ("http", "denied", added.http_denied),
            ("tls", "allowed", added.tls_allowed),
            ("tls", "denied", added.tls_denied),
        ];
        for (protocol, verdict, count) in decisions {
            let labels = ProxyDecisionLabels {
                protocol: protocol.to_string(),
                verdict: verdict.to_string(),
            };
            self.decisions.get_or_create(&labels).inc_by(count);
        }
        let refusals = [
            ("pod_limit", added.refused_pod_limit),
            ("proxy_limit", added.refused_proxy_limit),
            ("not_judged", added.refused_not_judged),
            ("unreadable", added.refused_unreadable),
            ("upstream_failed", added.upstream_failures),
        ];
        for (reason, count) in refusals {
            let labels = ProxyRefusalLabels {
                reason: reason.to_string(),
            };
            self.refusals.get_or_create(&labels).inc_by(count);
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("sluice_agent");
        let sync_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let compile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let render_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let kernel_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let transaction_operations = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        let metrics = Metrics {
            sync_seconds: sync_seconds.clone(),
            compile_seconds: compile_seconds.clone(),
            render_seconds: render_seconds.clone(),
            kernel_seconds: kernel_seconds.clone(),
            transaction_operations: transaction_operations.clone(),
            rules: Gauge::default(),
            set_elements: Gauge::default(),
            local_endpoints: Gauge::default(),
            routes: Gauge::default(),
            sync_errors: Counter::default(),
            route_errors: Counter::default(),
            full_syncs: Counter::default(),
            datastore_errors: Counter::default(),
            dns: DnsMetrics::new(&mut registry),
            gateway: GatewayMetrics::new(&mut registry),
            flows: FlowMetrics::new(&mut registry),
            proxy: ProxyMetrics::new(&mut registry),
            healthy: AtomicBool::new(false),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "sync_seconds",
            "Time from a datastore change to the kernel programmed",
            sync_seconds,
        );
        registry.register(
            "compile_seconds",
            "Time to compile every policy into the IR, per sync",
            compile_seconds,
        );
        registry.register(
            "render_seconds",
            "Time to render the node's ruleset from the IR, per sync",
            render_seconds,
        );
        registry.register(
            "kernel_seconds",
            "Time from the rendered ruleset to the kernel's answer (the diff and the nft run), per sync that ran nft",
            kernel_seconds,
        );
        registry.register(
            "transaction_operations",
            "Operations per nftables transaction",
            transaction_operations,
        );
        registry.register(
            "rules",
            "nftables rules in the sluice table",
            metrics.rules.clone(),
        );
        registry.register(
            "set_elements",
            "Elements in the sluice table's sets and maps",
            metrics.set_elements.clone(),
        );
        registry.register(
            "local_endpoints",
            "Pods on this node with a program",
            metrics.local_endpoints.clone(),
        );
        registry.register(
            "routes",
            "Routes to other nodes' pod addresses and blackholes for local blocks",
            metrics.routes.clone(),
        );
        registry.register(
            "route_errors",
            "Route syncs with a route the kernel refused",
            metrics.route_errors.clone(),
        );
        registry.register(
            "sync_errors",
            "Syncs the kernel refused",
            metrics.sync_errors.clone(),
        );
        registry.register(
            "full_syncs",
            "Syncs that rebuilt the whole table",
            metrics.full_syncs.clone(),
        );
        registry.register(
            "datastore_errors",
            "Datastore reads or watches that failed",
            metrics.datastore_errors.clone(),
        );
        *metrics.registry.lock().expect("not poisoned") = registry;
        Arc::new(metrics)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().expect("not poisoned");
        encode(&mut text, &registry).expect("encoding to a string cannot fail");
        text
    }

    /// Serves `/metrics` and `/healthz` on `address` from a background thread, until the
    /// returned server is stopped.
    pub fn serve(self: &Arc<Self>, address: &str) -> Result<MetricsServer, String> {
        let server = tiny_http::Server::http(address)
            .map_err(|error| format!("cannot listen on {address}: {error}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("{address} is not an IP address"))?;
        let server = Arc::new(server);
        let metrics = Arc::clone(self);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let (status, body) = match request.url() {
                        "/metrics" => (200, metrics.render()),
                        "/healthz" if metrics.is_healthy() => (200, "ok\n".to_string()),
                        "/healthz" => (503, "not in sync with the datastore\n".to_string()),
                        _ => (404, "not found\n".to_string()),
                    };
                    let _ = request.respond(tiny_http::Response::from_string(body).with_status_code(status));
                }
            })
            .map_err(|error| error.to_string())?;
        Ok(MetricsServer {
            address: bound,
            server,
            thread: Some(thread),
        })
    }
}

/// The HTTP server [`Metrics::serve`] started.
pub struct MetricsServer {
    address: std::net::SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MetricsServer")
            .field("address", &self.address)
            .finish()
    }
}

impl MetricsServer {
    /// Where it listens (the port the system chose, when asked for port 0).
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// Stops accepting requests and waits for the serving thread to end.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
