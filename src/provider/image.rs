//! Images (`alipay.offline.material.image.upload`): identified by content;
//! an upload is not idempotent, and an image has no delete.

use crate::alipay::methods::{ApiRequest, ImageUploadRequest};
use crate::plan::Action;
use crate::state::Ids;

/// The calls a change of an image makes: an adopted image (an import, or a
/// manifest `id`) makes none.
pub fn calls(action: Action) -> &'static [&'static str] {
    match action {
        Action::NoOp | Action::Retire | Action::Import => &[],
        _ => &[ImageUploadRequest::METHOD],
    }
}

/// Its own id, for people: `image_id=...`.
pub fn shown_ids(ids: &Ids) -> Vec<String> {
    ids.image_id
        .iter()
        .map(|i| format!("image_id={i}"))
        .collect()
}

/// What stays at Alipay when the state forgets it.
pub fn left_at_gateway(ids: &Ids) -> bool {
    ids.image_id.is_some()
}
