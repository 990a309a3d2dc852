//! Templates: `template.create`, `modify`, `query`, `batchquery`, and the
//! checks of a template body.

use super::*;

pub(super) fn validate_body(
    st: &Store,
    ns: &str,
    b: &TemplateBody,
    levels: Option<&Vec<TemplateCardLevelConf>>,
    creating: bool,
) -> Result<(), Fail> {
    if let Some(p) = &b.biz_no_prefix {
        max_len("biz_no_prefix", p, if creating { 10 } else { 16 })?;
    }
    if creating || b.biz_no_suffix_len.is_some() {
        let s = need("biz_no_suffix_len", &b.biz_no_suffix_len)?;
        let n: usize = s
            .parse()
            .ok()
            .filter(|n| (8..=32).contains(n))
            .ok_or_else(|| {
                bad(
                    "biz_no_suffix_len",
                    format!("`{s}` is not a number from 8 to 32"),
                )
            })?;
        let prefix = b.biz_no_prefix.as_deref().unwrap_or("").chars().count();
        if prefix + n > 32 {
            return Err(bad(
                "biz_no_suffix_len",
                "biz_no_prefix plus the suffix length exceeds 32 characters",
            ));
        }
    }
    if creating || b.write_off_type.is_some() {
        let w = need("write_off_type", &b.write_off_type)?;
        one_of("write_off_type", w, WRITE_OFF_TYPES)?;
        if matches!(w, "mdqrcode" | "mdbarcode") {
            let conf = b.mdcode_notify_conf.as_ref().ok_or_else(|| {
                bad(
                    "mdcode_notify_conf",
                    format!("is required when write_off_type is {w}"),
                )
            })?;
            http_url(
                "mdcode_notify_conf.url",
                need("mdcode_notify_conf.url", &conf.url)?,
                true,
            )?;
        }
    }
    let style = b
        .template_style_info
        .as_ref()
        .ok_or_else(|| bad("template_style_info", "is required"))?;
    let name = need("template_style_info.card_show_name", &style.card_show_name)?;
    max_len("template_style_info.card_show_name", name, 50)?;
    if let Some(c) = &style.bg_color
        && !crate::model::is_rgb(c)
    {
        return Err(bad(
            "template_style_info.bg_color",
            "must be rgb(r,g,b) with each value 0-255",
        ));
    }
    let logo = need("template_style_info.logo_id", &style.logo_id)?;
    check_image(st, ns, "template_style_info.logo_id", logo)?;
    let bg = need("template_style_info.background_id", &style.background_id)?;
    check_image(st, ns, "template_style_info.background_id", bg)?;
    for (field, id) in [
        ("template_style_info.banner_img_id", &style.banner_img_id),
        ("template_style_info.slogan_img_id", &style.slogan_img_id),
    ] {
        if let Some(id) = id {
            check_image(st, ns, field, id)?;
        }
    }
    if let Some(layout) = &style.column_info_layout {
        one_of(
            "template_style_info.column_info_layout",
            layout,
            &["list", "grid"],
        )?;
    }
    let grid = style.column_info_layout.as_deref() == Some("grid");
    for (i, c) in b.column_info_list.iter().flatten().enumerate() {
        let f = |x: &str| format!("column_info_list[{i}].{x}");
        need(&f("code"), &c.code)?;
        need(&f("title"), &c.title)?;
        match c.operate_type.as_deref().unwrap_or("staticinfo") {
            "staticinfo" => {}
            "openNative" => {
                let descs = c.more_info.as_ref().and_then(|m| m.descs.as_ref());
                if descs.is_none_or(|d| d.is_empty()) {
                    return Err(bad(&f("more_info.descs"), "is required for openNative"));
                }
            }
            "openWeb" => {
                let url = c.more_info.as_ref().and_then(|m| m.url.clone());
                http_url(&f("more_info.url"), need(&f("more_info.url"), &url)?, false)?;
            }
            other => one_of(
                &f("operate_type"),
                other,
                &["staticinfo", "openNative", "openWeb"],
            )?,
        }
        if grid {
            check_image(st, ns, &f("icon_id"), need(&f("icon_id"), &c.icon_id)?)?;
        }
    }
    for (i, r) in b.field_rule_list.iter().flatten().enumerate() {
        let f = |x: &str| format!("field_rule_list[{i}].{x}");
        one_of(
            &f("field_name"),
            &r.field_name,
            &["Balance", "Point", "Level", "OpenDate", "ValidDate"],
        )?;
        one_of(
            &f("rule_name"),
            &r.rule_name,
            &["ASSIGN_FROM_REQUEST", "DATE_IN_FUTURE", "CONST"],
        )?;
        let v = need(&f("rule_value"), &r.rule_value)?;
        match r.rule_name.as_str() {
            "ASSIGN_FROM_REQUEST" => one_of(
                &f("rule_value"),
                v,
                &["OpenDate", "ValidDate", "Level", "Point", "Balance"],
            )?,
            "DATE_IN_FUTURE" => {
                if !matches!(r.field_name.as_str(), "OpenDate" | "ValidDate") {
                    return Err(bad(
                        &f("rule_name"),
                        "DATE_IN_FUTURE applies only to OpenDate and ValidDate",
                    ));
                }
                let ok = v.len() >= 2
                    && (v.ends_with('m') || v.ends_with('d'))
                    && v[..v.len() - 1].chars().all(|c| c.is_ascii_digit());
                if !ok {
                    return Err(bad(&f("rule_value"), format!("`{v}` is not <n>m or <n>d")));
                }
            }
            _ => {}
        }
    }
    let actions = b.card_action_list.as_deref().unwrap_or_default();
    let max_actions = if creating { 3 } else { 4 };
    if actions.len() > max_actions {
        return Err(bad(
            "card_action_list",
            format!("has {} actions; at most {max_actions}", actions.len()),
        ));
    }
    for (i, a) in actions.iter().enumerate() {
        let f = |x: &str| format!("card_action_list[{i}].{x}");
        need(&f("code"), &a.code)?;
        need(&f("text"), &a.text)?;
        match a.url_type.as_deref().unwrap_or("url") {
            "url" => {
                let u = need(&f("url"), &a.url)?;
                if !u.starts_with("alipays://") {
                    http_url(&f("url"), u, false)?;
                }
            }
            "miniAppUrl" => {
                let m = a
                    .mini_app_url
                    .as_ref()
                    .ok_or_else(|| bad(&f("mini_app_url"), "is required for miniAppUrl"))?;
                need(&f("mini_app_url.mini_app_id"), &m.mini_app_id)?;
                if let Some(d) = &m.display_on_list {
                    one_of(&f("mini_app_url.display_on_list"), d, &["true", "false"])?;
                }
            }
            other => one_of(&f("url_type"), other, &["url", "miniAppUrl"])?,
        }
    }
    if let Some(conf) = &b.open_card_conf {
        if let Some(t) = &conf.open_card_source_type {
            one_of("open_card_conf.open_card_source_type", t, &["ISV", "MER"])?;
        }
        if let Some(u) = &conf.open_card_url {
            http_url("open_card_conf.open_card_url", u, false)?;
        }
        for (i, r) in conf.card_rights.iter().flatten().enumerate() {
            if let Some(id) = &r.logo_id {
                check_image(
                    st,
                    ns,
                    &format!("open_card_conf.card_rights[{i}].logo_id"),
                    id,
                )?;
            }
        }
    }
    for (i, p) in b.pub_channels.iter().flatten().enumerate() {
        one_of(
            &format!("pub_channels[{i}].pub_channel"),
            need(&format!("pub_channels[{i}].pub_channel"), &p.pub_channel)?,
            &["SHOP_DETAIL"],
        )?;
    }
    if let Some(fields) = b
        .template_form_config
        .as_ref()
        .and_then(|c| c.fields.as_ref())
    {
        let req = fields.required.as_deref().unwrap_or_default();
        let opt = fields.optional.as_deref().unwrap_or_default();
        check_form_lists("template_form_config.fields", req, opt)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, l) in levels.into_iter().flatten().enumerate() {
        if l.level.trim().is_empty() {
            return Err(bad(&format!("card_level_conf[{i}].level"), "is required"));
        }
        if !seen.insert(l.level.as_str()) {
            return Err(bad(
                &format!("card_level_conf[{i}].level"),
                format!("`{}` appears twice", l.level),
            ));
        }
        if let Some(icon) = &l.level_icon {
            check_image(st, ns, &format!("card_level_conf[{i}].level_icon"), icon)?;
        }
    }
    Ok(())
}

pub(super) fn check_form_lists(
    field: &str,
    required: &[String],
    optional: &[String],
) -> Result<(), Fail> {
    if required.is_empty() {
        return Err(bad(
            &format!("{field}.required"),
            "must contain at least one field",
        ));
    }
    if required.len() + optional.len() > 20 {
        return Err(bad(field, "at most 20 fields in total"));
    }
    let all: Vec<&String> = required.iter().chain(optional).collect();
    for f in &all {
        one_of(field, f, FORM_FIELDS)?;
    }
    for o in optional {
        if required.contains(o) {
            return Err(bad(
                &format!("{field}.optional"),
                format!("`{o}` is also required"),
            ));
        }
    }
    let has = |n: &str| all.iter().any(|f| f.as_str() == n);
    if has("OPEN_FORM_FIELD_IDCARD")
        && (has("OPEN_FORM_FIELD_CERT_TYPE") || has("OPEN_FORM_FIELD_CERT_NO"))
    {
        return Err(bad(
            field,
            "OPEN_FORM_FIELD_IDCARD cannot be combined with CERT_TYPE or CERT_NO",
        ));
    }
    Ok(())
}

pub(super) fn get_template(st: &Store, ns: &str, id: &str) -> Result<TemplateRec, Fail> {
    store::get::<TemplateRec>(&st.templates, id)?
        .filter(|t| t.ns == ns)
        .ok_or_else(|| Fail::business("TEMPLATE_NOT_EXIT", format!("template {id} does not exist")))
}

pub(super) fn template_create(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (TemplateCreateRequest, Value) = parse_biz(inc)?;
    let rid = need("request_id", &Some(req.request_id.clone()))?.to_string();
    max_len("request_id", &rid, 32)?;
    let key = format!("{ns}|template.create|{rid}");
    if let Some(node) = replay(st, &key, &biz, "request_id")? {
        return Ok(node);
    }
    one_of("card_type", &req.card_type, &["OUT_MEMBER_CARD"])?;
    validate_body(st, ns, &req.body, req.card_level_conf.as_ref(), true)?;
    let cst = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    let template_id = format!(
        "{}{:024}",
        Utc::now().with_timezone(&cst).format("%Y%m%d"),
        st.next_id()?
    );
    let now = now_cst();
    let rec = TemplateRec {
        ns: ns.into(),
        template_id: template_id.clone(),
        card_type: req.card_type,
        body: req.body,
        card_level_conf: req.card_level_conf,
        service_label_list: req.service_label_list,
        form: None,
        gmt_create: now.clone(),
        gmt_modified: now,
    };
    store::put(&st.templates, &template_id, &rec)?;
    st.template_ns
        .insert(store::ns_key(ns, &template_id), &[])
        .map_err(Fail::internal)?;
    let node = success(&TemplateIdResponse { template_id });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

/// Overwrite each field of `into` that `from` carries.
pub(super) fn merge_body(into: &mut TemplateBody, from: TemplateBody) {
    macro_rules! take {
        ($($f:ident),*) => { $( if from.$f.is_some() { into.$f = from.$f; } )* };
    }
    take!(
        biz_no_prefix,
        biz_no_suffix_len,
        write_off_type,
        template_style_info,
        column_info_list,
        field_rule_list,
        card_action_list,
        template_benefit_info,
        open_card_conf,
        mdcode_notify_conf,
        shop_ids,
        pub_channels,
        spi_app_id,
        template_form_config,
        access_version,
        card_spec_tag
    );
}

pub(super) fn template_modify(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (TemplateModifyRequest, Value) = parse_biz(inc)?;
    let rid = need("request_id", &Some(req.request_id.clone()))?.to_string();
    max_len("request_id", &rid, 64)?;
    let key = format!("{ns}|template.modify|{rid}");
    if let Some(node) = replay(st, &key, &biz, "request_id")? {
        return Ok(node);
    }
    let mut rec = get_template(st, ns, &req.template_id)?;
    if let Some(len) = &req.body.biz_no_suffix_len
        && Some(len) != rec.body.biz_no_suffix_len.as_ref()
    {
        return Err(bad(
            "biz_no_suffix_len",
            "cannot be changed after the template is created",
        ));
    }
    if let Some(rules) = &req.body.field_rule_list
        && Some(rules) != rec.body.field_rule_list.as_ref()
    {
        return Err(bad(
            "field_rule_list",
            "cannot be modified for merchant cards",
        ));
    }
    if let Some(new_shops) = &req.body.shop_ids {
        let removed: Vec<&String> = rec
            .body
            .shop_ids
            .iter()
            .flatten()
            .filter(|s| !new_shops.contains(s))
            .collect();
        if !removed.is_empty() {
            return Err(bad(
                "shop_ids",
                format!(
                    "shop ids cannot be removed ({})",
                    removed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let mut merged = rec.body.clone();
    merge_body(&mut merged, req.body);
    let levels = req.card_level_conf.or(rec.card_level_conf.clone());
    validate_body(st, ns, &merged, levels.as_ref(), false)?;
    rec.body = merged;
    rec.card_level_conf = levels;
    rec.gmt_modified = later_than(&rec.gmt_modified);
    store::put(&st.templates, &rec.template_id, &rec)?;
    let node = success(&TemplateIdResponse {
        template_id: rec.template_id,
    });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

pub(super) fn template_query(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (TemplateQueryRequest, Value) = parse_biz(inc)?;
    let rec = get_template(st, ns, &req.template_id)?;
    let mut body = rec.body;
    // Not in the SDK response class (card-apis.md §7).
    body.write_off_type = None;
    Ok(success(&TemplateQueryResponse {
        card_type: Some(rec.card_type),
        body,
        card_level_confs: rec.card_level_conf,
        service_label_list: rec.service_label_list,
    }))
}

pub(super) fn template_batchquery(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (TemplateBatchQueryRequest, Value) = parse_biz(inc)?;
    if req.page_no < 1 {
        return Err(bad("page_no", "starts at 1"));
    }
    if !(1..=20).contains(&req.page_size) {
        return Err(bad("page_size", "must be from 1 to 20"));
    }
    // The namespace's templates, in id order, from the index.
    let mut prefix = ns.as_bytes().to_vec();
    prefix.push(0);
    let ids: Vec<String> = st
        .template_ns
        .scan_prefix(&prefix)
        .keys()
        .map(|k| k.map(|k| String::from_utf8_lossy(&k[prefix.len()..]).into_owned()))
        .collect::<Result<_, _>>()
        .map_err(Fail::internal)?;
    let total = ids.len() as i64;
    let skip = ((req.page_no - 1) * req.page_size) as usize;
    let mut all = Vec::new();
    for id in ids.iter().skip(skip).take(req.page_size as usize) {
        if let Some(rec) = store::get::<TemplateRec>(&st.templates, id).map_err(Fail::internal)? {
            all.push(rec);
        }
    }
    let page = all
        .into_iter()
        .map(|r| McardTemplate {
            template_id: r.template_id,
            card_type: Some(r.card_type),
            gmt_create: Some(r.gmt_create),
            gmt_modified: Some(r.gmt_modified),
            template_style_info: r.body.template_style_info,
        })
        .collect();
    Ok(success(&TemplateBatchQueryResponse {
        mcard_template: page,
        template_total: total,
    }))
}
