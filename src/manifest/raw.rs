//! Raw manifest types: exactly what the YAML says, with readable names. serde +
//! schemars; `cardform schema` prints the JSON Schema generated from these.
//! Nothing past `manifest` sees these types: lowering turns them into
//! `model::Desired`.
//!
//! Every struct refuses unknown keys: in a manifest they are nearly always typos.

use std::collections::BTreeMap;

use schemars::JsonSchema;

pub use crate::model::template::{
    CardField, CardType, Channel, ColumnAction, ColumnLayout, FormField, Operator, RuleKind,
    WriteOff,
};
use serde::{Deserialize, Serialize};

/// One manifest file. A project is a directory of these (or one file); their
/// sections are merged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "cardform manifest")]
pub struct Manifest {
    /// The project's name, which its state is bound to (default: the project
    /// directory's name). Set it where the directory's name is not stable,
    /// as in CI checkouts. At most one file may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Where the gateway is and which app calls it. At most one file may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
    /// Where the state lives, when not a local directory: a PostgreSQL URL
    /// (`--state` and `CARDFORM_STATE` win). At most one file may set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateBlock>,
    /// Values for `${var:NAME}`; `--var NAME=VALUE` overrides them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, String>>,
    /// Shared images and templates that merchants reuse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<Defaults>,
    /// Merchants by name (`merchant.<name>/...` in addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchants: Option<BTreeMap<String, Merchant>>,
    /// Renames: the state's records move from one address to another, with no
    /// gateway call. Delete a block once it has been applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<Vec<Moved>>,
    /// Adopt templates that exist at the gateway (made in the console or by a
    /// script): the state records them at these addresses instead of creating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<Vec<Import>>,
}

/// One template to adopt.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Import {
    /// The template's address in these manifests.
    pub to: String,
    /// Its template_id at the gateway.
    pub id: String,
}

/// One rename. A template's move carries its tiers, form and activation URL;
/// a merchant's move carries everything of that merchant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Moved {
    /// The old address: `merchant.<name>`, or `merchant.<name>/<kind>.<name>`.
    pub from: String,
    /// The new address, of the same sort.
    pub to: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `sandbox` (the embedded sandbox) or the gateway URL, e.g. https://openapi.alipay.com/gateway.do
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Alipay app id that signs every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Where the app private key comes from (never inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<SecretSource>,
    /// Where the Alipay public key comes from (public-key mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alipay_public_key: Option<SecretSource>,
    /// Public-key-certificate mode: the app certificate (appCertPublicKey_<app id>.crt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_cert: Option<SecretSource>,
    /// Public-key-certificate mode: Alipay's public-key certificate (alipayCertPublicKey_RSA2.crt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alipay_cert: Option<SecretSource>,
    /// Public-key-certificate mode: the Alipay root certificate bundle (alipayRootCert.crt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alipay_root_cert: Option<SecretSource>,
    /// AES content encryption: where the base64 AES key comes from (never inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypt_key: Option<SecretSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_type: Option<SignType>,
    /// Calls per second to stay under (Alipay answers 40005 above its limits
    /// and documents no Retry-After): cardform paces calls to these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
}

/// Token-bucket limits, in calls per second (bursts of one second).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Every call of the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    /// Each merchant's calls (one app_auth_token); a merchant's own
    /// `rate_limit` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_merchant: Option<f64>,
    /// Each method's calls, e.g. `alipay.offline.material.image.upload: 5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_method: Option<BTreeMap<String, f64>>,
}

/// The state's location in the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateBlock {
    /// A `postgres://user:password@host/db?schema=NAME` URL; it holds a
    /// password, so it comes from a file or an environment variable, never
    /// inline.
    pub url: SecretSource,
}

/// A secret's source: a file path (relative to the manifest) or an environment
/// variable holding the value. Never the value itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SignType {
    #[serde(rename = "RSA2")]
    Rsa2,
    #[serde(rename = "RSA")]
    Rsa,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Images every merchant gets (each merchant uploads its own copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<BTreeMap<String, Image>>,
    /// Template bases, used with `extends: <name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<BTreeMap<String, Template>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Merchant {
    /// A human name, shown beside the merchant's address in plans (the
    /// per-merchant counts of the human and Markdown plans; `display_names`
    /// in the JSON plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The merchant's app_auth_token, when an ISV acts on its behalf (file or env, never inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_auth_token: Option<SecretSource>,
    /// This merchant's calls per second (over the gateway's `per_merchant`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// Values for `${var:NAME}` in this merchant's templates (over the project's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variables: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<BTreeMap<String, Image>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub templates: Option<BTreeMap<String, Template>>,
    /// Template ids this merchant keeps at the gateway on purpose, outside
    /// this project: `drift` does not report them, and apply's check for
    /// templates the state does not know accounts for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_templates: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Path of the image file, relative to the manifest file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Or an image the gateway already holds, by its image_id (no local bytes;
    /// nothing is uploaded). Replacing it with a `file` later uploads that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub role: ImageRole,
}

/// What the image is for; decides its pixel and byte limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImageRole {
    // Card background: 1020x643 (or larger, same proportions), at most 2 MB.
    Background,
    // Logo: 500x500 (or larger, square), at most 1 MB.
    Logo,
    // Card-front photo: 230x295 (or larger, same proportions), at most 1 MB.
    CardFront,
    // Level icon: at most 1 MB.
    LevelIcon,
    // Any other image (banner, slogan, column or rights icon): at most 1 MB.
    Other,
}

/// A card template. With `tiers`, each tier becomes its own template (own
/// template_id) from this base with the tier's overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// A template in `defaults.templates` this one starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Only `OUT_MEMBER_CARD` exists. Changing it replaces the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_type: Option<CardType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card_number: Option<CardNumber>,
    /// The code shown on the card (write_off_type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_off: Option<WriteOff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<Style>,
    /// Rows of the card detail page (column_info_list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<Column>>,
    /// How card fields are filled at card.open (field_rule_list). Changing them replaces the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_rules: Option<Vec<FieldRule>>,
    /// Buttons on the card (card_action_list), at most 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions: Option<Vec<Action>>,
    /// Dated benefits shown on the card's detail page, each its own
    /// resource (`benefit.<name>`, per tier `benefit.<name>.<level>`):
    /// created, modified, and DELETED at Alipay when removed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dated_benefits: Option<BTreeMap<String, DatedBenefit>>,
    /// Member benefits (template_benefit_info).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub benefits: Option<Vec<Benefit>>,
    /// Claim-card entry (open_card_conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card: Option<OpenCard>,
    /// Where Alipay asks for a merchant dynamic code (mdcode_notify_conf); required for `merchant_dynamic_*` write-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_code_notify: Option<DynamicCodeNotify>,
    /// Alipay shop ids (shop_ids). Removing one replaces the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shops: Option<Vec<String>>,
    /// Promotion channels (pub_channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<Channel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi_app_id: Option<String>,
    /// The activation form (formtemplate.set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form: Option<Form>,
    /// The card-claim URL (activateurl.apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_url: Option<ActivationUrl>,
    /// Level tiers, in order; each becomes its own template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Vec<Template>>,
    /// In a tier: its level code (card_level_conf.level; used at card.open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// In a tier: the level's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_name: Option<String>,
    /// In a tier: an image name for the level icon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_icon: Option<String>,
    /// In a tier: the level's description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_description: Option<String>,
}

/// A dated benefit (benefit.create's McardTemplateBenefit).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatedBenefit {
    /// The benefit's title (at most 64 characters).
    pub title: String,
    /// Lines describing it (1 to 10, each at most 256 characters).
    pub descriptions: Vec<String>,
    /// From when it is shown, `yyyy-MM-dd HH:mm:ss`.
    pub start: String,
    /// Until when, `yyyy-MM-dd HH:mm:ss`; past it, Alipay shows it no more.
    pub end: String,
    /// An http(s) page of the offer (ext_info's openUrl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardNumber {
    /// Prefix of Alipay's card number (biz_no_prefix), at most 10 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Length of the generated suffix, 8 to 32 (biz_no_suffix_len). Changing it replaces the template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 32))]
    pub suffix_length: Option<u8>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Style {
    /// Card name in the wallet (card_show_name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Image name of the logo (logo_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
    /// Image name of the background (background_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<String>,
    /// Font colour of the middle info area, e.g. `rgb(55,112,179)` (bg_color).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slogan: Option<String>,
    /// Image name (slogan_img_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slogan_image: Option<String>,
    /// Image name (banner_img_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_descriptions: Option<Vec<String>>,
    /// Show the card's front text lines (front_text_list_enable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_front_text: Option<bool>,
    /// Show the card-front photo (front_image_enable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_front_image: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_layout: Option<ColumnLayout>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// `BALANCE`, `POINT`, `LEVEL`, `TELEPHONE`, or a custom code.
    pub code: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What tapping the row does (operate_type); default `static`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ColumnAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<More>,
    /// Image name of the grid icon (icon_id); required with the grid layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_title: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct More {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptions: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    pub field: CardField,
    pub rule: RuleKind,
    /// For `from_request`: the card_ext_info key; for `date_in_future`: `<n>m` or `<n>d`; for `const`: the value.
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub code: String,
    pub text: String,
    /// An http(s) or alipays:// URL; give this or `mini_app`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_app: Option<MiniApp>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MiniApp {
    pub app_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_on_list: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Benefit {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptions: Option<Vec<String>>,
    /// `yyyy-MM-dd HH:mm:ss`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// `yyyy-MM-dd HH:mm:ss`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenCard {
    /// Who operates the claim page (open_card_source_type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operated_by: Option<Operator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app_id: Option<String>,
    /// http(s) URL of the claim page (open_card_url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<Vec<Right>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Right {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Image name (logo_id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DynamicCodeNotify {
    /// https URL Alipay calls when a user opens the card.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_params: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Form {
    /// Fields the user must fill (at least one).
    pub required: Vec<FormField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<Vec<FormField>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivationUrl {
    /// http(s) URL receiving the form-submission callback; no query string (use `out_string`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Opaque value echoed back, at most 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_string: Option<String>,
    /// Life-account app id to offer a "follow".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_app_id: Option<String>,
    /// What `cardform cards serve` does when a member activates through this
    /// URL (the callback points at it): which tier the card opens on, and
    /// where the member goes next. Nothing here is sent to Alipay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue: Option<Issue>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Issue {
    /// The level a new member's card opens on; a tiered template needs one
    /// (its tiers' levels), an untiered one takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Members who hold a card already: a CSV (relative to the manifest)
    /// with columns `cell`, `external_card_no` and optionally `level`,
    /// `point`, `balance`. A member whose form phone number is in it gets
    /// that card, on that level's tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MembersFile>,
    /// The card's valid_date, `yyyy-MM-dd HH:mm:ss` [default: 2099-12-31 23:59:59].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_date: Option<String>,
    /// http(s) page the member is sent to once the card is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_url: Option<String>,
    /// `cardform cards sync` sends the member Alipay's points message ("your
    /// points changed by +20") with each card whose points moved
    /// (`merchant_card_msg_info.changed_point`) [default: false].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub points_message: bool,
    /// How members' openings reach `cards serve`: `callback` (3.0: the
    /// activation URL's callback, then oauth.token, activateform.query and
    /// card.open) or `spi` (3.1: Alipay calls the open-card SPI at
    /// `cards serve`'s `/spi`; the template must name `spi_app_id`)
    /// [default: callback].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<crate::model::Flow>,
    /// `cardform cards serve` also takes the till's transactions for this
    /// card (`POST /transactions`), from callers that send this token as
    /// `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactions: Option<Transactions>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Transactions {
    /// The bearer token the till sends (a file or an environment variable;
    /// never inline).
    pub token: SecretSource,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MembersFile {
    pub file: String,
}
