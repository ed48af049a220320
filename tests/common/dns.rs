//! An authoritative DNS server in the test process (hickory-server, UDP and TCP on one
//! port of 127.0.0.1) for a zone whose records a test publishes while it runs, the way
//! a tenant publishes its sending domain's records. Negative answers are not cached
//! (the zone's minimum TTL is 0), so a record is seen as soon as it is published.

use hickory_server::ServerFuture;
use hickory_server::authority::{AuthorityObject, Catalog, ZoneType};
use hickory_server::proto::rr::rdata::{CNAME, MX, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::store::in_memory::InMemoryAuthority;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

/// A running zone; the server stops when this is dropped.
pub struct Zone {
    pub addr: SocketAddr,
    authority: Arc<InMemoryAuthority>,
    serial: AtomicU32,
    _server: ServerFuture<Catalog>,
}

fn name(s: &str) -> Name {
    let mut n = Name::from_str(s).expect("valid name");
    n.set_fqdn(true);
    n
}

impl Zone {
    /// Serves the empty zone `origin` (e.g. `beta-shop.example`).
    pub async fn start(origin: &str) -> Zone {
        let origin = name(origin);
        let mut authority = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
        let soa = SOA::new(
            name(&format!("ns.{origin}")),
            name(&format!("hostmaster.{origin}")),
            1,
            3600,
            600,
            86_400,
            0,
        );
        authority.upsert_mut(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1);
        let authority = Arc::new(authority);
        let mut catalog = Catalog::new();
        let object: Arc<dyn AuthorityObject> = authority.clone();
        catalog.upsert(LowerName::from(origin), vec![object]);
        let mut server = ServerFuture::new(catalog);
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("udp address");
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10));
        Zone {
            addr,
            authority,
            serial: AtomicU32::new(2),
            _server: server,
        }
    }

    /// Publishes a TXT record at `owner` made of `strings` (one record; a long value
    /// is published as several strings of at most 255 bytes, as DNS requires).
    pub async fn publish_txt(&self, owner: &str, strings: Vec<String>) {
        let record = Record::from_rdata(name(owner), 0, RData::TXT(TXT::new(strings)));
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        assert!(self.authority.upsert(record, serial).await, "published");
    }

    /// Publishes `MX 10 exchange` at `owner`.
    pub async fn publish_mx(&self, owner: &str, exchange: &str) {
        let record = Record::from_rdata(name(owner), 0, RData::MX(MX::new(10, name(exchange))));
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        assert!(self.authority.upsert(record, serial).await, "published");
    }

    /// Publishes `CNAME target` at `owner`.
    pub async fn publish_cname(&self, owner: &str, target: &str) {
        let record = Record::from_rdata(name(owner), 0, RData::CNAME(CNAME(name(target))));
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        assert!(self.authority.upsert(record, serial).await, "published");
    }

    /// Publishes `value` at `owner`, split into strings of 255 bytes.
    pub async fn publish(&self, owner: &str, value: &str) {
        let strings = value
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8(c.to_vec()).expect("ASCII record"))
            .collect();
        self.publish_txt(owner, strings).await;
    }
}

/// A UDP socket and a TCP listener on the same free port of 127.0.0.1.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let addr = udp.local_addr().expect("udp address");
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP");
}
