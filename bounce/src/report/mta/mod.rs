//! Bounce formats: one module per family of reporting MTA or mailbox provider.
//!
//! Each module exposes `parse(&Mail) -> Option<Parsed>`: `None` when the message is not
//! in its format (decided from the sender, the subject and the wording of the text),
//! else what the message says about each recipient. [`FORMATS`] lists them in the
//! order they are tried; the first that recognises a message reads it. Adding a format
//! is one module and one line in that list.
//!
//! Formats only read; they do not classify. What they read ([`Delivery`]) goes to
//! [`super::verdict`], which decides the reason the same way for every format. A
//! format names the reason itself ([`Delivery::reason`]) only where its own wording
//! is the reason (Gmail giving up on a server that never answered, Lotus Notes'
//! "not listed in Domino Directory", au's "The user(s) account is disabled"). The
//! helpers they share are in [`text`].

use super::Action;
use super::mail::Mail;
use maily_engine::reply::{EnhancedStatus, Reason};
use serde::{Deserialize, Serialize};

use text::{
    Layout, after_acceptance, after_marker, before_marker, command_word, contains_any,
    find_command, finish, from_daemon, has_dsn_recipients, leading_address, paragraphs, squash,
};
pub(crate) use text::{find_address, find_reply_code, find_status, find_statuses, is_address};

mod amazonses;
mod apachejames;
mod biglobe;
mod dragonfly;
mod exchange2003;
mod exim;
mod ezweb;
mod fml;
mod gateways;
mod generic;
mod gmail;
mod googlegroups;
mod imailserver;
mod kddi;
mod mailfoundry;
mod mfilter;
mod notes;
mod opensmtpd;
mod postfix;
mod qmail;
mod rfc3464;
mod sendmail;
mod text;
mod verizon;
mod x1;
mod x2;
mod x3;
mod x6;
mod zoho;

/// The SMTP command a failure answered, when the report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SmtpCommand {
    /// The greeting, before any command.
    Connect,
    Helo,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    /// The end of the message data (`.`), or BDAT.
    Body,
}

impl SmtpCommand {
    /// The command as it is written on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            SmtpCommand::Connect => "CONN",
            SmtpCommand::Helo => "HELO",
            SmtpCommand::Ehlo => "EHLO",
            SmtpCommand::StartTls => "STARTTLS",
            SmtpCommand::Auth => "AUTH",
            SmtpCommand::Mail => "MAIL",
            SmtpCommand::Rcpt => "RCPT",
            SmtpCommand::Data => "DATA",
            SmtpCommand::Body => "BODY",
        }
    }
}

/// What one report says about one recipient, before classification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// The recipient as the report writes it (angle brackets and address type removed).
    pub recipient: String,
    pub action: Option<Action>,
    /// The RFC 3463 status the report gives.
    pub status: Option<EnhancedStatus>,
    pub reply_code: Option<u16>,
    /// The error text: the remote server's reply or the reporting MTA's own words.
    pub diagnostic: String,
    /// The `Diagnostic-Code` type, lower case (`smtp`, `x-unix`, `x-postfix`...).
    pub diagnostic_type: Option<String>,
    pub remote_host: Option<String>,
    pub command: Option<SmtpCommand>,
    /// The reason, when the format's own wording decides it.
    pub reason: Option<Reason>,
    /// A comment after the Status field's code, kept until it joins the diagnostic.
    pub status_comment: Option<String>,
}

/// What a format read from a message.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub deliveries: Vec<Delivery>,
    /// The text of the returned message when it is inline (after a marker line) rather
    /// than a MIME part.
    pub original: Option<String>,
}

/// A format: its name and its parser.
pub(crate) struct Format {
    pub name: &'static str,
    pub parse: fn(&Mail) -> Option<Parsed>,
}

/// Every format, in the order they are tried: formats recognised by specific markers
/// first, the standard DSN next, the plain-text fallback last.
pub(crate) const FORMATS: &[Format] = &[
    Format {
        name: "amazonses",
        parse: amazonses::parse,
    },
    Format {
        name: "gateways",
        parse: gateways::parse,
    },
    Format {
        name: "googlegroups",
        parse: googlegroups::parse,
    },
    Format {
        name: "gmail",
        parse: gmail::parse,
    },
    Format {
        name: "qmail",
        parse: qmail::parse,
    },
    Format {
        name: "x2",
        parse: x2::parse,
    },
    Format {
        name: "dragonfly",
        parse: dragonfly::parse,
    },
    Format {
        name: "exim",
        parse: exim::parse,
    },
    Format {
        name: "opensmtpd",
        parse: opensmtpd::parse,
    },
    Format {
        name: "sendmail",
        parse: sendmail::parse,
    },
    Format {
        name: "postfix",
        parse: postfix::parse,
    },
    Format {
        name: "exchange2003",
        parse: exchange2003::parse,
    },
    Format {
        name: "ezweb",
        parse: ezweb::parse,
    },
    Format {
        name: "x3",
        parse: x3::parse,
    },
    Format {
        name: "mfilter",
        parse: mfilter::parse,
    },
    Format {
        name: "zoho",
        parse: zoho::parse,
    },
    Format {
        name: "notes",
        parse: notes::parse,
    },
    Format {
        name: "kddi",
        parse: kddi::parse,
    },
    Format {
        name: "imailserver",
        parse: imailserver::parse,
    },
    Format {
        name: "x6",
        parse: x6::parse,
    },
    Format {
        name: "x1",
        parse: x1::parse,
    },
    Format {
        name: "mailfoundry",
        parse: mailfoundry::parse,
    },
    Format {
        name: "verizon",
        parse: verizon::parse,
    },
    Format {
        name: "fml",
        parse: fml::parse,
    },
    Format {
        name: "biglobe",
        parse: biglobe::parse,
    },
    Format {
        name: "apachejames",
        parse: apachejames::parse,
    },
    Format {
        name: "rfc3464",
        parse: rfc3464::parse,
    },
    Format {
        name: "generic",
        parse: generic::parse,
    },
];
