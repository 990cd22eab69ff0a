//! Lightning addresses (LUD-16) resolved to a BOLT11 invoice through LNURL-pay (LUD-06), as the
//! reference daemon does for buyer payouts (protocol 7.3): a short time-out, and the amount
//! checked against the service's bounds. Both requests, to the address's domain and to the
//! callback its service names, go through [`fetch::get_public`]: https only, public addresses
//! only, the checked address pinned for the connection, no redirects. A buyer's address must
//! not make the box reach into its own network.

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
    let body = get(&url, allow_local).await?;
    let callback = callback_url(&body, amount_msat)?;
    let body = get(&callback, allow_local).await?;
    invoice_from(&body)
}

async fn get(url: &str, allow_local: bool) -> Result<Vec<u8>, LnurlError> {
    fetch::get_public(url, TIMEOUT, allow_local)
        .await
        .map_err(|e| match e {
            FetchError::Private(host) => LnurlError::PrivateAddress(host),
            e => LnurlError::Unreachable(e),
        })
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
    }

    #[test]
    fn only_public_addresses_in_any_spelling() {
        use crate::fetch::is_public;
        for private in [
            "10.1.2.3",
            "127.0.0.1",
            "0.1.2.3",
            "100.64.0.1",
            "169.254.169.254",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    /// The callback a service names is held to the same rules as the address itself.
    #[tokio::test]
    async fn callbacks_must_be_https_and_public() {
        let plain = get("http://example.org/callback?amount=1000", false).await;
        assert!(
            matches!(plain, Err(LnurlError::Unreachable(FetchError::NotHttps(_)))),
            "{plain:?}"
        );
        for inside in [
            "https://127.0.0.1:7778/metrics",
            "https://[::ffff:192.168.1.1]/admin",
            "https://localhost/",
        ] {
            let r = get(inside, false).await;
            assert!(
                matches!(r, Err(LnurlError::PrivateAddress(_))),
                "{inside}: {r:?}"
            );
        }
    }
}
