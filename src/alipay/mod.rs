//! The Alipay OpenAPI protocol (`gateway.do`, version 2) as plain data and pure
//! computations; the signed HTTP client that sends it is `crate::client`.
//!
//! - [`keys`]: app private key / Alipay public key, every format Alipay hands out;
//! - [`sign`]: string-to-sign and sign types;
//! - [`call`]: one call as plain data, and the typed view of it;
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
pub mod call;
pub mod cert;
pub mod clock;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod methods;
pub mod sign;
pub mod spi;

pub use call::Call;
pub use error::{ApiError, ErrorClass, GatewayError, MerchantBlock};
pub use keys::{AlipayPublicKey, AppPrivateKey, KeySource};
pub use methods::FilePart;
pub use sign::SignType;
