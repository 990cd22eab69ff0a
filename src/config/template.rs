//! The commented settings file `init` writes.

use super::*;

impl Settings {
    /// The commented settings file `init` writes: every key with its default and meaning.
    pub fn template() -> String {
        let d = Settings::default();
        format!(
            r#"# mostro-box settings. Every key is shown with its default.
# Order of precedence: this file < MOSTRO_BOX_<SECTION>_<KEY> environment variables
# (e.g. MOSTRO_BOX_MOSTRO_FEE=0.006) < `mostro-box run --set section.key=value`.

[mostro]
# Total fee of a trade as a fraction; the buyer and the seller each pay half.
fee = {fee:?}
# Order size limits in sats.
max_order_amount = {max_order_amount}
min_payment_amount = {min_payment_amount}
# Most a buyer payout may spend on routing, as a fraction of it (small payouts: max(1 %, 10 sats)).
max_routing_fee = {max_routing_fee:?}
# Lifetime of a pending order when the maker sets none, and the longest one a maker may set.
expiration_hours = {expiration_hours}
max_expiration_days = {max_expiration_days}
# Seconds a taken order may wait for the buyer's invoice or the seller's payment.
expiration_seconds = {expiration_seconds}
# NIP-13 proof of work demanded on incoming messages (0 = none).
pow = {pow}
# Proof of work demanded from a trade key without an active trade (defaults to pow).
# pow_first_contact = 0
# Fiat currencies accepted; [] accepts every currency.
fiat_currencies_accepted = {fiat:?}
# Most order ids a trader may ask about in one `orders` request.
max_orders_per_response = {max_orders_per_response}
# Below this much free disk (MB) new orders are refused; trades under way still finish.
min_free_disk_mb = {min_free_disk_mb}
# Pending orders one trader (identity) may have on the book at once.
max_pending_orders_per_identity = {max_pending}
# Seconds between publications of the relay list (kind 10002) and node info (kind 38385).
publish_relays_interval = {publish_relays_interval}
publish_mostro_info_interval = {publish_mostro_info_interval}
# Seconds between flushes of rating events (kind 38384).
user_rates_sent_interval_seconds = {rates}
# Protocol version advertised to clients: 2 = NIP-44 direct (kind 14), 1 = gift wrap (kind 1059).
# The box accepts both and answers in the transport each request used.
protocol_version = {protocol_version}
# Public profile (kind 0) and instance name in the `y` tag; kind 0 is published if any is set.
name = ""
about = ""
picture = ""
website = ""

[lightning]
# Bitcoin network: "bitcoin", "testnet", "signet" or "regtest".
network = "{network}"
# Where the Lightning node accepts peers, and its public alias.
listen = "{ln_listen}"
alias = "{alias}"
# Where the node learns about the chain: "esplora" (default; esplora_url empty = a public
# server for the network), "electrum" (electrum_url) or "bitcoind" (your own node's RPC, e.g.
# on Umbrel: bitcoind_rpc_address, bitcoind_rpc_user, bitcoind_rpc_password).
chain_source = "{chain_source}"
esplora_url = ""
electrum_url = ""
bitcoind_rpc_address = "{rpc_addr}"
bitcoind_rpc_user = ""
bitcoind_rpc_password = ""
# Rapid Gossip Sync server URL (faster start on small machines); empty = gossip from peers.
rgs_url = ""
# An LSPS2 liquidity provider for just-in-time inbound channels (all three, or none).
lsps2_node_id = ""
lsps2_address = ""
lsps2_token = ""
# Seconds a seller's hold invoice stays payable (advertised to clients).
hold_invoice_expiration_window = {hiew}
# Blocks a seller's payment stays held once paid. The box asks payers for a longer lock so
# this whole window is usable, and settles or cancels every held payment before it ends.
hold_invoice_cltv_delta = {cltv}
# A buyer's invoice must not expire sooner than this many seconds from now.
invoice_expiration_window = {iew}
# A buyer's invoice may ask for at most this min_final_cltv_expiry_delta (blocks).
max_final_cltv_expiry_delta = {mfced}
# A failed payout to the buyer is retried this many times, this many seconds apart; then the
# buyer is asked for a new invoice.
payment_attempts = {attempts}
payment_retries_interval = {retries}
# A buyer who has not sent that new invoice is asked again every this many seconds (the sats
# wait in the node; the status page lists the order).
invoice_reminder_interval = {reminder}
# Blocks before a held payment's deadline at which an unfinished trade is wound up (an active
# trade is cancelled and the seller refunded; a fiat-sent trade goes to dispute).
escrow_deadline_margin_blocks = {margin}

[relay]
# Where the embedded relay listens (WebSocket, NIP-11 and GET /health on one port).
listen = "{listen}"
# The URL traders use to reach this relay (port forward, tunnel or domain).
public_url = "{public_url}"
# Largest event accepted, in bytes.
max_event_bytes = {max_event_bytes}
# Per-IP limits: events published per minute and connections open at once; and subscriptions
# per connection (so one address holds at most connections x subscriptions).
events_per_minute_per_ip = {epm}
max_connections_per_ip = {mcip}
# New connections one address may open per minute, and bytes per second the relay reads from it
# (a flood waits in the sender's own network buffers). Raise both if many traders share one
# address (carrier-grade NAT).
connections_per_minute_per_ip = {cpm}
bytes_per_second_per_ip = {bps}
max_subscriptions_per_connection = {msub}
# Open WebSocket connections in total.
max_connections = {maxconn}
# Requests accepted and not yet handled (past it senders are asked to retry shortly), and the
# private messages kept for traders (replies and chats: the oldest go first, and none is kept
# longer than the retention). Both bound what a flood can take.
max_inbox_backlog = {backlog}
max_private_messages = {maxpriv}
private_message_retention_days = {retention}
# Reverse proxies in front of the relay whose X-Forwarded-For names the trader, e.g.
# ["127.0.0.1"] for Caddy or nginx on this machine. Leave empty otherwise: the header is then
# ignored (a Tor onion service forwards no address, and anyone could write one).
trusted_proxies = []

[nostr]
# Public relays that get copies of the node's public events (orders, info, relay list), e.g.
# ["wss://relay.mostro.network", "wss://nos.lol"]. Unreachable relays are retried with back-off.
publish_relays = []

[price]
# Yadio-compatible price API: the box reads {{api_url}}/exrates/BTC.
api_url = "{api_url}"
update_interval_seconds = {upd}
# Market-price orders are refused (price_too_stale) when the last price is older than this.
max_staleness_seconds = {stale}

[status]
# The operator's status page (open the link `mostro-box status-page` prints). This machine only
# by default (on a server, reach it through `ssh -L 7778:127.0.0.1:7778`); "0.0.0.0:7778" opens
# it to your home network, for your phone (the Raspberry Pi installer sets that). The page
# travels as plain HTTP: never forward this port to the internet.
listen = "{status_listen}"
# Keep true unless a proxy logs you in first (Umbrel's app proxy does).
require_token = true
"#,
            fee = d.mostro.fee,
            max_order_amount = d.mostro.max_order_amount,
            min_payment_amount = d.mostro.min_payment_amount,
            max_routing_fee = d.mostro.max_routing_fee,
            expiration_hours = d.mostro.expiration_hours,
            max_expiration_days = d.mostro.max_expiration_days,
            expiration_seconds = d.mostro.expiration_seconds,
            pow = d.mostro.pow,
            fiat = d.mostro.fiat_currencies_accepted,
            max_orders_per_response = d.mostro.max_orders_per_response,
            min_free_disk_mb = d.mostro.min_free_disk_mb,
            max_pending = d.mostro.max_pending_orders_per_identity,
            publish_relays_interval = d.mostro.publish_relays_interval,
            publish_mostro_info_interval = d.mostro.publish_mostro_info_interval,
            rates = d.mostro.user_rates_sent_interval_seconds,
            protocol_version = d.mostro.protocol_version,
            network = d.lightning.network,
            ln_listen = d.lightning.listen,
            alias = d.lightning.alias,
            chain_source = d.lightning.chain_source,
            rpc_addr = d.lightning.bitcoind_rpc_address,
            mfced = d.lightning.max_final_cltv_expiry_delta,
            attempts = d.lightning.payment_attempts,
            retries = d.lightning.payment_retries_interval,
            reminder = d.lightning.invoice_reminder_interval,
            margin = d.lightning.escrow_deadline_margin_blocks,
            hiew = d.lightning.hold_invoice_expiration_window,
            cltv = d.lightning.hold_invoice_cltv_delta,
            iew = d.lightning.invoice_expiration_window,
            listen = d.relay.listen,
            public_url = d.relay.public_url,
            max_event_bytes = d.relay.max_event_bytes,
            epm = d.relay.events_per_minute_per_ip,
            mcip = d.relay.max_connections_per_ip,
            cpm = d.relay.connections_per_minute_per_ip,
            bps = d.relay.bytes_per_second_per_ip,
            msub = d.relay.max_subscriptions_per_connection,
            maxconn = d.relay.max_connections,
            backlog = d.relay.max_inbox_backlog,
            maxpriv = d.relay.max_private_messages,
            retention = d.relay.private_message_retention_days,
            api_url = d.price.api_url,
            upd = d.price.update_interval_seconds,
            stale = d.price.max_staleness_seconds,
            status_listen = d.status.listen,
        )
    }
}
