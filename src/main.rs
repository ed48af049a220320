//! The `maily` binary: wires the adapters named in the configuration to the actors.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "maily",
    version,
    about = "High-throughput email delivery engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole campaign through every actor with embedded adapters and a built-in
    /// SMTP sink, then print a report.
    Demo(maily::demo::DemoArgs),
    /// Run the engine until SIGINT or SIGTERM.
    Serve {
        /// A TOML file layered over the defaults (see config/default.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a campaign's figures in an epoch against the roots on chain, or a proof
    /// file offline against a root.
    Verify(maily::verify::VerifyArgs),
    /// Print an account's reward claim for an epoch (amount and Merkle proof for the
    /// distributor's `claim`), checked against each distributor's published root.
    RewardProof(maily::verify::RewardProofArgs),
    /// Deploy the anchor registry and a reward distributor on a chain and print the
    /// `[anchor.evm.<name>]` section for them (key in MAILY_DEPLOYER_KEY).
    DeployContracts(maily::deploy::DeployArgs),
    /// Tenants' sending domains: add (with the DNS records to publish), list, verify.
    Domain(maily::domains::DomainArgs),
    /// Apply the store's migrations and exit.
    Migrate {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Cmd::Demo(_)
        | Cmd::Verify(_)
        | Cmd::RewardProof(_)
        | Cmd::DeployContracts(_)
        | Cmd::Domain(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let system = actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("building the tokio runtime")
    });
    let result = system.block_on(async move {
        match cli.command {
            Cmd::Demo(args) => maily::demo::run_cli(args).await,
            Cmd::Serve { config } => maily::serve::run(config.as_deref()).await,
            Cmd::Verify(args) => maily::verify::run(args).await,
            Cmd::RewardProof(args) => maily::verify::run_reward_proof(args).await,
            Cmd::DeployContracts(args) => maily::deploy::run(args).await,
            Cmd::Migrate { config } => maily::serve::migrate(config.as_deref()).await,
            Cmd::Domain(args) => maily::domains::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
