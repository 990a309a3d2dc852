//! Members' cards: `card.open`, `update`, `query`, `delete`, as the member
//! whose token opened them; `consume.sync`, a trade on a card; and messages
//! to a card's holder (card.update's `changed_point`, `message.notify`).

use super::*;

pub(super) fn card_open(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (CardOpenRequest, Value) = parse_biz(inc)?;
    need("out_serial_no", &Some(req.out_serial_no.clone()))?;
    max_len("out_serial_no", &req.out_serial_no, 64)?;
    let key = format!("{ns}|card.open|{}", req.out_serial_no);
    if let Some(node) = replay(st, &key, &biz, "out_serial_no")? {
        return Ok(node);
    }
    let tpl = store::get::<TemplateRec>(&st.templates, &req.card_template_id)?
        .filter(|t| t.ns == ns)
        .ok_or_else(|| {
            Fail::business(
                "TEMPLATE_NOT_EXIT",
                format!("template {} does not exist", req.card_template_id),
            )
        })?;
    let user = &req.card_user_info;
    if user.user_uni_id.is_some() == user.open_id.is_some() {
        return Err(Fail::business(
            "INVALID_PARAMETER",
            "card_user_info: exactly one of user_uni_id and open_id is required",
        ));
    }
    if let Some(uid) = &user.user_uni_id
        && !members::is_user_id(uid)
    {
        return Err(bad(
            "card_user_info.user_uni_id",
            "must be 16 digits starting 2088",
        ));
    }
    let member = members::holder(st, inc)?;
    if user.user_uni_id.as_deref().or(user.open_id.as_deref()) != Some(member.as_str()) {
        return Err(bad(
            "card_user_info",
            "the auth_token belongs to another user",
        ));
    }
    let ext = &req.card_ext_info;
    need("card_ext_info.external_card_no", &ext.external_card_no)?;
    members::check_card(ext, true)?;
    if let Some(m) = &req.member_ext_info {
        members::check_member(m)?;
    }
    if ext.biz_card_no.is_some() {
        return Err(Fail::business(
            "INVALID_PARAMETER",
            "card_ext_info.biz_card_no is assigned by Alipay; do not send it",
        ));
    }
    if let Some(level) = &ext.level
        && let Some(levels) = &tpl.card_level_conf
        && !levels.iter().any(|l| &l.level == level)
    {
        return Err(Fail::business(
            "INVALID_PARAMETER",
            format!("card_ext_info.level `{level}` is not a level of the template"),
        ));
    }
    let biz_card_no = next_card_no(st, &tpl)?;
    let mut card = ext.clone();
    card.biz_card_no = Some(biz_card_no.clone());
    let rec = CardRec {
        ns: ns.into(),
        template_id: tpl.template_id,
        card: card.clone(),
        user: req.card_user_info.clone(),
        deleted: false,
        last_trade_time: None,
    };
    store::put(&st.cards, &biz_card_no, &rec)?;
    let node = success(&CardOpenResponse {
        card_info: card,
        open_card_channel: req.open_card_channel,
        open_card_channel_id: req.open_card_channel_id,
    });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

pub(super) fn get_card(st: &Store, ns: &str, no: &str) -> Result<CardRec, Fail> {
    store::get::<CardRec>(&st.cards, no)?
        .filter(|c| c.ns == ns && !c.deleted)
        .ok_or_else(|| Fail::business("CARD_NOT_EXIST", format!("card {no} does not exist")))
}

pub(super) fn card_update(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (CardUpdateRequest, Value) = parse_biz(inc)?;
    one_of(
        "target_card_no_type",
        &req.target_card_no_type,
        &["BIZ_CARD"],
    )?;
    members::check_time("occur_time", &req.occur_time)?;
    let mut rec = get_card(st, ns, &req.target_card_no)?;
    let new = req.card_info;
    members::check_card(&new, false)?;
    for (field, old, newv) in [
        ("card_info.open_date", &rec.card.open_date, &new.open_date),
        (
            "card_info.valid_date",
            &rec.card.valid_date,
            &new.valid_date,
        ),
    ] {
        if newv.is_some() && newv != old {
            return Err(bad(field, "cannot be changed by card.update"));
        }
    }
    if let Some(tid) = &new.template_id {
        get_template(st, ns, tid)?;
        rec.template_id = tid.clone();
    }
    macro_rules! take {
        ($($f:ident),*) => { $( if new.$f.is_some() { rec.card.$f = new.$f.clone(); } )* };
    }
    take!(
        level,
        point,
        balance,
        mdcode_info,
        front_text_list,
        front_image_id,
        custom_assets,
        external_card_no
    );
    store::put(&st.cards, &req.target_card_no, &rec)?;
    // The points message: sent only for a signed decimal (JAVA-C: "an
    // invalid format sends no message").
    if let Some(p) = req
        .merchant_card_msg_info
        .as_ref()
        .and_then(|m| m.changed_point.as_deref())
        && is_signed_amount(p)
    {
        store::put(
            &st.messages,
            &format!("{}|changed_point|{:020}", req.target_card_no, st.next_id()?),
            &serde_json::json!({"changed_point": p, "occur_time": req.occur_time}),
        )?;
    }
    Ok(success(&CardUpdateResponse { result_code: None }))
}

pub(super) fn card_query(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, _): (CardQueryRequest, Value) = parse_biz(inc)?;
    one_of(
        "target_card_no_type",
        &req.target_card_no_type,
        &["BIZ_CARD", "EXTERNAL_CARD", "D_QR_CODE", "D_BAR_CODE"],
    )?;
    let rec = match req.target_card_no_type.as_str() {
        "EXTERNAL_CARD" => {
            let mut found = None;
            for item in st.cards.iter() {
                let (_, v) = item.map_err(Fail::internal)?;
                if let Ok(c) = serde_json::from_slice::<CardRec>(&v)
                    && c.ns == ns
                    && !c.deleted
                    && c.card.external_card_no.as_deref() == Some(req.target_card_no.as_str())
                {
                    found = Some(c);
                }
            }
            found.ok_or_else(|| {
                Fail::business(
                    "CARD_NOT_EXIST",
                    format!("card {} does not exist", req.target_card_no),
                )
            })?
        }
        _ => get_card(st, ns, &req.target_card_no)?,
    };
    let no = rec.card.biz_card_no.clone().unwrap_or_default();
    let pass_id = crate::util::secret::Secret::new(&no).fingerprint();
    Ok(success(&CardQueryResponse {
        card_info: rec.card,
        schema_url: Some(format!(
            "alipays://platformapi/startapp?appId=20000021&p={pass_id}"
        )),
        pass_id: Some(pass_id),
    }))
}

pub(super) fn card_delete(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (CardDeleteRequest, Value) = parse_biz(inc)?;
    max_len("out_serial_no", &req.out_serial_no, 32)?;
    let key = format!("{ns}|card.delete|{}", req.out_serial_no);
    if let Some(node) = replay(st, &key, &biz, "out_serial_no")? {
        return Ok(node);
    }
    one_of(
        "target_card_no_type",
        &req.target_card_no_type,
        &["BIZ_CARD"],
    )?;
    one_of(
        "reason_code",
        &req.reason_code,
        &["USER_UNBUND", "CANCEL", "PRESENT"],
    )?;
    let mut rec = get_card(st, ns, &req.target_card_no)?;
    rec.deleted = true;
    store::put(&st.cards, &req.target_card_no, &rec)?;
    let node = success(&CardDeleteResponse {
        biz_serial_no: Some(format!("{:020}", st.next_id()?)),
    });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

/// consume.sync: one trade on a card of this merchant. Per (card, trade_no)
/// once: the same trade again replays the first answer, other content under
/// the same trade_no is refused (UNCONFIRMED, like request_id; see the
/// README). The card takes the trade's `card_info` only when its trade_time
/// is later than every earlier trade's (Alipay: "a later time updates the
/// card"); the trade is recorded in the card's history either way.
pub(super) fn consume_sync(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (ConsumeSyncRequest, Value) = parse_biz(inc)?;
    one_of(
        "target_card_no_type",
        &req.target_card_no_type,
        &["BIZ_CARD"],
    )?;
    need("target_card_no", &Some(req.target_card_no.clone()))?;
    max_len("target_card_no", &req.target_card_no, 32)?;
    one_of(
        "trade_type",
        &req.trade_type,
        &["OPEN", "TRADE", "DEPOSIT", "RETURN"],
    )?;
    need("trade_no", &Some(req.trade_no.clone()))?;
    max_len("trade_no", &req.trade_no, 64)?;
    members::check_time("trade_time", &req.trade_time)?;
    if let Some(n) = &req.trade_name {
        max_len("trade_name", n, 256)?;
    }
    for (field, v) in [
        ("trade_amount", &req.trade_amount),
        ("act_pay_amount", &req.act_pay_amount),
    ] {
        if let Some(v) = v {
            max_len(field, v, 32)?;
            members::check_amount(field, v)?;
        }
    }
    for (list, gain) in [
        (&req.use_benefit_list, false),
        (&req.gain_benefit_list, true),
    ] {
        let field = if gain {
            "gain_benefit_list"
        } else {
            "use_benefit_list"
        };
        for b in list.iter().flatten() {
            let allowed: &[&str] = if gain {
                &["PRE_FUND", "COUPON"]
            } else {
                &["PRE_FUND", "DISCOUNT", "COUPON"]
            };
            one_of(&format!("{field}.benefit_type"), &b.benefit_type, allowed)?;
            if let Some(a) = &b.amount {
                members::check_amount(&format!("{field}.amount"), a)?;
            }
        }
    }
    if let Some(t) = &req.swipe_cert_type {
        one_of("swipe_cert_type", t, &["ALIPAY", "ENTITY", "OTHER"])?;
    }
    let key = format!("{ns}|consume.sync|{}|{}", req.target_card_no, req.trade_no);
    if let Some(node) = replay(st, &key, &biz, "trade_no")? {
        return Ok(node);
    }
    let mut rec = get_card(st, ns, &req.target_card_no)?;
    let later = rec
        .last_trade_time
        .as_deref()
        .is_none_or(|last| req.trade_time.as_str() > last);
    if let Some(card) = &req.card_info {
        members::check_card(card, false)?;
        if later {
            macro_rules! take {
                ($($f:ident),*) => { $( if card.$f.is_some() { rec.card.$f = card.$f.clone(); } )* };
            }
            take!(level, point, balance, front_text_list);
        }
    }
    if later {
        rec.last_trade_time = Some(req.trade_time.clone());
    }
    store::put(&st.cards, &req.target_card_no, &rec)?;
    store::put(
        &st.trades,
        &format!("{}|{}", req.target_card_no, req.trade_no),
        &biz,
    )?;
    let node = success(&ConsumeSyncResponse {
        external_card_no: rec.card.external_card_no.clone(),
    });
    remember(st, &key, biz, &node)?;
    Ok(node)
}

/// `100`, `-100`, `+2.5`: a points change as card.update's message takes it.
fn is_signed_amount(v: &str) -> bool {
    let body = v.strip_prefix(['-', '+']).unwrap_or(v);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !int.is_empty()
        && int.len() <= 16
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 2
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(body.contains('.') && frac.is_empty())
}

/// message.notify: a message to a card's holder, once per notify_no (the
/// same notify_no again replays; other content is refused). POINT_REMIND
/// takes `notify_info` `{"expired_point", "expired_time"}`, both required.
pub(super) fn message_notify(st: &Store, ns: &str, inc: &Incoming) -> Result<String, Fail> {
    let (req, biz): (MessageNotifyRequest, Value) = parse_biz(inc)?;
    one_of(
        "target_card_no_type",
        &req.target_card_no_type,
        &["BIZ_CARD"],
    )?;
    need("target_card_no", &Some(req.target_card_no.clone()))?;
    one_of("notify_type", &req.notify_type, &["POINT_REMIND"])?;
    need("notify_no", &Some(req.notify_no.clone()))?;
    max_len("notify_no", &req.notify_no, 64)?;
    members::check_time("occur_time", &req.occur_time)?;
    let info: serde_json::Map<String, Value> = serde_json::from_str(&req.notify_info)
        .map_err(|_| bad("notify_info", "must be a JSON object"))?;
    let text = |k: &str| -> Result<String, Fail> {
        info.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(&format!("notify_info.{k}"), "is required"))
    };
    let (point, expiry) = (text("expired_point")?, text("expired_time")?);
    members::check_amount("notify_info.expired_point", &point)?;
    members::check_time("notify_info.expired_time", &expiry)?;
    let key = format!("{ns}|message.notify|{}", req.notify_no);
    if let Some(node) = replay(st, &key, &biz, "notify_no")? {
        return Ok(node);
    }
    get_card(st, ns, &req.target_card_no)?;
    store::put(
        &st.messages,
        &format!("{}|POINT_REMIND|{}", req.target_card_no, req.notify_no),
        &serde_json::json!({"expired_point": point, "expired_time": expiry}),
    )?;
    let node = success(&MessageNotifyResponse {});
    remember(st, &key, biz, &node)?;
    Ok(node)
}

/// A card Alipay makes for the open-card SPI (3.1): the template of this
/// app (its namespace's app), the next card number under the template's
/// prefix. Returns (app_id, namespace, biz_card_no).
pub fn spi_card_no(st: &Store, template_id: &str) -> Result<(String, String, String), Fail> {
    let tpl = store::get::<TemplateRec>(&st.templates, template_id)?.ok_or_else(|| {
        Fail::business(
            "TEMPLATE_NOT_EXIT",
            format!("template {template_id} does not exist"),
        )
    })?;
    let app = tpl.ns.split(':').next().unwrap_or_default().to_string();
    let biz = next_card_no(st, &tpl)?;
    Ok((app, tpl.ns, biz))
}

/// Record the card a merchant's SPI answered with (once per card number).
pub fn spi_record(
    st: &Store,
    ns: &str,
    template_id: &str,
    user_id: &str,
    card: MerchantCard,
) -> Result<(), Fail> {
    let Some(biz) = card.biz_card_no.clone() else {
        return Err(bad("card_info.biz_card_no", "is required"));
    };
    if store::get::<CardRec>(&st.cards, &biz)?.is_none() {
        store::put(
            &st.cards,
            &biz,
            &CardRec {
                ns: ns.to_string(),
                template_id: template_id.to_string(),
                card,
                user: CardUserInfo {
                    user_uni_id: Some(user_id.to_string()),
                    user_uni_id_type: Some("UID".into()),
                    open_id: None,
                },
                deleted: false,
                last_trade_time: None,
            },
        )?;
    }
    Ok(())
}

/// The next card number under a template: its prefix, then a sequence
/// number padded (or cut) to its suffix length.
fn next_card_no(st: &Store, tpl: &TemplateRec) -> Result<String, Fail> {
    let suffix_len: usize = tpl
        .body
        .biz_no_suffix_len
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let seq = st.next_id()?.to_string();
    let digits = if seq.len() >= suffix_len {
        seq[seq.len() - suffix_len..].to_string()
    } else {
        format!("{seq:0>suffix_len$}")
    };
    Ok(format!(
        "{}{digits}",
        tpl.body.biz_no_prefix.as_deref().unwrap_or("")
    ))
}
