//! One typed request and response per gateway method, with the official SDK's
//! field names and nesting (alipay-sdk-python `domain/*Model.py`, `*DTO.py`,
//! `response/*Response.py`; see reference/card-apis.md).
//!
//! These are plain data types: the sandbox deserializes requests into the same
//! structs and refuses any field name they do not know (nested DTOs carry
//! `deny_unknown_fields`; the flattened template models are checked by a
//! round-trip in the sandbox, since serde cannot deny unknown fields through
//! `flatten`), as a gateway checking against the SDK's model classes would.
//!
//! Optional fields are omitted when absent (the SDK drops falsy fields).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A gateway method with a typed request and response.
pub trait ApiRequest: Serialize + Sized {
    const METHOD: &'static str;
    type Response: DeserializeOwned;
    /// Whether a failed call may be sent again (the governor's business).
    const RETRY: Retry = Retry::Repeatable;

    /// Whether a verified success carries what the method must return (its
    /// ids, well-formed). A success without them is a failed call.
    fn check(_response: &Self::Response) -> Result<(), String> {
        Ok(())
    }

    /// How the request travels. Default: the whole request is `biz_content`.
    fn encoding(&self) -> Encoding {
        Encoding::BizContent(biz_json(self))
    }
}

/// Whether a call may be sent again after a failure that can be retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retry {
    /// Sending it again is harmless (idempotent, or keyed by a request id).
    #[default]
    Repeatable,
    /// Sent again, but an attempt whose outcome is in doubt may have taken
    /// effect (an image upload: a second image no state knows); counted.
    NotIdempotent,
    /// Only after a throttling answer (the gateway refused it before doing
    /// anything): a single-use code must not be spent twice.
    OnlyWhenThrottled,
}

/// How a request's fields travel to the gateway (the client signs and sends
/// them; this is plain data).
#[derive(Debug, Clone)]
pub enum Encoding {
    /// One `biz_content` parameter holding the request as JSON.
    BizContent(String),
    /// Top-level text parameters and file parts (image upload).
    TopLevel {
        params: Vec<(String, String)>,
        files: Vec<FilePart>,
    },
}

/// A file part of a multipart upload (never signed).
#[derive(Debug, Clone)]
pub struct FilePart {
    pub field: String,
    pub filename: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// Compact JSON for `biz_content`.
pub fn biz_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("bug: request types always serialize")
}

macro_rules! api {
    ($req:ty, $method:literal, $resp:ty) => {
        impl ApiRequest for $req {
            const METHOD: &'static str = $method;
            type Response = $resp;
        }
    };
    ($req:ty, $method:literal, $resp:ty, check = $check:expr) => {
        impl ApiRequest for $req {
            const METHOD: &'static str = $method;
            type Response = $resp;
            fn check(response: &Self::Response) -> Result<(), String> {
                $check(response)
            }
        }
    };
}

/// An id the gateway returns: present, at most `max` characters, and only
/// letters, digits, `_` and `-` (never empty, never spaces or markup).
pub fn check_id(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` is missing"));
    }
    if value.len() > max
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "`{field}` is not a well-formed id ({} characters)",
            value.chars().count()
        ));
    }
    Ok(())
}

/// An http(s) URL the gateway returns (`decoded` once when URL-encoded).
pub fn check_url(field: &str, value: &str, encoded: bool) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` is missing"));
    }
    let decoded = if encoded {
        decode_once(value)
    } else {
        value.to_string()
    };
    match url::Url::parse(&decoded) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && value.len() <= 102_400 => Ok(()),
        _ => Err(format!("`{field}` is not an http(s) URL")),
    }
}

/// A URL the gateway sent URL-encoded, decoded once (as a form value).
pub fn decode_once(s: &str) -> String {
    form_urlencoded::parse(format!("u={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

// ---------------------------------------------------------------- image upload

/// `alipay.offline.material.image.upload`: top-level params, not biz_content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageUploadRequest {
    pub image_type: String,
    pub image_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pid: Option<String>,
    #[serde(skip)]
    pub image_content: Vec<u8>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageUploadResponse {
    #[serde(default)]
    pub image_id: String,
    #[serde(default)]
    pub image_url: String,
}

impl ApiRequest for ImageUploadRequest {
    const METHOD: &'static str = "alipay.offline.material.image.upload";
    const RETRY: Retry = Retry::NotIdempotent;
    type Response = ImageUploadResponse;

    fn check(r: &ImageUploadResponse) -> Result<(), String> {
        check_id("image_id", &r.image_id, 128)?;
        check_url("image_url", &r.image_url, false)
    }

    fn encoding(&self) -> Encoding {
        let mut params = vec![
            ("image_type".to_string(), self.image_type.clone()),
            ("image_name".to_string(), self.image_name.clone()),
        ];
        if let Some(pid) = &self.image_pid {
            params.push(("image_pid".into(), pid.clone()));
        }
        Encoding::TopLevel {
            params,
            files: vec![FilePart {
                field: "image_content".into(),
                filename: format!("{}.{}", self.image_name, self.image_type.to_lowercase()),
                mime: mime_for(&self.image_type).into(),
                bytes: self.image_content.clone(),
            }],
        }
    }
}

/// MIME type for an `image_type` value.
pub fn mime_for(image_type: &str) -> &'static str {
    match image_type.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        _ => "application/octet-stream",
    }
}

// ---------------------------------------------------------------- template DTOs

/// TemplateStyleInfoDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateStyleInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_show_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bg_color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_text_list_enable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_image_enable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_descriptions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slogan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slogan_img_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner_img_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_info_layout: Option<String>,
}

/// MoreInfoDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MoreInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descs: Option<Vec<String>>,
}

/// TemplateColumnInfoDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateColumnInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operate_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more_info: Option<MoreInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_title: Option<String>,
}

/// TemplateFieldRuleDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateFieldRule {
    pub field_name: String,
    pub rule_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_value: Option<String>,
}

/// TemplateActionMiniAppUrlDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateActionMiniAppUrl {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_page_param: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_query_param: Option<String>,
    /// A string "true"/"false" in the SDK, not a boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_on_list: Option<String>,
}

/// TemplateActionInfoDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateActionInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_app_url: Option<TemplateActionMiniAppUrl>,
}

/// TemplateBenefitInfoDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateBenefitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benefit_desc: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
}

/// TemplateCardLevelConfDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateCardLevelConf {
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_show_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_desc: Option<String>,
}

/// TemplateRightsContentDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateRightsContent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_id: Option<String>,
}

/// TemplateOpenCardConfDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateOpenCardConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card_source_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_rights: Option<Vec<TemplateRightsContent>>,
}

/// TemplateMdcodeNotifyConfDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateMdcodeNotifyConf {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_params: Option<String>,
}

/// PubChannelDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PubChannel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pub_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_info: Option<String>,
}

/// TemplateFormFields
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateFormFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<Vec<String>>,
}

/// TemplateFormConfig
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateFormConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<TemplateFormFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card_mini_app_id: Option<String>,
}

/// The template body shared by create, modify and query. Flattened into each.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TemplateBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_no_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_no_suffix_len: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_off_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_style_info: Option<TemplateStyleInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_info_list: Option<Vec<TemplateColumnInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_rule_list: Option<Vec<TemplateFieldRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_action_list: Option<Vec<TemplateActionInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_benefit_info: Option<Vec<TemplateBenefitInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card_conf: Option<TemplateOpenCardConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdcode_notify_conf: Option<TemplateMdcodeNotifyConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shop_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pub_channels: Option<Vec<PubChannel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi_app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_form_config: Option<TemplateFormConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_spec_tag: Option<String>,
}

/// AlipayMarketingCardTemplateCreateModel. The level list is `card_level_conf`
/// (singular) in create and modify, `card_level_confs` in the query response.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TemplateCreateRequest {
    pub request_id: String,
    pub card_type: String,
    #[serde(flatten)]
    pub body: TemplateBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_level_conf: Option<Vec<TemplateCardLevelConf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_label_list: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TemplateIdResponse {
    #[serde(default)]
    pub template_id: String,
}
api!(
    TemplateCreateRequest,
    "alipay.marketing.card.template.create",
    TemplateIdResponse,
    check = |r: &TemplateIdResponse| check_id("template_id", &r.template_id, 128)
);

/// template.create sent exactly as journalled (the request's JSON), so a
/// replay after a crash is byte-for-byte the same request.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalledCreate(pub Value);

impl Serialize for JournalledCreate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl ApiRequest for JournalledCreate {
    const METHOD: &'static str = TemplateCreateRequest::METHOD;
    type Response = TemplateIdResponse;
    fn check(r: &TemplateIdResponse) -> Result<(), String> {
        TemplateCreateRequest::check(r)
    }
    fn encoding(&self) -> Encoding {
        Encoding::BizContent(self.0.to_string())
    }
}

/// AlipayMarketingCardTemplateModifyModel: create's fields minus `card_type` and
/// `service_label_list`, plus `template_id`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TemplateModifyRequest {
    pub request_id: String,
    pub template_id: String,
    #[serde(flatten)]
    pub body: TemplateBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_level_conf: Option<Vec<TemplateCardLevelConf>>,
}
api!(
    TemplateModifyRequest,
    "alipay.marketing.card.template.modify",
    TemplateIdResponse,
    check = |r: &TemplateIdResponse| check_id("template_id", &r.template_id, 128)
);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateQueryRequest {
    pub template_id: String,
}

/// AlipayMarketingCardTemplateQueryResponse (no `template_id`, no `write_off_type`
/// in the SDK class; extra fields a gateway sends are ignored).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TemplateQueryResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_type: Option<String>,
    #[serde(flatten)]
    pub body: TemplateBody,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_level_confs: Option<Vec<TemplateCardLevelConf>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_label_list: Option<Vec<String>>,
}
api!(
    TemplateQueryRequest,
    "alipay.marketing.card.template.query",
    TemplateQueryResponse
);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TemplateBatchQueryRequest {
    pub page_no: i64,
    pub page_size: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct McardTemplate {
    #[serde(default)]
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_create: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gmt_modified: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_style_info: Option<TemplateStyleInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TemplateBatchQueryResponse {
    #[serde(default)]
    pub mcard_template: Vec<McardTemplate>,
    #[serde(default)]
    pub template_total: i64,
}
api!(
    TemplateBatchQueryRequest,
    "alipay.marketing.card.template.batchquery",
    TemplateBatchQueryResponse,
    check = |r: &TemplateBatchQueryResponse| {
        r.mcard_template
            .iter()
            .try_for_each(|t| check_id("mcard_template[].template_id", &t.template_id, 128))
    }
);

// ---------------------------------------------------------------- form, URL

/// OpenFormFieldDO: `required` and `optional` are strings holding JSON
/// `{"common_fields":[...]}` (doubly encoded on the wire).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpenFormField {
    pub required: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<String>,
}

impl OpenFormField {
    /// Encode field lists the way the gateway expects.
    pub fn from_lists(required: &[String], optional: &[String]) -> Self {
        let enc = |v: &[String]| serde_json::json!({ "common_fields": v }).to_string();
        OpenFormField {
            required: enc(required),
            optional: (!optional.is_empty()).then(|| enc(optional)),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FormTemplateSetRequest {
    pub template_id: String,
    pub fields: OpenFormField,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EmptyResponse {}
api!(
    FormTemplateSetRequest,
    "alipay.marketing.card.formtemplate.set",
    EmptyResponse
);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActivateUrlApplyRequest {
    pub template_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_app_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActivateUrlApplyResponse {
    /// URL-encoded by the gateway: decode once before use.
    #[serde(default)]
    pub apply_card_url: String,
}
api!(
    ActivateUrlApplyRequest,
    "alipay.marketing.card.activateurl.apply",
    ActivateUrlApplyResponse,
    check = |r: &ActivateUrlApplyResponse| check_url("apply_card_url", &r.apply_card_url, true)
);

// ---------------------------------------------------------------- cards

/// CardUserInfo
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CardUserInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_uni_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_uni_id_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
}

/// CardFrontTextDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CardFrontText {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// MdCodeInfoDTO
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MdCodeInfo {
    pub code_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire_time: Option<String>,
    pub time_stamp: i64,
}

/// MerchantCard (`card_ext_info` in open, `card_info` elsewhere)
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MerchantCard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_card_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_card_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdcode_info: Option<MdCodeInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_text_list: Option<Vec<CardFrontText>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub front_image_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_assets: Option<String>,
}

/// MerchantMenber (sic)
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MerchantMenber {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// (sic) `gende`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gende: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub birth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CardOpenRequest {
    pub out_serial_no: String,
    pub card_template_id: String,
    pub card_user_info: CardUserInfo,
    pub card_ext_info: MerchantCard,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_ext_info: Option<MerchantMenber>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card_channel_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CardOpenResponse {
    #[serde(default)]
    pub card_info: MerchantCard,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card_channel_id: Option<String>,
}
api!(
    CardOpenRequest,
    "alipay.marketing.card.open",
    CardOpenResponse,
    check = |r: &CardOpenResponse| check_id(
        "card_info.biz_card_no",
        r.card_info.biz_card_no.as_deref().unwrap_or(""),
        128
    )
);

/// MerchantCardMsgInfo
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MerchantCardMsgInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_point: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CardUpdateRequest {
    pub target_card_no: String,
    pub target_card_no_type: String,
    pub occur_time: String,
    pub card_info: MerchantCard,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_card_msg_info: Option<MerchantCardMsgInfo>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CardUpdateResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_code: Option<String>,
}
api!(
    CardUpdateRequest,
    "alipay.marketing.card.update",
    CardUpdateResponse
);

/// BenefitInfoDetail: a benefit a trade used or gained.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenefitInfoDetail {
    /// `PRE_FUND` (prepaid value), `DISCOUNT` (not in a gain list), `COUPON`.
    pub benefit_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// For a COUPON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// AlipayMarketingCardConsumeSyncModel: one trade on a card, with the card's
/// state after it (`card_info`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConsumeSyncRequest {
    pub target_card_no: String,
    /// `BIZ_CARD`.
    pub target_card_no_type: String,
    /// `OPEN`, `TRADE`, `DEPOSIT`, `RETURN`.
    pub trade_type: String,
    pub trade_no: String,
    /// When the member paid (yyyy-MM-dd HH:mm:ss); a later time than the
    /// previous sync's updates the card.
    pub trade_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act_pay_amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_info: Option<MerchantCard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_benefit_list: Option<Vec<BenefitInfoDetail>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gain_benefit_list: Option<Vec<BenefitInfoDetail>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shop_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    /// `ALIPAY`, `ENTITY`, `OTHER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swipe_cert_type: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConsumeSyncResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_card_no: Option<String>,
}
api!(
    ConsumeSyncRequest,
    "alipay.marketing.card.consume.sync",
    ConsumeSyncResponse
);

/// AlipayMarketingCardMessageNotifyModel: a message to a card's holder.
/// `notify_type` POINT_REMIND (points about to expire) is the one type the
/// SDK documents; `notify_info` is a JSON object as a string
/// (`{"expired_point": "100", "expired_time": "yyyy-MM-dd HH:mm:ss"}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MessageNotifyRequest {
    pub target_card_no: String,
    /// `BIZ_CARD`.
    pub target_card_no_type: String,
    pub notify_type: String,
    /// The merchant's number for this message: Alipay sends one message per
    /// notify_no (idempotent).
    pub notify_no: String,
    pub notify_info: String,
    pub occur_time: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MessageNotifyResponse {}
api!(
    MessageNotifyRequest,
    "alipay.marketing.card.message.notify",
    MessageNotifyResponse
);

/// McardTemplateBenefit: a dated benefit on a template's detail page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct McardTemplateBenefit {
    pub template_id: String,
    pub title: String,
    pub benefit_desc: Vec<String>,
    /// yyyy-MM-dd HH:mm:ss
    pub start_date: String,
    pub end_date: String,
    /// JSON text; `{"openUrl": "..."}` links the merchant's offer page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_info: Option<String>,
}

/// AlipayMarketingCardBenefitCreateModel
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenefitCreateRequest {
    pub mcard_template_benefit: McardTemplateBenefit,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BenefitCreateResponse {
    #[serde(default)]
    pub benefit_id: String,
}

impl ApiRequest for BenefitCreateRequest {
    const METHOD: &'static str = "alipay.marketing.card.benefit.create";
    type Response = BenefitCreateResponse;
    /// No idempotency key: sent again only after a throttling answer (the
    /// gateway did nothing); a create in doubt is found by the executor's
    /// look at the template's benefits before the next create.
    const RETRY: Retry = Retry::OnlyWhenThrottled;
    fn check(r: &Self::Response) -> Result<(), String> {
        check_id("benefit_id", &r.benefit_id, 64)
    }
}

/// AlipayMarketingCardBenefitModifyModel
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenefitModifyRequest {
    pub benefit_id: String,
    pub mcard_template_benefit: McardTemplateBenefit,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BenefitResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<bool>,
}
api!(
    BenefitModifyRequest,
    "alipay.marketing.card.benefit.modify",
    BenefitResult
);

/// AlipayMarketingCardBenefitDeleteModel
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenefitDeleteRequest {
    pub benefit_id: String,
    pub template_id: String,
}
api!(
    BenefitDeleteRequest,
    "alipay.marketing.card.benefit.delete",
    BenefitResult
);

/// AlipayMarketingCardBenefitQueryModel: one benefit, or a template's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BenefitQueryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benefit_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
}

/// McardTemplateBenefitQuery: `benefit_desc` is one string here (the SDK's
/// model; cardform reads a JSON array or lines).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct McardTemplateBenefitQuery {
    #[serde(default)]
    pub benefit_id: String,
    #[serde(default)]
    pub template_id: String,
    #[serde(default)]
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benefit_desc: Option<String>,
    #[serde(default)]
    pub start_date: String,
    #[serde(default)]
    pub end_date: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_info: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BenefitQueryResponse {
    #[serde(default)]
    pub mcard_template_benefit_query: Vec<McardTemplateBenefitQuery>,
}
api!(
    BenefitQueryRequest,
    "alipay.marketing.card.benefit.query",
    BenefitQueryResponse
);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CardQueryRequest {
    pub target_card_no_type: String,
    pub target_card_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_user_info: Option<CardUserInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CardQueryResponse {
    #[serde(default)]
    pub card_info: MerchantCard,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_url: Option<String>,
}
api!(
    CardQueryRequest,
    "alipay.marketing.card.query",
    CardQueryResponse
);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CardDeleteRequest {
    pub out_serial_no: String,
    pub target_card_no: String,
    pub target_card_no_type: String,
    pub reason_code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_info: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CardDeleteResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_serial_no: Option<String>,
}
api!(
    CardDeleteRequest,
    "alipay.marketing.card.delete",
    CardDeleteResponse
);

// ------------------------------------------------------------ members

/// `alipay.system.oauth.token` (card-apis.md §10a): a member's `auth_code`
/// (or a refresh token) for the access token later calls carry as
/// `auth_token`. Its parameters are top-level, not `biz_content`. The code and
/// refresh token are secrets: `Debug` redacts them.
#[derive(Debug, Clone, Serialize)]
pub struct OauthTokenRequest {
    pub grant_type: String,
    #[serde(skip)]
    pub code: Option<crate::util::secret::Secret>,
    #[serde(skip)]
    pub refresh_token: Option<crate::util::secret::Secret>,
}

impl OauthTokenRequest {
    pub fn code(code: &crate::util::secret::Secret) -> Self {
        OauthTokenRequest {
            grant_type: "authorization_code".into(),
            code: Some(code.clone()),
            refresh_token: None,
        }
    }
    pub fn refresh(token: &crate::util::secret::Secret) -> Self {
        OauthTokenRequest {
            grant_type: "refresh_token".into(),
            code: None,
            refresh_token: Some(token.clone()),
        }
    }
}

/// AlipaySystemOauthTokenResponse. The tokens are secrets from the moment
/// they are read.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OauthTokenResponse {
    #[serde(default)]
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re_expires_in: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_start: Option<String>,
}

impl std::fmt::Debug for OauthTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OauthTokenResponse { <redacted> }")
    }
}

impl ApiRequest for OauthTokenRequest {
    const METHOD: &'static str = "alipay.system.oauth.token";
    type Response = OauthTokenResponse;
    // A code is single-use: a retry after the gateway took it would fail
    // anyway, so this call goes through the limiter only.
    const RETRY: Retry = Retry::OnlyWhenThrottled;

    fn check(r: &OauthTokenResponse) -> Result<(), String> {
        if r.access_token.is_empty() || r.access_token.len() > 256 {
            return Err("`access_token` is missing or too long".into());
        }
        match (&r.user_id, &r.open_id) {
            (None, None) => Err("neither `user_id` nor `open_id` came back".into()),
            _ => Ok(()),
        }
    }

    fn encoding(&self) -> Encoding {
        let mut params = vec![("grant_type".to_string(), self.grant_type.clone())];
        if let Some(c) = &self.code {
            params.push(("code".into(), c.expose().to_string()));
        }
        if let Some(r) = &self.refresh_token {
            params.push(("refresh_token".into(), r.expose().to_string()));
        }
        Encoding::TopLevel {
            params,
            files: Vec::new(),
        }
    }
}

/// `alipay.marketing.card.activateform.query` (card-apis.md §10), sent with
/// the member's `auth_token`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActivateFormQueryRequest {
    pub biz_type: String,
    pub template_id: String,
    pub request_id: String,
}

/// `infos` is a string holding a JSON array of one-key objects
/// (`[{"OPEN_FORM_FIELD_MOBILE":"1836..."}, ...]`): the member's answers.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActivateFormQueryResponse {
    #[serde(default)]
    pub infos: String,
}

impl std::fmt::Debug for ActivateFormQueryResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActivateFormQueryResponse { <personal data> }")
    }
}

impl ActivateFormQueryResponse {
    /// The answers as field -> value (a malformed `infos` is an error, named
    /// without its content).
    pub fn fields(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        let list: Vec<std::collections::BTreeMap<String, Value>> =
            serde_json::from_str(&self.infos).map_err(|e| {
                format!(
                    "`infos` is not a JSON array of objects (column {})",
                    e.column()
                )
            })?;
        Ok(form_fields(list))
    }
}

/// A form's answers, a list of `{field: value}` objects, as field -> value
/// (other values than strings as their JSON text): activateform.query's
/// `infos` and the open-card SPI's `user_info`.
pub fn form_fields<I>(list: I) -> std::collections::BTreeMap<String, String>
where
    I: IntoIterator,
    I::Item: IntoIterator<Item = (String, Value)>,
{
    let mut out = std::collections::BTreeMap::new();
    for one in list {
        for (k, v) in one {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            out.insert(k, v);
        }
    }
    out
}
api!(
    ActivateFormQueryRequest,
    "alipay.marketing.card.activateform.query",
    ActivateFormQueryResponse
);

/// Every method this client knows, for `cardform api` and the sandbox.
/// Methods whose success answer may come without `code` and `msg`: the
/// gateway answers `alipay.system.oauth.token` with the token fields only
/// (Alipay's easy SDK reads a null code for it; the Python SDK judges any
/// answer by the absence of `sub_code`). Their answers are still verified.
pub const SUCCESS_WITHOUT_CODE: &[&str] = &[OauthTokenRequest::METHOD];

pub const METHODS: &[&str] = &[
    ImageUploadRequest::METHOD,
    TemplateCreateRequest::METHOD,
    TemplateModifyRequest::METHOD,
    TemplateQueryRequest::METHOD,
    TemplateBatchQueryRequest::METHOD,
    FormTemplateSetRequest::METHOD,
    ActivateUrlApplyRequest::METHOD,
    CardOpenRequest::METHOD,
    CardUpdateRequest::METHOD,
    CardQueryRequest::METHOD,
    CardDeleteRequest::METHOD,
    ConsumeSyncRequest::METHOD,
    MessageNotifyRequest::METHOD,
    BenefitCreateRequest::METHOD,
    BenefitModifyRequest::METHOD,
    BenefitDeleteRequest::METHOD,
    BenefitQueryRequest::METHOD,
    OauthTokenRequest::METHOD,
    ActivateFormQueryRequest::METHOD,
];
