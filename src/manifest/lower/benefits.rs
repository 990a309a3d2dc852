//! A template's `dated_benefits`: each a resource of its own after its
//! template (`benefit.<name>`, on a tier `benefit.<name>.<level>`), checked
//! field by field.

use super::*;

pub(super) fn lower_benefits(
    ctx: &mut Ctx,
    desired: &mut Desired,
    at: &At,
    template: &Address,
    level: Option<&str>,
    benefits: &BTreeMap<String, raw::DatedBenefit>,
) {
    for (bname, b) in benefits {
        let f = |x: &str| format!("dated_benefits.{bname}.{x}");
        let before = ctx.diags.0.len();
        if !valid_name(bname) {
            ctx.report(
                at,
                &format!("dated_benefits.{bname}"),
                "a benefit's name is letters, digits, `_` and `-`",
            );
        }
        if b.title.trim().is_empty() || b.title.chars().count() > 64 {
            ctx.report(at, &f("title"), "must be 1 to 64 characters");
        }
        if b.descriptions.is_empty() || b.descriptions.len() > 10 {
            ctx.report(at, &f("descriptions"), "give 1 to 10 lines");
        }
        for (i, d) in b.descriptions.iter().enumerate() {
            if d.trim().is_empty() || d.chars().count() > 256 {
                ctx.report(
                    at,
                    &f(&format!("descriptions[{i}]")),
                    "must be 1 to 256 characters",
                );
            }
        }
        for (field, v) in [("start", &b.start), ("end", &b.end)] {
            if !is_datetime(v) {
                ctx.report(at, &f(field), format!("`{v}` is not `yyyy-MM-dd HH:mm:ss`"));
            }
        }
        if is_datetime(&b.start) && is_datetime(&b.end) && b.end <= b.start {
            ctx.report(at, &f("end"), "must be after `start`");
        }
        if let Some(l) = &b.link
            && !is_http(l)
        {
            ctx.report(at, &f("link"), format!("`{l}` is not an http(s) URL"));
        }
        let name = match level {
            Some(l) => format!("{bname}.{l}"),
            None => bname.clone(),
        };
        let address = Address::new(&template.merchant, Kind::Benefit, &name);
        if let Some(Resource {
            attrs: Attrs::Benefit(other),
            ..
        }) = desired.resources.get(&address)
            && other.template != *template
        {
            ctx.report(
                at,
                &format!("dated_benefits.{bname}"),
                format!(
                    "`{address}` is declared on `{}` too: a benefit's name is the merchant's",
                    other.template
                ),
            );
        }
        if ctx.diags.0.len() > before {
            continue;
        }
        desired.resources.insert(
            address.clone(),
            Resource {
                address,
                deps: vec![template.clone()],
                attrs: Attrs::Benefit(Box::new(BenefitAttrs {
                    template: template.clone(),
                    title: b.title.clone(),
                    descriptions: b.descriptions.clone(),
                    start: b.start.clone(),
                    end: b.end.clone(),
                    link: b.link.clone(),
                })),
            },
        );
    }
}
