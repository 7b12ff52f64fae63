//! The `sluice-cni` binary: environment and stdin in, JSON on stdout, as the CNI spec says.
use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut stdin) {
        let error =
            sluice_cni::protocol::CniError::new(sluice_cni::protocol::ErrorCode::Io, "cannot read stdin")
                .with_details(error);
        println!("{}", error.to_json(sluice_cni::protocol::LATEST_VERSION));
        std::process::exit(1);
    }
    let outcome = sluice_cni::run(|name| std::env::var(name).ok(), &stdin);
    if let Some(stdout) = outcome.stdout {
        let mut handle = std::io::stdout().lock();
        let _ = writeln!(handle, "{stdout}");
        let _ = handle.flush();
    }
    std::process::exit(outcome.exit_code);
}
