//! A Lightning-address (LNURL-pay, LUD-06/16) service on loopback for a buyer's wallet. Like a
//! real service, each callback hands out a new invoice, so a test sees how many invoices the
//! box asked for and which ones it paid.

use std::sync::{Arc, Mutex};

use ldk_node::lightning_invoice::{Bolt11InvoiceDescription, Description};
use ldk_node::lightning_types::payment::PaymentHash as LdkHash;
use ldk_node::Node;
use mostro_box::lightning::PaymentHash;

/// What the service answers to one callback.
#[derive(Clone)]
pub enum Answer {
    /// An invoice of the buyer's wallet, which it settles at once.
    Invoice,
    /// An invoice for this hash, which the buyer's wallet holds until the test claims it.
    Hold(PaymentHash),
    /// An invoice of a wallet nobody can route to: the payment fails for certain.
    Unpayable(Arc<Node>),
}

#[derive(Clone)]
enum Planned {
    Invoice,
    Hold(PaymentHash),
    Unpayable(std::sync::Weak<Node>),
}

/// The running service.
pub struct LnurlService {
    /// The buyer's Lightning address, `bob@127.0.0.1:PORT`.
    pub address: String,
    /// The payment hash of every invoice handed out, in order.
    pub issued: Arc<Mutex<Vec<PaymentHash>>>,
}

/// Serves `wallet`'s address; callback n is answered as `plan[n]` (the last one repeats). The
/// service holds the wallets weakly: a wallet must be stopped by the test that owns it, never
/// by a task the runtime drops at its end (ldk-node asserts on that).
pub async fn lnurl_service(wallet: &Arc<Node>, plan: Vec<Answer>) -> LnurlService {
    let wallet = Arc::downgrade(wallet);
    let plan: Vec<Planned> = plan
        .into_iter()
        .map(|a| match a {
            Answer::Invoice => Planned::Invoice,
            Answer::Hold(h) => Planned::Hold(h),
            Answer::Unpayable(n) => Planned::Unpayable(Arc::downgrade(&n)),
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let issued = Arc::new(Mutex::new(Vec::new()));
    let log = issued.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let body = if path.starts_with("/.well-known/lnurlp/") {
                serde_json::json!({
                    "tag": "payRequest",
                    "callback": format!("http://{addr}/callback"),
                    "minSendable": 1_000,
                    "maxSendable": 1_000_000_000,
                    "metadata": "[[\"text/plain\",\"bob\"]]",
                })
            } else if let Some(amount) = path
                .split_once("amount=")
                .and_then(|(_, a)| a.split('&').next())
                .and_then(|a| a.parse::<u64>().ok())
            {
                let n = log.lock().unwrap().len();
                let answer = plan[n.min(plan.len() - 1)].clone();
                let desc =
                    Bolt11InvoiceDescription::Direct(Description::new("bob".into()).unwrap());
                let (Some(bob), other) = (
                    wallet.upgrade(),
                    match &answer {
                        Planned::Unpayable(w) => w.upgrade(),
                        _ => None,
                    },
                ) else {
                    return;
                };
                let invoice = match answer {
                    Planned::Invoice => bob.bolt11_payment().receive(amount, &desc, 7200),
                    Planned::Hold(hash) => {
                        bob.bolt11_payment()
                            .receive_for_hash(amount, &desc, 7200, LdkHash(hash.0))
                    }
                    Planned::Unpayable(_) => match &other {
                        Some(o) => o.bolt11_payment().receive(amount, &desc, 7200),
                        None => return,
                    },
                }
                .unwrap();
                drop((bob, other));
                log.lock()
                    .unwrap()
                    .push(PaymentHash(*invoice.payment_hash().as_ref()));
                serde_json::json!({ "pr": invoice.to_string(), "routes": [] })
            } else {
                serde_json::json!({ "status": "ERROR", "reason": "unknown path" })
            };
            let body = body.to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    LnurlService {
        address: format!("bob@{addr}"),
        issued,
    }
}
