//! `maily demo`: a whole campaign through every actor, on embedded adapters, into the
//! built-in SMTP sink, ending with a report.

use crate::wiring::{build_ports, engine_settings};
use anyhow::{Context as _, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use maily_api::intake::{Intake, NewCampaign, Row};
use maily_config::Settings;
use maily_engine::drafts::TemplateDrafts;
use maily_engine::merkle::verify;
use maily_engine::ports::{ContentModel, DraftBrief, Tone};
use maily_engine::template::Template;
use maily_engine::{Campaign, CampaignStats, EmailAddress, TenantId};
use maily_smtp::{SinkConfig, SinkReply, SmtpSink};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `maily demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Recipients in all, spread over the campaigns.
    #[arg(long, default_value_t = 10_000)]
    pub recipients: usize,
    /// Number of campaigns.
    #[arg(long, default_value_t = 3)]
    pub campaigns: usize,
    /// Print the final report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// A TOML file layered over the defaults.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// One campaign's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct CampaignReport {
    pub id: String,
    pub name: String,
    /// Rows accepted at intake.
    pub accepted: u64,
    /// Rows refused at intake (invalid addresses).
    pub invalid: u64,
    pub stats: CampaignStats,
    pub reward_total: String,
    /// A few messages refused before sending, with their reasons.
    pub rejections: Vec<(String, String)>,
    /// A few intake errors.
    pub intake_errors: Vec<String>,
}

/// The demo's final report.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    pub campaigns: Vec<CampaignReport>,
    pub recipients: usize,
    pub sink_accepted: u64,
    pub sink_connections: u64,
    pub seconds: f64,
    pub messages_per_second: f64,
    pub epoch: Option<u64>,
    pub root: Option<String>,
    pub ledger_reference: Option<String>,
    /// The campaign whose inclusion proof was checked against the anchored root.
    pub proof_campaign: Option<String>,
    pub proof_verified: bool,
    pub suppressed_addresses: usize,
    pub actor_restarts: u64,
}

const NAMES: [&str; 8] = [
    "Ann", "Bo", "Chiara", "Dmitri", "Esme", "Farid", "Gus", "Hana",
];
const CITIES: [&str; 6] = ["Lisbon", "Oslo", "Kyoto", "Lima", "Accra", "Perth"];
const CAMPAIGNS: [&str; 5] = [
    "Spring sale",
    "Weekly digest",
    "Product launch",
    "Loyalty club",
    "Webinar invite",
];

/// Which demo recipients the sink refuses, and how.
fn sink_verdict(i: usize) -> Option<SinkReply> {
    if i % 997 == 13 {
        Some(SinkReply::new(550, "5.1.1 <user> mailbox does not exist"))
    } else if i % 1999 == 29 {
        Some(SinkReply::new(552, "5.2.2 mailbox full, over quota"))
    } else {
        None
    }
}

fn address(i: usize) -> String {
    let tld = ["com", "org", "net"][i % 3];
    format!("user{i}@example.{tld}")
}

/// Runs the demo and prints its report.
pub async fn run_cli(args: DemoArgs) -> anyhow::Result<()> {
    let json = args.json;
    let report = run(args).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding report")?
        );
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Runs the demo and returns its report.
pub async fn run(args: DemoArgs) -> anyhow::Result<DemoReport> {
    if args.campaigns == 0 || args.recipients == 0 {
        bail!("--campaigns and --recipients must be at least 1");
    }
    let data = tempfile::tempdir().context("creating the demo's data directory")?;
    let fig = Settings::figment(args.config.as_deref())?
        .merge((
            "store.path",
            data.path().join("maily.db").display().to_string(),
        ))
        // The demo's records need not outlive it: the memory log, whatever the
        // configuration file says (MAILY__LOG__KIND may still pick another; a file
        // log then stays in the data folder too).
        .merge(("log.kind", "memory"))
        .merge((
            "log.file.dir",
            data.path().join("maily-log").display().to_string(),
        ))
        .merge(("reward.epoch_interval", "2s"))
        .merge(("anchor.interval", "1s"))
        .merge(("sender.retry_tiers", vec!["1s", "2s"]))
        .merge(maily_config::env());

    let mut rejections = HashMap::new();
    for i in 0..args.recipients {
        if let Some(reply) = sink_verdict(i) {
            rejections.insert(address(i), reply);
        }
    }
    let sink = SmtpSink::start(SinkConfig {
        rejections,
        ..SinkConfig::default()
    })
    .await
    .context("starting the SMTP sink")?;
    let fig = fig.merge((
        "smtp.routes",
        BTreeMap::from([("*".to_string(), sink.addr().to_string())]),
    ));
    let settings = Settings::from_figment(fig)?;
    let ports = build_ports(&settings).await?;
    let engine = maily_actors::start(ports.clone(), engine_settings(&settings)?).await?;
    let intake = Intake::new(ports.log.clone(), ports.store.clone());

    let tenant = TenantId::parse("demo").expect("valid tenant");
    ports.store.upsert_tenant(&tenant, "Demo tenant").await?;
    // The demo's sending domain, as an operator would verify it.
    ports
        .store
        .add_domain(&maily_engine::ports::TenantDomain {
            domain: maily_engine::Domain::parse("maily.example").expect("valid domain"),
            tenant: tenant.clone(),
            token: "operator".into(),
            created_at: maily_engine::Timestamp::now(),
            verified_at: Some(maily_engine::Timestamp::now()),
            dkim: None,
            return_path: None,
            tracking_host: None,
        })
        .await?;
    // Addresses that unsubscribed before: the sender skips them.
    for i in (0..args.recipients).filter(|i| i % 1499 == 7) {
        let a = EmailAddress::parse(&address(i)).expect("demo address");
        ports.store.suppress(&tenant, &a, "unsubscribed").await?;
        ports.hot.suppress(&tenant, &a).await?;
    }

    let mut campaigns: Vec<Campaign> = Vec::new();
    for k in 0..args.campaigns {
        let name = CAMPAIGNS[k % CAMPAIGNS.len()];
        let c = intake
            .create_campaign(NewCampaign {
                tenant: tenant.clone(),
                name: if k < CAMPAIGNS.len() {
                    name.to_string()
                } else {
                    format!("{name} #{k}")
                },
                from: "news@maily.example".into(),
                from_name: Some("Maily Demo".into()),
                template: demo_template(k, name).await?,
            })
            .await?;
        campaigns.push(c);
    }

    let mut rows: Vec<Vec<Row>> = vec![Vec::new(); campaigns.len()];
    for i in 0..args.recipients {
        let mut vars = BTreeMap::from([
            ("first_name".to_string(), NAMES[i % NAMES.len()].to_string()),
            ("city".to_string(), CITIES[i % CITIES.len()].to_string()),
            ("code".to_string(), format!("M-{i:06}")),
        ]);
        let mut email = address(i);
        match i % 2003 {
            101 => email = "not-an-address".into(),
            202 => email = format!("user{i}@"),
            303 => {
                vars.remove("city");
            }
            404 => {
                vars.insert(
                    "first_name".into(),
                    "Eve\r\nBcc: everyone@example.com".into(),
                );
            }
            _ => {}
        }
        rows[i % campaigns.len()].push(Row { email, vars });
    }

    let started = Instant::now();
    let mut accepted = Vec::new();
    let mut intake_errors = Vec::new();
    for (c, rows) in campaigns.iter().zip(rows) {
        let report = intake.enqueue(c, rows).await?;
        accepted.push(report.accepted);
        intake_errors.push(report.rejected);
    }

    follow_progress(&ports, &campaigns, &accepted, args.json).await?;
    let send_secs = started.elapsed().as_secs_f64();

    let (epoch, receipts) = engine.close_epoch().await?;
    let mut report = DemoReport {
        campaigns: Vec::new(),
        recipients: args.recipients,
        sink_accepted: sink.accepted(),
        sink_connections: sink.connections(),
        seconds: send_secs,
        messages_per_second: 0.0,
        epoch,
        root: None,
        ledger_reference: receipts.last().map(|r| r.reference.clone()),
        proof_campaign: None,
        proof_verified: false,
        suppressed_addresses: ports.store.suppressions(&tenant).await?.len(),
        actor_restarts: engine.restarts(),
    };
    let settlement = match epoch {
        Some(e) => ports.store.settlement(e).await?,
        None => None,
    };
    let mut delivered = 0;
    for ((c, accepted), errors) in campaigns.iter().zip(&accepted).zip(intake_errors) {
        let stats = ports.store.campaign_stats(c.id).await?.unwrap_or_default();
        delivered += stats.delivered;
        let reward = settlement
            .as_ref()
            .and_then(|s| s.entries.iter().find(|e| e.campaign == c.id))
            .map_or(0, |e| e.reward_total);
        let rejections = ports
            .store
            .messages_with_status(c.id, "rejected")
            .await?
            .into_iter()
            .take(3)
            .map(|m| (m.recipient.to_string(), m.detail.unwrap_or_default()))
            .collect();
        report.campaigns.push(CampaignReport {
            id: c.id.to_string(),
            name: c.name.clone(),
            accepted: *accepted,
            invalid: errors.len() as u64,
            stats,
            reward_total: reward.to_string(),
            rejections,
            intake_errors: errors
                .iter()
                .take(3)
                .map(|e| format!("row {}: {:?}: {}", e.row, e.input, e.reason))
                .collect(),
        });
    }
    report.messages_per_second = delivered as f64 / send_secs.max(1e-9);

    if let (Some(epoch), Some(first)) = (epoch, campaigns.first()) {
        let proof = ports.store.proof(epoch, first.id).await?.with_context(|| {
            format!("no proof stored for campaign {} in epoch {epoch}", first.id)
        })?;
        let chain = ports.chains.first().context("no chain configured")?;
        let anchored = chain
            .root(epoch)
            .await?
            .with_context(|| format!("epoch {epoch} is not anchored on {}", chain.name()))?;
        report.root = Some(hex::encode(anchored));
        report.proof_campaign = Some(first.id.to_string());
        report.proof_verified = proof.leaf.campaign == first.id
            && proof.leaf.epoch == epoch
            && verify(&anchored, &proof.leaf.hash(), &proof.proof);
    }
    engine.shutdown().await;
    sink.shutdown().await;
    Ok(report)
}

/// The template of campaign `k`: written by hand, except the third, which the
/// content model drafts from a brief.
async fn demo_template(k: usize, name: &str) -> anyhow::Result<Template> {
    if k == 2 {
        let brief = DraftBrief {
            product: "our new travel planner".into(),
            audience: "early subscribers".into(),
            offer: "three months free".into(),
            tone: Tone::Friendly,
            call_to_action_url: Some("https://maily.example/launch".into()),
        };
        return Ok(TemplateDrafts.draft(&brief).await?);
    }
    Ok(Template {
        subject: format!("{{{{ first_name }}}}, {} picks for {{{{ city }}}}", name.to_lowercase()),
        text: Some("Hello {{ first_name }},\n\nYour code is {{ code }}.\nSee you in {{ city }}!\n".into()),
        html: Some("<p>Hello {{ first_name }},</p><p>Your code is <b>{{ code }}</b>. See you in {{ city }}!</p>".into()),
    })
}

/// Shows a bar per campaign until every accepted message is accounted for.
async fn follow_progress(
    ports: &maily_actors::Ports,
    campaigns: &[Campaign],
    accepted: &[u64],
    quiet: bool,
) -> anyhow::Result<()> {
    let multi = MultiProgress::with_draw_target(if quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let style = ProgressStyle::with_template("{prefix:>16} [{bar:40}] {pos}/{len} {msg}")
        .expect("valid template")
        .progress_chars("=> ");
    let bars: Vec<ProgressBar> = campaigns
        .iter()
        .zip(accepted)
        .map(|(c, n)| {
            let bar = multi.add(ProgressBar::new(*n));
            bar.set_style(style.clone());
            bar.set_prefix(c.name.clone());
            bar
        })
        .collect();
    let stall_limit = Duration::from_secs(60);
    let mut last_change = Instant::now();
    let mut last_total = 0;
    loop {
        let mut done = true;
        let mut total = 0;
        for ((c, n), bar) in campaigns.iter().zip(accepted).zip(&bars) {
            let s = ports.hot.live_stats(&c.id).await?.unwrap_or_default();
            let finished = s.finished().min(*n);
            total += finished;
            bar.set_position(finished);
            bar.set_message(format!("delivered {} bounced {}", s.delivered, s.bounced()));
            if finished < *n {
                done = false;
            }
        }
        if done {
            break;
        }
        if total != last_total {
            last_total = total;
            last_change = Instant::now();
        } else if last_change.elapsed() > stall_limit {
            bail!(
                "no progress for {}s: {total} messages accounted for",
                stall_limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for bar in bars {
        bar.finish();
    }
    Ok(())
}

fn print_report(r: &DemoReport) {
    println!();
    println!(
        "{:<16} {:>8} {:>8} {:>9} {:>9} {:>6} {:>6} {:>10} {:>8} {:>8} {:>10}",
        "campaign",
        "accepted",
        "invalid",
        "sent",
        "delivered",
        "hard",
        "soft",
        "suppressed",
        "rejected",
        "expired",
        "reward"
    );
    for c in &r.campaigns {
        let s = &c.stats;
        println!(
            "{:<16} {:>8} {:>8} {:>9} {:>9} {:>6} {:>6} {:>10} {:>8} {:>8} {:>10}",
            c.name,
            c.accepted,
            c.invalid,
            s.injected,
            s.delivered,
            s.bounced_hard,
            s.bounced_soft,
            s.suppressed,
            s.rejected,
            s.expired,
            c.reward_total
        );
    }
    println!();
    if let Some(c) = r
        .campaigns
        .iter()
        .find(|c| !c.rejections.is_empty() || !c.intake_errors.is_empty())
    {
        println!("examples of refused recipients ({}):", c.name);
        for e in &c.intake_errors {
            println!("  intake   {e}");
        }
        for (who, why) in &c.rejections {
            println!("  sender   {who}: {why}");
        }
        println!();
    }
    println!(
        "sink accepted {} messages over {} connections; {:.1}s, {:.0} messages/s",
        r.sink_accepted, r.sink_connections, r.seconds, r.messages_per_second
    );
    println!(
        "suppression list: {} addresses; actor restarts: {}",
        r.suppressed_addresses, r.actor_restarts
    );
    match (&r.epoch, &r.root) {
        (Some(epoch), Some(root)) => {
            println!("epoch {epoch} anchored on the local ledger: root 0x{root}");
            println!(
                "inclusion proof of campaign {}: {}",
                r.proof_campaign.as_deref().unwrap_or("-"),
                if r.proof_verified {
                    "verified"
                } else {
                    "FAILED"
                }
            );
        }
        _ => println!("no epoch anchored"),
    }
}
