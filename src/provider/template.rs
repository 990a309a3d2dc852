//! Templates and forms, domain <-> wire: the one place that knows that
//! `style.name` travels as `template_style_info.card_show_name`, that
//! `dynamic_qrcode` is `dqrcode` and that `mobile` is `OPEN_FORM_FIELD_MOBILE`.
//! Pure: no I/O. Each name pair is written once, in a table read both ways.
//!
//! [`to_wire`] builds the request body (image addresses resolved to ids);
//! [`from_wire`] reads a body back into the domain (a format-3 state record,
//! where image fields hold addresses; a template read from the gateway,
//! where they hold image ids).

use std::collections::BTreeMap;

use crate::alipay::methods as wire;
use crate::model::template::*;

/// Image address -> image_id, for the image fields of a template.
pub type ImageIds = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
#[error("image `{0}` has no image_id in state yet")]
pub struct MissingImage(pub String);

const CARD_TYPES: &[(CardType, &str)] = &[(CardType::OutMemberCard, "OUT_MEMBER_CARD")];

const WRITE_OFFS: &[(WriteOff, &str)] = &[
    (WriteOff::Qrcode, "qrcode"),
    (WriteOff::Barcode, "barcode"),
    (WriteOff::DynamicQrcode, "dqrcode"),
    (WriteOff::DynamicBarcode, "dbarcode"),
    (WriteOff::MerchantDynamicQrcode, "mdqrcode"),
    (WriteOff::MerchantDynamicBarcode, "mdbarcode"),
];

const COLUMN_ACTIONS: &[(ColumnAction, &str)] = &[
    (ColumnAction::Static, "staticinfo"),
    (ColumnAction::Native, "openNative"),
    (ColumnAction::Web, "openWeb"),
];

const COLUMN_LAYOUTS: &[(ColumnLayout, &str)] =
    &[(ColumnLayout::List, "list"), (ColumnLayout::Grid, "grid")];

const CARD_FIELDS: &[(CardField, &str)] = &[
    (CardField::Balance, "Balance"),
    (CardField::Point, "Point"),
    (CardField::Level, "Level"),
    (CardField::OpenDate, "OpenDate"),
    (CardField::ValidDate, "ValidDate"),
];

const RULES: &[(RuleKind, &str)] = &[
    (RuleKind::FromRequest, "ASSIGN_FROM_REQUEST"),
    (RuleKind::DateInFuture, "DATE_IN_FUTURE"),
    (RuleKind::Const, "CONST"),
];

const OPERATORS: &[(Operator, &str)] = &[(Operator::Isv, "ISV"), (Operator::Merchant, "MER")];

const CHANNELS: &[(Channel, &str)] = &[(Channel::ShopDetail, "SHOP_DETAIL")];

const FORM_FIELDS: &[(FormField, &str)] = &[
    (FormField::Mobile, "OPEN_FORM_FIELD_MOBILE"),
    (FormField::Gender, "OPEN_FORM_FIELD_GENDER"),
    (FormField::Name, "OPEN_FORM_FIELD_NAME"),
    (FormField::Birthday, "OPEN_FORM_FIELD_BIRTHDAY"),
    (
        FormField::BirthdayWithYear,
        "OPEN_FORM_FIELD_BIRTHDAY_WITH_YEAR",
    ),
    (FormField::Idcard, "OPEN_FORM_FIELD_IDCARD"),
    (FormField::CertType, "OPEN_FORM_FIELD_CERT_TYPE"),
    (FormField::CertNo, "OPEN_FORM_FIELD_CERT_NO"),
    (FormField::Email, "OPEN_FORM_FIELD_EMAIL"),
    (FormField::Address, "OPEN_FORM_FIELD_ADDRESS"),
    (FormField::City, "OPEN_FORM_FIELD_CITY"),
    (FormField::IsStudent, "OPEN_FORM_FIELD_IS_STUDENT"),
    (FormField::MemberGrade, "OPEN_FORM_FIELD_MEMBER_GRADE"),
];

fn code<T: PartialEq + Copy>(table: &[(T, &'static str)], v: T) -> &'static str {
    table
        .iter()
        .find(|(d, _)| *d == v)
        .map(|(_, w)| *w)
        .expect("bug: every domain value has a wire code")
}

fn value<T: Copy>(table: &[(T, &str)], what: &str, w: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(_, c)| *c == w)
        .map(|(d, _)| *d)
        .ok_or_else(|| format!("unknown {what} `{w}`"))
}

pub fn write_off_code(w: WriteOff) -> &'static str {
    code(WRITE_OFFS, w)
}

pub fn card_type_code(c: CardType) -> &'static str {
    code(CARD_TYPES, c)
}

pub fn form_field_code(f: FormField) -> &'static str {
    code(FORM_FIELDS, f)
}

pub fn form_field(w: &str) -> Result<FormField, String> {
    value(FORM_FIELDS, "form field", w)
}

/// The form's field lists as formtemplate.set takes them.
pub fn form_fields(required: &[FormField], optional: &[FormField]) -> wire::OpenFormField {
    let codes = |v: &[FormField]| -> Vec<String> {
        v.iter().map(|f| form_field_code(*f).to_string()).collect()
    };
    wire::OpenFormField::from_lists(&codes(required), &codes(optional))
}

/// A template's body and level list as template.create / modify take them,
/// with image addresses resolved through `ids`.
pub fn to_wire(
    t: &TemplateAttrs,
    ids: &ImageIds,
) -> Result<(wire::TemplateBody, Option<Vec<wire::TemplateCardLevelConf>>), MissingImage> {
    let id = |addr: &str| -> Result<String, MissingImage> {
        ids.get(addr)
            .cloned()
            .ok_or_else(|| MissingImage(addr.to_string()))
    };
    let opt_id = |addr: &Option<String>| addr.as_deref().map(id).transpose();
    let s = &t.style;
    let style = wire::TemplateStyleInfo {
        card_show_name: Some(s.name.clone()),
        logo_id: Some(id(&s.logo)?),
        background_id: Some(id(&s.background)?),
        bg_color: s.text_color.clone(),
        color: None,
        front_text_list_enable: s.show_front_text,
        front_image_enable: s.show_front_image,
        feature_descriptions: s.feature_descriptions.clone(),
        slogan: s.slogan.clone(),
        slogan_img_id: opt_id(&s.slogan_image)?,
        brand_name: s.brand_name.clone(),
        banner_img_id: opt_id(&s.banner_image)?,
        banner_url: s.banner_url.clone(),
        column_info_layout: s.column_layout.map(|l| code(COLUMN_LAYOUTS, l).to_string()),
    };
    let columns = t
        .columns
        .iter()
        .map(|c| {
            Ok(wire::TemplateColumnInfo {
                code: Some(c.code.clone()),
                title: Some(c.title.clone()),
                value: c.value.clone(),
                operate_type: Some(code(COLUMN_ACTIONS, c.action).to_string()),
                more_info: c.more.as_ref().map(|m| wire::MoreInfo {
                    title: m.title.clone(),
                    url: m.url.clone(),
                    params: m.params.clone(),
                    descs: m.descriptions.clone(),
                }),
                icon_id: opt_id(&c.icon)?,
                tag: c.tag.clone(),
                group_title: c.group_title.clone(),
            })
        })
        .collect::<Result<Vec<_>, MissingImage>>()?;
    let rules: Vec<wire::TemplateFieldRule> = t
        .field_rules
        .iter()
        .map(|r| wire::TemplateFieldRule {
            field_name: code(CARD_FIELDS, r.field).to_string(),
            rule_name: code(RULES, r.rule).to_string(),
            rule_value: Some(r.value.clone()),
        })
        .collect();
    let actions: Vec<wire::TemplateActionInfo> = t
        .actions
        .iter()
        .map(|a| wire::TemplateActionInfo {
            code: Some(a.code.clone()),
            text: Some(a.text.clone()),
            url_type: Some(
                if a.mini_app.is_some() {
                    "miniAppUrl"
                } else {
                    "url"
                }
                .into(),
            ),
            url: a.url.clone(),
            mini_app_url: a.mini_app.as_ref().map(|m| wire::TemplateActionMiniAppUrl {
                mini_app_id: Some(m.app_id.clone()),
                mini_page_param: m.page.clone(),
                mini_query_param: m.query.clone(),
                display_on_list: m.show_on_list.map(|b| b.to_string()),
            }),
        })
        .collect();
    let benefits: Vec<wire::TemplateBenefitInfo> = t
        .benefits
        .iter()
        .map(|b| wire::TemplateBenefitInfo {
            title: Some(b.title.clone()),
            benefit_desc: b.descriptions.clone(),
            start_date: b.start.clone(),
            end_date: b.end.clone(),
        })
        .collect();
    let open_card = match &t.open_card {
        None => None,
        Some(o) => Some(wire::TemplateOpenCardConf {
            open_card_source_type: o.operated_by.map(|op| code(OPERATORS, op).to_string()),
            source_app_id: o.source_app_id.clone(),
            open_card_url: o.url.clone(),
            conf: None,
            card_rights: o
                .rights
                .as_ref()
                .map(|rs| {
                    rs.iter()
                        .map(|r| {
                            Ok(wire::TemplateRightsContent {
                                title: Some(r.title.clone()),
                                detail: r.detail.clone(),
                                logo_id: opt_id(&r.logo)?,
                            })
                        })
                        .collect::<Result<Vec<_>, MissingImage>>()
                })
                .transpose()?,
        }),
    };
    let body = wire::TemplateBody {
        biz_no_prefix: t.card_number.prefix.clone(),
        biz_no_suffix_len: Some(t.card_number.suffix_length.to_string()),
        write_off_type: Some(code(WRITE_OFFS, t.write_off).to_string()),
        template_style_info: Some(style),
        column_info_list: (!columns.is_empty()).then_some(columns),
        field_rule_list: (!rules.is_empty()).then_some(rules),
        card_action_list: (!actions.is_empty()).then_some(actions),
        template_benefit_info: (!benefits.is_empty()).then_some(benefits),
        open_card_conf: open_card,
        mdcode_notify_conf: t.dynamic_code_notify.as_ref().map(|d| {
            wire::TemplateMdcodeNotifyConf {
                url: Some(d.url.clone()),
                ext_params: d.ext_params.clone(),
            }
        }),
        shop_ids: t.shops.clone(),
        pub_channels: t.channels.as_ref().map(|cs| {
            cs.iter()
                .map(|c| wire::PubChannel {
                    pub_channel: Some(code(CHANNELS, *c).to_string()),
                    ext_info: None,
                })
                .collect()
        }),
        spi_app_id: t.spi_app_id.clone(),
        template_form_config: None,
        access_version: None,
        card_spec_tag: None,
    };
    let levels = t
        .levels
        .iter()
        .map(|l| {
            Ok(wire::TemplateCardLevelConf {
                level: l.level.clone(),
                level_show_name: l.level_name.clone(),
                level_icon: opt_id(&l.level_icon)?,
                level_desc: l.level_description.clone(),
            })
        })
        .collect::<Result<Vec<_>, MissingImage>>()?;
    Ok((body, (!levels.is_empty()).then_some(levels)))
}

/// A template body read back into the domain. Image fields keep whatever
/// the body holds (addresses in an old state record, ids at the gateway);
/// `image_hashes` is the caller's. Fields cardform never sends are ignored.
pub fn from_wire(
    card_type: &str,
    body: &wire::TemplateBody,
    levels: Option<&[wire::TemplateCardLevelConf]>,
    image_hashes: BTreeMap<String, String>,
) -> Result<TemplateAttrs, String> {
    let missing = |f: &str| format!("`{f}` is missing");
    let style = body
        .template_style_info
        .as_ref()
        .ok_or_else(|| missing("template_style_info"))?;
    let suffix = body
        .biz_no_suffix_len
        .as_deref()
        .ok_or_else(|| missing("biz_no_suffix_len"))?;
    Ok(TemplateAttrs {
        card_type: value(CARD_TYPES, "card type", card_type)?,
        card_number: CardNumber {
            prefix: body.biz_no_prefix.clone(),
            suffix_length: suffix
                .parse()
                .map_err(|_| format!("biz_no_suffix_len `{suffix}` is not a number"))?,
        },
        write_off: value(
            WRITE_OFFS,
            "write_off_type",
            body.write_off_type
                .as_deref()
                .ok_or_else(|| missing("write_off_type"))?,
        )?,
        style: Style {
            name: style
                .card_show_name
                .clone()
                .ok_or_else(|| missing("card_show_name"))?,
            logo: style.logo_id.clone().ok_or_else(|| missing("logo_id"))?,
            background: style
                .background_id
                .clone()
                .ok_or_else(|| missing("background_id"))?,
            text_color: style.bg_color.clone(),
            brand_name: style.brand_name.clone(),
            slogan: style.slogan.clone(),
            slogan_image: style.slogan_img_id.clone(),
            banner_image: style.banner_img_id.clone(),
            banner_url: style.banner_url.clone(),
            feature_descriptions: style.feature_descriptions.clone(),
            show_front_text: style.front_text_list_enable,
            show_front_image: style.front_image_enable,
            column_layout: style
                .column_info_layout
                .as_deref()
                .map(|l| value(COLUMN_LAYOUTS, "column_info_layout", l))
                .transpose()?,
        },
        columns: body
            .column_info_list
            .iter()
            .flatten()
            .map(|c| {
                Ok(Column {
                    code: c.code.clone().unwrap_or_default(),
                    title: c.title.clone().unwrap_or_default(),
                    value: c.value.clone(),
                    action: match c.operate_type.as_deref() {
                        Some(op) => value(COLUMN_ACTIONS, "operate_type", op)?,
                        None => ColumnAction::Static,
                    },
                    more: c.more_info.as_ref().map(|m| {
                        Box::new(More {
                            title: m.title.clone(),
                            url: m.url.clone(),
                            params: m.params.clone(),
                            descriptions: m.descs.clone(),
                        })
                    }),
                    icon: c.icon_id.clone(),
                    tag: c.tag.clone(),
                    group_title: c.group_title.clone(),
                })
            })
            .collect::<Result<_, String>>()?,
        field_rules: body
            .field_rule_list
            .iter()
            .flatten()
            .map(|r| {
                Ok(FieldRule {
                    field: value(CARD_FIELDS, "field_name", &r.field_name)?,
                    rule: value(RULES, "rule_name", &r.rule_name)?,
                    value: r.rule_value.clone().unwrap_or_default(),
                })
            })
            .collect::<Result<_, String>>()?,
        actions: body
            .card_action_list
            .iter()
            .flatten()
            .map(|a| CardAction {
                code: a.code.clone().unwrap_or_default(),
                text: a.text.clone().unwrap_or_default(),
                url: a.url.clone(),
                mini_app: a.mini_app_url.as_ref().map(|m| MiniApp {
                    app_id: m.mini_app_id.clone().unwrap_or_default(),
                    page: m.mini_page_param.clone(),
                    query: m.mini_query_param.clone(),
                    show_on_list: m.display_on_list.as_deref().map(|b| b == "true"),
                }),
            })
            .collect(),
        benefits: body
            .template_benefit_info
            .iter()
            .flatten()
            .map(|b| Benefit {
                title: b.title.clone().unwrap_or_default(),
                descriptions: b.benefit_desc.clone(),
                start: b.start_date.clone(),
                end: b.end_date.clone(),
            })
            .collect(),
        open_card: body
            .open_card_conf
            .as_ref()
            .map(|o| {
                Ok::<_, String>(OpenCard {
                    operated_by: o
                        .open_card_source_type
                        .as_deref()
                        .map(|op| value(OPERATORS, "open_card_source_type", op))
                        .transpose()?,
                    source_app_id: o.source_app_id.clone(),
                    url: o.open_card_url.clone(),
                    rights: o.card_rights.as_ref().map(|rs| {
                        rs.iter()
                            .map(|r| Right {
                                title: r.title.clone().unwrap_or_default(),
                                detail: r.detail.clone(),
                                logo: r.logo_id.clone(),
                            })
                            .collect()
                    }),
                })
            })
            .transpose()?,
        dynamic_code_notify: body.mdcode_notify_conf.as_ref().map(|d| DynamicCodeNotify {
            url: d.url.clone().unwrap_or_default(),
            ext_params: d.ext_params.clone(),
        }),
        shops: body.shop_ids.clone(),
        channels: body
            .pub_channels
            .as_ref()
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        value(
                            CHANNELS,
                            "pub_channel",
                            c.pub_channel.as_deref().unwrap_or(""),
                        )
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .transpose()?,
        spi_app_id: body.spi_app_id.clone(),
        levels: levels
            .unwrap_or_default()
            .iter()
            .map(|l| Level {
                level: l.level.clone(),
                level_name: l.level_show_name.clone(),
                level_icon: l.level_icon.clone(),
                level_description: l.level_desc.clone(),
            })
            .collect(),
        image_hashes,
    })
}

/// The calls a change of a template makes: a create (a replacement is a new
/// template: templates have no delete) or a modify; an import modifies only
/// when the adopted template differs, counted as one.
pub fn calls(action: crate::plan::Action) -> &'static [&'static str] {
    use crate::alipay::methods::{ApiRequest, TemplateCreateRequest, TemplateModifyRequest};
    use crate::plan::Action;
    match action {
        Action::NoOp | Action::Retire | Action::Delete => &[],
        Action::Create | Action::Replace => &[TemplateCreateRequest::METHOD],
        Action::Update | Action::Import => &[TemplateModifyRequest::METHOD],
    }
}

/// The calls made per page of a merchant's templates before any template of
/// it is created: a batchquery for templates the state does not know.
pub fn checks_before_create() -> &'static [&'static str] {
    use crate::alipay::methods::{ApiRequest, TemplateBatchQueryRequest};
    &[TemplateBatchQueryRequest::METHOD]
}

/// Its own id, for people: `template_id=...`.
pub fn shown_ids(ids: &crate::state::Ids) -> Vec<String> {
    ids.template_id
        .iter()
        .map(|t| format!("template_id={t}"))
        .collect()
}

/// What stays at Alipay when the state forgets it.
pub fn left_at_gateway(ids: &crate::state::Ids) -> bool {
    ids.template_id.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every<T: Copy + PartialEq + std::fmt::Debug>(table: &[(T, &'static str)], what: &str) {
        for (d, w) in table {
            assert_eq!(code(table, *d), *w);
            assert_eq!(value(table, what, w).unwrap(), *d);
        }
        assert!(value(table, what, "no-such-code").is_err());
    }

    #[test]
    fn every_name_pair_reads_both_ways() {
        every(CARD_TYPES, "card type");
        every(WRITE_OFFS, "write_off_type");
        every(COLUMN_ACTIONS, "operate_type");
        every(COLUMN_LAYOUTS, "layout");
        every(CARD_FIELDS, "field");
        every(RULES, "rule");
        every(OPERATORS, "operator");
        every(CHANNELS, "channel");
        every(FORM_FIELDS, "form field");
        // The form field codes are the manifest names in upper case.
        for (f, w) in FORM_FIELDS {
            let name = serde_json::to_value(f).unwrap();
            assert_eq!(
                format!("OPEN_FORM_FIELD_{}", name.as_str().unwrap().to_uppercase()),
                *w
            );
        }
    }
}
