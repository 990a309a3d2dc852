//! Dated benefits on templates: `benefit.create`, `modify`, `delete` and
//! `query`. A benefit belongs to one template of this namespace; its dates
//! are checked (`end` after `start`); a deleted benefit is gone (modify and
//! delete answer BENEFIT_NOT_EXIST, UNCONFIRMED like every sub_code here).
//! Each record counts its modifications, for the tests.

use super::*;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BenefitRec {
    ns: String,
    benefit: McardTemplateBenefit,
    #[serde(default)]
    modified: u64,
    #[serde(default)]
    deleted: bool,
}

fn check(st: &Store, ns: &str, b: &McardTemplateBenefit) -> Result<(), Fail> {
    get_template(st, ns, &b.template_id)?;
    need("mcard_template_benefit.title", &Some(b.title.clone()))?;
    max_len("mcard_template_benefit.title", &b.title, 64)?;
    if b.benefit_desc.is_empty() {
        return Err(bad("mcard_template_benefit.benefit_desc", "is required"));
    }
    for d in &b.benefit_desc {
        max_len("mcard_template_benefit.benefit_desc", d, 256)?;
    }
    members::check_time("mcard_template_benefit.start_date", &b.start_date)?;
    members::check_time("mcard_template_benefit.end_date", &b.end_date)?;
    if b.end_date <= b.start_date {
        return Err(bad(
            "mcard_template_benefit.end_date",
            "must be after start_date",
        ));
    }
    if let Some(e) = &b.ext_info
        && serde_json::from_str::<serde_json::Map<String, Value>>(e).is_err()
    {
        return Err(bad(
            "mcard_template_benefit.ext_info",
            "must be a JSON object",
        ));
    }
    Ok(())
}

fn get_benefit(st: &Store, ns: &str, id: &str) -> Result<BenefitRec, Fail> {
    store::get::<BenefitRec>(&st.benefits, id)?
        .filter(|b| b.ns == ns && !b.deleted)
        .ok_or_else(|| Fail::business("BENEFIT_NOT_EXIST", format!("benefit {id} does not exist")))
}

pub(super) fn benefit_create(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (BenefitCreateRequest, Value) = parse_biz(inc)?;
    check(st, ns, &req.mcard_template_benefit)?;
    let id = format!("B{:019}", st.next_id()?);
    store::put(
        &st.benefits,
        &id,
        &BenefitRec {
            ns: ns.to_string(),
            benefit: req.mcard_template_benefit,
            modified: 0,
            deleted: false,
        },
    )?;
    Ok(success(&BenefitCreateResponse { benefit_id: id }))
}

pub(super) fn benefit_modify(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (BenefitModifyRequest, Value) = parse_biz(inc)?;
    let mut rec = get_benefit(st, ns, &req.benefit_id)?;
    check(st, ns, &req.mcard_template_benefit)?;
    if req.mcard_template_benefit.template_id != rec.benefit.template_id {
        return Err(bad(
            "mcard_template_benefit.template_id",
            "a benefit stays on its template",
        ));
    }
    rec.benefit = req.mcard_template_benefit;
    rec.modified += 1;
    store::put(&st.benefits, &req.benefit_id, &rec)?;
    Ok(success(&BenefitResult { result: Some(true) }))
}

pub(super) fn benefit_delete(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (BenefitDeleteRequest, Value) = parse_biz(inc)?;
    let mut rec = get_benefit(st, ns, &req.benefit_id)?;
    if rec.benefit.template_id != req.template_id {
        return Err(bad("template_id", "is not this benefit's template"));
    }
    rec.deleted = true;
    store::put(&st.benefits, &req.benefit_id, &rec)?;
    Ok(success(&BenefitResult { result: Some(true) }))
}

fn shown(id: &str, b: &McardTemplateBenefit) -> McardTemplateBenefitQuery {
    McardTemplateBenefitQuery {
        benefit_id: id.to_string(),
        template_id: b.template_id.clone(),
        title: b.title.clone(),
        benefit_desc: Some(serde_json::to_string(&b.benefit_desc).expect("strings serialize")),
        start_date: b.start_date.clone(),
        end_date: b.end_date.clone(),
        ext_info: b.ext_info.clone(),
    }
}

pub(super) fn benefit_query(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (BenefitQueryRequest, Value) = parse_biz(inc)?;
    let mut found = Vec::new();
    match (&req.benefit_id, &req.template_id) {
        (Some(id), _) => {
            let rec = get_benefit(st, ns, id)?;
            found.push(shown(id, &rec.benefit));
        }
        (None, Some(t)) => {
            get_template(st, ns, t)?;
            for item in st.benefits.iter() {
                let (k, v) = item.map_err(Fail::internal)?;
                let rec: BenefitRec = serde_json::from_slice(&v).map_err(Fail::internal)?;
                if rec.ns == ns && !rec.deleted && &rec.benefit.template_id == t {
                    found.push(shown(&String::from_utf8_lossy(&k), &rec.benefit));
                }
            }
        }
        (None, None) => return Err(bad("benefit_id", "give benefit_id or template_id")),
    }
    Ok(success(&BenefitQueryResponse {
        mcard_template_benefit_query: found,
    }))
}

/// The benefits held, for the test endpoint `GET /_sandbox/benefits`:
/// live and deleted counts, and each live one with its modifications.
pub fn benefit_counts(st: &Store) -> Result<Value, Fail> {
    let (mut live, mut deleted, mut list) = (0u64, 0u64, Vec::new());
    for item in st.benefits.iter() {
        let (k, v) = item.map_err(Fail::internal)?;
        let rec: BenefitRec = serde_json::from_slice(&v).map_err(Fail::internal)?;
        if rec.deleted {
            deleted += 1;
        } else {
            live += 1;
            list.push(serde_json::json!({
                "benefit_id": String::from_utf8_lossy(&k),
                "template_id": rec.benefit.template_id,
                "title": rec.benefit.title,
                "modified": rec.modified,
            }));
        }
    }
    Ok(serde_json::json!({"live": live, "deleted": deleted, "benefits": list}))
}
