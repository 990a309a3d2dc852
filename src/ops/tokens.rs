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
