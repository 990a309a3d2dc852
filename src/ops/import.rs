//! `cardform import --merchant NAME --generate-config-out FILE`: write a
//! manifest for every template a merchant already holds at the gateway, with
//! the `import` blocks that adopt them, in the manifest's own words. Images
//! the gateway knows only by id are referenced by id.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, anyhow, bail};

use super::project::Common;
use crate::gateway::Scope;
use crate::manifest::raw;
use crate::model::SecretRef;
use crate::model::template::TemplateAttrs;
use crate::plan::drift::suggested_name;
use crate::settings::{Overrides, Settings};

/// What was written.
#[derive(Debug)]
pub struct Generated {
    pub templates: usize,
    pub images: usize,
    /// Templates left out, with why.
    pub skipped: Vec<(String, String)>,
}

/// A secret's source as the generated manifest says it: a file relative
/// to the directory the manifest is written in (as manifests resolve it),
/// never as an absolute path of this machine.
fn secret(r: &Option<SecretRef>, base: &Path) -> Option<raw::SecretSource> {
    r.as_ref().map(|r| match r {
        SecretRef::File(p) => raw::SecretSource {
            file: Some(crate::manifest::relative_path(base, p)),
            env: None,
        },
        SecretRef::Env(n) => raw::SecretSource {
            file: None,
            env: Some(n.clone()),
        },
    })
}

/// A template in the domain's words as a raw manifest template, its image
/// ids named through `image_name`.
fn raw_template(t: &TemplateAttrs, image_name: &dyn Fn(&str) -> String) -> raw::Template {
    let opt_img = |v: &Option<String>| v.as_deref().map(image_name);
    let s = &t.style;
    raw::Template {
        card_type: Some(t.card_type),
        card_number: Some(raw::CardNumber {
            prefix: t.card_number.prefix.clone(),
            suffix_length: Some(t.card_number.suffix_length),
        }),
        write_off: Some(t.write_off),
        style: Some(raw::Style {
            name: Some(s.name.clone()),
            logo: Some(image_name(&s.logo)),
            background: Some(image_name(&s.background)),
            text_color: s.text_color.clone(),
            brand_name: s.brand_name.clone(),
            slogan: s.slogan.clone(),
            slogan_image: opt_img(&s.slogan_image),
            banner_image: opt_img(&s.banner_image),
            banner_url: s.banner_url.clone(),
            feature_descriptions: s.feature_descriptions.clone(),
            show_front_text: s.show_front_text,
            show_front_image: s.show_front_image,
            column_layout: s.column_layout,
        }),
        columns: (!t.columns.is_empty()).then(|| {
            t.columns
                .iter()
                .map(|c| raw::Column {
                    code: c.code.clone(),
                    title: c.title.clone(),
                    value: c.value.clone(),
                    action: Some(c.action),
                    more: c.more.as_ref().map(|m| raw::More {
                        title: m.title.clone(),
                        url: m.url.clone(),
                        params: m.params.clone(),
                        descriptions: m.descriptions.clone(),
                    }),
                    icon: opt_img(&c.icon),
                    tag: c.tag.clone(),
                    group_title: c.group_title.clone(),
                })
                .collect()
        }),
        field_rules: (!t.field_rules.is_empty()).then(|| {
            t.field_rules
                .iter()
                .map(|r| raw::FieldRule {
                    field: r.field,
                    rule: r.rule,
                    value: r.value.clone(),
                })
                .collect()
        }),
        actions: (!t.actions.is_empty()).then(|| {
            t.actions
                .iter()
                .map(|a| raw::Action {
                    code: a.code.clone(),
                    text: a.text.clone(),
                    url: a.url.clone(),
                    mini_app: a.mini_app.as_ref().map(|m| raw::MiniApp {
                        app_id: m.app_id.clone(),
                        page: m.page.clone(),
                        query: m.query.clone(),
                        show_on_list: m.show_on_list,
                    }),
                })
                .collect()
        }),
        benefits: (!t.benefits.is_empty()).then(|| {
            t.benefits
                .iter()
                .map(|b| raw::Benefit {
                    title: b.title.clone(),
                    descriptions: b.descriptions.clone(),
                    start: b.start.clone(),
                    end: b.end.clone(),
                })
                .collect()
        }),
        open_card: t.open_card.as_ref().map(|o| raw::OpenCard {
            operated_by: o.operated_by,
            source_app_id: o.source_app_id.clone(),
            url: o.url.clone(),
            rights: o.rights.as_ref().map(|rs| {
                rs.iter()
                    .map(|r| raw::Right {
                        title: r.title.clone(),
                        detail: r.detail.clone(),
                        logo: opt_img(&r.logo),
                    })
                    .collect()
            }),
        }),
        dynamic_code_notify: t
            .dynamic_code_notify
            .as_ref()
            .map(|d| raw::DynamicCodeNotify {
                url: d.url.clone(),
                ext_params: d.ext_params.clone(),
            }),
        shops: t.shops.clone(),
        channels: t.channels.clone(),
        spi_app_id: t.spi_app_id.clone(),
        ..raw::Template::default()
    }
}

/// Where each image id is used first decides its role and name.
/// A template's dated benefits as the manifest writes them (named after
/// their titles): applied, each is found on its template and adopted, not
/// created again.
fn dated(
    on_it: &[crate::alipay::methods::McardTemplateBenefitQuery],
) -> Option<BTreeMap<String, raw::DatedBenefit>> {
    let mut out = BTreeMap::new();
    for q in on_it {
        let b = crate::provider::benefit::from_wire(
            q,
            &crate::model::Address::new("-", crate::model::Kind::Template, "-"),
        );
        let mut name = suggested_name(Some(&b.title), &q.benefit_id);
        if out.contains_key(&name) {
            name = format!("{name}-{}", out.len());
        }
        out.insert(
            name,
            raw::DatedBenefit {
                title: b.title,
                descriptions: b.descriptions,
                start: b.start,
                end: b.end,
                link: b.link,
            },
        );
    }
    (!out.is_empty()).then_some(out)
}

fn image_role(field: &str) -> (raw::ImageRole, &'static str) {
    match field {
        "style.logo" => (raw::ImageRole::Logo, "logo"),
        "style.background" => (raw::ImageRole::Background, "background"),
        f if f.starts_with("levels[") => (raw::ImageRole::LevelIcon, "level-icon"),
        _ => (raw::ImageRole::Other, "image"),
    }
}

/// Templates with levels, grouped into tiers where that is exact: the same
/// level list and otherwise equal but for the card name, as many templates
/// as levels, and each level's name (or code) found in exactly one of their
/// card names. Returns each group's template indices in level order, and the
/// templates with levels that could not be grouped.
fn tier_groups(read: &[(String, TemplateAttrs, bool)]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, (_, t, _)) in read.iter().enumerate() {
        if t.levels.is_empty() {
            continue;
        }
        let mut key = t.clone();
        key.style.name.clear();
        by_key
            .entry(serde_json::to_string(&key).expect("attributes serialize"))
            .or_default()
            .push(i);
    }
    let (mut groups, mut left) = (Vec::new(), Vec::new());
    for members in by_key.into_values() {
        let levels = &read[members[0]].1.levels;
        let mut order = Vec::new();
        for l in levels {
            let word = l.level_name.as_deref().unwrap_or(&l.level).to_lowercase();
            let found: Vec<usize> = members
                .iter()
                .copied()
                .filter(|&i| read[i].1.style.name.to_lowercase().contains(&word))
                .collect();
            match found.as_slice() {
                [one] if !order.contains(one) => order.push(*one),
                _ => break,
            }
        }
        if members.len() == levels.len() && order.len() == levels.len() {
            groups.push(order);
        } else {
            left.extend(members);
        }
    }
    (groups, left)
}

pub async fn generate(
    common: &Common,
    flags: &Overrides,
    merchant: &str,
    out: &Path,
) -> Result<Generated> {
    let desired = super::load::load(&common.project, &common.vars)?;
    let settings =
        Settings::resolve_with(flags, &desired.gateway)?.for_project(&desired.project.root);
    let Some(info) = desired.merchants.get(merchant) else {
        bail!(
            "merchant `{merchant}` is not declared in the project\nhint: declare it (with its app_auth_token, if the app acts for it) under `merchants:` first"
        );
    };
    let reader = super::gateway::governed(
        &settings,
        &desired,
        &crate::apply::Options::default(),
        std::sync::Arc::new(crate::gateway::governor::Silent),
    )
    .await?;
    let mut benefits: BTreeMap<String, Option<BTreeMap<String, raw::DatedBenefit>>> =
        BTreeMap::new();
    let result = async {
        let token = reader
            .tokens
            .get(merchant)
            .map(|t| t.clone().map_err(|e| anyhow!(e)))
            .transpose()?
            .flatten();
        let at = Scope::merchant(merchant, token.as_ref());
        let listed = reader
            .provider
            .all_templates(&at, 500)
            .await
            .map_err(|e| anyhow!("cannot list the templates of merchant `{merchant}`: {e}"))?;
        let mut read = Vec::new();
        for t in &listed {
            // template.query does not return the write-off kind; the console shows it.
            let (attrs, guessed) = reader
                .provider
                .read_template(
                    &at,
                    &t.template_id,
                    crate::model::template::WriteOff::Qrcode,
                )
                .await
                .map_err(|e| anyhow!("cannot read template {}: {e}", t.template_id))?;
            let on_it = reader
                .provider
                .benefits_of(&at, &t.template_id)
                .await
                .map_err(|e| {
                    anyhow!(
                        "cannot read the benefits of template {}: {e}",
                        t.template_id
                    )
                })?;
            benefits.insert(t.template_id.clone(), dated(&on_it));
            read.push((t.template_id.clone(), attrs, guessed));
        }
        Ok::<_, anyhow::Error>(read)
    }
    .await;
    reader.conn.close().await;
    let read = result?;

    // Images by id: named after where they are first used.
    let mut image_names: BTreeMap<String, String> = BTreeMap::new();
    let mut images: BTreeMap<String, raw::Image> = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut templates: BTreeMap<String, raw::Template> = BTreeMap::new();
    let mut imports = Vec::new();
    let mut guessed_write_off = false;
    let (groups, ungrouped) = tier_groups(&read);
    for &i in &ungrouped {
        skipped.push((
            read[i].0.clone(),
            format!(
                "it has {} level(s), which cardform writes as tiers (one template per level), and which of these templates is which level cannot be told exactly from their card names; write them by hand and import each tier's template",
                read[i].1.levels.len()
            ),
        ));
    }
    let name_images = |attrs: &TemplateAttrs,
                       images: &mut BTreeMap<String, raw::Image>,
                       image_names: &mut BTreeMap<String, String>| {
        for (field, image_id) in attrs.image_fields() {
            if image_names.contains_key(&image_id) {
                continue;
            }
            let (role, stem) = image_role(&field);
            let mut name = stem.to_string();
            let mut n = 2;
            while images.contains_key(&name) {
                name = format!("{stem}-{n}");
                n += 1;
            }
            images.insert(
                name.clone(),
                raw::Image {
                    file: None,
                    id: Some(image_id.clone()),
                    role,
                },
            );
            image_names.insert(image_id, name);
        }
    };
    for group in &groups {
        let first = &read[group[0]].1;
        for &i in group {
            name_images(&read[i].1, &mut images, &mut image_names);
            guessed_write_off |= read[i].2;
        }
        // The template's name: the card names without their level's name.
        let level_word = first.levels[0]
            .level_name
            .clone()
            .unwrap_or_else(|| first.levels[0].level.clone());
        let stem = first.style.name.replace(&level_word, " ");
        let mut name = suggested_name(Some(&stem), &read[group[0]].0);
        if templates.contains_key(&name) {
            name = format!("{name}-{}", templates.len());
        }
        let named = |i: &str| image_names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let mut base = raw_template(first, &named);
        base.tiers = Some(
            first
                .levels
                .iter()
                .zip(group)
                .map(|(l, &i)| raw::Template {
                    level: Some(l.level.clone()),
                    level_name: l.level_name.clone(),
                    level_icon: l.level_icon.as_deref().map(named),
                    level_description: l.level_description.clone(),
                    style: Some(raw::Style {
                        name: Some(read[i].1.style.name.clone()),
                        ..raw::Style::default()
                    }),
                    dated_benefits: benefits.get(&read[i].0).cloned().flatten(),
                    ..raw::Template::default()
                })
                .collect(),
        );
        for (l, &i) in first.levels.iter().zip(group) {
            imports.push(raw::Import {
                to: format!("merchant.{merchant}/template.{name}.{}", l.level),
                id: read[i].0.clone(),
            });
        }
        templates.insert(name, base);
    }
    for (id, attrs, guessed) in &read {
        if !attrs.levels.is_empty() {
            continue;
        }
        name_images(attrs, &mut images, &mut image_names);
        let mut name = suggested_name(Some(&attrs.style.name), id);
        if templates.contains_key(&name) {
            name = format!("{name}-{}", &id[id.len().saturating_sub(6)..]);
        }
        let named = |i: &str| image_names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let mut t = raw_template(attrs, &named);
        t.dated_benefits = benefits.get(id).cloned().flatten();
        templates.insert(name.clone(), t);
        imports.push(raw::Import {
            to: format!("merchant.{merchant}/template.{name}"),
            id: id.clone(),
        });
        guessed_write_off |= *guessed;
    }
    let g = &desired.gateway;
    let base = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let secret = |r: &Option<SecretRef>| secret(r, &base);
    let manifest = raw::Manifest {
        gateway: Some(raw::Gateway {
            endpoint: g.endpoint.clone(),
            app_id: g.app_id.clone(),
            private_key: secret(&g.private_key),
            alipay_public_key: secret(&g.alipay_public_key),
            app_cert: secret(&g.app_cert),
            alipay_cert: secret(&g.alipay_cert),
            alipay_root_cert: secret(&g.alipay_root_cert),
            encrypt_key: secret(&g.encrypt_key),
            rate_limits: None,
            sign_type: g.sign_type.as_deref().map(|s| {
                if s == "RSA" {
                    raw::SignType::Rsa
                } else {
                    raw::SignType::Rsa2
                }
            }),
        }),
        merchants: Some(BTreeMap::from([(
            merchant.to_string(),
            raw::Merchant {
                display_name: info.display_name.clone(),
                app_auth_token: secret(&info.app_auth_token),
                images: (!images.is_empty()).then_some(images.clone()),
                templates: (!templates.is_empty()).then_some(templates.clone()),
                ..raw::Merchant::default()
            },
        )])),
        import: (!imports.is_empty()).then_some(imports),
        ..raw::Manifest::default()
    };
    let mut text = format!(
        "# Generated by `cardform import --merchant {merchant}` from the templates merchant `{merchant}`\n# holds at the gateway; the import blocks adopt them (no template is created).\n"
    );
    if guessed_write_off {
        text.push_str("# write_off: template.query does not return it; `qrcode` is written. Set each to what the\n# Alipay console shows before applying: an update sends it.\n");
    }
    for (id, why) in &skipped {
        text.push_str(&format!("# Not generated: template {id}: {why}.\n"));
    }
    text.push_str(&serde_yaml::to_string(&manifest)?);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, text).map_err(|e| anyhow!("cannot write `{}`: {e}", out.display()))?;
    Ok(Generated {
        templates: templates.len(),
        images: images.len(),
        skipped,
    })
}
