//! Lightning. Until the embedded node arrives (issue 3) this holds only the invoice checks the
//! order book needs.

use std::str::FromStr;

use ldk_node::lightning_invoice::{Bolt11Invoice, Currency};

/// Why a payout destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// Neither a BOLT11 invoice nor a Lightning address.
    #[error("not a BOLT11 invoice or Lightning address")]
    Unparsable,
    /// For another network.
    #[error("invoice is for another network")]
    WrongNetwork,
    /// Already expired.
    #[error("invoice has expired")]
    Expired,
    /// Amount differs from what the buyer is owed.
    #[error("invoice amount differs from the amount due")]
    WrongAmount,
}

/// Checks a buyer's payout destination at order creation: a Lightning address (`user@domain`)
/// or a BOLT11 invoice for `network` (`bitcoin`, `testnet`, `signet`, `regtest`) that has not
/// expired and is amountless or for exactly `amount_sats` (when non-zero).
pub fn check_payout_destination(
    dest: &str,
    amount_sats: i64,
    now: i64,
    network: &str,
) -> Result<(), InvoiceError> {
    if is_lightning_address(dest) {
        return Ok(());
    }
    let inv = Bolt11Invoice::from_str(dest.trim()).map_err(|_| InvoiceError::Unparsable)?;
    let want = match network {
        "bitcoin" => Currency::Bitcoin,
        "testnet" => Currency::BitcoinTestnet,
        "signet" => Currency::Signet,
        _ => Currency::Regtest,
    };
    if inv.currency() != want {
        return Err(InvoiceError::WrongNetwork);
    }
    let expires = inv.duration_since_epoch() + inv.expiry_time();
    if expires.as_secs() as i64 <= now {
        return Err(InvoiceError::Expired);
    }
    match inv.amount_milli_satoshis() {
        None => Ok(()),
        Some(msat) if amount_sats == 0 || msat == amount_sats as u64 * 1000 => Ok(()),
        Some(_) => Err(InvoiceError::WrongAmount),
    }
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
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_garbage() {
        assert!(check_payout_destination("alice@example.org", 0, 0, "bitcoin").is_ok());
        assert_eq!(
            check_payout_destination("lnbc1garbage", 0, 0, "bitcoin"),
            Err(InvoiceError::Unparsable)
        );
        assert!(!is_lightning_address("no-at-sign"));
    }
}
