//! The pure domain: resource addresses and kinds, the desired attributes of each
//! resource (in the manifest's words; see [`template`] for the decision), and
//! which changes the gateway cannot make in place. No I/O, and no gateway
//! vocabulary: that is `provider`'s.

use compact_str::CompactString;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod moved;
pub mod template;

pub use moved::{Movable, Move};

pub use template::{FormField, TemplateAttrs, is_rgb};

/// Whether `s` is well formed as an id the gateway hands out (template_id,
/// image_id): 1 to 128 letters, digits, `_` or `-`.
pub fn is_gateway_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Resource kinds, in dependency order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Image,
    Template,
    Form,
    ActivationUrl,
    /// A dated benefit on a template's detail page (benefit.create).
    Benefit,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Template => "template",
            Kind::Form => "form",
            Kind::ActivationUrl => "activation_url",
            Kind::Benefit => "benefit",
        }
    }
}

/// A stable address: `merchant.<merchant>/<kind>.<name>`, e.g.
/// `merchant.brew/template.club.gold`.
///
/// Its two names are [`CompactString`]s: up to 24 bytes (nearly every name)
/// they live inside the address, so the many copies a large project holds
/// (map keys, dependencies, plan changes, state records) cost no allocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    pub merchant: CompactString,
    pub kind: Kind,
    pub name: CompactString,
}

impl Address {
    pub fn new(merchant: &str, kind: Kind, name: &str) -> Self {
        Address {
            merchant: merchant.into(),
            kind,
            name: name.into(),
        }
    }

    /// The same name under another kind (template -> its form / activation URL).
    pub fn with_kind(&self, kind: Kind) -> Self {
        Address {
            kind,
            ..self.clone()
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "merchant.{}/{}.{}",
            self.merchant,
            self.kind.as_str(),
            self.name
        )
    }
}

impl FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an address like merchant.<name>/template.<name>");
        let rest = s.strip_prefix("merchant.").ok_or_else(bad)?;
        let (merchant, res) = rest.split_once('/').ok_or_else(bad)?;
        let (kind, name) = res.split_once('.').ok_or_else(bad)?;
        let kind = match kind {
            "image" => Kind::Image,
            "template" => Kind::Template,
            "form" => Kind::Form,
            "activation_url" => Kind::ActivationUrl,
            "benefit" => Kind::Benefit,
            _ => return Err(bad()),
        };
        if merchant.is_empty() || name.is_empty() {
            return Err(bad());
        }
        Ok(Address::new(merchant, kind, name))
    }
}

impl Serialize for Address {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a secret comes from. The value itself never enters the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    File(PathBuf),
    Env(String),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file `{}`", p.display()),
            SecretRef::Env(n) => write!(f, "environment variable `{n}`"),
        }
    }
}

/// The manifest's gateway block, resolved to paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GatewayBlock {
    pub endpoint: Option<String>,
    pub app_id: Option<String>,
    pub private_key: Option<SecretRef>,
    pub alipay_public_key: Option<SecretRef>,
    pub app_cert: Option<SecretRef>,
    pub alipay_cert: Option<SecretRef>,
    pub alipay_root_cert: Option<SecretRef>,
    pub encrypt_key: Option<SecretRef>,
    pub sign_type: Option<String>,
    /// The manifest's `state: { url: ... }`: where a shared state lives.
    pub state_url: Option<SecretRef>,
    /// Calls per second to stay under.
    pub rate_limits: RateLimits,
}

/// Token-bucket limits in calls per second (each with a burst of one
/// second); none: unlimited (the 40005 backoff still applies).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RateLimits {
    pub per_second: Option<f64>,
    pub per_merchant: Option<f64>,
    pub per_method: BTreeMap<String, f64>,
    /// Merchants' own limits.
    pub merchants: BTreeMap<String, f64>,
}

impl RateLimits {
    pub fn is_empty(&self) -> bool {
        self.per_second.is_none()
            && self.per_merchant.is_none()
            && self.per_method.is_empty()
            && self.merchants.is_empty()
    }

    /// A merchant's limit: its own, else the gateway's `per_merchant`.
    pub fn merchant(&self, m: &str) -> Option<f64> {
        self.merchants.get(m).copied().or(self.per_merchant)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MerchantInfo {
    pub display_name: Option<String>,
    pub app_auth_token: Option<SecretRef>,
    /// Template ids kept at the gateway on purpose, outside this project.
    #[serde(skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub ignore_templates: std::collections::BTreeSet<String>,
}

/// What an image resource is: its content, identified by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageAttrs {
    /// The file, relative to the project's root with `/` separators: the same
    /// however the project path was spelled or wherever cardform ran.
    pub file: String,
    /// Where to read the bytes on this machine. Not an attribute: never
    /// hashed, stored or diffed.
    #[serde(skip)]
    pub source: PathBuf,
    pub role: String,
    /// `image_type` as sent: png, jpg, gif, bmp.
    pub image_type: String,
    pub sha256: String,
    pub width: usize,
    pub height: usize,
    pub bytes: u64,
    /// An image the gateway already holds, adopted by id: no file, nothing
    /// uploaded (`sha256` is then `id:<image_id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormAttrs {
    pub template: Address,
    pub required: Vec<FormField>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<FormField>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationUrlAttrs {
    pub template: Address,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_string: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_app_id: Option<String>,
}

/// A dated benefit shown on a template's detail page in the wallet:
/// unlike a template, Alipay can delete it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenefitAttrs {
    pub template: Address,
    pub title: String,
    pub descriptions: Vec<String>,
    /// `yyyy-MM-dd HH:mm:ss`: shown from `start` to `end`.
    pub start: String,
    pub end: String,
    /// An http(s) page of the offer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl BenefitAttrs {
    /// Whether its end date is past at `now` (`yyyy-MM-dd HH:mm:ss`): Alipay
    /// no longer shows it.
    pub fn ended(&self, now: &str) -> bool {
        self.end.as_str() < now
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Attrs {
    Image(Box<ImageAttrs>),
    Template(Box<TemplateAttrs>),
    Form(Box<FormAttrs>),
    ActivationUrl(Box<ActivationUrlAttrs>),
    Benefit(Box<BenefitAttrs>),
}

impl ImageAttrs {
    /// Whether `old` (as recorded) holds the same image at the gateway: the
    /// same bytes sent as the same type. The file's name or place does not
    /// matter, so a moved or differently spelled path uploads nothing.
    pub fn same_image(&self, old: &serde_json::Value) -> bool {
        if let Some(id) = &self.id {
            return old.get("id").and_then(|v| v.as_str()) == Some(id.as_str());
        }
        old.get("sha256").and_then(|v| v.as_str()) == Some(self.sha256.as_str())
            && old.get("image_type").and_then(|v| v.as_str()) == Some(self.image_type.as_str())
    }
}

impl Attrs {
    /// The attributes as JSON: what state stores and plans diff.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("bug: attributes always serialize")
    }

    /// sha256 of the canonical (compact, field-ordered) JSON.
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let text = serde_json::to_string(self).expect("bug: attributes always serialize");
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }

    /// Why a change from `old` (as recorded) to `self` cannot be made in
    /// place, if it cannot.
    pub fn replace_reason(&self, old: &serde_json::Value) -> Option<String> {
        match (self, serde_json::from_value::<Attrs>(old.clone()).ok()?) {
            (Attrs::Template(new), Attrs::Template(old)) => new.replace_reason(&old),
            // A benefit belongs to one template: on another, it is created
            // there and deleted from the old one.
            (Attrs::Benefit(new), Attrs::Benefit(old)) if new.template != old.template => Some(
                format!("it moves from `{}` to `{}`", old.template, new.template),
            ),
            _ => None,
        }
    }
}

/// One desired resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    pub address: Address,
    /// Addresses this resource needs first.
    pub deps: Vec<Address>,
    pub attrs: Attrs,
}

/// Which project the manifests are: the name a state is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Project {
    /// `project:` in the manifests, or derived from the project's directory
    /// (see `manifest::default_project_name`). Stable across path spellings, working
    /// directories and machines.
    pub name: String,
    /// The project's root directory (canonical), which image paths are
    /// relative to. Not part of any hash.
    #[serde(skip)]
    pub root: PathBuf,
}

/// Everything the manifests ask for.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Desired {
    pub project: Project,
    pub gateway: GatewayBlock,
    pub merchants: BTreeMap<String, MerchantInfo>,
    pub resources: BTreeMap<Address, Resource>,
    /// `moved` blocks, checked (no cycles, one sort per block).
    pub moved: Vec<Move>,
    /// `import` blocks: template address -> the template to adopt.
    pub imports: BTreeMap<Address, Import>,
    /// `activation_url.issue` blocks, by template: what `cards serve` does
    /// when a member activates. Sent nowhere; plan shows them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub issuance: BTreeMap<Address, Issuance>,
}

/// How Alipay hands a member's opening to the merchant.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// 3.0: the member's browser to the activation URL's `callback`; the
    /// merchant calls oauth.token, activateform.query and card.open.
    #[default]
    Callback,
    /// 3.1 ("极速版"): Alipay calls the merchant's open-card SPI (on the app
    /// the template's `spi_app_id` names) and takes the card from its answer.
    Spi,
}

/// What `cardform cards serve` does for a member activating on a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Issuance {
    /// Callback (3.0) or SPI (3.1).
    pub flow: Flow,
    /// The template family (`template.club` for `template.club.gold`): what
    /// card serial numbers are derived from.
    pub family: Address,
    /// The level a new member starts on (a tiered template's).
    pub level: Option<String>,
    /// The members file as written (relative to the project root).
    pub members: Option<String>,
    /// Where to read it on this machine (not hashed).
    #[serde(skip)]
    pub members_path: Option<PathBuf>,
    pub valid_date: String,
    pub done_url: Option<String>,
    /// `cards sync` sends the points message with each points change.
    pub points_message: bool,
    /// `cards serve` takes the till's transactions from callers holding
    /// this token (`POST /transactions`).
    pub transactions_token: Option<SecretRef>,
}

/// A template at the gateway to adopt at an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Import {
    pub template_id: String,
    /// `file:line:col` of the block.
    pub written_at: String,
}
