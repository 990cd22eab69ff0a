//! Range checks on the settings: a typo stops the box at start-up with one line naming the key,
//! the value and what is allowed, instead of running with a surprise.

use super::*;

impl Settings {
    /// Range checks on every value a typo could break.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.mostro;
        check(
            "mostro.fee",
            m.fee,
            (0.0..1.0).contains(&m.fee),
            "a fraction from 0 to below 1, e.g. 0.006",
        )?;
        check(
            "mostro.min_payment_amount",
            m.min_payment_amount,
            m.min_payment_amount >= 1,
            "at least 1 sat",
        )?;
        check(
            "mostro.max_order_amount",
            m.max_order_amount,
            m.max_order_amount >= m.min_payment_amount,
            "at least mostro.min_payment_amount",
        )?;
        check(
            "mostro.expiration_hours",
            m.expiration_hours,
            (1..=24 * 365).contains(&m.expiration_hours),
            "1 to 8760 hours",
        )?;
        check(
            "mostro.max_expiration_days",
            m.max_expiration_days,
            (1..=365).contains(&m.max_expiration_days),
            "1 to 365 days",
        )?;
        check(
            "mostro.expiration_seconds",
            m.expiration_seconds,
            (1..=86_400).contains(&m.expiration_seconds),
            "1 to 86400 seconds",
        )?;
        check("mostro.pow", m.pow, m.pow <= 32, "0 to 32 bits")?;
        check(
            "mostro.max_orders_per_response",
            m.max_orders_per_response,
            (1..=1000).contains(&m.max_orders_per_response),
            "1 to 1000",
        )?;
        check(
            "mostro.protocol_version",
            m.protocol_version,
            matches!(m.protocol_version, 1 | 2),
            "1 (gift wrap) or 2 (NIP-44 direct)",
        )?;
        for (key, v) in [
            ("mostro.publish_relays_interval", m.publish_relays_interval),
            (
                "mostro.publish_mostro_info_interval",
                m.publish_mostro_info_interval,
            ),
            (
                "mostro.user_rates_sent_interval_seconds",
                m.user_rates_sent_interval_seconds,
            ),
            (
                "price.update_interval_seconds",
                self.price.update_interval_seconds,
            ),
        ] {
            check(key, v, v >= 1, "at least 1 second")?;
        }
        for code in &m.fiat_currencies_accepted {
            check(
                "mostro.fiat_currencies_accepted",
                format!("{code:?}"),
                !code.is_empty() && code.chars().all(|c| c.is_ascii_alphanumeric()),
                "a list of currency codes such as [\"USD\", \"VES\"], or [] for all",
            )?;
        }
        check(
            "mostro.max_pending_orders_per_identity",
            m.max_pending_orders_per_identity,
            m.max_pending_orders_per_identity >= 1,
            "at least 1",
        )?;
        check(
            "mostro.max_routing_fee",
            m.max_routing_fee,
            (0.0..0.5).contains(&m.max_routing_fee),
            "a fraction from 0 to below 0.5, e.g. 0.002",
        )?;
        let l = &self.lightning;
        check(
            "lightning.payment_attempts",
            l.payment_attempts,
            (1..=100).contains(&l.payment_attempts),
            "1 to 100 attempts",
        )?;
        check(
            "lightning.payment_retries_interval",
            l.payment_retries_interval,
            l.payment_retries_interval >= 1,
            "at least 1 second",
        )?;
        check(
            "lightning.invoice_reminder_interval",
            l.invoice_reminder_interval,
            l.invoice_reminder_interval >= 1,
            "at least 1 second",
        )?;
        // The trade's wind-up (a dispute for a trade whose fiat was sent) must come well before
        // the Lightning guard, which gives the seller the sats back with no dispute.
        let min_margin = MIN_ESCROW_MARGIN_BLOCKS;
        check(
            "lightning.escrow_deadline_margin_blocks",
            l.escrow_deadline_margin_blocks,
            l.escrow_deadline_margin_blocks >= min_margin
                && l.escrow_deadline_margin_blocks < l.hold_invoice_cltv_delta,
            &format!(
                "at least {min_margin} blocks (the Lightning guard gives the seller the sats \
                 back shortly before the deadline, with no dispute) and fewer than \
                 lightning.hold_invoice_cltv_delta"
            ),
        )?;
        check(
            "lightning.hold_invoice_cltv_delta",
            l.hold_invoice_cltv_delta,
            (12..=720).contains(&l.hold_invoice_cltv_delta),
            "12 to 720 blocks (payers refuse invoices that lock their funds much longer)",
        )?;
        check(
            "lightning.electrum_url",
            format!("{:?}", l.electrum_url),
            l.chain_source != ChainSource::Electrum || !l.electrum_url.trim().is_empty(),
            "a server such as \"ssl://electrum.blockstream.info:50002\" when chain_source = \"electrum\"",
        )?;
        check(
            "lightning.bitcoind_rpc_address",
            format!("{:?}", l.bitcoind_rpc_address),
            l.chain_source != ChainSource::Bitcoind || l.bitcoind_rpc().is_some(),
            "HOST:PORT of bitcoind's RPC, e.g. \"127.0.0.1:8332\", with bitcoind_rpc_user and bitcoind_rpc_password set",
        )?;
        check(
            "lightning.alias",
            format!("{:?}", l.alias),
            l.alias.len() <= 32,
            "at most 32 bytes",
        )?;
        check(
            "lightning.lsps2_node_id",
            format!("{:?}", l.lsps2_node_id),
            l.lsps2_node_id.is_empty()
                || (l
                    .lsps2_node_id
                    .parse::<ldk_node::bitcoin::secp256k1::PublicKey>()
                    .is_ok()
                    && !l.lsps2_address.is_empty()),
            "the LSP's 66-hex-digit node id, with lightning.lsps2_address set",
        )?;
        let r = &self.relay;
        check(
            "relay.public_url",
            format!("{:?}", r.public_url),
            nostr::RelayUrl::parse(&r.public_url).is_ok(),
            "a ws:// or wss:// URL traders can reach, e.g. \"wss://mostro.example.org\"",
        )?;
        check(
            "relay.max_event_bytes",
            r.max_event_bytes,
            (1024..=1 << 20).contains(&r.max_event_bytes),
            "1024 to 1048576 bytes",
        )?;
        check(
            "relay.events_per_minute_per_ip",
            r.events_per_minute_per_ip,
            r.events_per_minute_per_ip >= 1,
            "at least 1",
        )?;
        check(
            "relay.max_connections_per_ip",
            r.max_connections_per_ip,
            r.max_connections_per_ip >= 1,
            "at least 1",
        )?;
        check(
            "relay.connections_per_minute_per_ip",
            r.connections_per_minute_per_ip,
            r.connections_per_minute_per_ip >= 1,
            "at least 1",
        )?;
        check(
            "relay.bytes_per_second_per_ip",
            r.bytes_per_second_per_ip,
            r.bytes_per_second_per_ip as usize >= 1024,
            "at least 1024",
        )?;
        check(
            "relay.max_subscriptions_per_connection",
            r.max_subscriptions_per_connection,
            r.max_subscriptions_per_connection >= 1,
            "at least 1",
        )?;
        check(
            "relay.max_connections",
            r.max_connections,
            r.max_connections >= 1,
            "at least 1",
        )?;
        check(
            "relay.max_inbox_backlog",
            r.max_inbox_backlog,
            r.max_inbox_backlog >= 100,
            "at least 100",
        )?;
        check(
            "relay.max_private_messages",
            r.max_private_messages,
            r.max_private_messages >= 1000,
            "at least 1000",
        )?;
        check(
            "relay.private_message_retention_days",
            r.private_message_retention_days,
            r.private_message_retention_days >= 1,
            "at least 1 day",
        )?;
        for url in &self.nostr.publish_relays {
            check(
                "nostr.publish_relays",
                format!("{url:?}"),
                nostr::RelayUrl::parse(url).is_ok(),
                "a list of ws:// or wss:// URLs",
            )?;
        }
        check(
            "price.api_url",
            format!("{:?}", self.price.api_url),
            self.price.api_url.starts_with("http://") || self.price.api_url.starts_with("https://"),
            "an http:// or https:// URL of a Yadio-compatible API",
        )?;
        Ok(())
    }
}

fn check(
    key: &str,
    value: impl std::fmt::Display,
    ok: bool,
    allowed: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: key.into(),
            value: value.to_string(),
            allowed: allowed.into(),
        })
    }
}
