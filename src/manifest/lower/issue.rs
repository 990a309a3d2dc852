//! `activation_url.issue` blocks: what `cards serve` does for members who
//! activate, and the members file they name.

use super::*;

/// An activation URL's `issue` block: checked (the callback it needs, a
/// level the template knows, the members file's header) and recorded.
#[allow(clippy::too_many_arguments)]
pub(super) fn lower_issue(
    ctx: &mut Ctx,
    desired: &mut Desired,
    mname: &str,
    name: &str,
    at: &At,
    u: &raw::ActivationUrl,
    issue: &raw::Issue,
    levels: Option<&Vec<card::Level>>,
    spi_app_id: Option<&str>,
) {
    let f = |x: &str| format!("activation_url.issue.{x}");
    let flow = issue.flow.unwrap_or_default();
    if flow == crate::model::Flow::Spi && spi_app_id.is_none() {
        ctx.report(
            at,
            &f("flow"),
            "the SPI flow needs the template's `spi_app_id`: the app whose SPI Alipay calls (the app `cards serve` signs as)",
        );
    }
    if flow == crate::model::Flow::Callback && u.callback.is_none() {
        ctx.report(
            at,
            "activation_url.issue",
            "`issue` needs `callback` beside it: the URL where `cardform cards serve` listens",
        );
    }
    let known: Vec<&str> = levels
        .map(|l| l.iter().map(|l| l.level.as_str()).collect())
        .unwrap_or_default();
    // The family a tier belongs to: `club` for `club.gold`.
    let family = known
        .iter()
        .find_map(|l| name.strip_suffix(&format!(".{l}")))
        .unwrap_or(name);
    match (&issue.level, known.is_empty()) {
        (Some(l), false) if !known.contains(&l.as_str()) => ctx.report(
            at,
            &f("level"),
            format!(
                "`{l}` is not a level of this template's tiers ({})",
                known.join(", ")
            ),
        ),
        (Some(_), true) => ctx.report(
            at,
            &f("level"),
            "this template has no tiers, so there is no level to choose",
        ),
        (None, false) if issue.members.is_none() => ctx.report(
            at,
            &f("level"),
            format!(
                "a tiered template needs the level a new member starts on ({})",
                known.join(", ")
            ),
        ),
        _ => {}
    }
    let valid_date = issue
        .valid_date
        .clone()
        .unwrap_or_else(|| "2099-12-31 23:59:59".to_string());
    if !is_datetime(&valid_date) {
        ctx.report(
            at,
            &f("valid_date"),
            format!("`{valid_date}` is not `yyyy-MM-dd HH:mm:ss`"),
        );
    }
    if let Some(d) = &issue.done_url
        && !is_http(d)
    {
        ctx.report(at, &f("done_url"), format!("`{d}` is not an http(s) URL"));
    }
    let mut members = None;
    let mut members_path = None;
    if let Some(m) = &issue.members {
        let path = ctx.dir(at.file).join(&m.file);
        match crate::manifest::members::check_file(&path, &known) {
            Ok(()) => {
                members = Some(crate::manifest::relative_path(&ctx.root, &path));
                members_path = Some(path);
            }
            Err(e) => ctx.report(at, &f("members.file"), e),
        }
    }
    let transactions_token = issue
        .transactions
        .as_ref()
        .and_then(|t| secret_ref(ctx, at, &f("transactions.token"), &t.token));
    desired.issuance.insert(
        Address::new(mname, Kind::Template, name),
        crate::model::Issuance {
            flow,
            family: Address::new(mname, Kind::Template, family),
            level: issue.level.clone(),
            members,
            members_path,
            valid_date,
            done_url: issue.done_url.clone(),
            points_message: issue.points_message,
            transactions_token,
        },
    );
}
