//! Utilities: generic pieces that know nothing of cards, manifests or the
//! gateway, and import nothing of the crate.
//!
//! - [`secret`]: a string that never prints;
//! - [`bounded`]: reading user-named files within a size limit;
//! - [`durable`]: group commit (many writers, few fsyncs);
//! - [`serve`]: the hardened accept loop both HTTP servers use;
//! - [`text`]: clipping values for messages;
//! - [`qr`]: QR codes as PNG files.

pub mod bounded;
pub mod durable;
pub mod qr;
pub mod secret;
pub mod serve;
pub mod text;
