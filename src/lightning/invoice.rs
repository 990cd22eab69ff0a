//! Checks on invoices the box is asked to pay (a buyer's payout invoice, the operator's `pay`):
//! network, amount, expiry and CLTV delta, as the reference daemon checks them (protocol 7.2).

use std::str::FromStr;

use ldk_node::bitcoin::Network;
use ldk_node::lightning_invoice::{Bolt11Invoice, Currency};

/// Why an invoice or payout destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// Neither a BOLT11 invoice nor a Lightning address.
    #[error("not a BOLT11 invoice or Lightning address")]
    Unparsable,
    /// For another network.
    #[error("the invoice is for {found}, the node runs on {expected}")]
    WrongNetwork {
        /// Network of the invoice.
        found: String,
        /// The node's network.
        expected: String,
    },
    /// Already expired, or expires before the payout could happen.
    #[error("the invoice has expired or expires too soon")]
    Expired,
    /// Amount differs from what the buyer is owed.
    #[error("the invoice amount differs from the amount due")]
    WrongAmount,
    /// Asks for a longer final CLTV than the node allows.
    #[error("the invoice asks for a final CLTV delta of {0} blocks, more than the node allows")]
    CltvTooLong(u64),
}

/// What a payable invoice must satisfy.
#[derive(Debug, Clone)]
pub struct InvoiceRules {
    /// The node's network.
    pub network: Network,
    /// The amount due in msat; `None` accepts any amount (and amountless invoices).
    pub amount_msat: Option<u64>,
    /// The invoice must stay valid until this unix time.
    pub valid_until: u64,
    /// Largest `min_final_cltv_expiry_delta` accepted.
    pub max_final_cltv: u64,
}

/// Parses and checks a BOLT11 invoice against `rules`.
pub fn check_invoice(text: &str, rules: &InvoiceRules) -> Result<Bolt11Invoice, InvoiceError> {
    let text = text.trim();
    let text = text
        .strip_prefix("lightning:")
        .or_else(|| text.strip_prefix("LIGHTNING:"))
        .unwrap_or(text);
    let inv = Bolt11Invoice::from_str(text).map_err(|_| InvoiceError::Unparsable)?;
    let expected = currency(rules.network);
    if inv.currency() != expected {
        return Err(InvoiceError::WrongNetwork {
            found: network_name(inv.currency()).into(),
            expected: network_name(expected).into(),
        });
    }
    let expires = inv.duration_since_epoch() + inv.expiry_time();
    if expires.as_secs() <= rules.valid_until {
        return Err(InvoiceError::Expired);
    }
    if inv.min_final_cltv_expiry_delta() > rules.max_final_cltv {
        return Err(InvoiceError::CltvTooLong(inv.min_final_cltv_expiry_delta()));
    }
    match (inv.amount_milli_satoshis(), rules.amount_msat) {
        (Some(have), Some(want)) if have != want => Err(InvoiceError::WrongAmount),
        _ => Ok(inv),
    }
}

/// Checks a buyer's payout destination (reference §7.2): a Lightning address (`user@domain`,
/// resolved at payout time) or a BOLT11 invoice for the node's network, amountless or for
/// exactly `amount_sats` (when non-zero), valid for `invoice_expiration_window` more seconds
/// and with an acceptable final CLTV.
pub fn check_payout_destination(
    dest: &str,
    amount_sats: i64,
    now: i64,
    settings: &crate::config::LightningSettings,
) -> Result<(), InvoiceError> {
    if is_lightning_address(dest) {
        return Ok(());
    }
    let rules = InvoiceRules {
        network: settings.bitcoin_network(),
        amount_msat: (amount_sats > 0).then(|| amount_sats as u64 * 1000),
        valid_until: now.max(0) as u64 + settings.invoice_expiration_window,
        max_final_cltv: settings.max_final_cltv_expiry_delta,
    };
    check_invoice(dest, &rules).map(|_| ())
}

/// `user@domain.tld` with the characters LUD-16 allows.
pub fn is_lightning_address(s: &str) -> bool {
    let Some((user, domain)) = s.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.+".contains(c))
        && domain.contains('.')
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':')
}

fn currency(network: Network) -> Currency {
    match network {
        Network::Bitcoin => Currency::Bitcoin,
        Network::Testnet | Network::Testnet4 => Currency::BitcoinTestnet,
        Network::Signet => Currency::Signet,
        _ => Currency::Regtest,
    }
}

fn network_name(c: Currency) -> &'static str {
    match c {
        Currency::Bitcoin => "bitcoin",
        Currency::BitcoinTestnet => "testnet",
        Currency::Signet => "signet",
        Currency::Regtest => "regtest",
        Currency::Simnet => "simnet",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldk_node::bitcoin::hashes::{sha256, Hash};
    use ldk_node::bitcoin::secp256k1::{Secp256k1, SecretKey};
    use ldk_node::lightning_invoice::{InvoiceBuilder, PaymentSecret};
    use std::time::Duration;

    fn invoice(currency: Currency, msat: Option<u64>, cltv: u64) -> String {
        let secp = Secp256k1::new();
        let key = SecretKey::from_slice(&[7; 32]).unwrap();
        let b = InvoiceBuilder::new(currency)
            .description("x".into())
            .payment_hash(sha256::Hash::hash(b"p"))
            .payment_secret(PaymentSecret([1; 32]))
            .duration_since_epoch(Duration::from_secs(1_000_000))
            .expiry_time(Duration::from_secs(3600))
            .min_final_cltv_expiry_delta(cltv);
        match msat {
            Some(m) => b
                .amount_milli_satoshis(m)
                .build_signed(|h| secp.sign_ecdsa_recoverable(h, &key)),
            None => b.build_signed(|h| secp.sign_ecdsa_recoverable(h, &key)),
        }
        .unwrap()
        .to_string()
    }

    #[test]
    fn each_rule_names_its_problem() {
        let rules = InvoiceRules {
            network: Network::Regtest,
            amount_msat: Some(5_000),
            valid_until: 1_000_100,
            max_final_cltv: 432,
        };
        assert!(check_invoice(&invoice(Currency::Regtest, Some(5_000), 40), &rules).is_ok());
        assert!(check_invoice(&invoice(Currency::Regtest, None, 40), &rules).is_ok());
        assert_eq!(
            check_invoice(&invoice(Currency::Regtest, Some(6_000), 40), &rules).unwrap_err(),
            InvoiceError::WrongAmount
        );
        let err = check_invoice(&invoice(Currency::Bitcoin, Some(5_000), 40), &rules).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the invoice is for bitcoin, the node runs on regtest"
        );
        assert_eq!(
            check_invoice(&invoice(Currency::Regtest, Some(5_000), 500), &rules).unwrap_err(),
            InvoiceError::CltvTooLong(500)
        );
        let late = InvoiceRules {
            valid_until: 1_003_600,
            ..rules.clone()
        };
        assert_eq!(
            check_invoice(&invoice(Currency::Regtest, Some(5_000), 40), &late).unwrap_err(),
            InvoiceError::Expired
        );
        assert_eq!(
            check_invoice("lnbcrt1garbage", &rules).unwrap_err(),
            InvoiceError::Unparsable
        );
    }

    #[test]
    fn addresses_and_garbage() {
        let mainnet = crate::config::LightningSettings::default();
        assert!(check_payout_destination("alice@example.org", 0, 0, &mainnet).is_ok());
        assert_eq!(
            check_payout_destination("lnbc1garbage", 0, 0, &mainnet),
            Err(InvoiceError::Unparsable)
        );
        assert!(!is_lightning_address("no-at-sign"));
    }
}
