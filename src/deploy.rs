//! `maily deploy-contracts`: puts the anchor registry and a reward distributor on a
//! chain and prints the `[anchor.evm.<name>]` section that uses them.

use anyhow::Context as _;
use maily_chain::Address;
use maily_chain::deploy::deploy_all;

/// The variable holding the deploying key (never a flag: flags show in process lists).
pub const KEY_VAR: &str = "MAILY_DEPLOYER_KEY";

/// `maily deploy-contracts` arguments.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The chain's JSON-RPC URL.
    #[arg(long)]
    pub rpc: String,
    /// The chain's name in `anchor.chains`.
    #[arg(long, default_value = "ethereum")]
    pub name: String,
    /// Pay rewards in this ERC-20 (then fund the distributor with it); without it a
    /// RewardToken is deployed and all of `--reward-supply` funds the distributor.
    #[arg(long)]
    pub token: Option<String>,
    /// Base units of the deployed RewardToken.
    #[arg(long, default_value_t = 1_000_000_000_000_000_000_000)]
    pub reward_supply: u128,
}

/// Deploys and prints the configuration section.
pub async fn run(args: DeployArgs) -> anyhow::Result<()> {
    let key = std::env::var(KEY_VAR)
        .with_context(|| format!("set {KEY_VAR} to the deploying account's private key"))?;
    let token = args
        .token
        .as_deref()
        .map(|t| {
            t.parse::<Address>()
                .with_context(|| format!("--token {t:?} is not an address"))
        })
        .transpose()?;
    let d = deploy_all(&args.rpc, &key, token, args.reward_supply)
        .await
        .with_context(|| format!("deploying on {}", args.rpc))?;
    print!("{}", section(&args, &d));
    Ok(())
}

/// The configuration section (with comments) for what was deployed.
pub fn section(args: &DeployArgs, d: &maily_chain::deploy::Deployed) -> String {
    let funding = if d.minted {
        format!(
            "# Reward token {} (RewardToken): {} base units, all held by the distributor.",
            d.token, args.reward_supply
        )
    } else {
        format!(
            "# Reward token {}: fund the distributor with it before claims.",
            d.token
        )
    };
    format!(
        "# Deployed by {owner} on chain id {id}. The distributor's owner is {owner}:\n\
         # the engine's signer key (MAILY__ANCHOR__EVM__{upper}__SIGNER_KEY) must be its key.\n\
         {funding}\n\
         [anchor.evm.{name}]\n\
         rpc_url = \"{rpc}\"\n\
         chain_id = {id}\n\
         registry = \"{registry}\"\n\
         distributor = \"{distributor}\"\n",
        owner = d.owner,
        id = d.chain_id,
        upper = args.name.to_ascii_uppercase(),
        name = args.name,
        rpc = args.rpc,
        registry = d.registry,
        distributor = d.distributor,
    )
}
