//! Per resource kind: desired attributes <-> gateway calls. Builds the typed
//! requests (resolving image addresses to image ids) and reads ids back. The
//! only place that maps the domain's words onto the gateway's ([`template`]).
//! It must never retry, sleep or touch state: calls go through the governed
//! gateway, results go back to the executor.

use std::sync::Arc;

use serde_json::Value;

use crate::alipay::GatewayError;
use crate::alipay::methods::*;
use crate::gateway::governor::Governor;
use crate::gateway::{Gateway, Scope};
use crate::model::{ActivationUrlAttrs, FormAttrs, ImageAttrs, TemplateAttrs};
use crate::state::Ids;

pub mod template;

pub use template::{ImageIds, MissingImage};

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
        let bytes = crate::bounded::read(&attrs.source, 5 * 1024 * 1024).map_err(fail)?;
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
        let resp = self.gateway.upload_image(at, &req).await?;
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
        let resp = self.gateway.list_templates(at, &req).await?;
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
            let resp = self.gateway.list_templates(at, &req).await?;
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
        self.gateway.query_template(at, &req).await
    }

    /// Send a template.create exactly as journalled.
    pub async fn create_template(
        &self,
        at: &Scope,
        request: &Value,
    ) -> Result<String, GatewayError> {
        Ok(self.gateway.create_template(at, request).await?.template_id)
    }

    pub async fn modify_template(
        &self,
        at: &Scope,
        req: &TemplateModifyRequest,
    ) -> Result<(), GatewayError> {
        self.gateway.modify_template(at, req).await.map(|_| ())
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
        self.gateway.set_form(at, &req).await.map(|_| ())
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
        let resp = self.gateway.apply_url(at, &req).await?;
        Ok(decode_once(&resp.apply_card_url))
    }
}
