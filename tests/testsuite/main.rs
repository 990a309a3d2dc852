//! The integration test suite: the real `cardform` binary against a real sandbox.

mod api;
mod crash;
mod plan_apply;
mod property;
mod support;
mod validate;
