//! Mostro's hold window on LDK.
//!
//! ldk-node 0.7 writes `min_final_cltv_expiry_delta = 42` into every invoice and LDK fails a
//! held HTLC back `HTLC_FAIL_BACK_BUFFER` (39) blocks before it expires, so a seller's payment
//! would be held for about three blocks. A trade needs hours. The box therefore takes the
//! invoice ldk-node made, changes only its `c` field to a delta long enough for the configured
//! hold window, and signs it again with the node key (derived from the seed exactly as
//! ldk-node does). Payers honour the larger delta; LDK accepts the HTLC because it only checks
//! a lower bound. The box then watches every held payment's claim deadline itself and settles
//! or cancels it [`GUARD_BLOCKS`] before LDK would fail it back on its own.

use ldk_node::bitcoin::secp256k1::{Secp256k1, SecretKey};
use ldk_node::lightning::chain::channelmonitor::HTLC_FAIL_BACK_BUFFER;
use ldk_node::lightning_invoice::{
    Bolt11Invoice, MinFinalCltvExpiryDelta, RawBolt11Invoice, RawTaggedField, TaggedField,
};

/// Blocks before LDK's claim deadline at which the box stops waiting and cancels a held
/// payment (about an hour: room for the cancel to reach the payer and for a slow block clock).
pub const GUARD_BLOCKS: u32 = 6;
// The trade's wind-up margin leaves the solver blocks before the guard acts (checked when
// this compiles: `config` cannot import this module).
const _: () = assert!(crate::config::MIN_ESCROW_MARGIN_BLOCKS >= GUARD_BLOCKS + 6);
/// Blocks a payer's chain tip may lag the box's when it builds the HTLC.
const PAYER_LAG_BLOCKS: u32 = 3;

/// The `min_final_cltv_expiry_delta` to put in a hold invoice so that `hold_blocks` blocks of
/// holding remain before the box's own guard fires.
pub fn invoice_cltv_delta(hold_blocks: u32) -> u32 {
    hold_blocks + HTLC_FAIL_BACK_BUFFER + GUARD_BLOCKS + PAYER_LAG_BLOCKS
}

/// True when a payment held at `height` with LDK claim deadline `deadline` leaves at least
/// `hold_blocks` of hold window. LDK accepts HTLCs expiring anywhere above its own minimum, so
/// a payer that ignored the invoice's delta must be refused here.
pub fn leaves_window(deadline: u32, height: u32, hold_blocks: u32) -> bool {
    deadline.saturating_sub(height) >= hold_blocks + GUARD_BLOCKS
}

/// True when a held payment must be cancelled now, before LDK fails it back silently.
pub fn must_resolve_now(deadline: u32, height: u32) -> bool {
    height + GUARD_BLOCKS >= deadline
}

/// Why an invoice could not be re-issued.
#[derive(Debug, thiserror::Error)]
pub enum ReissueError {
    /// The re-signed invoice does not verify or does not name the node.
    #[error("re-signed invoice is invalid: {0}")]
    Invalid(String),
}

/// Returns `invoice` with its `min_final_cltv_expiry_delta` set to `delta`, signed by
/// `node_secret`. Every other field (hash, secret, amount, expiry, route hints) is kept.
pub fn with_cltv_delta(
    invoice: &Bolt11Invoice,
    delta: u32,
    node_secret: &SecretKey,
) -> Result<Bolt11Invoice, ReissueError> {
    let mut raw: RawBolt11Invoice = invoice.clone().into_signed_raw().raw_invoice().clone();
    let field = RawTaggedField::KnownSemantics(TaggedField::MinFinalCltvExpiryDelta(
        MinFinalCltvExpiryDelta(delta as u64),
    ));
    let fields = &mut raw.data.tagged_fields;
    match fields.iter_mut().find(|f| {
        matches!(
            f,
            RawTaggedField::KnownSemantics(TaggedField::MinFinalCltvExpiryDelta(_))
        )
    }) {
        Some(existing) => *existing = field,
        None => fields.push(field),
    }
    let secp = Secp256k1::new();
    let signed = raw
        .sign::<_, ()>(|msg| Ok(secp.sign_ecdsa_recoverable(msg, node_secret)))
        .expect("signing cannot fail");
    let reissued =
        Bolt11Invoice::from_signed(signed).map_err(|e| ReissueError::Invalid(format!("{e:?}")))?;
    if reissued.recover_payee_pub_key() != invoice.recover_payee_pub_key() {
        return Err(ReissueError::Invalid(
            "signed by a key other than the node's".into(),
        ));
    }
    Ok(reissued)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldk_node::bitcoin::hashes::{sha256, Hash};
    use ldk_node::bitcoin::secp256k1::PublicKey;
    use ldk_node::lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
    use std::time::Duration;

    #[test]
    fn window_arithmetic() {
        // 144 blocks of hold need a delta of 144 + 39 + 6 + 3.
        assert_eq!(invoice_cltv_delta(144), 192);
        // A payer at our height: deadline = height + delta - 39.
        let height = 1000;
        let deadline = height + invoice_cltv_delta(144) - HTLC_FAIL_BACK_BUFFER;
        assert!(leaves_window(deadline, height, 144));
        // A payer that ignored the delta and used LDK's default 42 leaves 3 blocks: refused.
        assert!(!leaves_window(
            height + 42 - HTLC_FAIL_BACK_BUFFER,
            height,
            144
        ));
        assert!(!must_resolve_now(deadline, height + 144));
        assert!(must_resolve_now(deadline, deadline - GUARD_BLOCKS));
    }

    #[test]
    fn reissued_invoice_keeps_everything_but_the_delta() {
        let secp = Secp256k1::new();
        let key = SecretKey::from_slice(&[7; 32]).unwrap();
        let original = InvoiceBuilder::new(Currency::Regtest)
            .description("order".into())
            .payment_hash(sha256::Hash::hash(b"preimage"))
            .payment_secret(PaymentSecret([9; 32]))
            .duration_since_epoch(Duration::from_secs(1_700_000_000))
            .min_final_cltv_expiry_delta(42)
            .amount_milli_satoshis(123_000)
            .build_signed(|m| secp.sign_ecdsa_recoverable(m, &key))
            .unwrap();
        let longer = with_cltv_delta(&original, 192, &key).unwrap();
        assert_eq!(longer.min_final_cltv_expiry_delta(), 192);
        assert_eq!(longer.payment_hash(), original.payment_hash());
        assert_eq!(longer.payment_secret(), original.payment_secret());
        assert_eq!(longer.amount_milli_satoshis(), Some(123_000));
        assert!(longer.check_signature().is_ok());
        assert_eq!(
            longer.recover_payee_pub_key(),
            PublicKey::from_secret_key(&secp, &key)
        );
        let other = SecretKey::from_slice(&[8; 32]).unwrap();
        assert!(with_cltv_delta(&original, 192, &other).is_err());
    }
}
