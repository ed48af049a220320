//! Integration tests: the transport against the sink and against hand-written
//! servers, and the sink against a raw client. Each test has its own port-0 listeners.

mod limits;
mod raw_servers;
mod sink;
mod support;
mod tls;
mod transport;
