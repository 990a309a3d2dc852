//! The Alipay OpenAPI gateway client (`gateway.do`, protocol v2).
//!
//! - [`keys`]: app private key / Alipay public key, every format Alipay hands out;
//! - [`sign`]: string-to-sign and sign types;
//! - [`client`]: request building, encoding, transport;
//! - [`envelope`]: response node location and signature verification;
//! - [`error`]: typed errors that say whether a retry can help;
//! - [`cert`]: certificate serial numbers and checks for public-key-certificate mode;
//! - [`aes`]: AES content encryption (`encrypt_type=AES`);
//! - [`methods`]: one typed request/response per method: plain data that
//!   imports nothing of the client (the sandbox reads the same types).
//!
//! It must never know about resources, plans or state, and never retries: the
//! gateway seam (`crate::gateway`) decides that.

pub mod aes;
pub mod cert;
pub mod client;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod methods;
pub mod sign;

pub use client::{Call, Client, FilePart, GatewayConfig};
pub use error::{ApiError, ErrorClass, GatewayError, MerchantBlock};
pub use keys::{AlipayPublicKey, AppPrivateKey, KeySource};
pub use sign::SignType;
