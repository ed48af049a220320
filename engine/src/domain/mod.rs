//! Domain types. Each is built only through a parser, so a value is valid by construction.

pub mod address;
pub mod campaign;
pub mod event;
pub mod ids;
pub mod recipient;
pub mod stats;
