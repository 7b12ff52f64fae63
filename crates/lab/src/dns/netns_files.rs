//! Pods' `resolv.conf`. `ip netns exec NAME` bind-mounts each file of `/etc/netns/NAME/` over
//! its namesake in `/etc`, so every process the lab starts in a pod's namespace (its server,
//! every probe) resolves through the lab's DNS server. The lab removes the files it wrote on
//! `lab down`; it leaves `/etc/netns` itself, which other labs (and `ip`) may share.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::state::LabPaths;

/// Where `ip netns exec` looks (fixed in iproute2).
const NETNS_ETC: &str = "/etc/netns";

fn directory(netns: &str) -> PathBuf {
    Path::new(NETNS_ETC).join(netns)
}

/// The resolv.conf of a lab pod: the lab's server only, one-second tries, no search list.
pub fn resolv_conf_text(nameserver: IpAddr) -> String {
    format!(
        "# written by `sluice lab`; removed by `sluice lab down`\nnameserver {nameserver}\noptions timeout:1 attempts:2\n"
    )
}

/// Writes `/etc/netns/<netns>/resolv.conf`.
pub fn write_resolv_conf(netns: &str, nameserver: IpAddr) -> Result<(), String> {
    let directory = directory(netns);
    std::fs::create_dir_all(&directory)
        .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let file = directory.join("resolv.conf");
    std::fs::write(&file, resolv_conf_text(nameserver))
        .map_err(|error| format!("cannot write {}: {error}", file.display()))
}

/// Removes the resolv.conf files (and then empty directories) of every namespace name this lab
/// owns, whether or not the namespace still exists. Returns how many directories went.
pub fn remove_all(paths: &LabPaths) -> Result<usize, String> {
    let Ok(entries) = std::fs::read_dir(NETNS_ETC) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !paths.owns_netns(&name) {
            continue;
        }
        let file = entry.path().join("resolv.conf");
        if file.exists() {
            std::fs::remove_file(&file)
                .map_err(|error| format!("cannot remove {}: {error}", file.display()))?;
        }
        // Only an empty directory goes: anything else in it is not ours.
        if std::fs::remove_dir(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}
