"""Drive the official Alipay Python SDK (alipay-sdk-python) against the cardform
sandbox: its requests must be accepted, and its own response verification must
accept the sandbox's answers (the SDK raises on a bad or missing signature).

Usage: TZ=CST-8 python3 sdk_client.py <app_private_pkcs1_oneline> <platform_public.pem>
The SDK connects to port 80 whatever URL it is given, so the sandbox listens there.
"""
import json
import os
import struct
import sys
import urllib.parse
import urllib.request
import zlib

from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.FileItem import FileItem
from alipay.aop.api.domain.AlipayMarketingCardTemplateBatchqueryModel import AlipayMarketingCardTemplateBatchqueryModel
from alipay.aop.api.domain.AlipayMarketingCardTemplateCreateModel import AlipayMarketingCardTemplateCreateModel
from alipay.aop.api.domain.AlipayMarketingCardTemplateQueryModel import AlipayMarketingCardTemplateQueryModel
from alipay.aop.api.domain.AlipayMarketingCardActivateurlApplyModel import AlipayMarketingCardActivateurlApplyModel
from alipay.aop.api.domain.TemplateStyleInfoDTO import TemplateStyleInfoDTO
from alipay.aop.api.domain.TemplateColumnInfoDTO import TemplateColumnInfoDTO
from alipay.aop.api.domain.TemplateFieldRuleDTO import TemplateFieldRuleDTO
from alipay.aop.api.request.AlipayMarketingCardTemplateBatchqueryRequest import AlipayMarketingCardTemplateBatchqueryRequest
from alipay.aop.api.request.AlipayMarketingCardTemplateCreateRequest import AlipayMarketingCardTemplateCreateRequest
from alipay.aop.api.request.AlipayMarketingCardTemplateQueryRequest import AlipayMarketingCardTemplateQueryRequest
from alipay.aop.api.request.AlipayMarketingCardActivateurlApplyRequest import AlipayMarketingCardActivateurlApplyRequest
from alipay.aop.api.request.AlipayOfflineMaterialImageUploadRequest import AlipayOfflineMaterialImageUploadRequest
from alipay.aop.api.response.AlipayMarketingCardTemplateBatchqueryResponse import AlipayMarketingCardTemplateBatchqueryResponse
from alipay.aop.api.response.AlipayMarketingCardTemplateCreateResponse import AlipayMarketingCardTemplateCreateResponse
from alipay.aop.api.response.AlipayMarketingCardTemplateQueryResponse import AlipayMarketingCardTemplateQueryResponse
from alipay.aop.api.response.AlipayMarketingCardActivateurlApplyResponse import AlipayMarketingCardActivateurlApplyResponse
from alipay.aop.api.response.AlipayOfflineMaterialImageUploadResponse import AlipayOfflineMaterialImageUploadResponse
from alipay.aop.api.request.AlipaySystemOauthTokenRequest import AlipaySystemOauthTokenRequest
from alipay.aop.api.response.AlipaySystemOauthTokenResponse import AlipaySystemOauthTokenResponse
from alipay.aop.api.domain.AlipayMarketingCardActivateformQueryModel import AlipayMarketingCardActivateformQueryModel
from alipay.aop.api.request.AlipayMarketingCardActivateformQueryRequest import AlipayMarketingCardActivateformQueryRequest
from alipay.aop.api.response.AlipayMarketingCardActivateformQueryResponse import AlipayMarketingCardActivateformQueryResponse
from alipay.aop.api.domain.AlipayMarketingCardOpenModel import AlipayMarketingCardOpenModel
from alipay.aop.api.domain.CardUserInfo import CardUserInfo
from alipay.aop.api.domain.MerchantCard import MerchantCard
from alipay.aop.api.domain.MerchantMenber import MerchantMenber
from alipay.aop.api.request.AlipayMarketingCardOpenRequest import AlipayMarketingCardOpenRequest
from alipay.aop.api.response.AlipayMarketingCardOpenResponse import AlipayMarketingCardOpenResponse
from alipay.aop.api.domain.AlipayMarketingCardConsumeSyncModel import AlipayMarketingCardConsumeSyncModel
from alipay.aop.api.domain.AlipayMarketingCardMessageNotifyModel import AlipayMarketingCardMessageNotifyModel
from alipay.aop.api.domain.AlipayMarketingCardUpdateModel import AlipayMarketingCardUpdateModel
from alipay.aop.api.domain.AlipayMarketingCardBenefitCreateModel import AlipayMarketingCardBenefitCreateModel
from alipay.aop.api.domain.AlipayMarketingCardBenefitModifyModel import AlipayMarketingCardBenefitModifyModel
from alipay.aop.api.domain.AlipayMarketingCardBenefitQueryModel import AlipayMarketingCardBenefitQueryModel
from alipay.aop.api.domain.AlipayMarketingCardBenefitDeleteModel import AlipayMarketingCardBenefitDeleteModel
from alipay.aop.api.domain.BenefitInfoDetail import BenefitInfoDetail
from alipay.aop.api.domain.McardTemplateBenefit import McardTemplateBenefit
from alipay.aop.api.domain.MerchantCardMsgInfo import MerchantCardMsgInfo
from alipay.aop.api.request.AlipayMarketingCardConsumeSyncRequest import AlipayMarketingCardConsumeSyncRequest
from alipay.aop.api.request.AlipayMarketingCardMessageNotifyRequest import AlipayMarketingCardMessageNotifyRequest
from alipay.aop.api.request.AlipayMarketingCardUpdateRequest import AlipayMarketingCardUpdateRequest
from alipay.aop.api.request.AlipayMarketingCardBenefitCreateRequest import AlipayMarketingCardBenefitCreateRequest
from alipay.aop.api.request.AlipayMarketingCardBenefitModifyRequest import AlipayMarketingCardBenefitModifyRequest
from alipay.aop.api.request.AlipayMarketingCardBenefitQueryRequest import AlipayMarketingCardBenefitQueryRequest
from alipay.aop.api.request.AlipayMarketingCardBenefitDeleteRequest import AlipayMarketingCardBenefitDeleteRequest
from alipay.aop.api.response.AlipayMarketingCardConsumeSyncResponse import AlipayMarketingCardConsumeSyncResponse
from alipay.aop.api.response.AlipayMarketingCardMessageNotifyResponse import AlipayMarketingCardMessageNotifyResponse
from alipay.aop.api.response.AlipayMarketingCardUpdateResponse import AlipayMarketingCardUpdateResponse
from alipay.aop.api.response.AlipayMarketingCardBenefitCreateResponse import AlipayMarketingCardBenefitCreateResponse
from alipay.aop.api.response.AlipayMarketingCardBenefitModifyResponse import AlipayMarketingCardBenefitModifyResponse
from alipay.aop.api.response.AlipayMarketingCardBenefitQueryResponse import AlipayMarketingCardBenefitQueryResponse
from alipay.aop.api.response.AlipayMarketingCardBenefitDeleteResponse import AlipayMarketingCardBenefitDeleteResponse


def png(width, height, seed):
    row = b"\x00" + bytes(((x * 7 + seed) % 256 for x in range(width)))
    raw = row * height
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def main():
    private_key = open(sys.argv[1]).read().strip()
    public_pem = open(sys.argv[2]).read()
    public_key = "".join(l for l in public_pem.splitlines() if not l.startswith("-----"))
    config = AlipayClientConfig()
    config.server_url = "http://127.0.0.1/gateway.do"
    config.app_id = "2021000000000001"
    config.app_private_key = private_key
    config.alipay_public_key = public_key
    client = DefaultAlipayClient(alipay_client_config=config)
    checks = 0

    def check(name, response):
        nonlocal checks
        if not response.is_success():
            raise SystemExit(f"FAIL {name}: {response.code} {response.sub_code} {response.sub_msg}")
        checks += 1
        print(f"ok: official SDK {name}")

    def upload(name, w, h, seed):
        req = AlipayOfflineMaterialImageUploadRequest()
        req.image_type = "png"
        req.image_name = name
        req.image_content = FileItem(file_name=name + ".png", file_content=png(w, h, seed))
        resp = AlipayOfflineMaterialImageUploadResponse()
        resp.parse_response_content(client.execute(req))
        check("image.upload (multipart)", resp)
        return resp.image_id

    logo = upload("logo", 500, 500, 1)
    background = upload("background", 1020, 643, 2)

    model = AlipayMarketingCardTemplateCreateModel()
    model.request_id = "sdk-" + os.urandom(6).hex()
    model.card_type = "OUT_MEMBER_CARD"
    model.biz_no_prefix = "SDK"
    model.biz_no_suffix_len = "12"
    model.write_off_type = "qrcode"
    style = TemplateStyleInfoDTO()
    style.card_show_name = "SDK 会员卡"
    style.logo_id = logo
    style.background_id = background
    style.bg_color = "rgb(55,112,179)"
    style.front_text_list_enable = True
    model.template_style_info = style
    col = TemplateColumnInfoDTO()
    col.code = "BALANCE"
    col.title = "Balance"
    col.operate_type = "staticinfo"
    model.column_info_list = [col]
    rule = TemplateFieldRuleDTO()
    rule.field_name = "Balance"
    rule.rule_name = "ASSIGN_FROM_REQUEST"
    rule.rule_value = "Balance"
    model.field_rule_list = [rule]
    req = AlipayMarketingCardTemplateCreateRequest(biz_model=model)
    resp = AlipayMarketingCardTemplateCreateResponse()
    resp.parse_response_content(client.execute(req))
    check("template.create", resp)
    template_id = resp.template_id

    q = AlipayMarketingCardTemplateQueryModel()
    q.template_id = template_id
    resp = AlipayMarketingCardTemplateQueryResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardTemplateQueryRequest(biz_model=q)))
    check("template.query", resp)
    assert resp.template_style_info.card_show_name == "SDK 会员卡", resp.template_style_info

    bq = AlipayMarketingCardTemplateBatchqueryModel()
    bq.page_no = 1
    bq.page_size = 20
    resp = AlipayMarketingCardTemplateBatchqueryResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardTemplateBatchqueryRequest(biz_model=bq)))
    check("template.batchquery", resp)

    a = AlipayMarketingCardActivateurlApplyModel()
    a.template_id = template_id
    a.callback = "https://example.com/callback"
    req = AlipayMarketingCardActivateurlApplyRequest(biz_model=a)
    req.add_other_text_param("app_auth_token", "202405BBa1b2c3d4e5f6a7b8c9d0e1f2a3b4X01")
    resp = AlipayMarketingCardActivateurlApplyResponse()
    resp.parse_response_content(client.execute(req))
    if resp.is_success() or resp.sub_code != "TEMPLATE_NOT_EXIT":
        raise SystemExit("FAIL: another merchant's token must not see this template")
    checks += 1
    print("ok: official SDK app_auth_token call (signed business error verified)")

    # A member's journey with the SDK's own member classes: the app's
    # activation URL, a member submitting its form (the sandbox's test
    # endpoint), the auth_code for a token, the form, the card as the member.
    a = AlipayMarketingCardActivateurlApplyModel()
    a.template_id = template_id
    a.callback = "https://example.com/callback"
    resp = AlipayMarketingCardActivateurlApplyResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardActivateurlApplyRequest(biz_model=a)))
    check("activateurl.apply", resp)
    url = urllib.parse.unquote(resp.apply_card_url)
    ask = json.dumps({"activation_url": url, "fields": {"OPEN_FORM_FIELD_MOBILE": "13800000000"}, "deliver": False}).encode()
    member = json.load(urllib.request.urlopen(urllib.request.Request("http://127.0.0.1/_sandbox/activate", data=ask, method="POST")))
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(member["callback_url"]).query))
    t = AlipaySystemOauthTokenRequest()
    t.grant_type = "authorization_code"
    t.code = query["auth_code"]
    resp = AlipaySystemOauthTokenResponse()
    resp.parse_response_content(client.execute(t))
    check("system.oauth.token", resp)
    token, user_id = resp.access_token, resp.user_id
    assert user_id == member["user_id"], (user_id, member)
    f = AlipayMarketingCardActivateformQueryModel()
    f.biz_type = "MEMBER_CARD"
    f.template_id = template_id
    f.request_id = query["request_id"]
    req = AlipayMarketingCardActivateformQueryRequest(biz_model=f)
    req.add_other_text_param("auth_token", token)
    resp = AlipayMarketingCardActivateformQueryResponse()
    resp.parse_response_content(client.execute(req))
    check("card.activateform.query (auth_token)", resp)
    assert "13800000000" in resp.infos, resp.infos
    o = AlipayMarketingCardOpenModel()
    o.out_serial_no = "sdk-" + os.urandom(6).hex()
    o.card_template_id = template_id
    u = CardUserInfo()
    u.user_uni_id = user_id
    u.user_uni_id_type = "UID"
    o.card_user_info = u
    c = MerchantCard()
    c.external_card_no = "SDK-1"
    c.open_date = "2024-05-20 10:00:00"
    c.valid_date = "2099-12-31 23:59:59"
    c.point = "10"
    c.balance = "0.00"
    o.card_ext_info = c
    m = MerchantMenber()
    m.name = "Member"
    m.cell = "13800000000"
    o.member_ext_info = m
    req = AlipayMarketingCardOpenRequest(biz_model=o)
    req.add_other_text_param("auth_token", token)
    resp = AlipayMarketingCardOpenResponse()
    resp.parse_response_content(client.execute(req))
    check("card.open (auth_token)", resp)
    assert resp.card_info.biz_card_no.startswith("SDK"), resp.card_info.biz_card_no
    biz = resp.card_info.biz_card_no

    # Running the card (issue 26): a trade, a points message, a reminder.
    t = AlipayMarketingCardConsumeSyncModel()
    t.target_card_no, t.target_card_no_type = biz, "BIZ_CARD"
    t.trade_type, t.trade_no, t.trade_time = "TRADE", "SDK-T-1", "2024-05-21 12:00:00"
    t.trade_name, t.trade_amount, t.act_pay_amount = "Latte", "32.00", "30.00"
    t.shop_code, t.memo, t.swipe_cert_type = "S1", "shop 1", "ALIPAY"
    after = MerchantCard()
    after.point = "40"
    t.card_info = after
    gain = BenefitInfoDetail()
    gain.benefit_type, gain.count = "COUPON", "1"
    t.gain_benefit_list = [gain]
    for attempt in ("consume.sync", "consume.sync (the same trade again: replayed)"):
        resp = AlipayMarketingCardConsumeSyncResponse()
        resp.parse_response_content(client.execute(AlipayMarketingCardConsumeSyncRequest(biz_model=t)))
        check(attempt, resp)
        assert resp.external_card_no == "SDK-1", resp.external_card_no
    u = AlipayMarketingCardUpdateModel()
    u.target_card_no, u.target_card_no_type, u.occur_time = biz, "BIZ_CARD", "2024-05-21 13:00:00"
    v = MerchantCard()
    v.point = "60"
    u.card_info = v
    msg = MerchantCardMsgInfo()
    msg.changed_point = "+20"
    u.merchant_card_msg_info = msg
    resp = AlipayMarketingCardUpdateResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardUpdateRequest(biz_model=u)))
    check("card.update (merchant_card_msg_info.changed_point)", resp)
    n = AlipayMarketingCardMessageNotifyModel()
    n.target_card_no, n.target_card_no_type = biz, "BIZ_CARD"
    n.notify_type, n.notify_no, n.occur_time = "POINT_REMIND", "sdk-n-1", "2024-05-21 14:00:00"
    n.notify_info = json.dumps({"expired_point": "20", "expired_time": "2024-12-31 23:59:59"})
    resp = AlipayMarketingCardMessageNotifyResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardMessageNotifyRequest(biz_model=n)))
    check("message.notify (POINT_REMIND)", resp)

    # A dated benefit: create, query, modify, delete.
    b = McardTemplateBenefit()
    b.template_id, b.title = template_id, "Double points"
    b.benefit_desc = ["On Tuesdays", "In every shop"]
    b.start_date, b.end_date = "2024-06-01 00:00:00", "2024-12-31 23:59:59"
    b.ext_info = json.dumps({"openUrl": "https://e.example/offer"})
    cm = AlipayMarketingCardBenefitCreateModel()
    cm.mcard_template_benefit = b
    resp = AlipayMarketingCardBenefitCreateResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardBenefitCreateRequest(biz_model=cm)))
    check("benefit.create", resp)
    benefit_id = resp.benefit_id
    qm = AlipayMarketingCardBenefitQueryModel()
    qm.template_id = template_id
    resp = AlipayMarketingCardBenefitQueryResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardBenefitQueryRequest(biz_model=qm)))
    check("benefit.query", resp)
    found = [x for x in resp.mcard_template_benefit_query if x.benefit_id == benefit_id]
    assert found and found[0].title == "Double points", resp.mcard_template_benefit_query
    b.title = "Triple points"
    mm = AlipayMarketingCardBenefitModifyModel()
    mm.benefit_id, mm.mcard_template_benefit = benefit_id, b
    resp = AlipayMarketingCardBenefitModifyResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardBenefitModifyRequest(biz_model=mm)))
    check("benefit.modify", resp)
    dm = AlipayMarketingCardBenefitDeleteModel()
    dm.benefit_id, dm.template_id = benefit_id, template_id
    resp = AlipayMarketingCardBenefitDeleteResponse()
    resp.parse_response_content(client.execute(AlipayMarketingCardBenefitDeleteRequest(biz_model=dm)))
    check("benefit.delete", resp)
    print(f"{checks} passed, 0 failed")


if __name__ == "__main__":
    main()
