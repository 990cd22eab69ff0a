//! Bounded under hostile traffic: what strangers send cannot grow the box without limit. A
//! handled request leaves the store; private messages to others are kept up to a bound, oldest
//! out first; a socket that never sends its request is closed.

mod common;

use std::time::Duration;

use common::*;
use mostro_core::prelude::Kind as OrderKind;
use nostr_sdk::prelude::{EventBuilder, Filter, Keys, Kind, Tag, Timestamp};

/// `/health`'s count of requests accepted and not yet handled.
async fn backlog(port: u16) -> u64 {
    let (_, body) = http_get(port, "/health", "application/json").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["inbox_backlog"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handled_requests_leave_the_store_and_private_messages_are_bounded() {
    let b = TestBox::start(&[
        "relay.max_private_messages=1000",
        "relay.events_per_minute_per_ip=1000000",
        "relay.bytes_per_second_per_ip=100000000",
    ])
    .await;
    let port: u16 = b.url.rsplit(':').next().unwrap().parse().unwrap();
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;

    // A real request, and junk no one can open: both are handled, and neither is kept.
    let index = t.take_index();
    let msg = mostro_core::prelude::Message::new_order(
        None,
        Some(7),
        Some(index),
        mostro_core::prelude::Action::NewOrder,
        Some(mostro_core::prelude::Payload::Order(fixed_order(
            OrderKind::Sell,
            10_000,
            5,
        ))),
    );
    let request = t.wrap(&msg, index).await;
    let junk = EventBuilder::new(Kind::GiftWrap, "not a wrapped message")
        .tag(Tag::public_key(b.pubkey()))
        .sign_with_keys(&Keys::generate())
        .unwrap();
    t.publish(&junk).await.unwrap();
    t.publish(&request).await.unwrap();
    order_of(&t.reply(index, Some(7)).await);
    // The inbox is handled in order: the junk before the request that was just answered.
    assert_eq!(backlog(port).await, 0);
    let kept = t
        .client
        .fetch_events(Filter::new().ids([request.id, junk.id]), WAIT)
        .await
        .unwrap();
    assert!(kept.is_empty(), "handled requests are gone: {kept:?}");
    // Sent again, the handled request is refused as a duplicate, not handled twice.
    assert!(t.publish(&request).await.is_err(), "a replay is refused");

    // Chats between counterparties: at most 1000 are kept, the oldest go first.
    let someone = Keys::generate().public_key();
    let mut chats = Vec::new();
    for i in 0..1100u64 {
        let ev = EventBuilder::new(Kind::GiftWrap, format!("chat {i}"))
            .tag(Tag::public_key(someone))
            .custom_created_at(Timestamp::from(1_800_000_000 + i))
            .sign_with_keys(&Keys::generate())
            .unwrap();
        chats.push(ev);
    }
    for ev in &chats {
        t.publish(ev).await.unwrap();
    }
    let ids = |r: std::ops::Range<usize>| Filter::new().ids(chats[r].iter().map(|e| e.id));
    let oldest = t.client.fetch_events(ids(0..100), WAIT).await.unwrap();
    assert!(oldest.is_empty(), "the oldest 100 were pushed out");
    let mut newest = 0;
    for from in (100..1100).step_by(100) {
        newest += t
            .client
            .fetch_events(ids(from..from + 100), WAIT)
            .await
            .unwrap()
            .len();
    }
    assert_eq!(newest, 1000);
    // The node's own replies to traders are kept beside them.
    let replies = t
        .client
        .fetch_events(
            Filter::new()
                .kind(Kind::PrivateDirectMessage)
                .pubkey(t.trade_keys(index).await.public_key()),
            WAIT,
        )
        .await
        .unwrap();
    assert!(!replies.is_empty(), "the node's reply is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_never_sends_its_request_is_closed() {
    use tokio::io::AsyncReadExt;
    let b = TestBox::start(&[]).await;
    let port: u16 = b.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(60), idle.read(&mut buf))
        .await
        .expect("the box closes an idle socket");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= mostro_box::relay::http::HEADER_TIMEOUT - Duration::from_secs(1),
        "closed after the header time-out, not at once"
    );
}

/// A WebSocket message larger than an event is refused at its frame header: the connection
/// closes at once, before the box buffers any of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_websocket_message_closes_the_connection_at_its_header() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = TestBox::start(&[]).await;
    let port: u16 = b.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains(" 101 "), "upgraded");
    // A text frame announcing 10 MB (masked, as a client's must be), and only its header.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&10_000_000u64.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&header).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the box closed the connection without waiting for 10 MB"
    );
}
