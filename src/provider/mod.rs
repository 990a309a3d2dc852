//! Per resource kind: desired attributes <-> gateway calls. Builds the typed
//! requests (resolving image addresses to image ids) and reads ids back. The
//! only place that maps the domain's words onto the gateway's ([`template`]).
//! It must never retry, sleep or touch state: calls go through the governed
//! gateway, results go back to the executor.
//!
//! One module per resource kind ([`image`], [`template`], [`form`],
//! [`activation_url`]) says its calls (and so its share of the call budget,
//! [`budget`]), the ids it shows, and what stays at Alipay when the state
//! forgets it; the functions below are the one place that picks the module
//! for a kind, so the planner, the executor and the views never match on
//! kinds for these facts. [`card`] maps members' card rows.

use std::sync::Arc;

use serde_json::Value;

use crate::alipay::GatewayError;
use crate::alipay::methods::*;
use crate::gateway::governor::Governor;
use crate::gateway::{Scope, Typed};
use crate::model::{ActivationUrlAttrs, BenefitAttrs, FormAttrs, ImageAttrs, Kind, TemplateAttrs};
use crate::plan::Action;
use crate::state::Ids;

pub mod activation_url;
pub mod benefit;
pub mod budget;
pub mod card;
pub mod form;
pub mod image;
pub mod template;

pub use budget::budget;

pub use template::{ImageIds, MissingImage};

/// The calls a change of `kind` makes for `action`.
pub fn calls(kind: Kind, action: Action) -> &'static [&'static str] {
    match kind {
        Kind::Image => image::calls(action),
        Kind::Template => template::calls(action),
        Kind::Form => form::calls(action),
        Kind::ActivationUrl => activation_url::calls(action),
        Kind::Benefit => benefit::calls(action),
    }
}

/// A resource's own ids, Terraform style: ` [template_id=...]` (a form and an
/// activation URL also record their template's id, not shown again); empty
/// when it has none.
pub fn ids_text(kind: Kind, ids: &Ids) -> String {
    let parts = match kind {
        Kind::Image => image::shown_ids(ids),
        Kind::Template => template::shown_ids(ids),
        Kind::Form => form::shown_ids(ids),
        Kind::ActivationUrl => activation_url::shown_ids(ids),
        Kind::Benefit => benefit::shown_ids(ids),
    };
    if parts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", parts.join(" "))
    }
}

/// Whether forgetting a resource with these ids leaves something at Alipay
/// (templates and images have no delete; a benefit is deleted first).
pub fn left_at_gateway(kind: Kind, ids: &Ids) -> bool {
    match kind {
        Kind::Image => image::left_at_gateway(ids),
        Kind::Template => template::left_at_gateway(ids),
        Kind::Form | Kind::ActivationUrl | Kind::Benefit => false,
    }
}

/// Why a template could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadTemplateError {
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("it reads oddly: {0}")]
    Odd(String),
}

pub fn create_request(
    attrs: &TemplateAttrs,
    request_id: &str,
    ids: &ImageIds,
) -> Result<TemplateCreateRequest, MissingImage> {
    let (body, card_level_conf) = template::to_wire(attrs, ids)?;
    Ok(TemplateCreateRequest {
        request_id: request_id.to_string(),
        card_type: template::card_type_code(attrs.card_type).to_string(),
        body,
        card_level_conf,
        service_label_list: None,
    })
}

pub fn modify_request(
    attrs: &TemplateAttrs,
    template_id: &str,
    request_id: &str,
    ids: &ImageIds,
) -> Result<TemplateModifyRequest, MissingImage> {
    let (body, card_level_conf) = template::to_wire(attrs, ids)?;
    Ok(TemplateModifyRequest {
        request_id: request_id.to_string(),
        template_id: template_id.to_string(),
        body,
        card_level_conf,
    })
}

/// A fresh idempotency key: 32 characters, the most template.create allows.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The domain's side of the gateway: builds each typed request from desired
/// attributes and reads the ids back, through the governed gateway.
pub struct Provider {
    pub gateway: Arc<Governor>,
}

impl Provider {
    pub fn new(gateway: Arc<Governor>) -> Self {
        Provider { gateway }
    }

    pub async fn upload_image(
        &self,
        at: &Scope,
        name: &str,
        attrs: &ImageAttrs,
    ) -> Result<Ids, GatewayError> {
        let fail = |detail: String| GatewayError::Request {
            method: ImageUploadRequest::METHOD.into(),
            detail,
        };
        // Any size the gateway takes; the content check below says if it changed.
        let bytes = crate::util::bounded::read(&attrs.source, 5 * 1024 * 1024).map_err(fail)?;
        // The bytes must be the ones planned: a file edited since is not
        // uploaded under the old plan's name.
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        if sha != attrs.sha256 {
            return Err(fail(format!(
                "`{}` changed since the plan was made (sha256 {sha}, planned {})\nhint: run plan again",
                attrs.file, attrs.sha256
            )));
        }
        let req = ImageUploadRequest {
            image_type: attrs.image_type.clone(),
            image_name: name.to_string(),
            image_pid: None,
            image_content: bytes,
        };
        let resp = self.gateway.call(at, &req).await?;
        Ok(Ids {
            image_id: Some(resp.image_id),
            image_url: Some(resp.image_url),
            ..Ids::default()
        })
    }

    /// One page (of 20) of the templates the gateway holds for the merchant
    /// (`token`): their total and this page's ids.
    pub async fn templates_at_gateway(
        &self,
        at: &Scope,
        page_no: i64,
    ) -> Result<(i64, Vec<String>), GatewayError> {
        let req = TemplateBatchQueryRequest {
            page_no,
            page_size: 20,
        };
        let resp = self.gateway.call(at, &req).await?;
        Ok((
            resp.template_total.max(resp.mcard_template.len() as i64),
            resp.mcard_template
                .into_iter()
                .map(|t| t.template_id)
                .collect(),
        ))
    }

    /// Every template the gateway holds for the merchant (batchquery, every
    /// page of 20, at most `max_pages`): basic fields only.
    pub async fn all_templates(
        &self,
        at: &Scope,
        max_pages: i64,
    ) -> Result<Vec<McardTemplate>, GatewayError> {
        let mut all = Vec::new();
        for page_no in 1..=max_pages {
            let req = TemplateBatchQueryRequest {
                page_no,
                page_size: 20,
            };
            let resp = self.gateway.call(at, &req).await?;
            let last = resp.mcard_template.len() < 20;
            all.extend(resp.mcard_template);
            if last || page_no * 20 >= resp.template_total {
                break;
            }
        }
        Ok(all)
    }

    /// A template as the gateway holds it, in the domain's words (its image
    /// fields hold the gateway's image ids, `image_hashes` is empty).
    /// template.query does not return the write-off kind: `write_off` stands
    /// in when it is absent, and the flag says it did.
    pub async fn read_template(
        &self,
        at: &Scope,
        template_id: &str,
        write_off: crate::model::template::WriteOff,
    ) -> Result<(TemplateAttrs, bool), ReadTemplateError> {
        let t = self.template(at, template_id).await?;
        let mut body = t.body;
        let stood_in = body.write_off_type.is_none();
        if stood_in {
            body.write_off_type = Some(template::write_off_code(write_off).to_string());
        }
        let card_type = t.card_type.unwrap_or_else(|| "OUT_MEMBER_CARD".into());
        let attrs = template::from_wire(
            &card_type,
            &body,
            t.card_level_confs.as_deref(),
            Default::default(),
        )
        .map_err(ReadTemplateError::Odd)?;
        Ok((attrs, stood_in))
    }

    /// One whole template (template.query).
    pub async fn template(
        &self,
        at: &Scope,
        template_id: &str,
    ) -> Result<TemplateQueryResponse, GatewayError> {
        let req = TemplateQueryRequest {
            template_id: template_id.to_string(),
        };
        self.gateway.call(at, &req).await
    }

    /// Send a template.create exactly as journalled.
    pub async fn create_template(
        &self,
        at: &Scope,
        request: &Value,
    ) -> Result<String, GatewayError> {
        Ok(self
            .gateway
            .call(at, &JournalledCreate(request.clone()))
            .await?
            .template_id)
    }

    pub async fn modify_template(
        &self,
        at: &Scope,
        req: &TemplateModifyRequest,
    ) -> Result<(), GatewayError> {
        self.gateway.call(at, req).await.map(|_| ())
    }

    pub async fn set_form(
        &self,
        at: &Scope,
        template_id: &str,
        attrs: &FormAttrs,
    ) -> Result<(), GatewayError> {
        let req = FormTemplateSetRequest {
            template_id: template_id.to_string(),
            fields: template::form_fields(&attrs.required, &attrs.optional),
        };
        self.gateway.call(at, &req).await.map(|_| ())
    }

    /// Returns the URL decoded once (the gateway sends it URL-encoded).
    pub async fn apply_url(
        &self,
        at: &Scope,
        template_id: &str,
        attrs: &ActivationUrlAttrs,
    ) -> Result<String, GatewayError> {
        let req = ActivateUrlApplyRequest {
            template_id: template_id.to_string(),
            callback: attrs.callback.clone(),
            out_string: attrs.out_string.clone(),
            follow_app_id: attrs.follow_app_id.clone(),
        };
        let resp = self.gateway.call(at, &req).await?;
        Ok(decode_once(&resp.apply_card_url))
    }

    /// The benefits on a template (benefit.query by template_id).
    pub async fn benefits_of(
        &self,
        at: &Scope,
        template_id: &str,
    ) -> Result<Vec<McardTemplateBenefitQuery>, GatewayError> {
        let req = BenefitQueryRequest {
            benefit_id: None,
            template_id: Some(template_id.to_string()),
        };
        Ok(self
            .gateway
            .call(at, &req)
            .await?
            .mcard_template_benefit_query)
    }

    /// Create a benefit on `template_id`, unless one with the same content
    /// is there already (a create whose answer was lost): its benefit_id,
    /// and whether it was adopted.
    pub async fn create_benefit(
        &self,
        at: &Scope,
        template_id: &str,
        attrs: &BenefitAttrs,
    ) -> Result<(String, bool), GatewayError> {
        let there = self.benefits_of(at, template_id).await?;
        if let Some(same) = there
            .iter()
            .find(|q| &benefit::from_wire(q, &attrs.template) == attrs)
        {
            return Ok((same.benefit_id.clone(), true));
        }
        let req = benefit::create_request(attrs, template_id);
        Ok((self.gateway.call(at, &req).await?.benefit_id, false))
    }

    pub async fn modify_benefit(
        &self,
        at: &Scope,
        template_id: &str,
        benefit_id: &str,
        attrs: &BenefitAttrs,
    ) -> Result<(), GatewayError> {
        let req = benefit::modify_request(attrs, template_id, benefit_id);
        self.gateway.call(at, &req).await.map(|_| ())
    }

    pub async fn delete_benefit(
        &self,
        at: &Scope,
        template_id: &str,
        benefit_id: &str,
    ) -> Result<(), GatewayError> {
        let req = benefit::delete_request(template_id, benefit_id);
        self.gateway.call(at, &req).await.map(|_| ())
    }
}
