//! Format 3 -> 4: recorded attributes from the gateway's words to the
//! manifest's (issue #10). Up to format 3 a template was recorded as the
//! gateway takes it (`template_style_info.card_show_name`, `dqrcode`,
//! `card_level_conf`) and a form's fields as `OPEN_FORM_FIELD_MOBILE`; from
//! format 4 both are recorded in the domain's words (`model::template`), so
//! plans diff `style.name`.
//!
//! Pure and backend-independent: every store (sled today, PostgreSQL later)
//! and every snapshot read from a file (backups, `state import`) passes its
//! records through here. Idempotent: a record already in the new words is
//! left alone. Each converted record gets the hash of its new attributes,
//! which is the hash the same manifests lower to, so an upgraded state plans
//! "No changes".

use serde_json::Value;

use crate::alipay::methods::{TemplateBody, TemplateCardLevelConf};
use crate::model::{Attrs, Kind};
use crate::provider::template::{form_field, from_wire};
use crate::state::{Intent, ResourceState, Snapshot, raw_attrs};

/// The attributes in the new words, if `old` is in the old ones.
pub fn attrs(kind: Kind, old: &Value) -> Result<Option<Attrs>, String> {
    let Some(obj) = old.as_object() else {
        return Ok(None);
    };
    match kind {
        // Recorded in the gateway's words (nothing else writes these keys).
        Kind::Template
            if !obj.contains_key("style")
                && (obj.contains_key("template_style_info")
                    || obj.contains_key("biz_no_suffix_len")) =>
        {
            let card_type = obj
                .get("card_type")
                .and_then(Value::as_str)
                .ok_or("`card_type` is missing")?;
            let mut body = obj.clone();
            for k in ["kind", "card_type", "card_level_conf", "image_hashes"] {
                body.remove(k);
            }
            let body: TemplateBody =
                serde_json::from_value(Value::Object(body)).map_err(|e| e.to_string())?;
            let levels: Option<Vec<TemplateCardLevelConf>> = match obj.get("card_level_conf") {
                Some(v) if !v.is_null() => {
                    Some(serde_json::from_value(v.clone()).map_err(|e| e.to_string())?)
                }
                _ => None,
            };
            let hashes = match obj.get("image_hashes") {
                Some(v) => serde_json::from_value(v.clone()).map_err(|e| e.to_string())?,
                None => Default::default(),
            };
            let t = from_wire(card_type, &body, levels.as_deref(), hashes)?;
            Ok(Some(Attrs::Template(Box::new(t))))
        }
        Kind::Form => {
            let old_words = |k: &str| {
                obj.get(k).and_then(Value::as_array).is_some_and(|a| {
                    a.iter().any(|f| {
                        f.as_str()
                            .is_some_and(|s| s.starts_with("OPEN_FORM_FIELD_"))
                    })
                })
            };
            if !old_words("required") && !old_words("optional") {
                return Ok(None);
            }
            let fields = |k: &str| -> Result<Vec<_>, String> {
                obj.get(k)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|f| form_field(f.as_str().unwrap_or_default()))
                    .collect()
            };
            let template = obj
                .get("template")
                .and_then(Value::as_str)
                .ok_or("`template` is missing")?
                .parse()?;
            Ok(Some(Attrs::Form(Box::new(crate::model::FormAttrs {
                template,
                required: fields("required")?,
                optional: fields("optional")?,
            }))))
        }
        _ => Ok(None),
    }
}

/// Convert one record in place; whether it changed.
pub fn resource(r: &mut ResourceState) -> Result<bool, String> {
    let Some(new) = attrs(r.kind, &r.attrs_value()).map_err(|e| format!("`{}`: {e}", r.address))?
    else {
        return Ok(false);
    };
    r.hash = new.hash();
    r.attrs = raw_attrs(&new);
    Ok(true)
}

/// Convert a journalled create in place; whether it changed. Its request
/// (the exact bytes a replay sends) stays as it was.
pub fn intent(i: &mut Intent) -> Result<bool, String> {
    let Some(new) =
        attrs(i.address.kind, &i.attrs).map_err(|e| format!("`{}` (intent): {e}", i.address))?
    else {
        return Ok(false);
    };
    i.hash = new.hash();
    i.attrs = new.to_json();
    Ok(true)
}

/// Convert every record of a snapshot read from a file.
pub fn snapshot(s: &mut Snapshot) -> Result<(), String> {
    for r in s.resources.values_mut() {
        resource(r)?;
    }
    for i in s.intents.values_mut() {
        intent(i)?;
    }
    Ok(())
}
