//! The integration test suite: the real `cardform` binary against a real sandbox.

mod api;
mod plan_apply;
mod support;
mod validate;
