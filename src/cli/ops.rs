//! Operator commands: each is one API request to the running daemon, printed as a table or
//! key/value lines (or as the raw JSON with `--json`).

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

use super::{
    ChannelCommand, Command, DisputeCommand, InvoiceCommand, OrderCommand, PeerCommand,
    SolverCommand, WalletCommand,
};
use crate::api::client::call;
use crate::lightning::Preimage;
use ldk_node::bitcoin::hex::DisplayHex;

fn outcome(v: &Value) -> String {
    format!(
        "order {}: {}",
        v["order_id"].as_str().unwrap_or_default(),
        v["outcome"].as_str().unwrap_or_default()
    )
}

/// Runs an operator command against the daemon of `data_dir`.
pub async fn run(data_dir: &Path, as_json: bool, command: Command) -> anyhow::Result<()> {
    let get = |path: &'static str| call(data_dir, "GET", path, None);
    let post = |path: &'static str, body: Value| call(data_dir, "POST", path, Some(body));
    let (value, render): (Value, fn(&Value) -> String) = match command {
        Command::Status => (get("/v1/status").await?, render_status),
        Command::StatusPage => (
            status_page(data_dir, &get("/v1/status").await?)?,
            render_status_page,
        ),
        Command::Wallet { what } => match what {
            WalletCommand::Address => (post("/v1/wallet/address", json!({})).await?, |v| {
                v["address"].as_str().unwrap_or_default().to_string()
            }),
            WalletCommand::Balance => (get("/v1/wallet/balance").await?, render_balance),
            WalletCommand::Send { address, amount } => {
                let body = if amount == "all" {
                    json!({ "address": address, "all": true })
                } else {
                    let sats: u64 = amount.parse().map_err(|_| {
                        anyhow::anyhow!("{amount} is not a number of sats or `all`")
                    })?;
                    json!({ "address": address, "sats": sats })
                };
                (post("/v1/wallet/send", body).await?, |v| {
                    format!("sent: {}", v["txid"].as_str().unwrap_or_default())
                })
            }
        },
        Command::Peer { what } => match what {
            PeerCommand::Connect { peer } => (
                post("/v1/peer/connect", json!({ "peer": peer })).await?,
                |v| {
                    format!(
                        "connected to {}",
                        v["connected"].as_str().unwrap_or_default()
                    )
                },
            ),
            PeerCommand::List => (get("/v1/peer/list").await?, |v| {
                table(
                    &v["peers"],
                    &[
                        ("NODE ID", "node_id"),
                        ("ADDRESS", "address"),
                        ("CONNECTED", "connected"),
                    ],
                )
            }),
            PeerCommand::Disconnect { node_id } => (
                post("/v1/peer/disconnect", json!({ "peer": node_id })).await?,
                |v| {
                    format!(
                        "disconnected {}",
                        v["disconnected"].as_str().unwrap_or_default()
                    )
                },
            ),
        },
        Command::Channel { what } => match what {
            ChannelCommand::Open {
                peer,
                sats,
                push_sats,
                announce,
                no_wait,
            } => {
                let body = json!({ "peer": peer, "sats": sats, "push_sats": push_sats, "announce": announce });
                let opened = post("/v1/channel/open", body).await?;
                if as_json || no_wait {
                    (opened, |v| {
                        format!(
                            "channel opening (user channel id {}); follow it with `mostro-box channel list`",
                            v["user_channel_id"].as_str().unwrap_or_default()
                        )
                    })
                } else {
                    let id = opened["user_channel_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    follow_channel(data_dir, &id).await?;
                    return Ok(());
                }
            }
            ChannelCommand::Close { channel_id, force } => (
                post(
                    "/v1/channel/close",
                    json!({ "channel_id": channel_id, "force": force }),
                )
                .await?,
                |v| {
                    if v["force"].as_bool() == Some(true) {
                        format!(
                            "force-closing {}: the funds return on-chain after the peer's contest delay",
                            v["closing"].as_str().unwrap_or_default()
                        )
                    } else {
                        format!("closing {}", v["closing"].as_str().unwrap_or_default())
                    }
                },
            ),
            ChannelCommand::List => (get("/v1/channel/list").await?, |v| {
                table(
                    &v["channels"],
                    &[
                        ("CHANNEL ID", "channel_id"),
                        ("PEER", "peer"),
                        ("CAPACITY", "capacity_sats"),
                        ("OUTBOUND", "outbound_sats"),
                        ("INBOUND", "inbound_sats"),
                        ("STATE", "state"),
                    ],
                )
            }),
        },
        Command::Invoice {
            what:
                InvoiceCommand::Create {
                    sats,
                    description,
                    expiry,
                    jit,
                    max_lsp_fee,
                },
        } => (
            post(
                "/v1/invoice/create",
                json!({ "sats": sats, "description": description, "expiry_secs": expiry,
                        "jit": jit, "max_lsp_fee_sats": max_lsp_fee }),
            )
            .await?,
            |v| v["invoice"].as_str().unwrap_or_default().to_string(),
        ),
        Command::Invoice {
            what: InvoiceCommand::Hold { sats, expiry },
        } => {
            let preimage = Preimage::random();
            let mut v = post(
                "/v1/hold/create",
                json!({ "hash": preimage.hash(), "sats": sats, "expiry_secs": expiry }),
            )
            .await?;
            v["preimage"] = json!(preimage.0.as_hex().to_string());
            (v, |v| {
                format!(
                    "{}\nhash:     {}\npreimage: {} (keep it: `mostro-box invoice settle` needs it)",
                    s(&v["invoice"]),
                    s(&v["payment_hash"]),
                    s(&v["preimage"])
                )
            })
        }
        Command::Invoice {
            what: InvoiceCommand::Settle { preimage },
        } => (
            post("/v1/hold/settle", json!({ "preimage": preimage })).await?,
            |v| format!("settled {}", s(&v["settled"])),
        ),
        Command::Invoice {
            what: InvoiceCommand::Cancel { hash },
        } => (
            post("/v1/hold/cancel", json!({ "hash": hash })).await?,
            |v| format!("cancelled {}", s(&v["cancelled"])),
        ),
        Command::Invoice {
            what: InvoiceCommand::Holds,
        } => (get("/v1/hold/list").await?, |v| {
            table(
                &v["holds"],
                &[
                    ("HASH", "hash"),
                    ("SATS", "amount_sats"),
                    ("STATE", "state"),
                    ("BLOCKS LEFT", "blocks_left"),
                ],
            )
        }),
        Command::Pay {
            invoice,
            sats,
            max_fee_sats,
            timeout,
        } => {
            let body = json!({
                "invoice": invoice, "sats": sats, "max_fee_sats": max_fee_sats,
                "timeout_secs": timeout,
            });
            let v = post("/v1/pay", body).await?;
            if let Some(err) = v["error"].as_str() {
                if as_json {
                    println!("{v}");
                }
                bail!("{err}");
            }
            (v, |v| match v["outcome"].as_str() {
                Some("succeeded") => format!(
                    "paid {} sats (routing fee {} msat)",
                    v["amount_sats"], v["fee_msat"]
                ),
                _ => format!(
                    "payment {} still in flight; its outcome will show in the node's log",
                    v["payment_hash"].as_str().unwrap_or_default()
                ),
            })
        }
        Command::Order { what } => match what {
            OrderCommand::List => (get("/v1/order/list").await?, |v| {
                table(
                    &v["orders"],
                    &[
                        ("ID", "id"),
                        ("KIND", "kind"),
                        ("STATUS", "status"),
                        ("SATS", "amount_sats"),
                        ("FIAT", "fiat"),
                    ],
                )
            }),
            OrderCommand::Show { id } => {
                let path = format!("/v1/order/show?id={}", id.trim());
                (call(data_dir, "GET", &path, None).await?, |v| {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                })
            }
            OrderCommand::Payout { id, decision } => {
                let decision = match decision {
                    super::PayoutChoice::Resume => "resume",
                    super::PayoutChoice::Paid => "paid",
                };
                let body = serde_json::json!({ "id": id.trim(), "decision": decision });
                (
                    call(data_dir, "POST", "/v1/order/payout", Some(body)).await?,
                    |v| {
                        format!(
                            "order {}: {}, payout {}",
                            v["id"].as_str().unwrap_or_default(),
                            v["status"].as_str().unwrap_or_default(),
                            v["payout"]["state"]["state"].as_str().unwrap_or_default()
                        )
                    },
                )
            }
        },
        Command::Dispute { what } => match what {
            DisputeCommand::List => (get("/v1/dispute/list").await?, |v| {
                table(
                    &v["disputes"],
                    &[
                        ("DISPUTE", "id"),
                        ("ORDER", "order_id"),
                        ("STATUS", "status"),
                        ("BY", "initiator"),
                        ("SATS", "amount_sats"),
                        ("FIAT", "fiat"),
                    ],
                )
            }),
            DisputeCommand::Show { id } => {
                let path = format!("/v1/dispute/show?id={}", id.trim());
                (call(data_dir, "GET", &path, None).await?, |v| {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                })
            }
            DisputeCommand::Take { id } => {
                (post("/v1/dispute/take", json!({ "id": id })).await?, |v| {
                    format!(
                        "took dispute {}\n{}",
                        v["id"].as_str().unwrap_or_default(),
                        serde_json::to_string_pretty(&v["details"]).unwrap_or_default()
                    )
                })
            }
            DisputeCommand::Settle { id } => (
                post("/v1/dispute/settle", json!({ "id": id })).await?,
                outcome,
            ),
            DisputeCommand::Cancel { id } => (
                post("/v1/dispute/cancel", json!({ "id": id })).await?,
                outcome,
            ),
        },
        Command::Solver { what } => match what {
            SolverCommand::Add { npub, read_only } => (
                post(
                    "/v1/solver/add",
                    json!({ "pubkey": npub, "read_only": read_only }),
                )
                .await?,
                |v| format!("solver {} added", v["pubkey"].as_str().unwrap_or_default()),
            ),
            SolverCommand::List => (get("/v1/solver/list").await?, |v| {
                table(
                    &v["solvers"],
                    &[("NPUB", "npub"), ("PERMISSION", "permission")],
                )
            }),
        },
        _ => unreachable!("daemon commands are handled in main"),
    };
    if as_json {
        println!("{value}");
    } else {
        println!("{}", render(&value));
    }
    Ok(())
}

/// Prints a channel's progress (pending → confirming → ready) until it is ready.
async fn follow_channel(data_dir: &Path, user_channel_id: &str) -> anyhow::Result<()> {
    println!("channel {user_channel_id}: funding transaction published (Ctrl-C stops watching; the channel keeps opening)");
    let mut last = String::new();
    loop {
        let list = call(data_dir, "GET", "/v1/channel/list", None).await?;
        let Some(c) = list["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["user_channel_id"] == user_channel_id)
        else {
            bail!("the channel disappeared: the peer refused or it closed; see the node's log");
        };
        let state = c["state"].as_str().unwrap_or_default();
        let line = match state {
            "pending" => "pending: waiting for the funding transaction to confirm".to_string(),
            "confirming" => format!(
                "confirmed: {}/{} confirmations",
                c["confirmations"], c["confirmations_required"]
            ),
            other => other.to_string(),
        };
        if line != last {
            println!("  {line}");
            last = line;
        }
        if state == "ready" {
            println!(
                "channel {} ready: {} sats outbound, {} sats inbound",
                c["channel_id"].as_str().unwrap_or_default(),
                c["outbound_sats"],
                c["inbound_sats"]
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn render_status(v: &Value) -> String {
    let ln = &v["lightning"];
    let b = &v["balances"];
    format!(
        "mostro-box {}  (up {} s, {})\n\
         relay:        {}\n\
         npub:         {}\n\
         lightning:    {}\n\
         listening:    {}\n\
         block height: {}\n\
         peers:        {} connected\n\
         channels:     {} ({} usable)\n\
         on-chain:     {} sats ({} spendable)\n\
         lightning:    {} sats ({} outbound, {} inbound)\n\
         orders:       {} active, {} held payments\n\
         status page:  http://{}/  (`mostro-box status-page` prints its login link)",
        s(&v["version"]),
        v["uptime_seconds"],
        s(&v["network"]),
        s(&v["relay_url"]),
        s(&v["npub"]),
        s(&ln["node_id"]),
        ln["listening"]
            .as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        ln["block_height"],
        ln["peers"],
        ln["channels"],
        ln["usable_channels"],
        b["onchain_total_sats"],
        b["onchain_spendable_sats"],
        b["lightning_sats"],
        b["outbound_sats"],
        b["inbound_sats"],
        v["active_orders"],
        ln["open_holds"],
        s(&v["status_page"]["listen"]),
    )
}

/// The status page's link: on this machine's network address when it listens on all of them,
/// with the admin token when the page asks for it.
fn status_page(data_dir: &Path, status: &Value) -> anyhow::Result<Value> {
    let page = &status["status_page"];
    let listen: std::net::SocketAddr = s(&page["listen"]).parse()?;
    let host = if listen.ip().is_unspecified() {
        lan_address().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
    } else {
        listen.ip()
    };
    let base = format!("http://{}/", std::net::SocketAddr::new(host, listen.port()));
    let url = if page["require_token"].as_bool() == Some(false) {
        base
    } else {
        format!("{base}?token={}", crate::keys::admin_token(data_dir)?)
    };
    Ok(json!({ "url": url, "this_machine_only": listen.ip().is_loopback() }))
}

/// The address other machines on the network reach this one at: the source address of the
/// default route (a UDP "connect" sends nothing).
fn lan_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

fn render_status_page(v: &Value) -> String {
    let url = s(&v["url"]);
    let code = qrcode::QrCode::new(url.as_bytes())
        .map(|c| {
            c.render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .build()
        })
        .unwrap_or_default();
    let reach = if v["this_machine_only"].as_bool() == Some(true) {
        "The page listens on this machine only. From your computer: ssh -L 7778:127.0.0.1:7778 \
         <this box>, then open the link there; or, on a home network, set [status] listen = \
         \"0.0.0.0:7778\" in mostro-box.toml and restart, for your phone."
    } else {
        "Or scan it with your phone (on the same network):"
    };
    format!(
        "Open the status page (this link logs you in; keep it to yourself):\n  {url}\n\n\
         {reach}\n{code}"
    )
}

fn render_balance(v: &Value) -> String {
    format!(
        "on-chain:  {} sats ({} spendable, {} reserved for anchor channels)\n\
         lightning: {} sats ({} outbound, {} inbound)",
        v["onchain_total_sats"],
        v["onchain_spendable_sats"],
        v["anchor_reserve_sats"],
        v["lightning_sats"],
        v["outbound_sats"],
        v["inbound_sats"],
    )
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A plain text table of `rows` with the given (header, field) columns.
fn table(rows: &Value, columns: &[(&str, &str)]) -> String {
    let rows: Vec<Vec<String>> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| columns.iter().map(|(_, f)| s(&r[*f])).collect())
        .collect();
    if rows.is_empty() {
        return "(none)".into();
    }
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(columns.iter().map(|(h, _)| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}
