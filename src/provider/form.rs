//! Activation forms (`alipay.marketing.card.formtemplate.set`): set on their
//! template, again as often as wanted (idempotent); recorded with the
//! template's id, which they do not show again.

use crate::alipay::methods::{ApiRequest, FormTemplateSetRequest};
use crate::plan::Action;
use crate::state::Ids;

/// The calls a change of a form makes.
pub fn calls(action: Action) -> &'static [&'static str] {
    match action {
        Action::NoOp | Action::Retire | Action::Delete => &[],
        _ => &[FormTemplateSetRequest::METHOD],
    }
}

/// Its own id, for people: none (its template's id is the template's).
pub fn shown_ids(_ids: &Ids) -> Vec<String> {
    Vec::new()
}
