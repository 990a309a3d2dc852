//! The sandbox's HTTP side besides `gateway.do`: the uploaded images it
//! serves, and the test endpoints (`POST /_sandbox/activate` submits a
//! member's form and delivers the callback, `POST /_sandbox/members`,
//! `GET /_sandbox/cards`). None of these exist at Alipay.

use super::*;

/// A member activating a card, played by the sandbox (a test endpoint, not
/// Alipay's): `POST /_sandbox/activate` with
/// `{"activation_url": "<decoded apply_card_url>", "fields": {"OPEN_FORM_FIELD_MOBILE": "..."},
/// "user_id": "2088..." (optional: a new member otherwise)}`. The member
/// "submits" the template's form; the answer is where Alipay would send the
/// member's browser: `{"callback_url": "<callback>?app_id=..&template_id=..&request_id=..&auth_code=..[&out_string=..]",
/// "user_id": "...", "request_id": "..."}`.
pub(crate) async fn activate(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Ask {
        activation_url: String,
        #[serde(default)]
        fields: BTreeMap<String, String>,
        #[serde(default)]
        user_id: Option<String>,
        /// Send the member's browser to the callback (a GET, redirects not
        /// followed) and report what it answered; `false` only hands back
        /// the URL (a test then calls it, repeats it or drops it).
        #[serde(default = "yes")]
        deliver: bool,
    }
    fn yes() -> bool {
        true
    }
    let refuse = |why: String| (StatusCode::BAD_REQUEST, why).into_response();
    let ask: Ask = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return refuse(format!("not the expected JSON: {e}")),
    };
    let Ok(url) = url::Url::parse(&ask.activation_url) else {
        return refuse("activation_url is not a URL".into());
    };
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    let (Some(app), Some(template_id)) = (q.get("app_id"), q.get("template_id")) else {
        return refuse("activation_url has no app_id or template_id".into());
    };
    let Some(callback) = q.get("callback") else {
        return refuse("the activation URL has no callback: nothing to send the member to".into());
    };
    let submitted = {
        let _guard = shared.write_lock.lock().await;
        business::members::submit(
            &shared.store,
            app,
            template_id,
            ask.user_id.as_deref(),
            &ask.fields,
        )
    };
    let (user_id, request_id, code) = match submitted {
        Ok(v) => v,
        Err(f) => return refuse(format!("{}: {}", f.sub_code, f.sub_msg)),
    };
    if let Err(e) = shared.store.flush().await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let Ok(mut target) = url::Url::parse(callback) else {
        return refuse("the callback is not a URL".into());
    };
    {
        let mut pairs = target.query_pairs_mut();
        pairs.append_pair("app_id", app);
        pairs.append_pair("template_id", template_id);
        pairs.append_pair("request_id", &request_id);
        pairs.append_pair("auth_code", &code);
        if let Some(o) = q.get("out_string") {
            pairs.append_pair("out_string", o);
        }
    }
    let mut answer = serde_json::json!({
        "callback_url": target.as_str(),
        "user_id": user_id,
        "request_id": request_id,
    });
    if ask.deliver {
        match deliver(target.as_str(), std::time::Duration::from_secs(30)).await {
            Ok((status, location)) => {
                answer["callback_status"] = status.into();
                answer["location"] = location.map_or(serde_json::Value::Null, Into::into);
            }
            Err(e) => {
                answer["callback_error"] = e.into();
                return (
                    StatusCode::BAD_GATEWAY,
                    [(header::CONTENT_TYPE, "application/json")],
                    answer.to_string(),
                )
                    .into_response();
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

/// A member opening a card through the open-card SPI (3.1), Alipay played
/// by the sandbox (a test endpoint): `POST /_sandbox/spi/opencard` with
/// `{"spi_url": "http://.../spi", "template_id": "...", "fields":
/// {"OPEN_FORM_FIELD_MOBILE": "..."}, "user_id": "2088..." (optional),
/// "out_serial_no": "..." (optional: to repeat an opening, as Alipay's
/// retry does), "tamper": false}`. The sandbox makes the card number,
/// posts the SPI call to the merchant signed with its platform key (with
/// `tamper`, a signature over other content), verifies the answer with the
/// app's key, and records the card the answer names. An app with AES
/// content encryption on gets the business parameters in encrypted
/// `biz_content` and must answer encrypted. Answers `{"status",
/// "verified", "encrypted", "recorded", "code", "card_info",
/// "out_serial_no", "biz_card_no"}`.
pub(crate) async fn spi_open(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Ask {
        spi_url: String,
        template_id: String,
        #[serde(default)]
        fields: BTreeMap<String, String>,
        #[serde(default)]
        user_id: Option<String>,
        #[serde(default)]
        out_serial_no: Option<String>,
        #[serde(default)]
        biz_card_no: Option<String>,
        #[serde(default)]
        tamper: bool,
    }
    let refuse = |why: String| (StatusCode::BAD_REQUEST, why).into_response();
    let ask: Ask = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return refuse(format!("not the expected JSON: {e}")),
    };
    let made = {
        let _guard = shared.write_lock.lock().await;
        business::spi_card_no(&shared.store, &ask.template_id).and_then(|(app, ns, biz)| {
            let id = shared.store.next_id().map_err(Fail::internal)?;
            Ok((app, ns, biz, id))
        })
    };
    let (app, ns, made_biz, id) = match made {
        Ok(v) => v,
        Err(f) => return refuse(format!("{}: {}", f.sub_code, f.sub_msg)),
    };
    let biz = ask.biz_card_no.unwrap_or(made_biz);
    let out_serial_no = ask.out_serial_no.unwrap_or_else(|| format!("AS{id:018}"));
    let user_id = ask
        .user_id
        .unwrap_or_else(|| format!("2088{:012}", id % 1_000_000_000_000));
    let form: Vec<BTreeMap<&str, &str>> = ask
        .fields
        .iter()
        .map(|(k, v)| BTreeMap::from([(k.as_str(), v.as_str())]))
        .collect();
    let business: BTreeMap<&str, String> = [
        ("user_id", user_id.clone()),
        ("template_id", ask.template_id.clone()),
        ("out_serial_no", out_serial_no.clone()),
        ("biz_card_no", biz.clone()),
        (
            "user_info",
            serde_json::to_string(&form).unwrap_or_default(),
        ),
    ]
    .into_iter()
    .collect();
    // An app with AES content encryption on gets its call's business
    // parameters in encrypted `biz_content` (as the gateway takes them).
    let aes = shared.encrypt_keys.get(&app);
    let mut params: BTreeMap<String, String> = [
        ("method", crate::alipay::spi::OPENCARD.to_string()),
        ("charset", "utf-8".to_string()),
        ("version", "1.0".to_string()),
        ("sign_type", "RSA2".to_string()),
        ("biz_app_id", app.clone()),
        (
            "utc_timestamp",
            Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    match aes {
        Some(key) => {
            params.insert("encrypt_type".into(), "AES".into());
            params.insert(
                "biz_content".into(),
                key.encrypt(&serde_json::to_string(&business).unwrap_or_default()),
            );
        }
        None => params.extend(business.into_iter().map(|(k, v)| (k.to_string(), v))),
    }
    let mut content = crate::alipay::sign::string_to_sign(&params);
    if ask.tamper {
        content.push_str("&tampered=1");
    }
    let Some(sign) = shared.platform_sign(content.as_bytes()) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "signing failed").into_response();
    };
    params.insert("sign".into(), sign);
    let form_body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let sent = client
        .post(&ask.spi_url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form_body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return refuse(format!("the SPI could not be reached: {}", e.without_url()));
        }
    };
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let crate::alipay::spi::Answer {
        signed: node_text,
        sign,
        node,
        encrypted,
    } = match crate::alipay::spi::read_answer(&text, aes) {
        Ok(v) => v,
        Err(e) => {
            return answer_json(serde_json::json!({
                "status": status, "verified": false, "error": e,
                "out_serial_no": out_serial_no, "biz_card_no": biz,
            }));
        }
    };
    let verified = shared
        .app_key(&app)
        .is_some_and(|k| verify::verify(&k, "RSA2", &node_text, &sign));
    let code = node
        .get("code")
        .and_then(|c| c.as_str())
        .unwrap_or_default()
        .to_string();
    let card: Option<crate::alipay::methods::MerchantCard> = node
        .get("card_info")
        .and_then(|c| serde_json::from_value(c.clone()).ok());
    let mut recorded = false;
    // An app with encryption on must answer encrypted (as a call to the
    // gateway must be).
    if verified
        && encrypted == aes.is_some()
        && code == "10000"
        && let Some(card) = card.clone()
        && card.biz_card_no.as_deref() == Some(biz.as_str())
    {
        let _guard = shared.write_lock.lock().await;
        recorded =
            business::spi_record(&shared.store, &ns, &ask.template_id, &user_id, card).is_ok();
        let _ = shared.store.flush().await;
    }
    answer_json(serde_json::json!({
        "status": status,
        "verified": verified,
        "encrypted": encrypted,
        "recorded": recorded,
        "code": code,
        "sub_code": node.get("sub_code"),
        "card_info": card,
        "out_serial_no": out_serial_no,
        "biz_card_no": biz,
    }))
}

fn answer_json(v: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// The cards held (a test endpoint): `GET /_sandbox/cards` answers
/// `{"open": N, "deleted": N, "templates": {"<template_id>": N}, "trades":
/// N, "messages": {"<kind>": N}}`.
pub(crate) async fn cards(State(shared): State<Arc<Shared>>) -> Response {
    match business::card_counts(&shared.store) {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(f) => (StatusCode::INTERNAL_SERVER_ERROR, f.sub_msg).into_response(),
    }
}

/// One card's history (a test endpoint): `GET /_sandbox/cards/{biz_card_no}`
/// answers its values, trades (oldest first) and messages; 404 if unknown.
pub(crate) async fn card(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(biz): axum::extract::Path<String>,
) -> Response {
    match business::card_history(&shared.store, &biz) {
        Ok(Some(v)) => {
            ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such card").into_response(),
        Err(f) => (StatusCode::INTERNAL_SERVER_ERROR, f.sub_msg).into_response(),
    }
}

/// The benefits held (a test endpoint): `GET /_sandbox/benefits`.
pub(crate) async fn benefits(State(shared): State<Arc<Shared>>) -> Response {
    match business::benefit_counts(&shared.store) {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(f) => (StatusCode::INTERNAL_SERVER_ERROR, f.sub_msg).into_response(),
    }
}

/// Members who authorised an app before (a test endpoint): `POST
/// /_sandbox/members` with `{"app_id": "...", "count": N}` (N at most
/// 100,000) answers `[{"user_id", "auth_token", "refresh_token"}, ...]`: the
/// rows of a merchant's existing book, for `cards open`.
pub(crate) async fn enrol(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    struct Ask {
        app_id: String,
        count: usize,
    }
    let ask: Ask = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not the expected JSON: {e}"),
            )
                .into_response();
        }
    };
    if ask.count > 100_000 {
        return (StatusCode::BAD_REQUEST, "at most 100,000 members at once").into_response();
    }
    let made = {
        let _guard = shared.write_lock.lock().await;
        business::members::enrol(&shared.store, &ask.app_id, ask.count)
    };
    let made = match made {
        Ok(m) => m,
        Err(f) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{}: {}", f.sub_code, f.sub_msg),
            )
                .into_response();
        }
    };
    if let Err(e) = shared.store.flush().await {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    let list: Vec<serde_json::Value> = made
        .into_iter()
        .map(|(u, a, r)| serde_json::json!({"user_id": u, "auth_token": a, "refresh_token": r}))
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(list).to_string(),
    )
        .into_response()
}

/// The member's browser arriving at the merchant's callback: one GET, the
/// answer's status and `Location` (a redirect is the member's next page).
pub(crate) async fn deliver(
    url: &str,
    patience: std::time::Duration,
) -> Result<(u16, Option<String>), String> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(patience)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("the callback could not be reached: {}", e.without_url()))?;
    let location = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status().as_u16(), location))
}

pub(crate) async fn image(
    State(shared): State<Arc<Shared>>,
    UrlPath(id): UrlPath<String>,
) -> Response {
    match shared.store.image_bytes.get(id.as_bytes()) {
        Ok(Some(bytes)) => {
            let mime = imagesize::image_type(&bytes)
                .map(business::mime_of)
                .unwrap_or("application/octet-stream");
            ([(header::CONTENT_TYPE, mime)], bytes.to_vec()).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
