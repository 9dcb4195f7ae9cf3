//! Standard input, read as it comes.
//!
//! Lines are handed on as soon as they arrive, several reads at once while more is already
//! waiting. Standard input cannot be read again, so it has no position: lines read before a
//! crash and not yet durable are lost, and a restart reads whatever the pipe brings next. For
//! input that must survive a restart, follow a file (`file:PATH`) instead.

use std::io::{self, Read};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::SourceCtx;
use super::files::{BATCH, Cursor, Feed, Flow, NoPosition, Timing};

/// Reads standard input (`-`) until it ends.
pub async fn run_stdin(ctx: SourceCtx) -> Result<()> {
    follow_reader(io::stdin(), ctx).await
}

/// Reads of this many bytes at most, a few of them queued: what is held stays bounded.
const READ: usize = 256 << 10;
const QUEUED: usize = 8;

/// Follows `r` as standard input. The reads happen on a thread of their own, not in
/// `spawn_blocking`: a read from a pipe that stays open cannot be cancelled, and a blocking
/// task would hold up the runtime's shutdown until the pipe brings something; a plain thread
/// is left behind at exit.
async fn follow_reader<R: Read + Send + 'static>(r: R, ctx: SourceCtx) -> Result<()> {
    let (tx, mut rx) = mpsc::channel::<io::Result<Vec<u8>>>(QUEUED);
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || pump(r, tx))
        .context("standard input: cannot start its reading thread")?;
    let mut feed = Feed::new(ctx, "-".to_owned(), Timing::default().retry);
    let mut buf: Vec<u8> = Vec::new();
    let mut cur = Cursor::START;
    let mut eof = false;
    tracing::info!(input = "-", "reading standard input");
    loop {
        if feed
            .send_buffered("-", &mut buf, &mut cur, eof, &mut NoPosition)
            .await?
            == Flow::Stop
        {
            return Ok(());
        }
        if eof {
            tracing::info!(
                input = "-",
                "standard input ended after {} bytes ({} lines)",
                cur.offset,
                cur.line - 1
            );
            return Ok(());
        }
        let first = tokio::select! {
            c = rx.recv() => c,
            _ = feed.ctx.shutdown.wait_for(|s| *s) => return Ok(()),
        };
        match first {
            None => eof = true,
            Some(Ok(c)) => buf.extend_from_slice(&c),
            Some(Err(e)) => {
                return Err(e).with_context(|| {
                    format!(
                        "standard input: reading at byte {}",
                        cur.offset + buf.len() as u64
                    )
                });
            }
        }
        // What is already waiting goes in the same batch.
        while !eof && buf.len() < BATCH {
            match rx.try_recv() {
                Ok(Ok(c)) => buf.extend_from_slice(&c),
                Ok(Err(e)) => {
                    return Err(e).with_context(|| {
                        format!(
                            "standard input: reading at byte {}",
                            cur.offset + buf.len() as u64
                        )
                    });
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => eof = true,
            }
        }
    }
}

/// The reading thread: reads until the end (or an error, passed on), or until nobody listens.
fn pump<R: Read>(mut r: R, tx: mpsc::Sender<io::Result<Vec<u8>>>) {
    let mut buf = vec![0u8; READ];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::sync::mpsc as std_mpsc;
    use std::time::Duration;

    use floodwatch_core::SkipReason;

    use crate::sources::files::tests::{fake, row};

    /// A pipe the test writes into piece by piece; dropping the sender ends it.
    struct Pipe {
        rx: std_mpsc::Receiver<Vec<u8>>,
        held: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.held.is_empty() {
                match self.rx.recv() {
                    Ok(b) => self.held = b,
                    Err(_) => return Ok(0),
                }
            }
            let n = out.len().min(self.held.len());
            out[..n].copy_from_slice(&self.held[..n]);
            self.held.drain(..n);
            Ok(n)
        }
    }

    #[tokio::test]
    async fn lines_are_read_as_they_come_and_the_last_at_the_end() {
        let f = fake(600, BTreeMap::new());
        let (tx, rx) = std_mpsc::channel();
        let h = tokio::spawn(follow_reader(
            Pipe {
                rx,
                held: Vec::new(),
            },
            f.ctx.clone(),
        ));
        let one = row(1);
        let (a, b) = one.split_at(30);
        tx.send(format!("{}\n{a}", row(0)).into_bytes()).unwrap();
        f.until("the first line", |f| f.events() == 1).await;
        f.settle().await;
        assert_eq!(f.events(), 1, "the partial line waits");
        // Too long, arriving in pieces; then the rest of the input, the last line without `\n`.
        tx.send(format!("{b}\r\n").into_bytes()).unwrap();
        for _ in 0..3 {
            tx.send(vec![b'x'; 300]).unwrap();
        }
        tx.send(format!("\n{}", row(2)).into_bytes()).unwrap();
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .expect("returns at the end of input")
            .unwrap()
            .unwrap();
        assert_eq!(f.events(), 3);
        assert_eq!(f.skipped(SkipReason::TooLong), 1);
        assert_eq!(f.examples()[0].location.line, Some(3));
        assert!(
            f.got
                .lock()
                .unwrap()
                .iter()
                .all(|g| g.position.is_none() && g.input == "-")
        );
    }
}
