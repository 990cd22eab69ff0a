//! The order book over a real WebSocket: both transports, reputation and full-privacy traders.

mod common;

use std::time::Duration;

use common::*;
use mostro_core::prelude::{Action, CantDoReason, Kind as OrderKind, Payload, SmallOrder, Status};
use nostr_sdk::prelude::{EventBuilder, Filter, JsonUtil, Keys, Kind, Tag};

const MODES: [(Wire, bool); 4] = [
    (Wire::V1, false),
    (Wire::V2, false),
    (Wire::V1, true),
    (Wire::V2, true),
];

fn tag_names(ev: &nostr_sdk::prelude::Event) -> Vec<String> {
    ev.tags.iter().map(|t| t.as_slice()[0].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nip11_and_health_on_the_relay_port() {
    let b = TestBox::start(&[]).await;
    let port = b.running.addr.port();
    let (status, body) = http_get(port, "/", "application/nostr+json").await;
    assert!(status.contains("200"), "{status}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["pubkey"], b.pubkey().to_hex());
    assert!(doc["supported_nips"]
        .as_array()
        .unwrap()
        .contains(&11.into()));
    assert_eq!(doc["limitation"]["max_message_length"], 32 * 1024);
    let (status, body) = http_get(port, "/health", "*/*").await;
    assert!(status.contains("200"));
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["relay_url"], b.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_order_in_every_mode_has_the_reference_tags() {
    let b = TestBox::start(&["mostro.name=Havana Box", "mostro.fee=0.006"]).await;
    for (wire, privacy) in MODES {
        let t = Trader::new(&b.url, b.pubkey(), wire, privacy).await;
        let (index, rid) = t.new_order(fixed_order(OrderKind::Sell, 50_000, 30)).await;
        let reply = t.reply(index, Some(rid)).await;
        assert_eq!(
            action(&reply),
            Action::NewOrder,
            "{wire:?} {privacy}: {reply:?}"
        );
        let k = reply.get_inner_message_kind();
        assert_eq!(k.version, if wire == Wire::V1 { 1 } else { 2 });
        assert_eq!(k.trade_index, if privacy { None } else { Some(index) });
        let o = order_of(&reply);
        assert_eq!(o.status, Some(Status::Pending));
        assert_eq!(o.amount, 50_000);
        let id = o.id.expect("order id");
        assert!(o.expires_at.unwrap() > now() + 23 * 3600);

        let ev = t.wait_order_status(id, "pending").await;
        assert_eq!(
            tag_names(&ev),
            [
                "d",
                "k",
                "f",
                "s",
                "amt",
                "fa",
                "pm",
                "premium",
                "rating",
                "source",
                "network",
                "layer",
                "expires_at",
                "expiration",
                "y",
                "z"
            ]
        );
        let slice = |n: &str| {
            ev.tags
                .iter()
                .find(|t| t.as_slice()[0] == n)
                .unwrap()
                .as_slice()
                .to_vec()
        };
        assert_eq!(slice("d")[1], id.to_string());
        assert_eq!(slice("k")[1], "sell");
        assert_eq!(slice("f")[1], "USD");
        assert_eq!(slice("amt")[1], "50000");
        assert_eq!(slice("fa")[1..], ["30"]);
        assert_eq!(slice("pm")[1..], ["bank transfer", "cash"]);
        assert_eq!(slice("premium")[1], "0");
        assert_eq!(
            slice("rating")[1],
            r#"["rating",{"days":0,"total_rating":0.0,"total_reviews":0}]"#
        );
        assert_eq!(
            slice("source")[1],
            format!(
                "mostro:{id}?relays={}&mostro={}",
                b.url,
                b.pubkey().to_hex()
            )
        );
        assert_eq!(slice("network")[1], "regtest");
        assert_eq!(slice("layer")[1], "lightning");
        assert_eq!(slice("expires_at")[1], o.expires_at.unwrap().to_string());
        assert_eq!(slice("expiration")[1], o.expires_at.unwrap().to_string());
        assert_eq!(slice("y")[1..], ["mostro", "Havana Box"]);
        assert_eq!(slice("z")[1], "order");
        assert_eq!(ev.content, "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_and_range_orders_use_the_price_api() {
    let api = price_stub(r#"{"BTC":{"USD":100000.0,"VES":5000000.0},"base":"BTC"}"#).await;
    let set_api = format!("price.api_url={api}");
    let b = TestBox::start(&[&set_api]).await;
    // The first fetch happens at start; wait until the book has a price.
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.running.prices.quote("USD", now()).is_err() {
        assert!(tokio::time::Instant::now() < deadline, "no price fetched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;

    // Market price with premium: 50 USD at 100k = 50,000 sats, within limits.
    let mut market = fixed_order(OrderKind::Buy, 0, 50);
    market.premium = 3;
    let (i, rid) = t.new_order(market).await;
    let o = order_of(&t.reply(i, Some(rid)).await);
    let ev = t.wait_order_status(o.id.unwrap(), "pending").await;
    assert_eq!(tag_value(&ev, "amt").as_deref(), Some("0"));
    assert_eq!(tag_value(&ev, "premium").as_deref(), Some("3"));

    // Range 10..100 USD: both ends convert within limits; fa carries [min, max].
    let mut range = fixed_order(OrderKind::Sell, 0, 0);
    range.min_amount = Some(10);
    range.max_amount = Some(100);
    let (i, rid) = t.new_order(range).await;
    let o = order_of(&t.reply(i, Some(rid)).await);
    assert_eq!((o.min_amount, o.max_amount), (Some(10), Some(100)));
    let ev = t.wait_order_status(o.id.unwrap(), "pending").await;
    let fa = ev.tags.iter().find(|t| t.as_slice()[0] == "fa").unwrap();
    assert_eq!(fa.as_slice()[1..], ["10", "100"]);

    // 2,000 USD = 2,000,000 sats > max_order_amount.
    let (i, rid) = t.new_order(fixed_order(OrderKind::Buy, 0, 2000)).await;
    assert_eq!(
        cant_do(&t.reply(i, Some(rid)).await),
        Some(CantDoReason::OutOfRangeSatsAmount)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_orders_refused_without_prices_while_fixed_orders_work() {
    let b = TestBox::start(&[]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let (i, rid) = t.new_order(fixed_order(OrderKind::Buy, 0, 50)).await;
    assert_eq!(
        cant_do(&t.reply(i, Some(rid)).await),
        Some(CantDoReason::PriceTooStale)
    );
    let (i, rid) = t.new_order(fixed_order(OrderKind::Buy, 10_000, 5)).await;
    assert_eq!(action(&t.reply(i, Some(rid)).await), Action::NewOrder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_paths() {
    let b = TestBox::start(&[]).await;
    for wire in [Wire::V1, Wire::V2] {
        let maker = Trader::new(&b.url, b.pubkey(), wire, false).await;
        let other = Trader::new(&b.url, b.pubkey(), wire, false).await;
        let (i, rid) = maker
            .new_order(fixed_order(OrderKind::Sell, 20_000, 10))
            .await;
        let id = order_of(&maker.reply(i, Some(rid)).await).id.unwrap();

        let oi = other.take_index();
        let r = other.send(oi, Some(id), Action::Cancel, None).await;
        assert_eq!(
            cant_do(&other.reply(oi, Some(r)).await),
            Some(CantDoReason::IsNotYourOrder)
        );
        maker.wait_order_status(id, "pending").await;

        let r = maker.send(i, Some(id), Action::Cancel, None).await;
        let reply = maker.reply(i, Some(r)).await;
        assert_eq!(action(&reply), Action::Canceled);
        assert_eq!(reply.get_inner_message_kind().id, Some(id));
        maker.wait_order_status(id, "canceled").await;

        let r = maker.send(i, Some(id), Action::Cancel, None).await;
        assert_eq!(
            cant_do(&maker.reply(i, Some(r)).await),
            Some(CantDoReason::OrderAlreadyCanceled)
        );
        let r = maker
            .send(i, Some(uuid::Uuid::new_v4()), Action::Cancel, None)
            .await;
        assert_eq!(
            cant_do(&maker.reply(i, Some(r)).await),
            Some(CantDoReason::NotFound)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_last_trade_index_and_restore_session() {
    let b = TestBox::start(&["mostro.max_orders_per_response=2"]).await;
    for wire in [Wire::V1, Wire::V2] {
        let t = Trader::new(&b.url, b.pubkey(), wire, false).await;
        // A new identity: no trade index yet.
        let r = t.send(0, None, Action::LastTradeIndex, None).await;
        assert_eq!(
            cant_do(&t.reply(0, Some(r)).await),
            Some(CantDoReason::NotFound)
        );

        let mut ids = Vec::new();
        for _ in 0..3 {
            let (i, rid) = t.new_order(fixed_order(OrderKind::Buy, 10_000, 5)).await;
            ids.push((i, order_of(&t.reply(i, Some(rid)).await).id.unwrap()));
        }
        let r = t.send(0, None, Action::LastTradeIndex, None).await;
        let reply = t.reply(0, Some(r)).await;
        assert_eq!(action(&reply), Action::LastTradeIndex);
        assert_eq!(reply.get_inner_message_kind().trade_index, Some(3));
        assert!(matches!(reply, mostro_core::prelude::Message::Restore(_)));

        // Cancel one: restore-session lists the two still open, with their trade indexes.
        let (ci, cid) = ids[0];
        let r = t.send(ci, Some(cid), Action::Cancel, None).await;
        t.reply(ci, Some(r)).await;
        let r = t.send(0, None, Action::RestoreSession, None).await;
        let reply = t.reply(0, Some(r)).await;
        let Some(Payload::RestoreData(info)) = &reply.get_inner_message_kind().payload else {
            panic!("restore reply without data: {reply:?}")
        };
        let mut got: Vec<_> = info
            .restore_orders
            .iter()
            .map(|o| (o.trade_index, o.order_id, o.status.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (2, ids[1].1, "pending".into()),
                (3, ids[2].1, "pending".into())
            ]
        );

        // orders: own ids come back; too many, none, or foreign ids are refused.
        let q = |v: Vec<uuid::Uuid>| Some(Payload::Ids(v));
        let r = t
            .send(1, None, Action::Orders, q(vec![ids[1].1, ids[2].1]))
            .await;
        let reply = t.reply(1, Some(r)).await;
        let Some(Payload::Orders(list)) = &reply.get_inner_message_kind().payload else {
            panic!("{reply:?}")
        };
        assert_eq!(
            list.iter().map(|o| o.id.unwrap()).collect::<Vec<_>>(),
            vec![ids[1].1, ids[2].1]
        );
        let r = t
            .send(
                1,
                None,
                Action::Orders,
                q(ids.iter().map(|x| x.1).collect()),
            )
            .await;
        assert_eq!(
            cant_do(&t.reply(1, Some(r)).await),
            Some(CantDoReason::TooManyRequests)
        );
        let r = t.send(1, None, Action::Orders, q(vec![])).await;
        assert_eq!(
            cant_do(&t.reply(1, Some(r)).await),
            Some(CantDoReason::InvalidParameters)
        );
        let stranger = Trader::new(&b.url, b.pubkey(), wire, false).await;
        let r = stranger
            .send(1, None, Action::Orders, q(vec![ids[1].1]))
            .await;
        assert_eq!(
            cant_do(&stranger.reply(1, Some(r)).await),
            Some(CantDoReason::NotFound)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_order_refusals_change_nothing() {
    let b = TestBox::start(&[]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let count = || async {
        let f = Filter::new().kind(Kind::Custom(38383)).author(b.pubkey());
        t.client.fetch_events(f, WAIT).await.unwrap().len()
    };
    let before = count().await;
    let mut bad_currency = fixed_order(OrderKind::Sell, 10_000, 5);
    bad_currency.fiat_code = "XYZ".into();
    let mut premium_and_amount = fixed_order(OrderKind::Sell, 10_000, 5);
    premium_and_amount.premium = 5;
    let mut bad_range = fixed_order(OrderKind::Sell, 0, 0);
    bad_range.min_amount = Some(50);
    bad_range.max_amount = Some(10);
    let mut bad_invoice = fixed_order(OrderKind::Buy, 10_000, 5);
    bad_invoice.buyer_invoice = Some("lnbcrt1notaninvoice".into());
    let cases: Vec<(SmallOrder, CantDoReason)> = vec![
        (bad_currency, CantDoReason::InvalidFiatCurrency),
        (
            fixed_order(OrderKind::Sell, 10_000, 0),
            CantDoReason::InvalidAmount,
        ),
        (
            fixed_order(OrderKind::Sell, -5, 5),
            CantDoReason::InvalidAmount,
        ),
        (premium_and_amount, CantDoReason::InvalidParameters),
        (bad_range, CantDoReason::InvalidAmount),
        (
            fixed_order(OrderKind::Sell, 50, 5),
            CantDoReason::OutOfRangeSatsAmount,
        ),
        (
            fixed_order(OrderKind::Sell, 5_000_000, 5),
            CantDoReason::OutOfRangeSatsAmount,
        ),
        (bad_invoice, CantDoReason::InvalidInvoice),
    ];
    for (order, reason) in cases {
        let (i, rid) = t.new_order(order).await;
        assert_eq!(cant_do(&t.reply(i, Some(rid)).await), Some(reason));
    }
    // A refused order burns no trade index: the next valid order can still use index 1.
    let r = t.send(0, None, Action::LastTradeIndex, None).await;
    assert_eq!(
        cant_do(&t.reply(0, Some(r)).await),
        Some(CantDoReason::NotFound)
    );

    // Trade index not increasing.
    let (i, rid) = t.new_order(fixed_order(OrderKind::Sell, 10_000, 5)).await;
    assert_eq!(action(&t.reply(i, Some(rid)).await), Action::NewOrder);
    let rid = t
        .send(
            i,
            None,
            Action::NewOrder,
            Some(Payload::Order(fixed_order(OrderKind::Sell, 10_000, 5))),
        )
        .await;
    assert_eq!(
        cant_do(&t.reply(i, Some(rid)).await),
        Some(CantDoReason::InvalidTradeIndex)
    );
    assert_eq!(count().await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dropped_and_the_next_order_succeeds() {
    let b = TestBox::start(&[]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let trade = t.trade_keys(1).await;
    let node = b.pubkey();

    // Not JSON inside valid NIP-44, and an unknown action: no reply.
    let junk = |plain: &str| {
        let enc = nostr_sdk::prelude::nip44::encrypt(
            trade.secret_key(),
            &node,
            plain,
            nostr_sdk::prelude::nip44::Version::V2,
        )
        .unwrap();
        EventBuilder::new(Kind::PrivateDirectMessage, enc)
            .tag(Tag::public_key(node))
            .sign_with_keys(&trade)
            .unwrap()
    };
    t.publish(&junk("this is not json")).await.unwrap();
    t.publish(&junk(r#"[{"order":{"version":2,"request_id":1,"trade_index":1,"action":"steal-sats","payload":null}},null,null]"#))
        .await
        .unwrap();

    // Stale: made 30 s ago.
    let msg = mostro_core::prelude::Message::new_order(
        None,
        Some(77),
        Some(1),
        Action::NewOrder,
        Some(Payload::Order(fixed_order(OrderKind::Sell, 10_000, 5))),
    );
    let tuple = serde_json::to_string(&(
        &msg,
        Some(mostro_core::prelude::Message::sign(msg.as_json().unwrap(), &trade).to_string()),
        Option::<(String, String)>::None,
    ))
    .unwrap();
    let enc = nostr_sdk::prelude::nip44::encrypt(
        trade.secret_key(),
        &node,
        tuple,
        nostr_sdk::prelude::nip44::Version::V2,
    )
    .unwrap();
    let stale = EventBuilder::new(Kind::PrivateDirectMessage, enc)
        .tag(Tag::public_key(node))
        .custom_created_at(nostr_sdk::prelude::Timestamp::from_secs(
            (now() - 30) as u64,
        ))
        .sign_with_keys(&trade)
        .unwrap();
    t.publish(&stale).await.unwrap();

    // Bad outer signature: the relay itself refuses it.
    let good = t
        .wrap(
            &mostro_core::prelude::Message::new_order(
                None,
                Some(5),
                Some(1),
                Action::NewOrder,
                Some(Payload::Order(fixed_order(OrderKind::Sell, 10_000, 5))),
            ),
            1,
        )
        .await;
    let mut forged: serde_json::Value = serde_json::from_str(&good.as_json()).unwrap();
    forged["sig"] = serde_json::Value::String("0".repeat(128));
    let forged = nostr_sdk::prelude::Event::from_json(forged.to_string()).unwrap();
    assert!(t.publish(&forged).await.is_err());

    // A 64 KB payload: refused by the relay with a reason.
    let big = EventBuilder::new(Kind::PrivateDirectMessage, "x")
        .tag(Tag::public_key(node))
        .tag(Tag::parse(["padding", &"x".repeat(64 * 1024)]).unwrap())
        .sign_with_keys(&trade)
        .unwrap();
    let err = t.publish(&big).await.unwrap_err();
    assert!(err.contains("bytes"), "{err}");

    // A kind-1 note from a stranger: refused.
    let note = EventBuilder::text_note("hello relay")
        .sign_with_keys(&Keys::generate())
        .unwrap();
    let err = t.publish(&note).await.unwrap_err();
    assert!(err.contains("Mostro traffic only"), "{err}");

    t.assert_silent(1).await;

    // Now a valid order (the same trade key, index 1) succeeds...
    t.publish(&good).await.unwrap();
    let reply = t.reply(1, Some(5)).await;
    assert_eq!(action(&reply), Action::NewOrder);
    // ...and replaying the very same event or a re-wrap of it is not handled twice.
    let _ = t.publish(&good).await;
    t.assert_silent(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_gift_wrap_rumor_is_handled_once() {
    let b = TestBox::start(&[]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V1, false).await;
    let msg = mostro_core::prelude::Message::new_order(
        None,
        Some(9),
        Some(1),
        Action::NewOrder,
        Some(Payload::Order(fixed_order(OrderKind::Sell, 10_000, 5))),
    );
    // The same request wrapped twice within one second: new outer id, same inner id. (Two
    // wraps that straddle a second are two requests; wrap again until a pair shares it.)
    let node = mostro_box::keys::load(&b.dir).unwrap();
    let inner = |ev: nostr_sdk::Event| {
        let node = node.clone();
        async move {
            mostro_box::protocol::intake::open(&ev, &node, 0, now())
                .await
                .unwrap()
                .inner_id
        }
    };
    let (a, again) = loop {
        let (a, again) = (t.wrap(&msg, 1).await, t.wrap(&msg, 1).await);
        if inner(a.clone()).await == inner(again.clone()).await {
            break (a, again);
        }
    };
    assert_ne!(a.id, again.id);
    t.publish(&a).await.unwrap();
    assert_eq!(action(&t.reply(1, Some(9)).await), Action::NewOrder);
    t.publish(&again).await.unwrap();
    t.assert_silent(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_orders_expire_and_are_published_canceled() {
    let b = TestBox::start(&[]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, true).await;
    let mut o = fixed_order(OrderKind::Sell, 10_000, 5);
    o.expires_at = Some(now() + 2);
    let (i, rid) = t.new_order(o).await;
    let id = order_of(&t.reply(i, Some(rid)).await).id.unwrap();
    let ev = t.wait_order_status(id, "canceled").await;
    // Non-pending revisions keep the 30-day retention.
    let exp: i64 = tag_value(&ev, "expiration").unwrap().parse().unwrap();
    assert!(exp > now() + 29 * 86_400);
    // Cancelling an expired order is not allowed.
    let r = t.send(i, Some(id), Action::Cancel, None).await;
    assert_eq!(
        cant_do(&t.reply(i, Some(r)).await),
        Some(CantDoReason::NotAllowedByStatus)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_and_relay_list_are_published() {
    let b = TestBox::start(&["mostro.name=Box", "mostro.about=test node"]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let f = Filter::new().author(b.pubkey()).kinds([
            Kind::Custom(38385),
            Kind::Custom(10002),
            Kind::Metadata,
        ]);
        let evs = t.client.fetch_events(f, WAIT).await.unwrap();
        let info = evs.iter().find(|e| e.kind == Kind::Custom(38385));
        let list = evs.iter().find(|e| e.kind == Kind::Custom(10002));
        let meta = evs.iter().find(|e| e.kind == Kind::Metadata);
        if let (Some(info), Some(list), Some(meta)) = (info, list, meta) {
            assert_eq!(tag_value(info, "protocol_version").as_deref(), Some("2"));
            assert_eq!(tag_value(info, "d"), Some(b.pubkey().to_hex()));
            assert_eq!(tag_value(info, "fee").as_deref(), Some("0"));
            assert_eq!(tag_value(info, "min_order_amount").as_deref(), Some("100"));
            assert_eq!(tag_value(info, "z").as_deref(), Some("info"));
            assert_eq!(tag_value(list, "r"), Some(b.url.clone()));
            assert!(meta.content.contains("test node"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "discovery events missing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_relays_get_copies_and_a_dead_one_blocks_nothing() {
    use nostr_relay_builder::{LocalRelay, RelayBuilder};
    let public = LocalRelay::new(RelayBuilder::default());
    public.run().await.unwrap();
    let public_url = public.url().await.to_string();
    let relays = format!("nostr.publish_relays=[\"ws://127.0.0.1:9\", \"{public_url}\"]");
    let b = TestBox::start(&[&relays]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let (i, rid) = t.new_order(fixed_order(OrderKind::Sell, 10_000, 5)).await;
    let id = order_of(&t.reply(i, Some(rid)).await).id.unwrap();

    let watcher = nostr_sdk::Client::default();
    watcher.add_relay(public_url.as_str()).await.unwrap();
    watcher.connect().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let f = Filter::new()
            .kind(Kind::Custom(38383))
            .author(b.pubkey())
            .identifier(id.to_string());
        if !watcher.fetch_events(f, WAIT).await.unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order never reached the public relay"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trade_pubkey_moves_the_maker_key() {
    let b = TestBox::start(&[]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let (i, rid) = t.new_order(fixed_order(OrderKind::Sell, 10_000, 5)).await;
    let id = order_of(&t.reply(i, Some(rid)).await).id.unwrap();
    // Another identity may not move it.
    let other = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let r = other.send(1, Some(id), Action::TradePubkey, None).await;
    assert_eq!(
        cant_do(&other.reply(1, Some(r)).await),
        Some(CantDoReason::IsNotYourOrder)
    );
    // The maker's identity, from a new trade key: acknowledged, and the new key may cancel.
    let ni = t.take_index();
    let r = t.send(ni, Some(id), Action::TradePubkey, None).await;
    assert_eq!(action(&t.reply(ni, Some(r)).await), Action::TradePubkey);
    let r = t.send(i, Some(id), Action::Cancel, None).await;
    assert_eq!(
        cant_do(&t.reply(i, Some(r)).await),
        Some(CantDoReason::IsNotYourOrder)
    );
    let r = t.send(ni, Some(id), Action::Cancel, None).await;
    assert_eq!(action(&t.reply(ni, Some(r)).await), Action::Canceled);
}

/// One trader cannot fill the book: pending orders per identity are capped, and a trade key
/// takes part in one trade at a time (a full-privacy trader's identity is its trade key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trader_cannot_hold_the_book() {
    let b = TestBox::start(&["mostro.max_pending_orders_per_identity=2"]).await;
    let t = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    for _ in 0..2 {
        let (i, rid) = t.new_order(fixed_order(OrderKind::Sell, 10_000, 5)).await;
        order_of(&t.reply(i, Some(rid)).await);
    }
    let (i, rid) = t.new_order(fixed_order(OrderKind::Sell, 10_000, 5)).await;
    assert_eq!(
        cant_do(&t.reply(i, Some(rid)).await),
        Some(CantDoReason::TooManyRequests)
    );

    let other = Trader::new(&b.url, b.pubkey(), Wire::V2, false).await;
    let (o, rid) = other
        .new_order(fixed_order(OrderKind::Buy, 10_000, 5))
        .await;
    let theirs = order_of(&other.reply(o, Some(rid)).await).id.unwrap();
    let private = Trader::new(&b.url, b.pubkey(), Wire::V2, true).await;
    let (p, rid) = private
        .new_order(fixed_order(OrderKind::Sell, 10_000, 5))
        .await;
    order_of(&private.reply(p, Some(rid)).await);
    // The same key now takes another order: refused, and that order stays on the book.
    let rid = private
        .send(p, Some(theirs), Action::TakeBuy, Some(Payload::Amount(0)))
        .await;
    assert_eq!(
        cant_do(&private.reply(p, Some(rid)).await),
        Some(CantDoReason::PendingOrderExists)
    );
    other.wait_order_status(theirs, "pending").await;
}
