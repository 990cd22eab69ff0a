//! The status page: one read-only HTML page an operator opens on a phone or laptop to see that
//! the box is healthy. It shows what the CLI's `status`, `channel list`, `order list` and
//! `dispute list` show (the same API handlers build it), the relay URL as a QR code for
//! traders, and the latest warnings and errors.
//!
//! It is rendered on the server and refreshes itself, with no script, so it works on any phone
//! browser. It is behind the admin token (`admin.token`, mode 0600): the link `mostro-box
//! status-page` prints carries it once; the page then sets a cookie and drops it from the
//! address bar. Behind Umbrel's app proxy, which logs the operator in itself, the token can be
//! turned off (`status.require_token = false`).

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use super::handlers::{channel_list, query_param, status};
use super::orders::open_orders;
use super::{ApiContext, ApiError};
use crate::engine::order::{Deadline, PayoutState};

/// Seconds between the page's own refreshes.
pub const REFRESH_SECONDS: u32 = 15;
const COOKIE_NAME: &str = "mostro_box_token";

/// Serves the page until the task is aborted. `token` is `None` when a proxy logs the operator
/// in instead.
pub async fn serve(listener: TcpListener, ctx: Arc<ApiContext>, token: Option<Arc<String>>) {
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("status page: accept failed: {e}");
                continue;
            }
        };
        let ctx = ctx.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (ctx, token) = (ctx.clone(), token.clone());
                async move {
                    if req.uri().path() == "/metrics" {
                        return Ok::<_, Infallible>(metrics(&ctx, token.as_deref(), &req).await);
                    }
                    Ok::<_, Infallible>(answer(&ctx, token.as_deref(), &req))
                }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(crate::relay::http::HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(socket), service)
                .await
            {
                tracing::debug!("status page: connection from {addr} ended: {e}");
            }
        });
    }
}

fn answer(
    ctx: &ApiContext,
    token: Option<&String>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET || req.uri().path() != "/" {
        return page(StatusCode::NOT_FOUND, "Not found".into());
    }
    if let Some(token) = token {
        let given = query_param(req.uri().query().unwrap_or_default(), "token");
        if let Some(given) = given {
            if !same(given, token) {
                return page(
                    StatusCode::UNAUTHORIZED,
                    denied("That link's token is wrong."),
                );
            }
            // Logged in: keep the token in a cookie and drop it from the address bar.
            let mut r = page(StatusCode::SEE_OTHER, String::new());
            let cookie = format!(
                "{COOKIE_NAME}={token}; Path=/; Max-Age=2592000; HttpOnly; SameSite=Strict"
            );
            r.headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(SET_COOKIE, v);
            }
            return r;
        }
        if !cookie_token(req).is_some_and(|c| same(c, token)) {
            return page(
                StatusCode::UNAUTHORIZED,
                denied("This page needs the admin token."),
            );
        }
    }
    match render(ctx) {
        Ok(html) => page(StatusCode::OK, html),
        Err(e) => page(
            StatusCode::INTERNAL_SERVER_ERROR,
            shell(&format!(
                "<section class=\"alert\"><h2>The box could not read its state</h2><p>{}</p>\
                 <p>Check the log: <code>journalctl -u mostro-box</code></p></section>",
                esc(&e.message)
            )),
        ),
    }
}

/// `GET /metrics`: Prometheus text, for the admin token (`Authorization: Bearer TOKEN`, as
/// Prometheus sends a bearer token, or the page's cookie). It tells balances, volumes and
/// deadlines, so it is never on the relay's port, which faces the internet.
async fn metrics(
    ctx: &ApiContext,
    token: Option<&String>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    if let Some(token) = token {
        let bearer = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !bearer
            .or_else(|| cookie_token(req))
            .is_some_and(|t| same(t, token))
        {
            let mut r = Response::new(Full::new(Bytes::from(
                "metrics need the admin token: Authorization: Bearer <admin.token>\n",
            )));
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return r;
        }
    }
    let m = crate::metrics::Metrics {
        store: ctx.store.clone(),
        ln: ctx.lightning.clone(),
    };
    let mut body = m
        .render()
        .await
        .unwrap_or_else(|e| format!("# metrics unavailable: {e}\n"));
    let open = ctx.websockets.load(std::sync::atomic::Ordering::Relaxed);
    body.push_str(&format!(
        "# HELP mostro_relay_connections Open WebSocket connections.\n\
         # TYPE mostro_relay_connections gauge\nmostro_relay_connections {open}\n"
    ));
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn cookie_token(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))
}

/// Compares without stopping at the first difference, so timing tells nothing about the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn denied(why: &str) -> String {
    shell(&format!(
        "<section class=\"alert\"><h2>{why}</h2><p>On the box, run <code>mostro-box status-page</code> \
         and open the link it prints (or scan its QR code with your phone).</p></section>"
    ))
}

fn page(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src data:"),
    );
    r
}

fn render(ctx: &ApiContext) -> Result<String, ApiError> {
    let st = status(ctx)?;
    let now = crate::protocol::now();
    let height = st["lightning"]["block_height"].as_u64().unwrap_or(0) as i64;
    let disputes = super::disputes::list(ctx)?;
    let open_disputes: Vec<&Value> = disputes["disputes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["open"].as_bool() == Some(true))
        .collect();
    let errors = crate::logging::recent();
    let mut html = String::new();

    // Header and what needs the operator's attention.
    let name = ctx.settings.mostro.name.trim();
    html += &format!(
        "<header><h1>{}</h1><p class=\"dim\">mostro-box {} · {} · up {}</p></header>",
        esc(if name.is_empty() { "Mostro node" } else { name }),
        esc(st["version"].as_str().unwrap_or_default()),
        esc(ctx.settings.lightning.network.name()),
        duration(st["uptime_seconds"].as_i64().unwrap_or(0)),
    );
    if !open_disputes.is_empty() {
        html += &format!(
            "<p class=\"banner\" id=\"attention\">{} open dispute{}: decide with <code>mostro-box dispute list</code></p>",
            open_disputes.len(),
            if open_disputes.len() == 1 { "" } else { "s" }
        );
    }
    // Read once: the payout banners and the trades table below.
    let mut orders = open_orders(ctx)?;
    use crate::metrics::{needs_invoice, on_hold, payouts_in};
    let on_hold = payouts_in(&orders, on_hold);
    let waiting = payouts_in(&orders, needs_invoice);
    let read = ctx.store.read().map_err(ApiError::internal)?;
    let late = crate::metrics::late_claims(&read).map_err(ApiError::internal)?;
    drop(read);
    for (hash, msat, order) in &late {
        html +=
            &format!(
            "<p class=\"banner\" id=\"late-claim\">The Lightning node claimed {} sats held for \
             order <code>{}</code> after the box had given them back to the seller (payment \
             <code>{hash}</code>): the seller may be short; look at the order \
             (<code>mostro-box order show</code>) and settle with the seller.</p>",
            msat / 1000,
            order.map(|o| o.to_string()).unwrap_or_else(|| "unknown".into()),
        );
    }
    for (id, state) in &waiting {
        let since = match state {
            PayoutState::NeedsInvoice { since, .. } if *since > 0 => {
                format!(" for {}", duration(crate::protocol::now() - since))
            }
            _ => String::new(),
        };
        html += &format!(
            "<p class=\"banner\" id=\"needs-invoice\">The payout of order <code>{id}</code> \
             failed and has waited{since} for the buyer's new invoice; the buyer is reminded \
             every {}. The sats stay in the node until then (<code>mostro-box order show \
             {id}</code>).</p>",
            duration(ctx.settings.lightning.invoice_reminder_interval as i64),
        );
    }
    for (id, _) in &on_hold {
        html += &format!(
            "<p class=\"banner\" id=\"payout-on-hold\">Payout of order <code>{id}</code> is on hold \
             (restored from a backup: the old box may have paid it). Check, then \
             <code>mostro-box order payout {id} resume</code> or <code>paid</code></p>"
        );
    }

    // Traders.
    let relay = st["relay_url"].as_str().unwrap_or_default();
    html += &format!(
        "<section id=\"relay\"><h2>Traders connect here</h2><div class=\"row\"><div class=\"qr\">{}</div>\
         <div><p class=\"label\">Relay URL</p><p class=\"mono\" id=\"relay-url\">{}</p>\
         <p class=\"label\">Mostro pubkey</p><p class=\"mono\" id=\"npub\">{}</p></div></div></section>",
        qr(relay),
        esc(relay),
        esc(st["npub"].as_str().unwrap_or_default()),
    );

    // Money.
    let b = &st["balances"];
    let figure = |id: &str, label: &str, sats: &Value| {
        let n = sats.as_u64().unwrap_or(0);
        format!(
            "<div><p class=\"label\">{label}</p><p class=\"num\" id=\"{id}\" data-sats=\"{n}\">{} sats</p></div>",
            grouped(n)
        )
    };
    html += "<section id=\"balances\"><h2>Balances</h2><div class=\"grid\">";
    html += &figure("balance-onchain", "On-chain", &b["onchain_total_sats"]);
    html += &figure("balance-lightning", "Lightning", &b["lightning_sats"]);
    html += &figure("balance-inbound", "Can receive", &b["inbound_sats"]);
    html += &figure("balance-outbound", "Can send", &b["outbound_sats"]);
    html += "</div></section>";

    // The Lightning node.
    let ln = &st["lightning"];
    let node_id = ln["node_id"].as_str().unwrap_or_default();
    let uris: Vec<String> = ln["listening"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .map(|a| format!("<p class=\"mono\">{}@{}</p>", esc(node_id), esc(a)))
        .collect();
    html += &format!(
        "<section id=\"lightning\"><h2>Lightning node</h2><p class=\"label\">Node id</p>\
         <p class=\"mono\" id=\"node-id\">{}</p><p class=\"label\">Connect to it at</p>{}\
         <p>Block {} · {} peer(s) connected · {} of {} channel(s) usable · {} payment(s) held</p></section>",
        esc(node_id),
        uris.concat(),
        height,
        ln["peers"],
        ln["usable_channels"],
        ln["channels"],
        ln["open_holds"],
    );

    // Channels.
    let channels = channel_list(ctx);
    let rows: Vec<String> = channels["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "<tr>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                id_cell(c["peer"].as_str().unwrap_or_default()),
                esc(c["state"].as_str().unwrap_or_default()),
                grouped(c["capacity_sats"].as_u64().unwrap_or(0)),
                grouped(c["outbound_sats"].as_u64().unwrap_or(0)),
                grouped(c["inbound_sats"].as_u64().unwrap_or(0)),
            )
        })
        .collect();
    html += &table(
        "channels",
        "Channels",
        &["Peer", "State", "Capacity", "Can send", "Can receive"],
        &rows,
        "No channels yet: traders' sats need inbound liquidity (see the README's liquidity guide).",
        false,
    );

    // Disputes first among the trades: they are the operator's job.
    let rows: Vec<String> = open_disputes
        .iter()
        .map(|d| {
            format!(
                "<tr>{}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                id_cell(d["order_id"].as_str().unwrap_or_default()),
                esc(d["status"].as_str().unwrap_or_default()),
                esc(d["initiator"].as_str().unwrap_or_default()),
                grouped(d["amount_sats"].as_u64().unwrap_or(0)),
                esc(d["fiat"].as_str().unwrap_or_default()),
            )
        })
        .collect();
    html += &table(
        "disputes",
        "Open disputes",
        &["Order", "Status", "Opened by", "Sats", "Fiat"],
        &rows,
        "None.",
        !rows.is_empty(),
    );

    // Orders the box is still working on.
    orders.sort_by_key(|o| std::cmp::Reverse(o.created_at));
    let l = &ctx.settings;
    let rows: Vec<String> = orders
        .iter()
        .map(|o| {
            let next = match o.next_deadline(
                l.mostro.expiration_seconds,
                l.lightning.escrow_deadline_margin_blocks,
            ) {
                Some(Deadline::At(t)) if t <= now => format!("<td data-at=\"{t}\">due now</td>"),
                Some(Deadline::At(t)) => {
                    format!("<td data-at=\"{t}\">in {}</td>", duration(t - now))
                }
                Some(Deadline::Block(b)) => {
                    let left = (b as i64 - height).max(0);
                    format!(
                        "<td data-block=\"{b}\">block {b} (in {left} blocks, ~{})</td>",
                        duration(left * 600)
                    )
                }
                None => "<td>–</td>".into(),
            };
            format!(
                "<tr{}>{}<td>{}</td><td>{}</td><td>{}</td><td>{} {}</td>{}</tr>",
                if o.status == mostro_core::prelude::Status::Dispute {
                    " class=\"hot\""
                } else {
                    ""
                },
                id_cell(&o.id.to_string()),
                o.kind,
                o.status,
                grouped(o.amount.max(0) as u64),
                o.fiat_amount,
                esc(&o.fiat_code),
                next,
            )
        })
        .collect();
    html += &table(
        "orders",
        "Active orders",
        &["Order", "Kind", "Status", "Sats", "Fiat", "Next deadline"],
        &rows,
        "No active orders.",
        false,
    );

    // What went wrong lately.
    let rows: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "<tr><td>{} ago</td><td>{}</td><td>{}</td></tr>",
                duration(now - e.at),
                esc(&e.level),
                esc(&e.message),
            )
        })
        .collect();
    html += &table(
        "errors",
        "Recent warnings and errors",
        &["When", "Level", "What"],
        &rows,
        "None since the box started.",
        false,
    );
    html += &format!(
        "<footer class=\"dim\">Refreshes every {REFRESH_SECONDS} s. Read-only: act with the \
         <code>mostro-box</code> command.</footer>"
    );
    Ok(shell(&html))
}

fn table(
    id: &str,
    title: &str,
    head: &[&str],
    rows: &[String],
    empty: &str,
    alert: bool,
) -> String {
    let class = if alert { " class=\"alert\"" } else { "" };
    if rows.is_empty() {
        return format!(
            "<section id=\"{id}\"{class}><h2>{title}</h2><p class=\"dim\">{empty}</p></section>"
        );
    }
    let head: String = head.iter().map(|h| format!("<th>{h}</th>")).collect();
    format!(
        "<section id=\"{id}\"{class}><h2>{title} ({})</h2><div class=\"scroll\"><table><tr>{head}</tr>{}</table></div></section>",
        rows.len(),
        rows.concat()
    )
}

fn shell(body: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>mostro-box status</title>
<style>
:root{{color-scheme:light dark;font-family:system-ui,-apple-system,sans-serif;line-height:1.4}}
body{{margin:0 auto;padding:12px;max-width:980px}}
h1{{font-size:1.35em;margin:.2em 0}} h2{{font-size:1.05em;margin:0 0 .5em}}
section{{border:1px solid #8885;border-radius:10px;padding:10px 12px;margin:12px 0}}
p{{margin:.2em 0}} .dim{{opacity:.7}} .label{{font-size:.8em;opacity:.7;margin-top:.5em}}
.mono{{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-all}}
.num{{font-size:1.25em;font-variant-numeric:tabular-nums}}
.grid{{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:8px}}
.row{{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}} .row>div{{flex:1 1 220px}}
.qr{{flex:0 0 auto!important;background:#fff;padding:6px;border-radius:6px;line-height:0}}
.qr svg{{width:168px;height:168px}}
.scroll{{overflow-x:auto}} table{{border-collapse:collapse;width:100%;font-size:.88em}}
th,td{{text-align:left;padding:5px 6px;border-bottom:1px solid #8884;white-space:nowrap}}
.alert{{border-color:#d33;background:#d331}} .hot td{{background:#d332}}
.banner{{background:#d33;color:#fff;padding:8px 12px;border-radius:8px;font-weight:600}}
code{{font-size:.9em}}
</style></head><body>
{body}
</body></html>"#
    )
}

/// The relay URL as an inline SVG QR code, for a trader's phone camera.
fn qr(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color>()
                .min_dimensions(168, 168)
                .build();
            // Inline SVG needs no XML declaration.
            svg.find("<svg")
                .map(|i| svg[i..].to_string())
                .unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// 1234567 → "1,234,567".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rough, readable length of time: "40 s", "12 min", "3 h 5 min", "2 d 4 h".
fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=172_799 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// An order id or node id, short enough for a phone; the whole id is its tooltip.
fn id_cell(id: &str) -> String {
    format!(
        "<td class=\"mono\" title=\"{}\">{}</td>",
        esc(id),
        esc(&short(id, 8))
    )
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_for_people() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_000), "1,000");
        assert_eq!(grouped(12_345_678), "12,345,678");
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(3 * 3600 + 5 * 60), "3 h 5 min");
        assert_eq!(duration(-5), "0 s");
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
    }

    #[test]
    fn qr_is_inline_svg() {
        let svg = qr("ws://192.168.1.20:7777");
        assert!(svg.starts_with("<svg"), "{svg:.40}");
    }
}
