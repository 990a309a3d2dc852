//! Each merchant's app_auth_token, read once for a run: shared by apply,
//! refresh, import and the card commands.

use crate::apply::Tokens;
use crate::model::Desired;
use crate::settings::read_secret;
use crate::util::secret::Secret;

/// Resolve each merchant's app_auth_token; a missing one fails only that merchant.
pub fn tokens(desired: &Desired) -> Tokens {
    desired
        .merchants
        .iter()
        .map(|(name, m)| {
            let t = match &m.app_auth_token {
                None => Ok(None),
                Some(r) => read_secret(r, &format!("app_auth_token of merchant `{name}`"))
                    .map(|s| Some(Secret::new(s))),
            };
            (name.clone(), t)
        })
        .collect()
}

/// The gateway keys of a run, as flags, `CARDFORM_*` and the manifest
/// give them, each with what it is for.
pub fn gateway_keys(
    g: &crate::settings::GatewaySettings,
) -> Vec<(&'static str, &crate::model::SecretRef)> {
    keys([
        &g.private_key,
        &g.alipay_public_key,
        &g.app_cert,
        &g.alipay_cert,
        &g.alipay_root_cert,
        &g.encrypt_key,
    ])
}

/// The keys a manifest's gateway block names (read only by a real gateway).
pub fn manifest_keys(
    g: &crate::model::GatewayBlock,
) -> Vec<(&'static str, &crate::model::SecretRef)> {
    keys([
        &g.private_key,
        &g.alipay_public_key,
        &g.app_cert,
        &g.alipay_cert,
        &g.alipay_root_cert,
        &g.encrypt_key,
    ])
}

fn keys(
    refs: [&Option<crate::model::SecretRef>; 6],
) -> Vec<(&'static str, &crate::model::SecretRef)> {
    const WHAT: [&str; 6] = [
        "the app private key",
        "the Alipay public key",
        "the app certificate",
        "the Alipay certificate",
        "the Alipay root certificate",
        "the AES content-encryption key",
    ];
    WHAT.into_iter()
        .zip(refs)
        .filter_map(|(w, r)| Some((w, r.as_ref()?)))
        .collect()
}

/// Every secret of `keys` and of the manifests (each merchant's
/// app_auth_token, each till token; of the `only` merchants when given)
/// that cannot be read now (a variable unset, a file missing), named with
/// what it is for. Never a value.
pub fn unresolved(
    keys: &[(&'static str, &crate::model::SecretRef)],
    desired: &Desired,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Vec<String> {
    use crate::model::SecretRef;
    let wanted_merchant = |m: &str| only.is_none_or(|o| o.contains(m));
    let mut wanted: Vec<(String, &SecretRef)> =
        keys.iter().map(|(w, r)| (w.to_string(), *r)).collect();
    for (name, m) in &desired.merchants {
        if let Some(r) = &m.app_auth_token
            && wanted_merchant(name)
        {
            wanted.push((format!("the app_auth_token of merchant `{name}`"), r));
        }
    }
    for (address, issue) in &desired.issuance {
        if let Some(r) = &issue.transactions_token
            && wanted_merchant(&address.merchant)
        {
            wanted.push((format!("the till token of `{address}`"), r));
        }
    }
    wanted
        .into_iter()
        .filter(|(_, r)| match r {
            SecretRef::Env(n) => crate::settings::env(n).is_none(),
            SecretRef::File(p) => !p.is_file(),
        })
        .map(|(what, r)| {
            format!(
                "{what}: {r} is {}",
                match r {
                    SecretRef::Env(_) => "not set",
                    SecretRef::File(_) => "not there",
                }
            )
        })
        .collect()
}
