//! `formtemplate.set` and `activateurl.apply`: a template's activation form and URL.

use super::*;

/// `{"common_fields":[...]}` inside a string (or, leniently, as an object).
pub(super) fn form_list(field: &str, v: &Value) -> Result<Vec<String>, Fail> {
    let obj = match v {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map_err(|_| bad(field, "is not JSON {\"common_fields\":[...]}"))?,
        other => other.clone(),
    };
    obj.get("common_fields")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(field, "has no common_fields list"))?
        .iter()
        .map(|f| {
            f.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(field, "common_fields holds a non-string"))
        })
        .collect()
}

pub(super) fn formtemplate_set(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    // Accept required/optional as objects too (some public code sends them so);
    // normalize to the documented string form before the model check.
    let mut normalized = biz_value(inc)?;
    if let Some(fields) = normalized.get_mut("fields").and_then(Value::as_object_mut) {
        for k in ["required", "optional"] {
            if let Some(v) = fields.get_mut(k)
                && v.is_object()
            {
                *v = Value::String(v.to_string());
            }
        }
    }
    let (req, _): (FormTemplateSetRequest, Value) = typed_biz(normalized)?;
    let required = form_list(
        "fields.required",
        &Value::String(req.fields.required.clone()),
    )?;
    let optional = match &req.fields.optional {
        Some(o) => form_list("fields.optional", &Value::String(o.clone()))?,
        None => Vec::new(),
    };
    check_form_lists("fields", &required, &optional)?;
    let mut rec = get_template(st, ns, &req.template_id)?;
    rec.form = Some(req.fields);
    rec.gmt_modified = now_cst().max(rec.gmt_modified.clone());
    store::put(&st.templates, &rec.template_id, &rec)?;
    Ok(success(&EmptyResponse {}))
}

pub(super) fn activateurl_apply(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (ActivateUrlApplyRequest, Value) = parse_biz(inc)?;
    let rec = get_template(st, ns, &req.template_id)?;
    if let Some(cb) = &req.callback {
        max_len("callback", cb, 10240)?;
        http_url("callback", cb, false)?;
        if cb.contains('?') {
            return Err(bad(
                "callback",
                "must not contain query parameters (use out_string)",
            ));
        }
    }
    if let Some(o) = &req.out_string {
        max_len("out_string", o, 256)?;
    }
    if let Some(f) = &req.follow_app_id {
        max_len("follow_app_id", f, 512)?;
    }
    let app_id = inc.get("app_id").unwrap_or_default();
    let mut url = format!(
        "https://memberprod.alipay.com/account/openform/activecard.htm?app_id={app_id}&template_id={}&__webview_options__=canPullDown%3dNO%26transparentTitle%3dauto",
        rec.template_id
    );
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    if let Some(o) = &req.out_string {
        url.push_str(&format!("&out_string={}", enc(o)));
    }
    if let Some(cb) = &req.callback {
        url.push_str(&format!("&callback={}", enc(cb)));
    }
    // The gateway returns the URL encoded once more (decode once before use).
    Ok(success(&ActivateUrlApplyResponse {
        apply_card_url: enc(&url),
    }))
}
