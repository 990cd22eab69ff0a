//! A size limit on what a trader's WebSocket may send, enforced on the raw bytes before the
//! WebSocket library sees them.
//!
//! The library the relay uses accepts messages up to 64 MiB and frames up to 16 MiB and
//! buffers them whole before the relay can look at the event inside; the box cannot configure
//! it. Reading frame headers as the bytes go by, the box closes a connection as soon as a
//! frame's header announces more than a message may hold (or the fragments of one message add
//! up to more), so no connection can make the box buffer more than about two events' worth.

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a WebSocket message of {announced} bytes or more; this relay takes at most {max}")]
pub struct TooLarge {
    /// What the frame headers announced so far for the message.
    pub announced: u64,
    /// The limit.
    pub max: u64,
}

/// Follows the frames a client sends (RFC 6455 §5.2) and checks each message's size.
#[derive(Debug)]
pub struct FrameGuard {
    max: u64,
    header: [u8; 14],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
    /// Bytes of the data message being received (its fragments so far).
    message: u64,
}

impl FrameGuard {
    /// A guard for messages of at most `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            header: [0; 14],
            have: 0,
            remaining: 0,
            message: 0,
        }
    }

    /// Bytes the header being read needs in all, once its first two are known.
    fn header_len(&self) -> usize {
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// Checks the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), TooLarge> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len() as u64);
                self.remaining -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if self.have < 2 || self.have < self.header_len() {
                continue;
            }
            let len = match self.header[1] & 0x7f {
                126 => u16::from_be_bytes([self.header[2], self.header[3]]) as u64,
                127 => u64::from_be_bytes(self.header[2..10].try_into().expect("8 bytes")),
                n => n as u64,
            };
            let fin = self.header[0] & 0x80 != 0;
            let opcode = self.header[0] & 0x0f;
            self.have = 0;
            if opcode < 8 {
                // A data frame: a new message (text, binary) or a continuation of one.
                self.message = if opcode == 0 {
                    self.message.saturating_add(len)
                } else {
                    len
                };
                if self.message > self.max {
                    return Err(TooLarge {
                        announced: self.message,
                        max: self.max,
                    });
                }
                if fin {
                    self.message = 0;
                }
            } else if len > 125 {
                // Control frames carry at most 125 bytes.
                return Err(TooLarge {
                    announced: len,
                    max: 125,
                });
            }
            self.remaining = len;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with `len` payload bytes.
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', len));
        f
    }

    #[test]
    fn messages_within_the_limit_pass_in_any_chunking() {
        let mut stream = frame(true, 1, 1000);
        stream.extend(frame(true, 9, 4)); // a ping
        stream.extend(frame(false, 1, 600));
        stream.extend(frame(true, 0, 400)); // 1000 in two fragments
        for chunk in [1, 3, 7, 4096] {
            let mut g = FrameGuard::new(1000);
            for part in stream.chunks(chunk) {
                g.feed(part).unwrap();
            }
        }
    }

    #[test]
    fn an_oversized_message_is_refused_at_its_header() {
        let mut g = FrameGuard::new(1000);
        let big = frame(true, 1, 70_000);
        // The header alone (2 + 8 + 4 bytes) is enough to refuse it.
        assert_eq!(
            g.feed(&big[..14]),
            Err(TooLarge {
                announced: 70_000,
                max: 1000
            })
        );
        let mut g = FrameGuard::new(1000);
        let mut fragments = frame(false, 1, 600);
        fragments.extend(frame(false, 0, 600));
        assert!(g.feed(&fragments).is_err(), "fragments add up");
        let mut g = FrameGuard::new(1000);
        assert!(
            g.feed(&frame(true, 9, 200)).is_err(),
            "control frames are small"
        );
        let mut g = FrameGuard::new(u64::MAX);
        assert!(g.feed(&frame(true, 2, 70_000)).is_ok());
    }
}
