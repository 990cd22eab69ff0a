//! The stateful intake checks (replays, trade index, first-contact PoW) and the dispatch of a
//! request to its action handler, all inside the batch's write transaction.

use std::collections::HashSet;

use mostro_core::prelude::{Action, CantDoReason, Message, Payload};
use nostr::PublicKey;
use uuid::Uuid;

use super::tx::Tx;
use super::{actions, Ctx};
use crate::protocol::intake::Inbound;
use crate::protocol::outbound::Outgoing;
use crate::store::StoreError;

/// How a handler turns a request down.
#[derive(Debug)]
pub enum Fail {
    /// Refused with a `cant-do` reason sent to the sender's trade key.
    CantDo(CantDoReason),
    /// Dropped without a reply (the reference answers these with silence).
    Ignore(&'static str),
    /// The store failed; the whole batch is retried.
    Store(StoreError),
}

impl From<CantDoReason> for Fail {
    fn from(r: CantDoReason) -> Self {
        Fail::CantDo(r)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Store(e)
    }
}

/// A request being handled, with helpers to build replies to it.
pub struct Request<'a> {
    /// The opened message.
    pub inbound: &'a Inbound,
}

impl Request<'_> {
    /// The message body.
    pub fn kind(&self) -> &mostro_core::prelude::MessageKind {
        self.inbound.message.get_inner_message_kind()
    }

    /// Trade key of the sender.
    pub fn sender(&self) -> PublicKey {
        self.inbound.sender
    }

    /// Identity key of the sender.
    pub fn identity(&self) -> PublicKey {
        self.inbound.identity
    }

    /// True in full-privacy mode (identity = trade key).
    pub fn full_privacy(&self) -> bool {
        self.inbound.identity == self.inbound.sender
    }

    /// A reply in the `order` wrapper to the sender, echoing `request_id` and `trade_index`.
    pub fn reply(&self, id: Option<Uuid>, action: Action, payload: Option<Payload>) -> Outgoing {
        let k = self.kind();
        let msg = Message::new_order(id, k.request_id, k.trade_index, action, payload);
        self.direct(msg)
    }

    /// A reply in the `restore` wrapper (restore-session and last-trade-index).
    pub fn reply_restore(
        &self,
        trade_index: Option<i64>,
        action: Action,
        payload: Option<Payload>,
    ) -> Outgoing {
        let k = self.kind();
        let mut msg = Message::new_restore(payload);
        if let Message::Restore(inner) = &mut msg {
            inner.request_id = k.request_id;
            inner.trade_index = trade_index;
            inner.action = action;
        }
        self.direct(msg)
    }

    /// A `cant-do` to the sender.
    pub fn cant_do(&self, reason: CantDoReason) -> Outgoing {
        let k = self.kind();
        self.direct(Message::cant_do(
            k.id,
            k.request_id,
            Some(Payload::CantDo(Some(reason))),
        ))
    }

    /// Any message to the sender, in the sender's transport.
    pub fn direct(&self, msg: Message) -> Outgoing {
        Outgoing::direct(self.inbound.sender, self.inbound.transport, msg)
    }
}

/// Handles one opened request. Refusals become `cant-do` replies; nothing else is written for
/// them, so bad input changes nothing.
pub fn handle(
    tx: &mut Tx,
    ctx: &mut Ctx,
    inbound: &Inbound,
    active: &mut HashSet<PublicKey>,
) -> Result<(), StoreError> {
    let req = Request { inbound };
    // First-contact proof of work (v2 only, as in the reference: a gift wrap's outer key is
    // throwaway): a trade key with no active trade must bring more work.
    let need = ctx.settings.mostro.effective_pow_first_contact();
    if inbound.transport == crate::protocol::DIRECT
        && inbound.pow < need
        && !active.contains(&inbound.sender)
    {
        tracing::debug!(
            "intake: dropped first contact with {} bits of work",
            inbound.pow
        );
        return Ok(());
    }
    let result = check_trade_index(tx, &req).and_then(|()| actions::run(tx, ctx, &req, active));
    match result {
        Ok(()) => Ok(()),
        Err(Fail::CantDo(reason)) => {
            tracing::debug!(action = %req.kind().action, ?reason, "intake: cant-do");
            tx.send(req.cant_do(reason))
        }
        Err(Fail::Ignore(why)) => {
            tracing::debug!(action = %req.kind().action, "intake: ignored: {why}");
            Ok(())
        }
        Err(Fail::Store(e)) => Err(e),
    }
}

/// Reference §2.5 step 8, for the actions that start a trade. Checks only: the index is stored
/// by the handler once the action succeeds, so a refused order does not burn an index.
fn check_trade_index(tx: &Tx, req: &Request) -> Result<(), Fail> {
    let k = req.kind();
    if !matches!(
        k.action,
        Action::NewOrder | Action::TakeBuy | Action::TakeSell
    ) {
        return Ok(());
    }
    if req.full_privacy() {
        return Ok(());
    }
    let Some(index) = k.trade_index else {
        return Err(Fail::Ignore("reputation-mode request without trade_index"));
    };
    if index < 1 {
        return Err(CantDoReason::InvalidTradeIndex.into());
    }
    if req.inbound.signature.is_none() {
        return Err(CantDoReason::InvalidSignature.into());
    }
    match tx.user(&req.identity())? {
        Some(user) if index <= user.last_trade_index => Err(CantDoReason::InvalidTradeIndex.into()),
        _ => Ok(()),
    }
}

/// Records the trade index a successful action used (reputation mode only).
pub fn record_trade_index(tx: &mut Tx, req: &Request, now: i64) -> Result<(), StoreError> {
    if req.full_privacy() {
        return Ok(());
    }
    let Some(index) = req.kind().trade_index else {
        return Ok(());
    };
    let identity = req.identity();
    let mut user = tx.user(&identity)?.unwrap_or(super::user::User {
        created_at: now,
        ..Default::default()
    });
    if index > user.last_trade_index {
        user.last_trade_index = index;
        tx.put_user(&identity, &user)?;
    }
    Ok(())
}
