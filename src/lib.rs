//! cardform: declarative provisioning for Alipay membership-card programs.
//!
//! The code is a house of rooms, listed here top to bottom. A file may
//! import only rooms below its own: never one above, never one beside it in
//! the same room (`tests/testsuite/layers.rs` reads this list and every
//! `crate::` path in `src/`, and fails naming the file and line). A new
//! top-level module must be given a room here.
//!
//! 1. command line: [`cli`]
//! 2. benchmarks: [`bench`]
//! 3. views: [`render`]
//! 4. operations: [`ops`]
//! 5. settings: [`settings`]
//! 6. executors: [`apply`]
//! 7. stores: [`stores`]
//! 8. provider: [`provider`]
//! 9. transports: [`client`], [`sandbox`]
//! 10. gateway seam: [`gateway`]
//! 11. certificates: [`pki`]
//! 12. protocol: [`alipay`]
//! 13. planner: [`plan`], [`preview`]
//! 14. graph: [`graph`]
//! 15. manifests: [`manifest`]
//! 16. member cards: [`cards`]
//! 17. records: [`state`]
//! 18. domain: [`model`]
//! 19. utilities: [`util`]
//!
//! What each room owns:
//!
//! - [`cli`]: clap argument structs, one file per command; parse, call one
//!   operation, hand its result to a view. No business logic.
//! - [`bench`]: the documented benchmarks (`cardform bench`): generated
//!   projects, the real binary timed as a child process.
//! - [`render`]: human, JSON and Markdown views, progress, the apply prompt,
//!   diagnostics; the only place (with `cli`) that writes to the terminal.
//! - [`ops`]: one function per user-visible operation, and the shared wiring
//!   (project loading, gateway connection, tokens) in files of its own; the
//!   only place that wires concrete things together. Returns data.
//! - [`settings`]: flags + `CARDFORM_*` environment (+ manifest gateway
//!   block) into one `Settings`; the only code that reads the environment.
//! - [`apply`]: the executors: a plan walked in dependency order
//!   (`apply::schedule`, pure) committing every success; members' cards
//!   (`apply::cards`) issued row by row through the card ledger.
//! - [`stores`]: the state backends (sled, PostgreSQL, memory), record
//!   migration, the backend contract, and `stores::Location`, the one map
//!   from a state location to a backend.
//! - [`provider`]: per resource kind (`provider::image`, `template`, `form`,
//!   `activation_url`) and for members' cards: domain <-> gateway calls, ids,
//!   share of the call budget; the only place that maps the domain's words
//!   onto the gateway's.
//! - [`client`]: the signed HTTP client (the only `reqwest` user besides the
//!   sandbox); [`sandbox`]: a faithful emulator of the gateway, which never
//!   reaches the client's code.
//! - [`gateway`]: the gateway seam: one call in, its verified answer out
//!   (`Gateway::send`), typed requests on top (`Typed::call`), and the
//!   governor in front (retry, backoff, throttle pauses, rate limits).
//! - [`pki`]: making certificates and CSRs (the sandbox's certificate
//!   authority, `keys generate`).
//! - [`alipay`]: the protocol as plain data and pure computations: one typed
//!   request/response per method, keys, string-to-sign, envelope,
//!   certificates, AES, typed errors.
//! - [`plan`]: the pure planner: desired + snapshot -> changes with reasons;
//!   [`preview`]: card pictures from the domain model.
//! - [`graph`]: the dependency graph of desired resources (order, closure).
//! - [`manifest`]: raw YAML types, safe reading with positions, schema,
//!   lowering to [`model::Desired`] with located diagnostics, members files.
//! - [`cards`]: members' card rows, pure: seed 004's formats, tiers, serial
//!   numbers, salted digests.
//! - [`state`]: the records (snapshots, intents, card-ledger entries) and the
//!   traits a backend implements (`StateStore`, `Backend`, `CardLedger`).
//! - [`model`]: the pure domain in the manifest's words: addresses, kinds,
//!   desired attributes.
//! - [`util`]: secrets that never print, bounded reads, group commit, the
//!   hardened serve loop, text clipping, QR codes.

// Printing belongs to the views and the command line (allowed there).
#![warn(clippy::print_stdout, clippy::print_stderr, clippy::dbg_macro)]

pub mod alipay;
pub mod apply;
pub mod bench;
pub mod cards;
pub mod cli;
pub mod client;
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
pub mod settings;
pub mod state;
pub mod stores;
pub mod util;
