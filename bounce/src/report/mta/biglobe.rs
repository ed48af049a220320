//! BIGLOBE: "----- The following addresses had delivery problems -----", the
//! addresses, then "----- Non-delivered information -----" and the reason.

use super::{Delivery, Parsed, finish, leading_address};
use crate::report::mail::Mail;

pub(super) fn parse(mail: &Mail) -> Option<Parsed> {
    if super::has_dsn_recipients(mail) || !mail.mentions(&["----- Non-delivered information -----"])
    {
        return None;
    }
    let addresses = super::after_marker(
        &mail.text,
        &["----- The following addresses had delivery problems -----"],
    )?;
    let addresses = super::before_marker(addresses, &["----- Non-delivered information -----"]);
    let info =
        super::after_marker(&mail.text, &["----- Non-delivered information -----"]).unwrap_or("");
    let info = super::squash(info);
    let deliveries = addresses
        .lines()
        .filter_map(leading_address)
        .map(|recipient| Delivery {
            recipient,
            diagnostic: info.clone(),
            ..Delivery::default()
        })
        .collect();
    finish(deliveries, None)
}
