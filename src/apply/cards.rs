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
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;

use crate::alipay::GatewayError;
use crate::alipay::methods::{
    ApiRequest, CardQueryRequest, CardUpdateRequest, MerchantCardMsgInfo, OauthTokenRequest,
};
use crate::cards::trade::{self, CardRef, Reminder, Trade};
use crate::cards::{self, MemberAuth, Purpose, Row, Target};
use crate::gateway::governor::{Governor, Observer};
use crate::gateway::{Scope, Typed};
use crate::model::Address;
use crate::state::Durability;
use crate::state::cards::{CardLedger, Entry, Once};
use crate::util::secret::Secret;

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Opened {
        biz_card_no: String,
    },
    /// Opened by an earlier run (`changed`: from a row with other values
    /// than this one's: `cards sync` brings the card up to date).
    AlreadyOpen {
        biz_card_no: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        changed: bool,
    },
    Updated {
        biz_card_no: String,
    },
    Unchanged {
        biz_card_no: String,
    },
    /// A trade Alipay accepted (`cards consume`).
    Synced {
        biz_card_no: String,
    },
    /// Synced by an earlier run (or an earlier request from the till).
    AlreadySynced {
        biz_card_no: String,
    },
    /// A reminder Alipay accepted (`cards notify`).
    Notified {
        biz_card_no: String,
    },
    AlreadyNotified {
        biz_card_no: String,
    },
    /// `--dry-run`: what a run would do.
    WouldOpen,
    WouldUpdate {
        biz_card_no: String,
    },
    WouldSync {
        biz_card_no: String,
    },
    WouldNotify {
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
            Outcome::Synced { .. } => "synced",
            Outcome::AlreadySynced { .. } => "already_synced",
            Outcome::Notified { .. } => "notified",
            Outcome::AlreadyNotified { .. } => "already_notified",
            Outcome::WouldOpen => "would_open",
            Outcome::WouldUpdate { .. } => "would_update",
            Outcome::WouldSync { .. } => "would_sync",
            Outcome::WouldNotify { .. } => "would_notify",
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
            | Outcome::AlreadyOpen { biz_card_no, .. }
            | Outcome::Updated { biz_card_no }
            | Outcome::Unchanged { biz_card_no }
            | Outcome::Synced { biz_card_no }
            | Outcome::AlreadySynced { biz_card_no }
            | Outcome::Notified { biz_card_no }
            | Outcome::AlreadyNotified { biz_card_no }
            | Outcome::WouldUpdate { biz_card_no }
            | Outcome::WouldSync { biz_card_no }
            | Outcome::WouldNotify { biz_card_no } => biz_card_no,
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
    /// Of those, opened from rows with other values (a sync updates them).
    pub open_changed: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub synced: u64,
    pub already_synced: u64,
    pub notified: u64,
    pub already_notified: u64,
    pub would: u64,
    pub failed: u64,
    pub not_attempted: u64,
}

impl Counts {
    fn add(&mut self, o: &Outcome) {
        self.done += 1;
        match o {
            Outcome::Opened { .. } => self.opened += 1,
            Outcome::AlreadyOpen { changed, .. } => {
                self.already_open += 1;
                self.open_changed += u64::from(*changed);
            }
            Outcome::Updated { .. } => self.updated += 1,
            Outcome::Unchanged { .. } => self.unchanged += 1,
            Outcome::Synced { .. } => self.synced += 1,
            Outcome::AlreadySynced { .. } => self.already_synced += 1,
            Outcome::Notified { .. } => self.notified += 1,
            Outcome::AlreadyNotified { .. } => self.already_notified += 1,
            Outcome::WouldOpen
            | Outcome::WouldUpdate { .. }
            | Outcome::WouldSync { .. }
            | Outcome::WouldNotify { .. } => self.would += 1,
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

/// The first pass: every row checked, in memory that does not grow with
/// the file's bytes: the lines of bad rows one bit each (the second pass
/// says why again), repeated rows found through an index on disk.
pub struct Checked {
    header: Vec<String>,
    pub rows: u64,
    /// How many rows are invalid.
    pub invalid: u64,
    bad: LineSet,
    /// A repeated row's line -> the line it repeats (the first
    /// [`REPEATS_KEPT`]; later ones are said to repeat "an earlier line").
    repeats: HashMap<u64, u64>,
}

/// Repeated rows whose first line is kept for the message.
const REPEATS_KEPT: usize = 10_000;

/// A set of line numbers, a bit each.
#[derive(Default)]
struct LineSet(Vec<u64>);

impl LineSet {
    fn insert(&mut self, line: u64) -> bool {
        let (word, bit) = ((line / 64) as usize, line % 64);
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        fresh
    }

    fn contains(&self, line: u64) -> bool {
        self.0
            .get((line / 64) as usize)
            .is_some_and(|w| w & (1 << (line % 64)) != 0)
    }
}

/// Partitions of the on-disk index of row keys.
const PARTS: usize = 64;

/// The rows' unique keys, by partition, on disk (16 bytes of key and 8 of
/// line each): every repeat found with one partition in memory at a time.
struct KeyIndex {
    _dir: tempfile::TempDir,
    files: Vec<std::io::BufWriter<std::fs::File>>,
    paths: Vec<std::path::PathBuf>,
}

impl KeyIndex {
    fn new() -> Result<Self> {
        let dir =
            tempfile::tempdir().context("cannot make a temporary directory for the rows' index")?;
        let mut files = Vec::with_capacity(PARTS);
        let mut paths = Vec::with_capacity(PARTS);
        for i in 0..PARTS {
            let p = dir.path().join(format!("keys-{i:02}"));
            files.push(std::io::BufWriter::with_capacity(
                8 * 1024,
                std::fs::File::create(&p)?,
            ));
            paths.push(p);
        }
        Ok(KeyIndex {
            _dir: dir,
            files,
            paths,
        })
    }

    fn add(&mut self, key: [u8; 16], line: u64) -> Result<()> {
        use std::io::Write;
        let f = &mut self.files[key[0] as usize % PARTS];
        f.write_all(&key)?;
        f.write_all(&line.to_le_bytes())?;
        Ok(())
    }

    /// Each repeated key's later lines, with the first line of that key: a
    /// partition at a time, streamed (its lines are in file order), holding
    /// its distinct keys only.
    fn repeats(self, mut found: impl FnMut(u64, u64)) -> Result<()> {
        use std::io::Read;
        for f in self.files {
            f.into_inner().map_err(|e| e.into_error())?;
        }
        for p in &self.paths {
            let mut r = std::io::BufReader::with_capacity(64 * 1024, std::fs::File::open(p)?);
            let mut first: HashMap<[u8; 16], u64> = HashMap::new();
            let mut entry = [0u8; 24];
            loop {
                match r.read_exact(&mut entry) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e.into()),
                }
                let mut key = [0u8; 16];
                key.copy_from_slice(&entry[..16]);
                let line = u64::from_le_bytes(entry[16..].try_into().expect("8 bytes"));
                match first.get(&key) {
                    Some(&f) => found(line, f),
                    None => {
                        first.insert(key, line);
                    }
                }
            }
        }
        Ok(())
    }
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

fn header<R: Rows>(path: &Path, r: &mut Csv, rows: &R) -> Result<Vec<String>> {
    let header: Vec<String> = r
        .headers()
        .with_context(|| format!("{}:1: cannot read the header", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    rows.check_header(&header)
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

/// A kind of cards file: its header, its rows, what no two rows may share,
/// and the work one row is (`cards open`, `sync`, `consume`, `notify`).
pub trait Rows: Send + Sync + 'static {
    type Row: Send + 'static;
    fn check_header(&self, header: &[String]) -> Result<(), String>;
    /// A checked row, or every problem it has (columns named, never values).
    fn parse(&self, header: &[String], fields: &[&str], line: u64) -> Result<Self::Row, String>;
    /// What no two rows may share (hashed), and the words when two do:
    /// "<what> also on line N: <why>".
    fn unique(&self, row: &Self::Row) -> (String, &'static str, &'static str);
    /// The card a row is named by in results (a card number only).
    fn shown(&self, row: &Self::Row) -> String;
    fn line(&self, row: &Self::Row) -> u64;
    /// The row's work.
    fn work(&self, ctx: Arc<Ctx>, row: Self::Row) -> BoxFuture<'static, Outcome>;
}

/// Every row checked, streamed (no call is made while any row is unread).
pub fn check_all<R: Rows>(path: &Path, rows: &R) -> Result<Checked> {
    let mut r = reader(path)?;
    let header = header(path, &mut r, rows)?;
    let mut bad = LineSet::default();
    let mut invalid = 0u64;
    let mut index = KeyIndex::new()?;
    let mut count = 0;
    for item in r.records() {
        if let Err(e) = &item
            && let csv::ErrorKind::Io(io) = e.kind()
        {
            bail!(
                "{}:{}: {io}: not a cards file",
                path.display(),
                e.position().map_or(count + 2, |p| p.line())
            );
        }
        count += 1;
        let (line, rec) = match record(item) {
            Ok(v) => v,
            Err((line, _)) => {
                invalid += u64::from(bad.insert(line));
                continue;
            }
        };
        let fields: Vec<&str> = rec.iter().collect();
        match rows.parse(&header, &fields, line) {
            Err(_) => invalid += u64::from(bad.insert(line)),
            Ok(row) => index.add(ext_key(&rows.unique(&row).0), line)?,
        }
    }
    let mut repeats = HashMap::new();
    index.repeats(|line, first| {
        if bad.insert(line) {
            invalid += 1;
        }
        if repeats.len() < REPEATS_KEPT {
            repeats.insert(line, first);
        }
    })?;
    Ok(Checked {
        header,
        rows: count,
        invalid,
        bad,
        repeats,
    })
}

/// What a cards file's row is named by in results: its card number, when
/// the row has the header's shape (a row of the wrong shape is named by its
/// line only: what sits in the card number's place may be anything, a
/// token or a phone number).
fn shown_of(header: &[String], rec: &csv::StringRecord) -> String {
    header
        .iter()
        .position(|h| h == "external_card_no" || h == "biz_card_no")
        .filter(|_| rec.len() == header.len())
        .and_then(|i| rec.get(i))
        .map(|s| s.trim().chars().take(64).collect())
        .unwrap_or_default()
}

/// Cards opened or synced from members' rows, on a template's tiers.
pub struct Members {
    pub purpose: Purpose,
    pub target: Target,
}

impl Rows for Members {
    type Row = (Row, Address);

    fn check_header(&self, header: &[String]) -> Result<(), String> {
        cards::check_header(header, self.purpose)
    }

    fn parse(&self, header: &[String], fields: &[&str], line: u64) -> Result<Self::Row, String> {
        let row = cards::parse_row(header, fields, line, self.purpose).map_err(joined)?;
        let tier = self
            .target
            .template_for(row.level.as_deref())
            .map_err(|e| e.to_string())?
            .clone();
        Ok((row, tier))
    }

    fn unique(&self, (row, _): &Self::Row) -> (String, &'static str, &'static str) {
        (
            row.external_card_no.clone(),
            "external card number",
            "a card is opened once",
        )
    }

    fn shown(&self, (row, _): &Self::Row) -> String {
        row.external_card_no.clone()
    }

    fn line(&self, (row, _): &Self::Row) -> u64 {
        row.line
    }

    fn work(&self, ctx: Arc<Ctx>, (row, tier): Self::Row) -> BoxFuture<'static, Outcome> {
        let purpose = self.purpose;
        Box::pin(async move {
            match purpose {
                Purpose::Open => ctx.open(&row, &tier).await,
                Purpose::Sync => ctx.sync(&row, &tier).await,
            }
        })
    }
}

/// Trades at the till (`cards consume`): consume.sync once per trade.
pub struct Trades {
    pub target: Target,
}

fn joined(errs: Vec<cards::RowError>) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn card_shown(c: &CardRef) -> String {
    c.shown().to_string()
}

impl Rows for Trades {
    type Row = Trade;

    fn check_header(&self, header: &[String]) -> Result<(), String> {
        trade::check_trade_header(header)
    }

    fn parse(&self, header: &[String], fields: &[&str], line: u64) -> Result<Trade, String> {
        let t = trade::parse_trade(header, fields, line).map_err(joined)?;
        if t.level.is_some() {
            self.target
                .template_for(t.level.as_deref())
                .map_err(|e| e.to_string())?;
        }
        Ok(t)
    }

    fn unique(&self, t: &Trade) -> (String, &'static str, &'static str) {
        (
            format!("{}\0{}", t.card.shown(), t.trade_no),
            "the same card and trade_no",
            "a trade is synced once",
        )
    }

    fn shown(&self, t: &Trade) -> String {
        card_shown(&t.card)
    }

    fn line(&self, t: &Trade) -> u64 {
        t.line
    }

    fn work(&self, ctx: Arc<Ctx>, t: Trade) -> BoxFuture<'static, Outcome> {
        Box::pin(async move { ctx.consume(&t).await })
    }
}

/// Points-expiry reminders (`cards notify`): message.notify once each.
pub struct Reminders;

impl Rows for Reminders {
    type Row = Reminder;

    fn check_header(&self, header: &[String]) -> Result<(), String> {
        trade::check_reminder_header(header)
    }

    fn parse(&self, header: &[String], fields: &[&str], line: u64) -> Result<Reminder, String> {
        trade::parse_reminder(header, fields, line).map_err(joined)
    }

    fn unique(&self, r: &Reminder) -> (String, &'static str, &'static str) {
        (
            format!(
                "{}\0{}\0{}",
                r.card.shown(),
                r.expired_point,
                r.expired_time
            ),
            "the same reminder",
            "a reminder is sent once",
        )
    }

    fn shown(&self, r: &Reminder) -> String {
        card_shown(&r.card)
    }

    fn line(&self, r: &Reminder) -> u64 {
        r.line
    }

    fn work(&self, ctx: Arc<Ctx>, r: Reminder) -> BoxFuture<'static, Outcome> {
        Box::pin(async move { ctx.notify(&r).await })
    }
}

fn ext_key(ext: &str) -> [u8; 16] {
    use sha2::Digest;
    let h = sha2::Sha256::digest(ext.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&h[..16]);
    k
}

/// A claim older than this is a process's that died: another takes it over.
pub const CLAIM_STALE: Duration = Duration::from_secs(15);
/// How long work waits for another process's on the same key.
pub const CLAIM_WAIT: Duration = Duration::from_secs(25);

/// Why no claim was had.
pub enum Waited {
    Ledger(crate::state::StateError),
    /// Another process held it past [`CLAIM_WAIT`].
    Out(String),
}

/// What a claim found.
pub enum Claimed<R> {
    /// The work was done meanwhile (by `settled`).
    Done(R),
    /// The claim is ours: do the work, then [`release`] it. `taken_over`: it
    /// was held by another process, unsettled, and went stale.
    Ours { taken_over: bool },
}

/// Claim `key` among the processes sharing the ledger (replicas of `cards
/// serve`, a bulk run beside them): waits while another holds it, taken
/// over once its claim is stale; looks at `settled` before claiming and
/// again after winning (another process may have finished and let go in
/// between: its work, not a second).
pub async fn claimed<R>(
    ledger: &Arc<dyn CardLedger>,
    holder: &str,
    key: &str,
    settled: impl Fn() -> std::result::Result<Option<R>, crate::state::StateError>,
) -> std::result::Result<Claimed<R>, Waited> {
    let started = Instant::now();
    let mut waited = false;
    loop {
        if let Some(done) = settled().map_err(Waited::Ledger)? {
            // A repeat of settled work: a claim still there is one a
            // process killed after settling left behind; it means nothing.
            let (l, k) = (ledger.clone(), key.to_string());
            let _ = tokio::task::spawn_blocking(move || l.clear_claim(&k)).await;
            return Ok(Claimed::Done(done));
        }
        let (l, k, who) = (ledger.clone(), key.to_string(), holder.to_string());
        let claim = tokio::task::spawn_blocking(move || l.claim(&k, &who, CLAIM_STALE))
            .await
            .map_err(|_| Waited::Ledger(crate::state::StateError::Io("the claim panicked".into())))?
            .map_err(Waited::Ledger)?;
        match claim {
            crate::state::cards::Claim::Ours => {
                if let Some(done) = settled().map_err(Waited::Ledger)? {
                    release(ledger, holder, key).await;
                    return Ok(Claimed::Done(done));
                }
                return Ok(Claimed::Ours { taken_over: waited });
            }
            crate::state::cards::Claim::Held { holder } => {
                waited = true;
                if started.elapsed() > CLAIM_WAIT {
                    return Err(Waited::Out(holder));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Give up `holder`'s claim on `key`.
pub async fn release(ledger: &Arc<dyn CardLedger>, holder: &str, key: &str) {
    let (l, k, who) = (ledger.clone(), key.to_string(), holder.to_string());
    let _ = tokio::task::spawn_blocking(move || l.release(&k, &who)).await;
}

/// This process, as its claims name it: what it is, host, pid and a
/// random part.
pub fn holder_name(what: &str) -> String {
    format!(
        "{what}:{}:{}:{:08x}",
        crate::state::LockInfo::current(what).host,
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Everything a row's work needs, shared by the rows in flight.
pub struct Ctx {
    gateway: Arc<Governor>,
    ledger: Arc<dyn CardLedger>,
    scope: Scope,
    target: Target,
    template_ids: BTreeMap<Address, String>,
    salt: [u8; 32],
    dry_run: bool,
    /// `cards sync` sends the points message (`changed_point`).
    points_message: bool,
    /// Every journal write flushed (the till's transactions: an answer
    /// given is on disk).
    durable: bool,
    /// Once-ever calls in flight, by key: the same trade arriving twice at
    /// once is sent once (in this process; across processes sharing the
    /// ledger, by a claim named `holder`).
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    holder: String,
    blocked: OnceLock<String>,
}

/// The gateway's words for a failure, with the row's personal values and
/// secrets taken out (a gateway may echo what it was sent).
fn failure(e: &GatewayError, row: &Row) -> Outcome {
    failure_without(e, &row_secrets(row))
}

/// What a member row holds that must never be shown.
fn row_secrets(row: &Row) -> Vec<&str> {
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
    secrets
}

/// The gateway's words for a failure, with `secrets` taken out.
fn failure_without(e: &GatewayError, secrets: &[&str]) -> Outcome {
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
    /// The context `cards serve` syncs the till's transactions in: one per
    /// template family, every write flushed.
    pub fn for_transactions(
        gateway: Arc<Governor>,
        ledger: Arc<dyn CardLedger>,
        scope: Scope,
        target: Target,
    ) -> Ctx {
        let salt = ledger.salt();
        Ctx {
            gateway,
            ledger,
            scope,
            target,
            template_ids: BTreeMap::new(),
            salt,
            dry_run: false,
            points_message: false,
            durable: true,
            keys: Mutex::new(HashMap::new()),
            holder: holder_name("cards"),
            blocked: OnceLock::new(),
        }
    }

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
            let changed = e.row_digest.as_deref() != Some(digest.as_str());
            // Open already: its row's values moving on is what a member
            // export does between runs (`cards sync` updates the card).
            if let Some(biz) = &e.biz_card_no {
                return Outcome::AlreadyOpen {
                    biz_card_no: biz.clone(),
                    changed,
                };
            }
            if changed {
                return Outcome::local(
                    "an earlier run opened (or may have opened) this card with other values: restore the row as it was, run again, then change the card with `cardform cards sync`",
                );
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

    /// The Alipay card number of a card cardform opened on this template
    /// (named by the merchant's number or Alipay's), or why not.
    fn biz_card(&self, card: &CardRef) -> std::result::Result<String, Outcome> {
        let osn = match card {
            CardRef::External(ext) => cards::out_serial_no(&self.target.family, ext),
            CardRef::Biz(biz) => match self.ledger.by_biz(biz) {
                Ok(Some(osn)) => osn,
                Ok(None) => {
                    return Err(Outcome::local(
                        "cardform opened no card with this biz_card_no (`cardform cards open` records the cards it opens)",
                    ));
                }
                Err(e) => return Err(Outcome::local(format!("the card ledger: {e}"))),
            },
        };
        let Some(entry) = self.entry(&osn)? else {
            return Err(Outcome::local(
                "cardform opened no card for this external card number (`cardform cards open` first)",
            ));
        };
        let ours = entry.template == self.target.family
            || self.target.tiers.values().any(|t| t == &entry.template);
        if !ours {
            return Err(Outcome::local(format!(
                "this card is on `{}`, not on `{}`",
                entry.template, self.target.family
            )));
        }
        if entry.deleted_at.is_some() {
            return Err(Outcome::local("this card was deleted (`cards delete`)"));
        }
        entry.biz_card_no.ok_or_else(|| {
            Outcome::local(
                "the card's opening is unfinished: run `cardform cards open` with its row again first",
            )
        })
    }

    /// A call made once per key, ever: journalled before it is sent,
    /// settled after. The same key with the same content is answered from
    /// the journal (or, while in doubt, sent again: Alipay answers a repeat
    /// of the same trade_no / notify_no with the first answer); the same key
    /// with other content is refused.
    async fn once<Q>(&self, once: OnceCall<'_>, request: impl FnOnce(&str) -> Q) -> Outcome
    where
        Q: ApiRequest + Sync,
        Q::Response: Send,
    {
        if let Some(why) = self.blocked.get() {
            return Outcome::NotAttempted {
                message: why.clone(),
            };
        }
        let key = once.key.clone();
        let lock = self
            .keys
            .lock()
            .expect("not poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let outcome = {
            let _held = lock.lock().await;
            self.once_locked(once, request).await
        };
        let mut keys = self.keys.lock().expect("not poisoned");
        // Ours and the map's: nobody else waits on this key.
        if Arc::strong_count(&lock) == 2 {
            keys.remove(&key);
        }
        outcome
    }

    async fn once_locked<Q>(&self, once: OnceCall<'_>, request: impl FnOnce(&str) -> Q) -> Outcome
    where
        Q: ApiRequest + Sync,
        Q::Response: Send,
    {
        // Claimed among the processes sharing the ledger: a trade sent to
        // two replicas' tills at once is sent by one, answered by both.
        let key = once.key.clone();
        let settled = || {
            self.ledger
                .once(&key)
                .map(|k| k.filter(|k| k.done_at.is_some()))
        };
        match claimed(&self.ledger, &self.holder, &format!("o:{key}"), settled).await {
            Err(Waited::Ledger(e)) => return Outcome::local(format!("the card ledger: {e}")),
            Err(Waited::Out(holder)) => {
                return Outcome::local(format!("{holder} held this key too long; run again"));
            }
            // Done meanwhile: judged below from the journal.
            Ok(Claimed::Done(_)) => return self.once_judged(once, request).await,
            Ok(Claimed::Ours { .. }) => {}
        }
        let outcome = self.once_judged(once, request).await;
        release(&self.ledger, &self.holder, &format!("o:{key}")).await;
        outcome
    }

    async fn once_judged<Q>(&self, once: OnceCall<'_>, request: impl FnOnce(&str) -> Q) -> Outcome
    where
        Q: ApiRequest + Sync,
        Q::Response: Send,
    {
        let biz = once.biz_card_no.to_string();
        let known = match self.ledger.once(&once.key) {
            Ok(k) => k,
            Err(e) => return Outcome::local(format!("the card ledger: {e}")),
        };
        if let Some(k) = &known {
            if k.digest != once.digest {
                return Outcome::local(once.conflict);
            }
            if k.done_at.is_some() {
                return (once.already)(biz);
            }
        }
        if self.dry_run {
            return (once.would)(biz);
        }
        let mut entry = known.clone().unwrap_or_else(|| Once {
            key: once.key.clone(),
            biz_card_no: biz.clone(),
            digest: once.digest.clone(),
            journalled_at: crate::alipay::clock::now(),
            done_at: None,
        });
        let journal = if self.durable {
            Durability::Flushed
        } else {
            once.journal
        };
        if known.is_none()
            && let Err(e) = self.ledger.put_once(&entry, journal)
        {
            return Outcome::local(format!("the card ledger: {e}"));
        }
        let req = request(&entry.journalled_at);
        match self.gateway.call(&self.scope, &req).await {
            Ok(_) => {
                entry.done_at = Some(crate::state::now_rfc3339());
                // Deferred: were it lost, a re-run sends the same request
                // again and Alipay answers with the first answer.
                let settle = if self.durable {
                    Durability::Flushed
                } else {
                    Durability::Deferred
                };
                if let Err(e) = self.ledger.put_once(&entry, settle) {
                    return Outcome::local(format!(
                        "sent, but the card ledger failed: {e}; run again to record it"
                    ));
                }
                (once.done)(biz)
            }
            Err(e) => {
                self.block(&e);
                if known.is_none() && !e.in_doubt() {
                    let _ = self.ledger.forget_once(&once.key);
                }
                failure_without(&e, &[])
            }
        }
    }

    pub(crate) async fn consume(&self, t: &Trade) -> Outcome {
        let biz = match self.biz_card(&t.card) {
            Ok(b) => b,
            Err(o) => return o,
        };
        let once = OnceCall {
            key: t.key(&biz),
            biz_card_no: &biz,
            digest: t.digest(&self.salt),
            journal: Durability::Deferred,
            conflict: "this trade_no was synced to this card with other values: a trade is synced once (a correction is a trade of its own, e.g. a RETURN)",
            done: |b| Outcome::Synced { biz_card_no: b },
            already: |b| Outcome::AlreadySynced { biz_card_no: b },
            would: |b| Outcome::WouldSync { biz_card_no: b },
        };
        self.once(once, |_| crate::provider::card::consume_request(t, &biz))
            .await
    }

    pub(crate) async fn notify(&self, r: &Reminder) -> Outcome {
        let biz = match self.biz_card(&r.card) {
            Ok(b) => b,
            Err(o) => return o,
        };
        let once = OnceCall {
            key: r.key(&biz),
            biz_card_no: &biz,
            digest: r.digest(&self.salt),
            // Flushed: a re-sent reminder must carry the same occur_time
            // (the journal's), or Alipay would see other content.
            journal: Durability::Flushed,
            conflict: "a reminder with this notify_no was sent with other values",
            done: |b| Outcome::Notified { biz_card_no: b },
            already: |b| Outcome::AlreadyNotified { biz_card_no: b },
            would: |b| Outcome::WouldNotify { biz_card_no: b },
        };
        self.once(once, |at| {
            crate::provider::card::notify_request(r, &biz, at)
        })
        .await
    }

    /// The points message of a sync: the change since the card's points at
    /// Alipay (read with card.query), signed (`+20`, `-15.5`); none when the
    /// points did not move or cannot be read as numbers.
    async fn changed_point(
        &self,
        biz: &str,
        row: &Row,
    ) -> std::result::Result<Option<String>, Outcome> {
        let Some(new) = row.point.as_deref() else {
            return Ok(None);
        };
        let card = self
            .gateway
            .call(
                &self.scope,
                &CardQueryRequest {
                    target_card_no_type: "BIZ_CARD".into(),
                    target_card_no: biz.to_string(),
                    card_user_info: None,
                    ext_info: None,
                    template_id: None,
                },
            )
            .await
            .map_err(|e| {
                self.block(&e);
                failure(&e, row)
            })?;
        let old = card.card_info.point.as_deref().unwrap_or("0");
        Ok(cards::point_change(old, new))
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
        let changed_point = if self.points_message {
            match self.changed_point(&biz, row).await {
                Ok(c) => c,
                Err(o) => return o,
            }
        } else {
            None
        };
        let req = CardUpdateRequest {
            target_card_no: biz.clone(),
            target_card_no_type: "BIZ_CARD".into(),
            occur_time: crate::alipay::clock::now(),
            // A level that moves the card to a tier of its own carries that
            // tier's template (seed 004).
            card_info: crate::provider::card::update_values(
                row,
                moved.then_some(template_id.as_str()),
            ),
            ext_info: None,
            merchant_card_msg_info: changed_point.map(|p| MerchantCardMsgInfo {
                changed_point: Some(p),
            }),
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

/// One once-ever call: its journal key, the card, the digest of what it
/// sends, how its journal is written, and its outcomes' words.
struct OnceCall<'a> {
    key: String,
    biz_card_no: &'a str,
    digest: String,
    journal: Durability,
    conflict: &'static str,
    done: fn(String) -> Outcome,
    already: fn(String) -> Outcome,
    would: fn(String) -> Outcome,
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
    /// `cards sync` sends the points message (`changed_point`).
    pub points_message: bool,
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

/// A results-file cell that a spreadsheet shows as text, never runs, and a
/// terminal shows as text: control characters other than tab and line
/// breaks (ESC sequences, a gateway's or a file's) are dropped, and a
/// leading `=`, `+`, `-`, `@`, tab or carriage return gets a `'` before it
/// (OWASP's rule for CSV injection).
pub(crate) fn cell(v: &str) -> std::borrow::Cow<'_, str> {
    let v: std::borrow::Cow<'_, str> = if v
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        v.chars()
            .filter(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r'))
            .collect::<String>()
            .into()
    } else {
        v.into()
    };
    match v.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{v}").into(),
        _ => v,
    }
}

impl Cards {
    /// Work through the checked rows of `csv`: the invalid ones reported
    /// first, by line; the good ones read again, streamed, with at most
    /// twice the parallelism under way.
    #[allow(clippy::too_many_arguments)]
    pub async fn run<R: Rows>(
        self,
        csv: &Path,
        rows: R,
        checked: Checked,
        mut results: Option<csv::Writer<std::fs::File>>,
        counts: &mut Counts,
        started: Instant,
        progress: Arc<dyn Progress>,
    ) -> Result<Issued> {
        let salt = self.ledger.salt();
        let ctx = Arc::new(Ctx {
            gateway: self.gateway,
            ledger: self.ledger,
            scope: self.scope,
            target: self.target,
            template_ids: self.template_ids,
            salt,
            dry_run: self.dry_run,
            points_message: self.points_message,
            durable: false,
            keys: Mutex::new(HashMap::new()),
            holder: holder_name("cards"),
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
                    Outcome::AlreadyOpen { changed: true, .. } => (
                        "",
                        "",
                        "the row's values changed since the card was opened: `cardform cards sync` updates it",
                    ),
                    _ => ("", "", ""),
                };
                w.write_record([
                    r.line.to_string().as_str(),
                    &cell(&r.external_card_no),
                    r.outcome.as_str(),
                    &cell(r.outcome.biz_card_no()),
                    &cell(code),
                    &cell(sub),
                    &cell(msg),
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
        let parallelism = self.parallelism.max(1) * 2;
        let mut in_flight = FuturesUnordered::new();
        let mut r = reader_at(csv, &rows)?;
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
            // An invalid row is reported as it comes, why said again.
            let (line, rec) = match record(item) {
                Ok(v) => v,
                Err((line, why)) => {
                    record_result(
                        RowResult {
                            line,
                            external_card_no: String::new(),
                            outcome: Outcome::Invalid {
                                message: format!("the row {why}"),
                            },
                        },
                        counts,
                    )?;
                    continue;
                }
            };
            let fields: Vec<&str> = rec.iter().collect();
            if checked.bad.contains(line) {
                let message = match rows.parse(&header, &fields, line) {
                    Err(e) => e,
                    Ok(row) => {
                        let (_, what, why) = rows.unique(&row);
                        match checked.repeats.get(&line) {
                            Some(first) => format!("{what} also on line {first}: {why}"),
                            None => format!("{what} also on an earlier line: {why}"),
                        }
                    }
                };
                record_result(
                    RowResult {
                        line,
                        external_card_no: shown_of(&header, &rec),
                        outcome: Outcome::Invalid { message },
                    },
                    counts,
                )?;
                continue;
            }
            // Checked in the first pass; a file changed since is caught here.
            let Ok(row) = rows.parse(&header, &fields, line) else {
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
            };
            while in_flight.len() >= parallelism {
                if let Some(done) = in_flight.next().await {
                    record_result(done, counts)?;
                    progress.row(counts, started.elapsed());
                }
            }
            let (line, shown) = (rows.line(&row), rows.shown(&row));
            let work = rows.work(ctx.clone(), row);
            in_flight.push(async move {
                RowResult {
                    line,
                    external_card_no: shown,
                    outcome: work.await,
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

fn reader_at<R: Rows>(path: &Path, rows: &R) -> Result<Csv> {
    let mut r = reader(path)?;
    header(path, &mut r, rows)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_results_cell_never_runs_in_a_spreadsheet_or_a_terminal() {
        use super::cell;
        for (v, want) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("\u{1b}[31m=red", "[31m=red"),
            ("\u{1b}=1", "'=1"),
            ("a\u{1b}]0;title\u{7}b", "a]0;titleb"),
            ("P-00001", "P-00001"),
            ("two\nlines", "two\nlines"),
        ] {
            assert_eq!(cell(v), want, "{v:?}");
        }
    }
}
