//! The learner side of the weight broadcast: each version of the student is serialised
//! once into an immutable buffer ([`Published`]) shared by every subscriber, and each
//! `WatchWeights` stream sends it in chunks with the blob's CRC32. A subscriber that is
//! slower than the learner skips to the newest version; it never blocks the learner or
//! another subscriber, and one that takes no chunk for a while is dropped. The actor side
//! reassembles the chunks (`actor::broadcast`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use qd_proto::WeightChunk;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::metrics as m;

/// One published version of the student: serialised once, shared by every subscriber.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub step: u64,
    pub blob: Bytes,
    /// CRC32 of `blob`, lowercase hex.
    pub checksum: String,
}

impl Published {
    pub fn new(version: u64, step: u64, blob: Vec<u8>) -> Published {
        let checksum = format!("{:08x}", crc32fast::hash(&blob));
        Published {
            version,
            step,
            blob: Bytes::from(blob),
            checksum,
        }
    }

    /// The chunks of this version, `chunk` bytes each (one empty chunk for an empty blob).
    /// Each holds a copy of its bytes, not a slice of the blob: a chunk waiting for a
    /// subscriber that does not read keeps `chunk` bytes alive, not the whole version.
    pub fn chunks(&self, chunk: usize) -> impl Iterator<Item = WeightChunk> + '_ {
        let total = self.blob.len();
        let starts = (0..total.max(1)).step_by(chunk.max(1));
        starts.map(move |offset| WeightChunk {
            version: self.version,
            step: self.step,
            offset: offset as u64,
            total_len: total as u64,
            checksum: self.checksum.clone(),
            data: Bytes::copy_from_slice(&self.blob[offset..(offset + chunk.max(1)).min(total)]),
        })
    }
}

/// What the learner has published and how far it has trained, for the weight streams,
/// `Register` and `Status`: the current version, the step, and the run's ends.
#[derive(Debug)]
pub struct Publisher {
    version: AtomicU64,
    step: AtomicU64,
    published: watch::Sender<Option<Arc<Published>>>,
    /// Set when the learner shuts down: open weight streams end with UNAVAILABLE.
    closing: watch::Sender<bool>,
    /// Set once the run has reached its step budget and the final version is published:
    /// weight streams end cleanly after it, `Register` and `Status` say so.
    finished: watch::Sender<bool>,
}

impl Default for Publisher {
    fn default() -> Publisher {
        Publisher {
            version: AtomicU64::new(0),
            step: AtomicU64::new(0),
            published: watch::channel(None).0,
            closing: watch::channel(false).0,
            finished: watch::channel(false).0,
        }
    }
}

impl Publisher {
    /// Makes `p` the version every subscriber streams next.
    pub fn publish(&self, p: Published) {
        self.version.store(p.version, Ordering::SeqCst);
        metrics::gauge!(m::VERSION).set(p.version as f64);
        metrics::gauge!(m::PUBLISH_BYTES).set(p.blob.len() as f64);
        self.published.send_replace(Some(Arc::new(p)));
    }

    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    pub fn step(&self) -> u64 {
        self.step.load(Ordering::SeqCst)
    }

    /// The trainer took its step `step`.
    pub fn trained(&self, step: u64) {
        self.step.store(step, Ordering::SeqCst);
    }

    /// The run reached its budget and its final version is out.
    pub fn finish(&self) {
        self.finished.send_replace(true);
    }

    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// The learner is stopping: open weight streams end.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A new subscriber's view: the published versions and the ways its stream ends.
    pub fn subscribe(&self) -> (watch::Receiver<Option<Arc<Published>>>, Endings) {
        (
            self.published.subscribe(),
            Endings {
                finished: self.finished.subscribe(),
                closing: self.closing.subscribe(),
            },
        )
    }
}

/// How a weight stream can end besides its subscriber leaving.
#[derive(Clone, Debug)]
pub struct Endings {
    /// The run reached its step budget: the stream sends the final version (unless the
    /// subscriber has it) and ends with status OK, which is how a client learns it.
    pub finished: watch::Receiver<bool>,
    /// The learner is stopping: the stream ends with UNAVAILABLE (come back later).
    pub closing: watch::Receiver<bool>,
}

/// Streams every version published from now on (and the current one, unless it is
/// `have`) in chunks of `chunk` bytes, until the subscriber leaves, one of `endings`
/// comes, or the subscriber takes no chunk for `send_timeout` (it is then dropped: it
/// holds neither the version it stalled on nor its slot of `limits.max_watchers`, and
/// it reconnects if it is alive). `guard` lives as long as the stream.
pub fn stream<G: Send + 'static>(
    mut published: watch::Receiver<Option<Arc<Published>>>,
    mut endings: Endings,
    mut have: u64,
    chunk: usize,
    send_timeout: std::time::Duration,
    guard: G,
) -> ReceiverStream<Result<WeightChunk, Status>> {
    let (tx, rx) = mpsc::channel::<Result<WeightChunk, Status>>(2);
    tokio::spawn(async move {
        let _guard = guard;
        loop {
            let current = published.borrow_and_update().clone();
            if let Some(p) = current.filter(|p| p.version != have) {
                for msg in p.chunks(chunk) {
                    // A slow subscriber waits here alone; the learner never does.
                    match tokio::time::timeout(send_timeout, tx.send(Ok(msg))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return,
                        Err(_) => {
                            metrics::counter!(m::STREAMS_REFUSED, "reason" => "stalled_watcher")
                                .increment(1);
                            tracing::warn!(
                                version = p.version,
                                "a weight subscriber took no chunk for {send_timeout:?}: dropped"
                            );
                            return;
                        }
                    }
                }
                have = p.version;
            }
            // The final version is published before the run is marked finished, so
            // it has been sent by now.
            if *endings.finished.borrow() {
                return;
            }
            tokio::select! {
                changed = published.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
                _ = endings.finished.wait_for(|f| *f) => {}
                _ = endings.closing.wait_for(|c| *c) => break,
            }
        }
        let _ = tx
            .send(Err(Status::unavailable("the learner is stopping")))
            .await;
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::watch;
    use tokio_stream::StreamExt;

    use super::{stream, Endings, Published};

    /// How long the tests' subscribers may take over a chunk (they read at once).
    const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

    /// The learner's `finished` and `closing` flags, and the endings a stream watches.
    fn endings() -> (watch::Sender<bool>, watch::Sender<bool>, Endings) {
        let (finished, closing) = (watch::channel(false).0, watch::channel(false).0);
        let endings = Endings {
            finished: finished.subscribe(),
            closing: closing.subscribe(),
        };
        (finished, closing, endings)
    }

    /// The next version a stream delivers, as (version, bytes) of the whole blob; `None`
    /// when the stream ends or nothing whole arrives within 10 s.
    async fn next_version(
        s: &mut tokio_stream::wrappers::ReceiverStream<
            Result<qd_proto::WeightChunk, tonic::Status>,
        >,
    ) -> Option<(u64, Vec<u8>)> {
        let whole = async {
            let mut blob = Vec::new();
            loop {
                let c = s.next().await?.ok()?;
                blob.extend_from_slice(&c.data);
                if blob.len() as u64 == c.total_len {
                    return Some((c.version, blob));
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), whole)
            .await
            .ok()
            .flatten()
    }

    /// A subscriber that reads nothing is dropped after the send timeout: the version it
    /// stalled on is no longer held by its stream (the chunks still queued are copies of
    /// a chunk each), and the guard (its slot of `limits.max_watchers`) is released.
    #[tokio::test(start_paused = true)]
    async fn a_subscriber_that_stops_reading_is_dropped_and_pins_no_version() {
        let (_f, _c, endings) = endings();
        let first = Arc::new(Published::new(1, 10, vec![9; 64]));
        let published = watch::channel(Some(first.clone())).0;
        let guard = Arc::new(());
        // Chunks of 4 bytes: 16 of them, more than the stream's queue holds.
        let stalled = stream(published.subscribe(), endings, 0, 4, WAIT, guard.clone());
        tokio::time::sleep(WAIT / 2).await;
        assert_eq!(
            Arc::strong_count(&first),
            3,
            "the stream holds the version while it waits"
        );
        assert_eq!(Arc::strong_count(&guard), 2);
        tokio::time::sleep(WAIT).await;
        assert_eq!(
            Arc::strong_count(&first),
            2,
            "only the publisher and this test hold it"
        );
        assert_eq!(
            Arc::strong_count(&guard),
            1,
            "the watcher's slot is released"
        );
        // What it had queued is a copy of two chunks, 4 bytes each, then the end.
        let mut stalled = stalled;
        let mut queued = 0;
        while let Some(c) = stalled.next().await {
            assert_eq!(c.expect("a chunk").data.len(), 4);
            queued += 1;
        }
        assert_eq!(queued, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_subscriber_gets_the_current_version_unless_it_has_it_then_each_new_one() {
        let (published, _) = watch::channel(Some(Arc::new(Published::new(2, 20, vec![1, 2, 3]))));
        let (_finished, closing, endings) = endings();
        // Holding version 2 already: nothing until version 3.
        let mut up_to_date = stream(published.subscribe(), endings.clone(), 2, 2, WAIT, ());
        // Holding nothing: version 2 at once.
        let mut fresh = stream(published.subscribe(), endings, 0, 2, WAIT, ());
        assert_eq!(next_version(&mut fresh).await, Some((2, vec![1, 2, 3])));
        published.send_replace(Some(Arc::new(Published::new(3, 30, vec![4, 5, 6, 7, 8]))));
        assert_eq!(
            next_version(&mut up_to_date).await,
            Some((3, vec![4, 5, 6, 7, 8]))
        );
        assert_eq!(
            next_version(&mut fresh).await,
            Some((3, vec![4, 5, 6, 7, 8]))
        );
        // Closing ends every stream with UNAVAILABLE.
        closing.send_replace(true);
        for s in [&mut up_to_date, &mut fresh] {
            let end = tokio::time::timeout(std::time::Duration::from_secs(10), s.next()).await;
            match end {
                Ok(Some(Err(status))) => assert_eq!(status.code(), tonic::Code::Unavailable),
                other => panic!("the stream did not end with UNAVAILABLE: {other:?}"),
            }
        }
    }

    /// The end of training: a subscriber gets the final version (if it lacks it), then
    /// the stream ends cleanly; one that has it is told at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_finished_run_ends_each_stream_after_the_final_version() {
        let (published, _) = watch::channel(Some(Arc::new(Published::new(5, 50, vec![9; 5]))));
        let (finished, _closing, endings) = endings();
        let mut watching = stream(published.subscribe(), endings.clone(), 5, 2, WAIT, ());
        published.send_replace(Some(Arc::new(Published::new(6, 60, vec![7; 3]))));
        finished.send_replace(true);
        assert_eq!(next_version(&mut watching).await, Some((6, vec![7; 3])));
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), watching.next()).await;
        assert!(
            matches!(end, Ok(None)),
            "the stream did not end cleanly: {end:?}"
        );
        // A subscriber arriving after the end: the final version, then the end.
        let mut late = stream(published.subscribe(), endings.clone(), 0, 2, WAIT, ());
        assert_eq!(next_version(&mut late).await, Some((6, vec![7; 3])));
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), late.next()).await;
        assert!(
            matches!(end, Ok(None)),
            "the late stream did not end cleanly: {end:?}"
        );
        let mut has_it = stream(published.subscribe(), endings, 6, 2, WAIT, ());
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), has_it.next()).await;
        assert!(
            matches!(end, Ok(None)),
            "a subscriber with the final version was not told"
        );
    }

    #[test]
    fn chunks_cover_the_blob_once_in_order() {
        let p = Published::new(3, 7, (0..10u8).collect());
        let chunks: Vec<_> = p.chunks(4).collect();
        assert_eq!(
            chunks
                .iter()
                .map(|c| (c.offset, c.data.len()))
                .collect::<Vec<_>>(),
            [(0, 4), (4, 4), (8, 2)]
        );
        assert!(chunks
            .iter()
            .all(|c| c.total_len == 10 && c.version == 3 && c.step == 7));
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.to_vec()).collect();
        assert_eq!(joined, (0..10u8).collect::<Vec<_>>());
        let empty = Published::new(1, 0, Vec::new());
        let e: Vec<_> = empty.chunks(4).collect();
        assert_eq!(e.len(), 1);
        assert!(e[0].data.is_empty() && e[0].total_len == 0);
    }
}
