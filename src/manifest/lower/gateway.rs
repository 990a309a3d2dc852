//! The gateway block: endpoint, keys and certificates as secret references,
//! sign type, rate limits, the state URL.

use super::*;

pub(super) fn secret_ref(
    ctx: &mut Ctx,
    at: &At,
    field: &str,
    s: &raw::SecretSource,
) -> Option<SecretRef> {
    match (&s.file, &s.env) {
        (Some(f), None) => {
            let path = ctx.dir(at.file).join(f);
            // Not read here (the embedded sandbox does not need it); but a
            // file that is there must be one a key can be read from.
            if let Ok(meta) = std::fs::metadata(&path) {
                if !meta.is_file() {
                    ctx.report(
                        at,
                        &format!("{field}.file"),
                        format!(
                            "`{f}` is not a regular file (a directory, device, FIFO or socket)"
                        ),
                    );
                } else if meta.len() > crate::util::bounded::MAX_SECRET_BYTES {
                    ctx.report(
                        at,
                        &format!("{field}.file"),
                        format!(
                            "`{f}` is {} bytes; a key or token file is at most {} bytes",
                            meta.len(),
                            crate::util::bounded::MAX_SECRET_BYTES
                        ),
                    );
                }
            }
            Some(SecretRef::File(path))
        }
        (None, Some(e)) => Some(SecretRef::Env(e.clone())),
        _ => {
            ctx.report(at, field, "give exactly one of `file` or `env`");
            None
        }
    }
}

pub(super) fn lower_rate_limits(
    ctx: &mut Ctx,
    at: &At,
    r: Option<&raw::RateLimits>,
) -> crate::model::RateLimits {
    let Some(r) = r else {
        return Default::default();
    };
    let check = |ctx: &mut Ctx, field: &str, v: Option<f64>| -> Option<f64> {
        let v = v?;
        if v > 0.0 && v.is_finite() {
            Some(v)
        } else {
            ctx.report(
                at,
                field,
                format!("`{v}` is not a positive number of calls per second"),
            );
            None
        }
    };
    let per_second = check(ctx, "rate_limits.per_second", r.per_second);
    let per_merchant = check(ctx, "rate_limits.per_merchant", r.per_merchant);
    let mut per_method = BTreeMap::new();
    for (m, v) in r.per_method.iter().flatten() {
        if !m.starts_with("alipay.") {
            ctx.report(
                at,
                "rate_limits.per_method",
                format!(
                    "`{m}` is not an Alipay method name (e.g. alipay.offline.material.image.upload)"
                ),
            );
        }
        if let Some(v) = check(ctx, "rate_limits.per_method", Some(*v)) {
            per_method.insert(m.clone(), v);
        }
    }
    crate::model::RateLimits {
        per_second,
        per_merchant,
        per_method,
        merchants: BTreeMap::new(),
    }
}

pub(super) fn lower_gateway(ctx: &mut Ctx, at: &At, g: &raw::Gateway) -> GatewayBlock {
    let no_var = |_: &str| None;
    let text = |ctx: &mut Ctx, field: &str, v: &Option<String>| -> Option<String> {
        let v = v.as_ref()?;
        match interpolate(v, &no_var, ctx.env) {
            Ok(s) => Some(s),
            Err(e) => {
                ctx.report(at, field, e);
                None
            }
        }
    };
    let endpoint = text(ctx, "endpoint", &g.endpoint);
    if let Some(e) = &endpoint
        && e != "sandbox"
        && url::Url::parse(e)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
    {
        ctx.report(
            at,
            "endpoint",
            format!("`{e}` is not `sandbox` or an http(s) URL"),
        );
    }
    let app_id = text(ctx, "app_id", &g.app_id);
    GatewayBlock {
        endpoint,
        app_id,
        private_key: g
            .private_key
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "private_key", s)),
        alipay_public_key: g
            .alipay_public_key
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "alipay_public_key", s)),
        app_cert: g
            .app_cert
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "app_cert", s)),
        alipay_cert: g
            .alipay_cert
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "alipay_cert", s)),
        alipay_root_cert: g
            .alipay_root_cert
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "alipay_root_cert", s)),
        encrypt_key: g
            .encrypt_key
            .as_ref()
            .and_then(|s| secret_ref(ctx, at, "encrypt_key", s)),
        state_url: None,
        rate_limits: lower_rate_limits(ctx, at, g.rate_limits.as_ref()),
        sign_type: g.sign_type.map(|s| match s {
            raw::SignType::Rsa2 => "RSA2".into(),
            raw::SignType::Rsa => "RSA".into(),
        }),
    }
}
