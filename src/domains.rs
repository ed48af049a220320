//! Tenants' sending domains on the SMTP crate: the DKIM key made for each registered
//! domain, the signer of each stored key, and the DNS lookups that verify what a
//! tenant published; and `maily domain`, the same operations as the admin API's
//! against the configured store.

use anyhow::Context as _;
use maily_actors::compose::{DomainSigners, MessageSigner};
use maily_api::admin::domains::{SendingDomain, check, register};
use maily_api::admin::{DomainAuthority, DomainServiceError};
use maily_config::Settings;
use maily_engine::Domain;
use maily_engine::TenantId;
use maily_engine::ports::DomainKey;
use maily_smtp::{DkimAlgorithm, DkimKey, MxOptions, MxResolver};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Makes keys with [`DkimKey::generate`] and reads TXT, MX and CNAME records with an
/// [`MxResolver`]. Without a DNS configuration keys are still made; checks then fail
/// with the reason (an operator can still verify with `?force=true`).
pub struct DnsDomains {
    dns: Result<MxResolver, String>,
}

impl DnsDomains {
    /// Asks `[intake] dns_servers`, or the system's name servers when none are set.
    pub fn from_settings(s: &Settings) -> Self {
        let dns = Self::resolver(s).map_err(|e| {
            tracing::warn!(error = %format!("{e:#}"), "sending domains cannot be checked in DNS; operators verify them with ?force=true");
            format!("{e:#}")
        });
        DnsDomains { dns }
    }

    fn resolver(s: &Settings) -> anyhow::Result<MxResolver> {
        let servers = s
            .intake
            .dns_server_addrs()
            .map_err(|e| anyhow::anyhow!("intake.dns_servers: {e}"))?;
        let options = MxOptions {
            timeout: Some(Duration::from_secs(5)),
            attempts: Some(2),
            ..MxOptions::default()
        };
        if servers.is_empty() {
            MxResolver::from_system_conf(&options)
                .map_err(|e| anyhow::anyhow!("reading the system's DNS configuration: {e}"))
        } else {
            Ok(MxResolver::with_nameservers_and_options(&servers, &options))
        }
    }

    fn dns(&self) -> Result<&MxResolver, DomainServiceError> {
        self.dns
            .as_ref()
            .map_err(|e| DomainServiceError::Dns(format!("no DNS to ask: {e}")))
    }
}

#[async_trait::async_trait]
impl DomainAuthority for DnsDomains {
    fn new_key(
        &self,
        domain: &Domain,
        selector: &str,
        ed25519: bool,
    ) -> Result<DomainKey, DomainServiceError> {
        let algorithm = if ed25519 {
            DkimAlgorithm::Ed25519
        } else {
            DkimAlgorithm::Rsa2048
        };
        let (key, pem) = DkimKey::generate(domain.as_str(), selector, algorithm)
            .map_err(|e| DomainServiceError::Key(e.to_string()))?;
        Ok(DomainKey {
            selector: selector.to_string(),
            algorithm: algorithm.signature_algorithm().to_string(),
            private_key: pem,
            dns_record: key.dns_record(),
        })
    }

    async fn txt(&self, name: &str) -> Result<Vec<String>, DomainServiceError> {
        self.dns()?
            .txt(name)
            .await
            .map_err(|e| DomainServiceError::Dns(e.to_string()))
    }

    async fn cname(&self, name: &str) -> Result<Vec<String>, DomainServiceError> {
        self.dns()?
            .cname_targets(name)
            .await
            .map_err(|e| DomainServiceError::Dns(e.to_string()))
    }

    async fn mx(&self, name: &str) -> Result<Vec<String>, DomainServiceError> {
        self.dns()?
            .mx_hosts(name)
            .await
            .map_err(|e| DomainServiceError::Dns(e.to_string()))
    }
}

/// Signers of stored tenant keys, each parsed once: by domain, selector and public
/// key, so a key made again under the same name is never confused with the old one.
#[derive(Default)]
pub struct TenantKeys {
    loaded: Mutex<HashMap<KeyId, Arc<dyn MessageSigner>>>,
}

/// A stored key: its domain, selector and DNS record.
type KeyId = (String, String, String);

impl DomainSigners for TenantKeys {
    fn signer(&self, domain: &Domain, key: &DomainKey) -> anyhow::Result<Arc<dyn MessageSigner>> {
        let id = (
            domain.to_string(),
            key.selector.clone(),
            key.dns_record.clone(),
        );
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signer) = loaded.get(&id) {
            return Ok(signer.clone());
        }
        let parsed = DkimKey::from_pem(domain.as_str(), &key.selector, &key.private_key)?;
        let signer: Arc<dyn MessageSigner> = Arc::new(OwnKey(parsed));
        loaded.insert(id, signer.clone());
        Ok(signer)
    }
}

/// One tenant key: signs every message it is given, as `d=` its domain.
struct OwnKey(DkimKey);

impl MessageSigner for OwnKey {
    fn sign(&self, _from_domain: &str, message: &[u8]) -> anyhow::Result<Option<Vec<u8>>> {
        let mut signed = self.0.signature_header(message)?;
        signed.extend_from_slice(message);
        Ok(Some(signed))
    }
}

/// `maily domain`: tenants' sending domains, against the configured store.
#[derive(clap::Args)]
pub struct DomainArgs {
    #[command(subcommand)]
    command: DomainCmd,
    /// A TOML file layered over the defaults (see config/default.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print JSON (the admin API's `SendingDomain`) instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum DomainCmd {
    /// Register a sending domain for a tenant and make its DKIM key; prints the DNS
    /// records to publish.
    Add {
        tenant: String,
        domain: String,
        /// An Ed25519 key instead of RSA-2048 (not every receiver verifies Ed25519).
        #[arg(long)]
        ed25519: bool,
    },
    /// A tenant's sending domains, with their status and records.
    List { tenant: String },
    /// Look a domain's records up in DNS and mark it verified when they are published.
    Verify {
        tenant: String,
        domain: String,
        /// Mark it verified without looking (an operator vouching for it).
        #[arg(long)]
        force: bool,
    },
}

/// Runs `maily domain`.
pub async fn run(args: DomainArgs) -> anyhow::Result<()> {
    let settings = Settings::load(args.config.as_deref()).context("loading configuration")?;
    let store = crate::wiring::open_store(&settings).await?;
    let authority: Arc<dyn maily_api::admin::DomainAuthority> =
        Arc::new(DnsDomains::from_settings(&settings));
    let hosts = crate::admin::domain_hosts(&settings);
    let tenant_of = |t: &str| TenantId::parse(t).map_err(|e| anyhow::anyhow!("tenant {t:?}: {e}"));
    let domain_of =
        |d: &str| Domain::parse(d.trim()).map_err(|e| anyhow::anyhow!("domain {d:?}: {e}"));
    let shown: Vec<SendingDomain> = match args.command {
        DomainCmd::Add {
            tenant,
            domain,
            ed25519,
        } => {
            let tenant = tenant_of(&tenant)?;
            if store.tenant(&tenant).await?.is_none() {
                anyhow::bail!("tenant {tenant} does not exist");
            }
            let record = register(
                store.as_ref(),
                Some(authority),
                &tenant,
                domain_of(&domain)?,
                ed25519,
            )
            .await?;
            vec![SendingDomain::of(&record, &hosts)]
        }
        DomainCmd::List { tenant } => {
            let tenant = tenant_of(&tenant)?;
            store
                .domains(&tenant)
                .await?
                .iter()
                .map(|d| SendingDomain::of(d, &hosts))
                .collect()
        }
        DomainCmd::Verify {
            tenant,
            domain,
            force,
        } => vec![
            check(
                store.as_ref(),
                Some(authority),
                &hosts,
                &tenant_of(&tenant)?,
                &domain_of(&domain)?,
                force,
            )
            .await?,
        ],
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    for d in &shown {
        println!("{} {}", d.domain, d.status);
        for r in &d.dns {
            let status = r
                .status
                .as_deref()
                .map(|s| format!("  [{s}]"))
                .unwrap_or_default();
            println!(
                "  {} {} {} ({}){status}",
                r.kind, r.name, r.value, r.purpose
            );
        }
    }
    Ok(())
}
