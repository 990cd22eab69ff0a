//! What the fuzz targets in `fuzz/` run, one function per target. They live in the library so
//! `tests/fuzz_regressions.rs` replays every saved input through exactly the same code, and a
//! crash the fuzzer found stays fixed.
//!
//! Each function takes arbitrary bytes, as they would arrive from the network or an operator's
//! file, and must neither panic nor leave the engine in a state it cannot go on from.

use std::collections::HashSet;
use std::path::Path;
use std::sync::OnceLock;

use mostro_core::prelude::{Kind as OrderKind, Message, Status, Transport};
use nostr::nips::nip44;
use nostr::{Event, EventBuilder, JsonUtil, Keys, Kind, PublicKey, Tag};
use uuid::Uuid;

use crate::config::Settings;
use crate::engine::order::{Order, Party};
use crate::engine::{dispatch, tx::Tx, Ctx};
use crate::lightning::invoice::{check_invoice, InvoiceRules};
use crate::price::PriceBook;
use crate::protocol::events::NodeFacts;
use crate::protocol::intake::{self, Inbound};
use crate::protocol::{DIRECT, GIFT_WRAP};
use crate::relay::policy::MostroPolicy;

/// Fixed keys, so a saved input means the same thing on every run.
struct Fixture {
    node: Keys,
    alice: Keys,
    bob: Keys,
    settings: Settings,
    facts: NodeFacts,
    prices: PriceBook,
    db: redb::Database,
    runtime: tokio::runtime::Runtime,
}

/// Ids of the orders the store starts with; the seed corpus names them.
pub const PENDING_SELL: Uuid = Uuid::from_u128(1);
/// A pending buy order by alice.
pub const PENDING_BUY: Uuid = Uuid::from_u128(2);
/// A pending range sell order (10 to 100 USD) by alice.
pub const PENDING_RANGE: Uuid = Uuid::from_u128(3);

fn keys(byte: u8) -> Keys {
    let secret = nostr::SecretKey::from_slice(&[byte; 32]).expect("a valid secret key");
    Keys::new(secret)
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let node = keys(1);
        let settings = Settings::parse(
            "",
            Path::new("fuzz.toml"),
            Vec::new(),
            &["lightning.network=regtest".to_string()],
        )
        .expect("default settings");
        let prices = PriceBook::new(u64::MAX / 4);
        prices.set(
            [("USD".to_string(), 90_000.0), ("VES".to_string(), 1e7)].into(),
            crate::protocol::now(),
        );
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .expect("an in-memory store");
        let f = Fixture {
            facts: NodeFacts {
                pubkey: node.public_key(),
                relays: vec!["ws://127.0.0.1:7777".into()],
                network: "regtest".into(),
            },
            node,
            alice: keys(2),
            bob: keys(3),
            settings,
            prices,
            db,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
        };
        let txn = f.db.begin_write().expect("write");
        crate::store::create_tables(&txn).expect("tables");
        {
            let mut tx = Tx::open(&txn).expect("tables open");
            for (id, kind, range) in [
                (PENDING_SELL, OrderKind::Sell, false),
                (PENDING_BUY, OrderKind::Buy, false),
                (PENDING_RANGE, OrderKind::Sell, true),
            ] {
                tx.put_order(&pending(id, kind, range, f.alice.public_key()))
                    .expect("fixture order");
            }
        }
        txn.commit().expect("commit");
        f
    })
}

/// A pending 10,000-sat sell order for 10 USD by `maker`: the sample order of the store tests
/// and benchmarks too.
pub fn pending_order(id: Uuid, maker: PublicKey) -> Order {
    pending(id, OrderKind::Sell, false, maker)
}

fn pending(id: Uuid, kind: OrderKind, range: bool, maker: PublicKey) -> Order {
    let now = crate::protocol::now();
    let party = Party {
        trade_pubkey: maker,
        identity: maker,
        trade_index: Some(1),
        transport: DIRECT,
    };
    Order {
        id,
        kind,
        status: Status::Pending,
        amount: if range { 0 } else { 10_000 },
        fee: 30,
        price_from_api: range,
        fiat_code: "USD".into(),
        fiat_amount: if range { 0 } else { 10 },
        min_amount: range.then_some(10),
        max_amount: range.then_some(100),
        payment_method: "cash".into(),
        premium: 0,
        creator_pubkey: maker,
        buyer: (kind == OrderKind::Buy).then(|| party.clone()),
        seller: (kind == OrderKind::Sell).then(|| party.clone()),
        buyer_invoice: None,
        created_at: now,
        expires_at: now + 86_400,
        taken_at: 0,
        range_parent_id: None,
        last_event_at: 0,
        trade: Default::default(),
    }
}

/// Message unwrap and parse, both transports. The first byte picks what the rest is: the whole
/// outer event as JSON; a v2 (NIP-44 direct) plaintext; a v1 rumor's content; or a v1 rumor's
/// JSON. The last three are wrapped properly to the node, so the fuzzer works on what is inside.
pub fn message(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let text = String::from_utf8_lossy(rest);
    let sender = &f.bob;
    let to = f.node.public_key();
    let event = match mode % 4 {
        0 => match Event::from_json(text.as_bytes()) {
            Ok(e) => e,
            Err(_) => return,
        },
        1 => {
            let Ok(content) = nip44::encrypt(sender.secret_key(), &to, &*text, Default::default())
            else {
                return;
            };
            EventBuilder::new(Kind::PrivateDirectMessage, content)
                .tag(Tag::public_key(to))
                .sign_with_keys(sender)
                .expect("sign")
        }
        2 => {
            let rumor = EventBuilder::text_note(&*text).build(sender.public_key());
            let wrap = async {
                let seal = EventBuilder::seal(sender, &to, rumor).await?;
                let seal = seal.sign(sender).await?;
                EventBuilder::gift_wrap_from_seal(&to, &seal, [])
            };
            match f.runtime.block_on(wrap) {
                Ok(e) => e,
                Err(_) => return,
            }
        }
        _ => {
            let Ok(content) = nip44::encrypt(sender.secret_key(), &to, &*text, Default::default())
            else {
                return;
            };
            let seal = EventBuilder::new(Kind::Seal, content)
                .sign_with_keys(sender)
                .expect("sign");
            match EventBuilder::gift_wrap_from_seal(&to, &seal, []) {
                Ok(e) => e,
                Err(_) => return,
            }
        }
    };
    let now = crate::protocol::now();
    let _ = f.runtime.block_on(intake::open(&event, &f.node, 0, now));
}

/// Order validation and every other action: each line is one request, `a` or `b` (alice or
/// bob, v2 or v1) then a Mostro message as JSON, run through the engine against a store that
/// holds three pending orders. Refusals must be `cant-do` replies, never a store error (which
/// would make the engine retry the request for ever) or a panic. Nothing is committed.
pub fn order(data: &[u8]) {
    let f = fixture();
    let text = String::from_utf8_lossy(data);
    let txn = f.db.begin_write().expect("write");
    {
        let mut tx = Tx::open(&txn).expect("tables open");
        let mut ctx = Ctx {
            settings: &f.settings,
            facts: &f.facts,
            now: crate::protocol::now(),
            prices: &f.prices,
            disk_low: false,
        };
        let mut active: HashSet<PublicKey> = HashSet::new();
        for (n, line) in text.lines().take(16).enumerate() {
            let (who, transport, json) = match line.split_at_checked(1) {
                Some(("a", json)) => (&f.alice, DIRECT, json),
                Some(("b", json)) => (&f.bob, GIFT_WRAP, json),
                _ => continue,
            };
            let Ok(message) = Message::from_json(json) else {
                continue;
            };
            let inbound = inbound(who, transport, message, ctx.now, n as u8);
            if let Err(e) = dispatch::handle(&mut tx, &mut ctx, &inbound, &mut active) {
                panic!("a request made a store error: {e}");
            }
        }
    }
    txn.abort().expect("abort");
}

fn inbound(who: &Keys, transport: Transport, message: Message, now: i64, n: u8) -> Inbound {
    Inbound {
        transport,
        message,
        sender: who.public_key(),
        identity: who.public_key(),
        signature: None,
        created_at: now,
        pow: u8::MAX,
        inner_id: [n; 32],
    }
}

/// BOLT11 invoice checks, as buyers' payout invoices and LNURL answers reach them.
pub fn invoice(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for network in [
        ldk_node::bitcoin::Network::Regtest,
        ldk_node::bitcoin::Network::Bitcoin,
    ] {
        let rules = InvoiceRules {
            network,
            amount_msat: Some(10_000_000),
            valid_until: 1_700_000_000,
            max_final_cltv: 144,
        };
        let _ = check_invoice(&text, &rules);
    }
    let settings = &fixture().settings.lightning;
    let _ = crate::lightning::check_payout_destination(&text, 10_000, 1_700_000_000, settings);
}

/// LNURL-pay answers (LUD-06) and Lightning addresses: the first byte picks the pay request,
/// the callback's answer, or an address.
pub fn lnurl(data: &[u8]) {
    use crate::lightning::lnurl;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let _ = lnurl::callback_url(rest, 10_000_000);
        }
        1 => {
            let _ = lnurl::invoice_from(rest);
        }
        _ => {
            let _ = lnurl::pay_request_url(&String::from_utf8_lossy(rest), false);
        }
    }
}

/// Settings: the file's text, then `KEY=value` environment lines and `section.key=value`
/// overrides after a line `--`.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, extra) = text.split_once("\n--\n").unwrap_or((&text, ""));
    let mut env = Vec::new();
    let mut overrides = Vec::new();
    for line in extra.lines() {
        match line.split_once('=') {
            Some((k, v)) if k.starts_with("MOSTRO_BOX_") => env.push((k.into(), v.into())),
            _ => overrides.push(line.to_string()),
        }
    }
    if let Ok(s) = Settings::parse(file, Path::new("fuzz.toml"), env, &overrides) {
        // What the box derives from valid settings must not panic either.
        let _ = s.lightning.bitcoind_rpc();
        let _ = s.lightning.esplora_url();
        let _ = s.lightning.bitcoin_network();
        let _ = s.lightning.network_tag();
        let _ = s.mostro.effective_pow_first_contact();
    }
}

/// The relay's write policy on any event a client could send.
pub fn policy(data: &[u8]) {
    let Ok(event) = Event::from_json(data) else {
        return;
    };
    let f = fixture();
    let policy = MostroPolicy::new(f.node.public_key(), 64 * 1024, 10, 120);
    let _ = policy.judge(&event);
}
