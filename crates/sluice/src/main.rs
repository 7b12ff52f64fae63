//! The `sluice` command line: kubectl and calicoctl habits over Sluice's crates. It owns
//! argument parsing, reading inputs and printing; every decision is made by the library crates.
#![forbid(unsafe_code)]

mod connectivity;
mod diagnostics;
mod explain;
mod flows;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kubernetes egress control: Calico and Kubernetes policy, explained and enforced"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests and report every error with file, line, column and field.
    Validate {
        /// Files or directories of YAML/JSON manifests.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// Say whether a flow is allowed, and which rule decided.
    Explain(explain::ExplainArguments),
    /// The matrix of who can reach whom.
    Connectivity(connectivity::ConnectivityArguments),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Jsonl,
    Csv,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { paths } => validate(&paths),
        Command::Explain(arguments) => explain::run(&arguments),
        Command::Connectivity(arguments) => connectivity::run(&arguments),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn validate(paths: &[PathBuf]) -> Result<ExitCode, String> {
    let resources = diagnostics::load_or_report(paths)?;
    println!("{} resources valid", resources.len());
    Ok(ExitCode::SUCCESS)
}
