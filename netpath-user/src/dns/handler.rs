//! One user-defined network's side of the resolver: hickory's server hands
//! every question that arrives on the network's gateway (UDP or TCP) to
//! [`Gateway::handle_request`], which answers from the current [`View`] or
//! forwards upstream.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Header, Message, MessageType, OpCode, ResponseCode},
    rr::{RData, Record, RecordType, rdata::A},
};
use hickory_server::{
    authority::MessageResponseBuilder,
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
};

use super::{
    server::Names,
    view::{Decision, View},
};

/// How long names netpath answers may be cached: they change only when
/// sandboxes come and go, and Docker's embedded DNS says 600 too.
const TTL: u32 = 600;
/// How long one upstream resolver gets before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest UDP answer accepted from upstream (EDNS0's usual ceiling).
const UPSTREAM_MAX: usize = 4096;

pub struct Gateway {
    pub addr: Ipv4Addr,
    pub names: Arc<Names>,
}

#[async_trait::async_trait]
impl RequestHandler for Gateway {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(asked) = request.edns() {
                let mut edns = Edns::new();
                edns.set_max_payload(asked.max_payload().max(512));
                b.edns(edns);
            }
            b
        };
        let fail = |code| builder().error_msg(request.header(), code);
        let (IpAddr::V4(asker), MessageType::Query) = (request.src().ip(), request.message_type()) else {
            return send(&mut response, fail(ResponseCode::Refused)).await;
        };
        if request.op_code() != OpCode::Query {
            return send(&mut response, fail(ResponseCode::NotImp)).await;
        }
        let [query] = request.queries() else {
            return send(&mut response, fail(ResponseCode::FormErr)).await;
        };
        let query = query.original();
        let name = query.name().to_ascii();
        let decide = |view: &View| view.decide(self.addr, asker, &name);
        let mut decision = decide(&self.names.current());
        if matches!(decision, Decision::Forward(_)) && self.names.catch_up() {
            // A name or asker this version lacks may be newer than it: a
            // change whose notice is still queued is read first.
            decision = decide(&self.names.current());
        }
        match decision {
            Decision::Local(ips) => {
                let mut header = Header::response_from_request(request.header());
                header.set_recursion_available(true);
                let answers: Vec<Record> = if query.query_type() == RecordType::A {
                    ips.into_iter().map(|ip| Record::from_rdata(query.name().clone(), TTL, RData::A(A(ip)))).collect()
                } else {
                    // The name exists, with no records of that type.
                    Vec::new()
                };
                let none: &[Record] = &[];
                send(&mut response, builder().build(header, &answers, none, none, none)).await
            }
            Decision::Forward(upstreams) => {
                let Some(reply) = forward(&upstreams, request).await else {
                    return send(&mut response, fail(ResponseCode::ServFail)).await;
                };
                let mut header = *reply.header();
                header.set_id(request.id());
                let mut b = MessageResponseBuilder::from_message_request(request);
                if let Some(edns) = reply.extensions().clone() {
                    b.edns(edns);
                }
                let none: &[Record] = &[];
                let msg = b.build(header, reply.answers(), reply.name_servers(), none, reply.additionals());
                send(&mut response, msg).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    msg: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let id = msg.header().id();
    response.send_response(msg).await.unwrap_or_else(|e| {
        eprintln!("resolver: answering {id}: {e}");
        let mut header = Header::new();
        header.set_id(id).set_response_code(ResponseCode::ServFail);
        header.into()
    })
}

/// Asks each upstream resolver in turn over UDP, under a fresh random ID;
/// the first answer wins.
async fn forward(upstreams: &[Ipv4Addr], request: &Request) -> Option<Message> {
    let mut query = Message::new();
    query
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(request.recursion_desired())
        .set_checking_disabled(request.checking_disabled())
        .add_query(request.queries().first()?.original().clone());
    if let Some(edns) = request.edns() {
        query.set_edns(edns.clone());
    }
    for up in upstreams {
        let mut id = [0u8; 2];
        getrandom::fill(&mut id).ok()?;
        query.set_id(u16::from_ne_bytes(id));
        let Ok(bytes) = query.to_vec() else { return None };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, ask(*up, &bytes, query.id())).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(e)) => eprintln!("resolver: upstream {up}: {e}"),
            Err(_) => eprintln!("resolver: upstream {up}: no answer in {UPSTREAM_TIMEOUT:?}"),
        }
    }
    None
}

async fn ask(upstream: Ipv4Addr, query: &[u8], id: u16) -> std::io::Result<Message> {
    let sock = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    // Connected: datagrams from anyone else are not delivered to it.
    sock.connect(SocketAddr::from((upstream, 53))).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; UPSTREAM_MAX];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Anything but the answer to this ID is dropped.
        if let Ok(reply) = Message::from_vec(&buf[..n]) {
            if reply.id() == id && reply.message_type() == MessageType::Response {
                return Ok(reply);
            }
        }
    }
}
