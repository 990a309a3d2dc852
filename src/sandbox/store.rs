//! The sandbox's persistent data, in a sled database under its data directory:
//! registered apps, images (metadata and bytes), templates, idempotency records
//! and issued cards. A restart loses nothing.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct Store {
    db: sled::Db,
    group: std::sync::Arc<crate::util::durable::GroupFlush>,
    pub apps: sled::Tree,
    /// app_id -> the app's AES content-encryption key (base64), once set.
    pub encrypt_keys: sled::Tree,
    pub images: sled::Tree,
    pub image_bytes: sled::Tree,
    pub templates: sled::Tree,
    /// `namespace \0 template_id` -> (): batchquery reads one namespace's
    /// templates without decoding every other's.
    pub template_ns: sled::Tree,
    pub requests: sled::Tree,
    pub cards: sled::Tree,
    /// `biz_card_no | trade_no` -> the trade consume.sync recorded (the
    /// card's history, as the wallet lists it).
    pub trades: sled::Tree,
    /// `biz_card_no | kind | id` -> a message sent to a card's holder
    /// (`changed_point` from card.update, `POINT_REMIND` from message.notify).
    pub messages: sled::Tree,
    /// `benefit_id` -> a dated benefit on a template.
    pub benefits: sled::Tree,
    /// Members: `code:`, `token:`, `refresh:` and `form:` records (see
    /// `business::members`).
    pub members: sled::Tree,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the sandbox data in `{dir}`: {reason}\nhint: is another sandbox (or cardform run) using this directory?"
    )]
    Open { dir: String, reason: String },
    #[error("sandbox storage failed: {0}")]
    Io(#[from] sled::Error),
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .open()
            .map_err(|e| StoreError::Open {
                dir: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        let tree = |name: &str| db.open_tree(name);
        let store = Self {
            apps: tree("apps")?,
            encrypt_keys: tree("encrypt_keys")?,
            images: tree("images")?,
            image_bytes: tree("image_bytes")?,
            templates: tree("templates")?,
            template_ns: tree("template_ns")?,
            requests: tree("requests")?,
            cards: tree("cards")?,
            trades: tree("trades")?,
            messages: tree("messages")?,
            benefits: tree("benefits")?,
            members: tree("members")?,
            group: Default::default(),
            db,
        };
        // Data written before the index existed: index it once.
        if store.template_ns.is_empty() && !store.templates.is_empty() {
            for item in store.templates.iter() {
                let (k, v) = item?;
                if let Ok(rec) = serde_json::from_slice::<serde_json::Value>(&v) {
                    let ns = rec["ns"].as_str().unwrap_or_default();
                    store
                        .template_ns
                        .insert(ns_key(ns, &String::from_utf8_lossy(&k)), &[])?;
                }
            }
        }
        Ok(store)
    }

    /// A persistent, monotonically increasing number (for generated ids).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Make everything written so far durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (db, group) = (self.db.clone(), self.group.clone());
        tokio::task::spawn_blocking(move || group.flush(|| db.flush().map(|_| ())))
            .await
            .map_err(|e| StoreError::Io(sled::Error::ReportableBug(e.to_string())))??;
        Ok(())
    }
}

/// The namespace index key of a template.
pub fn ns_key(ns: &str, template_id: &str) -> Vec<u8> {
    let mut k = ns.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(template_id.as_bytes());
    k
}

pub fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &str) -> Result<Option<T>, StoreError> {
    Ok(tree
        .get(key.as_bytes())?
        .and_then(|v| serde_json::from_slice(&v).ok()))
}

pub fn put<T: Serialize>(tree: &sled::Tree, key: &str, value: &T) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).expect("bug: sandbox records always serialize");
    tree.insert(key.as_bytes(), bytes)?;
    Ok(())
}
