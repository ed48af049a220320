//! Content-filtering gateways that accept a message, then refuse it and send a DSN:
//! McAfee Email Gateway (`X-NAI-Header`), SurfControl (`X-Mailer: SurfControl`) and
//! MXLogic (an Exim bounce from `mxlogic.net`). A "no such user" from them comes after
//! the message was sent, so it is the gateway's refusal, not a verdict on the address.

use super::{Parsed, contains_any};
use crate::report::mail::Mail;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    let mcafee = mail.header("x-nai-header").contains("McAfee");
    let surfcontrol = mail.header("x-mailer").contains("SurfControl");
    let mxlogic = contains_any(mail.header("from"), &["mxlogic.net"])
        || mail
            .headers
            .get_all("received")
            .any(|r| r.contains("mxl_mta"));
    let mut parsed = if mcafee || surfcontrol {
        super::rfc3464::parse(mail)?
    } else if mxlogic {
        super::exim::parse(mail)?
    } else {
        return None;
    };
    super::after_acceptance(&mut parsed.deliveries);
    Some(parsed)
}
