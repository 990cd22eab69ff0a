//! Lightning addresses (LUD-16) resolved to a BOLT11 invoice through LNURL-pay (LUD-06), as the
//! reference daemon does for buyer payouts (protocol 7.3): https only, no private addresses, a
//! short time-out, and the amount checked against the service's bounds.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::fetch::{self, FetchError};

/// Time allowed for each of the two requests.
const TIMEOUT: Duration = Duration::from_secs(4);

/// Why an address could not be resolved to an invoice.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LnurlError {
    /// Not `user@domain`.
    #[error("{0} is not a Lightning address (user@domain)")]
    NotAnAddress(String),
    /// The domain resolves to a private, loopback or link-local address.
    #[error("{0} points at a private network address; only public services are allowed")]
    PrivateAddress(String),
    /// Network failure or non-2xx status.
    #[error("the Lightning address service did not answer: {0}")]
    Unreachable(#[from] FetchError),
    /// The service answered with something other than a pay request.
    #[error("the Lightning address service answered something unexpected: {0}")]
    BadAnswer(String),
    /// The amount is outside what the service accepts.
    #[error("the Lightning address accepts {min} to {max} msat, not {amount}")]
    AmountOutOfRange {
        /// Requested msat.
        amount: u64,
        /// Smallest accepted.
        min: u64,
        /// Largest accepted.
        max: u64,
    },
    /// The service refused (`status: ERROR`).
    #[error("the Lightning address service refused: {0}")]
    Refused(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayRequest {
    tag: Option<String>,
    callback: Option<String>,
    min_sendable: Option<u64>,
    max_sendable: Option<u64>,
    status: Option<String>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Callback {
    pr: Option<String>,
    status: Option<String>,
    reason: Option<String>,
}

/// Where the pay request of `address` lives. `allow_local` (regtest only) permits plain http to
/// loopback hosts so tests and the playground can run a local LNURL service.
pub fn pay_request_url(address: &str, allow_local: bool) -> Result<String, LnurlError> {
    let bad = || LnurlError::NotAnAddress(address.into());
    let (user, domain) = address.trim().split_once('@').ok_or_else(bad)?;
    if !super::is_lightning_address(address.trim()) {
        return Err(bad());
    }
    let host = domain.split(':').next().unwrap_or(domain);
    let scheme = if allow_local && (host == "localhost" || host == "127.0.0.1") {
        "http"
    } else {
        "https"
    };
    Ok(format!("{scheme}://{domain}/.well-known/lnurlp/{user}"))
}

/// Resolves `address` to an invoice for `amount_msat`.
pub async fn resolve(
    address: &str,
    amount_msat: u64,
    allow_local: bool,
) -> Result<String, LnurlError> {
    let url = pay_request_url(address, allow_local)?;
    if !allow_local {
        let domain = address.trim().split_once('@').map(|(_, d)| d).unwrap_or("");
        refuse_private(domain).await?;
    }
    let body = fetch::get(&url, TIMEOUT).await?;
    let callback = callback_url(&body, amount_msat)?;
    let body = fetch::get(&callback, TIMEOUT).await?;
    invoice_from(&body)
}

/// The callback to ask for an invoice of `amount_msat`, from the service's pay request (LUD-06).
pub fn callback_url(pay_request: &[u8], amount_msat: u64) -> Result<String, LnurlError> {
    let req: PayRequest =
        serde_json::from_slice(pay_request).map_err(|e| LnurlError::BadAnswer(e.to_string()))?;
    if req.status.as_deref() == Some("ERROR") {
        return Err(LnurlError::Refused(req.reason.unwrap_or_default()));
    }
    if req.tag.as_deref() != Some("payRequest") {
        return Err(LnurlError::BadAnswer("not a payRequest".into()));
    }
    let (min, max) = (req.min_sendable.unwrap_or(0), req.max_sendable.unwrap_or(0));
    if amount_msat < min || amount_msat > max {
        return Err(LnurlError::AmountOutOfRange {
            amount: amount_msat,
            min,
            max,
        });
    }
    let callback = req
        .callback
        .ok_or_else(|| LnurlError::BadAnswer("no callback".into()))?;
    let sep = if callback.contains('?') { '&' } else { '?' };
    Ok(format!("{callback}{sep}amount={amount_msat}"))
}

/// The invoice in the service's answer to the callback.
pub fn invoice_from(answer: &[u8]) -> Result<String, LnurlError> {
    let answer: Callback =
        serde_json::from_slice(answer).map_err(|e| LnurlError::BadAnswer(e.to_string()))?;
    if answer.status.as_deref() == Some("ERROR") {
        return Err(LnurlError::Refused(answer.reason.unwrap_or_default()));
    }
    answer
        .pr
        .ok_or_else(|| LnurlError::BadAnswer("no invoice (pr) in the answer".into()))
}

async fn refuse_private(domain: &str) -> Result<(), LnurlError> {
    let target = if domain.contains(':') {
        domain.to_string()
    } else {
        format!("{domain}:443")
    };
    let addrs = tokio::net::lookup_host(&target)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    for a in addrs {
        if !is_public(a.ip()) {
            return Err(LnurlError::PrivateAddress(domain.into()));
        }
    }
    Ok(())
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_private_ranges() {
        assert_eq!(
            pay_request_url("alice@example.org", false).unwrap(),
            "https://example.org/.well-known/lnurlp/alice"
        );
        assert_eq!(
            pay_request_url("bob@127.0.0.1:8080", true).unwrap(),
            "http://127.0.0.1:8080/.well-known/lnurlp/bob"
        );
        assert!(pay_request_url("bob@127.0.0.1:8080", false)
            .unwrap()
            .starts_with("https://"));
        assert!(pay_request_url("nope", false).is_err());
        assert!(!is_public("10.1.2.3".parse().unwrap()));
        assert!(!is_public("127.0.0.1".parse().unwrap()));
        assert!(!is_public("::1".parse().unwrap()));
        assert!(is_public("1.1.1.1".parse().unwrap()));
    }
}
