//! `kill -9` of the real binary: acked orders, relay events and requests in flight survive.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use mostro_core::prelude::{Action, Kind as OrderKind, Message, Payload};
use nostr_sdk::prelude::{Filter, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_acked_orders_and_answers_requests_after_restart() {
    let dir = temp_dir("restart");
    mostro_box::node::init(&dir, None).unwrap();
    let chain = start_chain().await;
    let port = free_port();
    // One trader makes 34 orders here.
    let extra = ["mostro.max_pending_orders_per_identity=100".to_string()];
    let mut b = BoxProcess::spawn(&dir, port, &chain, &extra).await;
    let node = mostro_box::keys::load(&dir).unwrap().public_key();
    let t = Trader::new(&b.url(), node, Wire::V2, false).await;

    // Orders acknowledged before the crash.
    let mut acked = Vec::new();
    for _ in 0..3 {
        let (i, rid) = t.new_order(fixed_order(OrderKind::Sell, 10_000, 5)).await;
        acked.push(order_of(&t.reply(i, Some(rid)).await).id.unwrap());
    }

    // A burst the relay accepts, then kill -9 at once: some requests are still in the inbox.
    let mut burst = Vec::new();
    for _ in 0..30 {
        let index = t.take_index();
        let msg = Message::new_order(
            None,
            Some(1000 + index as u64),
            Some(index),
            Action::NewOrder,
            Some(Payload::Order(fixed_order(OrderKind::Buy, 10_000, 5))),
        );
        burst.push((index, t.wrap(&msg, index).await));
    }
    for (_, ev) in &burst {
        t.publish(ev).await.unwrap();
    }
    b.kill9();

    // A request made while the box is down is sent when it comes back (the client retries).
    let down_index = t.take_index();
    let late = Message::new_order(
        None,
        Some(5000),
        Some(down_index),
        Action::NewOrder,
        Some(Payload::Order(fixed_order(OrderKind::Buy, 12_000, 6))),
    );
    let late_ev = t.wrap(&late, down_index).await;
    let wrapped = std::time::Instant::now();
    assert!(t.publish(&late_ev).await.is_err(), "the box is down");
    let b2 = BoxProcess::spawn(&dir, port, &chain, &extra).await;
    // The client sends it again once the box answers (a fresh connection, so the test does not
    // depend on nostr-sdk's reconnection back-off).
    let t2 = Trader::new(&b2.url(), node, Wire::V2, false).await;
    t2.publish(&late_ev).await.unwrap();
    // A request older than the freshness window when the relay stores it is dropped, as the
    // reference daemon does. On a loaded machine the restart can take that long, so the
    // expected outcome follows the request's real age (with a second of slack either way).
    let age = wrapped.elapsed().as_secs_f64();
    let window = mostro_box::protocol::intake::FRESHNESS_SECS as f64;
    let late_expected = if age < window - 1.0 {
        Some(true)
    } else if age > window + 1.0 {
        Some(false)
    } else {
        None
    };

    // Every acked order is still on the relay and in the store.
    for id in &acked {
        t2.wait_order_status(*id, "pending").await;
    }
    // Every request of the burst got exactly one reply across both runs: replies are relay
    // events, so the trader fetches them all after the restart.
    let mut keys = Vec::new();
    for (index, _) in &burst {
        keys.push(t.trade_keys(*index).await);
    }
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let f = Filter::new()
            .kind(Kind::PrivateDirectMessage)
            .author(node)
            .pubkeys(keys.iter().map(|k| k.public_key()));
        let evs = t2.client.fetch_events(f, WAIT).await.unwrap();
        let mut answered: Vec<u64> = Vec::new();
        for ev in evs.iter() {
            for k in &keys {
                if let Ok(Some(u)) = mostro_core::prelude::unwrap_incoming(ev, k).await {
                    let kind = u.message.get_inner_message_kind();
                    assert_eq!(kind.action, Action::NewOrder, "{:?}", u.message);
                    answered.push(kind.request_id.unwrap());
                }
            }
        }
        let unique: HashSet<u64> = answered.iter().copied().collect();
        assert_eq!(unique.len(), answered.len(), "a request was answered twice");
        if unique.len() == burst.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {} burst requests answered",
            unique.len(),
            burst.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The late request is answered too if it was still fresh (read from the relay with the
    // original trade key); a stale one never is.
    let late_keys = t.trade_keys(down_index).await;
    let f = Filter::new()
        .kind(Kind::PrivateDirectMessage)
        .author(node)
        .pubkey(late_keys.public_key());
    let deadline = tokio::time::Instant::now() + WAIT;
    let answered = 'late: loop {
        for ev in t2
            .client
            .fetch_events(f.clone(), WAIT)
            .await
            .unwrap()
            .iter()
        {
            if let Ok(Some(u)) = mostro_core::prelude::unwrap_incoming(ev, &late_keys).await {
                assert_eq!(u.message.get_inner_message_kind().request_id, Some(5000));
                assert_eq!(action(&u.message), Action::NewOrder);
                break 'late true;
            }
        }
        if tokio::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if let Some(expected) = late_expected {
        assert_eq!(
            answered, expected,
            "the late request, {age:.1} s old when stored, answered: {answered}"
        );
    }
    drop(b2);
}
