//! What classifying a negative SMTP reply gives ([`Classification`]), and the two
//! last layers of it. The whole classification is layered:
//!
//! 1. an ordered list of [`Rules`] on the reply text (optionally constrained by reply
//!    code and enhanced status prefix), loaded from TOML; the shipped defaults live in
//!    `bounce/src/rules.toml` and are embedded ([`DEFAULT_RULES_TOML`]);
//! 2. the RFC 3463 enhanced status code ([`reason_from_status`]);
//! 3. the basic reply code ([`reason_from_code`]).
//!
//! [`classify_reply`] uses the embedded defaults; [`Rules::classify`] uses any rule set.
//!
//! [`Rules`]: crate::rules::Rules
//! [`Rules::classify`]: crate::rules::Rules::classify
//! [`classify_reply`]: crate::rules::classify_reply
//! [`DEFAULT_RULES_TOML`]: crate::rules::DEFAULT_RULES_TOML

use maily_engine::BounceClass;
use maily_engine::reply::{Category, EnhancedStatus, Reason};
use serde::{Deserialize, Serialize};

/// The verdict on one failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub reason: Reason,
    pub class: BounceClass,
}

impl Classification {
    /// The coarse category of the reason.
    pub fn category(&self) -> Category {
        self.reason.category()
    }
}

/// The reason the basic reply code alone implies, the last resort of classification.
pub fn reason_from_code(code: u16) -> Reason {
    match code {
        550 | 551 | 553 | 554 => Reason::Rejected,
        552 => Reason::MailboxFull,
        421 => Reason::TooManyConn,
        _ => Reason::Undefined,
    }
}

/// The reason an enhanced status code alone implies, as Sisimai reads RFC 3463 and
/// its IANA registry. Codes that say too little (`x.0.0`, `4.4.0`, `5.5.0`...) imply
/// none.
pub fn reason_from_status(s: EnhancedStatus) -> Option<Reason> {
    use Reason::*;
    let permanent = s.class == 5;
    Some(match (s.subject, s.detail) {
        (1, 0) | (1, 1) | (1, 3) if permanent => UserUnknown,
        (1, 2) if permanent => HostUnknown,
        (1, 4) if permanent => Filtered,
        (1, 6) => HasMoved,
        (1, 7) | (1, 8) => Rejected,
        (1, 9) => SystemError,
        (1, 10) if permanent => NotAccept,
        (2, 0) | (2, 1) if permanent => Filtered,
        (2, 1) => Blocked,
        (2, 2) => MailboxFull,
        (2, 3) => ExceedLimit,
        (2, 4) => Filtered,
        (3, 0) if permanent => SystemError,
        (3, 1) => SystemFull,
        (3, 2) => NotAccept,
        (3, 3) | (3, 5) => SystemError,
        (3, 4) if permanent => MesgTooBig,
        (4, 0) if permanent => NetworkError,
        (4, 1) if !permanent => Expired,
        (4, 2) | (4, 4) | (4, 6) | (4, 8) if !permanent => NetworkError,
        (4, 3) => SystemError,
        (4, 4) => HostUnknown,
        (4, 5) if !permanent => SystemFull,
        (4, 7) if !permanent => Expired,
        (5, 2) | (5, 6) if permanent => SyntaxError,
        (5, 3) if permanent => TooManyConn,
        (5, 3) | (5, 4) | (5, 5) => SystemError,
        (6, 0) | (6, 1) | (6, 2) | (6, 3) | (6, 5) | (6, 6) | (6, 7) | (6, 8) | (6, 9) => {
            ContentError
        }
        (7, 1) | (7, 2) if !permanent => Blocked,
        (7, 13) if permanent => Suspend,
        (7, 16) => MesgTooBig,
        (7, 17) | (7, 18) if permanent => HasMoved,
        (7, 20) | (7, 21) | (7, 22) | (7, 23) | (7, 24) | (7, 26) | (7, 29) => AuthFailure,
        (7, 25) => RequirePtr,
        (7, 27) if permanent => NotAccept,
        (7, 28) if permanent => SpamDetected,
        (7, 30) if permanent => FailedStartTls,
        (7, 0) if !permanent => return None,
        (7, 3) | (7, 4) | (7, 8) | (7, 9) | (7, 10) | (7, 11) | (7, 14) | (7, 19) if permanent => {
            SecurityError
        }
        (7, 0) | (7, 1) | (7, 2) => SecurityError,
        (7, 5) | (7, 6) | (7, 7) | (7, 12) | (7, 15) => SecurityError,
        _ => return None,
    })
}
