//! `cardform cards`: issue members' cards (open, sync, query, delete, and the
//! activation callback service) and run them (consume: trades; notify:
//! reminders).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use super::Outcome;
use super::plan::ProjectArgs;
use crate::model::Address;
use crate::ops;
use crate::ops::cards::Job;
use crate::render;
use crate::settings::Overrides;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Open a card for each CSV row (members whose authorisation you hold); re-runs open nothing twice
    Open(BatchArgs),
    /// card.update for each CSV row whose point, balance, level or front text changed since last synced
    Sync(BatchArgs),
    /// A trade on a member's card for each CSV row (consume.sync: the card's history in the wallet); each trade once, ever
    Consume(BatchArgs),
    /// A points-expiry reminder for each CSV row (message.notify, POINT_REMIND); each reminder once, ever
    Notify(BatchArgs),
    /// One card as Alipay holds it
    Query(OneArgs),
    /// Delete one card at Alipay
    Delete(DeleteArgs),
    /// Serve the activation callback: members who activate get their card
    Serve(super::cards_serve::Args),
}

#[derive(Debug, clap::Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The template (`merchant.brew/template.club`; a tiered one's rows pick their tier by `level`)
    #[arg(long, value_name = "ADDRESS")]
    pub template: Address,
    /// The rows. open/sync: external_card_no, user_id|open_id, auth_token|refresh_token, open_date, valid_date, level, point, balance, front_label_N/front_value_N, name, gender, birth, cell, channel. consume: external_card_no|biz_card_no, trade_no, trade_type, trade_time, trade_name, trade_amount, act_pay_amount, point, balance, level, shop_code, memo, swipe_cert_type, use_benefit_*/gain_benefit_* (type, amount, count, description). notify: external_card_no|biz_card_no, expired_point, expired_time
    #[arg(long, value_name = "FILE")]
    pub csv: PathBuf,
    /// Write every row's result here (line, external_card_no, outcome, biz_card_no, code, sub_code, message)
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Check every row and say what would happen; call nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Gateway calls in flight at once
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    #[command(flatten)]
    pub format: super::FormatArg,
}

#[derive(Debug, clap::Args)]
pub struct OneArgs {
    #[command(flatten)]
    pub project: ProjectArgs,
    /// The template the card is on (`merchant.brew/template.club`, or one of its tiers)
    #[arg(long, value_name = "ADDRESS")]
    pub template: Address,
    /// The card's external card number (as its row gave it)
    #[arg(long = "card", value_name = "EXTERNAL_CARD_NO")]
    pub external_card_no: String,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub one: OneArgs,
    /// Why: CANCEL (the member cancelled) or USER_UNBUND
    #[arg(long, default_value = "CANCEL", value_parser = ["CANCEL", "USER_UNBUND"])]
    pub reason: String,
}

pub async fn exec(cmd: Command, flags: &Overrides) -> Outcome {
    match cmd {
        Command::Open(a) => batch(a, Job::Open, flags).await,
        Command::Sync(a) => batch(a, Job::Sync, flags).await,
        Command::Consume(a) => batch(a, Job::Consume, flags).await,
        Command::Notify(a) => batch(a, Job::Notify, flags).await,
        Command::Query(a) => {
            let card = ops::cards::query(one(a), flags).await?;
            render::json(&card);
            Ok(ExitCode::SUCCESS)
        }
        Command::Delete(a) => {
            let biz = ops::cards::delete(one(a.one), &a.reason, flags).await?;
            render::line(&format!("card {biz} deleted"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => super::cards_serve::exec(a, flags).await,
    }
}

fn one(a: OneArgs) -> ops::cards::One {
    ops::cards::One {
        common: a.project.common(None),
        template: a.template,
        external_card_no: a.external_card_no,
    }
}

async fn batch(a: BatchArgs, job: Job, flags: &Overrides) -> Outcome {
    let what = job.name();
    let json = a.format.get(
        &format!("cards {what}"),
        &[super::Format::Human, super::Format::Json],
    )? == super::Format::Json;
    let progress = Arc::new(render::cards::Bar::new(what));
    let report = ops::cards::batch(
        ops::cards::Batch {
            common: a.project.common(None),
            template: a.template,
            csv: a.csv.clone(),
            results: a.results.clone(),
            dry_run: a.dry_run,
            options: crate::apply::Options {
                parallelism: a.parallelism.max(1),
                ..Default::default()
            },
        },
        job,
        flags,
        progress.clone(),
    )
    .await;
    drop(progress);
    let report = report?;
    if json {
        render::json(&report);
    } else {
        render::text(&render::cards::report(
            &report,
            &a.csv,
            a.results.as_deref(),
        ));
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
