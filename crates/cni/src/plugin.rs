//! The commands: ADD, DEL, CHECK, STATUS, GC and VERSION, over the store, IPAM and netlink.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, mpsc};

use ipnet::IpNet;
use serde_json::Value;
use sluice_api::calico::{WorkloadEndpoint, WorkloadEndpointPort, WorkloadEndpointSpec};
use sluice_api::kubernetes::Pod;
use sluice_api::meta::ObjectMeta;
use sluice_api::values::Cidr;
use sluice_api::{Kind, Resource, resource};
use sluice_dataplane::conntrack::Conntrack;
use sluice_ipam::{AssignRequest, Ipam, IpamError};
use sluice_store::{Condition, KeyValue, Operation, Store, StoreError};

use crate::lock::{ContainerLock, LOCK_WAIT};
use crate::names::{host_interface_name, workload_endpoint_name};
use crate::netlink::{self, GATEWAY_V4, GATEWAY_V6, HOST_MAC, NamespaceProblem, Netlink, NetlinkError};
use crate::protocol::{
    AddResult, CniError, Command, Environment, ErrorCode, LATEST_VERSION, NetworkConfig, ResultAddress,
    ResultInterface, ResultRoute, at_least, parse_network_config, previous_addresses, requested_version,
    version_result,
};

/// What the binary prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Option<String>,
    pub exit_code: i32,
}

/// Runs one invocation: the environment through `lookup`, the network configuration on `stdin`.
pub fn run(lookup: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    // Errors are written in the version the request asked for when it is one we speak.
    let reply_version = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|value| requested_version(&value).ok())
        .unwrap_or(LATEST_VERSION);
    let failure = |error: CniError, version: &str| Outcome {
        stdout: Some(error.to_json(version).to_string()),
        exit_code: 1,
    };
    let environment = match Environment::from_lookup(&lookup) {
        Ok(environment) => environment,
        Err(error) => return failure(error, reply_version),
    };
    if environment.command == Command::Version {
        return Outcome {
            stdout: Some(version_result().to_string()),
            exit_code: 0,
        };
    }
    let config = match parse_network_config(stdin, sluice_store::default_address, hostname) {
        Ok(config) => config,
        Err(error) => return failure(error, reply_version),
    };
    let version = config.version;
    let result = match environment.command {
        Command::Add => add(&environment, &config).map(|result| Some(result.to_json(version))),
        Command::Del => delete(&environment, &config).map(|()| None),
        Command::Check => check(&environment, &config).map(|()| None),
        Command::Status => status(&config).map(|()| None),
        Command::Gc => garbage_collect(&config).map(|()| None),
        Command::Version => unreachable!("answered above"),
    };
    match result {
        Ok(stdout) => Outcome {
            stdout: stdout.map(|value| value.to_string()),
            exit_code: 0,
        },
        Err(error) => failure(error, version),
    }
}

/// The node's name when the configuration gives none: the kernel's hostname.
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(name.trim().to_string()).filter(|name| !name.is_empty())
}

/// The existing datastore: the plugin never creates one (a typo in `datastore` must not give
/// pods addresses from an empty store).
fn open_store(config: &NetworkConfig) -> Result<Arc<dyn Store>, CniError> {
    match sluice_store::open(&config.datastore) {
        Ok(store) => Ok(Arc::from(store)),
        Err(error @ StoreError::Missing { .. }) => Err(CniError::new(
            ErrorCode::Datastore,
            "the network configuration's datastore does not exist",
        )
        .with_details(error)),
        Err(error) => Err(error.into()),
    }
}

fn netlink_error(error: NetlinkError) -> CniError {
    CniError::new(ErrorCode::Netlink, "network configuration failed").with_details(error)
}

fn ipam_error(error: IpamError) -> CniError {
    let code = match &error {
        IpamError::Store(StoreError::Unavailable(_)) | IpamError::TooManyConflicts { .. } => {
            ErrorCode::TryAgainLater
        }
        _ => ErrorCode::Ipam,
    };
    CniError::new(code, "IPAM failed").with_details(error)
}

fn pod_identity(environment: &Environment) -> Result<(&str, &str), CniError> {
    environment.pod().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_ARGS must name K8S_POD_NAMESPACE and K8S_POD_NAME",
        )
    })
}

/// Reads and decodes one resource; absent is `None`.
fn get_resource(
    store: &dyn Store,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
) -> Result<Option<(Resource, i64)>, CniError> {
    let Some(value) = store.get(&resource::key(kind, namespace, name))? else {
        return Ok(None);
    };
    decode(&value).map(|resource| Some((resource, value.modify_revision)))
}

fn decode(value: &KeyValue) -> Result<Resource, CniError> {
    Resource::decode(&value.value, value.modify_revision).map_err(|error| {
        CniError::new(ErrorCode::Datastore, "the datastore holds an unreadable resource")
            .with_details(format!("{}: {error}", value.key))
    })
}

fn open_namespace(path: &str) -> Result<File, CniError> {
    File::open(path).map_err(|error| {
        let code = if error.kind() == std::io::ErrorKind::NotFound {
            ErrorCode::UnknownContainer
        } else {
            ErrorCode::Io
        };
        CniError::new(code, "cannot open the network namespace").with_details(format!("{path}: {error}"))
    })
}

fn host_prefix(address: IpAddr) -> IpNet {
    IpNet::from(address)
}

// ---------------------------------------------------------------------------------------------
// ADD

/// Which address families' default routes an attachment owns: only the pod's first interface
/// of a family gets the default route (a second one, `net1` under Multus, leaves it alone, as
/// Calico does with the default route on eth0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DefaultRoutes {
    ipv4: bool,
    ipv6: bool,
}

impl DefaultRoutes {
    fn owns(self, address: IpAddr) -> bool {
        if address.is_ipv4() { self.ipv4 } else { self.ipv6 }
    }
}

fn add(environment: &Environment, config: &NetworkConfig) -> Result<AddResult, CniError> {
    let (namespace, pod_name) = pod_identity(environment)?;
    // A pod wired before the node's agent has ever run must send nothing, not everything.
    let mut nft = sluice_nft::CommandBackend::new().map_err(|error| {
        CniError::new(ErrorCode::Dataplane, "cannot run nft on this node").with_details(error)
    })?;
    sluice_dataplane::ensure_fail_closed(&mut nft).map_err(|error| {
        CniError::new(ErrorCode::Dataplane, "cannot make the node fail closed").with_details(error)
    })?;
    let netns = environment.netns.as_deref().expect("ADD requires CNI_NETNS");
    let namespace_file = open_namespace(netns)?;
    // Held until ADD returns: a second call for this container waits, then finds our work.
    let _lock = ContainerLock::acquire(&config.lock_directory, &environment.container_id, LOCK_WAIT)?;
    let host_interface = host_interface_name(namespace, pod_name, &environment.interface_name);
    let handle = environment.handle();
    let store = open_store(config)?;
    let ipam = Ipam::new(store.clone());
    // Addresses the handle held before this call belong to an earlier ADD of this container;
    // whatever happens here, they are not ours to release.
    let previous: Vec<IpAddr> = ipam
        .allocations_of(&handle)
        .map_err(ipam_error)?
        .iter()
        .map(|allocation| allocation.address)
        .collect();
    let repeat = !previous.is_empty();
    if repeat && let Some(result) = intact_result(environment, config, store.as_ref(), &previous)? {
        return Ok(result);
    }
    // The veth is made while the datastore answers (both take milliseconds); the addresses
    // reach the wiring thread through the channel once IPAM has them.
    let (address_sender, address_receiver) = mpsc::channel::<Vec<IpAddr>>();
    let (assigned, wiring) = std::thread::scope(|scope| {
        let wiring = scope.spawn(|| {
            wire(
                environment,
                config,
                &host_interface,
                &namespace_file,
                repeat,
                address_receiver,
            )
        });
        let assigned = assign(environment, &ipam, store.as_ref(), config, namespace, pod_name);
        if let Ok((_, addresses)) = &assigned
            && !addresses.is_empty()
        {
            let _ = address_sender.send(addresses.clone());
        }
        drop(address_sender);
        let wiring = wiring.join().unwrap_or_else(|_| Wiring {
            created: None,
            outcome: Err(CniError::new(ErrorCode::Netlink, "the wiring thread panicked")),
        });
        (assigned, wiring)
    });
    let outcome = match (&assigned, wiring.outcome) {
        (Err(error), _) => Err(error.clone()),
        (Ok((_, addresses)), _) if addresses.is_empty() => {
            Err(
                CniError::new(ErrorCode::Ipam, "IPAM assigned no address").with_details(format!(
                    "no enabled IP pool has room for pod {namespace}/{pod_name} on node {}",
                    config.node_name
                )),
            )
        }
        (Ok(_), Err(error)) => Err(error),
        (Ok((pod, addresses)), Ok((pod_mac, default_routes))) => {
            let attachment = Attachment {
                environment,
                config,
                namespace,
                pod_name,
                pod: pod.as_ref(),
                host_interface: &host_interface,
                addresses,
                default_routes,
            };
            let endpoint = Resource::WorkloadEndpoint(attachment.workload_endpoint(&pod_mac));
            store
                .commit(&[Operation::Put {
                    key: endpoint.key(),
                    value: endpoint.encode(),
                    condition: Condition::Any,
                }])
                .map_err(CniError::from)
                .map(|_| attachment.result(&pod_mac))
        }
    };
    outcome.inspect_err(|_| {
        // Undo only what this call made: a veth it created (its routes go with it) and
        // addresses the handle did not hold before. An earlier ADD's attachment stays.
        if let Some(index) = wiring.created
            && let Ok(node) = Netlink::open()
            && let Ok(Some(link)) = node.link(&host_interface)
            && link.index == index
        {
            let _ = node.delete_link(index);
        }
        if !repeat {
            let _ = ipam.release(&handle);
        }
    })
}

/// A repeated ADD's answer when the attachment an earlier ADD made is intact (endpoint,
/// addresses, interfaces, routes): the same result, and nothing is touched, so state a chained
/// plugin added to the interface survives. `None` when something is missing.
fn intact_result(
    environment: &Environment,
    config: &NetworkConfig,
    store: &dyn Store,
    allocated: &[IpAddr],
) -> Result<Option<AddResult>, CniError> {
    let Some((_, _, endpoint)) = find_endpoint(store, environment, config)? else {
        return Ok(None);
    };
    let allocated: BTreeSet<IpAddr> = allocated.iter().copied().collect();
    let Ok(inspection) = inspect(environment, &endpoint, &allocated) else {
        return Ok(None);
    };
    if !inspection.problems.is_empty() {
        return Ok(None);
    }
    let addresses: Vec<IpAddr> = allocated.into_iter().collect();
    let (namespace, pod_name) = pod_identity(environment)?;
    let attachment = Attachment {
        environment,
        config,
        namespace,
        pod_name,
        pod: None,
        host_interface: &endpoint.spec.interface_name,
        addresses: &addresses,
        default_routes: inspection.default_routes,
    };
    Ok(Some(attachment.result(&inspection.pod_mac)))
}

/// The datastore half of ADD: the pod, then addresses from IPAM (the ones the handle already
/// holds for a repeated ADD).
fn assign(
    environment: &Environment,
    ipam: &Ipam,
    store: &dyn Store,
    config: &NetworkConfig,
    namespace: &str,
    pod_name: &str,
) -> Result<(Option<Pod>, Vec<IpAddr>), CniError> {
    let pod = match get_resource(store, Kind::Pod, Some(namespace), pod_name)? {
        Some((Resource::Pod(pod), _)) => Some(pod),
        _ => None,
    };
    // IPAM reads the namespace (its labels and annotations) itself.
    let request = AssignRequest {
        handle: environment.handle(),
        node: config.node_name.clone(),
        namespace: namespace.to_string(),
        pod: pod_name.to_string(),
        pod_annotations: pod
            .as_ref()
            .map(|pod| pod.metadata.annotations.clone())
            .unwrap_or_default(),
    };
    let allocations = ipam.assign(&request).map_err(ipam_error)?;
    let addresses = allocations.iter().map(|allocation| allocation.address).collect();
    Ok((pod, addresses))
}

/// What the wiring thread did: the index of a host veth it created (for the undo) and the pod
/// interface's MAC with the default routes it owns.
struct Wiring {
    created: Option<u32>,
    outcome: Result<(String, DefaultRoutes), CniError>,
}

/// The netlink half of ADD: the veth pair, the host side's sysctls, then (once IPAM has
/// answered) the pod's addresses and routes and the node's routes to them.
///
/// A repeated ADD (`repeat`: the handle held addresses before) reuses the veth the earlier ADD
/// made when its pod end is `CNI_IFNAME` in `CNI_NETNS`, and refuses when it is not; it never
/// deletes an interface. A first ADD replaces a veth of the same name left by an earlier
/// sandbox of the pod or an ADD that died half-way, as Calico does.
fn wire(
    environment: &Environment,
    config: &NetworkConfig,
    host_interface: &str,
    namespace_file: &File,
    repeat: bool,
    addresses: mpsc::Receiver<Vec<IpAddr>>,
) -> Wiring {
    let mut created = None;
    let outcome = wire_links(
        environment,
        config,
        host_interface,
        namespace_file,
        repeat,
        addresses,
        &mut created,
    );
    Wiring { created, outcome }
}

fn wire_links(
    environment: &Environment,
    config: &NetworkConfig,
    host_interface: &str,
    namespace_file: &File,
    repeat: bool,
    addresses: mpsc::Receiver<Vec<IpAddr>>,
    created: &mut Option<u32>,
) -> Result<(String, DefaultRoutes), CniError> {
    let netns = environment.netns.as_deref().unwrap_or_default();
    let interface_name = &environment.interface_name;
    let node = Netlink::open().map_err(netlink_error)?;
    let existing = node.link(host_interface).map_err(netlink_error)?;
    let host = match existing {
        Some(host) if repeat => {
            let pod_end = netlink::in_namespace(Path::new(netns), |pod| pod.link(interface_name))
                .map_err(|problem| namespace_error(problem, netns))?
                .map_err(netlink_error)?;
            let paired = pod_end
                .as_ref()
                .is_some_and(|pod_end| pod_end.peer == Some(host.index) && host.peer == Some(pod_end.index));
            if !paired {
                return Err(CniError::new(
                    ErrorCode::InvalidEnvironment,
                    "this container is already attached through another network namespace",
                )
                .with_details(format!(
                    "the host veth {host_interface} of container {} is not paired with {interface_name} in {netns}; DEL the container first",
                    environment.container_id
                )));
            }
            host
        }
        stale => {
            if let Some(stale) = stale {
                node.delete_link(stale.index).map_err(netlink_error)?;
            }
            node.create_veth(host_interface, interface_name, namespace_file, config.mtu)
                .map_err(netlink_error)?;
            let host = node
                .link(host_interface)
                .map_err(netlink_error)?
                .ok_or_else(|| CniError::new(ErrorCode::Netlink, "the host veth vanished after creation"))?;
            *created = Some(host.index);
            host
        }
    };
    // Proxy ARP answers the pod's 169.254.1.1 with the host's MAC; it needs forwarding on the
    // interface to find a route, and no delay so the first packet is not held back.
    netlink::write_sysctl(&format!("ipv4/conf/{host_interface}/proxy_arp"), "1").map_err(netlink_error)?;
    netlink::write_sysctl(&format!("ipv4/conf/{host_interface}/forwarding"), "1").map_err(netlink_error)?;
    netlink::write_sysctl(&format!("ipv4/neigh/{host_interface}/proxy_delay"), "0").map_err(netlink_error)?;
    // The host end's link-local address is the pod's IPv6 gateway, the same on every host veth
    // and alone on its link: duplicate address detection would only hold it tentative (the
    // gateway unanswered, the pod's first IPv6 packets lost) for a second or two. Set before
    // the pod end comes up, which is when the kernel adds the address.
    if std::path::Path::new(&format!("/proc/sys/net/ipv6/conf/{host_interface}")).exists() {
        netlink::write_sysctl(&format!("ipv6/conf/{host_interface}/accept_dad"), "0")
            .map_err(netlink_error)?;
    }

    let (pod_link, addresses, default_routes) = netlink::in_namespace(Path::new(netns), move |pod| {
        let link = pod.link(interface_name)?.ok_or_else(|| NetlinkError {
            context: format!("{interface_name} in {netns}"),
            message: "not found after creation".into(),
            errno: None,
        })?;
        pod.set_up(link.index)?;
        let Ok(addresses) = addresses.recv() else {
            // IPAM failed; the caller reports why and removes the veth.
            return Ok((link, Vec::new(), DefaultRoutes::default()));
        };
        for address in &addresses {
            pod.add_host_address(link.index, *address)?;
        }
        // The default route of a family belongs to the first interface that took it.
        let taken_elsewhere = |ipv6: bool| -> Result<bool, NetlinkError> {
            Ok(pod.routes(ipv6)?.iter().any(|route| {
                route.destination.prefix_len() == 0 && route.output.is_some_and(|output| output != link.index)
            }))
        };
        let mut default_routes = DefaultRoutes::default();
        if addresses.iter().any(IpAddr::is_ipv4) && !taken_elsewhere(false)? {
            pod.add_route(host_prefix(IpAddr::V4(GATEWAY_V4)), None, link.index)?;
            pod.add_route(
                IpNet::V4(Default::default()),
                Some(IpAddr::V4(GATEWAY_V4)),
                link.index,
            )?;
            default_routes.ipv4 = true;
        }
        if addresses.iter().any(IpAddr::is_ipv6) && !taken_elsewhere(true)? {
            pod.add_route(
                IpNet::V6(Default::default()),
                Some(IpAddr::V6(GATEWAY_V6)),
                link.index,
            )?;
            default_routes.ipv6 = true;
        }
        Ok((link, addresses, default_routes))
    })
    .map_err(|problem| namespace_error(problem, netns))?
    .map_err(netlink_error)?;

    for address in &addresses {
        node.add_route(host_prefix(*address), None, host.index)
            .map_err(netlink_error)?;
    }
    let pod_mac = pod_link
        .mac
        .as_deref()
        .map(netlink::format_mac)
        .unwrap_or_default();
    Ok((pod_mac, default_routes))
}

/// One ADD's facts, for wiring and for the WorkloadEndpoint.
struct Attachment<'a> {
    environment: &'a Environment,
    config: &'a NetworkConfig,
    namespace: &'a str,
    pod_name: &'a str,
    pod: Option<&'a Pod>,
    host_interface: &'a str,
    addresses: &'a [IpAddr],
    default_routes: DefaultRoutes,
}

impl Attachment<'_> {
    fn workload_endpoint(&self, pod_mac: &str) -> WorkloadEndpoint {
        let service_account = self.pod.and_then(|pod| pod.spec.service_account_name.clone());
        let mut labels = self
            .pod
            .map(|pod| pod.metadata.labels.clone())
            .unwrap_or_default();
        labels.insert("projectcalico.org/namespace".into(), self.namespace.into());
        labels.insert("projectcalico.org/orchestrator".into(), "k8s".into());
        let mut profiles = vec![format!("kns.{}", self.namespace)];
        if let Some(account) = &service_account {
            labels.insert("projectcalico.org/serviceaccount".into(), account.clone());
            profiles.push(format!("ksa.{}.{account}", self.namespace));
        }
        let ports = self
            .pod
            .map(|pod| {
                pod.named_ports()
                    .map(|(name, protocol, port)| WorkloadEndpointPort {
                        name: name.to_string(),
                        protocol,
                        port,
                    })
                    .collect()
            })
            .unwrap_or_default();
        WorkloadEndpoint {
            metadata: ObjectMeta {
                name: workload_endpoint_name(
                    &self.config.node_name,
                    self.pod_name,
                    &self.environment.interface_name,
                ),
                namespace: Some(self.namespace.to_string()),
                labels,
                ..ObjectMeta::default()
            },
            spec: WorkloadEndpointSpec {
                orchestrator: "k8s".into(),
                node: self.config.node_name.clone(),
                container_id: self.environment.container_id.clone(),
                pod: self.pod_name.to_string(),
                endpoint: self.environment.interface_name.clone(),
                service_account_name: service_account,
                ip_networks: self
                    .addresses
                    .iter()
                    .map(|address| Cidr(host_prefix(*address)))
                    .collect(),
                profiles,
                interface_name: self.host_interface.to_string(),
                mac: Some(pod_mac.to_string()).filter(|mac| !mac.is_empty()),
                ports,
            },
        }
    }

    fn result(&self, pod_mac: &str) -> AddResult {
        let gateway = |address: &IpAddr| {
            if address.is_ipv4() {
                IpAddr::V4(GATEWAY_V4)
            } else {
                IpAddr::V6(GATEWAY_V6)
            }
        };
        let mut routes = Vec::new();
        if self.default_routes.ipv4 && self.addresses.iter().any(IpAddr::is_ipv4) {
            routes.push(ResultRoute {
                destination: IpNet::V4(Default::default()),
                gateway: Some(IpAddr::V4(GATEWAY_V4)),
            });
        }
        if self.default_routes.ipv6 && self.addresses.iter().any(IpAddr::is_ipv6) {
            routes.push(ResultRoute {
                destination: IpNet::V6(Default::default()),
                gateway: Some(IpAddr::V6(GATEWAY_V6)),
            });
        }
        AddResult {
            interfaces: vec![
                ResultInterface {
                    name: self.host_interface.to_string(),
                    mac: netlink::format_mac(&HOST_MAC),
                    mtu: self.config.mtu,
                    sandbox: None,
                },
                ResultInterface {
                    name: self.environment.interface_name.clone(),
                    mac: pod_mac.to_string(),
                    mtu: self.config.mtu,
                    sandbox: self.environment.netns.clone(),
                },
            ],
            addresses: self
                .addresses
                .iter()
                .map(|address| ResultAddress {
                    address: host_prefix(*address),
                    gateway: self.default_routes.owns(*address).then(|| gateway(address)),
                    interface: 1,
                })
                .collect(),
            routes,
        }
    }
}

fn namespace_error(problem: NamespaceProblem, netns: &str) -> CniError {
    match problem {
        NamespaceProblem::Missing => CniError::new(
            ErrorCode::UnknownContainer,
            "the network namespace does not exist",
        )
        .with_details(netns),
        NamespaceProblem::Other(message) => {
            CniError::new(ErrorCode::Io, "cannot enter the network namespace").with_details(message)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DEL

fn delete(environment: &Environment, config: &NetworkConfig) -> Result<(), CniError> {
    let lock = ContainerLock::acquire(&config.lock_directory, &environment.container_id, LOCK_WAIT)?;
    // Removing a veth waits out the kernel's RCU grace period (~15 ms); the datastore work
    // runs meanwhile.
    let outcome = std::thread::scope(|scope| {
        let interface = scope.spawn(|| remove_pod_interface(environment));
        let store = open_store(config);
        let addresses = store.as_ref().map_err(Clone::clone).and_then(|store| {
            Ipam::new(store.clone())
                .allocations_of(&environment.handle())
                .map_err(ipam_error)
        });
        let removed = interface
            .join()
            .unwrap_or_else(|_| Err(CniError::new(ErrorCode::Netlink, "the interface thread panicked")));
        // Without a usable namespace the pod's end could not be reached: the host end goes
        // instead (deleting either end of a veth deletes both, and the node's routes with it).
        let pod_side_done = *removed.as_ref().unwrap_or(&true);
        // With the pod's interface gone no new state can appear; the old state goes before
        // the addresses can be handed to another pod. Addresses that could not be read are
        // not released either: the runtime retries DEL.
        let addresses = addresses?;
        forget_connections(addresses.iter().map(|allocation| allocation.address));
        let released = store.and_then(|store| release(store, environment, config, !pod_side_done));
        removed.map(|_| ()).and(released)
    });
    if outcome.is_ok() {
        lock.remove();
    }
    outcome
}

/// Deletes the connection-tracking entries of addresses being released, so that a pod given
/// one of them later inherits no "established" flow of the old pod. A failure is reported on
/// stderr and does not fail the command: the entries then only live until they time out.
fn forget_connections(addresses: impl IntoIterator<Item = IpAddr>) {
    let mut addresses = addresses.into_iter().peekable();
    if addresses.peek().is_none() {
        return;
    }
    let conntrack = match Conntrack::new() {
        Ok(conntrack) => conntrack,
        Err(error) => {
            eprintln!(
                "sluice-cni: {error}; connections of released addresses stay tracked until they time out"
            );
            return;
        }
    };
    for address in addresses {
        if let Err(error) = conntrack.forget(address) {
            eprintln!("sluice-cni: forgetting the connections of {address}: {error}");
        }
    }
}

/// The pod's end, found by its name inside the pod's namespace: the host-side name is shared
/// with any newer sandbox of the same pod, whose veth must survive this DEL. `Ok(false)` when
/// there is no usable namespace to look in.
fn remove_pod_interface(environment: &Environment) -> Result<bool, CniError> {
    let Some(netns) = environment.netns.as_deref() else {
        return Ok(false);
    };
    let interface_name = &environment.interface_name;
    let removed = netlink::in_namespace(Path::new(netns), |pod| match pod.link(interface_name)? {
        Some(link) => pod.delete_link(link.index),
        None => Ok(()),
    });
    match removed {
        Ok(result) => result.map(|()| true).map_err(netlink_error),
        Err(NamespaceProblem::Missing) => Ok(false),
        Err(NamespaceProblem::Other(message)) => {
            eprintln!("sluice-cni: DEL: {message}; removing the host end of the veth instead");
            Ok(false)
        }
    }
}

/// The host end of an attachment's veth, found by name on the node. Only the name derived from
/// the endpoint's pod and interface, and only a veth Sluice made (Calico's host MAC), is
/// deleted: the endpoint still names this container, so no newer sandbox has taken the name.
fn remove_host_interface(endpoint: &WorkloadEndpoint) -> Result<(), CniError> {
    let expected = host_interface_name(
        endpoint.metadata.namespace(),
        &endpoint.spec.pod,
        &endpoint.spec.endpoint,
    );
    if endpoint.spec.interface_name != expected {
        eprintln!(
            "sluice-cni: the endpoint {} names interface {}, not {expected}; leaving it",
            endpoint.metadata.name, endpoint.spec.interface_name
        );
        return Ok(());
    }
    let node = Netlink::open().map_err(netlink_error)?;
    match node.link(&expected).map_err(netlink_error)? {
        Some(link) if link.made_by_sluice() => node.delete_link(link.index).map_err(netlink_error),
        Some(_) => {
            eprintln!("sluice-cni: {expected} was not made by Sluice; leaving it");
            Ok(())
        }
        None => Ok(()),
    }
}

/// The datastore half of DEL: the addresses and the WorkloadEndpoint, and the host veth when
/// `remove_host` (the pod's namespace could not be used).
fn release(
    store: Arc<dyn Store>,
    environment: &Environment,
    config: &NetworkConfig,
    remove_host: bool,
) -> Result<(), CniError> {
    let endpoint = find_endpoint(store.as_ref(), environment, config)?;
    if remove_host && let Some((_, _, endpoint)) = &endpoint {
        remove_host_interface(endpoint)?;
    }
    Ipam::new(store.clone())
        .release(&environment.handle())
        .map_err(ipam_error)?;
    if let Some((key, revision, _)) = endpoint {
        delete_endpoint(store.as_ref(), &key, revision)?;
    }
    Ok(())
}

/// The WorkloadEndpoint this attachment recorded: by name when the pod is known, else by
/// scanning this node's endpoints for the container and interface.
fn find_endpoint(
    store: &dyn Store,
    environment: &Environment,
    config: &NetworkConfig,
) -> Result<Option<(String, i64, WorkloadEndpoint)>, CniError> {
    let matches = |endpoint: &WorkloadEndpoint| {
        endpoint.spec.container_id == environment.container_id
            && endpoint.spec.endpoint == environment.interface_name
            && endpoint.spec.node == config.node_name
    };
    if let Some((namespace, pod)) = environment.pod() {
        let name = workload_endpoint_name(&config.node_name, pod, &environment.interface_name);
        let key = resource::key(Kind::WorkloadEndpoint, Some(namespace), &name);
        return Ok(
            match get_resource(store, Kind::WorkloadEndpoint, Some(namespace), &name)? {
                Some((Resource::WorkloadEndpoint(endpoint), revision)) if matches(&endpoint) => {
                    Some((key, revision, endpoint))
                }
                _ => None,
            },
        );
    }
    Ok(node_endpoints(store, &config.node_name)?
        .into_iter()
        .find(|(_, _, endpoint)| matches(endpoint)))
}

/// Every WorkloadEndpoint recorded for `node`, with its key and revision.
fn node_endpoints(store: &dyn Store, node: &str) -> Result<Vec<(String, i64, WorkloadEndpoint)>, CniError> {
    let (values, _) = store.list(&resource::kind_prefix(Kind::WorkloadEndpoint))?;
    let mut endpoints = Vec::new();
    for value in &values {
        if let Resource::WorkloadEndpoint(endpoint) = decode(value)?
            && endpoint.spec.node == node
        {
            endpoints.push((value.key.clone(), value.modify_revision, endpoint));
        }
    }
    Ok(endpoints)
}

/// Deletes an endpoint only if nobody rewrote it since it was read (a newer sandbox of the same
/// pod reuses the name); a conflict means it is no longer ours.
fn delete_endpoint(store: &dyn Store, key: &str, revision: i64) -> Result<(), CniError> {
    match store.commit(&[Operation::Delete {
        key: key.to_string(),
        condition: Condition::Revision(revision),
    }]) {
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// CHECK

fn check(environment: &Environment, config: &NetworkConfig) -> Result<(), CniError> {
    let unknown = |message: &str| CniError::new(ErrorCode::UnknownContainer, message.to_string());
    let _lock = ContainerLock::acquire(&config.lock_directory, &environment.container_id, LOCK_WAIT)?;
    let store = open_store(config)?;
    let (_, _, endpoint) = find_endpoint(store.as_ref(), environment, config)?
        .ok_or_else(|| unknown("no workload endpoint is recorded for this container and interface"))?;
    let allocated: BTreeSet<IpAddr> = Ipam::new(store.clone())
        .allocations_of(&environment.handle())
        .map_err(ipam_error)?
        .iter()
        .map(|allocation| allocation.address)
        .collect();
    if allocated.is_empty() {
        return Err(unknown("IPAM holds no address for this container and interface"));
    }
    let mut problems = inspect(environment, &endpoint, &allocated)?.problems;
    if let Some(previous) = &config.previous_result {
        let previous: BTreeSet<IpAddr> = previous_addresses(previous)?.iter().map(IpNet::addr).collect();
        if previous != allocated {
            problems.push(format!(
                "prevResult lists {} but IPAM holds {}",
                list(&previous),
                list(&allocated)
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::CheckFailed,
            "the attachment differs from what ADD made",
        )
        .with_details(problems.join("; ")))
    }
}

/// Addresses for people: `10.0.0.1, fd00::1`, or `none`.
fn list(addresses: &BTreeSet<IpAddr>) -> String {
    if addresses.is_empty() {
        return "none".into();
    }
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an attachment looks like against what ADD makes.
struct Inspection {
    /// Differences, in words; empty when the attachment is intact.
    problems: Vec<String>,
    pod_mac: String,
    default_routes: DefaultRoutes,
}

/// Compares the endpoint, the addresses IPAM holds, the pod's interface, addresses and routes,
/// and the host veth with its routes and proxy ARP. Read only. Fails with "unknown container"
/// when the pod's namespace or interface is gone.
fn inspect(
    environment: &Environment,
    endpoint: &WorkloadEndpoint,
    allocated: &BTreeSet<IpAddr>,
) -> Result<Inspection, CniError> {
    let unknown = |message: &str| CniError::new(ErrorCode::UnknownContainer, message.to_string());
    let mut problems = Vec::new();
    let recorded: BTreeSet<IpAddr> = endpoint
        .spec
        .ip_networks
        .iter()
        .map(|network| network.0.addr())
        .collect();
    if recorded != *allocated {
        problems.push(format!(
            "the endpoint records {} but IPAM holds {}",
            list(&recorded),
            list(allocated)
        ));
    }
    let netns = environment
        .netns
        .as_deref()
        .expect("ADD and CHECK require CNI_NETNS");
    let interface_name = &environment.interface_name;
    let node = Netlink::open().map_err(netlink_error)?;
    let host_interface = &endpoint.spec.interface_name;
    let host = node.link(host_interface).map_err(netlink_error)?;
    let pod_side = netlink::in_namespace(Path::new(netns), |pod| {
        let mut problems = Vec::new();
        let Some(link) = pod.link(interface_name)? else {
            return Ok(Err(()));
        };
        if !link.up {
            problems.push(format!("{interface_name} is down"));
        }
        if let Some(host) = &host
            && (link.peer != Some(host.index) || host.peer != Some(link.index))
        {
            problems.push(format!(
                "{interface_name} is not the peer of the host veth {host_interface}"
            ));
        }
        let present = pod.addresses(link.index)?;
        for address in allocated {
            if !present.contains(&host_prefix(*address)) {
                problems.push(format!("{interface_name} lacks {}", host_prefix(*address)));
            }
        }
        let mut default_routes = DefaultRoutes::default();
        for ipv6 in [false, true] {
            if !allocated.iter().any(|address| address.is_ipv6() == ipv6) {
                continue;
            }
            let family = if ipv6 { "IPv6" } else { "IPv4" };
            let routes = pod.routes(ipv6)?;
            let gateway = if ipv6 {
                IpAddr::V6(GATEWAY_V6)
            } else {
                IpAddr::V4(GATEWAY_V4)
            };
            let has = |destination: IpNet, gateway: Option<IpAddr>| {
                routes.iter().any(|route| {
                    route.destination == destination
                        && route.gateway == gateway
                        && route.output == Some(link.index)
                })
            };
            let default = if ipv6 {
                IpNet::V6(Default::default())
            } else {
                IpNet::V4(Default::default())
            };
            let owner = routes
                .iter()
                .find(|route| route.destination == default)
                .and_then(|route| route.output);
            match owner {
                // A secondary interface: the pod's default route is the first one's.
                Some(output) if output != link.index => continue,
                None => {
                    problems.push(format!("the pod has no {family} default route"));
                    continue;
                }
                Some(_) => {}
            }
            if !has(default, Some(gateway)) {
                problems.push(format!(
                    "the pod's {family} default route is not via {gateway} dev {interface_name}"
                ));
            }
            if !ipv6 && !has(host_prefix(gateway), None) {
                problems.push(format!("the pod has no route to {gateway} dev {interface_name}"));
            }
            if ipv6 {
                default_routes.ipv6 = true;
            } else {
                default_routes.ipv4 = true;
            }
        }
        let mac = link.mac.as_deref().map(netlink::format_mac).unwrap_or_default();
        Ok(Ok((problems, mac, default_routes)))
    })
    .map_err(|problem| namespace_error(problem, netns))?
    .map_err(netlink_error)?;
    let (pod_problems, pod_mac, default_routes) = pod_side.map_err(|()| {
        unknown("the pod's interface does not exist").with_details(format!("{interface_name} in {netns}"))
    })?;
    problems.extend(pod_problems);

    match host {
        None => problems.push(format!("the host veth {host_interface} does not exist")),
        Some(host) => {
            if !host.up {
                problems.push(format!("the host veth {host_interface} is down"));
            }
            let mut routes = node.routes(false).map_err(netlink_error)?;
            routes.extend(node.routes(true).map_err(netlink_error)?);
            for address in allocated {
                let destination = host_prefix(*address);
                if !routes
                    .iter()
                    .any(|route| route.destination == destination && route.output == Some(host.index))
                {
                    problems.push(format!(
                        "the node has no route to {destination} dev {host_interface}"
                    ));
                }
            }
            let proxy_arp =
                std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{host_interface}/proxy_arp"));
            if allocated.iter().any(IpAddr::is_ipv4) && proxy_arp.ok().as_deref().map(str::trim) != Some("1")
            {
                problems.push(format!("proxy ARP is off on {host_interface}"));
            }
        }
    }
    Ok(Inspection {
        problems,
        pod_mac,
        default_routes,
    })
}

// ---------------------------------------------------------------------------------------------
// STATUS and GC

fn status(config: &NetworkConfig) -> Result<(), CniError> {
    require_version(config, Command::Status)?;
    let unavailable = |error: StoreError| {
        CniError::new(ErrorCode::StatusNotAvailable, "the datastore is not reachable").with_details(error)
    };
    let store = sluice_store::open(&config.datastore).map_err(unavailable)?;
    store.revision().map_err(unavailable)?;
    Ok(())
}

fn require_version(config: &NetworkConfig, command: Command) -> Result<(), CniError> {
    if at_least(config.version, "1.1.0") {
        return Ok(());
    }
    Err(CniError::new(
        ErrorCode::IncompatibleVersion,
        format!("{} needs cniVersion 1.1.0", command.name()),
    )
    .with_details(format!("the configuration says {}", config.version)))
}

/// Releases every attachment of this node that the runtime no longer lists: its IPAM handle and
/// its WorkloadEndpoint. Goes on past failures and reports the first.
fn garbage_collect(config: &NetworkConfig) -> Result<(), CniError> {
    require_version(config, Command::Gc)?;
    let valid: BTreeSet<(String, String)> = config
        .valid_attachments
        .as_ref()
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "GC needs `cni.dev/valid-attachments`",
            )
        })?
        .iter()
        .map(|attachment| (attachment.container_id.clone(), attachment.interface_name.clone()))
        .collect();
    let store = open_store(config)?;
    let ipam = Ipam::new(store.clone());
    let mut first_error = None;
    for (key, revision, endpoint) in node_endpoints(store.as_ref(), &config.node_name)? {
        let attachment = (endpoint.spec.container_id.clone(), endpoint.spec.endpoint.clone());
        if valid.contains(&attachment) {
            continue;
        }
        let outcome = collect_attachment(config, &ipam, store.as_ref(), &key, revision, &endpoint);
        if let Err(error) = outcome {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// GC of one attachment, under its container's lock: its connections, addresses, host veth
/// and endpoint.
fn collect_attachment(
    config: &NetworkConfig,
    ipam: &Ipam,
    store: &dyn Store,
    key: &str,
    revision: i64,
    endpoint: &WorkloadEndpoint,
) -> Result<(), CniError> {
    let container_id = &endpoint.spec.container_id;
    let lock = ContainerLock::acquire(&config.lock_directory, container_id, LOCK_WAIT)?;
    let handle = crate::protocol::handle(container_id, &endpoint.spec.endpoint);
    let allocations = ipam.allocations_of(&handle).map_err(ipam_error)?;
    forget_connections(allocations.iter().map(|allocation| allocation.address));
    remove_host_interface(endpoint)?;
    ipam.release(&handle).map_err(ipam_error)?;
    delete_endpoint(store, key, revision)?;
    lock.remove();
    Ok(())
}
