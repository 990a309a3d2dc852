//! cardform: declarative provisioning for Alipay membership-card programs.
//!
//! Module map (dependencies point inward: `cli -> ops -> everything else`):
//!
//! - [`cli`]: clap argument structs, one file per command; parse and dispatch only.
//! - [`settings`]: flags + `CARDFORM_*` environment (+ manifest gateway block) into
//!   one `Settings`; the only code that reads the environment.
//! - [`ops`]: one function per user-visible operation; the only place that wires
//!   concrete things (stores, HTTP transport, embedded sandbox) together.
//! - [`render`]: human, JSON and Markdown views, progress, QR codes; the only
//!   place that writes to the terminal.
//! - [`manifest`]: raw YAML types, safe reading with positions, schema, lowering
//!   to [`model::Desired`] with located diagnostics.
//! - [`model`]: the pure domain in the manifest's words: addresses, kinds,
//!   desired attributes (`model::template` records the raw -> normalized ->
//!   domain -> wire decision).
//! - [`graph`]: the dependency graph of desired resources (order, closure).
//! - [`plan`]: the pure planner: desired + snapshot -> changes with reasons.
//! - [`apply`]: the executor: walks a plan in dependency order
//!   (`apply::schedule`, pure), commits every success, skips the dependents
//!   of failures.
//! - [`provider`]: per resource kind, desired attributes <-> gateway calls;
//!   the only place that maps the domain's words to the gateway's.
//! - [`gateway`]: the gateway seam: a trait of typed calls (the signed client
//!   implements it) and the governor in front of it (retry, backoff, throttle
//!   pauses per app and merchant).
//! - [`state`]: snapshots, the `StateStore` and `Backend` traits, the sled
//!   backend (lock, integrity checkpoints, backup, recovery), an in-memory
//!   backend for tests, and the migration of old records.
//! - [`durable`]: group commit (many writers, few fsyncs).
//! - [`alipay`]: the gateway client (keys, signing, envelope, errors) and the
//!   plain wire types of each method (`alipay::methods`, importing nothing of
//!   the client).
//! - [`pki`]: making certificates and CSRs (the sandbox's certificate
//!   authority, `keys generate`).
//! - [`sandbox`]: a faithful emulator of the gateway, persisted and fault-injectable.
//! - [`secret`]: a string that never prints.
//! - [`bounded`]: reading user-named files within a size limit.

pub mod alipay;
pub mod apply;
pub mod bounded;
pub mod cards;
pub mod cli;
pub mod durable;
pub mod gateway;
pub mod graph;
pub mod manifest;
pub mod model;
pub mod ops;
pub mod pki;
pub mod plan;
pub mod preview;
pub mod provider;
pub mod render;
pub mod sandbox;
pub mod secret;
pub mod serve;
pub mod settings;
pub mod state;
