//! Stopping on SIGTERM or SIGINT. The first signal asks the run loop to stop after the sync
//! in hand (an nft transaction is atomic, so there is nothing to abandon half-done); a second
//! one ends the process at once, for an agent stuck waiting on an unreachable datastore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// What stopping leaves behind, said in the log line and the README.
pub const LEFT_IN_PLACE: &str = "the nftables table inet sluice and the agent's routes stay in place: this fails closed, pods keep the policy last programmed and new pods are dropped until an agent runs again";

/// Sets `stop` on the first SIGTERM or SIGINT, from a thread of its own, and logs which one
/// came; exits with status 1 on a second.
pub fn stop_on_signals(stop: Arc<AtomicBool>) -> Result<(), String> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|error| format!("cannot handle SIGTERM and SIGINT: {error}"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if stop.swap(true, Ordering::SeqCst) {
                    tracing::warn!(signal = name, "a second signal while stopping; exiting at once");
                    std::process::exit(1);
                }
                tracing::info!(signal = name, "stopping: {LEFT_IN_PLACE}");
            }
        })
        .map_err(|error| format!("cannot start the signal thread: {error}"))?;
    Ok(())
}
