//! `cardform cards open | sync | query | delete`: members' cards in bulk and
//! one by one. This file wires a run (project, state, ledger, tokens, the
//! governed gateway); the card executor is `crate::apply::cards`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::project::{self, Common};
use crate::alipay::methods::{CardDeleteRequest, CardQueryRequest};
use crate::apply::cards as issue;
use crate::apply::cards::{Counts, Members, Progress, Reminders, Report, Rows, Trades};
use crate::cards::{self, Purpose, Target};
use crate::gateway::{Scope, Typed};
use crate::model::Address;
use crate::settings::Overrides;
use crate::state::Durability;
use crate::state::cards::{CardLedger, Entry};
use crate::stores::Location;

/// The card ledger of a run's state (always local: see the README).
pub fn open_ledger(
    location: &Location,
    operation: &str,
    timeout: Duration,
) -> Result<Arc<dyn CardLedger>> {
    let opened = location
        .backend()
        .open_cards(operation, timeout)
        .map(Arc::from);
    match opened {
        Ok(l) => Ok(l),
        Err(crate::state::StateError::Locked(crate::state::backend::LockError::Held {
            dir,
            holder,
            ..
        })) => bail!(
            "the card ledger in `{dir}` is in use by `cardform {}` (pid {} on {}) since {}\nhint: a card ledger beside a local state is one process's: wait for it (--lock-timeout 5m) or stop it first; keep the state in PostgreSQL to run several `cards` commands and `cards serve` replicas at once",
            holder.operation,
            holder.pid,
            holder.host,
            holder.since
        ),
        Err(crate::state::StateError::Locked(crate::state::backend::LockError::Busy {
            dir,
            ..
        })) => bail!(
            "the card ledger in {dir} is in use by another `cardform cards` command\nhint: one at a time: wait for it (--lock-timeout 5m), or stop it first"
        ),
        Err(e) => Err(e.into()),
    }
}

pub struct Batch {
    pub common: Common,
    pub template: Address,
    pub csv: PathBuf,
    pub results: Option<PathBuf>,
    pub dry_run: bool,
    pub options: crate::apply::Options,
}

/// The template ids a target's templates were applied with.
fn template_ids(
    target: &Target,
    snapshot: &crate::state::Snapshot,
) -> Result<BTreeMap<Address, String>> {
    let addresses: Vec<&Address> = if target.tiers.is_empty() {
        vec![&target.family]
    } else {
        target.tiers.values().collect()
    };
    let mut ids = BTreeMap::new();
    for a in addresses {
        let Some(id) = snapshot
            .resources
            .get(a)
            .and_then(|r| r.ids.template_id.clone())
        else {
            bail!(
                "`{a}` has no template at the gateway yet\nhint: run `cardform apply` first: cards open on applied templates"
            );
        };
        ids.insert(a.clone(), id);
    }
    Ok(ids)
}

/// What a batch does with its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Open,
    Sync,
    /// Trades at the till: consume.sync.
    Consume,
    /// Points-expiry reminders: message.notify.
    Notify,
}

impl Job {
    pub fn name(self) -> &'static str {
        match self {
            Job::Open => "open",
            Job::Sync => "sync",
            Job::Consume => "consume",
            Job::Notify => "notify",
        }
    }
}

/// `cards open`, `sync`, `consume` and `notify`.
pub async fn batch(
    req: Batch,
    job: Job,
    flags: &Overrides,
    progress: Arc<dyn Progress>,
) -> Result<Report> {
    let started = Instant::now();
    let read = project::read(&req.common, flags, "cards")?;
    let target = Target::resolve(&read.desired, &req.template).map_err(anyhow::Error::msg)?;
    let ids = template_ids(&target, &read.snapshot)?;
    // The points message is the manifest's choice (an `issue` block's
    // `points_message`), off by default.
    let points_message = job == Job::Sync
        && read
            .desired
            .issuance
            .values()
            .any(|i| i.family == target.family && i.points_message);
    let run = Run {
        req,
        read,
        target: target.clone(),
        ids,
        points_message,
        started,
        progress,
    };
    match job {
        Job::Open => {
            run.go(
                Members {
                    purpose: Purpose::Open,
                    target,
                },
                job,
            )
            .await
        }
        Job::Sync => {
            run.go(
                Members {
                    purpose: Purpose::Sync,
                    target,
                },
                job,
            )
            .await
        }
        Job::Consume => run.go(Trades { target }, job).await,
        Job::Notify => run.go(Reminders, job).await,
    }
}

/// A batch, resolved: what its rows need.
struct Run {
    req: Batch,
    read: project::Read,
    target: Target,
    ids: BTreeMap<Address, String>,
    points_message: bool,
    started: Instant,
    progress: Arc<dyn Progress>,
}

impl Run {
    async fn go<R: Rows>(self, rows: R, job: Job) -> Result<Report> {
        let Run {
            req,
            read,
            target,
            ids,
            points_message,
            started,
            progress,
        } = self;
        let (checked, rows) = {
            let path = req.csv.clone();
            tokio::task::spawn_blocking(move || issue::check_all(&path, &rows).map(|c| (c, rows)))
                .await
                .context("the check of the rows panicked")??
        };
        let mut counts = Counts {
            rows: checked.rows,
            invalid: checked.invalid,
            ..Counts::default()
        };
        progress.checked(&counts);
        let results = match &req.results {
            Some(p) => Some(issue::results_file(p)?),
            None => None,
        };
        let ledger = open_ledger(
            &read.settings.state,
            &format!("cards {}", job.name()),
            req.common.lock_timeout,
        )?;
        let tokens = super::tokens::tokens(&read.desired);
        let merchant = target.family.merchant.to_string();
        let token = match tokens.get(&merchant) {
            Some(Ok(t)) => t.clone(),
            Some(Err(e)) => bail!("{e}"),
            None => None,
        };
        let reader = super::gateway::governed(
            &read.settings,
            &read.desired,
            &req.options,
            progress.clone(),
        )
        .await?;
        let gateway = reader.provider.gateway.clone();
        let before = gateway.stats();
        let issued = issue::Cards {
            gateway: gateway.clone(),
            ledger: ledger.clone(),
            scope: Scope::merchant(&merchant, token.as_ref()),
            target: target.clone(),
            template_ids: ids,
            dry_run: req.dry_run,
            parallelism: req.options.parallelism,
            points_message,
        }
        .run(
            &req.csv,
            rows,
            checked,
            results,
            &mut counts,
            started,
            progress,
        )
        .await?;
        ledger.flush()?;
        let stats = gateway.stats().since(&before);
        reader.conn.close().await;
        Ok(Report {
            purpose: job.name(),
            template: target.family.to_string(),
            counts,
            problems: issued.problems,
            merchant_blocked: issued.merchant_blocked,
            elapsed_ms: started.elapsed().as_millis() as u64,
            calls: stats.calls,
            throttled: stats.throttled.values().map(|t| t.answers).sum(),
        })
    }
}

/// One card, as `cards query` and `cards delete` name it.
pub struct One {
    pub common: Common,
    pub template: Address,
    pub external_card_no: String,
}

async fn one_card(
    one: &One,
    flags: &Overrides,
    operation: &str,
) -> Result<(super::gateway::Reader, Arc<dyn CardLedger>, Scope, Entry)> {
    let read = project::read(&one.common, flags, operation)?;
    let target = Target::resolve(&read.desired, &one.template).map_err(anyhow::Error::msg)?;
    let ledger = open_ledger(&read.settings.state, operation, one.common.lock_timeout)?;
    let osn = cards::out_serial_no(&target.family, &one.external_card_no);
    // A card `cards serve` opened for a member without a card of their own
    // carries its serial number, upper-cased, as its card number.
    let activation = one.external_card_no.to_ascii_lowercase();
    let found = match ledger.get(&osn)? {
        Some(e) => Some(e),
        None if activation.starts_with("ca") => ledger.get(&activation)?,
        None => None,
    };
    let Some(entry) = found else {
        bail!(
            "cardform opened no card `{}` on `{}`\nhint: `cardform cards open` records the cards it opens; a card opened elsewhere is queried with `cardform api alipay.marketing.card.query`",
            one.external_card_no,
            target.family
        );
    };
    let merchant = target.family.merchant.to_string();
    let token = match super::tokens::tokens(&read.desired).remove(&merchant) {
        Some(Ok(t)) => t,
        Some(Err(e)) => bail!("{e}"),
        None => None,
    };
    let reader = super::gateway::governed(
        &read.settings,
        &read.desired,
        &crate::apply::Options::default(),
        Arc::new(crate::gateway::governor::Silent),
    )
    .await?;
    Ok((
        reader,
        ledger,
        Scope::merchant(&merchant, token.as_ref()),
        entry,
    ))
}

/// `cards query`: the card as Alipay holds it.
pub async fn query(one: One, flags: &Overrides) -> Result<serde_json::Value> {
    let (reader, _ledger, scope, entry) = one_card(&one, flags, "cards query").await?;
    let Some(biz) = entry.biz_card_no.clone() else {
        reader.conn.close().await;
        bail!(
            "the card's opening is unfinished: run `cardform cards open` with its row again first"
        );
    };
    let answer = reader
        .provider
        .gateway
        .call(
            &scope,
            &CardQueryRequest {
                target_card_no_type: "BIZ_CARD".into(),
                target_card_no: biz,
                card_user_info: None,
                ext_info: None,
                template_id: None,
            },
        )
        .await;
    reader.conn.close().await;
    let card = answer?;
    Ok(serde_json::json!({
        "template": entry.template,
        "template_id": entry.template_id,
        "out_serial_no": entry.out_serial_no,
        "opened_at": entry.opened_at,
        "synced_at": entry.synced_at,
        "card_info": card.card_info,
        "schema_url": card.schema_url,
    }))
}

/// `cards delete`: delete the card at Alipay (idempotent: its own serial
/// number is derived from the card's) and mark it deleted.
pub async fn delete(one: One, reason: &str, flags: &Overrides) -> Result<String> {
    let (reader, ledger, scope, mut entry) = one_card(&one, flags, "cards delete").await?;
    let Some(biz) = entry.biz_card_no.clone() else {
        reader.conn.close().await;
        bail!(
            "the card's opening is unfinished: run `cardform cards open` with its row again first"
        );
    };
    if entry.deleted_at.is_some() {
        reader.conn.close().await;
        return Ok(biz);
    }
    let answer = reader
        .provider
        .gateway
        .call(
            &scope,
            &CardDeleteRequest {
                out_serial_no: format!("cd{}", &entry.out_serial_no[2..]),
                target_card_no: biz.clone(),
                target_card_no_type: "BIZ_CARD".into(),
                reason_code: reason.to_string(),
                ext_info: None,
            },
        )
        .await;
    reader.conn.close().await;
    answer?;
    entry.deleted_at = Some(crate::state::now_rfc3339());
    ledger.put(&entry, Durability::Flushed)?;
    Ok(biz)
}
