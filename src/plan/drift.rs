//! Drift: what the gateway holds that the state did not record (changed
//! outside cardform, e.g. in the Alipay console), and templates the state
//! does not know at all. Pure: the reads happen in `ops::refresh`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Address, Attrs, BenefitAttrs, TemplateAttrs};
use crate::state::{ResourceState, Snapshot, raw_attrs};

/// A template the gateway holds otherwise than the state recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drifted {
    pub address: Address,
    pub template_id: String,
    /// The fields that differ, in the manifest's words.
    pub fields: Vec<String>,
    /// As recorded in state.
    pub recorded: Value,
    /// As the gateway holds it (image ids it knows by address shown so).
    pub at_gateway: Value,
    /// The gateway's `gmt_modified` (UTC+8), when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<String>,
}

/// A template at the gateway that no record of this state accounts for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unmanaged {
    pub merchant: String,
    pub template_id: String,
    /// Its card name, when the gateway said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The `import` block that would adopt it (its address a suggestion).
    pub import: String,
}

/// What a refresh found, and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Refresh {
    pub drifted: Vec<Drifted>,
    /// Recorded templates the gateway did not list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<Address>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmanaged: Vec<Unmanaged>,
    /// Templates read whole (template.query), of `checked`.
    pub queried: usize,
    pub checked: usize,
    pub calls: u64,
    pub elapsed_ms: u64,
}

impl Refresh {
    pub fn found_anything(&self) -> bool {
        !self.drifted.is_empty() || !self.missing.is_empty() || !self.unmanaged.is_empty()
    }
}

/// Compare a recorded template with the gateway's; its image hashes are the
/// record's (the gateway cannot say what bytes an image id holds).
pub fn compare(
    record: &ResourceState,
    mut at_gateway: TemplateAttrs,
    modified_at: Option<String>,
) -> Option<Drifted> {
    let recorded = record.attrs_value();
    if let Ok(Attrs::Template(t)) = serde_json::from_value::<Attrs>(recorded.clone()) {
        at_gateway.image_hashes = t.image_hashes;
    }
    differs(
        record,
        recorded,
        Attrs::Template(Box::new(at_gateway)),
        modified_at,
    )
}

/// Compare a recorded benefit with the gateway's.
pub fn compare_benefit(record: &ResourceState, at_gateway: BenefitAttrs) -> Option<Drifted> {
    differs(
        record,
        record.attrs_value(),
        Attrs::Benefit(Box::new(at_gateway)),
        None,
    )
}

/// The drift between a record (`recorded`, its attributes) and what the
/// gateway holds, if they differ.
fn differs(
    record: &ResourceState,
    recorded: Value,
    at_gateway: Attrs,
    modified_at: Option<String>,
) -> Option<Drifted> {
    let at_gateway = at_gateway.to_json();
    let fields = super::changed_fields(&recorded, &at_gateway);
    if fields.is_empty() {
        return None;
    }
    Some(Drifted {
        address: record.address.clone(),
        template_id: record.ids.template_id.clone().unwrap_or_default(),
        fields,
        recorded,
        at_gateway,
        modified_at,
    })
}

/// A benefit the gateway no longer holds (deleted in the console) is
/// planned anew: its record is left out of the refreshed state. (A missing
/// template is only reported: creating one is not undoing drift.)
pub fn without_missing_benefits(mut snap: Snapshot, missing: &[Address]) -> Snapshot {
    for a in missing
        .iter()
        .filter(|a| a.kind == crate::model::Kind::Benefit)
    {
        snap.resources.remove(a);
    }
    snap
}

/// The state as the gateway holds it: each drifted record takes the
/// gateway's attributes (and their hash).
pub fn refreshed(snap: &Snapshot, drifted: &[Drifted]) -> Snapshot {
    let mut out = snap.clone();
    for d in drifted {
        if let (Some(r), Ok(attrs)) = (
            out.resources.get_mut(&d.address),
            serde_json::from_value::<Attrs>(d.at_gateway.clone()),
        ) {
            r.hash = attrs.hash();
            r.attrs = raw_attrs(&attrs);
        }
    }
    out
}

/// A name for an unmanaged template's address: its card name in lower case,
/// letters and digits kept, the rest `-`; else its id.
pub fn suggested_name(name: Option<&str>, template_id: &str) -> String {
    let slug: String = name
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    if slug.is_empty() {
        format!("t{}", &template_id[template_id.len().saturating_sub(8)..])
    } else {
        slug
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_for_unmanaged_templates() {
        let table = [
            (
                Some("Brew Club Gold"),
                "2026000000000000000000000000001",
                "brew-club-gold",
            ),
            (
                Some("会员卡"),
                "2026000000000000000000000000002",
                "t00000002",
            ),
            (None, "20260000000000000000000000000003", "t00000003"),
            (Some("  VIP!! card "), "x", "vip-card"),
        ];
        for (name, id, want) in table {
            assert_eq!(suggested_name(name, id), want);
        }
    }
}
