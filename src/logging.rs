//! Logging: text or JSON lines on stderr (the journal, `docker logs`), and a short memory of the
//! latest warnings and errors, so the status page can show an operator what went wrong without
//! a trip to the journal.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How many warnings and errors are remembered.
pub const REMEMBERED: usize = 20;

/// Quiet dependencies: their warnings are kept, their chatter is not. The relay library's
/// connection handler is silenced: it logs every client that hangs up without a WebSocket close
/// (mostro-cli does, after each command) as an ERROR, which would bury the box's real ones.
const QUIET: &str = "nostr_relay_pool=warn,nostr_relay_builder=warn,\
                     nostr_relay_builder::local::inner=off,ldk_node=warn,lightning=warn,\
                     lightning_background_processor=warn";

/// One remembered warning or error.
#[derive(Debug, Clone, Serialize)]
pub struct Remembered {
    /// Unix time.
    pub at: i64,
    /// `WARN` or `ERROR`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message and its fields.
    pub message: String,
}

fn memory() -> &'static Mutex<VecDeque<Remembered>> {
    static MEMORY: OnceLock<Mutex<VecDeque<Remembered>>> = OnceLock::new();
    MEMORY.get_or_init(|| Mutex::new(VecDeque::with_capacity(REMEMBERED)))
}

/// The remembered warnings and errors, newest first.
pub fn recent() -> Vec<Remembered> {
    let memory = memory().lock().unwrap_or_else(|p| p.into_inner());
    memory.iter().rev().cloned().collect()
}

/// Installs the global logger. `RUST_LOG` overrides the default levels of the stderr output;
/// the memory always keeps warnings and errors. `regtest_noise` silences ldk-node's complaint,
/// on every sync, that a regtest bitcoind has no fee estimates.
pub fn init(format: &str, regtest_noise: bool) {
    let noise = if regtest_noise {
        ",ldk_node::chain=off"
    } else {
        ""
    };
    let stderr_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{QUIET}{noise}")));
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = if format == "json" {
        stderr.json().boxed()
    } else {
        stderr.boxed()
    };
    tracing_subscriber::registry()
        .with(stderr.with_filter(stderr_filter))
        .with(Memory.with_filter(EnvFilter::new(format!("warn,{QUIET}{noise}"))))
        .init();
}

/// The layer that fills the memory.
struct Memory;

impl<S: Subscriber> Layer<S> for Memory {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let line = Remembered {
            at: crate::protocol::now(),
            level: event.metadata().level().to_string(),
            target: event.metadata().target().to_string(),
            message: text.0,
        };
        let mut memory = memory().lock().unwrap_or_else(|p| p.into_inner());
        if memory.len() == REMEMBERED {
            memory.pop_front();
        }
        memory.push_back(line);
    }
}

/// An event's fields as `message key=value …`.
struct Text(String);

impl Visit for Text {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format_args!("{value:?}"));
    }
}

impl Text {
    fn push(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() != "message" {
            let _ = write!(self.0, "{}=", field.name());
        }
        let _ = self.0.write_fmt(value);
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn remembers_warnings_with_their_fields_and_forgets_the_oldest() {
        let subscriber = tracing_subscriber::registry().with(super::Memory);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..super::REMEMBERED + 3 {
                tracing::warn!(order = i, "payout failed: {}", "no route");
            }
        });
        let recent = super::recent();
        assert_eq!(recent.len(), super::REMEMBERED);
        let last = super::REMEMBERED + 2;
        assert_eq!(
            recent[0].message,
            format!("payout failed: no route order={last}")
        );
        assert_eq!(recent[0].level, "WARN");
    }
}
