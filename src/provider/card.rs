//! Members' cards: a checked row of a cards CSV (`cards::Row`, the domain)
//! as the wire requests card.open and card.update send; a trade
//! (`cards::trade::Trade`) as consume.sync, a reminder as message.notify.

use crate::alipay::methods::{
    BenefitInfoDetail, CardFrontText, CardOpenRequest, CardUserInfo, ConsumeSyncRequest,
    MerchantCard, MerchantMenber, MessageNotifyRequest,
};
use crate::cards::trade::{Benefit, Reminder, Trade};
use crate::cards::{CardUser, FrontText, Member, Row};

fn user(u: &CardUser) -> CardUserInfo {
    CardUserInfo {
        user_uni_id: u.user_uni_id.clone(),
        user_uni_id_type: u.user_uni_id_type.clone(),
        open_id: u.open_id.clone(),
    }
}

fn member(m: &Member) -> MerchantMenber {
    MerchantMenber {
        name: m.name.clone(),
        gende: m.gender.clone(),
        birth: m.birth.clone(),
        cell: m.cell.clone(),
    }
}

fn front(texts: &[FrontText]) -> Option<Vec<CardFrontText>> {
    (!texts.is_empty()).then(|| {
        texts
            .iter()
            .map(|t| CardFrontText {
                label: t.label.clone(),
                value: t.value.clone(),
            })
            .collect()
    })
}

/// The card as sent to card.open.
pub fn open_request(row: &Row, out_serial_no: &str, template_id: &str) -> CardOpenRequest {
    CardOpenRequest {
        out_serial_no: out_serial_no.to_string(),
        card_template_id: template_id.to_string(),
        card_user_info: row.user.as_ref().map(user).unwrap_or_default(),
        card_ext_info: MerchantCard {
            external_card_no: Some(row.external_card_no.clone()),
            open_date: row.open_date.clone(),
            valid_date: row.valid_date.clone(),
            level: row.level.clone(),
            point: row.point.clone(),
            balance: row.balance.clone(),
            front_text_list: front(&row.front),
            ..Default::default()
        },
        member_ext_info: row.member.as_ref().map(member),
        open_card_channel: row.channel.clone(),
        open_card_channel_id: None,
    }
}

/// The values card.update sends (`template_id`: the tier's, when the level
/// moved to a tier of its own). Dates are not among them: a card keeps the
/// dates it was opened with.
pub fn update_values(row: &Row, template_id: Option<&str>) -> MerchantCard {
    MerchantCard {
        level: row.level.clone(),
        point: row.point.clone(),
        balance: row.balance.clone(),
        front_text_list: front(&row.front),
        template_id: template_id.map(str::to_string),
        ..Default::default()
    }
}

/// A trade as consume.sync sends it: the trade, and the card's values after
/// it (only those the row gives).
pub fn consume_request(t: &Trade, biz_card_no: &str) -> ConsumeSyncRequest {
    let benefit = |b: &Option<Benefit>| {
        b.as_ref().map(|b| {
            vec![BenefitInfoDetail {
                benefit_type: b.benefit_type.clone(),
                amount: b.amount.clone(),
                count: b.count.clone(),
                description: b.description.clone(),
            }]
        })
    };
    let card = MerchantCard {
        level: t.level.clone(),
        point: t.point.clone(),
        balance: t.balance.clone(),
        ..Default::default()
    };
    ConsumeSyncRequest {
        target_card_no: biz_card_no.to_string(),
        target_card_no_type: "BIZ_CARD".into(),
        trade_type: t.trade_type.clone(),
        trade_no: t.trade_no.clone(),
        trade_time: t.trade_time.clone(),
        trade_name: t.trade_name.clone(),
        trade_amount: t.trade_amount.clone(),
        act_pay_amount: t.act_pay_amount.clone(),
        card_info: (card != MerchantCard::default()).then_some(card),
        use_benefit_list: benefit(&t.used),
        gain_benefit_list: benefit(&t.gained),
        shop_code: t.shop_code.clone(),
        memo: t.memo.clone(),
        swipe_cert_type: t.swipe_cert_type.clone(),
    }
}

/// A points-expiry reminder as message.notify sends it (`occur_time`: when
/// it was first journalled, so that a re-sent reminder is the same request).
pub fn notify_request(r: &Reminder, biz_card_no: &str, occur_time: &str) -> MessageNotifyRequest {
    MessageNotifyRequest {
        target_card_no: biz_card_no.to_string(),
        target_card_no_type: "BIZ_CARD".into(),
        notify_type: "POINT_REMIND".into(),
        notify_no: r.notify_no(biz_card_no),
        notify_info: serde_json::json!({
            "expired_point": r.expired_point,
            "expired_time": r.expired_time,
        })
        .to_string(),
        occur_time: occur_time.to_string(),
    }
}
