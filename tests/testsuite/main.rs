//! The integration test suite: the real `cardform` binary against a real sandbox.

// Tests set up environments for the binary they run.
#![allow(clippy::disallowed_methods)]

mod abuse;
mod api;
mod benefits;
mod cards;
mod cert_mode;
mod crash;
mod damage;
mod drift;
mod everyday;
mod gitops;
mod hostile;
mod isv;
mod known_answers;
mod layers;
mod pg;
mod plan_apply;
mod preview;
mod property;
mod seams;
mod snapshots;
mod support;
mod validate;
