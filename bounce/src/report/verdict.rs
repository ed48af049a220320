//! From what a report says about one recipient to a verdict: the reason, the status
//! (a pseudo status when the report gives none), the reply code and hard or soft.
//!
//! The order of evidence follows Sisimai, whose vocabulary this is:
//!
//! 1. a successful status or action: `delivered`;
//! 2. the reason a format read from its own wording;
//! 3. the bounce rules ([`Rules`], `bounce/src/rules.toml`) on the error text,
//!    constrained by reply code and status;
//! 4. the enhanced status code ([`reason_from_status`]);
//! 5. what is left: a mailer program's exit (`mailererror`), a delay (`expired`), a
//!    refused greeting (`blocked`), a content or security status class, and finally
//!    `onhold` when there is an error text nobody could read, `undefined` when not.
//!
//! A reason from the rules or the status is then weighed against the SMTP command it
//! answered ([`settle`]): the same "user unknown" means a dead address at RCPT TO and
//! a filter's refusal after DATA.
//!
//! Hard means the address itself is dead (Sisimai's rule): `userunknown`,
//! `hostunknown` and `hasmoved` always, `notaccept` when permanent.

use super::Action;
use super::mta::{Delivery, SmtpCommand};
use crate::classify::reason_from_status;
use crate::rules::Rules;
use maily_engine::reply::{EnhancedStatus, Reason, SmtpReply};

/// The verdict on one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub reason: Reason,
    pub status: Option<EnhancedStatus>,
    /// The status is Sisimai's pseudo code for the reason (`5.0.9xx`, `4.0.9xx`):
    /// the report gave none.
    pub pseudo_status: bool,
    pub reply_code: Option<u16>,
    pub hard: bool,
}

/// Judges one recipient of a report with `rules`.
pub(crate) fn judge(d: &Delivery, rules: &Rules) -> Verdict {
    // Of the statuses the text gives, one that adds to the report's own.
    let in_text = super::mta::find_statuses(&d.diagnostic);
    let text_status = in_text
        .iter()
        .copied()
        .find(|s| Some(*s) != d.status)
        .or(in_text.first().copied());
    let reply_code = d
        .reply_code
        .or_else(|| super::mta::find_reply_code(&d.diagnostic));
    let status = prefer_status(d.status, text_status, reply_code);
    let reason = reason(d, status, reply_code, rules);
    let (status, pseudo_status) = match status {
        Some(s) => (Some(s), false),
        None => (pseudo(reason, temporary(d, reply_code)), true),
    };
    let hard = is_hard(reason, status, reply_code);
    Verdict {
        reason,
        status,
        pseudo_status,
        reply_code,
        hard,
    }
}

/// The status to keep when the report's field and the error text disagree: the one
/// whose class matches the reply code; else the field, unless it says less than the
/// text (a bare class `x.0.0`, a `x.y.0` against a precise code) or is one of the
/// codes servers use for anything (`4.4.7`, `4.7.0`, `5.3.x`, `x.5.x` protocol codes).
fn prefer_status(
    given: Option<EnhancedStatus>,
    in_text: Option<EnhancedStatus>,
    code: Option<u16>,
) -> Option<EnhancedStatus> {
    let (g, t) = match (given, in_text) {
        (None, t) => return t,
        (g, None) => return g,
        (Some(g), Some(t)) => (g, t),
    };
    if g.class != t.class
        && let Some(c) = code
    {
        let first = (c / 100) as u8;
        if first == g.class {
            return Some(g);
        }
        if first == t.class {
            return Some(t);
        }
    }
    if g == t {
        return Some(g);
    }
    let bare = |s: EnhancedStatus| s.subject == 0 && s.detail == 0;
    let has_zero = |s: EnhancedStatus| s.subject == 0 || s.detail == 0;
    if bare(g) {
        return Some(if bare(t) { g } else { t });
    }
    if has_zero(g) && !has_zero(t) {
        return Some(t);
    }
    if bare(t) {
        return Some(g);
    }
    let vague = matches!(
        (g.class, g.subject, g.detail),
        (4, 4, 7) | (4, 7, 0) | (5, 3, _)
    ) || (g.subject == 5 && matches!(g.detail, 1 | 2 | 4 | 5));
    if vague {
        return Some(t);
    }
    match (g.class, g.subject, g.detail) {
        (5, 1, 1) if !(has_zero(t) || (t.class == 5 && t.subject == 5)) => Some(t),
        (5, 1, 3) if t.class == 5 && t.subject == 7 => Some(t),
        _ => Some(g),
    }
}

fn reason(
    d: &Delivery,
    status: Option<EnhancedStatus>,
    code: Option<u16>,
    rules: &Rules,
) -> Reason {
    if d.action == Some(Action::Delivered) || status.is_some_and(|s| s.class == 2) {
        return Reason::Delivered;
    }
    if let Some(r) = d.reason {
        return r;
    }
    // A local delivery program (procmail, a pipe) failed: whatever it printed.
    if d.diagnostic_type
        .as_deref()
        .is_some_and(|t| t.starts_with("x-unix"))
    {
        return Reason::MailerError;
    }
    let reply = SmtpReply {
        code: code.unwrap_or(match status.map(|s| s.class) {
            Some(4) => 450,
            _ => 550,
        }),
        enhanced: status,
        text: plain_words(&d.diagnostic),
    };
    if !reply.text.is_empty()
        && let Some(rule) = rules.find(&reply)
    {
        return settle(rule.reason, d, status, true);
    }
    if let Some(r) = status.and_then(reason_from_status) {
        return settle(r, d, status, false);
    }
    if d.diagnostic_type
        .as_deref()
        .is_some_and(|t| t.starts_with("x-unix"))
    {
        return Reason::MailerError;
    }
    if let Some(s) = status {
        match s.subject {
            6 => return Reason::ContentError,
            7 => return Reason::SecurityError,
            _ => {}
        }
    }
    if d.action == Some(Action::Delayed) {
        return Reason::Expired;
    }
    if matches!(
        d.command,
        Some(SmtpCommand::Helo | SmtpCommand::Ehlo | SmtpCommand::Connect)
    ) {
        return Reason::Blocked;
    }
    if d.diagnostic.trim().is_empty() {
        Reason::Undefined
    } else {
        Reason::OnHold
    }
}

/// A reason read from wording, weighed against the SMTP stage it was given at and
/// the status:
/// - "no such user" is about the address when the status says so or it answered
///   RCPT TO; given after the message was sent (at DATA or later), or with a status
///   of a refused mailbox (`5.2.x`) or of a policy (`x.7.x`), it is a filter's
///   refusal of the message;
/// - a refusal of the sender (at MAIL FROM) is not about the recipient's mailbox or
///   domain (`worded`: the reason came from the text rather than the status);
/// - a refusal of the connection or the greeting is a block, whatever it says about
///   mailboxes.
fn settle(reason: Reason, d: &Delivery, status: Option<EnhancedStatus>, worded: bool) -> Reason {
    use Reason::*;
    let by_status = status.and_then(reason_from_status);
    match (reason, d.command) {
        (UserUnknown | HostUnknown | Filtered | Suspend, Some(SmtpCommand::Mail)) => Rejected,
        // A bare security status at MAIL FROM refused the sender; a worded one (an
        // authentication requirement) says more.
        (SecurityError, Some(SmtpCommand::Mail)) if !worded => Rejected,
        (
            UserUnknown | MailboxFull | Filtered | Suspend | ExceedLimit | HostUnknown,
            Some(SmtpCommand::Connect | SmtpCommand::Helo | SmtpCommand::Ehlo),
        ) => Blocked,
        (UserUnknown, command) => {
            let after_data = matches!(command, Some(SmtpCommand::Data | SmtpCommand::Body));
            let refused_by_status =
                by_status == Some(Filtered) || status.is_some_and(|s| s.subject == 7);
            if by_status == Some(UserUnknown) || command == Some(SmtpCommand::Rcpt) {
                UserUnknown
            } else if after_data || refused_by_status {
                Filtered
            } else {
                UserUnknown
            }
        }
        _ => reason,
    }
}

/// The error text as rules read it: addresses, URLs and the reply codes and status
/// codes repeated on each line of a multi-line reply left out (addresses and URLs are
/// names, not wording; the codes would split phrases).
fn plain_words(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| !(w.contains('@') || w.contains("://") || w.starts_with("www.")))
        .filter(|w| !is_code(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `550`, `550-5.7.1`, `5.7.1`, `#5.7.1`, `(#5.7.1)`.
fn is_code(word: &str) -> bool {
    let w = word.trim_matches(|c: char| matches!(c, '(' | ')' | '#' | '[' | ']' | ',' | ':' | ';'));
    let (code, rest) = match w.split_once('-') {
        Some((c, r)) => (c, Some(r)),
        None => (w, None),
    };
    let reply = code.len() == 3
        && code.bytes().all(|b| b.is_ascii_digit())
        && matches!(code.as_bytes()[0], b'2'..=b'5');
    match rest {
        Some(r) => reply && (r.is_empty() || EnhancedStatus::parse(r).is_some()),
        None => reply || EnhancedStatus::parse(w.trim_end_matches('.')).is_some(),
    }
}

/// Whether the failure is temporary: a 4xx status or reply code in the error text,
/// or its words say so.
fn temporary(d: &Delivery, code: Option<u16>) -> bool {
    let in_text = super::mta::find_status(&d.diagnostic).map(|s| s.class);
    match in_text.or(code.map(|c| (c / 100) as u8)) {
        Some(4) => true,
        Some(_) => false,
        None => {
            let lower = d.diagnostic.to_ascii_lowercase();
            lower.contains(" temporar") || lower.contains(" persistent")
        }
    }
}

/// Sisimai's rule for hard bounces.
fn is_hard(reason: Reason, status: Option<EnhancedStatus>, code: Option<u16>) -> bool {
    match reason {
        Reason::UserUnknown | Reason::HostUnknown | Reason::HasMoved => true,
        Reason::NotAccept => match (status, code) {
            (Some(s), _) => s.class == 5,
            (None, Some(c)) => c >= 500,
            (None, None) => true,
        },
        _ => false,
    }
}

/// Sisimai's pseudo status for a reason the report gave no status for.
fn pseudo(reason: Reason, temporary: bool) -> Option<EnhancedStatus> {
    use Reason::*;
    let detail = match reason {
        Undefined => 900,
        OnHold => 901,
        SyntaxError => 902,
        NoRelaying => 909,
        Filtered if temporary => 924,
        Filtered => 910,
        UserUnknown if !temporary => 911,
        HostUnknown if !temporary => 912,
        HasMoved if !temporary => 916,
        Rejected => 918,
        Suspend => 921,
        MailboxFull => 922,
        ExceedLimit => 923,
        AuthFailure => 926,
        SystemError => 930,
        SystemFull => 931,
        NotAccept => 932,
        MesgTooBig => 934,
        MailerError => 939,
        NetworkError => 944,
        TooManyConn => 945,
        Speeding => 946,
        Expired => 947,
        ContentError => 960,
        SecurityError => 970,
        Blocked => 971,
        PolicyViolation => 972,
        RequirePtr => 973,
        NotCompliantRfc => 974,
        BadReputation => 975,
        FailedStartTls => 976,
        SpamDetected => 980,
        VirusDetected => 981,
        UserUnknown | HostUnknown | HasMoved | Delivered | Feedback | Vacation => return None,
    };
    Some(EnhancedStatus {
        class: if temporary { 4 } else { 5 },
        subject: 0,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(status: &str, text: &str) -> Delivery {
        Delivery {
            recipient: "a@b.example".into(),
            action: Some(Action::Failed),
            status: EnhancedStatus::parse(status),
            diagnostic: text.into(),
            ..Delivery::default()
        }
    }

    #[test]
    fn rules_then_status_then_fallbacks() {
        let rules = Rules::defaults();
        let v = judge(&delivery("5.1.1", "550 5.1.1 user unknown"), rules);
        assert_eq!(
            (v.reason, v.hard, v.reply_code),
            (Reason::UserUnknown, true, Some(550))
        );
        let v = judge(&delivery("5.2.2", ""), rules);
        assert_eq!((v.reason, v.hard), (Reason::MailboxFull, false));
        let v = judge(&delivery("", "something nobody can read"), rules);
        assert_eq!(v.reason, Reason::OnHold);
        assert_eq!(v.status.unwrap().to_string(), "5.0.901");
        assert!(v.pseudo_status);
        let v = judge(&delivery("2.1.5", "250 ok"), rules);
        assert_eq!(v.reason, Reason::Delivered);
    }

    #[test]
    fn notaccept_is_hard_only_when_permanent() {
        assert!(is_hard(
            Reason::NotAccept,
            EnhancedStatus::parse("5.1.10"),
            None
        ));
        assert!(!is_hard(
            Reason::NotAccept,
            EnhancedStatus::parse("4.3.2"),
            None
        ));
        assert!(!is_hard(
            Reason::MailboxFull,
            EnhancedStatus::parse("5.2.2"),
            None
        ));
    }

    #[test]
    fn a_bare_class_status_gives_way_to_the_texts() {
        let v = judge(
            &delivery("5.0.0", "550 5.1.1 <a@b.example>... User unknown"),
            Rules::defaults(),
        );
        assert_eq!(v.status.unwrap().to_string(), "5.1.1");
    }
}
