//! Members' cards: a checked row of a cards CSV (`cards::Row`, the domain)
//! as the wire requests card.open and card.update send.

use crate::alipay::methods::{
    CardFrontText, CardOpenRequest, CardUserInfo, MerchantCard, MerchantMenber,
};
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
