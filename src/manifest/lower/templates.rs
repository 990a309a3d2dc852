//! One template (or tier) emitted: its attributes checked field by field, and
//! its form and activation URL beside it.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn emit_template(
    ctx: &mut Ctx,
    desired: &mut Desired,
    mname: &str,
    name: &str,
    at: &At,
    t: &raw::Template,
    levels: Option<&Vec<card::Level>>,
    images: &BTreeMap<String, (raw::ImageRole, String)>,
) {
    let before = ctx.diags.0.len();
    let mut hashes = BTreeMap::new();
    let mut img = |ctx: &mut Ctx,
                   field: &str,
                   n: &Option<String>,
                   want: Option<raw::ImageRole>|
     -> Option<String> {
        let n = n.as_ref()?;
        let (addr, sha) = image_ref(ctx, at, field, n, images, want)?;
        hashes.insert(addr.clone(), sha);
        Some(addr)
    };
    let Some(style) = &t.style else {
        ctx.report(
            at,
            "style",
            "a template needs `style` (at least name, logo and background)",
        );
        return;
    };
    for (f, v) in [
        ("style.name", &style.name),
        ("style.logo", &style.logo),
        ("style.background", &style.background),
    ] {
        if v.as_deref().is_none_or(|s| s.trim().is_empty()) {
            ctx.report(at, f, format!("`{f}` is required"));
        }
    }
    let logo = img(ctx, "style.logo", &style.logo, Some(raw::ImageRole::Logo));
    let background = img(
        ctx,
        "style.background",
        &style.background,
        Some(raw::ImageRole::Background),
    );
    let slogan_img = img(ctx, "style.slogan_image", &style.slogan_image, None);
    let banner_img = img(ctx, "style.banner_image", &style.banner_image, None);
    if let Some(u) = &style.banner_url
        && !is_http(u)
    {
        ctx.report(
            at,
            "style.banner_url",
            format!("`{u}` is not an http(s) URL"),
        );
    }
    if let Some(c) = &style.text_color
        && !is_rgb(c)
    {
        ctx.report(
            at,
            "style.text_color",
            format!(
                "`{}` is not a colour the gateway takes: write `rgb(r,g,b)` with each of r, g, b from 0 to 255, e.g. `rgb(55,112,179)`",
                crate::manifest::diag::clip(c, 60)
            ),
        );
    }
    let number = t.card_number.clone().unwrap_or_default();
    let suffix = match number.suffix_length {
        Some(n) if (8..=32).contains(&n) => Some(n),
        Some(n) => {
            ctx.report(
                at,
                "card_number.suffix_length",
                format!("{n} is not from 8 to 32"),
            );
            None
        }
        None => {
            ctx.report(
                at,
                "card_number.suffix_length",
                "`card_number.suffix_length` is required (8 to 32; it cannot change later)",
            );
            None
        }
    };
    if let Some(p) = &number.prefix {
        if p.chars().count() > 10 {
            ctx.report(
                at,
                "card_number.prefix",
                format!("`{p}` is {} characters; at most 10", p.chars().count()),
            );
        } else if let Some(s) = suffix
            && p.chars().count() + s as usize > 32
        {
            ctx.report(
                at,
                "card_number",
                "prefix plus suffix_length exceeds 32 characters",
            );
        }
    }
    let write_off = match t.write_off {
        Some(w) => Some(w),
        None => {
            ctx.report(at, "write_off", "`write_off` is required (qrcode, barcode, dynamic_qrcode, dynamic_barcode, merchant_dynamic_qrcode, merchant_dynamic_barcode)");
            None
        }
    };
    if matches!(
        write_off,
        Some(raw::WriteOff::MerchantDynamicQrcode | raw::WriteOff::MerchantDynamicBarcode)
    ) {
        match &t.dynamic_code_notify {
            None => ctx.report(
                at,
                "dynamic_code_notify",
                "merchant dynamic codes need `dynamic_code_notify` (an https URL)",
            ),
            Some(d) if !d.url.starts_with("https://") => ctx.report(
                at,
                "dynamic_code_notify.url",
                format!("`{}` must be an https URL", d.url),
            ),
            _ => {}
        }
    }
    let grid = style.column_layout == Some(raw::ColumnLayout::Grid);
    let mut columns = Vec::new();
    for (i, c) in t.columns.iter().flatten().enumerate() {
        let f = |x: &str| format!("columns[{i}].{x}");
        let action = c.action.unwrap_or(raw::ColumnAction::Static);
        match action {
            raw::ColumnAction::Static => {}
            raw::ColumnAction::Native => {
                if c.more
                    .as_ref()
                    .and_then(|m| m.descriptions.as_ref())
                    .is_none_or(|d| d.is_empty())
                {
                    ctx.report(
                        at,
                        &f("more.descriptions"),
                        "`action: native` shows `more.descriptions`; give at least one",
                    );
                }
            }
            raw::ColumnAction::Web => match c.more.as_ref().and_then(|m| m.url.as_ref()) {
                Some(u) if is_http(u) => {}
                Some(u) => ctx.report(at, &f("more.url"), format!("`{u}` is not an http(s) URL")),
                None => ctx.report(
                    at,
                    &f("more.url"),
                    "`action: web` opens `more.url`; give it",
                ),
            },
        }
        if grid && c.icon.is_none() {
            ctx.report(
                at,
                &f("icon"),
                "the grid layout needs an icon on every column",
            );
        }
        let icon = img(ctx, &f("icon"), &c.icon, None);
        columns.push(card::Column {
            code: c.code.clone(),
            title: c.title.clone(),
            value: c.value.clone(),
            action,
            more: c.more.as_ref().map(|m| {
                Box::new(card::More {
                    title: m.title.clone(),
                    url: m.url.clone(),
                    params: m.params.clone(),
                    descriptions: m.descriptions.clone(),
                })
            }),
            icon,
            tag: c.tag.clone(),
            group_title: c.group_title.clone(),
        });
    }
    let mut rules = Vec::new();
    for (i, r) in t.field_rules.iter().flatten().enumerate() {
        match r.rule {
            raw::RuleKind::FromRequest => {
                if !["OpenDate", "ValidDate", "Level", "Point", "Balance"]
                    .contains(&r.value.as_str())
                {
                    ctx.report(
                        at,
                        &format!("field_rules[{i}].value"),
                        format!(
                            "`{}` is not one of OpenDate, ValidDate, Level, Point, Balance",
                            r.value
                        ),
                    );
                }
            }
            raw::RuleKind::DateInFuture => {
                if !matches!(
                    r.field,
                    raw::CardField::OpenDate | raw::CardField::ValidDate
                ) {
                    ctx.report(
                        at,
                        &format!("field_rules[{i}].rule"),
                        "`date_in_future` applies only to OpenDate and ValidDate",
                    );
                }
                let v = &r.value;
                let ok = v.len() >= 2
                    && (v.ends_with('m') || v.ends_with('d'))
                    && v[..v.len() - 1].chars().all(|c| c.is_ascii_digit());
                if !ok {
                    ctx.report(
                        at,
                        &format!("field_rules[{i}].value"),
                        format!("`{v}` is not <n>m (months) or <n>d (days)"),
                    );
                }
            }
            raw::RuleKind::Const => {}
        }
        rules.push(card::FieldRule {
            field: r.field,
            rule: r.rule,
            value: r.value.clone(),
        });
    }
    let actions = t.actions.clone().unwrap_or_default();
    if actions.len() > 3 {
        ctx.report(
            at,
            "actions",
            format!("{} actions; a template may have at most 3", actions.len()),
        );
    }
    let mut action_list = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        match (&a.url, &a.mini_app) {
            (Some(u), None) => {
                if !is_http(u) && !u.starts_with("alipays://") {
                    ctx.report(
                        at,
                        &format!("actions[{i}].url"),
                        format!("`{u}` is not an http(s) or alipays:// URL"),
                    );
                }
            }
            (None, Some(_)) => {}
            _ => ctx.report(
                at,
                &format!("actions[{i}]"),
                "give exactly one of `url` or `mini_app`",
            ),
        }
        action_list.push(card::CardAction {
            code: a.code.clone(),
            text: a.text.clone(),
            url: a.url.clone(),
            mini_app: a.mini_app.as_ref().map(|m| card::MiniApp {
                app_id: m.app_id.clone(),
                page: m.page.clone(),
                query: m.query.clone(),
                show_on_list: m.show_on_list,
            }),
        });
    }
    let mut benefits = Vec::new();
    for (i, b) in t.benefits.iter().flatten().enumerate() {
        for (f, v) in [("start", &b.start), ("end", &b.end)] {
            if let Some(v) = v
                && !is_datetime(v)
            {
                ctx.report(
                    at,
                    &format!("benefits[{i}].{f}"),
                    format!("`{v}` is not `yyyy-MM-dd HH:mm:ss`"),
                );
            }
        }
        benefits.push(card::Benefit {
            title: b.title.clone(),
            descriptions: b.descriptions.clone(),
            start: b.start.clone(),
            end: b.end.clone(),
        });
    }
    let open_card = t.open_card.as_ref().map(|o| {
        if let Some(u) = &o.url
            && !is_http(u)
        {
            ctx.report(at, "open_card.url", format!("`{u}` is not an http(s) URL"));
        }
        let rights = o.rights.as_ref().map(|rs| {
            rs.iter()
                .enumerate()
                .map(|(i, r)| card::Right {
                    title: r.title.clone(),
                    detail: r.detail.clone(),
                    logo: img(ctx, &format!("open_card.rights[{i}].logo"), &r.logo, None),
                })
                .collect()
        });
        card::OpenCard {
            operated_by: o.operated_by,
            source_app_id: o.source_app_id.clone(),
            url: o.url.clone(),
            rights,
        }
    });
    if let Some(levels) = levels {
        for l in levels {
            if let Some(icon) = &l.level_icon
                && let Some(sha) = images.get(icon.rsplit('.').next().unwrap_or_default())
            {
                hashes.insert(icon.clone(), sha.1.clone());
            }
        }
    }
    // Form and activation URL checks.
    let form = t.form.as_ref().map(|f| {
        let optional = f.optional.clone().unwrap_or_default();
        if f.required.is_empty() {
            ctx.report(
                at,
                "form.required",
                "the form needs at least one required field",
            );
        }
        if f.required.len() + optional.len() > 20 {
            ctx.report(at, "form", "a form may have at most 20 fields");
        }
        for (i, o) in optional.iter().enumerate() {
            if f.required.contains(o) {
                ctx.report(
                    at,
                    &format!("form.optional[{i}]"),
                    format!("`{}` is already required", o.name()),
                );
            }
        }
        let all: Vec<_> = f.required.iter().chain(&optional).collect();
        if all.iter().any(|x| **x == raw::FormField::Idcard)
            && all
                .iter()
                .any(|x| matches!(x, raw::FormField::CertType | raw::FormField::CertNo))
        {
            ctx.report(
                at,
                "form",
                "`idcard` cannot be combined with `cert_type` or `cert_no`",
            );
        }
        (f.required.clone(), optional)
    });
    if let Some(u) = &t.activation_url {
        if let Some(cb) = &u.callback {
            if !is_http(cb) {
                ctx.report(
                    at,
                    "activation_url.callback",
                    format!("`{cb}` is not an http(s) URL"),
                );
            } else if cb.contains('?') {
                ctx.report(at, "activation_url.callback", "the callback must not carry a query string\nhint: put per-link data in `out_string`");
            }
        }
        if let Some(o) = &u.out_string
            && o.chars().count() > 256
        {
            ctx.report(
                at,
                "activation_url.out_string",
                format!("{} characters; at most 256", o.chars().count()),
            );
        }
        if let Some(issue) = &u.issue {
            lower_issue(
                ctx,
                desired,
                mname,
                name,
                at,
                u,
                issue,
                levels,
                t.spi_app_id.as_deref(),
            );
        }
    }
    if ctx.diags.0.len() > before {
        return;
    }
    // No error was reported: everything required is present.
    let (Some(suffix_length), Some(write_off), Some(name_), Some(logo), Some(background)) =
        (suffix, write_off, style.name.clone(), logo, background)
    else {
        return;
    };
    let attrs = TemplateAttrs {
        card_type: t.card_type.unwrap_or(raw::CardType::OutMemberCard),
        card_number: card::CardNumber {
            prefix: number.prefix.clone(),
            suffix_length,
        },
        write_off,
        style: card::Style {
            name: name_,
            logo,
            background,
            text_color: style.text_color.clone(),
            brand_name: style.brand_name.clone(),
            slogan: style.slogan.clone(),
            slogan_image: slogan_img,
            banner_image: banner_img,
            banner_url: style.banner_url.clone(),
            feature_descriptions: style.feature_descriptions.clone(),
            show_front_text: style.show_front_text,
            show_front_image: style.show_front_image,
            column_layout: style.column_layout,
        },
        columns,
        field_rules: rules,
        actions: action_list,
        benefits,
        open_card,
        dynamic_code_notify: t
            .dynamic_code_notify
            .as_ref()
            .map(|d| card::DynamicCodeNotify {
                url: d.url.clone(),
                ext_params: d.ext_params.clone(),
            }),
        shops: t.shops.clone(),
        channels: t.channels.clone(),
        spi_app_id: t.spi_app_id.clone(),
        levels: levels.cloned().unwrap_or_default(),
        image_hashes: hashes,
    };
    let address = Address::new(mname, Kind::Template, name);
    let deps: Vec<Address> = attrs
        .image_hashes
        .keys()
        .filter_map(|a| a.parse().ok())
        .collect();
    desired.resources.insert(
        address.clone(),
        Resource {
            address: address.clone(),
            deps,
            attrs: Attrs::Template(Box::new(attrs)),
        },
    );
    if let Some(b) = &t.dated_benefits {
        lower_benefits(ctx, desired, at, &address, t.level.as_deref(), b);
    }
    let mut last = address.clone();
    if let Some((required, optional)) = form {
        let fa = address.with_kind(Kind::Form);
        desired.resources.insert(
            fa.clone(),
            Resource {
                address: fa.clone(),
                deps: vec![address.clone()],
                attrs: Attrs::Form(Box::new(FormAttrs {
                    template: address.clone(),
                    required,
                    optional,
                })),
            },
        );
        last = fa;
    }
    if let Some(u) = &t.activation_url {
        let ua = address.with_kind(Kind::ActivationUrl);
        let mut deps = vec![address.clone()];
        if last != address {
            deps.push(last);
        }
        desired.resources.insert(
            ua.clone(),
            Resource {
                address: ua,
                deps,
                attrs: Attrs::ActivationUrl(Box::new(ActivationUrlAttrs {
                    template: address,
                    callback: u.callback.clone(),
                    out_string: u.out_string.clone(),
                    follow_app_id: u.follow_app_id.clone(),
                })),
            },
        );
    }
}
