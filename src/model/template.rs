//! Card templates in the manifest's own words: what a template *is* once its
//! `extends`, tiers and variables are resolved. The planner diffs these and
//! the state records them, so a plan says `style.name`, as the manifest and
//! every validation error do.
//!
//! Decision (issue #10): the data path is raw (YAML, `manifest::raw`) ->
//! normalized (extends, tiers and variables resolved by lowering, positions
//! kept for errors) -> domain (these types) -> wire (`alipay::methods`). Only
//! `provider::template` maps domain <-> wire names (`style.name` <->
//! `card_show_name`, `dynamic_qrcode` <-> `dqrcode`, `mobile` <->
//! `OPEN_FORM_FIELD_MOBILE`). Image fields hold image *addresses*; the
//! provider resolves them to image ids.
//!
//! This module owns meaning (which fields exist, which are required, which
//! cannot change in place); it must never know gateway field names.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether `s` is a colour as the gateway takes it (`text_color`, sent as
/// `bg_color`): `rgb(r,g,b)`, each 0-255 in decimal, spaces after commas
/// tolerated.
pub fn is_rgb(s: &str) -> bool {
    let Some(inner) = s.strip_prefix("rgb(").and_then(|r| r.strip_suffix(')')) else {
        return false;
    };
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

/// A card template, normalized. Optional fields are omitted when absent, so
/// adding a new optional field later changes no recorded hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateAttrs {
    pub card_type: CardType,
    pub card_number: CardNumber,
    pub write_off: WriteOff,
    pub style: Style,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<Column>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_rules: Vec<FieldRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<CardAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub benefits: Vec<Benefit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_card: Option<OpenCard>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynamic_code_notify: Option<DynamicCodeNotify>,
    /// `None`: not given; `Some([])`: given empty (the gateway tells them apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shops: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<Channel>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi_app_id: Option<String>,
    /// Every level of the template's tiers, in order (the same list on each
    /// tier's template); empty without tiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<Level>,
    /// Content hashes of the images it uses: a new image means an update.
    pub image_hashes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardNumber {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub suffix_length: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Style {
    pub name: String,
    /// Image address.
    pub logo: String,
    /// Image address.
    pub background: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_color: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slogan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slogan_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_descriptions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_front_text: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_front_image: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_layout: Option<ColumnLayout>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub code: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub action: ColumnAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub more: Option<Box<More>>,
    /// Image address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_title: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    pub field: CardField,
    pub rule: RuleKind,
    pub value: String,
}

/// A button on the card: a URL or a mini-program page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardAction {
    pub code: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mini_app: Option<MiniApp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benefit {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenCard {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operated_by: Option<Operator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<Vec<Right>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Right {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Image address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamicCodeNotify {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_params: Option<String>,
}

/// One level of a tiered template, in the words of a tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Level {
    pub level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_name: Option<String>,
    /// Image address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_icon: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_description: Option<String>,
}

impl FormField {
    /// The field as the manifest writes it (`mobile`).
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl TemplateAttrs {
    /// Why a change from `old` to `self` cannot be made in place, if it cannot.
    pub fn replace_reason(&self, old: &TemplateAttrs) -> Option<String> {
        if old.card_type != self.card_type {
            return Some("card_type cannot change in place".into());
        }
        if old.card_number.suffix_length != self.card_number.suffix_length {
            return Some("card_number.suffix_length cannot change in place".into());
        }
        if old.field_rules != self.field_rules {
            return Some("field_rules cannot change in place".into());
        }
        let new_shops = self.shops.clone().unwrap_or_default();
        let removed: Vec<String> = old
            .shops
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !new_shops.contains(s))
            .collect();
        if !removed.is_empty() {
            return Some(format!(
                "shops cannot be removed in place ({})",
                removed.join(", ")
            ));
        }
        None
    }

    /// Every image the template names (an address here; an image id in a
    /// template read from the gateway), with the field that names it.
    pub fn image_fields(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        self.clone()
            .visit_images(&mut |field, v| out.push((field, v.clone())));
        out
    }

    /// Rewrite every image field through `f`; a field `f` answers `None`
    /// for stays as it is.
    pub fn map_images(&mut self, f: impl Fn(&str) -> Option<String>) {
        self.visit_images(&mut |_, v| {
            if let Some(new) = f(v) {
                *v = new;
            }
        });
    }

    /// The one list of image fields.
    fn visit_images(&mut self, f: &mut dyn FnMut(String, &mut String)) {
        f("style.logo".into(), &mut self.style.logo);
        f("style.background".into(), &mut self.style.background);
        if let Some(v) = self.style.slogan_image.as_mut() {
            f("style.slogan_image".into(), v);
        }
        if let Some(v) = self.style.banner_image.as_mut() {
            f("style.banner_image".into(), v);
        }
        for (i, c) in self.columns.iter_mut().enumerate() {
            if let Some(v) = c.icon.as_mut() {
                f(format!("columns[{i}].icon"), v);
            }
        }
        if let Some(o) = self.open_card.as_mut() {
            for (i, r) in o.rights.iter_mut().flatten().enumerate() {
                if let Some(v) = r.logo.as_mut() {
                    f(format!("open_card.rights[{i}].logo"), v);
                }
            }
        }
        for (i, l) in self.levels.iter_mut().enumerate() {
            if let Some(v) = l.level_icon.as_mut() {
                f(format!("levels[{i}].level_icon"), v);
            }
        }
    }
}

// The manifest's enumerations: the same types in raw manifests (where their
// docs become the JSON Schema) and in the domain.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CardType {
    #[serde(rename = "OUT_MEMBER_CARD")]
    OutMemberCard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WriteOff {
    // Static QR code of the merchant card number (qrcode).
    Qrcode,
    // Static barcode (barcode).
    Barcode,
    // Alipay dynamic QR code (dqrcode).
    DynamicQrcode,
    // Alipay dynamic barcode (dbarcode).
    DynamicBarcode,
    // Merchant dynamic QR code (mdqrcode).
    MerchantDynamicQrcode,
    // Merchant dynamic barcode (mdbarcode).
    MerchantDynamicBarcode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnLayout {
    List,
    Grid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnAction {
    // staticinfo
    Static,
    // openNative: a native page showing `more.descriptions`
    Native,
    // openWeb: opens `more.url`
    Web,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CardField {
    Balance,
    Point,
    Level,
    OpenDate,
    ValidDate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    // ASSIGN_FROM_REQUEST
    FromRequest,
    // DATE_IN_FUTURE
    DateInFuture,
    // CONST
    Const,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    // ISV
    Isv,
    // MER
    Merchant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    // SHOP_DETAIL
    ShopDetail,
}

/// OPEN_FORM_FIELD_* without the prefix, lower case.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FormField {
    Mobile,
    Gender,
    Name,
    Birthday,
    BirthdayWithYear,
    Idcard,
    CertType,
    CertNo,
    Email,
    Address,
    City,
    IsStudent,
    MemberGrade,
}

#[cfg(test)]
mod colour_tests {
    #[test]
    fn rgb_colours() {
        for ok in ["rgb(55,112,179)", "rgb(0,0,0)", "rgb(255, 255, 255)"] {
            assert!(super::is_rgb(ok), "{ok}");
        }
        for bad in [
            "brown",
            "#7a4a1e",
            "rgb(300,0,0)",
            "rgb(1,2)",
            "rgb(1,2,3,4)",
            "rgb(-1,0,0)",
            "rgb(,0,0)",
            "RGB(1,2,3)",
            "rgb(1,2,3",
            "rgb(0001,2,3)",
        ] {
            assert!(!super::is_rgb(bad), "{bad}");
        }
    }
}
