//! `MxResolver` and `RoutingResolver` against a real DNS server: an authoritative
//! hickory-server with an in-memory zone, on 127.0.0.1 (UDP and TCP, one port), started
//! in each test. Nothing here reaches a DNS server outside this process.

use async_trait::async_trait;
use hickory_server::ServerFuture;
use hickory_server::authority::{AuthorityObject, Catalog, MessageResponseBuilder, ZoneType};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryAuthority;
use maily_engine::ports::{ResolveError, Resolver, Route};
use maily_smtp::{
    MxError, MxOptions, MxResolver, RoutingResolver, SinkConfig, SmtpSink, StaticRoutes,
};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Guards against a hung peer; never a pass/fail threshold.
const GUARD: Duration = Duration::from_secs(20);
/// The port routes get in these tests, so a port-25 default cannot pass by accident.
const PORT: u16 = 2525;
const TTL: u32 = 300;
/// MX records of `many.test`.
const MANY: u16 = 30;

fn name(s: &str) -> Name {
    Name::from_str(s).expect("valid test name")
}

/// A route a domain's MX (or address) gave: public addresses only.
fn route(host: &str) -> Route {
    Route {
        host: host.into(),
        port: PORT,
        public_only: true,
    }
}

/// The test zone `test.`: one name per case.
fn zone() -> InMemoryAuthority {
    let origin = name("test.");
    let mut zone = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
    let soa = SOA::new(
        name("ns.test."),
        name("hostmaster.test."),
        1,
        3600,
        600,
        86_400,
        60,
    );
    let records = [
        Record::from_rdata(origin, TTL, RData::SOA(soa)),
        // Two MX at different preferences, the less preferred listed first.
        mx("example.test.", 20, "mx2.example.test."),
        mx("example.test.", 10, "mx1.example.test."),
        // Two MX of equal preference and a backup.
        mx("equal.test.", 10, "a.equal.test."),
        mx("equal.test.", 10, "b.equal.test."),
        mx("equal.test.", 30, "backup.equal.test."),
        // No MX: the implicit MX is the domain itself.
        Record::from_rdata(
            name("nomx.test."),
            TTL,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        ),
        Record::from_rdata(
            name("v6only.test."),
            TTL,
            RData::AAAA(AAAA(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
        ),
        // Exists, but with neither MX nor address.
        Record::from_rdata(
            name("noaddr.test."),
            TTL,
            RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
        ),
        // A tracking host's alias, and a long TXT record in two strings.
        Record::from_rdata(
            name("track.shop.test."),
            TTL,
            RData::CNAME(CNAME(name("t.maily.example."))),
        ),
        Record::from_rdata(
            name("_maily.shop.test."),
            TTL,
            RData::TXT(TXT::new(vec!["maily-verification=".into(), "0123".into()])),
        ),
        // RFC 7505 null MX.
        mx("nullmx.test.", 0, "."),
        // An MX host that resolves on this machine without DNS (/etc/hosts).
        mx("deliver.test.", 10, "localhost."),
    ];
    // More MX than fit the 1232-byte EDNS payload the resolver offers: the answer
    // comes truncated over UDP, then whole over TCP.
    let many = (0..MANY).map(|i| {
        mx(
            "many.test.",
            i,
            &format!("a-rather-long-mail-exchanger-name-number-{i:02}.many.test."),
        )
    });
    for record in records.into_iter().chain(many) {
        assert!(zone.upsert_mut(record, 1), "record added");
    }
    zone
}

fn mx(owner: &str, preference: u16, exchange: &str) -> Record {
    Record::from_rdata(
        name(owner),
        TTL,
        RData::MX(MX::new(preference, name(exchange))),
    )
}

/// The zone, except that `servfail.test` answers SERVFAIL (a broken server upstream).
struct Handler {
    catalog: Catalog,
    servfail: LowerName,
}

#[async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let fails = request
            .request_info()
            .is_ok_and(|info| info.query.name() == &self.servfail);
        if !fails {
            return self.catalog.handle_request(request, response_handle).await;
        }
        let response = MessageResponseBuilder::from_message_request(request)
            .error_msg(request.header(), ResponseCode::ServFail);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => panic!("test DNS server could not answer: {e}"),
        }
    }
}

/// A running test DNS server; it stops when dropped.
struct DnsServer {
    addr: SocketAddr,
    server: ServerFuture<Handler>,
}

impl DnsServer {
    async fn start() -> Self {
        let mut catalog = Catalog::new();
        let zone: Arc<dyn AuthorityObject> = Arc::new(zone());
        catalog.upsert(LowerName::from(name("test.")), vec![zone]);
        let mut server = ServerFuture::new(Handler {
            catalog,
            servfail: LowerName::from(name("servfail.test.")),
        });
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("udp address");
        server.register_socket(udp);
        server.register_listener(tcp, GUARD);
        DnsServer { addr, server }
    }

    async fn stop(mut self) {
        self.server
            .shutdown_gracefully()
            .await
            .expect("test DNS server stops");
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

fn options() -> MxOptions {
    MxOptions {
        port: PORT,
        timeout: Some(Duration::from_secs(2)),
        attempts: Some(1),
        ..MxOptions::default()
    }
}

fn resolver(dns: &DnsServer) -> MxResolver {
    MxResolver::with_nameservers_and_options(&[dns.addr], &options())
}

#[tokio::test]
async fn mx_hosts_come_lowest_preference_first_on_the_configured_port() {
    let dns = DnsServer::start().await;
    let resolver = MxResolver::with_nameservers(&[dns.addr], PORT);
    assert_eq!(resolver.port(), PORT);
    assert_eq!(
        resolver.resolve("example.test").await,
        Ok(vec![route("mx1.example.test"), route("mx2.example.test")])
    );
    assert_eq!(
        resolver.resolve("EXAMPLE.Test.").await,
        Ok(vec![route("mx1.example.test"), route("mx2.example.test")]),
        "case and a trailing dot do not matter"
    );
}

#[tokio::test]
async fn an_answer_too_large_for_udp_comes_over_tcp() {
    let dns = DnsServer::start().await;
    let routes = resolver(&dns).resolve("many.test").await.expect("routes");
    assert_eq!(routes.len(), usize::from(MANY));
    assert_eq!(
        routes[0],
        route("a-rather-long-mail-exchanger-name-number-00.many.test")
    );
}

#[tokio::test]
async fn the_default_port_is_25() {
    let dns = DnsServer::start().await;
    let resolver = MxResolver::with_nameservers_and_options(&[dns.addr], &MxOptions::default());
    let routes = resolver.resolve("example.test").await.expect("routes");
    assert!(routes.iter().all(|r| r.port == 25), "{routes:?}");
}

#[tokio::test]
async fn equal_preferences_come_in_random_order_per_lookup() {
    let dns = DnsServer::start().await;
    let resolver = resolver(&dns);
    let mut orders = HashSet::new();
    // Answers come from hickory's cache after the first query; the order is drawn
    // on each lookup. The chance of one order 64 times running is 2^-63.
    for _ in 0..64 {
        let routes = resolver.resolve("equal.test").await.expect("routes");
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[2], route("backup.equal.test"));
        let first_two: HashSet<_> = routes[..2].iter().map(|r| r.host.clone()).collect();
        assert_eq!(
            first_two,
            HashSet::from(["a.equal.test".to_string(), "b.equal.test".to_string()])
        );
        orders.insert(routes[0].host.clone());
    }
    assert_eq!(orders.len(), 2, "both orders seen: {orders:?}");
}

#[tokio::test]
async fn a_domain_without_mx_is_its_own_host_when_it_has_an_address() {
    let dns = DnsServer::start().await;
    let resolver = resolver(&dns);
    assert_eq!(
        resolver.resolve("nomx.test").await,
        Ok(vec![route("nomx.test")]),
        "A record"
    );
    assert_eq!(
        resolver.resolve("v6only.test").await,
        Ok(vec![route("v6only.test")]),
        "AAAA record"
    );
    assert_eq!(
        resolver.lookup("noaddr.test").await,
        Err(MxError::NoAddress("noaddr.test".into()))
    );
    assert_eq!(
        resolver.resolve("noaddr.test").await,
        Err(ResolveError::NoRoute("noaddr.test".into()))
    );
}

#[tokio::test]
async fn a_null_mx_accepts_no_mail() {
    let dns = DnsServer::start().await;
    let resolver = resolver(&dns);
    let error = resolver.lookup("nullmx.test").await.unwrap_err();
    assert_eq!(error, MxError::NullMx("nullmx.test".into()));
    assert!(error.to_string().contains("accepts no mail"), "{error}");
    assert_eq!(
        resolver.resolve("nullmx.test").await,
        Err(ResolveError::NoRoute("nullmx.test".into()))
    );
}

#[tokio::test]
async fn a_domain_that_does_not_exist_has_no_route() {
    let dns = DnsServer::start().await;
    let resolver = resolver(&dns);
    assert_eq!(
        resolver.lookup("missing.test").await,
        Err(MxError::NoSuchDomain("missing.test".into()))
    );
    assert_eq!(
        resolver.resolve("missing.test").await,
        Err(ResolveError::NoRoute("missing.test".into()))
    );
}

#[tokio::test]
async fn server_failures_are_temporary() {
    let dns = DnsServer::start().await;
    let resolver = resolver(&dns);
    let error = resolver.lookup("servfail.test").await.unwrap_err();
    assert!(
        matches!(&error, MxError::Temporary { record: "MX", reason, .. } if reason.contains("Server Failure")),
        "{error:?}"
    );
    assert!(matches!(
        resolver.resolve("servfail.test").await,
        Err(ResolveError::Temporary { domain, .. }) if domain == "servfail.test"
    ));
    // A name outside the served zone is REFUSED: also a server problem, not an answer.
    // (Not under `.invalid`: hickory answers those NXDOMAIN itself, RFC 6761.)
    let error = resolver.lookup("elsewhere.example").await.unwrap_err();
    assert!(error.is_temporary(), "{error:?}");
}

#[tokio::test]
async fn a_name_server_that_does_not_answer_is_a_temporary_failure() {
    // Bound but never read (UDP) or accepted (TCP): queries go unanswered.
    let (silent_udp, silent_tcp) = bind_pair().await;
    let addr = silent_udp.local_addr().expect("address");
    let resolver = MxResolver::with_nameservers_and_options(
        &[addr],
        &MxOptions {
            timeout: Some(Duration::from_millis(300)),
            attempts: Some(1),
            ..options()
        },
    );
    let started = Instant::now();
    let result = resolver.resolve("example.test").await;
    assert!(
        matches!(&result, Err(ResolveError::Temporary { domain, .. }) if domain == "example.test"),
        "{result:?}"
    );
    assert!(started.elapsed() < GUARD, "took {:?}", started.elapsed());
    drop((silent_udp, silent_tcp));
}

#[tokio::test]
async fn an_invalid_domain_has_no_route() {
    let dns = DnsServer::start().await;
    let resolver = resolver(&dns);
    assert!(matches!(
        resolver.lookup("bad..test").await,
        Err(MxError::BadName { .. })
    ));
    assert_eq!(
        resolver.resolve(".").await,
        Err(ResolveError::NoRoute(".".into()))
    );
}

#[tokio::test]
async fn answers_are_cached() {
    let dns = DnsServer::start().await;
    // Short: the question after the server stops waits this long for nothing.
    let resolver = MxResolver::with_nameservers_and_options(
        &[dns.addr],
        &MxOptions {
            timeout: Some(Duration::from_millis(500)),
            ..options()
        },
    );
    let first = resolver.resolve("example.test").await.expect("routes");
    dns.stop().await;
    assert!(
        resolver
            .lookup("nomx.test")
            .await
            .is_err_and(|e| e.is_temporary()),
        "the server is gone for questions not asked before"
    );
    assert_eq!(
        resolver.resolve("example.test").await,
        Ok(first),
        "answered from hickory's cache within the TTL"
    );
}

#[tokio::test]
async fn static_routes_win_and_dns_routes_the_rest() {
    let dns = DnsServer::start().await;
    let table =
        StaticRoutes::from_entries([("example.test", "relay.internal:587")]).expect("valid table");
    let routing = RoutingResolver::new(table, resolver(&dns));
    assert!(routing.consults_fallback());
    assert_eq!(
        routing.resolve("example.test").await,
        Ok(vec![Route::new("relay.internal", 587)]),
        "the table wins over the domain's MX"
    );
    assert_eq!(
        routing.resolve("equal.test").await.map(|r| r.len()),
        Ok(3),
        "unlisted domains go by MX"
    );
    assert_eq!(
        routing.resolve("missing.test").await,
        Err(ResolveError::NoRoute("missing.test".into()))
    );
}

#[tokio::test]
async fn a_smart_host_means_dns_is_never_asked() {
    // The fallback points at a server that never answers: asking it would fail.
    let (silent_udp, silent_tcp) = bind_pair().await;
    let addr = silent_udp.local_addr().expect("address");
    let table = StaticRoutes::from_entries([("*", "smart.internal:2525")]).expect("valid");
    let routing = RoutingResolver::new(table, MxResolver::with_nameservers(&[addr], PORT));
    assert!(!routing.consults_fallback());
    assert_eq!(
        routing.resolve("example.test").await,
        Ok(vec![Route::new("smart.internal", PORT)])
    );
    drop((silent_udp, silent_tcp));
}

#[tokio::test]
async fn an_mx_route_is_connectable_the_way_the_transport_connects() {
    let sink = SmtpSink::start(SinkConfig::default())
        .await
        .expect("sink starts");
    let dns = DnsServer::start().await;
    let resolver = MxResolver::with_nameservers(&[dns.addr], sink.addr().port());
    let routes = resolver.resolve("deliver.test").await.expect("routes");
    assert_eq!(
        routes,
        vec![Route {
            host: "localhost".into(),
            port: sink.addr().port(),
            public_only: true,
        }]
    );
    // connection.rs connects to (host, port) and lets the system resolve the host.
    let route = &routes[0];
    let stream = tokio::time::timeout(GUARD, TcpStream::connect((route.host.as_str(), route.port)))
        .await
        .expect("connected in time")
        .expect("localhost takes the connection");
    let mut greeting = String::new();
    tokio::time::timeout(GUARD, BufReader::new(stream).read_line(&mut greeting))
        .await
        .expect("greeting in time")
        .expect("greeting");
    assert!(greeting.starts_with("220 "), "{greeting:?}");
    sink.shutdown().await;
}

#[tokio::test]
async fn builds_from_the_system_configuration() {
    // Only built: no lookup goes to the system's name servers from a test.
    let resolver = MxResolver::from_system_conf(&MxOptions::default()).expect("resolv.conf read");
    assert_eq!(resolver.port(), 25);
}

/// A recipient domain whose MX is `localhost` cannot make the engine connect to its
/// own machine: the message bounces with 5.4.4 and the sink there sees nothing. With
/// `allow_private` set by the operator, the same MX is used.
#[tokio::test]
async fn an_mx_on_a_private_address_is_refused_unless_allowed() {
    use maily_engine::ports::{DeliveryOutcome, OutboundMessage, Transport};
    use maily_engine::{EmailAddress, MessageId, TenantId};
    use maily_smtp::{SmtpClientParams, SmtpTransport};
    let sink = SmtpSink::start(SinkConfig::default())
        .await
        .expect("sink starts");
    let dns = DnsServer::start().await;
    let message = || OutboundMessage {
        message_id: MessageId::new(),
        tenant: TenantId::parse("acme").unwrap(),
        mail_from: EmailAddress::parse("news@shop.example").unwrap(),
        rcpt_to: EmailAddress::parse("ann@deliver.test").unwrap(),
        data: b"Subject: hi\r\n\r\nhello\r\n".to_vec().into(),
        guard: None,
    };
    let params = SmtpClientParams {
        connect_timeout: GUARD,
        command_timeout: GUARD,
        ..SmtpClientParams::default()
    };
    let options = |allow_private| MxOptions {
        port: sink.addr().port(),
        allow_private,
        ..options()
    };
    let refused = SmtpTransport::new(
        Arc::new(MxResolver::with_nameservers_and_options(
            &[dns.addr],
            &options(false),
        )),
        params.clone(),
    );
    match refused.deliver(&message()).await {
        DeliveryOutcome::Permanent { reply } => {
            assert_eq!(reply.code, 550, "{reply}");
            assert!(reply.to_string().contains("5.4.4"), "{reply}");
            assert!(
                reply.to_string().contains("not on the public internet"),
                "{reply}"
            );
        }
        other => panic!("delivered or deferred: {other:?}"),
    }
    assert_eq!(sink.accepted(), 0, "nothing reached the private address");
    let allowed = SmtpTransport::new(
        Arc::new(MxResolver::with_nameservers_and_options(
            &[dns.addr],
            &options(true),
        )),
        params,
    );
    assert!(matches!(
        allowed.deliver(&message()).await,
        DeliveryOutcome::Delivered { .. }
    ));
    sink.shutdown().await;
}

#[test]
fn public_addresses_are_told_from_the_rest() {
    use maily_smtp::is_public;
    for private in [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.1.1",
        "100.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::1",
        "fc00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
    ] {
        assert!(!is_public(private.parse().unwrap()), "{private}");
    }
    for public in ["8.8.8.8", "2a00:1450::1", "::ffff:8.8.8.8"] {
        assert!(is_public(public.parse().unwrap()), "{public}");
    }
}

#[tokio::test]
async fn txt_mx_and_cname_records_are_read_as_published() {
    let dns = DnsServer::start().await;
    let r = resolver(&dns);
    assert_eq!(
        r.cname_targets("track.shop.test").await.unwrap(),
        ["t.maily.example"]
    );
    assert_eq!(
        r.txt("_maily.shop.test").await.unwrap(),
        ["maily-verification=0123"]
    );
    let mut hosts = r.mx_hosts("example.test").await.unwrap();
    hosts.sort();
    assert_eq!(hosts, ["mx1.example.test", "mx2.example.test"]);
    for none in ["nomx.test", "missing.test"] {
        assert!(r.mx_hosts(none).await.unwrap().is_empty(), "{none}");
        assert!(r.cname_targets(none).await.unwrap().is_empty(), "{none}");
        assert!(r.txt(none).await.unwrap().is_empty(), "{none}");
    }
    dns.stop().await;
}
