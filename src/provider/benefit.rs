//! Dated benefits (`alipay.marketing.card.benefit.*`): created on their
//! template, modified in place, and deleted at Alipay when they leave the
//! manifests (the one kind Alipay can delete). A replaced template's
//! benefits are created on the new template and deleted from the old.
//!
//! benefit.create has no idempotency key: before each create the
//! template's benefits are read (benefit.query) and one with the same
//! content is adopted instead, so a create whose answer was lost never
//! leaves a second benefit.

use crate::alipay::methods::{
    ApiRequest, BenefitCreateRequest, BenefitDeleteRequest, BenefitModifyRequest,
    BenefitQueryRequest, McardTemplateBenefit, McardTemplateBenefitQuery,
};
use crate::model::BenefitAttrs;
use crate::plan::Action;
use crate::state::Ids;

/// The calls a change of a benefit makes: a look at the template's
/// benefits and a create (a replacement also deletes the old one), a
/// modify, or a delete.
pub fn calls(action: Action) -> &'static [&'static str] {
    match action {
        Action::NoOp | Action::Retire => &[],
        Action::Create | Action::Import => {
            &[BenefitQueryRequest::METHOD, BenefitCreateRequest::METHOD]
        }
        Action::Replace => &[
            BenefitQueryRequest::METHOD,
            BenefitCreateRequest::METHOD,
            BenefitDeleteRequest::METHOD,
        ],
        Action::Update => &[BenefitModifyRequest::METHOD],
        Action::Delete => &[BenefitDeleteRequest::METHOD],
    }
}

/// Its own id, for people.
pub fn shown_ids(ids: &Ids) -> Vec<String> {
    ids.benefit_id
        .iter()
        .map(|b| format!("benefit_id={b}"))
        .collect()
}

/// The benefit as the wire carries it, on `template_id`.
pub fn to_wire(attrs: &BenefitAttrs, template_id: &str) -> McardTemplateBenefit {
    McardTemplateBenefit {
        template_id: template_id.to_string(),
        title: attrs.title.clone(),
        benefit_desc: attrs.descriptions.clone(),
        start_date: attrs.start.clone(),
        end_date: attrs.end.clone(),
        ext_info: attrs
            .link
            .as_ref()
            .map(|l| serde_json::json!({ "openUrl": l }).to_string()),
    }
}

pub fn create_request(attrs: &BenefitAttrs, template_id: &str) -> BenefitCreateRequest {
    BenefitCreateRequest {
        mcard_template_benefit: to_wire(attrs, template_id),
    }
}

pub fn modify_request(
    attrs: &BenefitAttrs,
    template_id: &str,
    benefit_id: &str,
) -> BenefitModifyRequest {
    BenefitModifyRequest {
        benefit_id: benefit_id.to_string(),
        mcard_template_benefit: to_wire(attrs, template_id),
    }
}

pub fn delete_request(template_id: &str, benefit_id: &str) -> BenefitDeleteRequest {
    BenefitDeleteRequest {
        benefit_id: benefit_id.to_string(),
        template_id: template_id.to_string(),
    }
}

/// The descriptions of a queried benefit: a JSON array of strings, or lines.
fn descriptions(d: Option<&str>) -> Vec<String> {
    let Some(d) = d else { return Vec::new() };
    serde_json::from_str::<Vec<String>>(d)
        .unwrap_or_else(|_| d.lines().map(str::to_string).collect())
}

/// A queried benefit in the domain's words, on the template at `template`.
pub fn from_wire(q: &McardTemplateBenefitQuery, template: &crate::model::Address) -> BenefitAttrs {
    let link = q
        .ext_info
        .as_deref()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .and_then(|v| {
            v.get("openUrl")
                .and_then(|u| u.as_str())
                .map(str::to_string)
        });
    BenefitAttrs {
        template: template.clone(),
        title: q.title.clone(),
        descriptions: descriptions(q.benefit_desc.as_deref()),
        start: q.start_date.clone(),
        end: q.end_date.clone(),
        link,
    }
}
