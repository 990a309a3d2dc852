//! One function per user-visible operation. The only place that wires concrete
//! things together: key files, the HTTP client, the embedded sandbox. Returns
//! data; never prints.

pub mod api;
pub mod apply;
pub mod cards;
pub mod cards_serve;
pub mod gateway;
pub mod import;
pub mod init;
pub mod keys;
pub mod load;
pub mod metrics;
pub mod plan;
pub mod preview;
pub mod project;
pub mod refresh;
pub mod sandbox;
pub mod state;
pub mod till;
pub mod tokens;
pub mod validate;
