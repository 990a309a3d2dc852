//! Activation URLs (`alipay.marketing.card.activateurl.apply`): asked for on
//! their template; asking again answers the same URL. Recorded decoded once.

use crate::alipay::methods::{ActivateUrlApplyRequest, ApiRequest};
use crate::plan::Action;
use crate::state::Ids;

/// The calls a change of an activation URL makes.
pub fn calls(action: Action) -> &'static [&'static str] {
    match action {
        Action::NoOp | Action::Retire | Action::Delete => &[],
        _ => &[ActivateUrlApplyRequest::METHOD],
    }
}

/// Its own id, for people: `url=...`.
pub fn shown_ids(ids: &Ids) -> Vec<String> {
    ids.apply_card_url
        .iter()
        .map(|u| format!("url={u}"))
        .collect()
}
