//! `cardform apply`: plan (or take a saved plan, refusing a stale one), ask,
//! connect, execute, report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::project::{self, Common};
use crate::apply::{self, Progress, Report, Tokens};
use crate::gateway::Scope;
use crate::model::{Address, Desired};
use crate::plan::{self, Plan};
use crate::provider::Provider;
use crate::settings::Overrides;

pub struct Request {
    pub common: Common,
    /// The project was named on the command line (else a saved plan's own is used).
    pub project_given: bool,
    pub saved_plan: Option<PathBuf>,
    /// `--merchant`, `--exclude`, `--target`.
    pub select: crate::plan::Selection,
    /// No one is asked: a plan that retires resources then needs `allow_retire`.
    pub auto_approve: bool,
    pub allow_retire: bool,
    /// Create templates for a merchant although the gateway holds templates
    /// this state does not know.
    pub allow_unmanaged: bool,
    /// Read the gateway before planning (`--refresh`, `--refresh-only`).
    pub refresh: super::refresh::Mode,
    pub options: apply::Options,
}

pub enum Applied {
    /// Nothing to do.
    NoChanges(Plan),
    /// The user said no.
    Declined(Plan),
    Done(Plan, Box<Report>),
    /// `--refresh-only`: the state learned what the gateway holds.
    Refreshed(Plan, usize),
}

pub async fn run(
    req: Request,
    flags: &Overrides,
    confirm: &dyn Fn(&Plan) -> bool,
    progress: Arc<dyn Progress>,
) -> Result<Applied> {
    let mut common = req.common.clone();
    let mut saved_binding = None;
    let mut flags = flags.clone();
    let mut planned = None;
    let saved = match &req.saved_plan {
        Some(path) => {
            let saved = super::plan::read_saved(path)?;
            if !req.project_given {
                common.project = super::plan::saved_project(path, &saved)?;
            }
            common.vars = saved.vars.clone();
            saved_binding = saved.binding;
            if let Some(state) = &saved.state {
                planned_state(&mut flags, &common.project, state);
            }
            planned = saved.state;
            Some(saved.plan)
        }
        None => None,
    };
    let flags = &flags;
    // A run with selectors locks only its merchants where the backend can
    // (pipelines on different merchants of one shared state run at once).
    let merchants = match &saved {
        Some(p) => p.merchants.clone(),
        None if req.select.is_all() => None,
        None => Some(project::selected_merchants(&common, flags, &req.select)?),
    };
    let project::Opened {
        desired,
        settings,
        store,
        snapshot,
        binding,
    } = project::open_expecting(
        &common,
        flags,
        "apply",
        merchants.as_ref(),
        planned.as_ref(),
    )?;
    // A connection made early to refresh is reused by the apply.
    let mut reader: Option<super::gateway::Reader> = None;
    if let Some(planned_for) = &saved_binding
        && planned_for != &binding
    {
        bail!(
            "the saved plan was made for {planned_for}; this run is {binding}\nhint: apply it with the same project and gateway settings, or run `cardform plan --out` again"
        );
    }
    let plan = match saved {
        Some(saved) => {
            // Another run may have applied other merchants meanwhile (a
            // shared state lets targeted runs go at once): a targeted plan is
            // current while its merchant's records are as planned.
            let scope_unchanged = match (&saved.merchants, &saved.scope_digest) {
                (Some(m), Some(d)) => *d == plan::merchant_digest(&snapshot, m),
                _ => false,
            };
            if saved.lineage != snapshot.meta.lineage
                || (saved.serial != snapshot.meta.serial && !scope_unchanged)
            {
                bail!(
                    "the saved plan is stale: the state changed since it was made (serial {} then, {} now)\nhint: run `cardform plan --out` again",
                    saved.serial,
                    snapshot.meta.serial
                );
            }
            if saved.desired_hash != plan::desired_hash(&desired) {
                bail!(
                    "the saved plan is stale: the manifests changed since it was made\nhint: run `cardform plan --out` again"
                );
            }
            saved
        }
        None => {
            let options = plan::Options {
                select: req.select.clone(),
                ..Default::default()
            };
            let (plan, r) = super::refresh::plan(
                &settings,
                &desired,
                &snapshot,
                req.refresh,
                options,
                &req.options,
                progress.clone(),
            )
            .await?;
            reader = r;
            if req.refresh == super::refresh::Mode::Only {
                let learned = plan.refresh.as_ref().map_or(0, |r| r.drifted.len());
                if learned == 0 || !confirm(&plan) {
                    if let Some(r) = reader.take() {
                        r.conn.close().await;
                    }
                    return Ok(if learned == 0 {
                        Applied::NoChanges(plan)
                    } else {
                        Applied::Declined(plan)
                    });
                }
                // Accept the gateway's values into state; nothing is sent.
                for d in plan.refresh.iter().flat_map(|r| &r.drifted) {
                    if let Some(old) = snapshot.resources.get(&d.address) {
                        let attrs: crate::model::Attrs =
                            serde_json::from_value(d.at_gateway.clone())?;
                        let mut rec = old.clone();
                        rec.hash = attrs.hash();
                        rec.attrs = crate::state::raw_attrs(&attrs);
                        rec.applied_at = crate::state::now_rfc3339();
                        store.commit(&rec, crate::state::Durability::Flushed)?;
                    }
                }
                if let Some(r) = reader.take() {
                    r.conn.close().await;
                }
                return Ok(Applied::Refreshed(plan, learned));
            }
            // The state may have gained merchants the selection covers
            // between the unlocked read and the lock: never touch one unlocked.
            if let (Some(locked), Some(planned)) = (&merchants, &plan.merchants)
                && !planned.is_subset(locked)
            {
                bail!(
                    "the selection now covers merchants another run added while this one waited ({}); nothing was changed\nhint: run again",
                    planned
                        .difference(locked)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            if req.auto_approve && plan.summary.retire > 0 && !req.allow_retire {
                bail!(
                    "refusing to retire {} resource(s) without a review: --auto-approve alone does not retire\nhint: read the plan (`cardform plan`), then pass --allow-retire, or apply a plan saved with `cardform plan --out` after reviewing it",
                    plan.summary.retire
                );
            }
            if plan.has_changes() && !confirm(&plan) {
                if let Some(r) = reader.take() {
                    r.conn.close().await;
                }
                return Ok(Applied::Declined(plan));
            }
            plan
        }
    };
    if !plan.has_changes() {
        if let Some(r) = reader {
            r.conn.close().await;
        }
        return Ok(Applied::NoChanges(plan));
    }
    if snapshot.meta.binding.is_none() {
        // The first apply binds the state to this project and gateway.
        store.bind(&binding)?;
    }
    // Renames first, with no gateway call; the rest is planned against them.
    let moved: Vec<(Address, Address)> = plan
        .moves()
        .map(|(from, to)| (from.clone(), to.clone()))
        .collect();
    for (from, to) in &moved {
        store.rename(from, to)?;
        // A form or URL names its template: it follows the template's move.
        if let Some(r) = snapshot.resources.get(from) {
            let relocated = plan::relocated(&desired, r, to);
            if relocated.hash != r.hash {
                store.commit(&relocated, crate::state::Durability::Flushed)?;
            }
        }
    }
    let snapshot = if moved.is_empty() {
        snapshot
    } else {
        store.snapshot()?
    };
    if plan.changes.iter().all(|c| c.action == plan::Action::NoOp) {
        let report = Report {
            moved: moved
                .into_iter()
                .map(|(from, to)| apply::Moved { from, to })
                .collect(),
            ..Report::default()
        };
        if let Some(r) = reader {
            r.conn.close().await;
        }
        return Ok(Applied::Done(plan, Box::new(report)));
    }
    let super::gateway::Reader {
        conn,
        provider,
        tokens,
    } = match reader {
        Some(r) => r,
        None => {
            super::gateway::governed(&settings, &desired, &req.options, progress.clone()).await?
        }
    };
    let mut options = req.options.clone();
    if !req.allow_unmanaged {
        options.blocked = refuse_unmanaged(&plan, &snapshot, &desired, &provider, &tokens).await?;
    }
    let caps = apply::Capabilities {
        store: store.clone(),
        provider,
        tokens,
        progress,
    };
    let mut report = apply::apply(&plan, Arc::new(desired), snapshot, caps, &options).await;
    report.moved = moved
        .into_iter()
        .map(|(from, to)| apply::Moved { from, to })
        .collect();
    conn.close().await;
    if report.ok() {
        // The last known good state, for `cardform state recover`.
        let saved = store
            .snapshot()
            .and_then(|snap| settings.state.backend().write_backup(&snap));
        if let Err(e) = saved {
            report.state_error = Some(format!("the backup of the state was not saved: {e}"));
        }
    }
    Ok(Applied::Done(plan, Box::new(report)))
}

/// A saved plan applies to the state it was planned against: unless this
/// run names a state (`--state`, `CARDFORM_STATE`), a directory state is
/// found as planned, else beside the project (an apply from another
/// directory). A PostgreSQL state is named again (the plan keeps no
/// password); `project::open_expecting` refuses a state that is not there.
fn planned_state(
    flags: &mut Overrides,
    project: &std::path::Path,
    state: &super::plan::PlannedState,
) {
    let named = flags.state.is_some() || crate::settings::env("CARDFORM_STATE").is_some();
    if named || state.url.is_some() {
        return;
    }
    let found = state.dir.clone().filter(|d| d.exists()).or_else(|| {
        state
            .dir_from_project
            .as_ref()
            .map(|rel| super::plan::project_dir(project).join(rel))
            .filter(|d| d.exists())
    });
    if let Some(d) = found.or_else(|| state.dir.clone()) {
        flags.state = Some(d);
    }
}

/// Defence in depth before a merchant's templates are created (first ones,
/// new ones, replacements), whatever the state knows of it: ask the
/// gateway. Templates there that this state cannot account for mean a lost,
/// damaged or foreign state (a row deleted by hand), and creating would
/// make duplicates that Alipay cannot delete.
///
/// The gateway keeps templates per namespace: a merchant's app_auth_token,
/// or the app's own when there is none (shared by every merchant without a
/// token). A namespace's templates are accounted for by the template ids
/// the state holds or forgot, and by its creates in doubt (journalled
/// intents, which may have taken effect): a crash never blocks its re-run.
async fn refuse_unmanaged(
    plan: &Plan,
    snapshot: &crate::state::Snapshot,
    desired: &Desired,
    provider: &Provider,
    tokens: &Tokens,
) -> Result<BTreeMap<String, String>> {
    use crate::model::Kind;
    use std::collections::BTreeSet;
    // The namespace of a merchant: its token's text (never printed), or "".
    let namespace = |m: &str| -> Option<String> {
        match tokens.get(m) {
            Some(Ok(Some(t))) => Some(t.expose().to_string()),
            Some(Ok(None)) | None => Some(String::new()),
            // A merchant whose token cannot be read fails on its own later.
            Some(Err(_)) => None,
        }
    };
    // Namespace -> a merchant in it whose templates are created.
    let mut to_check: BTreeMap<String, &str> = BTreeMap::new();
    for c in &plan.changes {
        let m = c.address.merchant.as_str();
        if c.kind == Kind::Template
            && matches!(c.action, plan::Action::Create | plan::Action::Replace)
            && let Some(ns) = namespace(m)
        {
            to_check.entry(ns).or_insert(m);
        }
    }
    // A template's own record accounts for it (a form's or an activation
    // URL's copy of the id does not: that template's record may be the
    // one lost).
    let known_ids: BTreeSet<&str> = snapshot
        .resources
        .values()
        .filter(|r| r.kind == Kind::Template)
        .filter_map(|r| r.ids.template_id.as_deref())
        .chain(snapshot.forgotten.keys().map(String::as_str))
        // Templates being adopted are accounted for by their import blocks,
        // and those kept outside the project on purpose by `ignore_templates`.
        .chain(desired.imports.values().map(|i| i.template_id.as_str()))
        .chain(
            desired
                .merchants
                .values()
                .flat_map(|m| m.ignore_templates.iter().map(String::as_str)),
        )
        .collect();
    let known_ids = &known_ids;
    // Pages of 20 read per namespace at most.
    const MAX_PAGES: i64 = 50;
    let checks = to_check.into_iter().map(|(ns, m)| async move {
        let in_doubt = snapshot
            .intents
            .keys()
            .filter(|a| a.kind == Kind::Template && namespace(&a.merchant).as_ref() == Some(&ns))
            .count();
        let token = tokens.get(m).and_then(|t| t.as_ref().ok()).cloned().flatten();
        let at = Scope::merchant(m, token.as_ref());
        let mut unknown = Vec::new();
        let mut total = 0;
        for page in 1..=MAX_PAGES {
            let (n, ids) = match provider.templates_at_gateway(&at, page).await {
                Ok(v) => v,
                // The merchant's authorisation is broken: it stops alone.
                Err(e) if e.api().and_then(|a| a.merchant_block()).is_some() => {
                    return Ok(Check::Blocked(ns, e.api().and_then(|a| a.merchant_block()).expect("checked")));
                }
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot check whether merchant `{m}` already holds templates at the gateway: {e}"
                    ));
                }
            };
            total = n;
            let last = ids.len() < 20;
            unknown.extend(ids.into_iter().filter(|id| !known_ids.contains(id.as_str())));
            if unknown.len() > in_doubt || last || page * 20 >= n {
                break;
            }
        }
        Ok(if unknown.len() > in_doubt {
            Check::Unknown(m.to_string(), total, unknown)
        } else {
            Check::Clean
        })
    });
    let mut found: Vec<(String, i64, Vec<String>)> = Vec::new();
    let mut blocked: BTreeMap<String, String> = BTreeMap::new();
    for check in futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?
    {
        match check {
            Check::Clean => {}
            Check::Unknown(m, n, ids) => found.push((m, n, ids)),
            // Every merchant of that namespace (one token) is stopped.
            Check::Blocked(ns, block) => {
                for c in &plan.changes {
                    let m = &c.address.merchant;
                    if namespace(m).as_ref() == Some(&ns) {
                        blocked
                            .entry(m.to_string())
                            .or_insert_with(|| block.hint(m));
                    }
                }
            }
        }
    }
    if let Some((m, n, ids)) = found.first() {
        let more = if found.len() > 1 {
            format!(" (and {} other merchant(s))", found.len() - 1)
        } else {
            String::new()
        };
        bail!(
            "merchant `{m}` already holds template(s) at the gateway that this state does not know ({n} in all; e.g. {}){more}; creating its templates now would make second copies, which Alipay cannot delete\nhint: if this state was lost or damaged, `cardform state recover`; if the templates were made elsewhere, import them; to create anyway, pass --allow-unmanaged",
            ids.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(blocked)
}

/// What the check found in one namespace.
enum Check {
    Clean,
    /// A merchant, the templates in all, the ones this state does not know.
    Unknown(String, i64, Vec<String>),
    /// The namespace's authorisation is broken (never printed: the token).
    Blocked(String, crate::alipay::MerchantBlock),
}
