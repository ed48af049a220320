//! fml, the mailing list manager: a post from an address that is not a member is
//! refused ("You are not a member of this mailing list <list>").

use super::{Delivery, Parsed, find_address, finish};
use crate::report::mail::Mail;
use maily_engine::reply::Reason;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail)
        || !mail.mentions(&["You are not a member of this mailing list"])
    {
        return None;
    }
    let line = mail
        .text
        .lines()
        .find(|l| l.contains("not a member of this mailing list"))?;
    let list = find_address(line)?;
    finish(
        vec![Delivery {
            recipient: list,
            diagnostic: super::squash(line),
            reason: Some(Reason::Rejected),
            ..Delivery::default()
        }],
        None,
    )
}
