//! SMTP replies and the bounce-reason vocabulary: what a receiving server answered
//! ([`SmtpReply`], with its RFC 3463 [`EnhancedStatus`]) and why a message bounced
//! ([`Reason`], in Sisimai's vocabulary, each in a coarse [`Category`] for reporting).
//!
//! Synchronous replies and asynchronous reports speak this same language. Deciding a
//! reply's reason (rules on its text, its enhanced status, its code) and reading
//! delivery reports is the `maily-bounce` crate's work.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

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
///
/// The last three are not failures: the bounce analyser (`maily_bounce::report::analyse`)
/// names with them a delivery report's successful recipients, a complaint and an
/// automatic reply, as Sisimai does.
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
    /// The sending IP address has a bad reputation.
    BadReputation,
    /// The report says too little to decide.
    OnHold,
    Undefined,
    /// Delivered (a positive delivery status notification).
    Delivered,
    /// A complaint (ARF feedback report).
    Feedback,
    /// An automatic reply (RFC 3834), such as an out-of-office message.
    Vacation,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Reason; 35] = {
        use Reason::*;
        [
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
            BadReputation,
            OnHold,
            Undefined,
            Delivered,
            Feedback,
            Vacation,
        ]
    };

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
            BadReputation => "badreputation",
            OnHold => "onhold",
            Undefined => "undefined",
            Delivered => "delivered",
            Feedback => "feedback",
            Vacation => "vacation",
        }
    }

    /// Whether a permanent failure for this reason means the address itself is dead
    /// (Sisimai's rule: the mailbox or its domain does not exist, or moved, or the
    /// domain accepts no mail).
    pub fn is_hard(&self) -> bool {
        matches!(
            self,
            Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved | Reason::NotAccept
        )
    }

    /// The coarse category the reason falls into.
    pub fn category(&self) -> Category {
        use Reason::*;
        match self {
            UserUnknown | HasMoved | Suspend => Category::BadMailbox,
            MailboxFull => Category::Quota,
            Blocked | BadReputation | SpamDetected | VirusDetected | Filtered => {
                Category::SpamBlock
            }
            PolicyViolation | Rejected | SecurityError | AuthFailure | RequirePtr
            | NotCompliantRfc | NoRelaying | Speeding | TooManyConn => Category::Policy,
            HostUnknown | NotAccept => Category::Dns,
            FailedStartTls => Category::Tls,
            Expired | MesgTooBig | ExceedLimit | NetworkError | SystemError | SystemFull
            | SyntaxError | ContentError | MailerError | OnHold | Undefined | Delivered
            | Feedback | Vacation => Category::Other,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of Sisimai's reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a bounce reason (expected one of Sisimai's, e.g. userunknown, mailboxfull, blocked)"
)]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    /// Parses a reason as Sisimai spells it, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownReason(s.to_string()))
    }
}

/// A coarse grouping of reasons for dashboards and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// The mailbox does not exist, moved or is disabled.
    BadMailbox,
    /// The mailbox is full.
    Quota,
    /// Block lists, reputation, spam and virus filters.
    SpamBlock,
    /// The receiver's policy: authentication, reverse DNS, rates, relaying, sender rejected.
    Policy,
    /// The destination domain does not exist or accepts no mail.
    Dns,
    /// TLS was required or failed.
    Tls,
    /// Everything else: size, network, system and unexplained failures.
    Other,
}

impl Category {
    /// The category's name: `bad-mailbox`, `quota`, `spam-block`, `policy`, `dns`,
    /// `tls` or `other`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Category::BadMailbox => "bad-mailbox",
            Category::Quota => "quota",
            Category::SpamBlock => "spam-block",
            Category::Policy => "policy",
            Category::Dns => "dns",
            Category::Tls => "tls",
            Category::Other => "other",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
        }

        #[test]
        fn arbitrary_lines_never_panic(lines in proptest::collection::vec("\\PC{0,20}", 0..4)) {
            let _ = SmtpReply::parse_lines(&lines);
            for l in &lines {
                let _ = EnhancedStatus::parse(l);
            }
        }
    }

    #[test]
    fn reasons_parse_back_and_fall_into_categories() {
        let names: std::collections::BTreeSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(r));
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.as_str())
            );
        }
        assert_eq!("UserUnknown".parse::<Reason>(), Ok(Reason::UserUnknown));
        assert!("nope".parse::<Reason>().is_err());
        assert_eq!(Reason::UserUnknown.category(), Category::BadMailbox);
        assert_eq!(Reason::MailboxFull.category(), Category::Quota);
        assert_eq!(Reason::Blocked.category(), Category::SpamBlock);
        assert_eq!(Reason::AuthFailure.category(), Category::Policy);
        assert_eq!(Reason::HostUnknown.category(), Category::Dns);
        assert_eq!(Reason::FailedStartTls.category(), Category::Tls);
        assert_eq!(Reason::Undefined.category(), Category::Other);
        assert_eq!(Category::SpamBlock.to_string(), "spam-block");
        assert_eq!(
            serde_json::to_string(&Category::BadMailbox).unwrap(),
            "\"bad-mailbox\""
        );
    }
}
