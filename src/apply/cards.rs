//! The card executor: members' cards issued row by row (`cards open`,
//! `cards sync`), journalled in the card ledger so that a re-run (after
//! kill -9 anywhere) opens no second card and loses no card number.
//!
//! A CSV is read twice, streamed: first every row is checked ([`check_all`]:
//! nothing is called while any row is unread), then the good rows are
//! issued with bounded concurrency through the governor (rate limits,
//! retries, merchant blocks) by [`Cards::issue`]. Bad rows are reported by
//! line and never stop the others.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;

use crate::alipay::GatewayError;
use crate::alipay::methods::{CardUpdateRequest, OauthTokenRequest};
use crate::cards::{self, MemberAuth, Purpose, Row, Target};
use crate::gateway::governor::{Governor, Observer};
use crate::gateway::{Scope, Typed};
use crate::model::Address;
use crate::state::Durability;
use crate::state::cards::{CardLedger, Entry};
use crate::util::secret::Secret;

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Opened {
        biz_card_no: String,
    },
    /// Opened by an earlier run from the same row.
    AlreadyOpen {
        biz_card_no: String,
    },
    Updated {
        biz_card_no: String,
    },
    Unchanged {
        biz_card_no: String,
    },
    /// `--dry-run`: what a run would do.
    WouldOpen,
    WouldUpdate {
        biz_card_no: String,
    },
    Failed {
        code: String,
        sub_code: String,
        message: String,
    },
    /// The row breaks a rule (checked before any call).
    Invalid {
        message: String,
    },
    /// Not tried: the merchant's authorisation is broken.
    NotAttempted {
        message: String,
    },
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Opened { .. } => "opened",
            Outcome::AlreadyOpen { .. } => "already_open",
            Outcome::Updated { .. } => "updated",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::WouldOpen => "would_open",
            Outcome::WouldUpdate { .. } => "would_update",
            Outcome::Failed { .. } => "failed",
            Outcome::Invalid { .. } => "invalid",
            Outcome::NotAttempted { .. } => "not_attempted",
        }
    }

    pub fn failed(&self) -> bool {
        matches!(
            self,
            Outcome::Failed { .. } | Outcome::Invalid { .. } | Outcome::NotAttempted { .. }
        )
    }

    fn biz_card_no(&self) -> &str {
        match self {
            Outcome::Opened { biz_card_no }
            | Outcome::AlreadyOpen { biz_card_no }
            | Outcome::Updated { biz_card_no }
            | Outcome::Unchanged { biz_card_no }
            | Outcome::WouldUpdate { biz_card_no } => biz_card_no,
            _ => "",
        }
    }

    fn local(message: impl Into<String>) -> Outcome {
        Outcome::Failed {
            code: String::new(),
            sub_code: String::new(),
            message: message.into(),
        }
    }
}

/// One row's result: named by its line and external card number only.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    pub line: u64,
    pub external_card_no: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Running totals, for progress and the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Rows in the file (known after the check).
    pub rows: u64,
    pub invalid: u64,
    /// Rows finished so far (of the valid ones).
    pub done: u64,
    pub opened: u64,
    pub already_open: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub would: u64,
    pub failed: u64,
    pub not_attempted: u64,
}

impl Counts {
    fn add(&mut self, o: &Outcome) {
        self.done += 1;
        match o {
            Outcome::Opened { .. } => self.opened += 1,
            Outcome::AlreadyOpen { .. } => self.already_open += 1,
            Outcome::Updated { .. } => self.updated += 1,
            Outcome::Unchanged { .. } => self.unchanged += 1,
            Outcome::WouldOpen | Outcome::WouldUpdate { .. } => self.would += 1,
            Outcome::Failed { .. } => self.failed += 1,
            Outcome::Invalid { .. } => self.done -= 1,
            Outcome::NotAttempted { .. } => self.not_attempted += 1,
        }
    }
}

/// Told as rows finish; also told about retries.
pub trait Progress: Observer {
    fn checked(&self, _counts: &Counts) {}
    fn row(&self, _counts: &Counts, _elapsed: Duration) {}
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub purpose: &'static str,
    pub template: String,
    pub counts: Counts,
    /// Rows that failed or were invalid (the first 1,000; all are in `--results`).
    pub problems: Vec<RowResult>,
    /// The merchant's authorisation broke: why, in words.
    pub merchant_blocked: Option<String>,
    pub elapsed_ms: u64,
    /// Gateway calls made (retries included).
    pub calls: u64,
    pub throttled: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.counts.invalid == 0 && self.counts.failed == 0 && self.counts.not_attempted == 0
    }
}

/// The first pass: every row checked. Lines of bad rows, with why.
pub struct Checked {
    header: Vec<String>,
    pub rows: u64,
    /// By line: the card number (if readable) and why.
    pub invalid: BTreeMap<u64, (String, String)>,
}

/// The longest line a cards CSV may have: a row is well under 2 KB, so
/// anything this long is not a cards file (and is never held in memory).
const MAX_LINE: usize = 64 * 1024;

/// A file read with every line bounded by [`MAX_LINE`].
struct Lines {
    file: std::fs::File,
    run: usize,
}

impl std::io::Read for Lines {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        for &b in &buf[..n] {
            self.run = if b == b'\n' { 0 } else { self.run + 1 };
            if self.run > MAX_LINE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a line longer than 64 KB",
                ));
            }
        }
        Ok(n)
    }
}

type Csv = csv::Reader<Lines>;

fn reader(path: &Path) -> Result<Csv> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot read the cards file `{}`", path.display()))?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        bail!("`{}` is not a regular file", path.display());
    }
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(Lines { file, run: 0 }))
}

fn header(path: &Path, r: &mut Csv, purpose: Purpose) -> Result<Vec<String>> {
    let header: Vec<String> = r
        .headers()
        .with_context(|| format!("{}:1: cannot read the header", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    cards::check_header(&header, purpose)
        .map_err(|e| anyhow::anyhow!("{}:1: {e}", path.display()))?;
    Ok(header)
}

/// A record's line and fields, or why it cannot be read (never its text).
fn record(
    item: Result<csv::StringRecord, csv::Error>,
) -> std::result::Result<(u64, csv::StringRecord), (u64, String)> {
    match item {
        Ok(r) => Ok((r.position().map_or(0, |p| p.line()), r)),
        Err(e) => {
            let line = e.position().map_or(0, |p| p.line());
            let why = match e.kind() {
                csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_string(),
                _ => "cannot be read as CSV".to_string(),
            };
            Err((line, why))
        }
    }
}

pub fn check_all(path: &Path, purpose: Purpose, target: &Target) -> Result<Checked> {
    let mut r = reader(path)?;
    let header = header(path, &mut r, purpose)?;
    let mut invalid = BTreeMap::new();
    let mut seen: HashMap<[u8; 16], u64> = HashMap::new();
    let mut rows = 0;
    let ext_col = header.iter().position(|h| h == "external_card_no");
    for item in r.records() {
        if let Err(e) = &item
            && let csv::ErrorKind::Io(io) = e.kind()
        {
            bail!(
                "{}:{}: {io}: not a cards file",
                path.display(),
                e.position().map_or(rows + 2, |p| p.line())
            );
        }
        rows += 1;
        let (line, rec) = match record(item) {
            Ok(v) => v,
            Err((line, why)) => {
                invalid.insert(line, (String::new(), format!("the row {why}")));
                continue;
            }
        };
        let ext = ext_col
            .and_then(|i| rec.get(i))
            .map(|s| s.trim().chars().take(64).collect())
            .unwrap_or_default();
        let fields: Vec<&str> = rec.iter().collect();
        let problem = match cards::parse_row(&header, &fields, line, purpose) {
            Err(errs) => Some(
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Ok(row) => match target.template_for(row.level.as_deref()) {
                Err(e) => Some(e.to_string()),
                Ok(_) => {
                    let key = ext_key(&row.external_card_no);
                    seen.insert(key, line).map(|first| {
                        format!("external card number also on line {first}: a card is opened once")
                    })
                }
            },
        };
        if let Some(p) = problem {
            invalid.insert(line, (ext, p));
        }
    }
    Ok(Checked {
        header,
        rows,
        invalid,
    })
}

fn ext_key(ext: &str) -> [u8; 16] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(ext.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&h[..16]);
    k
}

/// Everything a row's issue needs, shared by the in-flight rows.
struct Ctx {
    gateway: Arc<Governor>,
    ledger: Arc<dyn CardLedger>,
    scope: Scope,
    target: Target,
    template_ids: BTreeMap<Address, String>,
    salt: [u8; 32],
    dry_run: bool,
    blocked: OnceLock<String>,
}

/// The gateway's words for a failure, with the row's personal values and
/// secrets taken out (a gateway may echo what it was sent).
fn failure(e: &GatewayError, row: &Row) -> Outcome {
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(u) = &row.user {
        secrets.extend(u.user_uni_id.as_deref());
        secrets.extend(u.open_id.as_deref());
    }
    if let Some(m) = &row.member {
        secrets.extend(
            [&m.name, &m.cell, &m.birth]
                .into_iter()
                .filter_map(|v| v.as_deref()),
        );
    }
    if let Some(MemberAuth::Token(t) | MemberAuth::Refresh(t)) = &row.auth {
        secrets.push(t.expose());
    }
    let redact = |s: &str| {
        let mut s = s.to_string();
        for v in secrets.iter().filter(|v| v.len() >= 2) {
            s = s.replace(v, "<redacted>");
        }
        s
    };
    match e.api() {
        Some(a) => Outcome::Failed {
            code: a.code.clone(),
            sub_code: a.sub_code.clone().unwrap_or_default(),
            message: redact(a.sub_msg.as_deref().unwrap_or(&a.msg)),
        },
        None => Outcome::local(redact(&e.to_string())),
    }
}

impl Ctx {
    fn block(&self, e: &GatewayError) {
        if let Some(b) = e.api().and_then(|a| a.merchant_block()) {
            let _ = self.blocked.set(b.hint(&self.scope.merchant));
        }
    }

    async fn member_token(&self, row: &Row) -> std::result::Result<Secret, Outcome> {
        match &row.auth {
            Some(MemberAuth::Token(t)) => Ok(t.clone()),
            Some(MemberAuth::Refresh(r)) => self
                .gateway
                .call(&self.scope, &OauthTokenRequest::refresh(r))
                .await
                .map(|t| Secret::new(t.access_token))
                .map_err(|e| {
                    self.block(&e);
                    failure(&e, row)
                }),
            None => Err(Outcome::local("the row has no auth_token or refresh_token")),
        }
    }

    fn entry(&self, osn: &str) -> std::result::Result<Option<Entry>, Outcome> {
        self.ledger
            .get(osn)
            .map_err(|e| Outcome::local(format!("the card ledger: {e}")))
    }

    async fn open(&self, row: &Row, tier: &Address) -> Outcome {
        if let Some(why) = self.blocked.get() {
            return Outcome::NotAttempted {
                message: why.clone(),
            };
        }
        let osn = cards::out_serial_no(&self.target.family, &row.external_card_no);
        let digest = row.open_digest(&self.salt);
        let known = match self.entry(&osn) {
            Ok(e) => e,
            Err(o) => return o,
        };
        if let Some(e) = &known {
            if e.deleted_at.is_some() {
                return Outcome::local(
                    "this card was deleted (`cards delete`); a new card needs a new external card number",
                );
            }
            if e.row_digest.as_deref() != Some(digest.as_str()) {
                return Outcome::local(if e.biz_card_no.is_some() {
                    "a card was opened from this external card number with other values; change an open card with `cardform cards sync`"
                } else {
                    "an earlier run opened (or may have opened) this card with other values: restore the row as it was, run again, then change the card with `cardform cards sync`"
                });
            }
            if let Some(biz) = &e.biz_card_no {
                return Outcome::AlreadyOpen {
                    biz_card_no: biz.clone(),
                };
            }
        }
        if self.dry_run {
            return Outcome::WouldOpen;
        }
        let template_id = &self.template_ids[tier];
        let now = crate::state::now_rfc3339();
        let mut entry = known.clone().unwrap_or_else(|| Entry {
            out_serial_no: osn.clone(),
            template: tier.clone(),
            template_id: template_id.clone(),
            row_digest: Some(digest.clone()),
            request_id: None,
            journalled_at: now.clone(),
            biz_card_no: None,
            opened_at: None,
            synced_digest: None,
            synced_at: None,
            deleted_at: None,
        });
        // Journalled before the call (a re-run derives the same out_serial_no
        // anyway; the journal keeps the row's digest, so that a changed row
        // is never sent under a serial number already used).
        if known.is_none()
            && let Err(e) = self.ledger.put(&entry, Durability::Deferred)
        {
            return Outcome::local(format!("the card ledger: {e}"));
        }
        let token = match self.member_token(row).await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let req = crate::provider::card::open_request(row, &osn, &entry.template_id);
        match self.gateway.call_as(&self.scope, &token, &req).await {
            Ok(resp) => {
                let biz = resp.card_info.biz_card_no.unwrap_or_default();
                entry.biz_card_no = Some(biz.clone());
                entry.opened_at = Some(crate::state::now_rfc3339());
                entry.synced_digest = Some(row.sync_digest(&self.salt));
                entry.synced_at = entry.opened_at.clone();
                // Deferred: were it lost, a re-run replays the open under the
                // same out_serial_no and Alipay answers with the same card.
                if let Err(e) = self.ledger.put(&entry, Durability::Deferred) {
                    return Outcome::local(format!(
                        "card {biz} opened, but the card ledger failed: {e}; run again to record it"
                    ));
                }
                Outcome::Opened { biz_card_no: biz }
            }
            Err(e) => {
                self.block(&e);
                if known.is_none() && !e.in_doubt() {
                    // Alipay said no: nothing was opened, and a corrected
                    // row is welcome next time.
                    let _ = self.ledger.forget(&osn);
                }
                failure(&e, row)
            }
        }
    }

    async fn sync(&self, row: &Row, tier: &Address) -> Outcome {
        if let Some(why) = self.blocked.get() {
            return Outcome::NotAttempted {
                message: why.clone(),
            };
        }
        let osn = cards::out_serial_no(&self.target.family, &row.external_card_no);
        let Some(mut entry) = (match self.entry(&osn) {
            Ok(e) => e,
            Err(o) => return o,
        }) else {
            return Outcome::local(
                "cardform opened no card for this external card number (`cardform cards open` first)",
            );
        };
        let Some(biz) = entry.biz_card_no.clone() else {
            return Outcome::local(
                "the card's opening is unfinished: run `cardform cards open` with its row again first",
            );
        };
        if entry.deleted_at.is_some() {
            return Outcome::local("this card was deleted (`cards delete`)");
        }
        let digest = row.sync_digest(&self.salt);
        let moved = &entry.template != tier;
        if entry.synced_digest.as_deref() == Some(digest.as_str()) && !moved {
            return Outcome::Unchanged { biz_card_no: biz };
        }
        if self.dry_run {
            return Outcome::WouldUpdate { biz_card_no: biz };
        }
        let template_id = &self.template_ids[tier];
        let req = CardUpdateRequest {
            target_card_no: biz.clone(),
            target_card_no_type: "BIZ_CARD".into(),
            occur_time: chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string(),
            // A level that moves the card to a tier of its own carries that
            // tier's template (seed 004).
            card_info: crate::provider::card::update_values(
                row,
                moved.then_some(template_id.as_str()),
            ),
            ext_info: None,
            merchant_card_msg_info: None,
        };
        match self.gateway.call(&self.scope, &req).await {
            Ok(_) => {
                entry.synced_digest = Some(digest);
                entry.synced_at = Some(crate::state::now_rfc3339());
                entry.template = tier.clone();
                entry.template_id = template_id.clone();
                // Deferred: lost, the next sync sends the same values again.
                if let Err(e) = self.ledger.put(&entry, Durability::Deferred) {
                    return Outcome::local(format!(
                        "card {biz} updated, but the card ledger failed: {e}"
                    ));
                }
                Outcome::Updated { biz_card_no: biz }
            }
            Err(e) => {
                self.block(&e);
                failure(&e, row)
            }
        }
    }
}

/// What the card executor is handed: the governed gateway, the ledger, who
/// the calls are for, the target's tiers and their template ids.
pub struct Cards {
    pub gateway: Arc<Governor>,
    pub ledger: Arc<dyn CardLedger>,
    pub scope: Scope,
    pub target: Target,
    pub template_ids: BTreeMap<Address, String>,
    pub dry_run: bool,
    pub parallelism: usize,
}

/// What a run of the executor leaves besides its counts.
pub struct Issued {
    /// Rows that failed or were invalid (the first 1,000, by line).
    pub problems: Vec<RowResult>,
    /// The merchant's authorisation broke: why, in words.
    pub merchant_blocked: Option<String>,
}

/// The results file (`--results`), with its header written.
pub fn results_file(p: &Path) -> Result<csv::Writer<std::fs::File>> {
    let mut w = csv::Writer::from_path(p)
        .with_context(|| format!("cannot write the results file `{}`", p.display()))?;
    w.write_record([
        "line",
        "external_card_no",
        "outcome",
        "biz_card_no",
        "code",
        "sub_code",
        "message",
    ])?;
    Ok(w)
}

impl Cards {
    /// Issue the checked rows of `csv`: the invalid ones reported first, by
    /// line; the good ones read again, streamed, with at most twice the
    /// parallelism under way.
    #[allow(clippy::too_many_arguments)]
    pub async fn issue(
        self,
        csv: &Path,
        purpose: Purpose,
        checked: Checked,
        mut results: Option<csv::Writer<std::fs::File>>,
        counts: &mut Counts,
        started: Instant,
        progress: Arc<dyn Progress>,
    ) -> Result<Issued> {
        let salt = self.ledger.salt();
        let target = self.target.clone();
        let ctx = Arc::new(Ctx {
            gateway: self.gateway,
            ledger: self.ledger,
            scope: self.scope,
            target: self.target,
            template_ids: self.template_ids,
            salt,
            dry_run: self.dry_run,
            blocked: OnceLock::new(),
        });
        let problems = Arc::new(Mutex::new(Vec::new()));
        let mut record_result = |r: RowResult, counts: &mut Counts| -> Result<()> {
            counts.add(&r.outcome);
            if let Some(w) = results.as_mut() {
                let (code, sub, msg) = match &r.outcome {
                    Outcome::Failed {
                        code,
                        sub_code,
                        message,
                    } => (code.as_str(), sub_code.as_str(), message.as_str()),
                    Outcome::Invalid { message } | Outcome::NotAttempted { message } => {
                        ("", "", message.as_str())
                    }
                    _ => ("", "", ""),
                };
                w.write_record([
                    r.line.to_string().as_str(),
                    &r.external_card_no,
                    r.outcome.as_str(),
                    r.outcome.biz_card_no(),
                    code,
                    sub,
                    msg,
                ])?;
            }
            if r.outcome.failed() {
                let mut p = problems.lock().expect("not poisoned");
                if p.len() < 1000 {
                    p.push(r);
                }
            }
            Ok(())
        };
        // The invalid rows are reported first, by line.
        for (line, (ext, why)) in &checked.invalid {
            record_result(
                RowResult {
                    line: *line,
                    external_card_no: ext.clone(),
                    outcome: Outcome::Invalid {
                        message: why.clone(),
                    },
                },
                counts,
            )?;
        }
        let parallelism = self.parallelism.max(1) * 2;
        let mut in_flight = FuturesUnordered::new();
        let mut r = reader_at(csv, purpose)?;
        let header = checked.header.clone();
        for item in r.records() {
            if let Err(e) = &item
                && let csv::ErrorKind::Io(io) = e.kind()
            {
                bail!(
                    "{}: {io} (the file changed while it was read)",
                    csv.display()
                );
            }
            let Ok((line, rec)) = record(item) else {
                continue;
            };
            if checked.invalid.contains_key(&line) {
                continue;
            }
            let fields: Vec<&str> = rec.iter().collect();
            // Checked in the first pass; a file changed since is caught here.
            let row = match cards::parse_row(&header, &fields, line, purpose) {
                Ok(row) => row,
                Err(_) => {
                    record_result(
                        RowResult {
                            line,
                            external_card_no: String::new(),
                            outcome: Outcome::Invalid {
                                message: "the row changed since it was checked".into(),
                            },
                        },
                        counts,
                    )?;
                    continue;
                }
            };
            let Ok(tier) = target.template_for(row.level.as_deref()).cloned() else {
                continue;
            };
            while in_flight.len() >= parallelism {
                if let Some(done) = in_flight.next().await {
                    record_result(done, counts)?;
                    progress.row(counts, started.elapsed());
                }
            }
            let ctx = ctx.clone();
            in_flight.push(async move {
                let outcome = match purpose {
                    Purpose::Open => ctx.open(&row, &tier).await,
                    Purpose::Sync => ctx.sync(&row, &tier).await,
                };
                RowResult {
                    line: row.line,
                    external_card_no: row.external_card_no.clone(),
                    outcome,
                }
            });
        }
        while let Some(done) = in_flight.next().await {
            record_result(done, counts)?;
            progress.row(counts, started.elapsed());
        }
        if let Some(mut w) = results.take() {
            w.flush()?;
        }
        let merchant_blocked = ctx.blocked.get().cloned();
        let mut problems = std::mem::take(&mut *problems.lock().expect("not poisoned"));
        problems.sort_by_key(|r| r.line);
        Ok(Issued {
            problems,
            merchant_blocked,
        })
    }
}

fn reader_at(path: &Path, purpose: Purpose) -> Result<Csv> {
    let mut r = reader(path)?;
    header(path, &mut r, purpose)?;
    Ok(r)
}
