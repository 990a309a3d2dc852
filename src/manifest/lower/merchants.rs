//! Merchants: their images (probed for format, size and hash, checked for
//! their role), templates with `extends` and `tiers` resolved, each handed to
//! `templates` to emit.

use super::*;

pub(super) fn role_name(r: raw::ImageRole) -> &'static str {
    match r {
        raw::ImageRole::Background => "background",
        raw::ImageRole::Logo => "logo",
        raw::ImageRole::CardFront => "card_front",
        raw::ImageRole::LevelIcon => "level_icon",
        raw::ImageRole::Other => "other",
    }
}

/// Check an image against its role: pixels (at least, same proportions) and bytes.
pub(super) fn role_problem(role: raw::ImageRole, f: &ImageFacts) -> Option<String> {
    const MB: u64 = 1024 * 1024;
    let (min, max_bytes) = match role {
        raw::ImageRole::Background => (Some((1020, 643)), 2 * MB),
        raw::ImageRole::Logo => (Some((500, 500)), MB),
        raw::ImageRole::CardFront => (Some((230, 295)), MB),
        raw::ImageRole::LevelIcon | raw::ImageRole::Other => (None, MB),
    };
    if f.bytes > max_bytes {
        return Some(format!(
            "the {} image is {} bytes; at most {} ({} MB) are allowed",
            role_name(role),
            f.bytes,
            max_bytes,
            max_bytes / MB
        ));
    }
    if let Some((w, h)) = min {
        let same_ratio = (f.width * h).abs_diff(f.height * w) * 100 <= w * h;
        if f.width < w || f.height < h || !same_ratio {
            return Some(format!(
                "the {} image is {}x{} pixels; it must be {w}x{h} (or larger in the same proportions)",
                role_name(role),
                f.width,
                f.height
            ));
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
pub(super) fn lower_merchant(
    ctx: &mut Ctx,
    desired: &mut Desired,
    mname: &str,
    mat: &At,
    m: &raw::Merchant,
    project_vars: &BTreeMap<String, String>,
    cli_vars: &BTreeMap<String, String>,
    default_images: &BTreeMap<String, (At, raw::Image)>,
    default_templates: &BTreeMap<String, (At, raw::Template)>,
) {
    if let Some(r) = m.rate_limit {
        if r > 0.0 && r.is_finite() {
            desired
                .gateway
                .rate_limits
                .merchants
                .insert(mname.to_string(), r);
        } else {
            ctx.report(
                mat,
                "rate_limit",
                format!("`{r}` is not a positive number of calls per second"),
            );
        }
    }
    let mut ignore_templates = std::collections::BTreeSet::new();
    for (i, id) in m.ignore_templates.iter().flatten().enumerate() {
        if is_gateway_id(id.trim()) {
            ignore_templates.insert(id.trim().to_string());
        } else {
            ctx.report(
                mat,
                &format!("ignore_templates[{i}]"),
                format!(
                    "`{}` is not a template id",
                    crate::manifest::diag::clip(id, 60)
                ),
            );
        }
    }
    desired.merchants.insert(
        mname.to_string(),
        MerchantInfo {
            display_name: m.display_name.clone(),
            app_auth_token: m
                .app_auth_token
                .as_ref()
                .and_then(|s| secret_ref(ctx, mat, "app_auth_token", s)),
            ignore_templates,
        },
    );
    // Images: defaults first, the merchant's own override by name.
    let mut images: BTreeMap<String, (At, raw::Image)> = default_images.clone();
    for (k, v) in m.images.iter().flatten() {
        images.insert(
            k.clone(),
            (
                At::new(
                    mat.file,
                    crate::manifest::source::join(&format!("{}.images", mat.path), k),
                ),
                v.clone(),
            ),
        );
    }
    let mut image_roles: BTreeMap<String, (raw::ImageRole, String)> = BTreeMap::new();
    for (name, (at, img)) in &images {
        if !valid_name(name) {
            let d = ctx
                .err(at, "", format!("image name `{name}` is not a valid name"))
                .with_hint(NAME_HINT);
            ctx.diags.push(d);
            continue;
        }
        // Any problem with the image itself is reported here, once; the
        // templates that use it add no error of their own.
        ctx.broken_images.insert((mname.to_string(), name.clone()));
        let file = match (&img.file, &img.id) {
            (Some(f), None) => f.clone(),
            (None, Some(id)) => {
                if !is_gateway_id(id) {
                    ctx.report(
                        at,
                        "id",
                        format!(
                            "`{}` is not an image id",
                            crate::manifest::diag::clip(id, 60)
                        ),
                    );
                    continue;
                }
                ctx.broken_images.remove(&(mname.to_string(), name.clone()));
                let address = Address::new(mname, Kind::Image, name);
                let sha = format!("id:{id}");
                image_roles.insert(name.clone(), (img.role, sha.clone()));
                desired.resources.insert(
                    address.clone(),
                    Resource {
                        address,
                        deps: Vec::new(),
                        attrs: Attrs::Image(Box::new(ImageAttrs {
                            file: String::new(),
                            source: PathBuf::new(),
                            role: role_name(img.role).into(),
                            image_type: String::new(),
                            sha256: sha,
                            width: 0,
                            height: 0,
                            bytes: 0,
                            id: Some(id.clone()),
                        })),
                    },
                );
                continue;
            }
            _ => {
                ctx.report(
                    at,
                    "",
                    "an image needs exactly one of `file` (bytes to upload) or `id` (an image the gateway already holds)",
                );
                continue;
            }
        };
        let path = ctx.dir(at.file).join(&file);
        let facts = match ctx.probe(&path) {
            Ok(f) => f,
            Err(e) => {
                ctx.report(at, "file", e);
                continue;
            }
        };
        let ext = Path::new(&file)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let ext_format = match ext.as_str() {
            "jpeg" | "jpg" => "jpg",
            other => other,
        };
        if ext_format != facts.format {
            ctx.report(
                at,
                "file",
                format!(
                    "`{}` is a {} file but its name ends in `.{ext}`",
                    file,
                    facts.format.to_uppercase()
                ),
            );
            continue;
        }
        if let Some(p) = role_problem(img.role, &facts) {
            ctx.report(at, "file", p);
            continue;
        }
        ctx.broken_images.remove(&(mname.to_string(), name.clone()));
        let address = Address::new(mname, Kind::Image, name);
        image_roles.insert(name.clone(), (img.role, facts.sha256.clone()));
        desired.resources.insert(
            address.clone(),
            Resource {
                address,
                deps: Vec::new(),
                attrs: Attrs::Image(Box::new(ImageAttrs {
                    file: facts.relative,
                    source: path,
                    role: role_name(img.role).into(),
                    image_type: facts.format.into(),
                    sha256: facts.sha256,
                    width: facts.width,
                    height: facts.height,
                    bytes: facts.bytes,
                    id: None,
                })),
            },
        );
    }
    let merchant_vars = m.variables.clone().unwrap_or_default();
    let var = |name: &str| -> Option<String> {
        cli_vars
            .get(name)
            .or_else(|| merchant_vars.get(name))
            .or_else(|| project_vars.get(name))
            .cloned()
    };
    for (tname, t) in m.templates.iter().flatten() {
        let mut at = At::new(
            mat.file,
            crate::manifest::source::join(&format!("{}.templates", mat.path), tname),
        );
        if !valid_name(tname) {
            let d = ctx
                .err(
                    &at,
                    "",
                    format!("template name `{tname}` is not a valid name"),
                )
                .with_hint(NAME_HINT);
            ctx.diags.push(d);
            continue;
        }
        // extends chain, outermost base first
        let mut base = Value::Object(Default::default());
        if let Some(ext) = &t.extends {
            let mut chain = Vec::new();
            let mut cur = Some(ext.clone());
            while let Some(name) = cur {
                if chain.contains(&name) {
                    break; // reported once at the default
                }
                match default_templates.get(&name) {
                    Some((_, d)) => {
                        cur = d.extends.clone();
                        chain.push(name);
                    }
                    None => {
                        let d = ctx
                            .err(
                                &at,
                                "extends",
                                format!(
                                    "`extends: {name}` names no template in `defaults.templates`"
                                ),
                            )
                            .with_hint(
                                did_you_mean(&name, default_templates.keys().map(String::as_str))
                                    .unwrap_or_default(),
                            );
                        ctx.diags.push(d);
                        chain.clear();
                        break;
                    }
                }
            }
            // Fields not written on the template come from its bases.
            at.bases = chain
                .iter()
                .map(|n| default_templates[n].0.clone())
                .collect();
            // The chain's merged value is the same for every template that
            // extends the same default: built once per run.
            if let Some(first) = chain.first() {
                base = ctx
                    .bases
                    .entry(first.clone())
                    .or_insert_with(|| {
                        let mut merged = Value::Object(Default::default());
                        for name in chain.iter().rev() {
                            let v = serde_json::to_value(&default_templates[name].1)
                                .expect("raw types serialize");
                            merge(&mut merged, &v);
                        }
                        merged
                    })
                    .clone();
            }
        }
        merge(
            &mut base,
            &serde_json::to_value(t).expect("raw types serialize"),
        );
        if let Value::Object(o) = &mut base {
            o.remove("extends");
        }
        let tiers: Vec<Value> = base
            .as_object_mut()
            .and_then(|o| o.remove("tiers"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let mut errors = Vec::new();
        interpolate_value(&mut base, &var, ctx.env, &mut errors);
        for (field, e) in errors {
            ctx.report(&at, &field, e);
        }
        for f in ["level", "level_name", "level_icon", "level_description"] {
            if base.get(f).is_some() {
                ctx.report(
                    &at,
                    f,
                    format!("`{f}` belongs in a tier (under `tiers:`), not on the template"),
                );
            }
        }
        if tiers.is_empty() {
            let tpl: raw::Template = match serde_json::from_value(base) {
                Ok(t) => t,
                Err(e) => {
                    ctx.report(
                        &at,
                        "",
                        format!("cannot combine the template with its base: {e}"),
                    );
                    continue;
                }
            };
            emit_template(ctx, desired, mname, tname, &at, &tpl, None, &image_roles);
            continue;
        }
        // Tiers: each is the base with the tier's overrides.
        let mut levels: Vec<(raw::Template, At)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, tier) in tiers.iter().enumerate() {
            let mut tat = At::new(at.file, format!("{}.tiers[{i}]", at.path));
            // A tier's field may be written on the tier, the template, or a
            // base (in the base's own tiers or on the base itself).
            tat.bases.push(At::new(at.file, at.path.clone()));
            for b in &at.bases {
                tat.bases
                    .push(At::new(b.file, format!("{}.tiers[{i}]", b.path)));
                tat.bases.push(At::new(b.file, b.path.clone()));
            }
            let mut tier = tier.clone();
            let mut errors = Vec::new();
            interpolate_value(&mut tier, &var, ctx.env, &mut errors);
            for (field, e) in errors {
                ctx.report(&tat, &field, e);
            }
            for f in ["tiers", "extends"] {
                if tier.get(f).is_some() {
                    ctx.report(&tat, f, format!("`{f}` is not allowed inside a tier"));
                }
            }
            let mut merged = base.clone();
            merge(&mut merged, &tier);
            let tpl: raw::Template = match serde_json::from_value(merged) {
                Ok(t) => t,
                Err(e) => {
                    ctx.report(
                        &tat,
                        "",
                        format!("cannot combine the tier with its template: {e}"),
                    );
                    continue;
                }
            };
            let Some(level) = tpl.level.clone() else {
                ctx.report(
                    &tat,
                    "",
                    "a tier needs `level` (its level code, also its address name)",
                );
                continue;
            };
            if !valid_name(&level) {
                let d = ctx
                    .err(
                        &tat,
                        "level",
                        format!("level `{level}` is not a valid name"),
                    )
                    .with_hint(NAME_HINT);
                ctx.diags.push(d);
                continue;
            }
            if !seen.insert(level.clone()) {
                ctx.report(
                    &tat,
                    "level",
                    format!("level `{level}` appears twice in this template's tiers"),
                );
                continue;
            }
            levels.push((tpl, tat));
        }
        let mut conf = Vec::new();
        for (tpl, tat) in &levels {
            let level_icon = match &tpl.level_icon {
                Some(icon) => image_ref(
                    ctx,
                    tat,
                    "level_icon",
                    icon,
                    &image_roles,
                    Some(raw::ImageRole::LevelIcon),
                )
                .map(|(a, _)| a),
                None => None,
            };
            conf.push(card::Level {
                level: tpl.level.clone().unwrap_or_default(),
                level_name: tpl.level_name.clone(),
                level_icon,
                level_description: tpl.level_description.clone(),
            });
        }
        for (tpl, tat) in &levels {
            let level = tpl.level.clone().unwrap_or_default();
            emit_template(
                ctx,
                desired,
                mname,
                &format!("{tname}.{level}"),
                tat,
                tpl,
                Some(&conf),
                &image_roles,
            );
        }
    }
}

/// Resolve an image name to its address, checking the role where one is needed.
pub(super) fn image_ref(
    ctx: &mut Ctx,
    at: &At,
    field: &str,
    name: &str,
    images: &BTreeMap<String, (raw::ImageRole, String)>,
    want: Option<raw::ImageRole>,
) -> Option<(String, String)> {
    let merchant = at.path.split('.').nth(1).unwrap_or_default().to_string();
    let Some((role, sha)) = images.get(name) else {
        if ctx.broken_images.contains(&(merchant, name.to_string())) {
            return None; // reported at the image
        }
        let hint = did_you_mean(name, images.keys().map(String::as_str)).unwrap_or_else(|| {
            "declare it under the merchant's `images:` or `defaults.images`".into()
        });
        let d = ctx
            .err(
                at,
                field,
                format!("image `{name}` is not declared for this merchant"),
            )
            .with_hint(hint);
        ctx.diags.push(d);
        return None;
    };
    if let Some(w) = want
        && *role != w
    {
        ctx.report(
            at,
            field,
            format!(
                "image `{name}` has role `{}`; this field needs an image with role `{}`",
                role_name(*role),
                role_name(w)
            ),
        );
        return None;
    }
    Some((
        Address::new(&merchant, Kind::Image, name).to_string(),
        sha.clone(),
    ))
}
