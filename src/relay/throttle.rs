//! Per-address budgets, so one address cannot take the box's CPU from everyone else: a token
//! bucket for counting things (events, new connections) and a reader that stops reading a
//! connection once its address has used up its bytes for now. A flood then waits in the
//! attacker's own TCP buffers instead of in the box's JSON parser and signature checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The key an address's budgets are kept under: an IPv4 address as it is (also when written
/// as IPv6), an IPv6 address by its /64 prefix, which is what one subscriber line gets; keyed
/// by full IPv6 address, one home connection would have billions of fresh budgets.
pub fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            last: Instant::now(),
            rate,
            burst,
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let gained = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + gained).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&mut self, n: f64) -> bool {
        self.refill();
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// True when the bucket has been full for a while (its address can be forgotten).
    pub fn is_idle(&mut self) -> bool {
        self.refill();
        self.tokens >= self.burst
    }

    /// Spends `n` tokens even if that leaves a debt; returns how long until the bucket is
    /// positive again (zero if it still is).
    fn spend(&mut self, n: f64) -> Duration {
        self.refill();
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// A connection whose reads draw on its address's byte budget, and whose WebSocket messages
/// are held to a size limit as they arrive (see [`super::frames`]).
pub struct Throttled<S> {
    inner: S,
    budget: Arc<Mutex<Bucket>>,
    pause: Option<Pin<Box<Sleep>>>,
    frames: Option<super::frames::FrameGuard>,
}

impl<S> Throttled<S> {
    /// Wraps `inner`; every byte read from it is paid from `budget`.
    pub fn new(inner: S, budget: Arc<Mutex<Bucket>>) -> Self {
        Self {
            inner,
            budget,
            pause: None,
            frames: None,
        }
    }

    /// Closes the connection (a read error) on a WebSocket message over `max` bytes.
    pub fn with_message_limit(mut self, max: u64) -> Self {
        self.frames = Some(super::frames::FrameGuard::new(max));
        self
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(pause) = self.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if let Some(frames) = self.frames.as_mut() {
            if let Err(e) = frames.feed(&buf.filled()[before..]) {
                return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)));
            }
        }
        if read > 0 {
            let wait = self.budget.lock().expect("budget lock").spend(read as f64);
            if !wait.is_zero() {
                // This read goes through; the next waits until the address is back in budget.
                self.pause = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_their_slash_64() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            address_key(mapped),
            "10.0.0.1".parse::<std::net::IpAddr>().unwrap()
        );
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let mut b = Bucket::new(1.0, 3.0);
        assert!((0..3).all(|_| b.take(1.0)));
        assert!(!b.take(1.0));
    }

    #[tokio::test]
    async fn reads_past_the_budget_wait_for_it() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let budget = Arc::new(Mutex::new(Bucket::new(1_000.0, 1_000.0)));
        let mut t = Throttled::new(b, budget);
        a.write_all(&[0u8; 3_000]).await.unwrap();
        let started = Instant::now();
        let mut got = vec![0u8; 1_000];
        for _ in 0..3 {
            t.read_exact(&mut got).await.unwrap();
        }
        // The first 1,000 bytes from the burst, the next on credit, the last a second later.
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}
