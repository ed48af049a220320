//! Maily's bounce handling: what a failed delivery means and what to do about it.
//!
//! - [`classify`]: a negative SMTP reply's bounce reason and class, from
//!   operator-editable [`rules`] on the reply text (shipped defaults in
//!   `bounce/src/rules.toml`), then its enhanced status, then its code.
//! - [`policy`]: which reasons suppress an address, per tenant.
//! - [`report`]: asynchronous reports read from raw inbound mail (RFC 3464 DSNs, ARF
//!   complaints, the non-standard bounces of the common MTAs and providers, automatic
//!   replies), each failed recipient given a reason in the same vocabulary.
//!
//! The vocabulary itself ([`SmtpReply`](maily_engine::reply::SmtpReply),
//! [`Reason`](maily_engine::reply::Reason)) lives in `maily-engine`, where the
//! records and ports that carry it are. Pure logic: no I/O.

pub mod classify;
pub mod policy;
pub mod report;
pub mod rules;

pub use classify::{Classification, reason_from_code, reason_from_status};
pub use rules::{
    Basis, CodeMatch, DEFAULT_RULES_TOML, Decision, Pattern, Rule, RuleProblem, Rules, RulesError,
    StatusMatch, classify_reply,
};
