//! SMTP replies and their classification into bounce reasons.
//!
//! The reason vocabulary follows Sisimai's, so synchronous replies and asynchronous
//! reports speak the same language. Classification uses the RFC 3463 enhanced status
//! code first and the reply text second.

use crate::domain::event::BounceClass;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An RFC 3463 enhanced status code such as `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatus {
    /// Parses `c.s.d` where c is 2, 4 or 5.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let class: u8 = it.next()?.parse().ok()?;
        let subject: u16 = it.next()?.parse().ok()?;
        let detail: u16 = it.next()?.parse().ok()?;
        if it.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some(EnhancedStatus {
            class,
            subject,
            detail,
        })
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A complete (possibly multi-line) SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmtpReply {
    pub code: u16,
    pub enhanced: Option<EnhancedStatus>,
    /// The text of all lines joined by a space, enhanced code removed.
    pub text: String,
}

/// A reply that does not follow RFC 5321 section 4.2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply is empty")]
    Empty,
    #[error("reply line {0:?} does not start with a three-digit code")]
    BadCode(String),
    #[error("reply lines carry different codes")]
    MixedCodes,
}

impl SmtpReply {
    /// Builds a reply from its parts.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        let text = text.into();
        let (enhanced, text) = split_enhanced(&text);
        SmtpReply {
            code,
            enhanced,
            text,
        }
    }

    /// Parses reply lines (without CRLF), e.g. `["250-PIPELINING", "250 8BITMIME"]`.
    pub fn parse_lines<S: AsRef<str>>(lines: &[S]) -> Result<Self, ReplyError> {
        let mut code = None;
        let mut texts = Vec::with_capacity(lines.len());
        let mut enhanced = None;
        for line in lines {
            let line = line.as_ref();
            let c = line
                .get(..3)
                .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| ReplyError::BadCode(line.chars().take(40).collect()))?;
            if code.is_some_and(|prev| prev != c) {
                return Err(ReplyError::MixedCodes);
            }
            code = Some(c);
            let (e, t) = split_enhanced(line.get(4..).unwrap_or(""));
            enhanced = enhanced.or(e);
            texts.push(t);
        }
        Ok(SmtpReply {
            code: code.ok_or(ReplyError::Empty)?,
            enhanced,
            text: texts.join(" "),
        })
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

fn split_enhanced(text: &str) -> (Option<EnhancedStatus>, String) {
    let text = text.trim();
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    match EnhancedStatus::parse(first) {
        Some(e) => (Some(e), rest.trim().to_string()),
        None => (None, text.to_string()),
    }
}

/// Why a message bounced, in Sisimai's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    UserUnknown,
    MailboxFull,
    HostUnknown,
    HasMoved,
    Blocked,
    Rejected,
    Filtered,
    Expired,
    SpamDetected,
    VirusDetected,
    PolicyViolation,
    SecurityError,
    Suspend,
    MesgTooBig,
    ExceedLimit,
    NoRelaying,
    NotAccept,
    NetworkError,
    SystemError,
    SystemFull,
    TooManyConn,
    Speeding,
    SyntaxError,
    ContentError,
    MailerError,
    AuthFailure,
    FailedStartTls,
    RequirePtr,
    NotCompliantRfc,
    Undefined,
}

impl Reason {
    /// The reason's name as Sisimai spells it.
    pub fn as_str(&self) -> &'static str {
        use Reason::*;
        match self {
            UserUnknown => "userunknown",
            MailboxFull => "mailboxfull",
            HostUnknown => "hostunknown",
            HasMoved => "hasmoved",
            Blocked => "blocked",
            Rejected => "rejected",
            Filtered => "filtered",
            Expired => "expired",
            SpamDetected => "spamdetected",
            VirusDetected => "virusdetected",
            PolicyViolation => "policyviolation",
            SecurityError => "securityerror",
            Suspend => "suspend",
            MesgTooBig => "mesgtoobig",
            ExceedLimit => "exceedlimit",
            NoRelaying => "norelaying",
            NotAccept => "notaccept",
            NetworkError => "networkerror",
            SystemError => "systemerror",
            SystemFull => "systemfull",
            TooManyConn => "toomanyconn",
            Speeding => "speeding",
            SyntaxError => "syntaxerror",
            ContentError => "contenterror",
            MailerError => "mailererror",
            AuthFailure => "authfailure",
            FailedStartTls => "failedstarttls",
            RequirePtr => "requireptr",
            NotCompliantRfc => "notcompliantrfc",
            Undefined => "undefined",
        }
    }

    /// Whether a permanent failure for this reason means the address itself is dead.
    pub fn is_hard(&self) -> bool {
        matches!(
            self,
            Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved | Reason::NotAccept
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    pub reason: Reason,
    pub class: BounceClass,
}

/// Classifies a negative SMTP reply received during delivery.
pub fn classify_reply(reply: &SmtpReply) -> Classification {
    let reason = reason_from_text(&reply.text)
        .or_else(|| reply.enhanced.and_then(reason_from_status))
        .unwrap_or(match reply.code {
            550 | 551 | 553 => Reason::Rejected,
            552 => Reason::MailboxFull,
            554 => Reason::Rejected,
            421 => Reason::TooManyConn,
            _ => Reason::Undefined,
        });
    let class = if reply.is_permanent() && reason.is_hard() {
        BounceClass::Hard
    } else {
        BounceClass::Soft
    };
    Classification { reason, class }
}

/// The reason an enhanced status code alone implies (RFC 3463 and its registry).
pub fn reason_from_status(s: EnhancedStatus) -> Option<Reason> {
    use Reason::*;
    Some(match (s.subject, s.detail) {
        (1, 1) | (1, 0) | (1, 3) => UserUnknown,
        (1, 2) | (1, 10) => HostUnknown,
        (1, 6) => HasMoved,
        (1, 8) => Rejected,
        (2, 1) => Suspend,
        (2, 2) => MailboxFull,
        (2, 3) => MesgTooBig,
        (2, 4) => MailerError,
        (3, 1) => SystemFull,
        (3, 4) => MesgTooBig,
        (3, _) => SystemError,
        (4, 1) | (4, 2) | (4, 6) => NetworkError,
        (4, 3) | (4, 4) => HostUnknown,
        (4, 7) => Expired,
        (4, _) => NetworkError,
        (5, _) => SyntaxError,
        (6, _) => ContentError,
        (7, 1) => Rejected,
        (7, 7) => SecurityError,
        (7, 8) | (7, 9) => AuthFailure,
        (7, 10) | (7, 11) => FailedStartTls,
        (7, 25) => RequirePtr,
        (7, 23) | (7, 24) | (7, 26) => PolicyViolation,
        (7, _) => SecurityError,
        _ => return None,
    })
}

/// Reply-text patterns checked before the status code; the first match wins.
const TEXT_RULES: &[(&[&str], Reason)] = &[
    // Before the user rules: "domain does not exist" is about the host.
    (
        &[
            "host not found",
            "domain not found",
            "domain does not exist",
            "no mx",
            "unrouteable",
            "host unknown",
        ],
        Reason::HostUnknown,
    ),
    (
        &[
            "user unknown",
            "unknown user",
            "no such user",
            "does not exist",
            "mailbox unavailable",
            "recipient not found",
            "invalid recipient",
            "no mailbox here",
            "address rejected",
            "unknown recipient",
        ],
        Reason::UserUnknown,
    ),
    (
        &[
            "mailbox full",
            "mailbox is full",
            "quota",
            "over quota",
            "insufficient storage",
        ],
        Reason::MailboxFull,
    ),
    (&["spam", "junk mail"], Reason::SpamDetected),
    (&["virus", "malware"], Reason::VirusDetected),
    (
        &[
            "blacklist",
            "blocklist",
            "listed at",
            "listed on",
            "blocked",
            "reputation",
        ],
        Reason::Blocked,
    ),
    (
        &[
            "relay access denied",
            "relaying denied",
            "not permitted to relay",
        ],
        Reason::NoRelaying,
    ),
    (&["too many connections"], Reason::TooManyConn),
    (
        &["rate limit", "too many messages", "try again later"],
        Reason::Speeding,
    ),
    (
        &["message size", "too large", "too big"],
        Reason::MesgTooBig,
    ),
    (&["disabled", "suspended", "inactive"], Reason::Suspend),
];

fn reason_from_text(text: &str) -> Option<Reason> {
    let lower = text.to_ascii_lowercase();
    TEXT_RULES
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| lower.contains(n)))
        .map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multiline_replies_with_enhanced_codes() {
        let r =
            SmtpReply::parse_lines(&["550-5.1.1 The email account", "550 5.1.1 does not exist"])
                .unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced.unwrap().to_string(), "5.1.1");
        assert_eq!(r.text, "The email account does not exist");
        assert_eq!(
            SmtpReply::parse_lines(&["250-a", "251 b"]),
            Err(ReplyError::MixedCodes)
        );
        assert!(matches!(
            SmtpReply::parse_lines(&["hello"]),
            Err(ReplyError::BadCode(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn reply_parsing_never_panics_and_keeps_the_code(
            code in 200u16..600,
            lines in proptest::collection::vec("\\PC{0,60}", 1..4),
        ) {
            let wire: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{code}{}{l}", if i + 1 == lines.len() { ' ' } else { '-' }))
                .collect();
            let reply = SmtpReply::parse_lines(&wire).unwrap();
            proptest::prop_assert_eq!(reply.code, code);
            let _ = classify_reply(&reply);
        }

        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec("\\PC{0,20}", 0..4)) {
            if let Ok(reply) = SmtpReply::parse_lines(&lines) {
                let _ = classify_reply(&reply);
            }
            for l in &lines {
                let _ = EnhancedStatus::parse(l);
            }
        }
    }

    #[test]
    fn classifies_common_replies() {
        let c = |code, text: &str| classify_reply(&SmtpReply::new(code, text));
        assert_eq!(
            c(550, "5.1.1 user unknown"),
            Classification {
                reason: Reason::UserUnknown,
                class: BounceClass::Hard
            }
        );
        assert_eq!(c(552, "5.2.2 mailbox full").reason, Reason::MailboxFull);
        assert_eq!(c(552, "5.2.2 mailbox full").class, BounceClass::Soft);
        assert_eq!(
            c(554, "5.7.1 message looks like spam").reason,
            Reason::SpamDetected
        );
        assert_eq!(c(550, "5.1.2 bad destination").reason, Reason::HostUnknown);
        assert_eq!(
            c(550, "5.1.2 domain does not exist").reason,
            Reason::HostUnknown
        );
        assert_eq!(c(451, "4.7.1 try again later").class, BounceClass::Soft);
    }
}
