//! Refresh: read what the gateway holds for every template the state records
//! (a cheap pass first: batchquery's `gmt_modified` against the time the
//! state recorded; template.query only where it moved), and list templates
//! the state does not know.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Result, anyhow};
use chrono::{NaiveDateTime, TimeZone};

use super::gateway::Reader;
use crate::apply::Tokens;
use crate::gateway::Scope;
use crate::model::{Address, Kind};
use crate::plan::drift::{self, Drifted, Refresh, Unmanaged};
use crate::provider::Provider;
use crate::state::Snapshot;

/// Pages of 20 read per merchant at most (10,000 templates).
const MAX_PAGES: i64 = 500;

/// `gmt_modified` (UTC+8, to the second) as a UTC instant.
fn gateway_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").ok()?;
    let cst = chrono::FixedOffset::east_opt(8 * 3600)?;
    Some(cst.from_local_datetime(&naive).single()?.to_utc())
}

pub async fn refresh(
    snapshot: &Snapshot,
    merchants: &BTreeSet<String>,
    ignored: &BTreeSet<String>,
    provider: &Provider,
    tokens: &Tokens,
) -> Result<Refresh> {
    let started = Instant::now();
    let before = provider.gateway.stats();
    let token = |m: &str| {
        tokens
            .get(m)
            .and_then(|t| t.as_ref().ok())
            .cloned()
            .flatten()
    };
    // Every template id this state accounts for, and those the manifests
    // leave alone on purpose (`ignore_templates`).
    let known: BTreeSet<&str> = snapshot
        .resources
        .values()
        .filter_map(|r| r.ids.template_id.as_deref())
        .chain(snapshot.forgotten.keys().map(String::as_str))
        .chain(ignored.iter().map(String::as_str))
        .collect();
    // When cardform last wrote each template: its record, or a form or URL
    // set on it (they record its template_id too), whichever is latest.
    let mut written: BTreeMap<&str, chrono::DateTime<chrono::FixedOffset>> = BTreeMap::new();
    for r in snapshot.resources.values() {
        if let (Some(t), Ok(at)) = (
            r.ids.template_id.as_deref(),
            chrono::DateTime::parse_from_rfc3339(&r.applied_at),
        ) {
            let e = written.entry(t).or_insert(at);
            *e = (*e).max(at);
        }
    }
    let written = &written;
    let known = &known;
    let token = &token;
    let mut all: BTreeSet<String> = merchants.clone();
    all.extend(snapshot.resources.keys().map(|a| a.merchant.to_string()));
    // Templates are listed per namespace: a merchant's app_auth_token, or
    // the app's own, shared by every merchant without one. Each is listed once.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &all {
        if let Some(Err(e)) = tokens.get(m) {
            // Listing it in the app's namespace would misread it.
            return Err(anyhow!("cannot refresh merchant `{m}`: {e}"));
        }
        let ns = token(m).map(|t| t.expose().to_string()).unwrap_or_default();
        groups.entry(ns).or_default().push(m.clone());
    }
    let reads = groups.values().map(|ms| {
        let m = &ms[0];
        let at = Scope::merchant(m, token(m).as_ref());
        async move {
            let listed = provider
                .all_templates(&at, MAX_PAGES)
                .await
                .map_err(|e| anyhow!("cannot list the templates of merchant `{m}`: {e}"))?;
            let by_id: BTreeMap<&str, &crate::alipay::methods::McardTemplate> =
                listed.iter().map(|t| (t.template_id.as_str(), t)).collect();
            // Image ids this merchant's records know, by address.
            let images: BTreeMap<String, String> = snapshot
                .resources
                .values()
                .filter(|r| ms.iter().any(|m| *m == r.address.merchant) && r.kind == Kind::Image)
                .filter_map(|r| Some((r.ids.image_id.clone()?, r.address.to_string())))
                .collect();
            let mut missing: Vec<Address> = Vec::new();
            let mut moved = Vec::new();
            let mut checked = 0;
            for r in snapshot
                .resources
                .values()
                .filter(|r| ms.iter().any(|m| *m == r.address.merchant) && r.kind == Kind::Template)
            {
                let Some(id) = r.ids.template_id.as_deref() else {
                    continue;
                };
                checked += 1;
                let Some(listed) = by_id.get(id) else {
                    missing.push(r.address.clone());
                    continue;
                };
                // The cheap pass: unchanged since the state recorded it.
                let modified = listed.gmt_modified.as_deref().and_then(gateway_time);
                let recorded = written.get(id);
                if let (Some(g), Some(s)) = (modified, recorded)
                    && g <= *s
                {
                    continue;
                }
                moved.push((r, id, *listed));
            }
            let queried = moved.len();
            // Read the moved ones at once: the transport bounds calls in flight.
            let images = &images;
            let at = &at;
            let reads = moved.into_iter().map(|(r, id, listed)| async move {
                // The write-off kind cannot be read back: the record's stands.
                let recorded_write_off =
                    serde_json::from_value(r.attrs_value()["write_off"].clone())
                        .unwrap_or(crate::model::template::WriteOff::Qrcode);
                let (mut attrs, _) = provider
                    .read_template(&at.clone().about(&r.address), id, recorded_write_off)
                    .await
                    .map_err(|e| anyhow!("cannot read template {id} (`{}`): {e}", r.address))?;
                attrs.map_images(|id| images.get(id).cloned());
                Ok::<_, anyhow::Error>(drift::compare(r, attrs, listed.gmt_modified.clone()))
            });
            let mut drifted: Vec<Drifted> = futures_util::future::join_all(reads)
                .await
                .into_iter()
                .collect::<Result<Vec<_>>>()?
                .into_iter()
                .flatten()
                .collect();
            // Benefits: each template's, read once (benefit.query), compared
            // with the records by benefit_id.
            let mut benefits: BTreeMap<&str, Vec<&crate::state::ResourceState>> = BTreeMap::new();
            for r in snapshot
                .resources
                .values()
                .filter(|r| ms.iter().any(|m| *m == r.address.merchant) && r.kind == Kind::Benefit)
            {
                if let (Some(t), Some(_)) = (r.ids.template_id.as_deref(), &r.ids.benefit_id)
                    && by_id.contains_key(t)
                {
                    benefits.entry(t).or_default().push(r);
                }
            }
            let mut queried = queried;
            for (tid, records) in benefits {
                let there = provider
                    .benefits_of(at, tid)
                    .await
                    .map_err(|e| anyhow!("cannot read the benefits of template {tid}: {e}"))?;
                queried += 1;
                for r in records {
                    checked += 1;
                    let bid = r.ids.benefit_id.as_deref().unwrap_or_default();
                    match there.iter().find(|q| q.benefit_id == bid) {
                        None => missing.push(r.address.clone()),
                        Some(q) => {
                            let recorded: Option<crate::model::Attrs> =
                                serde_json::from_value(r.attrs_value()).ok();
                            if let Some(crate::model::Attrs::Benefit(b)) = recorded {
                                let now = crate::provider::benefit::from_wire(q, &b.template);
                                drifted.extend(drift::compare_benefit(r, now));
                            }
                        }
                    }
                }
            }
            let unmanaged: Vec<Unmanaged> = listed
                .iter()
                .filter(|t| !known.contains(t.template_id.as_str()))
                .map(|t| {
                    let name = t
                        .template_style_info
                        .as_ref()
                        .and_then(|s| s.card_show_name.clone());
                    let suggested = drift::suggested_name(name.as_deref(), &t.template_id);
                    Unmanaged {
                        merchant: m.clone(),
                        template_id: t.template_id.clone(),
                        import: format!(
                            "{{ to: merchant.{m}/template.{suggested}, id: \"{}\" }}",
                            t.template_id
                        ),
                        name,
                    }
                })
                .collect();
            Ok::<_, anyhow::Error>((drifted, missing, unmanaged, checked, queried))
        }
    });
    let mut out = Refresh::default();
    let mut seen_unmanaged = BTreeSet::new();
    for r in futures_util::future::join_all(reads).await {
        let (d, missing, unmanaged, checked, queried) = r?;
        out.drifted.extend(d);
        out.missing.extend(missing);
        // Merchants without a token share the app's namespace: list each once.
        out.unmanaged.extend(
            unmanaged
                .into_iter()
                .filter(|u| seen_unmanaged.insert(u.template_id.clone())),
        );
        out.checked += checked;
        out.queried += queried;
    }
    out.drifted.sort_by(|a, b| a.address.cmp(&b.address));
    out.calls = provider.gateway.stats().since(&before).calls;
    out.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

/// Whether a plan reads the gateway first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Plan against the state as recorded.
    #[default]
    Off,
    /// Read the gateway, then plan against what it holds (drift is undone).
    Refresh,
    /// Read the gateway and show (apply: record) what the state will learn;
    /// change nothing at the gateway.
    Only,
}

/// The one path plan and apply share: plan, reading the gateway first when
/// `mode` asks for a refresh or `import` blocks name templates the state does
/// not record. The connection, if one was made, is handed back open (apply
/// reuses it); on an error it is closed here.
pub async fn plan(
    settings: &crate::settings::Settings,
    desired: &crate::model::Desired,
    snapshot: &Snapshot,
    mode: Mode,
    mut options: crate::plan::Options,
    run: &crate::apply::Options,
    observer: std::sync::Arc<dyn crate::gateway::governor::Observer>,
) -> Result<(crate::plan::Plan, Option<Reader>)> {
    // Against a real gateway, every secret the run would read must be
    // readable before anything is planned (a plan that cannot be applied
    // is no plan); the selected merchants' tokens only.
    if let crate::settings::Endpoint::Url(url) = &settings.gateway.endpoint {
        let scope = options.select.scope(desired, snapshot)?;
        let keys = super::tokens::gateway_keys(&settings.gateway);
        let missing =
            super::tokens::unresolved(&keys, desired, scope.as_ref().map(|s| &s.merchants));
        if !missing.is_empty() {
            anyhow::bail!(
                "cannot plan against gateway `{}`: {} secret(s) cannot be read:\n  - {}\nhint: set them (each example's README section names its variables), or plan on the embedded sandbox with --endpoint sandbox",
                url.host_str().unwrap_or(""),
                missing.len(),
                missing.join("\n  - ")
            );
        }
    }
    let imports = pending_imports(desired, snapshot);
    if mode == Mode::Off && !imports {
        return Ok((planned(desired, snapshot, &options)?, None));
    }
    let reader = super::gateway::governed(settings, desired, run, observer).await?;
    let planned = async {
        if imports {
            options.imported = read_imports(desired, snapshot, &reader).await?;
        }
        if mode == Mode::Off {
            return Ok(planned(desired, snapshot, &options)?);
        }
        let ignored: BTreeSet<String> = desired
            .merchants
            .values()
            .flat_map(|m| m.ignore_templates.iter().cloned())
            .collect();
        // Only the selected merchants are read (an ISV's `drift --merchant x`
        // costs x's calls, not the whole book's).
        let found = match options.select.scope(desired, snapshot)? {
            Some(scope) => {
                let mut view = snapshot.clone();
                view.resources
                    .retain(|a, _| scope.merchants.contains(a.merchant.as_str()));
                let merchants: BTreeSet<String> = desired
                    .merchants
                    .keys()
                    .filter(|m| scope.merchants.contains(*m))
                    .cloned()
                    .collect();
                refresh(
                    &view,
                    &merchants,
                    &ignored,
                    &reader.provider,
                    &reader.tokens,
                )
                .await?
            }
            None => {
                let merchants = desired.merchants.keys().cloned().collect();
                refresh(
                    snapshot,
                    &merchants,
                    &ignored,
                    &reader.provider,
                    &reader.tokens,
                )
                .await?
            }
        };
        let mut plan = match mode {
            Mode::Only => crate::plan::refresh_only(planned(desired, snapshot, &options)?),
            _ => planned(
                desired,
                &drift::without_missing_benefits(
                    drift::refreshed(snapshot, &found.drifted),
                    &found.missing,
                ),
                &options,
            )?,
        };
        plan.refresh = Some(found);
        Ok::<_, anyhow::Error>(plan)
    }
    .await;
    match planned {
        Ok(plan) => Ok((plan, Some(reader))),
        Err(e) => {
            reader.conn.close().await;
            Err(e)
        }
    }
}

/// Whether `import` blocks name templates the state does not record yet.
pub fn pending_imports(desired: &crate::model::Desired, snapshot: &Snapshot) -> bool {
    desired
        .imports
        .keys()
        .any(|a| !snapshot.resources.contains_key(a))
}

/// Read every template an `import` block adopts (template.query), in the
/// manifest's words: what the plan compares with the manifests.
pub async fn read_imports(
    desired: &crate::model::Desired,
    snapshot: &Snapshot,
    reader: &Reader,
) -> Result<BTreeMap<Address, serde_json::Value>> {
    let token = |m: &str| {
        reader
            .tokens
            .get(m)
            .and_then(|t| t.as_ref().ok())
            .cloned()
            .flatten()
    };
    let reads = desired
        .imports
        .iter()
        .filter(|(a, _)| !snapshot.resources.contains_key(*a))
        .map(|(address, import)| async move {
            let at = Scope::merchant(&address.merchant, token(&address.merchant).as_ref())
                .about(address);
            let id = &import.template_id;
            let wanted = match desired.resources.get(address).map(|r| &r.attrs) {
                Some(crate::model::Attrs::Template(t)) => t,
                _ => return Err(anyhow!("bug: `{address}` is not a template")),
            };
            // The write-off kind cannot be read back: the manifests' stands.
            let (mut attrs, _) = reader.provider.read_template(&at, id, wanted.write_off).await.map_err(|e| {
                anyhow!(
                    "{}: cannot import template {id} as `{address}`: {e}\nhint: the gateway has no such template for merchant `{}` (check the id; a template of another merchant or app cannot be imported here)",
                    import.written_at,
                    address.merchant
                )
            })?;
            attrs.image_hashes = wanted.image_hashes.clone();
            // Image ids the state knows, and those the manifests adopt by id.
            let mut images: BTreeMap<String, String> = snapshot
                .resources
                .values()
                .filter(|r| r.address.merchant == address.merchant && r.kind == Kind::Image)
                .filter_map(|r| Some((r.ids.image_id.clone()?, r.address.to_string())))
                .collect();
            for r in desired.resources.values() {
                if let crate::model::Attrs::Image(i) = &r.attrs
                    && let Some(id) = &i.id
                    && r.address.merchant == address.merchant
                {
                    images.insert(id.clone(), r.address.to_string());
                }
            }
            attrs.map_images(|id| images.get(id).cloned());
            let value = crate::model::Attrs::Template(Box::new(attrs)).to_json();
            Ok::<_, anyhow::Error>((address.clone(), value))
        });
    futures_util::future::join_all(reads)
        .await
        .into_iter()
        .collect()
}

/// A plan with its call budget: the planner says what changes, the provider
/// what those changes cost at the gateway.
pub fn planned(
    desired: &crate::model::Desired,
    snapshot: &Snapshot,
    options: &crate::plan::Options,
) -> Result<crate::plan::Plan, crate::plan::PlanError> {
    let mut plan = crate::plan::plan(desired, snapshot, options)?;
    let (moved, _) = crate::plan::after_moves(desired, snapshot)?;
    plan.budget = crate::provider::budget(&plan.changes, &moved, &desired.gateway.rate_limits);
    ended_benefits(&mut plan, desired);
    Ok(plan)
}

/// A benefit past its end date is said to be so (Alipay shows it no more):
/// the planner is pure, so the clock is read here.
fn ended_benefits(plan: &mut crate::plan::Plan, desired: &crate::model::Desired) {
    let now = crate::alipay::clock::now();
    for c in plan.changes.iter_mut() {
        if c.kind != crate::model::Kind::Benefit || c.action == crate::plan::Action::NoOp {
            continue;
        }
        if let Some(crate::model::Resource {
            attrs: crate::model::Attrs::Benefit(b),
            ..
        }) = desired.resources.get(&c.address)
            && b.ended(&now)
        {
            c.reason = format!("{} (ended {}: Alipay no longer shows it)", c.reason, b.end).into();
        }
    }
}
